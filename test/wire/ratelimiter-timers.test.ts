/**
 * @module test/wire/ratelimiter-timers
 * Deterministic tests with a fake clock for the hot-path helpers: the per-source rate limiter
 * (wireguard-go ratelimiter_test.go's sequence), the per-peer timer state machine, transport
 * sealing/opening and padding, and the packet header readers.
 */
import { describe, expect, test } from "bun:test";
import { ipPacketLength, ipVersion, ipv4Destination, ipv4Source, ipv4Text, ipv6Destination } from "../../core/dataplane/packet.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { RateLimiter } from "../../core/wire/ratelimiter.ts";
import {
  DEFAULT_TIMERS,
  PeerTimers,
  TIMER_NEW_HANDSHAKE,
  TIMER_PERSISTENT_KEEPALIVE,
  TIMER_RETRANSMIT_HANDSHAKE,
  TIMER_SEND_KEEPALIVE,
  TIMER_ZERO_KEY_MATERIAL,
  maxTimerHandshakes,
  resolveTimers,
} from "../../core/wire/timers.ts";
import { Keypair, TransportCodec, counterHi, counterLo, paddingSize, sealedSize } from "../../core/wire/transport.ts";
import { icmpEcho } from "../dataplane/memory.ts";
import { fakeClock } from "./helpers.ts";

describe("RateLimiter (wireguard-go ratelimiter_test.go sequence)", () => {
  test("burst of 5, then 20 per second, per source", () => {
    const clock = fakeClock();
    const rl = new RateLimiter({ now: clock.now });
    const ips = ["127.0.0.1", "192.168.1.1", "2001:db8:a0b:12f0::1", "f5c2:818f:c052:655a:9860:b136:6894:25f0"];
    const steps: [number, boolean][] = [
      [0, true], [0, true], [0, true], [0, true], [0, true], // initial burst
      [0, false], // after burst
      [50, true], // refilled one packet
      [0, false], // not refilled enough
      [100, true], [0, true], // two-packet burst
      [0, false],
    ];
    steps.forEach(([wait, allowed], i) => {
      clock.advance(wait);
      for (const ip of ips) expect({ i, ip, ok: rl.allow(ip) }).toEqual({ i, ip, ok: allowed });
    });
  });

  test("idle entries are collected after a second", () => {
    const clock = fakeClock();
    const rl = new RateLimiter({ now: clock.now });
    rl.allow("10.0.0.1");
    rl.allow("10.0.0.2");
    expect(rl.size).toBe(2);
    clock.advance(1001);
    rl.allow("10.0.0.3");
    expect(rl.size).toBe(1);
  });
});

describe("PeerTimers", () => {
  const make = (jitter = 0, override = {}) => {
    const clock = fakeClock(0);
    const t = new PeerTimers(resolveTimers(override), clock.now, () => jitter);
    return { clock, t };
  };

  test("defaults are WireGuard's constants", () => {
    expect(DEFAULT_TIMERS).toMatchObject({
      rekeyAfterTimeMs: 120_000,
      rejectAfterTimeMs: 180_000,
      rekeyAttemptTimeMs: 90_000,
      rekeyTimeoutMs: 5_000,
      rekeyTimeoutJitterMaxMs: 334,
      keepaliveTimeoutMs: 10_000,
      rekeyAfterMessages: 2 ** 60,
    });
    expect(maxTimerHandshakes(DEFAULT_TIMERS)).toBe(18);
    expect(() => resolveTimers({ rekeyTimeoutMs: -1 })).toThrow(/rekeyTimeoutMs/);
  });

  test("handshake initiated: retransmit after REKEY_TIMEOUT + jitter; completion cancels", () => {
    const { clock, t } = make(123);
    t.handshakeInitiated();
    expect(t.nextDeadline()).toBe(5_123);
    expect(t.takeExpired(5_122)).toBe(0);
    expect(t.takeExpired(5_123)).toBe(TIMER_RETRANSMIT_HANDSHAKE);
    t.handshakeInitiated();
    t.handshakeAttempts = 3;
    t.handshakeComplete();
    expect(t.handshakeAttempts).toBe(0);
    expect(t.nextDeadline()).toBe(Number.POSITIVE_INFINITY);
    expect(clock.now()).toBe(0);
  });

  test("data received arms a keepalive; sending anything cancels it; a second receive asks for another", () => {
    const { clock, t } = make();
    t.dataReceived();
    expect(t.sendKeepaliveAt).toBe(10_000);
    clock.advance(1000);
    t.dataReceived();
    expect(t.sendKeepaliveAt).toBe(10_000);
    expect(t.needAnotherKeepalive).toBe(true);
    t.anyAuthenticatedPacketSent();
    expect(t.takeExpired(20_000)).toBe(0);
  });

  test("data sent without an answer: new handshake after KEEPALIVE + REKEY_TIMEOUT + jitter", () => {
    const { clock, t } = make(7);
    t.dataSent();
    clock.advance(3000);
    t.dataSent(); // does not push the deadline out
    expect(t.newHandshakeAt).toBe(15_007);
    t.anyAuthenticatedPacketReceived();
    expect(t.newHandshakeAt).toBe(Number.POSITIVE_INFINITY);
    t.dataSent();
    expect(t.takeExpired(18_007)).toBe(TIMER_NEW_HANDSHAKE);
  });

  test("session derived: zero keys after 3 × REJECT_AFTER_TIME; persistent keepalive on traversal", () => {
    const { clock, t } = make(0, { rejectAfterTimeMs: 1000 });
    t.sessionDerived();
    t.persistentKeepaliveMs = 25_000;
    t.anyAuthenticatedPacketTraversal();
    expect(t.takeExpired(3_000)).toBe(TIMER_ZERO_KEY_MATERIAL);
    clock.advance(25_000);
    expect(t.takeExpired(clock.now())).toBe(TIMER_PERSISTENT_KEEPALIVE);
    t.dataReceived();
    expect(t.takeExpired(clock.now() + 10_000)).toBe(TIMER_SEND_KEEPALIVE);
  });
});

