/**
 * @module core/control/server
 * The control plane over Bun.serve: GET /v1/info, the agent endpoints of protocol.ts (enrol,
 * netmap, netmap stream, report) and the admin API under /v1/admin (admin.ts).
 *
 * Request path, in this order, for every request:
 *   1. size limit (1 MiB) and the body read once, as bytes;
 *   2. authentication chosen by path PREFIX, not by route: anything under /v1/agent/ needs a
 *      valid agent signature (auth.ts) and, except /v1/agent/enrol, a key that is enrolled;
 *      anything under /v1/admin/ needs the admin bearer token (SHA-256 compared in constant
 *      time). A refused request gets 401 here and no handler ever runs, unknown paths included;
 *   3. route match (404/405), JSON parse and valibot validation (400 naming the field);
 *   4. the handler. Every database change is one store transaction; admin changes append to the
 *      audit log inside it and then invalidate the NetMap hub (netmaps.ts), which pushes new
 *      NetMaps to open streams within a second.
 *
 * First start: the server's X25519 key pair and a random admin token are created; only the
 * token's hash is stored and the token itself is returned once (`adminToken`) for the caller to
 * print. The private key lives in the database file (0600, in a 0700 directory).
 */
import * as v from "valibot";
import type { Logger } from "../log.ts";
import { parseAddress } from "../net/address.ts";
import type { Clock } from "../runner.ts";
import { overlayNetwork, SETTING_ADMIN_TOKEN_HASH, SETTING_NETWORK, SETTING_SERVER_PRIVATE_KEY } from "../store/policy-state.ts";
import type { Store } from "../store/store.ts";
import type { Crypto, RandomSource } from "../wire/crypto.ts";
import { decodeKey, encodeKey, generatePrivateKey } from "../wire/keys.ts";
import { adminRoutes } from "./admin.ts";
import { agentRoutes } from "./agent-handlers.ts";
import { NonceCache, bearerToken, secretHash, secretMatches, verifyAgentRequest } from "./auth.ts";
import { HttpError, issueField } from "./errors.ts";
import { json, type Route, type RequestContext, type ServerDeps } from "./http.ts";
import { NetMapHub } from "./netmaps.ts";
import { PATHS, PROTOCOL_VERSION, type InfoResponse } from "./protocol.ts";

export const MAX_BODY_BYTES = 1 << 20;

export interface ControlServerOptions {
  store: Store;
  now: Clock;
  logger: Logger;
  crypto: Crypto;
  random: RandomSource;
  /** 0 picks a free port. */
  port: number;
  hostname: string;
  tls?: { cert: string; key: string };
  /** Reported by /v1/info. */
  version?: string;
  /** Provision the admin token (e.g. from --admin-token-file) instead of generating one. */
  adminToken?: string;
  /** Overlay network for a new database (default 100.64.0.0/10); ignored once set. */
  network?: string;
  /** NetMap hub debounce (ms). */
  debounceMs?: number;
  /** SSE ping interval (ms), 15 s by default. */
  pingIntervalMs?: number;
}

export interface ControlServer {
  /** http(s)://host:port, no trailing slash. */
  readonly url: string;
  readonly port: number;
  readonly serverPublicKey: string;
  /** The overlay network systems get their addresses from. */
  readonly network: string;
  /** Set only on the start that created it: print it once, it is not stored. */
  readonly adminToken?: string;
  readonly hub: NetMapHub;
  stop(): Promise<void>;
}

export type AuthKind = "none" | "agent" | "agent-enrol" | "admin";

export { json };

function errorResponse(err: HttpError): Response {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (err.status === 401) headers["www-authenticate"] = 'Bearer realm="waygate"';
  return new Response(JSON.stringify(err.body()), { status: err.status, headers });
}

function compile(path: string): { re: RegExp; names: string[] } {
  const names: string[] = [];
  const re = new RegExp(
    "^" +
      path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/:(\w+)/g, (_m, name: string) => {
        names.push(name);
        return "([^/]+)";
      }) +
      "$",
  );
  return { re, names };
}

function parseWith<S extends v.GenericSchema>(schema: S, input: unknown, what: string): v.InferOutput<S> {
  const r = v.safeParse(schema, input);
  if (r.success) return r.output;
  const issue = r.issues[0];
  const field = issueField(issue);
  throw new HttpError(400, "E_BAD_REQUEST", `${what}: ${field === "body" ? "" : `${field}: `}${issue.message}`, field);
}

