/**
 * @module core/profile/schema
 * Universe.profile (Enclave-style) at the trust boundary: valibot validates what the migration
 * reads (ExitNode.ProvidesRoutes, ExitNode.AvailableRoutes, the certificate subject that names
 * the system, Name, VirtualAddress, VirtualNetwork) and lets every other property pass untouched.
 *
 * The parsed document keeps the original text for `--strip` in a private field, so neither
 * JSON.stringify nor a logger's object inspection can reach Identity.KeyPair.PrivateKey.
 * Messages are built here from types and validated values only; valibot's default messages
 * (which echo any input) never get out.
 */
import * as v from "valibot";
import { AddressError } from "../errors.ts";
import { parseAddress, parsePrefix, type Prefix } from "../net/address.ts";
import { ProfileInvalidError, ProfileJsonError, type ProfileIssue } from "./errors.ts";
import { formatJsonPath, scanJson, JsonSyntaxError, type JsonScan, type JsonSpan, type PathSegment } from "./json-scan.ts";

/** Identities are five characters A-Z, 0-9 (`Y7299`). */
export const IDENTITY_PATTERN = /^[A-Z0-9]{5}$/;

export function isIdentity(text: string): boolean {
  return IDENTITY_PATTERN.test(text);
}

/** "a string", "an array", "null": the type of a value, never the value. */
export function typeName(x: unknown): string {
  if (x === null) return "null";
  if (x === undefined) return "nothing";
  if (Array.isArray(x)) return "an array";
  if (typeof x === "object") return "an object";
  if (typeof x === "number") return "a number";
  if (typeof x === "boolean") return "a boolean";
  return `a ${typeof x}`;
}

const PREFIX_ISSUE = "cidr-prefix";

const isPlainObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x);

/** valibot's looseObject and record accept arrays; a profile's objects must be objects. */
function plainObject<const T extends v.ObjectEntries>(entries: T, what: string) {
  return v.pipe(
    v.custom<Record<string, unknown>>(isPlainObject, (i) => `expected ${what}, got ${typeName(i.input)}`),
    v.looseObject(entries, (i) => `expected ${what}, got ${typeName(i.input)}`),
  );
}

const PrefixSchema = v.pipe(
  v.string((i) => `expected a CIDR prefix string like "172.26.0.0/20", got ${typeName(i.input)}`),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    try {
      return parsePrefix(dataset.value);
    } catch (err) {
      if (!(err instanceof AddressError)) throw err;
      addIssue({ message: err.message, expected: PREFIX_ISSUE });
      return NEVER;
    }
  }),
);

const PrefixList = v.array(PrefixSchema, (i) => `expected an array of CIDR prefix strings, got ${typeName(i.input)}`);

const AddressSchema = v.pipe(
  v.string((i) => `expected an IP address string, got ${typeName(i.input)}`),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    try {
      return parseAddress(dataset.value).text;
    } catch (err) {
      if (!(err instanceof AddressError)) throw err;
      addIssue({ message: err.message, expected: PREFIX_ISSUE });
      return NEVER;
    }
  }),
);

const GatewayKey = v.pipe(
  v.string(),
  v.regex(IDENTITY_PATTERN, (i) => `gateway ${JSON.stringify(i.input)} is not a system identity (5 characters A-Z, 0-9)`),
);

/** A certificate subject: the bare identity, or "CN=" followed by it. */
const SubjectSchema = v.pipe(
  v.string((i) => `expected the system identity as a string, got ${typeName(i.input)}`),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const m = /^(?:CN=)?([A-Z0-9]{5})$/.exec(dataset.value);
    if (m) return m[1]!;
    addIssue({ message: `${JSON.stringify(dataset.value)} is not a system identity (5 characters A-Z, 0-9)` });
    return NEVER;
  }),
);

const ExitNodeSchema = plainObject(
  {
    ProvidesRoutes: v.nullish(PrefixList),
    AvailableRoutes: v.nullish(
      v.pipe(
        v.custom<Record<string, unknown>>(
          isPlainObject,
          (i) => `expected an object mapping gateway identity to a list of CIDR prefixes, got ${typeName(i.input)}`,
        ),
        v.record(GatewayKey, PrefixList),
      ),
    ),
  },
  "an object",
);

export const ProfileSchema = plainObject(
  {
    Name: v.nullish(v.string((i) => `expected a string, got ${typeName(i.input)}`)),
    VirtualAddress: v.nullish(AddressSchema),
    VirtualNetwork: v.nullish(PrefixSchema),
    Identity: v.nullish(
      plainObject(
        { Certificate: v.nullish(plainObject({ SubjectDistinguishedName: v.nullish(SubjectSchema) }, "an object")) },
        "an object",
      ),
    ),
    ExitNode: v.nullish(ExitNodeSchema),
  },
  "a JSON object (a Universe.profile) at the top level",
);

