/**
 * @module test/failover/grouped.property.test
 * The grouped controller (core/failover/controller.ts: one selection state per distinct candidate
 * set) against the per-prefix controller it replaced (per-prefix-oracle.ts), on random route sets
 * where many prefixes share few candidate sets, nested ones included (/16 over /24s over /25 and
 * host /32s, IPv6 /64 over /128s), with random events: gateways die, return, change RTT, withdraw
 * subnets that cover only some of a group's prefixes (groups split, and merge again later), drain;
 * routes change; time passes (fixed seeds). Both run side by side on one fake clock and network;
 * after every call they must agree on everything observable: the decisions (a group's decision
 * expanded to its prefixes equals the per-prefix ones), every prefix's status (active, effective,
 * candidates with health, last switch), lookup and lookupPinned for every destination, and when to
 * tick next. And the grouped one does less: at most one log line per group per switch.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { FailoverController, type FailoverDecision, type FailoverRoute } from "../../core/failover/controller.ts";
import { recordingLogger } from "../../core/log.ts";
import { parseAddress } from "../../core/net/address.ts";
import { PerPrefixController } from "./per-prefix-oracle.ts";

const GATEWAYS = ["g0", "g1", "g2", "g3"];
const HOSTS = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 130, 140, 200, 250];
const PREFIXES = [
  "10.0.0.0/16",
  "10.0.1.0/24",
  "10.0.1.128/25",
  "10.0.2.0/24",
  ...HOSTS.map((h) => `10.0.1.${h}/32`),
  ...HOSTS.map((h) => `10.0.9.${h}/32`),
  ...HOSTS.slice(0, 6).map((h) => `10.0.2.${h}/32`),
  "fd00::/64",
  ...HOSTS.slice(0, 6).map((h) => `fd00::${h.toString(16)}/128`),
];
const DESTS = [
  ...HOSTS.flatMap((h) => [`10.0.1.${h}`, `10.0.9.${h}`, `10.0.2.${h}`]),
  "10.0.1.131",
  "10.0.7.7",
  "10.1.0.1",
  "fd00::1",
  "fd00::77",
  "fd01::1",
].map((t) => parseAddress(t).bytes);
/** Withdrawals that cover all, some or one of a group's prefixes. */
const SUBNETS = ["10.0.0.0/16", "10.0.1.0/24", "10.0.1.128/25", "10.0.9.0/28", "10.0.1.5/32", "fd00::/64", "fd00::3/128"];
const MAX_RTT = 150;

const gw = fc.constantFrom(...GATEWAYS);
const candidateArb = fc.record({
  gatewayId: gw,
  priority: fc.constantFrom(1, 50, 100),
  draining: fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
});
/** A few candidate sets, each used by many prefixes (what a compiled subnet filter looks like). */
const routesArb: fc.Arbitrary<FailoverRoute[]> = fc
  .record({
    sets: fc.array(fc.array(candidateArb, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 3 }),
    picks: fc.array(fc.option(fc.nat(), { freq: 5 }), { minLength: PREFIXES.length, maxLength: PREFIXES.length }),
  })
  .map(({ sets, picks }) =>
    picks.flatMap((p, i) => (p === null ? [] : [{ prefix: PREFIXES[i]!, candidates: sets[p % sets.length]! }])),
  );

type Event =
  | { kind: "advance"; ms: number }
  | { kind: "kill"; g: string }
  | { kind: "revive"; g: string }
  | { kind: "rtt"; g: string; ms: number }
  | { kind: "withdraw"; g: string; subnets: string[] }
  | { kind: "drain"; g: string; on: boolean }
  | { kind: "routes"; routes: FailoverRoute[] };

const eventArb: fc.Arbitrary<Event> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 1500 }).map((ms) => ({ kind: "advance" as const, ms })) },
  { weight: 2, arbitrary: gw.map((g) => ({ kind: "kill" as const, g })) },
  { weight: 2, arbitrary: gw.map((g) => ({ kind: "revive" as const, g })) },
  { weight: 1, arbitrary: fc.record({ g: gw, ms: fc.integer({ min: 1, max: MAX_RTT }) }).map((e) => ({ kind: "rtt" as const, ...e })) },
  { weight: 2, arbitrary: fc.record({ g: gw, subnets: fc.subarray(SUBNETS, { maxLength: 2 }) }).map((e) => ({ kind: "withdraw" as const, ...e })) },
  { weight: 1, arbitrary: fc.record({ g: gw, on: fc.boolean() }).map((e) => ({ kind: "drain" as const, ...e })) },
  { weight: 1, arbitrary: routesArb.map((routes) => ({ kind: "routes" as const, routes })) },
);
const scenarioArb = fc.record({
  rtts: fc.array(fc.integer({ min: 1, max: MAX_RTT }), { minLength: GATEWAYS.length, maxLength: GATEWAYS.length }),
  initial: routesArb,
  events: fc.array(eventArb, { minLength: 5, maxLength: 30 }),
});
type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never;

