/**
 * @module test/dataplane/rtt
 * Link RTT and last activity on the in-memory pair with a fake clock: every datagram takes N ms
 * to arrive, so each side measures 2N, the initiator from its initiation to the response, the
 * responder from its response to the first packet on the new session; probe replies refine the
 * average (EWMA, gain 1/8); a confirmation that comes too late to be a round trip is ignored;
 * lastRxMs follows the latest authenticated packet, keepalives included.
 */
import { describe, expect, test } from "bun:test";
import { icmpEcho, twoDevices } from "./memory.ts";

type Rig = ReturnType<typeof twoDevices>;

/**
 * Delivers queued datagrams one at a time, oldest first, each `ms` after the previous one (one
 * datagram is in flight at a time in these exchanges, so each takes `ms`); `lose(n)` drops the nth.
 */
function deliverAfter(rig: Rig, ms: number, lose?: (n: number) => boolean): void {
  const { a, b, net, clock } = rig;
  for (let n = 0; net.queue.length > 0; n++) {
    if (n > 1000) throw new Error("delivery did not settle");
    const d = net.queue.shift()!;
    clock.advance(ms);
    if (lose?.(n)) continue;
    const to = d.to.address === a.endpoint.address ? a : b;
    to.device.handleDatagram(d.data, d.from);
  }
}

const rttOf = (node: { device: { stats(): { peers: { rttMs?: number | null }[] } } }) => node.device.stats().peers[0]!.rttMs;

describe("link RTT", () => {
  test("null before any exchange; a handshake with N ms each way gives 2N on both sides", () => {
    for (const N of [1, 7, 40]) {
      const rig = twoDevices({ seed: N });
      const { a, b } = rig;
      expect(rttOf(a)).toBeNull();
      expect(rttOf(b)).toBeNull();
      a.device.handleTunPacket(icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2" }));
      deliverAfter(rig, N);
      expect(b.tun.take().length).toBe(1);
      expect(rttOf(a)).toBe(2 * N); // initiation -> response
      expect(rttOf(b)).toBe(2 * N); // response -> first data on the session (A's staged ping)
    }
  });

  test("probe replies refine it: EWMA with gain 1/8", () => {
    const rig = twoDevices();
    const { a, b, clock } = rig;
    a.device.handleTunPacket(icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2" }));
    deliverAfter(rig, 5);
    expect(rttOf(a)).toBe(10);
    expect(a.device.probe(b.publicKey)).toBe(true);
    deliverAfter(rig, 25); // a 50 ms sample
    expect(a.device.stats().peers[0]!.probes!.replies).toBe(1);
    expect(rttOf(a)).toBe(10 + (50 - 10) / 8);
    expect(a.device.probe(b.publicKey)).toBe(true);
    deliverAfter(rig, 25);
    const after2 = 15 + (50 - 15) / 8;
    expect(rttOf(a)).toBeCloseTo(after2, 2);
  });

  test("a responder whose confirmation comes late (the first packet was lost) takes no sample", () => {
    const rig = twoDevices();
    const { a, b, clock } = rig;
    a.device.handleTunPacket(icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2" }));
    // initiation and response arrive; A's staged ping and keepalive are lost
    deliverAfter(rig, 3, (n) => n >= 2);
    expect(rttOf(a)).toBe(6);
    expect(rttOf(b)).toBeNull();
    clock.advance(6000);
    a.device.handleTunPacket(icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2", seq: 2 }));
    deliverAfter(rig, 3);
    expect(b.tun.take().length).toBe(1); // the session is confirmed, the 6 s "round trip" is not a sample
    expect(rttOf(b)).toBeNull();
  });
});

describe("last activity", () => {
  test("lastRxMs is the latest authenticated packet from the peer, keepalives included; 0 before", () => {
    const rig = twoDevices();
    const { a, b, clock } = rig;
    expect(b.device.stats().peers[0]!.lastRxMs).toBe(0);
    a.device.handleTunPacket(icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2" }));
    deliverAfter(rig, 2);
    const handshakeAt = b.device.stats().peers[0]!.latestHandshakeMs;
    const lastData = b.device.stats().peers[0]!.lastRxMs!;
    expect(lastData).toBeGreaterThanOrEqual(handshakeAt);
    clock.advance(10_000);
    // A speaks again after 10 s on the same session
    a.device.handleTunPacket(icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2", seq: 2 }));
    deliverAfter(rig, 2);
    const s = b.device.stats().peers[0]!;
    expect(s.lastRxMs).toBeGreaterThan(lastData + 10_000);
    expect(s.latestHandshakeMs).toBe(handshakeAt); // no new handshake: only the packets say B heard A
    // A datagram that names no session (unknown receiver) is not activity
    const before = s.lastRxMs;
    clock.advance(1000);
    b.device.handleDatagram(new Uint8Array(32).fill(4).fill(0, 1, 4), a.endpoint);
    expect(b.device.stats().peers[0]!.lastRxMs).toBe(before);
  });
});
