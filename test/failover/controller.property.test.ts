/**
 * @module test/failover/controller.property.test
 * The failover state machine on random event sequences (fixed seeds): gateways die and return,
 * change RTT, withdraw subnets, drain; the route set changes; time passes. After every controller
 * call the test checks, against the ground truth the simulator knows and a simple oracle:
 * - one active gateway per prefix, and every switch starts from the previous one (no hidden switch);
 * - the active one is always a current own candidate and healthy (or draining-but-healthy);
 * - every switch has a true reason: no switch away from a healthy, non-draining, non-withdrawn
 *   active gateway except `preempt` (only when enabled, only to a strictly better priority), and
 *   no `active-down` for a gateway that was not dead within the detection budget (no false failover);
 * - an active gateway that has been dead longer than the detection budget is gone, and a prefix
 *   with an own candidate alive for the recovery budget has an active gateway;
 * - selection equals a brute-force oracle (filter + sort over the status rows);
 * - lookup equals a linear scan over the status rows (longest prefix, policy-checked fallback).
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import type { CandidateStatus, FailoverDecision, FailoverRoute, LookupResult, PrefixStatus } from "../../core/failover/controller.ts";
import { parseAddress, parsePrefix, prefixContainsAddress, prefixCovers } from "../../core/net/address.ts";
import { Sim } from "./sim.ts";

const GATEWAYS = ["g0", "g1", "g2", "g3"];
const PREFIXES = ["10.0.0.0/16", "10.0.1.0/24", "10.0.1.128/25", "10.2.0.0/24", "fd00::/64"];
const DESTS = ["10.0.0.1", "10.0.1.1", "10.0.1.200", "10.0.9.9", "10.2.0.5", "10.3.0.1", "fd00::5", "fd01::1"].map(
  (t) => parseAddress(t).bytes,
);
const I = 200;
const MAX_RTT = 150;
/** Death -> switched away: the health arithmetic (3 intervals after the last reply), +1 ms of slack. */
const DETECT = 3 * I + 1;
/** Return -> usable: a probe within one interval, two replies, an RTT. */
const RECOVER = 2 * I + MAX_RTT + 1;
const PREEMPT_HOLD = 1000;

type Event =
  | { kind: "advance"; ms: number }
  | { kind: "kill"; g: string }
  | { kind: "revive"; g: string }
  | { kind: "rtt"; g: string; ms: number }
  | { kind: "withdraw"; g: string; subnets: string[] }
  | { kind: "drain"; g: string; on: boolean }
  | { kind: "routes"; routes: FailoverRoute[] };

const gw = fc.constantFrom(...GATEWAYS);
const candidateArb = fc.record({
  gatewayId: gw,
  priority: fc.constantFrom(1, 50, 100),
  draining: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
});
const routesArb: fc.Arbitrary<FailoverRoute[]> = fc
  .tuple(...PREFIXES.map(() => fc.option(fc.array(candidateArb, { minLength: 1, maxLength: 4 }), { freq: 4 })))
  .map((lists) =>
    lists.flatMap((c, i) => (c === null ? [] : [{ prefix: PREFIXES[i]!, candidates: c }])),
  );
const eventArb: fc.Arbitrary<Event> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 1500 }).map((ms) => ({ kind: "advance" as const, ms })) },
  { weight: 2, arbitrary: gw.map((g) => ({ kind: "kill" as const, g })) },
  { weight: 2, arbitrary: gw.map((g) => ({ kind: "revive" as const, g })) },
  { weight: 1, arbitrary: fc.record({ g: gw, ms: fc.integer({ min: 1, max: MAX_RTT }) }).map((e) => ({ kind: "rtt" as const, ...e })) },
  {
    weight: 1,
    arbitrary: fc
      .record({ g: gw, subnets: fc.subarray(PREFIXES, { maxLength: 2 }) })
      .map((e) => ({ kind: "withdraw" as const, ...e })),
  },
  { weight: 1, arbitrary: fc.record({ g: gw, on: fc.boolean() }).map((e) => ({ kind: "drain" as const, ...e })) },
  { weight: 1, arbitrary: routesArb.map((routes) => ({ kind: "routes" as const, routes })) },
);
const scenarioArb = fc.record({
  rtts: fc.array(fc.integer({ min: 1, max: MAX_RTT }), { minLength: GATEWAYS.length, maxLength: GATEWAYS.length }),
  initial: routesArb,
  events: fc.array(eventArb, { minLength: 5, maxLength: 40 }),
});

/** Oracle: by (draining, priority, [rtt], id), over plain rows. */
function best(rows: CandidateStatus[], useRtt: boolean): string | null {
  const sorted = [...rows].sort(
    (a, b) =>
      Number(a.draining) - Number(b.draining) ||
      a.priority - b.priority ||
      (useRtt ? (a.rttMs ?? Infinity) - (b.rttMs ?? Infinity) : 0) ||
      (a.gatewayId < b.gatewayId ? -1 : a.gatewayId > b.gatewayId ? 1 : 0),
  );
  return sorted[0]?.gatewayId ?? null;
}

