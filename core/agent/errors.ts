/**
 * @module core/agent/errors
 * The agent's named errors. They use existing codes of core/errors.ts (this room may not edit
 * it); the codes they would deserve of their own are listed beside each class.
 */
import { WaygateError } from "../errors.ts";

/**
 * A state-directory file is unreadable, not JSON, or not the shape we write; the message names
 * the file and the field. (Would be E_AGENT_STATE.)
 */
export class AgentStateError extends WaygateError {
  constructor(
    readonly file: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super("E_CONFIG_INVALID", `${file}: ${reason}`, options);
  }
}

/** `waygate run`/`status` before `waygate enrol`, or enrolling against another server. (Would be E_NOT_ENROLLED.) */
export class NotEnrolledError extends WaygateError {
  constructor(message: string) {
    super("E_USAGE", message);
  }
}

/**
 * The control plane could not be reached, or answered with an error or a body that does not
 * match core/control/protocol.ts. `status` is the HTTP status (0: no answer at all).
 * (Would be E_CONTROL_UNREACHABLE / E_CONTROL_REJECTED.)
 */
export class ControlPlaneError extends WaygateError {
  constructor(
    readonly url: string,
    readonly status: number,
    message: string,
    readonly serverCode?: string,
    options?: { cause?: unknown },
  ) {
    super("E_PLATFORM", `${url}: ${message}`, options);
  }
}