describe("transport", () => {
  const crypto = nobleCrypto();
  const kp = () => new Keypair(new Uint8Array(32).fill(1), new Uint8Array(32).fill(1), true, 0, 7, 0x0a0b0c0d);

  test("padding to 16, capped at the MTU", () => {
    expect([0, 1, 15, 16, 17, 1419, 1420, 1421].map((n) => paddingSize(n, 1420))).toEqual([0, 15, 1, 0, 15, 1, 0, 15]);
    expect(paddingSize(1415, 1420)).toBe(5); // 1420 is not a multiple of 16: capped
    expect(paddingSize(5, 0)).toBe(11);
    expect(sealedSize(0, 1420)).toBe(32);
  });

  test("header layout, counters little-endian, open inverts seal, padding is zeros", () => {
    const codec = new TransportCodec(crypto.aead);
    const k = kp();
    k.sendCounter = 2 ** 32 + 5;
    const pkt = new Uint8Array(20).fill(0xee);
    const out = new Uint8Array(200);
    const n = codec.seal(k, pkt, pkt.length, out, 1420);
    expect(n).toBe(16 + 32 + 16);
    expect(Buffer.from(out.subarray(0, 16)).toString("hex")).toBe("040000000d0c0b0a0500000001000000");
    expect([counterLo(out), counterHi(out)]).toEqual([5, 1]);
    expect(k.sendCounter).toBe(2 ** 32 + 6);
    const plain = new Uint8Array(100);
    expect(codec.open(k, out.subarray(0, n), plain)).toBe(32);
    expect(plain.subarray(0, 20)).toEqual(pkt);
    expect(plain.subarray(20, 32)).toEqual(new Uint8Array(12));
    const bad = out.slice(0, n);
    bad[9]! ^= 1; // the counter is the nonce: changing it breaks authentication
    expect(codec.open(k, bad, plain)).toBe(-1);
  });

  test("a keepalive is 32 bytes and opens to nothing", () => {
    const codec = new TransportCodec(crypto.aead);
    const k = kp();
    const out = new Uint8Array(64);
    expect(codec.seal(k, new Uint8Array(0), 0, out, 1420)).toBe(32);
    expect(codec.open(k, out.subarray(0, 32), new Uint8Array(16))).toBe(0);
    expect(codec.open(k, out.subarray(0, 31), new Uint8Array(16))).toBe(-1);
  });
});

describe("packet", () => {
  test("IPv4 fields and length", () => {
    const p = icmpEcho({ src: "10.1.2.3", dst: "192.168.0.254" });
    expect(ipVersion(p)).toBe(4);
    expect(ipv4Text(ipv4Source(p))).toBe("10.1.2.3");
    expect(ipv4Text(ipv4Destination(p))).toBe("192.168.0.254");
    const padded = new Uint8Array(p.length + 12);
    padded.set(p);
    expect(ipPacketLength(padded)).toBe(p.length);
    expect(ipPacketLength(p.subarray(0, p.length - 1))).toBe(-1);
    expect(ipVersion(p.subarray(0, 19))).toBe(0);
    const badIhl = p.slice();
    badIhl[0] = 0x44;
    expect(ipPacketLength(badIhl)).toBe(-1);
  });

  test("IPv6 fields and length", () => {
    const p = new Uint8Array(48);
    p[0] = 0x60;
    p[5] = 8;
    p[39] = 9;
    expect(ipVersion(p)).toBe(6);
    expect(ipPacketLength(p)).toBe(48);
    expect(ipv6Destination(p, new Uint8Array(16))[15]).toBe(9);
    p[5] = 9;
    expect(ipPacketLength(p)).toBe(-1);
    expect(ipVersion(new Uint8Array([0x70]))).toBe(0);
  });
});