function oracleActive(prev: string | null, st: PrefixStatus, now: number, preempt: boolean): string | null {
  const own = st.candidates.filter((c) => c.own);
  const healthy = own.filter((c) => c.healthy);
  const cur = own.find((c) => c.gatewayId === prev);
  if (prev === null) return best(healthy, false);
  if (cur === undefined || !cur.healthy) return best(healthy, true);
  if (cur.draining) {
    const ready = healthy.filter((c) => !c.draining);
    return ready.length > 0 ? best(ready, true) : prev;
  }
  if (preempt) {
    const ready = healthy.filter(
      (c) => !c.draining && c.priority < cur.priority && c.upSinceMs !== null && now - c.upSinceMs >= PREEMPT_HOLD,
    );
    if (ready.length > 0) return best(ready, true);
  }
  return prev;
}

function oracleLookup(status: PrefixStatus[], dst: Uint8Array): string | null {
  const matching = status
    .map((s) => ({ s, p: parsePrefix(s.prefix) }))
    .filter((x) => prefixContainsAddress(x.p, dst))
    .sort((a, b) => b.p.length - a.p.length);
  const top = matching[0];
  if (top === undefined) return null;
  if (top.s.active !== null) return top.s.active;
  for (const x of matching.slice(1)) {
    if (!prefixCovers(x.p, top.p)) continue;
    if (x.s.active !== null && top.s.candidates.some((c) => c.gatewayId === x.s.active)) return x.s.active;
  }
  return null;
}

type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never;

