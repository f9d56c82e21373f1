/**
 * @module test/wire/noise
 * The handshake between two of our own instances (with and without a preshared key), the byte
 * layout of every message, TAI64N, replay and flood rejection of initiations, cookies, and the
 * property that any single flipped bit of an initiation or response is rejected with no change
 * to the receiver's handshake state.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  COOKIE_REPLY_SIZE,
  INITIATION_SIZE,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  RESPONSE_SIZE,
} from "../../core/wire/constants.ts";
import { CookieChecker, CookieGenerator, sourceBytes } from "../../core/wire/cookie.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { generatePrivateKey } from "../../core/wire/keys.ts";
import { type Handshake, Noise } from "../../core/wire/noise.ts";
import { compareTimestamps, tai64n, tai64nToMs } from "../../core/wire/tai64n.ts";
import { fakeClock, seededRandom } from "./helpers.ts";

const crypto = nobleCrypto();
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

function pair(seed: number, psk?: Uint8Array) {
  const clock = fakeClock();
  const random = seededRandom(seed);
  const skI = generatePrivateKey(random);
  const skR = generatePrivateKey(random);
  const initiator = new Noise({ crypto, privateKey: skI, random, now: clock.now });
  const responder = new Noise({ crypto, privateKey: skR, random, now: clock.now });
  const hsI = initiator.newHandshake(responder.publicKey, psk);
  const hsR = responder.newHandshake(initiator.publicKey, psk);
  const genI = new CookieGenerator(crypto, responder.publicKey, clock.now);
  const checkR = new CookieChecker(crypto, responder.publicKey, random, clock.now);
  const genR = new CookieGenerator(crypto, initiator.publicKey, clock.now);
  const checkI = new CookieChecker(crypto, initiator.publicKey, random, clock.now);
  const lookupR = (key: Uint8Array) => (hex(key) === hex(initiator.publicKey) ? hsR : null);
  return { clock, random, initiator, responder, hsI, hsR, genI, checkR, genR, checkI, lookupR };
}

function snapshot(hs: Handshake) {
  return JSON.stringify({
    phase: hs.phase,
    hash: hex(hs.hash),
    chainKey: hex(hs.chainKey),
    le: hex(hs.localEphemeral),
    re: hex(hs.remoteEphemeral),
    li: hs.localIndex,
    ri: hs.remoteIndex,
    ts: hex(hs.lastTimestamp),
    lic: hs.lastInitiationConsumedMs,
  });
}

describe("TAI64N", () => {
  test("the epoch and a whitened time", () => {
    expect(hex(tai64n(0))).toBe("400000000000000a00000000");
    // 1700000000.5 s: nanoseconds 500000000 = 0x1dcd6500, low 24 bits cleared -> 0x1d000000
    expect(hex(tai64n(1_700_000_000_500))).toBe(`400000006553f10a1d000000`);
    expect(tai64nToMs(tai64n(1_700_000_000_000))).toBe(1_700_000_000_000);
  });
  test("ordering follows time at ~16 ms granularity", () => {
    expect(compareTimestamps(tai64n(1_000), tai64n(2_000))).toBeLessThan(0);
    expect(compareTimestamps(tai64n(2_000), tai64n(2_000))).toBe(0);
    expect(compareTimestamps(tai64n(2_000), tai64n(2_005))).toBe(0); // whitened away
    expect(compareTimestamps(tai64n(2_020), tai64n(2_000))).toBeGreaterThan(0);
  });
});

describe("handshake between two instances", () => {
  for (const withPsk of [false, true]) {
    test(`completes and derives mirrored keys${withPsk ? " (with preshared key)" : ""}`, () => {
      const psk = withPsk ? seededRandom(99)(32) : undefined;
      const p = pair(1, psk);
      const init = p.initiator.createInitiation(p.hsI, 0x11223344);
      p.genI.addMacs(init);
      expect(init.length).toBe(INITIATION_SIZE);
      expect(hex(init.subarray(0, 8))).toBe("0100000044332211");
      expect(hex(init.subarray(132))).toBe("0".repeat(32)); // no cookie: mac2 zero
      expect(p.checkR.checkMac1(init)).toBe(true);

      const r = p.responder.consumeInitiation(init, p.lookupR);
      expect(r).toEqual({ ok: true, handshake: p.hsR, sender: 0x11223344 });
      const resp = p.responder.createResponse(p.hsR, 0xaabbccdd);
      p.genR.addMacs(resp);
      expect(resp.length).toBe(RESPONSE_SIZE);
      expect(hex(resp.subarray(0, 12))).toBe("02000000ddccbbaa44332211");
      expect(p.checkI.checkMac1(resp)).toBe(true);

      expect(p.initiator.consumeResponse(p.hsI, resp)).toBeNull();
      const kI = p.initiator.deriveSession(p.hsI);
      const kR = p.responder.deriveSession(p.hsR);
      expect(kI.isInitiator).toBe(true);
      expect(kR.isInitiator).toBe(false);
      expect(hex(kI.sendKey)).toBe(hex(kR.recvKey));
      expect(hex(kI.recvKey)).toBe(hex(kR.sendKey));
      expect(hex(kI.sendKey)).not.toBe(hex(kI.recvKey));
      expect([kI.localIndex, kI.remoteIndex, kR.localIndex, kR.remoteIndex]).toEqual([
        0x11223344, 0xaabbccdd, 0xaabbccdd, 0x11223344,
      ]);
      expect(p.hsI.phase).toBe("zeroed");
      expect(hex(p.hsI.chainKey)).toBe("0".repeat(64));
    });
  }

  test("a preshared-key mismatch fails at the response", () => {
    const p = pair(2, seededRandom(5)(32));
    p.hsR.presharedKey = seededRandom(6)(32);
    const init = p.initiator.createInitiation(p.hsI, 1);
    expect(p.responder.consumeInitiation(init, p.lookupR).ok).toBe(true);
    const resp = p.responder.createResponse(p.hsR, 2);
    const before = snapshot(p.hsI);
    expect(p.initiator.consumeResponse(p.hsI, resp)).toBe("handshake-invalid");
    expect(snapshot(p.hsI)).toBe(before);
  });

  test("a replayed initiation is rejected as stale; a newer one is accepted", () => {
    const p = pair(3);
    const first = p.initiator.createInitiation(p.hsI, 1);
    expect(p.responder.consumeInitiation(first, p.lookupR).ok).toBe(true);
    p.clock.advance(1000);
    expect(p.responder.consumeInitiation(first, p.lookupR)).toEqual({ ok: false, reason: "stale-timestamp" });
    const second = p.initiator.createInitiation(p.hsI, 2);
    expect(p.responder.consumeInitiation(second, p.lookupR).ok).toBe(true);
  });

  test("a second initiation within 20 ms is a flood", () => {
    const p = pair(4);
    const a = p.initiator.createInitiation(p.hsI, 1);
    expect(p.responder.consumeInitiation(a, p.lookupR).ok).toBe(true);
    p.clock.advance(17); // a new whitened timestamp, but inside HANDSHAKE_INITIATION_RATE
    const b = p.initiator.createInitiation(p.hsI, 2);
    expect(p.responder.consumeInitiation(b, p.lookupR)).toEqual({ ok: false, reason: "handshake-flood" });
  });

  test("an initiation from an unknown static key", () => {
    const p = pair(5);
    const init = p.initiator.createInitiation(p.hsI, 1);
    expect(p.responder.consumeInitiation(init, () => null)).toEqual({ ok: false, reason: "unknown-peer" });
  });

  test("crossed initiations: answering the peer's keeps ours, and both handshakes complete", () => {
    const p = pair(7);
    const lookupI = (key: Uint8Array) => (hex(key) === hex(p.responder.publicKey) ? p.hsI : null);
    const initI = p.initiator.createInitiation(p.hsI, 0x1111);
    const initR = p.responder.createInitiation(p.hsR, 0x2222);
    expect([p.initiator.initiationWins(p.responder.publicKey), p.responder.initiationWins(p.initiator.publicKey)].sort()).toEqual([false, true]);
    // Each consumes the other's while its own is in flight, answers, derives its responder keys.
    expect(p.initiator.consumeInitiation(initR, lookupI).ok).toBe(true);
    expect(p.responder.consumeInitiation(initI, p.lookupR).ok).toBe(true);
    const respI = p.initiator.createResponse(p.hsI, 0x3333);
    const respR = p.responder.createResponse(p.hsR, 0x4444);
    const rI = p.initiator.deriveSession(p.hsI);
    const rR = p.responder.deriveSession(p.hsR);
    expect([rI.isInitiator, rR.isInitiator]).toEqual([false, false]);
    // Our initiation is back in flight, marked crossed, under its own index.
    for (const [hs, index] of [
      [p.hsI, 0x1111],
      [p.hsR, 0x2222],
    ] as const) {
      expect([hs.phase, hs.localIndex, hs.crossed, hs.pendingInitiation]).toEqual(["initiation-created", index, true, null]);
    }
    // The responses complete both: four keypairs, pairwise mirrored.
    expect(p.initiator.consumeResponse(p.hsI, respR)).toBeNull();
    expect(p.responder.consumeResponse(p.hsR, respI)).toBeNull();
    const iI = p.initiator.deriveSession(p.hsI);
    const iR = p.responder.deriveSession(p.hsR);
    expect([iI.isInitiator, iR.isInitiator]).toEqual([true, true]);
    expect(hex(iI.sendKey)).toBe(hex(rR.recvKey));
    expect(hex(iI.recvKey)).toBe(hex(rR.sendKey));
    expect(hex(iR.sendKey)).toBe(hex(rI.recvKey));
    expect([iI.localIndex, iI.remoteIndex, rR.localIndex, rR.remoteIndex]).toEqual([0x1111, 0x4444, 0x4444, 0x1111]);
    expect([p.hsI.phase, p.hsI.crossed, p.hsR.phase]).toEqual(["zeroed", false, "zeroed"]);
  });

  test("a new initiation replaces one set aside; clear() forgets it", () => {
    const p = pair(8);
    const lookupI = (key: Uint8Array) => (hex(key) === hex(p.responder.publicKey) ? p.hsI : null);
    p.initiator.createInitiation(p.hsI, 1);
    const initR = p.responder.createInitiation(p.hsR, 2);
    expect(p.initiator.consumeInitiation(initR, lookupI).ok).toBe(true);
    expect(p.hsI.pendingInitiation?.localIndex).toBe(1);
    const stashed = p.hsI.pendingInitiation!.localEphemeral;
    p.hsI.clear();
    expect([p.hsI.pendingInitiation, p.hsI.phase]).toEqual([null, "zeroed"]);
    expect(hex(stashed)).toBe("0".repeat(64)); // zeroed, not just dropped
  });

  test("a response in the wrong state is rejected", () => {
    const p = pair(6);
    const init = p.initiator.createInitiation(p.hsI, 1);
    p.responder.consumeInitiation(init, p.lookupR);
    const resp = p.responder.createResponse(p.hsR, 2);
    expect(p.initiator.consumeResponse(p.hsI, resp)).toBeNull();
    expect(p.initiator.consumeResponse(p.hsI, resp)).toBe("handshake-invalid"); // already consumed
  });
});

describe("cookies", () => {
  test("mac2 needs a cookie bound to the source, and expires after 120 s", () => {
    const p = pair(7);
    const src = sourceBytes("192.0.2.7", 51820);
    const init = p.initiator.createInitiation(p.hsI, 1);
    p.genI.addMacs(init);
    expect(p.checkR.checkMac2(init, src)).toBe(false);
    const reply = p.checkR.createReply(init, 1, src);
    expect(reply.length).toBe(COOKIE_REPLY_SIZE);
    expect(hex(reply.subarray(0, 8))).toBe("0300000001000000");
    expect(reply[0]).toBe(MESSAGE_COOKIE_REPLY);
    expect(p.genI.consumeReply(reply)).toBe(true);
    const again = p.initiator.createInitiation(p.hsI, 2);
    p.genI.addMacs(again);
    expect(hex(again.subarray(132))).not.toBe("0".repeat(32));
    expect(p.checkR.checkMac1(again)).toBe(true);
    expect(p.checkR.checkMac2(again, src)).toBe(true);
    expect(p.checkR.checkMac2(again, sourceBytes("192.0.2.8", 51820))).toBe(false);
    p.clock.advance(120_001);
    expect(p.checkR.checkMac2(again, src)).toBe(false);
  });

  test("a tampered cookie reply is not consumed", () => {
    const p = pair(8);
    const init = p.initiator.createInitiation(p.hsI, 1);
    p.genI.addMacs(init);
    const reply = p.checkR.createReply(init, 1, sourceBytes("192.0.2.7", 1));
    for (const i of [8, 31, 32, 63]) {
      const bad = reply.slice();
      bad[i]! ^= 0x10;
      expect(p.genI.consumeReply(bad)).toBe(false);
    }
    expect(p.genI.hasCookie()).toBe(false);
  });
});

describe("single-bit flips are rejected with no state change", () => {
  test("initiation: every bit of type, sender, ephemeral, static, timestamp and mac1", () => {
    const p = pair(9);
    const init = p.initiator.createInitiation(p.hsI, 0x01020304);
    p.genI.addMacs(init);
    const before = snapshot(p.hsR);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 132 * 8 - 1 }), (bit) => {
        const msg = init.slice();
        msg[bit >> 3]! ^= 1 << (bit & 7);
        const mac1ok = msg[0] === MESSAGE_INITIATION && p.checkR.checkMac1(msg);
        const accepted = mac1ok && p.responder.consumeInitiation(msg, p.lookupR).ok;
        return !accepted && snapshot(p.hsR) === before;
      }),
      { numRuns: 400, seed: 11 },
    );
    // Beyond mac1 a flipped bit is still caught by the AEADs (bypassing mac1, every bit of 8..115).
    for (let bit = 8 * 8; bit < 116 * 8; bit += 7) {
      const msg = init.slice();
      msg[bit >> 3]! ^= 1 << (bit & 7);
      expect(p.responder.consumeInitiation(msg, p.lookupR).ok).toBe(false);
    }
    expect(snapshot(p.hsR)).toBe(before);
    expect(p.responder.consumeInitiation(init, p.lookupR).ok).toBe(true); // the original still works
  });

  test("response: every bit of type, sender, receiver, ephemeral, empty and mac1", () => {
    const p = pair(10);
    const init = p.initiator.createInitiation(p.hsI, 5);
    expect(p.responder.consumeInitiation(init, p.lookupR).ok).toBe(true);
    const resp = p.responder.createResponse(p.hsR, 6);
    p.genR.addMacs(resp);
    const before = snapshot(p.hsI);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 76 * 8 - 1 }), (bit) => {
        const msg = resp.slice();
        msg[bit >> 3]! ^= 1 << (bit & 7);
        const mac1ok = msg[0] === MESSAGE_RESPONSE && p.checkI.checkMac1(msg);
        const accepted = mac1ok && p.initiator.consumeResponse(p.hsI, msg) === null;
        return !accepted && snapshot(p.hsI) === before;
      }),
      { numRuns: 400, seed: 12 },
    );
    for (let bit = 12 * 8; bit < 60 * 8; bit += 5) {
      const msg = resp.slice();
      msg[bit >> 3]! ^= 1 << (bit & 7);
      expect(p.initiator.consumeResponse(p.hsI, msg)).toBe("handshake-invalid");
    }
    expect(snapshot(p.hsI)).toBe(before);
    expect(p.initiator.consumeResponse(p.hsI, resp)).toBeNull();
  });

  test("mac2 bits are checked under load (with a cookie)", () => {
    const p = pair(11);
    const src = sourceBytes("198.51.100.1", 4000);
    const first = p.initiator.createInitiation(p.hsI, 1);
    p.genI.addMacs(first);
    expect(p.genI.consumeReply(p.checkR.createReply(first, 1, src))).toBe(true);
    const init = p.initiator.createInitiation(p.hsI, 2);
    p.genI.addMacs(init);
    expect(p.checkR.checkMac2(init, src)).toBe(true);
    for (let bit = 132 * 8; bit < 148 * 8; bit++) {
      const msg = init.slice();
      msg[bit >> 3]! ^= 1 << (bit & 7);
      expect(p.checkR.checkMac1(msg)).toBe(true); // mac1 does not cover mac2
      expect(p.checkR.checkMac2(msg, src)).toBe(false);
    }
  });
});
