/**
 * @module core/control/auth
 * Both halves of the agent authentication scheme in protocol.ts: `signAgentRequest` (the agent
 * side, also used by tests) and `verifyAgentRequest` (the server side, run before any handler),
 * plus the in-memory nonce cache that refuses replays, and the admin bearer-token check.
 *
 * authKey = HMAC-SHA256(X25519(own private, other public), AUTH_LABEL); both sides compute the
 * same key, so the server never holds a secret that could sign as an agent without its own
 * private key, and a captured request is useless after AUTH_MAX_SKEW_MS (the nonce cache covers
 * exactly that window). Every comparison of secret-derived bytes is constant time.
 */
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import type { Clock } from "../runner.ts";
import type { Crypto, RandomSource } from "../wire/crypto.ts";
import { decodeKey, encodeKey } from "../wire/keys.ts";
import { AUTH_LABEL, AUTH_MAX_SKEW_MS, HEADER_AUTH, HEADER_KEY, HEADER_NONCE, HEADER_TIME, authMessage } from "./protocol.ts";

const encoder = new TextEncoder();

export type KeyInput = string | Uint8Array;
export type BodyInput = string | Uint8Array | null | undefined;

function keyBytes(key: KeyInput, what: string): Uint8Array {
  return typeof key === "string" ? decodeKey(key, what) : key;
}

function bodyBytes(body: BodyInput): Uint8Array {
  if (body === undefined || body === null) return new Uint8Array(0);
  return typeof body === "string" ? encoder.encode(body) : body;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex");
}

/** Constant-time equality of two byte strings (length is not secret). */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc |= a[i]! ^ b[i]!;
  return acc === 0;
}

/** The HMAC key both sides derive; null when the peer key is low-order (all-zero shared secret). */
export function deriveAuthKey(crypto: Crypto, ownPrivate: Uint8Array, otherPublic: Uint8Array): Uint8Array | null {
  const shared = crypto.x25519(ownPrivate, otherPublic);
  let acc = 0;
  for (const b of shared) acc |= b;
  if (acc === 0) return null;
  return hmac(sha256, shared, encoder.encode(AUTH_LABEL));
}

export function authTag(authKey: Uint8Array, method: string, pathWithQuery: string, timeMs: number, nonceHex: string, body: BodyInput): Uint8Array {
  const message = authMessage(method, pathWithQuery, timeMs, nonceHex, hex(sha256(bodyBytes(body))));
  return hmac(sha256, authKey, encoder.encode(message));
}

export interface SignAgentRequestOptions {
  /** The agent's WireGuard private key (base64 or 32 bytes). */
  privateKey: KeyInput;
  /** The server's public key from GET /v1/info (base64 or 32 bytes). */
  serverPublicKey: KeyInput;
  method: string;
  /** Exactly the path and query the request goes to, e.g. "/v1/agent/netmap" (no host). */
  pathWithQuery: string;
  /** The exact bytes sent as the body; absent for GET. */
  body?: BodyInput;
  now: Clock;
  random: RandomSource;
  crypto: Crypto;
}

/** The four X-Waygate-* headers (lower-case names) that authenticate one agent request. */
export function signAgentRequest(options: SignAgentRequestOptions): Record<string, string> {
  const privateKey = keyBytes(options.privateKey, "agent private key");
  const serverPublic = keyBytes(options.serverPublicKey, "server public key");
  const authKey = deriveAuthKey(options.crypto, privateKey, serverPublic);
  if (authKey === null) throw new Error("server public key is a low-order point");
  const publicKey = options.crypto.x25519Base(privateKey);
  const time = Math.floor(options.now());
  const nonce = hex(options.random(16));
  const tag = authTag(authKey, options.method, options.pathWithQuery, time, nonce, options.body);
  return {
    [HEADER_KEY]: encodeKey(publicKey),
    [HEADER_TIME]: String(time),
    [HEADER_NONCE]: nonce,
    [HEADER_AUTH]: Buffer.from(tag).toString("base64"),
  };
}

/**
 * Nonces seen within the skew window. A nonce is remembered until its request's timestamp
 * leaves the window; after that the timestamp check alone refuses a replay. Bounded: when full,
 * requests are refused (fail closed) rather than forgetting nonces early.
 */
export class NonceCache {
  readonly #seen = new Map<string, number>();
  constructor(
    readonly windowMs: number = AUTH_MAX_SKEW_MS,
    readonly maxEntries: number = 200_000,
  ) {}