/** The per-prefix view of decisions, in a stable order. */
function perPrefix(ds: readonly { prefix: string; from: string | null; to: string | null; reason: string; at: number }[]): string[] {
  return ds.map((d) => `${d.prefix} ${d.from} ${d.to} ${d.reason} ${d.at}`).sort();
}
function expand(ds: readonly FailoverDecision[]): string[] {
  return perPrefix(ds.flatMap((d) => d.prefixes.map((prefix) => ({ ...d, prefix }))));
}
const lastView = (d: { from: string | null; to: string | null; reason: string; at: number } | null) =>
  d === null ? null : { from: d.from, to: d.to, reason: d.reason, at: d.at };

function runScenario(preempt: boolean, s: Scenario): { groups: number; prefixes: number } {
  let t = 0;
  const alive = new Map(GATEWAYS.map((g) => [g, true]));
  const rtt = new Map(GATEWAYS.map((g, i) => [g, s.rtts[i]!]));
  const groupedLog = recordingLogger();
  const oracleLog = recordingLogger();
  const pending: { at: number; gw: string; sent: number; to: 0 | 1 }[] = [];
  const probe = (to: 0 | 1) => (g: string) => {
    if (alive.get(g)) pending.push({ at: t + rtt.get(g)!, gw: g, sent: t, to });
  };
  const options = { preempt, preemptHoldMs: 1000, now: () => t };
  const grouped = new FailoverController({ ...options, logger: groupedLog, sendProbe: probe(0) });
  const oracle = new PerPrefixController({ ...options, logger: oracleLog, sendProbe: probe(1) });
  let maxGroups = 0;

  const check = (mine: FailoverDecision[], theirs: { prefix: string; from: string | null; to: string | null; reason: string; at: number }[], what: string) => {
    const at = `${what} at t=${t}`;
    expect(expand(mine), at).toEqual(perPrefix(theirs));
    const a = grouped.status();
    const b = oracle.status();
    expect(a.map((r) => r.prefix), at).toEqual(b.map((r) => r.prefix));
    for (let i = 0; i < a.length; i++) {
      const x = a[i]!;
      const y = b[i]!;
      expect({ ...x, group: undefined, lastSwitch: lastView(x.lastSwitch) }, `${at} ${x.prefix}`).toEqual({
        ...y,
        group: undefined,
        lastSwitch: lastView(y.lastSwitch),
      });
    }
    for (const d of DESTS) {
      expect(grouped.lookup(d), at).toEqual(oracle.lookup(d));
      for (const g of GATEWAYS) expect(grouped.lookupPinned(d, g), at).toEqual(oracle.lookupPinned(d, g));
    }
    expect(grouped.nextTickInMs(), at).toBe(oracle.nextTickInMs());
    maxGroups = Math.max(maxGroups, grouped.groupCount);
  };

  const run = (ms: number) => {
    const end = t + ms;
    for (;;) {
      const nextReply = pending.reduce((m, p) => Math.min(m, p.at), Number.POSITIVE_INFINITY);
      const next = Math.min(nextReply, t + grouped.nextTickInMs(), t + oracle.nextTickInMs());
      if (next > end) break;
      t = Math.max(t, next);
      const due = pending.filter((p) => p.at <= t);
      pending.splice(0, pending.length, ...pending.filter((p) => p.at > t));
      // Replies in the same order to both (each controller answers its own probes).
      due.sort((p, q) => p.at - q.at || p.gw.localeCompare(q.gw) || p.to - q.to);
      for (const p of due) {
        if (!alive.get(p.gw)) continue;
        if (p.to === 0) {
          const twin = due.find((q) => q.to === 1 && q.gw === p.gw && q.sent === p.sent);
          const mine = grouped.onProbeReply(p.gw, t - p.sent);
          const theirs = twin === undefined ? [] : oracle.onProbeReply(p.gw, t - p.sent);
          check(mine, theirs, `reply ${p.gw}`);
        }
      }
      if (grouped.nextTickInMs() === 0 || oracle.nextTickInMs() === 0) check(grouped.tick(), oracle.tick(), "tick");
    }
    t = end;
  };

  check(grouped.setRoutes(s.initial), oracle.setRoutes(s.initial), "initial routes");
  for (const e of s.events) {
    switch (e.kind) {
      case "advance":
        run(e.ms);
        break;
      case "kill":
        alive.set(e.g, false);
        break;
      case "revive":
        alive.set(e.g, true);
        break;
      case "rtt":
        rtt.set(e.g, e.ms);
        break;
      case "withdraw":
        check(grouped.setWithdrawn(e.g, e.subnets), oracle.setWithdrawn(e.g, e.subnets), "withdraw");
        break;
      case "drain":
        check(grouped.setDraining(e.g, e.on), oracle.setDraining(e.g, e.on), "drain");
        break;
      case "routes":
        check(grouped.setRoutes(e.routes), oracle.setRoutes(e.routes), "routes");
        break;
    }
  }
  run(3000);
  // Fewer lines: one per group switch, never more than one per prefix switch.
  const lines = (l: typeof groupedLog) => l.lines.filter((x) => x.message.startsWith("failover: ")).length;
  expect(lines(groupedLog)).toBeLessThanOrEqual(lines(oracleLog));
  return { groups: maxGroups, prefixes: grouped.status().length };
}

