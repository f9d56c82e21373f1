/**
 * @module core/control/errors
 * HTTP-facing errors of the control plane. A handler throws HttpError; the server turns it into
 * `{ error: { code, message, field? } }` (protocol.ts ErrorBodySchema) with its status. Wire codes
 * are stable strings for clients; they are not process exit codes (core/errors.ts), though the
 * admin CLI maps them onto those.
 */
import type * as v from "valibot";

export type HttpErrorCode =
  | "E_BAD_REQUEST"
  | "E_UNAUTHORIZED"
  | "E_FORBIDDEN"
  | "E_NOT_FOUND"
  | "E_CONFLICT"
  | "E_ENROLMENT_KEY"
  | "E_METHOD"
  | "E_TOO_LARGE"
  | "E_UNAVAILABLE"
  | "E_INTERNAL";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: HttpErrorCode,
    message: string,
    readonly field?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "HttpError";
  }

  body(): { error: { code: string; message: string; field?: string } } {
    return { error: { code: this.code, message: this.message, ...(this.field === undefined ? {} : { field: this.field }) } };
  }
}

export const badRequest = (message: string, field?: string) => new HttpError(400, "E_BAD_REQUEST", message, field);
export const notFound = (message: string) => new HttpError(404, "E_NOT_FOUND", message);
export const conflict = (message: string, field?: string) => new HttpError(409, "E_CONFLICT", message, field);

/** The dotted path of a valibot issue ("acls.0.ports"), or "body" at the top level. */
export function issueField(issue: v.BaseIssue<unknown>): string {
  const parts: string[] = [];
  for (const item of issue.path ?? []) {
    const key = (item as { key?: unknown }).key;
    parts.push(String(key));
  }
  return parts.length === 0 ? "body" : parts.join(".");
}
