/**
 * @module cmd/admin-client
 * The admin CLI's HTTP client and what its commands share: where the server is (`--server`,
 * WAYGATE_SERVER, default http://127.0.0.1:7070), the admin token (`--token`,
 * WAYGATE_ADMIN_TOKEN, `--token-file`, WAYGATE_ADMIN_TOKEN_FILE, in that order), error mapping
 * (401: the token is wrong; 400: names the field), list flags and table printing.
 *
 * Commands take `data: { out, env, fetch }` from tests (citty runCommand) and default to stdout,
 * process.env and the global fetch.
 */
import { readFileSync } from "node:fs";
import { WaygateError } from "../core/errors.ts";

export const DEFAULT_SERVER = "http://127.0.0.1:7070";

/** An answer from the control plane that is not a success; the message says what to do. */
export class AdminApiError extends WaygateError {
  constructor(
    message: string,
    readonly httpStatus: number,
    readonly wireCode?: string,
    readonly field?: string,
  ) {
    // Our own argument checks (no wire code) are usage errors; the server's answers get the
    // control-plane codes: refused credentials, a refused request, or no answer / a failure.
    super(
      httpStatus === 0 || httpStatus >= 500
        ? "E_CONTROL_UNREACHABLE"
        : httpStatus === 401 || httpStatus === 403
          ? "E_CONTROL_AUTH"
          : wireCode === undefined
            ? "E_USAGE"
            : "E_CONTROL_REJECTED",
      message,
    );
  }
}

export interface AdminCommandData {
  out?: (text: string) => void;
  env?: Record<string, string | undefined>;
  fetch?: (input: string, init?: RequestInit) => Promise<Response>;
}

/** citty args every admin command accepts. */
export const connectionArgs = {
  server: { type: "string", description: `Control plane URL (env WAYGATE_SERVER; default ${DEFAULT_SERVER})`, valueHint: "URL" },
  token: { type: "string", description: "Admin token (env WAYGATE_ADMIN_TOKEN); prefer --token-file, command lines are visible to other users", valueHint: "TOKEN" },
  "token-file": { type: "string", description: "File holding the admin token (env WAYGATE_ADMIN_TOKEN_FILE)", valueHint: "FILE" },
} as const;

export const jsonArg = { json: { type: "boolean", description: "Print JSON for scripts", default: false } } as const;

export interface ConnectionArgs {
  server?: string | undefined;
  token?: string | undefined;
  "token-file"?: string | undefined;
}

export class AdminClient {
  constructor(
    readonly server: string,
    readonly token: string,
    readonly fetchFn: (input: string, init?: RequestInit) => Promise<Response>,
  ) {}

  async request<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const url = `${this.server}/v1/admin${path}`;
    let res: Response;
    try {
      res = await this.fetchFn(url, {
        method,
        headers: { authorization: `Bearer ${this.token}`, accept: "application/json", ...(body === undefined ? {} : { "content-type": "application/json" }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (err) {
      throw new AdminApiError(`cannot reach the control plane at ${this.server}: ${(err as Error).message} (is waygate serve running? set --server or WAYGATE_SERVER)`, 0);
    }
    const text = await res.text();
    let parsed: unknown = null;
    try {
      parsed = text === "" ? null : JSON.parse(text);
    } catch {
      // not JSON
    }
    if (!res.ok) {
      const e = (parsed as { error?: { code?: string; message?: string; field?: string } } | null)?.error;
      const what = e?.message ?? (text.slice(0, 200) || res.statusText);
      if (res.status === 401) {
        throw new AdminApiError(`the control plane refused the admin token (${what}); check --token, WAYGATE_ADMIN_TOKEN or --token-file`, 401, e?.code);
      }
      const field = e?.field === undefined ? "" : ` [field: ${e.field}]`;
      throw new AdminApiError(`${method} ${path}: ${res.status} ${e?.code ?? ""} ${what}${field}`.replace(/\s+/g, " ").trim(), res.status, e?.code, e?.field);
    }
    return parsed as T;
  }
}

export function adminClient(args: ConnectionArgs, data: AdminCommandData | undefined): AdminClient {
  const env = data?.env ?? process.env;
  const server = (args.server ?? env.WAYGATE_SERVER ?? DEFAULT_SERVER).replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]+$/.test(server)) throw new AdminApiError(`--server ${JSON.stringify(server)}: expected http(s)://host:port`, 400);
  let token = args.token ?? env.WAYGATE_ADMIN_TOKEN;
  const file = args["token-file"] ?? env.WAYGATE_ADMIN_TOKEN_FILE;
  if ((token === undefined || token === "") && file !== undefined && file !== "") {
    try {
      token = readFileSync(file, "utf8").trim();
    } catch (err) {
      throw new AdminApiError(`cannot read the admin token file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 400);
    }
  }
  if (token === undefined || token === "") {
    throw new AdminApiError("no admin token: pass --token-file FILE or --token TOKEN, or set WAYGATE_ADMIN_TOKEN (waygate serve printed it on its first start)", 400);
  }
  return new AdminClient(server, token, data?.fetch ?? ((u, i) => fetch(u, i)));
}

export function output(data: AdminCommandData | undefined): (text: string) => void {
  return data?.out ?? ((t) => process.stdout.write(t));
}

/** Prints JSON or, for people, a table (first row is the header). */
export function printList(out: (t: string) => void, asJson: boolean, value: unknown, rows: () => string[][]): void {
  if (asJson) {
    out(JSON.stringify(value, null, 2) + "\n");
    return;
  }
  const r = rows();
  if (r.length <= 1) {
    out("(none)\n");
    return;
  }
  out(table(r));
}

export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd()).join("\n") + "\n";
}

/** `--tag a --tag b,c` -> ["a","b","c"] (citty gives a string or, repeated, an array). */
export function listArg(value: unknown): string[] {
  if (value === undefined || value === null || value === false) return [];
  const items = Array.isArray(value) ? value : [value];
  return items.flatMap((x) => String(x).split(",")).map((x) => x.trim()).filter((x) => x !== "");
}

/** Every value of a repeatable flag from the raw argv (citty keeps only one for type string). */
export function repeated(rawArgs: readonly string[], ...names: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    for (const n of names) {
      if (a === `--${n}` && i + 1 < rawArgs.length) out.push(rawArgs[++i]!);
      else if (a.startsWith(`--${n}=`)) out.push(a.slice(n.length + 3));
    }
  }
  return out;
}

export function ago(ms: number | null, now: number): string {
  if (ms === null) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

/** "90s", "30m", "12h", "7d" -> seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*([smhdw])$/.exec(text.trim());
  if (m === null) throw new AdminApiError(`--expires ${JSON.stringify(text)}: expected a duration like 30m, 12h, 7d`, 400);
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2] as "s" | "m" | "h" | "d" | "w"];
}