export interface RouteGrant {
  /** The gateway's identity, as the client's profile names it. */
  readonly gateway: string;
  readonly prefixes: readonly Prefix[];
  /** JSON path of the list, for messages: `ExitNode.AvailableRoutes.G982V`. */
  readonly path: string;
}

export interface ExitNodeConfig {
  /** Whether the profile has an ExitNode property that is not null. */
  readonly present: boolean;
  /** Present and `{}`: already migrated (or never configured). */
  readonly empty: boolean;
  readonly providesRoutes: readonly Prefix[];
  readonly availableRoutes: readonly RouteGrant[];
}

/** One validated profile. The original text stays private; see `textForRewrite`. */
export class ProfileDocument {
  readonly #text: string;
  readonly #scan: JsonScan;

  constructor(
    readonly file: string,
    text: string,
    scan: JsonScan,
    readonly name: string | null,
    readonly virtualAddress: string | null,
    readonly virtualNetwork: Prefix | null,
    readonly certificateIdentity: string | null,
    readonly exitNode: ExitNodeConfig,
  ) {
    this.#text = text;
    this.#scan = scan;
  }

  /** Where a value is, by JSON path, for messages that point into the file. */
  position(path: string): JsonSpan | undefined {
    return this.#scan.values.get(path);
  }

  /** `file:line:column` of a JSON path, or just the file. */
  locate(path: string): string {
    const at = this.position(path);
    return at ? `${this.file}:${at.line}:${at.column}` : this.file;
  }

  /**
   * The text, for the one caller that must rewrite it (strip.ts). It contains the private key:
   * never print, log or store it.
   */
  textForRewrite(): { text: string; exitNodeSpan: JsonSpan | undefined } {
    return { text: this.#text, exitNodeSpan: this.#scan.values.get("ExitNode") };
  }

  toJSON(): Record<string, unknown> {
    return { file: this.file, identity: this.certificateIdentity, name: this.name };
  }
}

function pathOf(issue: v.BaseIssue<unknown>): { segments: PathSegment[]; key: boolean } {
  const items = issue.path ?? [];
  const segments = items.map((item) => item.key as PathSegment);
  const last = items[items.length - 1] as { origin?: string } | undefined;
  return { segments, key: last?.origin === "key" };
}

/**
 * Parses and validates one profile's text. Throws ProfileJsonError (syntax, with line:column)
 * or ProfileInvalidError (every schema issue, each with its JSON path and line:column).
 */
export function parseProfile(text: string, file: string): ProfileDocument {
  let scan: JsonScan;
  try {
    scan = scanJson(text);
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new ProfileJsonError(file, err.line, err.column, err.reason);
    throw err;
  }
  // The scanner accepted it, so JSON.parse will; its own errors would quote the text anyway.
  const raw: unknown = JSON.parse(scan.bodyStart > 0 ? text.slice(scan.bodyStart) : text);

  const issues: ProfileIssue[] = [];
  for (const dup of scan.duplicates) {
    if (dup.path === "ExitNode" || dup.path.startsWith("ExitNode.") || dup.path.startsWith("ExitNode[") || dup.path.startsWith("Identity.")) {
      issues.push({
        path: dup.path,
        message: "property appears more than once (JSON.parse would silently keep the last one)",
        line: dup.span.line,
        column: dup.span.column,
        prefix: false,
      });
    }
  }

  const result = v.safeParse(ProfileSchema, raw, { abortEarly: false });
  if (!result.success) {
    for (const issue of result.issues) {
      const { segments, key } = pathOf(issue);
      const path = formatJsonPath(segments);
      const at = key ? scan.keys.get(path) : scan.values.get(path);
      issues.push({
        path,
        message: issue.message,
        line: at?.line,
        column: at?.column,
        prefix: issue.expected === PREFIX_ISSUE,
      });
    }
  }
  if (issues.length > 0) {
    // In file order, as an editor would walk them.
    const key = (i: ProfileIssue) => (i.line ?? Infinity) * 1e6 + (i.column ?? 0);
    issues.sort((a, b) => key(a) - key(b));
    throw new ProfileInvalidError(file, issues);
  }
  if (!result.success) throw new Error("unreachable: schema failed without issues");

  const out = result.output;
  const exit = out.ExitNode;
  const grants: RouteGrant[] = [];
  if (exit?.AvailableRoutes) {
    for (const [gateway, prefixes] of Object.entries(exit.AvailableRoutes)) {
      grants.push({ gateway, prefixes, path: formatJsonPath(["ExitNode", "AvailableRoutes", gateway]) });
    }
  }
  const exitNode: ExitNodeConfig = {
    present: exit !== undefined && exit !== null,
    empty: exit !== undefined && exit !== null && Object.keys(exit).length === 0,
    providesRoutes: exit?.ProvidesRoutes ?? [],
    availableRoutes: grants,
  };
  return new ProfileDocument(
    file,
    text,
    scan,
    out.Name ?? null,
    out.VirtualAddress ?? null,
    out.VirtualNetwork ?? null,
    out.Identity?.Certificate?.SubjectDistinguishedName ?? null,
    exitNode,
  );
}
