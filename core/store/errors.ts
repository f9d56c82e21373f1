/**
 * @module core/store/errors
 * The store's one error class. Messages name the database file; SQLite's own message (which
 * names constraints and columns, never values) is kept in the message and as `cause`.
 */
import { WaygateError } from "../errors.ts";

export class StoreError extends WaygateError {
  constructor(
    readonly location: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super("E_STORE", `${location}: ${message}`, options);
  }
}