/** The client's address without an IPv4-mapped prefix; null when Bun cannot tell. */
function sourceIpOf(server: { requestIP(req: Request): { address: string } | null }, req: Request): string | null {
  const info = server.requestIP(req);
  if (info === null) return null;
  let addr = info.address;
  if (addr.toLowerCase().startsWith("::ffff:") && addr.includes(".")) addr = addr.slice(7);
  try {
    return parseAddress(addr).text;
  } catch {
    return null;
  }
}

/** Loads or creates the server's key pair and admin token hash. */
async function initialise(options: ControlServerOptions): Promise<{ privateKey: Uint8Array; publicKey: string; adminTokenHash: string; adminToken?: string; network: string }> {
  const { store, crypto, random, logger } = options;
  return store.transaction(async (tx) => {
    let stored = await tx.getSetting(SETTING_SERVER_PRIVATE_KEY);
    if (stored === null) {
      stored = encodeKey(generatePrivateKey(random));
      await tx.putSetting(SETTING_SERVER_PRIVATE_KEY, stored);
      await tx.appendAudit({ actor: "server", action: "server.key_create", subject: "server", detail: {} });
      logger.info("control: server-key=created");
    }
    const privateKey = decodeKey(stored, "server private key");
    const publicKey = encodeKey(crypto.x25519Base(privateKey));
    if ((await tx.getSetting(SETTING_NETWORK)) === null) {
      await tx.putSetting(SETTING_NETWORK, options.network ?? (await overlayNetwork(tx)));
    }
    const network = await overlayNetwork(tx);
    let hash = await tx.getSetting(SETTING_ADMIN_TOKEN_HASH);
    let adminToken: string | undefined;
    if (options.adminToken !== undefined) {
      const wanted = secretHash(options.adminToken);
      if (hash !== wanted) {
        await tx.putSetting(SETTING_ADMIN_TOKEN_HASH, wanted);
        await tx.appendAudit({ actor: "server", action: "admin_token.provision", subject: "server", detail: {} });
        logger.info("control: admin-token=provisioned");
      }
      hash = wanted;
    } else if (hash === null) {
      adminToken = `wga_${Buffer.from(random(32)).toString("base64url")}`;
      hash = secretHash(adminToken);
      await tx.putSetting(SETTING_ADMIN_TOKEN_HASH, hash);
      await tx.appendAudit({ actor: "server", action: "admin_token.create", subject: "server", detail: {} });
      logger.info("control: admin-token=created");
    }
    return { privateKey, publicKey, adminTokenHash: hash, network, ...(adminToken === undefined ? {} : { adminToken }) };
  });
}

