/**
 * @module test/dataplane/flow-table
 * The flow table against a Map-based oracle with a fake clock: random upserts, finds, deletes,
 * sweeps and time steps over a small key space (so probes collide and backward-shift deletion is
 * exercised), at a small cap so the table fills; plus the full-table sweep rate limit and the
 * gateway's per-protocol timeouts (TCP opening / established / closing / reset, UDP, ICMP).
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { FlowTable, KEY_WORDS } from "../../core/dataplane/flow-table.ts";
import { DEFAULT_FLOW_TIMEOUTS, Gateway } from "../../core/dataplane/gateway.ts";
import { ACK, FIN, RST, SYN, ipPacket } from "./packets.ts";

function setKey(t: FlowTable, n: number): void {
  t.key.fill(0);
  t.key[0] = 6;
  t.key[4] = 0x64400000 + (n % 7);
  t.key[8] = 0xac1a0000 + (n >> 3);
  t.key[9] = n & 0xffff;
}

type Op =
  | { op: "upsert"; key: number; ttl: number; state: number }
  | { op: "find"; key: number }
  | { op: "delete"; key: number }
  | { op: "sweep"; slots: number }
  | { op: "advance"; ms: number };

const arbOp: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant("upsert" as const), key: fc.integer({ min: 0, max: 120 }), ttl: fc.integer({ min: 1, max: 50 }), state: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant("find" as const), key: fc.integer({ min: 0, max: 120 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("delete" as const), key: fc.integer({ min: 0, max: 120 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("sweep" as const), slots: fc.integer({ min: 1, max: 80 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("advance" as const), ms: fc.integer({ min: 1, max: 20 }) }) },
);

describe("FlowTable against a Map oracle", () => {
  test("random operations with a fake clock agree (finds, states, refusals when full, live counts)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.integer(), fc.array(arbOp, { minLength: 50, maxLength: 400 }), (cap, seed, ops) => {
        const table = new FlowTable({ maxEntries: cap, seed, fullSweepIntervalMs: 0 });
        const oracle = new Map<number, { expires: number; state: number }>();
        let now = 1000;
        const live = () => [...oracle.values()].filter((e) => e.expires > now).length;
        for (const o of ops) {
          switch (o.op) {
            case "upsert": {
              setKey(table, o.key);
              const existing = oracle.get(o.key);
              const isLive = existing !== undefined && existing.expires > now;
              const room = isLive || live() < cap;
              const slot = table.upsert(now, now + o.ttl, o.state);
              expect(slot >= 0).toBe(room);
              if (room) oracle.set(o.key, { expires: now + o.ttl, state: o.state });
              break;
            }
            case "find": {
              setKey(table, o.key);
              const slot = table.find(now);
              const e = oracle.get(o.key);
              const want = e !== undefined && e.expires > now ? e : undefined;
              expect(slot >= 0).toBe(want !== undefined);
              if (want !== undefined) {
                expect(table.state(slot)).toBe(want.state);
                expect(table.expiresAt(slot)).toBe(want.expires);
              }
              break;
            }
            case "delete": {
              setKey(table, o.key);
              const removed = table.delete();
              // Stored (even if expired) unless a sweep already took it: only "live => stored" is certain.
              const e = oracle.get(o.key);
              if (e !== undefined && e.expires > now) expect(removed).toBe(true);
              if (e === undefined) expect(removed).toBe(false);
              oracle.delete(o.key);
              break;
            }
            case "sweep":
              table.sweep(now, o.slots);
              break;
            case "advance":
              now += o.ms;
              break;
          }
          expect(table.countLive(now)).toBe(live());
          expect(table.size).toBeLessThanOrEqual(cap);
        }
        // A full sweep leaves exactly the live entries, and every one is still found.
        table.sweep(now, table.capacity);
        expect(table.size).toBe(live());
        for (const [k, e] of oracle) {
          setKey(table, k);
          expect(table.find(now) >= 0).toBe(e.expires > now);
        }
      }),
      { numRuns: 300, seed: 11 },
    );
  });

  test("a full table refuses new flows; expired ones are reclaimed at most once per interval", () => {
    const t = new FlowTable({ maxEntries: 4, seed: 1, fullSweepIntervalMs: 1000 });
    for (let i = 0; i < 4; i++) {
      setKey(t, i);
      expect(t.upsert(0, 100, 0)).toBeGreaterThanOrEqual(0);
    }
    setKey(t, 9);
    expect(t.upsert(50, 150, 0)).toBe(-1); // full of live flows (and the forced sweep is now spent)
    setKey(t, 0);
    expect(t.upsert(50, 500, 0)).toBeGreaterThanOrEqual(0); // refreshing an existing flow needs no room
    setKey(t, 9);
    expect(t.upsert(200, 300, 0)).toBe(-1); // three expired, but the next forced sweep is due at 1050
    expect(t.size).toBe(4);
    expect(t.upsert(1050, 1200, 0)).toBeGreaterThanOrEqual(0);
    expect(t.size).toBe(1); // all four expired by 1050 (key 0 at 500) and went; key 9 came in
  });

  test("an incremental sweep resumes where it stopped and covers the table", () => {
    const t = new FlowTable({ maxEntries: 1000, seed: 5 });
    for (let i = 0; i < 1000; i++) {
      setKey(t, i);
      t.upsert(0, i % 2 === 0 ? 10 : 1000, 0);
    }
    let removed = 0;
    for (let step = 0; step < t.capacity / 256; step++) removed += t.sweep(20, 256);
    expect(removed).toBe(500);
    expect(t.size).toBe(500);
    expect(KEY_WORDS).toBe(10);
  });

  test("upsert, find and sweep allocate nothing per call (heap stays flat over a million operations)", () => {
    const t = new FlowTable({ maxEntries: 65_536, seed: 3 });
    const run = (n: number) => {
      for (let i = 0; i < n; i++) {
        setKey(t, i & 0xffff);
        if (t.find(i) < 0) t.upsert(i, i + 50_000, 1);
        if ((i & 1023) === 0) t.sweep(i, 64);
      }
    };
    run(200_000);
    Bun.gc(true);
    const before = process.memoryUsage().heapUsed;
    run(1_000_000);
    Bun.gc(true);
    const after = process.memoryUsage().heapUsed;
    expect(after - before).toBeLessThan(1_000_000);
  });
});

describe("per-protocol timeouts (Gateway over the flow table)", () => {
  const KEY = "www5MrbYq4EHZJx50mKMShkucSDfL6B1P/fmcGk+hRs=";
  const make = () =>
    new Gateway(
      {
        senders: [{ peerPublicKey: KEY, virtualAddresses: ["100.64.0.2"], allow: [{ destination: "172.26.0.0/20", protocol: "any" }] }],
        localAddresses: ["100.64.0.1", "172.26.0.1"],
        overlayNetwork: "100.64.0.0/10",
      },
      { seed: 9 },
    );
  const run = (g: Gateway, from: "overlay" | "lan", p: Uint8Array, now: number) =>
    from === "overlay" ? g.inbound(g.filter.sender(KEY), p, p.length, now) : g.outbound(p, p.length, now);
  const out = (flags: number) => ipPacket({ src: "100.64.0.2", dst: "172.26.0.250", proto: "tcp", sport: 40000, dport: 80, flags });
  const back = (flags: number) => ipPacket({ src: "172.26.0.250", dst: "100.64.0.2", proto: "tcp", sport: 80, dport: 40000, flags });
  const T = DEFAULT_FLOW_TIMEOUTS;

  test("TCP: opening 30 s, established 2 h, closing 60 s, reset 10 s; a new SYN restarts a closed tuple", () => {
    let g = make();
    expect(run(g, "overlay", out(SYN), 0)).toBe(0);
    expect(run(g, "lan", back(SYN | ACK), T.tcpOpeningMs)).toBe(6); // expired: unsolicited
    g = make();
    run(g, "overlay", out(SYN), 0);
    expect(run(g, "lan", back(SYN | ACK), T.tcpOpeningMs - 1)).toBe(0);
    const t0 = T.tcpOpeningMs - 1;
    expect(run(g, "lan", back(ACK), t0 + T.tcpEstablishedMs - 1)).toBe(0);
    const t1 = t0 + T.tcpEstablishedMs - 1;
    expect(run(g, "lan", back(ACK), t1 + T.tcpEstablishedMs)).toBe(6);
    // closing
    g = make();
    run(g, "overlay", out(SYN), 0);
    run(g, "lan", back(SYN | ACK), 1);
    run(g, "overlay", out(FIN | ACK), 2);
    expect(run(g, "lan", back(ACK), 2 + T.tcpClosingMs - 1)).toBe(0);
    expect(run(g, "lan", back(ACK), 2 + 2 * T.tcpClosingMs)).toBe(6);
    // reset, then a reused tuple
    g = make();
    run(g, "overlay", out(SYN), 0);
    run(g, "lan", back(RST | ACK), 1);
    expect(run(g, "lan", back(ACK), 1 + T.tcpResetMs)).toBe(6);
    run(g, "overlay", out(SYN), 20_000);
    expect(run(g, "lan", back(SYN | ACK), 20_001)).toBe(0);
    expect(run(g, "lan", back(ACK), 20_001 + T.tcpEstablishedMs - 1)).toBe(0);
  });

  test("Gateway.inbound and outbound allocate nothing per packet (heap stays flat)", () => {
    const g = make();
    const sender = g.filter.sender(KEY);
    const outs: Uint8Array[] = [];
    const backs: Uint8Array[] = [];
    for (let i = 0; i < 1024; i++) {
      outs.push(ipPacket({ src: "100.64.0.2", dst: `172.26.${i >> 8}.${i & 255}`, proto: "tcp", sport: 1024 + i, dport: 80, flags: SYN }));
      backs.push(ipPacket({ src: `172.26.${i >> 8}.${i & 255}`, dst: "100.64.0.2", proto: "tcp", sport: 80, dport: 1024 + i, flags: SYN | ACK }));
    }
    const run = (n: number) => {
      let ok = 0;
      for (let i = 0; i < n; i++) {
        const o = outs[i & 1023]!;
        const b = backs[(i * 7) & 1023]!;
        if (g.inbound(sender, o, o.length, i) === 0) ok++;
        if (g.outbound(b, b.length, i) === 0) ok++;
      }
      return ok;
    };
    run(100_000);
    Bun.gc(true);
    const before = process.memoryUsage().heapUsed;
    expect(run(500_000)).toBeGreaterThan(500_000);
    Bun.gc(true);
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(1_000_000);
  });

  test("UDP 30 s unanswered, 180 s answered; ICMP echo 30 s", () => {
    const g = make();
    const q = ipPacket({ src: "100.64.0.2", dst: "172.26.0.53", proto: "udp", sport: 5353, dport: 53 });
    const a = ipPacket({ src: "172.26.0.53", dst: "100.64.0.2", proto: "udp", sport: 53, dport: 5353 });
    run(g, "overlay", q, 0);
    expect(run(g, "lan", a, T.udpMs - 1)).toBe(0);
    const t = T.udpMs - 1;
    expect(run(g, "lan", a, t + T.udpRepliedMs - 1)).toBe(0);
    expect(run(g, "lan", a, t + 2 * T.udpRepliedMs)).toBe(6);
    const ping = ipPacket({ src: "100.64.0.2", dst: "172.26.0.9", proto: "icmp", icmpId: 77 });
    const pong = ipPacket({ src: "172.26.0.9", dst: "100.64.0.2", proto: "icmp", icmpType: 0, icmpId: 77 });
    const wrongId = ipPacket({ src: "172.26.0.9", dst: "100.64.0.2", proto: "icmp", icmpType: 0, icmpId: 78 });
    run(g, "overlay", ping, 1_000_000);
    expect(run(g, "lan", wrongId, 1_000_001)).toBe(6);
    expect(run(g, "lan", pong, 1_000_000 + T.icmpMs - 1)).toBe(0);
    expect(run(g, "lan", pong, 1_000_000 + 3 * T.icmpMs)).toBe(6);
  });
});
