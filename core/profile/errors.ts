/**
 * @module core/profile/errors
 * The errors the profile loader and the ExitNode migration throw. Every message names the file
 * (and line:column and JSON path where there is one) and never quotes profile text beyond the
 * validated ExitNode/identity values: a profile carries Identity.KeyPair.PrivateKey, and nothing
 * of it may reach a terminal, a log or an error's `cause`.
 */
import { WaygateError } from "../errors.ts";

/** A profile (or a directory of them) could not be read. */
export class ProfileReadError extends WaygateError {
  constructor(
    readonly file: string,
    reason: string,
  ) {
    super("E_PROFILE_READ", `${file}: ${reason}`);
  }
}

/** A profile is not JSON. The cause is deliberately not kept: JSON.parse's message quotes tokens. */
export class ProfileJsonError extends WaygateError {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly column: number,
    readonly reason: string,
  ) {
    super("E_PROFILE_JSON", `${file}:${line}:${column}: invalid JSON: ${reason}`);
  }
}

export interface ProfileIssue {
  /** JSON path, e.g. `ExitNode.AvailableRoutes.G982V[1]` ("" for the whole document). */
  readonly path: string;
  readonly message: string;
  readonly line?: number;
  readonly column?: number;
  /** Whether the issue is a malformed address or prefix (decides the exit status). */
  readonly prefix: boolean;
}

function issueLine(file: string, issue: ProfileIssue): string {
  const where = issue.line !== undefined ? `${file}:${issue.line}:${issue.column}` : file;
  return issue.path === "" ? `${where}: ${issue.message}` : `${where}: ${issue.path}: ${issue.message}`;
}

/**
 * A profile is JSON but not a valid Universe.profile. When every issue is a malformed
 * address or prefix the code is E_PREFIX_INVALID (exit 3), otherwise E_PROFILE_INVALID (exit 6).
 */
export class ProfileInvalidError extends WaygateError {
  constructor(
    readonly file: string,
    readonly issues: readonly ProfileIssue[],
  ) {
    super(
      issues.length > 0 && issues.every((i) => i.prefix) ? "E_PREFIX_INVALID" : "E_PROFILE_INVALID",
      issues.map((i) => issueLine(file, i)).join("\n"),
    );
  }
}

/** Two identity sources disagree, or two profiles claim the same identity. */
export class IdentityConflictError extends WaygateError {
  constructor(message: string) {
    super("E_IDENTITY_CONFLICT", message);
  }
}

/** Nothing says which system a profile belongs to. */
export class IdentityMissingError extends WaygateError {
  constructor(readonly file: string) {
    super(
      "E_IDENTITY_MISSING",
      `${file}: cannot tell which system this profile belongs to: it has no Identity.Certificate.SubjectDistinguishedName, ` +
        `its file name is not IDENTITY.profile, and no --identity was given`,
    );
  }
}

/** Several profiles failed to load; the code is the first failure's (files in sorted order). */
export class FleetLoadError extends WaygateError {
  constructor(readonly errors: readonly WaygateError[]) {
    super(errors[0]!.code, `${errors.length} profiles could not be loaded:\n${errors.map((e) => e.message).join("\n")}`);
  }
}

/** A bad combination of inputs (no paths, --identity with several profiles, ...). */
export class MigrateUsageError extends WaygateError {
  constructor(message: string) {
    super("E_USAGE", message);
  }
}

/** An iptables-save file is not iptables-save output. */
export class IptablesSaveError extends WaygateError {
  constructor(
    readonly file: string,
    readonly line: number,
    reason: string,
  ) {
    super("E_IPTABLES_SAVE_INVALID", line > 0 ? `${file}:${line}: ${reason}` : `${file}: ${reason}`);
  }
}

/** The plan has errors; nothing was written. `conflicts` holds the whole list. */
export class MigrationConflictError extends WaygateError {
  constructor(
    message: string,
    readonly conflicts: readonly { severity: string; kind: string; message: string }[],
  ) {
    super("E_MIGRATION_CONFLICT", message);
  }
}

/** --strip could not rewrite a profile; the original is untouched. */
export class ProfileWriteError extends WaygateError {
  constructor(
    readonly file: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super("E_PROFILE_WRITE", `${file}: ${reason}`, options);
  }
}
