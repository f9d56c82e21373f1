/**
 * @module core/errors
 * Named error classes with a stable code. The CLI maps codes to exit statuses (cmd/main.ts);
 * messages carry their context (file, JSON path, argv) and `cause` is kept.
 */

/** Every code Waygate throws, with the exit status the CLI uses for it. */
export const EXIT_STATUS = {
  E_USAGE: 2,
  E_ADDRESS_INVALID: 3,
  E_PREFIX_INVALID: 3,
  E_PROFILE_READ: 4,
  E_PROFILE_JSON: 5,
  E_PROFILE_INVALID: 6,
  E_IDENTITY_CONFLICT: 7,
  E_MIGRATION_CONFLICT: 8,
  E_IPTABLES_SAVE_INVALID: 9,
  E_STORE: 10,
  E_CONFIG_INVALID: 11,
  E_KEY_INVALID: 12,
  E_COMMAND_FAILED: 13,
  E_PLATFORM: 14,
  E_HANDSHAKE: 15,
  E_INTERNAL: 70,
  /** A DNS message that does not decode (counted and answered FORMERR; never reaches the CLI). */
  E_DNS_FORMAT: 18,
  /** A DNS configuration (resolv.conf, hosts, zone) that cannot be used. */
  E_DNS: 18,
  /** An agent state-directory file is unreadable or not the shape we write (file and field named). */
  E_AGENT_STATE: 19,
  /** `run`/`status` before `enrol`, or enrolling against another server without --force. */
  E_NOT_ENROLLED: 20,
  /** The control plane could not be reached, or failed (5xx). */
  E_CONTROL_UNREACHABLE: 21,
  /** The control plane refused a request (4xx): the message names the field or the reason. */
  E_CONTROL_REJECTED: 22,
  /** The control plane refused the credentials (admin token or agent key). */
  E_CONTROL_AUTH: 23,
  /** No identity for a profile: no certificate subject, no --identity, no NAME.profile file name. */
  E_IDENTITY_MISSING: 7,
  /** A profile could not be rewritten (--strip): temp file, fsync, backup or rename failed. */
  E_PROFILE_WRITE: 4,
  /** A policy state (systems, tags, policies) failed validation; the message names the JSON path. */
  E_POLICY_INVALID: 16,
  /** compile/explain was asked about a system id the policy state does not have. */
  E_POLICY_UNKNOWN_SYSTEM: 17,
  /** An OS route listing (`route print`, `netstat -rn`, `ip -j route`) did not have the shape the parser knows. */
  E_ROUTE_PARSE: 14,
} as const;

export type ErrorCode = keyof typeof EXIT_STATUS;

export class WaygateError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
  get exitStatus(): number {
    return EXIT_STATUS[this.code];
  }
}

/** A bad address or prefix text; `input` is the text as given. */
export class AddressError extends WaygateError {
  constructor(
    code: "E_ADDRESS_INVALID" | "E_PREFIX_INVALID",
    readonly input: string,
    readonly reason: string,
  ) {
    super(code, `${JSON.stringify(input)} ${reason}`);
  }
}

export function isWaygateError(err: unknown): err is WaygateError {
  return err instanceof WaygateError;
}

/** Exit status for any thrown value: the code's status, or 70 for the unexpected. */
export function exitStatusOf(err: unknown): number {
  return isWaygateError(err) ? err.exitStatus : EXIT_STATUS.E_INTERNAL;
}