export async function createControlServer(options: ControlServerOptions): Promise<ControlServer> {
  const { store, now, logger, crypto } = options;
  const init = await initialise(options);
  const hub = new NetMapHub({ store, now, logger, debounceMs: options.debounceMs });
  await hub.ready();
  const deps: ServerDeps = {
    store,
    now,
    logger,
    crypto,
    random: options.random,
    hub,
    network: init.network,
    serverPublicKey: init.publicKey,
    version: options.version ?? "dev",
    pingIntervalMs: options.pingIntervalMs ?? 15_000,
  };
  const nonces = new NonceCache();
  const keyCache = new Map<string, Uint8Array>();

  const routes: Array<Route & { auth: AuthKind; re: RegExp; names: string[] }> = [];
  const add = (auth: AuthKind, prefix: string, list: Route[]) => {
    for (const r of list) routes.push({ ...r, path: prefix + r.path, auth, ...compile(prefix + r.path) });
  };
  add("none", "", [
    {
      method: "GET",
      path: PATHS.info,
      handler: () => json({ protocol: PROTOCOL_VERSION, serverPublicKey: init.publicKey, network: init.network, version: deps.version } satisfies InfoResponse),
    },
  ]);
  add("agent", "", agentRoutes(deps));
  add("admin", PATHS.admin, adminRoutes(deps));
  for (const r of routes) if (r.path === PATHS.enrol) r.auth = "agent-enrol";

  /** 401 unless the request is allowed in; returns the agent identity when there is one. */
  async function authenticate(
    kind: "agent" | "admin",
    req: Request,
    url: URL,
    body: Uint8Array,
  ): Promise<{ agentKey?: string; systemId?: string }> {
    if (kind === "admin") {
      const token = bearerToken(req.headers);
      if (token === null) throw new HttpError(401, "E_UNAUTHORIZED", "admin token required (Authorization: Bearer <token>)");
      if (!secretMatches(token, init.adminTokenHash)) throw new HttpError(401, "E_UNAUTHORIZED", "the admin token is wrong");
      return {};
    }
    const result = verifyAgentRequest({
      headers: req.headers,
      method: req.method,
      pathWithQuery: url.pathname + url.search,
      body,
      serverPrivateKey: init.privateKey,
      crypto,
      now,
      nonces,
      keyCache,
    });
    if (!result.ok) {
      logger.info(`control: auth=refused kind=agent reason=${result.reason} path=${url.pathname}`);
      throw new HttpError(401, "E_UNAUTHORIZED", result.message);
    }
    if (url.pathname === PATHS.enrol) return { agentKey: result.publicKey };
    const system = await store.getSystemByPublicKey(result.publicKey);
    if (system === null) {
      logger.info(`control: auth=refused kind=agent reason=not-enrolled path=${url.pathname}`);
      throw new HttpError(401, "E_UNAUTHORIZED", "this key is not enrolled (run waygate enrol)");
    }
    return { agentKey: result.publicKey, systemId: system.identity };
  }

  async function handle(req: Request, server: Bun.Server<undefined>): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname;
    const declared = Number(req.headers.get("content-length") ?? "0");
    if (declared > MAX_BODY_BYTES) throw new HttpError(413, "E_TOO_LARGE", `request body over ${MAX_BODY_BYTES} bytes`);
    const bodyBytes = new Uint8Array(await req.arrayBuffer());
    if (bodyBytes.length > MAX_BODY_BYTES) throw new HttpError(413, "E_TOO_LARGE", `request body over ${MAX_BODY_BYTES} bytes`);

    let who: { agentKey?: string; systemId?: string } = {};
    if (path.startsWith("/v1/agent/") || path === "/v1/agent") who = await authenticate("agent", req, url, bodyBytes);
    else if (path.startsWith(PATHS.admin + "/") || path === PATHS.admin) who = await authenticate("admin", req, url, bodyBytes);

    let methodMismatch = false;
    for (const r of routes) {
      const m = r.re.exec(path);
      if (m === null) continue;
      if (r.method !== req.method) {
        methodMismatch = true;
        continue;
      }
      const params: Record<string, string> = {};
      r.names.forEach((name, i) => {
        try {
          params[name] = decodeURIComponent(m[i + 1]!);
        } catch {
          throw new HttpError(400, "E_BAD_REQUEST", `path parameter ${name} is not valid URL encoding`, name);
        }
      });
      if (r.stream) server.timeout(req, 0);
      const ctx: RequestContext = {
        req,
        url,
        params,
        bodyBytes,
        ...who,
        sourceIp: sourceIpOf(server, req),
        body(schema) {
          let raw: unknown;
          try {
            raw = JSON.parse(new TextDecoder().decode(bodyBytes));
          } catch {
            throw new HttpError(400, "E_BAD_REQUEST", "the body is not JSON", "body");
          }
          return parseWith(schema, raw, "invalid request body");
        },
        query(schema) {
          return parseWith(schema, Object.fromEntries(url.searchParams), "invalid query");
        },
      };
      return await r.handler(ctx);
    }
    if (methodMismatch) throw new HttpError(405, "E_METHOD", `${req.method} is not allowed on ${path}`);
    throw new HttpError(404, "E_NOT_FOUND", `no such endpoint ${path}`);
  }

  const server = Bun.serve({
    port: options.port,
    hostname: options.hostname,
    maxRequestBodySize: MAX_BODY_BYTES,
    // Pings every 15 s keep streams well inside this; other requests are short.
    idleTimeout: 60,
    ...(options.tls === undefined ? {} : { tls: { cert: options.tls.cert, key: options.tls.key } }),
    async fetch(req, srv) {
      try {
        return await handle(req, srv);
      } catch (err) {
        if (err instanceof HttpError) return errorResponse(err);
        logger.error(`control: handler failed method=${req.method} path=${new URL(req.url).pathname} error=${JSON.stringify(err instanceof Error ? err.message : String(err))}`);
        return errorResponse(new HttpError(500, "E_INTERNAL", "internal error (see the server log)"));
      }
    },
    error(err) {
      logger.error(`control: server error=${JSON.stringify(err.message)}`);
      return errorResponse(new HttpError(500, "E_INTERNAL", "internal error"));
    },
  });
  const scheme = options.tls === undefined ? "http" : "https";
  const host = server.hostname?.includes(":") ? `[${server.hostname}]` : server.hostname;
  const url = `${scheme}://${host}:${server.port}`;
  logger.info(`control: listening url=${url} network=${init.network} tls=${options.tls !== undefined}`);
  return {
    url,
    port: server.port ?? options.port,
    serverPublicKey: init.publicKey,
    network: init.network,
    ...(init.adminToken === undefined ? {} : { adminToken: init.adminToken }),
    hub,
    async stop() {
      hub.stop();
      await server.stop(true);
    },
  };
}
