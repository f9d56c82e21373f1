/**
 * @module test/failover/snapshot.property.test
 * The data plane's two ways to ask the controller (core/dataplane/routes.ts): the controller
 * itself as RouteSelector, and a SnapshotSelector built from `snapshot()` for a Device in another
 * thread. On random event sequences (fixed seeds; sim.ts drives the controller) both give the same
 * gateway for every destination, pinned or not, and repeated lookups return the same object (the
 * per-packet path allocates nothing). Also DataPathFailover.setNetMap's via -> key mapping.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { SnapshotSelector, sameSnapshot } from "../../core/dataplane/routes.ts";
import type { FailoverRoute } from "../../core/failover/controller.ts";
import { DataPathFailover, type FailoverDataPlane } from "../../core/failover/dataplane.ts";
import { recordingLogger } from "../../core/log.ts";
import { parseAddress } from "../../core/net/address.ts";
import { Sim } from "./sim.ts";

const GATEWAYS = ["g0", "g1", "g2"];
const PREFIXES = ["10.0.0.0/16", "10.0.1.0/24", "10.2.0.0/24", "fd00::/64"];
const DESTS = ["10.0.0.1", "10.0.1.1", "10.0.9.9", "10.2.0.5", "10.3.0.1", "fd00::5", "fd01::1"].map((t) => parseAddress(t).bytes);

type Event =
  | { kind: "advance"; ms: number }
  | { kind: "alive"; g: string; on: boolean }
  | { kind: "withdraw"; g: string; subnets: string[] }
  | { kind: "drain"; g: string; on: boolean }
  | { kind: "routes"; routes: FailoverRoute[] };

const gw = fc.constantFrom(...GATEWAYS);
const routesArb: fc.Arbitrary<FailoverRoute[]> = fc
  .tuple(
    ...PREFIXES.map(() =>
      fc.option(
        fc.array(fc.record({ gatewayId: gw, priority: fc.constantFrom(1, 100), draining: fc.boolean() }), { minLength: 1, maxLength: 3 }),
        { freq: 4 },
      ),
    ),
  )
  .map((lists) => lists.flatMap((c, i) => (c === null ? [] : [{ prefix: PREFIXES[i]!, candidates: c }])));
const eventArb: fc.Arbitrary<Event> = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 1, max: 1200 }).map((ms) => ({ kind: "advance" as const, ms })) },
  { weight: 3, arbitrary: fc.record({ g: gw, on: fc.boolean() }).map((e) => ({ kind: "alive" as const, ...e })) },
  { weight: 1, arbitrary: fc.record({ g: gw, subnets: fc.subarray(PREFIXES, { maxLength: 2 }) }).map((e) => ({ kind: "withdraw" as const, ...e })) },
  { weight: 1, arbitrary: fc.record({ g: gw, on: fc.boolean() }).map((e) => ({ kind: "drain" as const, ...e })) },
  { weight: 1, arbitrary: routesArb.map((routes) => ({ kind: "routes" as const, routes })) },
);

function agree(sim: Sim): void {
  const snap = sim.ctl.snapshot();
  expect(sameSnapshot(snap, sim.ctl.snapshot())).toBe(true);
  const sel = new SnapshotSelector(snap);
  for (const d of DESTS) {
    const want = sim.ctl.lookup(d);
    expect(sel.lookup(d).gatewayId).toBe(want.gatewayId);
    expect(sel.lookup(d)).toBe(sel.lookup(d));
    expect(sim.ctl.lookup(d)).toBe(want);
    for (const g of GATEWAYS) {
      const pinned = sim.ctl.lookupPinned(d, g);
      expect(sel.lookupPinned(d, g).gatewayId).toBe(pinned.gatewayId);
      expect(sim.ctl.lookupPinned(d, g)).toBe(pinned);
      expect(sel.lookupPinned(d, g)).toBe(sel.lookupPinned(d, g));
    }
  }
}

describe("SnapshotSelector answers as the controller does", () => {
  test("on random event sequences (fixed seed)", () => {
    fc.assert(
      fc.property(routesArb, fc.array(eventArb, { minLength: 5, maxLength: 30 }), (initial, events) => {
        const sim = new Sim();
        for (const g of GATEWAYS) sim.gateway(g, 5);
        sim.setRoutes(initial);
        agree(sim);
        for (const e of events) {
          switch (e.kind) {
            case "advance":
              sim.run(e.ms);
              break;
            case "alive":
              sim.gateways.get(e.g)!.alive = e.on;
              break;
            case "withdraw":
              sim.record(sim.ctl.setWithdrawn(e.g, e.subnets));
              break;
            case "drain":
              sim.record(sim.ctl.setDraining(e.g, e.on));
              break;
            case "routes":
              sim.setRoutes(e.routes);
              break;
          }
          agree(sim);
        }
      }),
      { seed: 4242, numRuns: 120 },
    );
  });

  test("sameSnapshot sees every difference", () => {
    const a = [{ prefix: "10.0.0.0/8", gatewayId: "g0", healthy: ["g0", "g1"] }];
    expect(sameSnapshot(a, [{ prefix: "10.0.0.0/8", gatewayId: "g0", healthy: ["g0", "g1"] }])).toBe(true);
    expect(sameSnapshot(a, [{ prefix: "10.0.0.0/8", gatewayId: "g1", healthy: ["g0", "g1"] }])).toBe(false);
    expect(sameSnapshot(a, [{ prefix: "10.0.0.0/8", gatewayId: "g0", healthy: ["g0"] }])).toBe(false);
    expect(sameSnapshot(a, [])).toBe(false);
    expect(new SnapshotSelector([]).lookup(DESTS[0]!).gatewayId).toBeNull();
  });
});

describe("DataPathFailover", () => {
  function fakeDevice() {
    const calls: string[] = [];
    const dev: FailoverDataPlane & { calls: string[]; rx: Map<string, number> } = {
      calls,
      rx: new Map(),
      setRoutes: (r) => void calls.push(`routes ${JSON.stringify(r)}`),
      setRouteSelector: (s) => void calls.push(`selector ${s === null ? "none" : "set"}`),
      setProbeListener: (l) => void calls.push(`listener ${l === null ? "none" : "set"}`),
      probe: (k) => {
        calls.push(`probe ${k}`);
        return true;
      },
      rxBytesOf: (k) => dev.rx.get(k) ?? -1,
    };
    return dev;
  }

  test("setNetMap maps via to peer keys, leaves out unknown systems, and installs itself", () => {
    const dev = fakeDevice();
    const logger = recordingLogger();
    let t = 0;
    const f = new DataPathFailover({ device: dev, now: () => t, logger });
    f.setNetMap({
      peers: [
        { id: "GW1", publicKey: "KEY1" },
        { id: "GW2", publicKey: "KEY2" },
      ],
      routes: [
        { prefix: "172.26.0.0/20", via: "GW1", priority: 100, draining: false, withdrawn: false, metricHint: 100 },
        { prefix: "172.26.0.0/20", via: "GW2", priority: 50, draining: false, withdrawn: false, metricHint: 50 },
        { prefix: "10.9.0.0/16", via: "GW9", priority: 100, draining: false, withdrawn: false, metricHint: 100 },
      ],
    });
    expect(dev.calls).toEqual(["selector set", "listener set", `routes ${JSON.stringify([{ prefix: "172.26.0.0/20", candidates: ["KEY1", "KEY2"] }])}`]);
    expect(logger.lines.map((l) => l.message)).toContain("failover-dataplane: route=10.9.0.0/16 via=GW9 reason=unknown-peer");
    f.tick();
    expect(dev.calls.filter((c) => c.startsWith("probe")).sort()).toEqual(["probe KEY1", "probe KEY2"]);
    // Received bytes count as heard-from, so silence is measured from the last traffic.
    dev.rx.set("KEY1", 100);
    f.tick();
    t += 700;
    dev.rx.set("KEY1", 200);
    f.tick();
    expect(f.controller.health.get("KEY1")!.lastHeardMs).toBe(700);
    expect(f.controller.health.get("KEY2")!.lastHeardMs).toBeNull();
    f.close();
    expect(dev.calls.slice(-2)).toEqual(["selector none", "listener none"]);
  });
});
