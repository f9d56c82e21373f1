/**
 * @module core/profile/load
 * Finds the profiles of a fleet (files, or directories holding one folder per machine or files
 * renamed IDENTITY.profile), validates each, and settles which system each belongs to.
 *
 * An identity can come from three places: the certificate subject inside the profile, the
 * --identity flag (one profile only), and an IDENTITY.profile file name. Any two that are
 * present must agree; a file name that is not identity-shaped (Universe.profile,
 * gateway-office.profile) is simply not a source. Two profiles claiming one identity is an
 * error too: the migration never picks one.
 */
import { readdir, readFile, realpath, stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import type { Logger } from "../log.ts";
import { WaygateError } from "../errors.ts";
import {
  FleetLoadError,
  IdentityConflictError,
  IdentityMissingError,
  MigrateUsageError,
  ProfileReadError,
} from "./errors.ts";
import { isIdentity, parseProfile, type ProfileDocument } from "./schema.ts";

export type IdentitySource = "certificate" | "flag" | "filename";

export interface LoadedProfile {
  readonly doc: ProfileDocument;
  readonly identity: string;
  /** Every source that named the identity (all agree). */
  readonly sources: readonly IdentitySource[];
}

const MAX_DEPTH = 6;

function describeFsError(err: unknown): string {
  const code = (err as { code?: string } | null)?.code;
  switch (code) {
    case "ENOENT":
      return "no such file or directory";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "is a directory";
    case "ENOTDIR":
      return "not a directory";
    default:
      return `cannot read (${code ?? (err instanceof Error ? err.message : String(err))})`;
  }
}

async function walk(dir: string, depth: number, out: string[]): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    throw new ProfileReadError(dir, describeFsError(err));
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    if (entry.name.startsWith(".")) continue; // our own temp files, editor droppings
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (depth < MAX_DEPTH) await walk(path, depth + 1, out);
    } else if (entry.name.endsWith(".profile")) {
      // Follows a symlinked file; a symlinked directory is not descended (no loops).
      if (entry.isFile() || (entry.isSymbolicLink() && (await stat(path).catch(() => null))?.isFile())) out.push(path);
    }
  }
}

/**
 * Expands the given paths into profile files: a file as given (any name), a directory into every
 * `*.profile` below it. The same file reached twice counts once.
 */
export async function findProfileFiles(paths: readonly string[]): Promise<string[]> {
  if (paths.length === 0) throw new MigrateUsageError("no profiles given: pass one or more Universe.profile files or fleet directories");
  const found: string[] = [];
  for (const path of paths) {
    let st;
    try {
      st = await stat(path);
    } catch (err) {
      throw new ProfileReadError(path, describeFsError(err));
    }
    if (st.isDirectory()) {
      const before = found.length;
      await walk(path, 1, found);
      if (found.length === before) throw new ProfileReadError(path, "no *.profile files in this directory");
    } else {
      found.push(path);
    }
  }
  // One entry per real file; where a symlink and its target were both found, the target's path.
  const at = new Map<string, number>();
  const unique: string[] = [];
  for (const file of found) {
    const real = await realpath(file).catch(() => file);
    const i = at.get(real);
    if (i === undefined) {
      at.set(real, unique.length);
      unique.push(file);
    } else if (resolve(file) === real) {
      unique[i] = file;
    }
  }
  return unique;
}

/** The identity a file name carries: `Y7299.profile` yes, `Universe.profile` and `office.profile` no. */
export function identityFromFileName(file: string): string | null {
  const base = basename(file);
  if (!base.endsWith(".profile")) return null;
  const stem = base.slice(0, -".profile".length);
  return isIdentity(stem) ? stem : null;
}

/** Settles one profile's identity from its sources; throws when they disagree or there is none. */
export function resolveIdentity(doc: ProfileDocument, flag: string | undefined): { identity: string; sources: IdentitySource[] } {
  const named: [IdentitySource, string][] = [];
  if (doc.certificateIdentity !== null) named.push(["certificate", doc.certificateIdentity]);
  if (flag !== undefined) named.push(["flag", flag]);
  const fromName = identityFromFileName(doc.file);
  if (fromName !== null) named.push(["filename", fromName]);
  if (named.length === 0) throw new IdentityMissingError(doc.file);
  const [first] = named;
  const label: Record<IdentitySource, string> = {
    certificate: "Identity.Certificate.SubjectDistinguishedName",
    flag: "--identity",
    filename: "the file name",
  };
  for (const [source, value] of named) {
    if (value !== first![1]) {
      const where = first![0] === "certificate" ? doc.locate("Identity.Certificate.SubjectDistinguishedName") : doc.file;
      throw new IdentityConflictError(
        `${where}: ${label[first![0]]} says ${first![1]} but ${label[source]} says ${value}; ` +
          `fix the one that is wrong (the migration does not pick one)`,
      );
    }
  }
  return { identity: first![1], sources: named.map(([s]) => s) };
}

export interface LoadOptions {
  readonly paths: readonly string[];
  /** --identity: only with exactly one profile. */
  readonly identity?: string;
}

/**
 * Loads and validates every profile. All files are read before failing, so one run reports every
 * broken file; a single failure is thrown as itself, several as FleetLoadError.
 */
export async function loadProfiles(options: LoadOptions, deps: { logger: Logger }): Promise<LoadedProfile[]> {
  if (options.identity !== undefined && !isIdentity(options.identity)) {
    throw new MigrateUsageError(`--identity ${JSON.stringify(options.identity)} is not a system identity (5 characters A-Z, 0-9)`);
  }
  const files = await findProfileFiles(options.paths);
  if (options.identity !== undefined && files.length !== 1) {
    throw new MigrateUsageError(
      `--identity names one system but ${files.length} profiles were given; name the files IDENTITY.profile instead`,
    );
  }
  const errors: WaygateError[] = [];
  const loaded: LoadedProfile[] = [];
  for (const file of files) {
    try {
      let text: string;
      try {
        text = await readFile(file, "utf8");
      } catch (err) {
        throw new ProfileReadError(file, describeFsError(err));
      }
      const doc = parseProfile(text, file);
      const { identity, sources } = resolveIdentity(doc, options.identity);
      deps.logger.debug(`profile: file=${file} identity=${identity} from=${sources.join(",")}`);
      loaded.push({ doc, identity, sources });
    } catch (err) {
      if (err instanceof WaygateError) errors.push(err);
      else throw err;
    }
  }
  const byIdentity = new Map<string, LoadedProfile>();
  for (const p of loaded) {
    const other = byIdentity.get(p.identity);
    if (other) {
      errors.push(
        new IdentityConflictError(
          `${p.identity} is the identity of both ${other.doc.file} and ${p.doc.file}; keep one profile per system`,
        ),
      );
    } else {
      byIdentity.set(p.identity, p);
    }
  }
  if (errors.length === 1) throw errors[0]!;
  if (errors.length > 1) throw new FleetLoadError(errors);
  return [...byIdentity.values()].sort((a, b) => (a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0));
}
