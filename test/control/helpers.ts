/**
 * @module test/control/helpers
 * A control plane on 127.0.0.1 (port 0) over a throwaway database, an admin caller holding the
 * token the first start printed, and test agents that sign their requests with
 * core/control/auth.ts signAgentRequest (the agent's own signer), with knobs to forge, age or
 * replay a signature.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { signAgentRequest } from "../../core/control/auth.ts";
import { createControlServer, type ControlServer, type ControlServerOptions } from "../../core/control/server.ts";
import { silentLogger, type Logger } from "../../core/log.ts";
import { openSqliteStore } from "../../core/store/sqlite.ts";
import type { Store } from "../../core/store/store.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { encodeKey, generatePrivateKey } from "../../core/wire/keys.ts";

export const crypto = nobleCrypto();
export const random = (n: number) => globalThis.crypto.getRandomValues(new Uint8Array(n));

const temps: string[] = [];
export function cleanup(): void {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
}
export function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "waygate-control-"));
  temps.push(d);
  return d;
}

export interface TestServer {
  server: ControlServer;
  store: Store;
  dbPath: string;
  clock: { offset: number };
  now: () => number;
  adminToken: string;
  admin(method: string, path: string, body?: unknown, token?: string): Promise<Response>;
  adminJson<T = any>(method: string, path: string, body?: unknown): Promise<T>;
  stop(): Promise<void>;
}

export async function startTestServer(options: Partial<ControlServerOptions> & { dbPath?: string; logger?: Logger } = {}): Promise<TestServer> {
  const dbPath = options.dbPath ?? join(tempDir(), "waygate.db");
  const clock = { offset: 0 };
  const now = () => Date.now() + clock.offset;
  const store = await openSqliteStore(dbPath, { now });
  const server = await createControlServer({
    store,
    now,
    logger: options.logger ?? silentLogger,
    crypto,
    random,
    port: 0,
    hostname: "127.0.0.1",
    version: "test",
    ...options,
  });
  const adminToken = options.adminToken ?? server.adminToken!;
  const admin = (method: string, path: string, body?: unknown, token: string = adminToken) =>
    fetch(`${server.url}/v1/admin${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
  return {
    server,
    store,
    dbPath,
    clock,
    now,
    adminToken,
    admin,
    async adminJson(method, path, body) {
      const res = await admin(method, path, body);
      const text = await res.text();
      if (!res.ok) throw new Error(`${method} ${path} -> ${res.status} ${text}`);
      return JSON.parse(text);
    },
    async stop() {
      await server.stop();
      store.close();
    },
  };
}

export interface SignOverrides {
  /** Sign with this key but claim `claimKey` in the header (a forgery). */
  claimKey?: string;
  timeOffsetMs?: number;
  nonce?: Uint8Array;
  /** Sign these bytes but send the real body. */
  signedBody?: string;
  signedPath?: string;
  drop?: string;
}

export interface TestAgent {
  privateKey: Uint8Array;
  publicKey: string;
  headers(method: string, path: string, body?: string, o?: SignOverrides): Record<string, string>;
  request(method: string, path: string, body?: unknown, o?: SignOverrides): Promise<Response>;
  enrol(enrolmentKey: string, hostname?: string): Promise<Response>;
}

export function testAgent(t: TestServer): TestAgent {
  const privateKey = generatePrivateKey(random);
  const publicKey = encodeKey(crypto.x25519Base(privateKey));
  const headers = (method: string, path: string, body = "", o: SignOverrides = {}) => {
    const h = signAgentRequest({
      privateKey,
      serverPublicKey: t.server.serverPublicKey,
      method,
      pathWithQuery: o.signedPath ?? path,
      body: o.signedBody ?? body,
      now: () => t.now() + (o.timeOffsetMs ?? 0),
      random: o.nonce === undefined ? random : () => o.nonce!,
      crypto,
    });
    if (o.claimKey !== undefined) h["x-waygate-key"] = o.claimKey;
    if (o.drop !== undefined) delete h[o.drop];
    return h;
  };
  const request = (method: string, path: string, body?: unknown, o?: SignOverrides) => {
    const text = body === undefined ? "" : JSON.stringify(body);
    return fetch(`${t.server.url}${path}`, {
      method,
      headers: { ...headers(method, path, text, o), ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : text,
    });
  };
  return {
    privateKey,
    publicKey,
    headers,
    request,
    enrol: (enrolmentKey, hostname = "host") =>
      request("POST", "/v1/agent/enrol", { enrolmentKey, hostname, os: "linux", agentVersion: "test" }),
  };
}

/** Creates an enrolment key and returns its plain text. */
export async function createKey(t: TestServer, body: Record<string, unknown> = {}): Promise<string> {
  const r = await t.adminJson<{ key: string }>("POST", "/keys", body);
  return r.key;
}

/** Enrols a fresh agent (auto-approved) with `tags`, returning the agent and its system id. */
export async function enrolledAgent(t: TestServer, tags: string[] = [], hostname = "host"): Promise<TestAgent & { id: string; address: string }> {
  const key = await createKey(t, { autoApprove: true, tags });
  const agent = testAgent(t);
  const res = await agent.enrol(key, hostname);
  if (res.status !== 201) throw new Error(`enrol failed: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { systemId: string; virtualAddress: string };
  return Object.assign(agent, { id: body.systemId, address: body.virtualAddress });
}

/** Reads SSE events from a stream response. */
export function sseReader(res: Response) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const queue: Array<{ event: string; data: string }> = [];
  const wake: { fn: (() => void) | null } = { fn: null };
  let done = false;
  void (async () => {
    try {
      for (;;) {
        const { value, done: d } = await reader.read();
        if (d) break;
        buffer += decoder.decode(value, { stream: true });
        let i: number;
        while ((i = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          let event = "message";
          const data: string[] = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) event = line.slice(7);
            else if (line.startsWith("data: ")) data.push(line.slice(6));
          }
          if (data.length > 0) queue.push({ event, data: data.join("\n") });
          wake.fn?.();
        }
      }
    } catch {
      // cancelled
    }
    done = true;
    wake.fn?.();
  })();
  return {
    /** The next event of `type`, or throws after `timeoutMs`. */
    async next(type = "netmap", timeoutMs = 3000): Promise<any> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const idx = queue.findIndex((e) => e.event === type);
        if (idx >= 0) return JSON.parse(queue.splice(idx, 1)[0]!.data);
        if (done) throw new Error("stream ended");
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no ${type} event within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          wake.fn = resolve;
          setTimeout(resolve, left);
        });
        wake.fn = null;
      }
    },
    pending(type = "netmap"): number {
      return queue.filter((e) => e.event === type).length;
    },
    cancel: () => reader.cancel().catch(() => {}),
  };
}
