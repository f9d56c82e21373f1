/**
 * @module platform/linux/control
 * The control socket of a running `waygate up`: a unix stream socket at
 * `<runDir>/<iface>.sock` (runDir is /run/waygate; WAYGATE_RUN_DIR overrides it for tests),
 * mode 0600 so only root talks to it, one JSON object per line each way.
 *
 *   → {"op":"show"}   ← {"ok":true,"show":{...}}                        (`waygate show`)
 *   → {"op":"down"}   ← {"ok":true,"stopping":true} ... {"ok":true,"stopped":true}
 *                                                                         (`waygate down`)
 *   anything else     ← {"ok":false,"error":"..."}
 *
 * A socket file whose server is gone (a crashed or SIGKILLed run) refuses connections: both the
 * server (before it listens) and the client detect that and remove the file, logging
 * `control: stale socket removed path=...` once.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { WaygateError } from "../../core/errors.ts";
import { type Logger, silentLogger } from "../../core/log.ts";

export const DEFAULT_RUN_DIR = "/run/waygate";

/** The control socket could not be reached, created, or answered something unexpected. */
export class ControlError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_PLATFORM", message, options);
  }
}

export function runDirOf(env: Record<string, string | undefined> = process.env): string {
  const dir = env.WAYGATE_RUN_DIR;
  return dir && dir.length > 0 ? dir : DEFAULT_RUN_DIR;
}

export function socketPath(runDir: string, iface: string): string {
  return join(runDir, `${iface}.sock`);
}

/** Interface names with a socket file in `runDir` (running or stale), sorted. */
export function listSockets(runDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(runDir);
  } catch {
    return [];
  }
  return names.filter((n) => n.endsWith(".sock")).map((n) => n.slice(0, -5)).sort();
}

export interface ControlHandlers {
  show(): Promise<unknown>;
  /** Tears the interface down; the promise settles when it is gone. */
  down(): Promise<void>;
}

export interface ControlServer {
  readonly path: string;
  /** Stops accepting, removes the socket file. Idempotent. */
  close(): void;
}

type Probe = "live" | "stale" | "absent";

/** Whether something listens on `path`: connects and hangs up. */
export function probeSocket(path: string, timeoutMs = 1000): Promise<Probe> {
  if (!existsSync(path)) return Promise.resolve("absent");
  return new Promise((resolve) => {
    const sock = createConnection({ path });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve("live"); // accepted into the backlog but slow: treat as running, never delete it
    }, timeoutMs);
    sock.once("connect", () => {
      clearTimeout(timer);
      sock.end();
      resolve("live");
    });
    sock.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code === "ENOENT" ? "absent" : "stale");
    });
  });
}

function removeStale(path: string, logger: Logger): void {
  try {
    if (!lstatSync(path).isSocket()) throw new ControlError(`${path} exists and is not a socket; refusing to remove it`);
  } catch (err) {
    if (err instanceof ControlError) throw err;
    return;
  }
  rmSync(path, { force: true });
  logger.info(`control: stale socket removed path=${path}`);
}

/** Listens on `path`; refuses when another process serves it, removes a stale file first. */
export async function listenControl(path: string, handlers: ControlHandlers, deps: { logger?: Logger } = {}): Promise<ControlServer> {
  const logger = deps.logger ?? silentLogger;
  mkdirSync(join(path, ".."), { recursive: true, mode: 0o755 });
  const state = await probeSocket(path);
  if (state === "live") throw new ControlError(`${path} is in use: this interface is already up (waygate down first)`);
  if (state === "stale") removeStale(path, logger);

  const server: Server = createServer((sock) => serve(sock, handlers, logger));
  const old = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ path }, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (cause) {
    throw new ControlError(`cannot listen on ${path}: ${(cause as Error).message}`, { cause });
  } finally {
    process.umask(old);
  }
  chmodSync(path, 0o600);
  server.on("error", (err) => logger.warn(`control: server error=${String(err)}`));
  logger.debug(`control: listening path=${path}`);
  let closed = false;
  return {
    path,
    close() {
      if (closed) return;
      closed = true;
      server.close();
      rmSync(path, { force: true });
    },
  };
}

function serve(sock: Socket, handlers: ControlHandlers, logger: Logger): void {
  let buffer = "";
  const write = (obj: unknown) => {
    if (!sock.destroyed) sock.write(`${JSON.stringify(obj)}\n`);
  };
  sock.setEncoding("utf8");
  sock.on("error", () => sock.destroy());
  sock.on("data", (chunk: string) => {
    buffer += chunk;
    if (buffer.length > 65536) {
      write({ ok: false, error: "request too long" });
      sock.destroy();
      return;
    }
    let nl: number;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (line !== "") void handle(line);
    }
  });
  const handle = async (line: string): Promise<void> => {
    let op: unknown;
    try {
      op = (JSON.parse(line) as { op?: unknown }).op;
    } catch {
      write({ ok: false, error: "request is not JSON" });
      return;
    }
    try {
      if (op === "show") {
        write({ ok: true, show: await handlers.show() });
      } else if (op === "down") {
        logger.info("control: down requested");
        write({ ok: true, stopping: true });
        await handlers.down();
        write({ ok: true, stopped: true });
        sock.end();
      } else {
        write({ ok: false, error: `unknown op ${JSON.stringify(op)}` });
      }
    } catch (err) {
      write({ ok: false, error: err instanceof Error ? err.message : String(err) });
    }
  };
}

/**
 * Sends one request and collects reply lines until `done(reply)` says so or the server hangs up.
 * A refused connection means a stale socket: it is removed and reported as not running.
 */
export async function controlRequest(
  path: string,
  request: { op: string },
  options: { timeoutMs?: number; done?: (reply: Record<string, unknown>) => boolean; logger?: Logger; iface?: string } = {},
): Promise<Record<string, unknown>[]> {
  const what = options.iface ? `interface ${options.iface}` : path;
  const timeoutMs = options.timeoutMs ?? 5000;
  const done = options.done ?? (() => true);
  return await new Promise<Record<string, unknown>[]>((resolve, reject) => {
    const replies: Record<string, unknown>[] = [];
    let buffer = "";
    let settled = false;
    const sock = createConnection({ path });
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(replies);
    };
    const timer = setTimeout(() => finish(new ControlError(`${what}: no answer on ${path} within ${timeoutMs} ms`)), timeoutMs);
    sock.setEncoding("utf8");
    sock.once("connect", () => sock.write(`${JSON.stringify(request)}\n`));
    sock.on("data", (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        let reply: Record<string, unknown>;
        try {
          reply = JSON.parse(line) as Record<string, unknown>;
        } catch (cause) {
          finish(new ControlError(`${what}: unparseable answer ${JSON.stringify(line.slice(0, 200))}`, { cause }));
          return;
        }
        replies.push(reply);
        if (reply.ok !== true) {
          finish(new ControlError(`${what}: ${String(reply.error ?? "request failed")}`));
          return;
        }
        if (done(reply)) {
          finish(null);
          return;
        }
      }
    });
    sock.on("close", () => finish(null));
    sock.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") {
        finish(new ControlError(`${what} is not up (no control socket ${path})`));
      } else if (err.code === "ECONNREFUSED") {
        try {
          removeStale(path, options.logger ?? silentLogger);
        } catch {
          // not a socket: leave it, report below
        }
        finish(new ControlError(`${what} is not up (removed stale control socket ${path})`));
      } else {
        finish(new ControlError(`${what}: ${path}: ${err.message}`, { cause: err }));
      }
    });
  });
}