function runScenario(preempt: boolean, scenario: Scenario): void {
  const sim = new Sim({ preempt, preemptHoldMs: PREEMPT_HOLD, probeIntervalMs: I });
  GATEWAYS.forEach((g, i) => sim.gateway(g, scenario.rtts[i]!));
  /** Truth: dead since (ms) per gateway, alive since, and what each reported as withdrawn. */
  const deadSince = new Map<string, number>();
  const aliveSince = new Map<string, number>(GATEWAYS.map((g) => [g, 0]));
  const withdrawn = new Map<string, string[]>();
  const active = new Map<string, string | null>();
  let lastConfigChange = 0;

  const failed = (msg: string, extra: unknown) => {
    throw new Error(`${msg} at t=${sim.t}: ${JSON.stringify(extra)}`);
  };

  sim.onStep = (ds: FailoverDecision[], kind) => {
    const status = sim.ctl.status();
    const byPrefix = new Map(status.map((s) => [s.prefix, s]));
    const prev = new Map(active);
    // A decision is one group's switch: every prefix it names switched, each checked on its own.
    const perPrefix = ds.flatMap((d) => {
      if (d.prefixes.length === 0) failed("decision for no prefix", d);
      return d.prefixes.map((prefix) => ({ ...d, prefix }));
    });
    for (const d of perPrefix) {
      // No hidden switch: each decision starts where the last one (for that prefix) ended.
      if ((active.get(d.prefix) ?? null) !== d.from) failed("decision from a gateway that was not active", d);
      if (d.from === d.to) failed("switch to the same gateway", d);
      if (d.at !== sim.t) failed("decision timestamp", d);
      active.set(d.prefix, d.to);
      const st = byPrefix.get(d.prefix);
      if (st !== undefined && st.group !== d.group && !st.group.startsWith(`${d.group}#`) && d.reason !== "route-removed") {
        failed("decision names another group", { d, st });
      }
      const row = (id: string | null) => st?.candidates.find((c) => c.gatewayId === id && c.own);
      const from = row(d.from);
      const to = row(d.to);
      if (d.to !== null && !to?.healthy) failed("switched to an unhealthy gateway", { d, st });
      switch (d.reason) {
        case "initial":
        case "recovered":
          if (d.from !== null) failed("initial with a previous gateway", d);
          break;
        case "route-removed":
          if (from !== undefined) failed("route-removed but still an own candidate", d);
          break;
        case "withdrawn":
          if (from?.state !== "withdrawn") failed("withdrawn reason for a gateway that did not withdraw", { d, from });
          break;
        case "active-down": {
          if (from === undefined || from.healthy || from.state === "withdrawn") failed("active-down for a healthy gateway", { d, from });
          // No false failover: it really was dead within the detection budget.
          const died = deadSince.get(d.from!);
          const revived = aliveSince.get(d.from!)!;
          if (died === undefined && sim.t - revived > DETECT + MAX_RTT) failed("false failover", { d, revived });
          break;
        }
        case "draining":
          if (!from?.draining || to === undefined || to.draining) failed("bad drain switch", { d, from, to });
          break;
        case "preempt":
          if (!preempt) failed("preempt while preempt is off", d);
          if (from === undefined || to === undefined || to.priority >= from.priority || !from.healthy) failed("bad preempt", { d, from, to });
          break;
      }
    }
    for (const [p] of active) if (!byPrefix.has(p)) active.delete(p);
    for (const st of status) {
      const mine = active.get(st.prefix) ?? null;
      if (st.active !== mine) failed("active changed without a decision", { st, mine });
      if (st.active !== null) {
        const row = st.candidates.find((c) => c.gatewayId === st.active);
        if (row === undefined || !row.own) failed("active is not an own candidate", st);
        if (!row!.healthy) failed("active is unhealthy after an evaluation", st);
        const died = deadSince.get(st.active);
        if (died !== undefined && sim.t - died > DETECT) failed("dead active kept past the detection budget", { st, died });
      }
      if (kind !== "reply" || ds.length > 0) {
        const want = oracleActive(prev.get(st.prefix) ?? null, st, sim.t, preempt);
        if (want !== st.active) failed("oracle disagrees", { want, st, prev: prev.get(st.prefix) ?? null });
      }
      if (st.active === null && kind !== "reply" && sim.t - lastConfigChange >= RECOVER) {
        const usable = st.candidates.filter((c) => {
          if (!c.own || deadSince.has(c.gatewayId) || sim.t - aliveSince.get(c.gatewayId)! < RECOVER) return false;
          const lost = withdrawn.get(c.gatewayId) ?? [];
          return !lost.some((w) => prefixCovers(parsePrefix(w), parsePrefix(st.prefix)) || prefixCovers(parsePrefix(st.prefix), parsePrefix(w)));
        });
        if (usable.length > 0) failed("a healthy candidate but no active gateway", { st, usable });
      }
    }
    for (const dst of DESTS) {
      const r: LookupResult = sim.ctl.lookup(dst);
      if (r.gatewayId !== oracleLookup(status, dst)) failed("lookup disagrees with the linear scan", { dst: [...dst], r, status });
    }
  };

  sim.setRoutes(scenario.initial);
  for (const e of scenario.events) {
    switch (e.kind) {
      case "advance":
        sim.run(e.ms);
        break;
      case "kill":
        if (!deadSince.has(e.g)) deadSince.set(e.g, sim.t);
        sim.gateways.get(e.g)!.alive = false;
        break;
      case "revive":
        if (deadSince.has(e.g)) aliveSince.set(e.g, sim.t);
        deadSince.delete(e.g);
        sim.gateways.get(e.g)!.alive = true;
        break;
      case "rtt":
        sim.gateways.get(e.g)!.rttMs = e.ms;
        break;
      case "withdraw":
        withdrawn.set(e.g, e.subnets);
        lastConfigChange = sim.t;
        sim.record(sim.ctl.setWithdrawn(e.g, e.subnets));
        break;
      case "drain":
        lastConfigChange = sim.t;
        sim.record(sim.ctl.setDraining(e.g, e.on));
        break;
      case "routes":
        lastConfigChange = sim.t;
        sim.setRoutes(e.routes);
        break;
    }
  }
  sim.run(3000);
}

describe("failover state machine, random event sequences", () => {
  for (const [preempt, seed] of [
    [false, 20_240_611],
    [true, 4_711],
  ] as const) {
    test(`preempt=${preempt}: invariants, liveness and the oracle hold at every step`, () => {
      fc.assert(
        fc.property(scenarioArb, (s) => runScenario(preempt, s)),
        { seed, numRuns: 150 },
      );
    });
  }
});

test("the generators reach every reason", () => {
  const seen = new Set<string>();
  fc.assert(
    fc.property(scenarioArb, fc.boolean(), (s, preempt) => {
      const sim = new Sim({ preempt, preemptHoldMs: PREEMPT_HOLD });
      GATEWAYS.forEach((g, i) => sim.gateway(g, s.rtts[i]!));
      sim.setRoutes(s.initial);
      for (const e of s.events) {
        if (e.kind === "advance") sim.run(e.ms);
        else if (e.kind === "kill") sim.gateways.get(e.g)!.alive = false;
        else if (e.kind === "revive") sim.gateways.get(e.g)!.alive = true;
        else if (e.kind === "withdraw") sim.record(sim.ctl.setWithdrawn(e.g, e.subnets));
        else if (e.kind === "drain") sim.record(sim.ctl.setDraining(e.g, e.on));
        else if (e.kind === "routes") sim.setRoutes(e.routes);
      }
      for (const d of sim.decisions) seen.add(d.reason);
    }),
    { seed: 99, numRuns: 100 },
  );
  expect([...seen].sort()).toEqual(["active-down", "draining", "initial", "preempt", "recovered", "route-removed", "withdrawn"]);
});