  /** Records the nonce; false if it was already seen (a replay) or the cache is full. */
  claim(key: string, nonce: string, timeMs: number, now: number): boolean {
    this.prune(now);
    const id = `${key}/${nonce}`;
    if (this.#seen.has(id)) return false;
    if (this.#seen.size >= this.maxEntries) return false;
    this.#seen.set(id, timeMs + this.windowMs);
    return true;
  }

  prune(now: number): void {
    for (const [id, expires] of this.#seen) {
      // Insertion order is roughly time order; stop early on the first live entry.
      if (expires >= now) break;
      this.#seen.delete(id);
    }
  }

  get size(): number {
    return this.#seen.size;
  }
}

export type AgentAuthFailure = "missing-header" | "bad-key" | "bad-time" | "skew" | "bad-nonce" | "replay" | "bad-tag";

export type AgentAuthResult = { ok: true; publicKey: string } | { ok: false; reason: AgentAuthFailure; message: string };

export interface VerifyAgentRequestOptions {
  headers: Headers;
  method: string;
  pathWithQuery: string;
  body: Uint8Array;
  serverPrivateKey: Uint8Array;
  crypto: Crypto;
  now: Clock;
  nonces: NonceCache;
  /** Cache of derived auth keys by agent public key (saves an X25519 per request). */
  keyCache?: Map<string, Uint8Array>;
}

const NONCE_RE = /^[0-9a-f]{32}$/;
const TIME_RE = /^\d{1,16}$/;

/**
 * Checks the X-Waygate-* headers. Does not look the key up in the store (the caller decides
 * whether the key must be enrolled). The nonce is claimed only after the tag verifies, so a
 * forger cannot burn a legitimate agent's nonces.
 */
export function verifyAgentRequest(o: VerifyAgentRequestOptions): AgentAuthResult {
  const fail = (reason: AgentAuthFailure, message: string): AgentAuthResult => ({ ok: false, reason, message });
  const keyText = o.headers.get(HEADER_KEY);
  const timeText = o.headers.get(HEADER_TIME);
  const nonce = o.headers.get(HEADER_NONCE);
  const tagText = o.headers.get(HEADER_AUTH);
  if (keyText === null || timeText === null || nonce === null || tagText === null) {
    return fail("missing-header", "agent authentication headers missing");
  }
  let publicKey: Uint8Array;
  try {
    publicKey = decodeKey(keyText, HEADER_KEY);
  } catch {
    return fail("bad-key", `${HEADER_KEY} is not a base64 WireGuard key`);
  }
  if (!TIME_RE.test(timeText)) return fail("bad-time", `${HEADER_TIME} is not milliseconds since the epoch`);
  const time = Number(timeText);
  const now = o.now();
  if (Math.abs(now - time) > AUTH_MAX_SKEW_MS) return fail("skew", `${HEADER_TIME} is more than ${AUTH_MAX_SKEW_MS} ms from the server clock`);
  if (!NONCE_RE.test(nonce)) return fail("bad-nonce", `${HEADER_NONCE} must be 32 lower-case hex digits`);
  const canonical = encodeKey(publicKey);
  let authKey = o.keyCache?.get(canonical);
  if (authKey === undefined) {
    const derived = deriveAuthKey(o.crypto, o.serverPrivateKey, publicKey);
    if (derived === null) return fail("bad-key", `${HEADER_KEY} is a low-order point`);
    authKey = derived;
    if (o.keyCache !== undefined) {
      if (o.keyCache.size > 10_000) o.keyCache.clear();
      o.keyCache.set(canonical, authKey);
    }
  }
  const expected = authTag(authKey, o.method, o.pathWithQuery, time, nonce, o.body);
  const given = Buffer.from(tagText, "base64");
  if (!timingSafeEqual(new Uint8Array(given), expected)) return fail("bad-tag", "the request signature does not verify");
  if (!o.nonces.claim(canonical, nonce, time, now)) return fail("replay", "the nonce was already used");
  return { ok: true, publicKey: canonical };
}

/** SHA-256 hex of a secret (admin token, enrolment key): all the server ever stores. */
export function secretHash(secret: string): string {
  return hex(sha256(encoder.encode(secret)));
}

/** Constant-time check of a presented secret against a stored SHA-256 hex hash. */
export function secretMatches(presented: string, storedHashHex: string): boolean {
  const a = sha256(encoder.encode(presented));
  const b = new Uint8Array(Buffer.from(storedHashHex, "hex"));
  return timingSafeEqual(a, b);
}

/** `Authorization: Bearer <token>` -> token, or null. */
export function bearerToken(headers: Headers): string | null {
  const h = headers.get("authorization");
  if (h === null) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m === null ? null : m[1]!;
}
