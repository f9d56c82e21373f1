/**
 * @module core/control/protocol
 * The wire contract between agents and the control plane (`waygate serve`): paths, headers,
 * request/response schemas (valibot) and the agent authentication scheme. Both sides import
 * this file; nothing here does I/O.
 *
 * Agent authentication — proof of possession of the agent's WireGuard private key, no extra
 * key material and no bearer secret that could leak from a log:
 *   The server has a static X25519 key pair (its public key is served by GET /v1/info).
 *   shared = X25519(agentPrivate, serverPublic) = X25519(serverPrivate, agentPublic)
 *   authKey = HMAC-SHA256(key = shared, "waygate agent auth v1")
 *   tag = HMAC-SHA256(authKey, METHOD "\n" PATH_WITH_QUERY "\n" TIMESTAMP_MS "\n" NONCE "\n" hex(SHA256(body)))
 *   headers: X-Waygate-Key: <agent public key, base64>   X-Waygate-Time: <ms since epoch>
 *            X-Waygate-Nonce: <16 random bytes, hex>     X-Waygate-Auth: <tag, base64>
 * The server rejects (401, before any handler runs) a missing header, a time more than
 * AUTH_MAX_SKEW_MS away from its clock, a nonce it has seen within that window, a tag that
 * does not verify (constant-time compare), or a key that is not enrolled (except on /enrol).
 * An agent can only ever read its own NetMap: the system is the one the key belongs to.
 *
 * Admin authentication: `Authorization: Bearer <admin token>`, compared in constant time.
 * The token is created on the server's first start and printed once; there is no default.
 */
import * as v from "valibot";

export const PROTOCOL_VERSION = 1;
export const AUTH_MAX_SKEW_MS = 60_000;
export const AUTH_LABEL = "waygate agent auth v1";

export const HEADER_KEY = "x-waygate-key";
export const HEADER_TIME = "x-waygate-time";
export const HEADER_NONCE = "x-waygate-nonce";
export const HEADER_AUTH = "x-waygate-auth";

export const PATHS = {
  /** GET, no auth: server public key, overlay network, version. */
  info: "/v1/info",
  /** POST, agent auth (key need not be enrolled yet): EnrolRequest -> EnrolResponse. */
  enrol: "/v1/agent/enrol",
  /** GET, agent auth: the current NetMap (NetMapEnvelope). */
  netmap: "/v1/agent/netmap",
  /**
   * GET, agent auth: Server-Sent Events. `event: netmap` with a NetMapEnvelope as data, sent at
   * once and then within a second of any change that alters this system's NetMap;
   * `event: ping` every 15 s so dead connections are noticed.
   */
  netmapStream: "/v1/agent/netmap/stream",
  /** POST, agent auth: AgentReport -> 204. Endpoint, discovered subnets, version, OS. */
  report: "/v1/agent/report",
  /** Admin API prefix (bearer token): systems, keys, tags, gateways, policies, explain, audit. */
  admin: "/v1/admin",
} as const;

const Base64Key = v.pipe(v.string(), v.regex(/^[A-Za-z0-9+/]{43}=$/, "must be a base64 WireGuard key (44 characters)"));

export const InfoResponseSchema = v.object({
  protocol: v.literal(PROTOCOL_VERSION),
  serverPublicKey: Base64Key,
  network: v.string(),
  version: v.string(),
});
export type InfoResponse = v.InferOutput<typeof InfoResponseSchema>;

export const EnrolRequestSchema = v.object({
  enrolmentKey: v.pipe(v.string(), v.minLength(8, "enrolmentKey is too short"), v.maxLength(200)),
  hostname: v.pipe(v.string(), v.minLength(1), v.maxLength(253)),
  os: v.pipe(v.string(), v.maxLength(64)),
  agentVersion: v.pipe(v.string(), v.maxLength(64)),
});
export type EnrolRequest = v.InferOutput<typeof EnrolRequestSchema>;

export const EnrolResponseSchema = v.object({
  systemId: v.pipe(v.string(), v.regex(/^[A-Z0-9]{5}$/)),
  virtualAddress: v.string(),
  network: v.string(),
  approved: v.boolean(),
  tags: v.array(v.string()),
});
export type EnrolResponse = v.InferOutput<typeof EnrolResponseSchema>;

export const AgentReportSchema = v.object({
  /** host:port the agent listens on (as the agent sees it); the server also records the source IP. */
  listenPort: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535)),
  endpoints: v.array(v.string()),
  discoveredSubnets: v.array(v.string()),
  agentVersion: v.pipe(v.string(), v.maxLength(64)),
  os: v.pipe(v.string(), v.maxLength(64)),
  /** Gateways: subnets whose upstream probe failed (withdrawn until healthy). */
  unhealthySubnets: v.optional(v.array(v.string())),
});
export type AgentReport = v.InferOutput<typeof AgentReportSchema>;

/** A NetMap (core/policy/netmap.ts) with a revision number that increases on every change. */
export interface NetMapEnvelope<N = unknown> {
  revision: number;
  netmap: N;
}

/** The message signed for agent authentication. */
export function authMessage(method: string, pathWithQuery: string, timeMs: number, nonceHex: string, bodySha256Hex: string): string {
  return `${method.toUpperCase()}\n${pathWithQuery}\n${timeMs}\n${nonceHex}\n${bodySha256Hex}`;
}

/** Error bodies: `{ error: { code, message, field? } }`; 400s name the field that is wrong. */
export const ErrorBodySchema = v.object({
  error: v.object({ code: v.string(), message: v.string(), field: v.optional(v.string()) }),
});
export type ErrorBody = v.InferOutput<typeof ErrorBodySchema>;
