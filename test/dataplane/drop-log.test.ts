/**
 * @module test/dataplane/drop-log
 * The drop log: ring semantics against a plain list of everything recorded (overflow, since-seq,
 * lost counts, `max`), what an entry says about IPv4/IPv6 packets, fragments and datagrams, the
 * Device recording its drops (outbound, inbound after opening, datagrams before opening, staged
 * packets a handshake never carried) with stats() carrying the newest 64, and no allocation
 * per drop: the heap stays flat over a million drops.
 */
import { describe, expect, test } from "bun:test";
import { DROP_LOG_STATS_ENTRIES, DropLog, type DropEntry } from "../../core/dataplane/drop-log.ts";
import { ipPacket } from "./packets.ts";
import { icmpEcho, twoDevices } from "./memory.ts";

const tcp = ipPacket({ src: "100.64.0.2", dst: "172.26.0.251", proto: "tcp", sport: 40000, dport: 80 });

describe("the ring", () => {
  test("matches a list of everything recorded: since-seq, overflow, lost, max", () => {
    const ring = new DropLog(8);
    const all: { seq: number; len: number; reason: string }[] = [];
    const check = () => {
      for (const since of [0, 1, 5, 11, 12, 13, all.length - 1, all.length, all.length + 5]) {
        for (const max of [undefined, 3, 8, 100]) {
          const r = ring.since(since, max);
          const after = since > all.length ? 0 : since;
          const wanted = all.filter((e) => e.seq > after);
          const kept = wanted.slice(-Math.min(8, max ?? 8));
          expect(r.seq).toBe(all.length);
          expect(r.entries.map((e) => [e.seq, e.len, e.reason])).toEqual(kept.map((e) => [e.seq, e.len, e.reason]));
          expect(r.lost).toBe(wanted.length - kept.length);
        }
      }
    };
    check();
    const reasons = ["no-peer-for-destination", "replayed", "gateway-no-grant"];
    for (let i = 1; i <= 21; i++) {
      ring.record(1000 + i, reasons[i % 3]!, null, tcp, 40 + i, null);
      all.push({ seq: i, len: 40 + i, reason: reasons[i % 3]! });
      if (i === 3 || i === 8 || i === 9 || i === 21) check();
    }
    expect(ring.since(0).entries.map((e) => e.atMs)).toEqual([1014, 1015, 1016, 1017, 1018, 1019, 1020, 1021]);
    expect(ring.since(10)).toMatchObject({ seq: 21, lost: 3 }); // 11, 12, 13 were overwritten
  });

  test("snapshot: the newest entries with their seq, oldest first", () => {
    const ring = new DropLog();
    expect(ring.snapshot()).toEqual({ seq: 0, entries: [] });
    for (let i = 0; i < 300; i++) ring.record(i, "replayed", "K", null, i, null);
    const snap = ring.snapshot();
    expect(snap.seq).toBe(300);
    expect(snap.entries.length).toBe(DROP_LOG_STATS_ENTRIES);
    expect(snap.entries[0]!.seq).toBe(300 - DROP_LOG_STATS_ENTRIES + 1);
    expect(snap.entries.at(-1)!.seq).toBe(300);
  });

  test("what an entry says: IPv4 TCP, IPv6 UDP, ICMP, a later fragment, a datagram, a short packet", () => {
    const ring = new DropLog();
    const one = (packet: Uint8Array | null, from: { address: string; port: number } | null = null, peer: string | null = "PEERKEY"): DropEntry => {
      ring.record(5, "gateway-no-grant", peer, packet, packet?.length ?? 148, from);
      return ring.since(ring.seq - 1).entries[0]!;
    };
    expect(one(tcp)).toEqual({
      seq: 1,
      atMs: 5,
      reason: "gateway-no-grant",
      peer: "PEERKEY",
      ipVersion: 4,
      proto: 6,
      src: "100.64.0.2",
      dst: "172.26.0.251",
      dstPort: 80,
      len: 40,
      from: null,
    });
    expect(one(ipPacket({ src: "fd00::2", dst: "fd00:0:0:1::53", proto: "udp", sport: 5353, dport: 53 }))).toMatchObject({
      ipVersion: 6,
      proto: 17,
      src: "fd00::2",
      dst: "fd00:0:0:1::53",
      dstPort: 53,
    });
    expect(one(icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2" }))).toMatchObject({ ipVersion: 4, proto: 1, dstPort: null, dst: "10.0.0.2" });
    const later = ipPacket({ src: "100.64.0.2", dst: "172.26.0.251", proto: "udp", sport: 1, dport: 53, fragOffset: 8, moreFragments: false, fragId: 7 });
    expect(one(later)).toMatchObject({ proto: 17, dstPort: null });
    expect(one(new Uint8Array(148).fill(1), { address: "fd00::9", port: 51820 }, null)).toMatchObject({
      peer: null,
      ipVersion: 0,
      proto: null,
      src: null,
      dst: null,
      dstPort: null,
      len: 148,
      from: "[fd00::9]:51820",
    });
    expect(one(new Uint8Array([0x45, 0, 0]))).toMatchObject({ ipVersion: 0, proto: null, src: null, len: 3, from: null });
  });
});

describe("the Device records its drops", () => {
  test("outbound, inbound after opening, datagrams before opening; stats carries the newest with seq", () => {
    const { a, b, net, clock } = twoDevices();
    a.device.handleTunPacket(icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2" }));
    net.deliver();
    b.tun.take();
    expect(b.device.stats().recentDrops).toEqual({ seq: 0, entries: [] });

    clock.advance(10);
    a.device.handleTunPacket(ipPacket({ src: "10.0.0.1", dst: "10.9.9.9", proto: "tcp", sport: 40000, dport: 443 }));
    // B sends from an address A never allotted it: A opens it, then refuses it at I8.
    b.device.handleTunPacket(ipPacket({ src: "10.0.0.99", dst: "10.0.0.1", proto: "udp", sport: 9, dport: 53 }));
    net.deliver();
    a.device.handleDatagram(new Uint8Array([4, 0, 0, 0, 1, 2, 3, 4]), { address: "203.0.113.7", port: 40000 });

    const drops = a.device.stats().recentDrops!;
    expect(drops.seq).toBe(3);
    expect(drops.entries.map((e) => [e.seq, e.reason, e.peer, e.src, e.dst, e.dstPort, e.from])).toEqual([
      [1, "no-peer-for-destination", null, "10.0.0.1", "10.9.9.9", 443, null],
      [2, "source-not-allowed", b.publicKey, "10.0.0.99", "10.0.0.1", 53, null],
      [3, "malformed-transport", null, null, null, null, "203.0.113.7:40000"],
    ]);
    expect(drops.entries[0]!.atMs).toBe(clock.now());
    expect(a.device.recentDrops(2)).toMatchObject({ seq: 3, lost: 0, entries: [{ seq: 3 }] });
    // The counters and the log agree.
    expect(a.device.stats().drops).toEqual({ "no-peer-for-destination": 1, "malformed-transport": 1 });
  });

  test("staged packets a handshake never carried are logged one by one", () => {
    const { a, net, clock } = twoDevices();
    for (let seq = 1; seq <= 3; seq++) a.device.handleTunPacket(icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2", seq }));
    net.take(); // B never hears the initiation (nor its retries)
    for (let t = 0; t < 120_000; t += 100) {
      clock.advance(100);
      a.device.tick();
      net.take();
    }
    const peer = a.device.stats().peers[0]!;
    const logged = a.device.recentDrops(0).entries.filter((e) => e.reason === "handshake-timeout");
    expect(peer.drops["handshake-timeout"]).toBe(3);
    expect(logged.map((e) => [e.peer, e.dst, e.proto])).toEqual([
      [peer.publicKey, "10.0.0.2", 1],
      [peer.publicKey, "10.0.0.2", 1],
      [peer.publicKey, "10.0.0.2", 1],
    ]);
  });

  test("no allocation per drop: the heap stays flat over 1e6 drops", () => {
    const { a } = twoDevices();
    const stray = ipPacket({ src: "10.0.0.1", dst: "10.9.9.9", proto: "tcp", sport: 40000, dport: 443 });
    const datagram = new Uint8Array(40).fill(9);
    const from = { address: "203.0.113.7", port: 40000 };
    const run = (n: number) => {
      for (let i = 0; i < n; i++) {
        if (i & 1) a.device.handleTunPacket(stray);
        else a.device.handleDatagram(datagram, from);
      }
    };
    run(100_000);
    Bun.gc(true);
    const before = process.memoryUsage().heapUsed;
    run(1_000_000);
    Bun.gc(true);
    const after = process.memoryUsage().heapUsed;
    expect(a.device.stats().drops).toEqual({ "no-peer-for-destination": 550_000, "malformed-unknown-type": 550_000 });
    expect(a.device.recentDrops(0)).toMatchObject({ seq: 1_100_000, lost: 1_100_000 - 256 });
    // Retained heap (what the repo's other no-allocation tests check): a log that grew per drop
    // would hold 1e6 entries here. Short-lived garbage JSC's eden GC reclaims mid-run cannot be
    // seen from a test (bun:jsc counters tried); the ring's typed arrays are what rule it out.
    expect(after - before).toBeLessThan(1_000_000);
  });
});
