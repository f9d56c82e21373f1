/**
 * @module core/agent/errors
 * The agent's named errors, each with its own code in core/errors.ts.
 */
import { WaygateError } from "../errors.ts";

/**
 * A state-directory file is unreadable, not JSON, or not the shape we write; the message names
 * the file and the field.
 */
export class AgentStateError extends WaygateError {
  constructor(
    readonly file: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super("E_AGENT_STATE", `${file}: ${reason}`, options);
  }
}

/** `waygate run`/`status` before `waygate enrol`, or enrolling against another server. */
export class NotEnrolledError extends WaygateError {
  constructor(message: string) {
    super("E_NOT_ENROLLED", message);
  }
}

/**
 * The control plane could not be reached, or answered with an error or a body that does not
 * match core/control/protocol.ts. `status` is the HTTP status (0: no answer at all).
 * No answer or a 5xx is E_CONTROL_UNREACHABLE; 401/403 E_CONTROL_AUTH; any other refusal or a
 * malformed answer E_CONTROL_REJECTED.
 */
export class ControlPlaneError extends WaygateError {
  constructor(
    readonly url: string,
    readonly status: number,
    message: string,
    readonly serverCode?: string,
    options?: { cause?: unknown },
  ) {
    super(status === 0 || status >= 500 ? "E_CONTROL_UNREACHABLE" : status === 401 || status === 403 ? "E_CONTROL_AUTH" : "E_CONTROL_REJECTED", `${url}: ${message}`, options);
  }
}