describe("grouped controller = per-prefix controller", () => {
  for (const [preempt, seed] of [
    [false, 8_675_309],
    [true, 1_234_567],
  ] as const) {
    test(`preempt=${preempt}: same decisions, status, lookups and deadlines at every step`, () => {
      let shared = 0;
      fc.assert(
        fc.property(scenarioArb, (s) => {
          const r = runScenario(preempt, s);
          if (r.prefixes >= 10 && r.groups <= r.prefixes / 3) shared++;
        }),
        { seed, numRuns: 60 },
      );
      // The generator really makes many prefixes share few groups.
      expect(shared).toBeGreaterThan(20);
    });
  }
});

test("4,094 prefixes on two gateways are one group: one decision, one log line per switch", () => {
  let t = 0;
  const log = recordingLogger();
  const probes: string[] = [];
  const ctl = new FailoverController({ now: () => t, logger: log, sendProbe: (g) => void probes.push(g) });
  const prefixes: string[] = [];
  for (let i = 1; i <= 4094; i++) prefixes.push(`172.26.${i >> 8}.${i & 255}/32`);
  const both = [
    { gatewayId: "A", priority: 100, draining: false },
    { gatewayId: "B", priority: 100, draining: false },
  ];
  ctl.setRoutes(prefixes.map((prefix) => ({ prefix, candidates: both })));
  expect(ctl.groupCount).toBe(1);
  ctl.tick();
  expect(ctl.onProbeReply("A", 1)).toMatchObject([{ group: "A,B", to: "A", reason: "initial" }]);
  expect(ctl.onProbeReply("B", 1)).toEqual([]);
  t = 700; // A silent for 3 intervals; B heard from
  ctl.onData("B");
  const ds = ctl.tick();
  expect(ds).toHaveLength(1);
  expect(ds[0]).toMatchObject({ group: "A,B", from: "A", to: "B", reason: "active-down" });
  expect(ds[0]!.prefixes).toHaveLength(4094);
  expect(log.lines.map((l) => l.message).filter((m) => m.startsWith("failover: "))).toEqual([
    "failover: group=A,B prefixes=4094 from=none to=A reason=initial first=172.26.0.1/32",
    "failover: group=A,B prefixes=4094 from=A to=B reason=active-down first=172.26.0.1/32",
  ]);
  const g = ctl.groups();
  expect(g).toHaveLength(1);
  expect(g[0]).toMatchObject({ id: "A,B", active: "B", prefixCount: 4094, prefixes: ["172.26.0.1/32", "172.26.0.10/32", "172.26.0.100/32"] });
  // A withdrawal that covers part of the group splits it; the split-off part switches alone.
  t = 800;
  ctl.onProbeReply("A", 1);
  t = 900;
  ctl.onProbeReply("A", 1);
  const w = ctl.setWithdrawn("B", ["172.26.15.0/24"]);
  expect(w.map((d) => [d.group, d.prefixes.length, d.from, d.to, d.reason])).toEqual([["A,B", 255, "B", "A", "withdrawn"]]);
  expect(ctl.groups().map((x) => [x.id, x.prefixCount, x.active])).toEqual([
    ["A,B", 3839, "B"],
    ["A,B#2", 255, "A"],
  ]);
  expect(ctl.lookup(parseAddress("172.26.15.9").bytes).gatewayId).toBe("A");
  expect(ctl.lookup(parseAddress("172.26.1.9").bytes).gatewayId).toBe("B");
});
