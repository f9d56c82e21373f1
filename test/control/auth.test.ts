/**
 * @module test/control/auth.test
 * The agent signature scheme (core/control/auth.ts) without a server: sign -> verify round trip,
 * and each refusal: a changed method, path or body, a forged key claim, clock skew, a replayed
 * nonce (claimed only after the tag verifies), a low-order key; and the secret hash helpers.
 */
import { describe, expect, test } from "bun:test";
import { NonceCache, bearerToken, secretHash, secretMatches, signAgentRequest, verifyAgentRequest } from "../../core/control/auth.ts";
import { encodeKey, generatePrivateKey } from "../../core/wire/keys.ts";
import { crypto, random } from "./helpers.ts";

const server = generatePrivateKey(random);
const serverPublic = encodeKey(crypto.x25519Base(server));
const agent = generatePrivateKey(random);

function sign(over: Partial<Parameters<typeof signAgentRequest>[0]> = {}) {
  return signAgentRequest({ privateKey: agent, serverPublicKey: serverPublic, method: "POST", pathWithQuery: "/v1/agent/report", body: '{"a":1}', now: () => 1_000_000, random, crypto, ...over });
}

function verify(headers: Record<string, string>, over: Partial<Parameters<typeof verifyAgentRequest>[0]> = {}) {
  return verifyAgentRequest({
    headers: new Headers(headers),
    method: "POST",
    pathWithQuery: "/v1/agent/report",
    body: new TextEncoder().encode('{"a":1}'),
    serverPrivateKey: server,
    crypto,
    now: () => 1_000_500,
    nonces: new NonceCache(),
    ...over,
  });
}

describe("agent signatures", () => {
  test("a signed request verifies and names the agent's public key", () => {
    const r = verify(sign());
    expect(r).toEqual({ ok: true, publicKey: encodeKey(crypto.x25519Base(agent)) });
  });

  test("method, path and body are covered", () => {
    expect(verify(sign({ method: "GET" }))).toMatchObject({ ok: false, reason: "bad-tag" });
    expect(verify(sign({ pathWithQuery: "/v1/agent/netmap" }))).toMatchObject({ ok: false, reason: "bad-tag" });
    expect(verify(sign({ body: '{"a":2}' }))).toMatchObject({ ok: false, reason: "bad-tag" });
  });

  test("claiming another agent's key with one's own signature fails", () => {
    const other = encodeKey(crypto.x25519Base(generatePrivateKey(random)));
    expect(verify({ ...sign(), "x-waygate-key": other })).toMatchObject({ ok: false, reason: "bad-tag" });
  });

  test("missing headers, skew, bad nonce, low-order key", () => {
    const h = sign();
    for (const name of Object.keys(h)) {
      const { [name]: _gone, ...rest } = h;
      expect(verify(rest)).toMatchObject({ ok: false, reason: "missing-header" });
    }
    expect(verify(sign({ now: () => 1_000_000 - 61_000 }))).toMatchObject({ ok: false, reason: "skew" });
    expect(verify(sign({ now: () => 1_000_000 + 62_000 }))).toMatchObject({ ok: false, reason: "skew" });
    expect(verify({ ...h, "x-waygate-nonce": "xyz" })).toMatchObject({ ok: false, reason: "bad-nonce" });
    expect(verify({ ...h, "x-waygate-key": encodeKey(new Uint8Array(32)) })).toMatchObject({ ok: false, reason: "bad-key" });
    expect(verify({ ...h, "x-waygate-key": "not a key" })).toMatchObject({ ok: false, reason: "bad-key" });
  });

  test("a nonce is accepted once; a forgery does not burn it", () => {
    const nonces = new NonceCache();
    const h = sign();
    expect(verify({ ...h, "x-waygate-auth": Buffer.alloc(32).toString("base64") }, { nonces }).ok).toBe(false);
    expect(verify(h, { nonces }).ok).toBe(true);
    expect(verify(h, { nonces })).toMatchObject({ ok: false, reason: "replay" });
  });

  test("the nonce cache forgets entries once their time leaves the window, and fails closed when full", () => {
    const c = new NonceCache(1000, 2);
    expect(c.claim("k", "a", 0, 0)).toBe(true);
    expect(c.claim("k", "b", 0, 0)).toBe(true);
    expect(c.claim("k", "c", 0, 0)).toBe(false);
    expect(c.claim("k", "a", 0, 5000)).toBe(true);
    expect(c.size).toBe(1);
  });
});

describe("secrets", () => {
  test("only hashes are compared; bearer parsing", () => {
    const h = secretHash("wga_token");
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(secretMatches("wga_token", h)).toBe(true);
    expect(secretMatches("wga_tokeN", h)).toBe(false);
    expect(bearerToken(new Headers({ authorization: "Bearer abc" }))).toBe("abc");
    expect(bearerToken(new Headers({ authorization: "Basic abc" }))).toBeNull();
    expect(bearerToken(new Headers())).toBeNull();
  });
});
