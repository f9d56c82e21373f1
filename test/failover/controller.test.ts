/**
 * @module test/failover/controller.test
 * Failover scenarios on a fake clock and tunnel (sim.ts): kill, LAN loss, drain, no flap, preempt,
 * fail closed, /24 vs /16 overlaps, and the health monitor's detection arithmetic. Outages are
 * measured with a 10 ms pinger against the integration target (<= 1 s; zero lost when draining).
 */
import { describe, expect, test } from "bun:test";
import { FailoverController, routesFromNetMap } from "../../core/failover/controller.ts";
import { FailoverConfigError, HealthMonitor } from "../../core/failover/health.ts";
import { recordingLogger, silentLogger } from "../../core/log.ts";
import { parseAddress } from "../../core/net/address.ts";
import { Sim } from "./sim.ts";

const NET = "10.0.0.0/24";
const two = (aPri = 100, bPri = 100) => [
  { prefix: NET, candidates: [ { gatewayId: "A", priority: aPri, draining: false }, { gatewayId: "B", priority: bPri, draining: false } ] },
];
const ip = (t: string) => parseAddress(t).bytes;

/** A sim with gateways A (rtt 5) and B (rtt 8) serving NET, settled on A. */
function settled(options: ConstructorParameters<typeof Sim>[0] = {}): Sim {
  const sim = new Sim(options);
  sim.gateway("A", 5);
  sim.gateway("B", 8);
  sim.setRoutes(two());
  sim.run(1000);
  expect(sim.ctl.activeFor(NET)).toBe("A");
  sim.pingTo("10.0.0.7");
  sim.run(500);
  return sim;
}

describe("health monitor", () => {
  test("down after 3 silent intervals, up after 2 replies, data keeps it up", () => {
    let t = 0;
    const sent: string[] = [];
    const log = recordingLogger();
    const h = new HealthMonitor({ now: () => t, logger: log, sendProbe: (g) => sent.push(`${t}:${g}`) });
    h.setGateways(["G"]);
    h.tick();
    expect(sent).toEqual(["0:G"]);
    expect(h.get("G")!.liveness).toBe("unknown");
    t = 3;
    expect(h.onProbeReply("G", 3)!.to).toBe("up");
    expect(h.nextDueInMs()).toBe(197);
    // Silence from t=3: down exactly at 3 + 600.
    t = 602;
    expect(h.tick()).toEqual([]);
    t = 603;
    expect(h.tick()).toEqual([{ gatewayId: "G", from: "up", to: "down", at: 603 }]);
    expect(log.lines.map((l) => l.message)).toContain("failover-health: gateway=G from=up to=down silence_ms=600");
    // One reply is not enough to come back; two consecutive are.
    t = 700;
    expect(h.onProbeReply("G", 2)).toBeNull();
    t = 900;
    expect(h.onProbeReply("G", 2)!.to).toBe("up");
    // Data alone keeps it up through lost probes.
    for (t = 900; t <= 3000; t += 100) {
      h.onData("G");
      expect(h.tick()).toEqual([]);
    }
    expect(h.get("G")!.rttMs).toBeCloseTo(2.5625, 5);
  });

  test("replies more than two intervals apart are not consecutive", () => {
    let t = 0;
    const h = new HealthMonitor({ now: () => t, logger: silentLogger, sendProbe: () => {} });
    h.setGateways(["G"]);
    t = 1000;
    h.tick();
    expect(h.get("G")!.liveness).toBe("down");
    h.onProbeReply("G", 1);
    t = 1401;
    expect(h.onProbeReply("G", 1)).toBeNull();
    t = 1600;
    expect(h.onProbeReply("G", 1)!.to).toBe("up");
  });

  test("one probe per interval, however late the tick", () => {
    let t = 0;
    let n = 0;
    const h = new HealthMonitor({ now: () => t, logger: silentLogger, sendProbe: () => n++ });
    h.setGateways(["G"]);
    h.tick();
    t = 1050;
    h.tick();
    expect(n).toBe(2);
    expect(h.nextDueInMs()).toBe(150);
  });

  test("bad options are E_CONFIG_INVALID", () => {
    const base = { now: () => 0, logger: silentLogger, sendProbe: () => {} };
    expect(() => new HealthMonitor({ ...base, probeIntervalMs: 0 })).toThrow(FailoverConfigError);
    expect(() => new HealthMonitor({ ...base, missedProbes: 1.5 })).toThrow(/missedProbes/);
    try {
      new HealthMonitor({ ...base, rttAlpha: 2 });
    } catch (e) {
      expect((e as FailoverConfigError).code).toBe("E_CONFIG_INVALID");
    }
  });
});

describe("failover scenarios", () => {
  test("initial choice is the first gateway to answer, not the best priority", () => {
    const sim = new Sim();
    sim.gateway("A", 30).alive = true;
    sim.gateway("B", 4);
    sim.setRoutes(two(10, 200));
    sim.run(100);
    expect(sim.ctl.activeFor(NET)).toBe("B");
    expect(sim.decisions).toEqual([{ group: "A,B", prefixes: [NET], from: null, to: "B", reason: "initial", at: 4 }]);
    expect(sim.switchLines()).toEqual(["failover: group=A,B prefixes=1 from=none to=B reason=initial first=10.0.0.0/24"]);
    // Healthy in the same evaluation (a new route over gateways already up): priority, then id.
    const tie = new Sim();
    tie.gateway("A", 5);
    tie.gateway("B", 5);
    tie.gateway("C", 5);
    const more = (pri: number[]) => ["A", "B", "C"].map((gatewayId, i) => ({ gatewayId, priority: pri[i]!, draining: false }));
    const first = { prefix: "10.9.0.0/24", candidates: more([1, 1, 1]) };
    tie.setRoutes([first]);
    tie.run(50);
    expect(tie.setRoutes([first, { prefix: NET, candidates: more([100, 50, 50]) }])).toEqual([
      { group: "A,B,C", prefixes: [NET], from: null, to: "B", reason: "initial", at: tie.t },
    ]);
  });

  test("SIGKILLed active gateway: switch within the detection budget, outage under 1 s", () => {
    const sim = settled();
    const killedAt = sim.t;
    sim.gateways.get("A")!.alive = false;
    sim.run(2000);
    const sw = sim.decisions.at(-1)!;
    expect(sw).toMatchObject({ from: "A", to: "B", reason: "active-down" });
    expect(sw.at - killedAt).toBeLessThanOrEqual(600);
    expect(sw.at - killedAt).toBeGreaterThan(400);
    expect(sim.longestOutageMs()).toBeLessThanOrEqual(610);
    expect(sim.switchLines()).toContain("failover: group=A,B prefixes=1 from=A to=B reason=active-down first=10.0.0.0/24");
  });

  test("a lost probe now and then is not a failure (why missedProbes is 3, not 2)", () => {
    const sim = settled();
    const a = sim.gateways.get("A")!;
    // One probe lost and the next answered 55 ms late (jitter): 2 intervals + 55 ms of silence.
    for (let i = 0; i < 20; i++) {
      a.lose = 1;
      a.rttMs = 60;
      sim.run(300);
      a.rttMs = 5;
      sim.run(500);
    }
    expect(sim.decisions.map((d) => d.reason)).toEqual(["initial"]);
    // Two lost in a row plus the same jitter is a failure.
    a.lose = 2;
    a.rttMs = 60;
    sim.run(2000);
    expect(sim.decisions.map((d) => d.reason)).toEqual(["initial", "active-down"]);
  });

  test("LAN lost: the withdrawal switches at once", () => {
    const sim = settled();
    sim.gateways.get("A")!.lan = false;
    const ds = sim.record(sim.ctl.setWithdrawn("A", ["10.0.0.0/24"]));
    expect(ds).toEqual([{ group: "A,B", prefixes: [NET], from: "A", to: "B", reason: "withdrawn", at: sim.t }]);
    sim.run(1000);
    expect(sim.ctl.activeFor(NET)).toBe("B");
    expect(sim.longestOutageMs()).toBe(0);
    const st = sim.ctl.status()[0]!;
    expect(st.candidates.find((c) => c.gatewayId === "A")).toMatchObject({ state: "withdrawn", healthy: false });
    // Repeating the report is a no-op; restoring it does not move traffic back (no preempt).
    expect(sim.ctl.setWithdrawn("A", ["10.0.0.0/24"])).toEqual([]);
    expect(sim.ctl.setWithdrawn("A", [])).toEqual([]);
    expect(sim.ctl.activeFor(NET)).toBe("B");
  });

  test("a route candidate marked withdrawn (the NetMap's flag) is never chosen while another is healthy", () => {
    // From the start: both answer, A has the better priority but its route is withdrawn.
    const sim = new Sim();
    sim.gateway("A", 3);
    sim.gateway("B", 8);
    sim.setRoutes([{ prefix: NET, candidates: [{ gatewayId: "A", priority: 1, draining: false, withdrawn: true }, { gatewayId: "B", priority: 100, draining: false }] }]);
    sim.run(1000);
    expect(sim.ctl.activeFor(NET)).toBe("B");
    expect(sim.decisions.map((d) => [d.from, d.to, d.reason])).toEqual([[null, "B", "initial"]]);
    expect(sim.ctl.isHealthyFor("A", NET)).toBe(false);
    expect(sim.ctl.status()[0]!.candidates.find((c) => c.gatewayId === "A")).toMatchObject({ state: "withdrawn", healthy: false });
    // A flow pinned to A does not stay there.
    expect(sim.ctl.lookupPinned(ip("10.0.0.7"), "A")).toEqual({ gatewayId: "B", prefix: NET, viaPrefix: NET });

    // Settled on A, then a NetMap marks A withdrawn: moves at once, reason withdrawn, no lost ping.
    const moved = settled();
    const routes = routesFromNetMap([
      { prefix: NET, via: "A", priority: 100, draining: false, withdrawn: true, metricHint: 100 },
      { prefix: NET, via: "B", priority: 100, draining: false, withdrawn: false, metricHint: 100 },
    ]);
    expect(routes[0]!.candidates[0]).toEqual({ gatewayId: "A", priority: 100, draining: false, withdrawn: true });
    expect(moved.setRoutes(routes)).toEqual([{ group: "A,B", prefixes: [NET], from: "A", to: "B", reason: "withdrawn", at: moved.t }]);
    moved.run(1000);
    expect(moved.ctl.activeFor(NET)).toBe("B");
    expect(moved.longestOutageMs()).toBe(0);
  });

  test("every route candidate withdrawn: fail closed (no-healthy-gateway), back when the flag clears", () => {
    const sim = settled();
    const flagged = (a: boolean, b: boolean) => [
      { prefix: NET, candidates: [{ gatewayId: "A", priority: 100, draining: false, withdrawn: a }, { gatewayId: "B", priority: 100, draining: false, withdrawn: b }] },
    ];
    const ds = sim.setRoutes(flagged(true, true));
    expect(ds).toEqual([{ group: "A,B", prefixes: [NET], from: "A", to: null, reason: "withdrawn", at: sim.t }]);
    sim.run(1000);
    // Both still answer probes, yet nothing is chosen: the destination still matches the route (the
    // OS route stays on the TUN) and the data plane drops and counts.
    expect(sim.ctl.activeFor(NET)).toBeNull();
    expect(sim.ctl.lookup(ip("10.0.0.7"))).toEqual({ gatewayId: null, prefix: NET, reason: "no-healthy-gateway" });
    expect(sim.ctl.lookupPinned(ip("10.0.0.7"), "A")).toEqual({ gatewayId: null, prefix: NET, reason: "no-healthy-gateway" });
    expect(sim.ctl.status()[0]!.candidates.map((c) => c.state)).toEqual(["withdrawn", "withdrawn"]);
    // B's subnet comes back (the next NetMap clears its flag): recovered onto B.
    expect(sim.setRoutes(flagged(true, false))).toEqual([{ group: "A,B", prefixes: [NET], from: null, to: "B", reason: "recovered", at: sim.t }]);
  });

  test("drain: make-before-break, zero lost pings, flows pinned to the drained gateway finish", () => {
    const sim = settled();
    const ds = sim.setRoutes([
      { prefix: NET, candidates: [ { gatewayId: "A", priority: 100, draining: true }, { gatewayId: "B", priority: 100, draining: false } ] },
    ]);
    expect(ds).toEqual([{ group: "A,B", prefixes: [NET], from: "A", to: "B", reason: "draining", at: sim.t }]);
    // An existing flow on A stays there while A is up; new ones go to B.
    expect(sim.ctl.lookupPinned(ip("10.0.0.7"), "A").gatewayId).toBe("A");
    expect(sim.ctl.lookup(ip("10.0.0.7")).gatewayId).toBe("B");
    sim.run(2000);
    // Then A stops.
    sim.gateways.get("A")!.alive = false;
    sim.run(2000);
    expect(sim.lostPings()).toBe(0);
    expect(sim.ctl.lookupPinned(ip("10.0.0.7"), "A").gatewayId).toBe("B");
  });

  test("drain with no healthy alternative keeps the draining gateway", () => {
    const sim = settled();
    sim.gateways.get("B")!.alive = false;
    sim.run(1000);
    expect(sim.ctl.setDraining("A", true)).toEqual([]);
    expect(sim.ctl.activeFor(NET)).toBe("A");
    sim.gateways.get("B")!.alive = true;
    sim.run(1000);
    expect(sim.decisions.at(-1)).toMatchObject({ from: "A", to: "B", reason: "draining" });
    expect(sim.lostPings()).toBe(0);
  });

  test("no flap back for 40 s after the old gateway returns", () => {
    const sim = settled();
    sim.gateways.get("A")!.alive = false;
    sim.run(2000);
    expect(sim.ctl.activeFor(NET)).toBe("B");
    const n = sim.decisions.length;
    sim.gateways.get("A")!.alive = true;
    sim.run(40_000);
    expect(sim.decisions.length).toBe(n);
    expect(sim.ctl.activeFor(NET)).toBe("B");
    expect(sim.ctl.status()[0]!.candidates.every((c) => c.healthy)).toBe(true);
  });

  test("preempt: a better priority takes over after it has been up for preemptHoldMs", () => {
    const sim = new Sim({ preempt: true, preemptHoldMs: 5000 });
    sim.gateway("A", 5);
    sim.gateway("B", 8);
    sim.setRoutes(two(10, 100));
    sim.run(1000);
    expect(sim.ctl.activeFor(NET)).toBe("A");
    sim.pingTo("10.0.0.7");
    sim.gateways.get("A")!.alive = false;
    sim.run(2000);
    expect(sim.ctl.activeFor(NET)).toBe("B");
    const back = sim.t;
    sim.gateways.get("A")!.alive = true;
    sim.run(10_000);
    const sw = sim.decisions.at(-1)!;
    expect(sw).toMatchObject({ from: "B", to: "A", reason: "preempt" });
    // Up ~205 ms after it returned, then held for 5 s.
    expect(sw.at - back).toBeGreaterThanOrEqual(5000);
    expect(sw.at - back).toBeLessThanOrEqual(5405);
    // Equal priority never preempts.
    const eq = new Sim({ preempt: true, preemptHoldMs: 0 });
    eq.gateway("A", 9);
    eq.gateway("B", 3);
    eq.setRoutes(two());
    eq.run(10_000);
    expect(eq.decisions.map((d) => d.reason)).toEqual(["initial"]);
  });

  test("both gone: fail closed with a reason, then recover", () => {
    const sim = settled();
    sim.gateways.get("A")!.alive = false;
    sim.gateways.get("B")!.alive = false;
    sim.run(2000);
    expect(sim.ctl.activeFor(NET)).toBeNull();
    expect(sim.ctl.lookup(ip("10.0.0.7"))).toEqual({ gatewayId: null, prefix: NET, reason: "no-healthy-gateway" });
    expect(sim.ctl.lookup(ip("10.9.0.7"))).toEqual({ gatewayId: null, prefix: null, reason: "no-route" });
    // A is detected first and traffic moves to B (not yet detected), then B goes too.
    expect(sim.switchLines().slice(-2)).toEqual([
      "failover: group=A,B prefixes=1 from=A to=B reason=active-down first=10.0.0.0/24",
      "failover: group=A,B prefixes=1 from=B to=none reason=active-down first=10.0.0.0/24",
    ]);
    sim.gateways.get("A")!.alive = true;
    sim.run(1000);
    expect(sim.decisions.at(-1)).toMatchObject({ from: null, to: "A", reason: "recovered" });
  });

  test("route changes: idempotent, keep the active choice, route-removed when it goes", () => {
    const sim = settled();
    expect(sim.setRoutes(two())).toEqual([]);
    expect(sim.setRoutes(two(500, 1))).toEqual([]);
    expect(sim.ctl.activeFor(NET)).toBe("A");
    expect(sim.setRoutes([{ prefix: NET, candidates: [{ gatewayId: "B", priority: 1, draining: false }] }])).toEqual([
      { group: "B", prefixes: [NET], from: "A", to: "B", reason: "route-removed", at: sim.t },
    ]);
    expect(sim.setRoutes([])).toEqual([{ group: "B", prefixes: [NET], from: "B", to: null, reason: "route-removed", at: sim.t }]);
    expect(sim.ctl.status()).toEqual([]);
  });

  test("status: per prefix active, candidates with health, last switch; JSON-clean", () => {
    const sim = settled();
    const st = sim.ctl.status();
    expect(st).toHaveLength(1);
    expect(st[0]!.active).toBe("A");
    expect(st[0]!.effective).toEqual({ gatewayId: "A", prefix: NET, viaPrefix: NET });
    expect(st[0]!.lastSwitch).toMatchObject({ from: null, to: "A", reason: "initial" });
    expect(st[0]!.candidates.map((c) => [c.gatewayId, c.state, c.healthy, c.own])).toEqual([
      ["A", "up", true, true],
      ["B", "up", true, true],
    ]);
    expect(st[0]!.candidates[0]!.rttMs).toBeCloseTo(5, 5);
    expect(JSON.parse(JSON.stringify(st))).toEqual(st);
  });

  test("routesFromNetMap groups rows by prefix", () => {
    expect(
      routesFromNetMap([
        { prefix: NET, via: "A", priority: 100, draining: false, withdrawn: false, metricHint: 100 },
        { prefix: NET, via: "B", priority: 50, draining: true, withdrawn: false, metricHint: 1050 },
      ]),
    ).toEqual([
      { prefix: NET, candidates: [ { gatewayId: "A", priority: 100, draining: false }, { gatewayId: "B", priority: 50, draining: true } ] },
    ]);
  });
});

describe("overlaps: /24 vs /16", () => {
  const wide = { gatewayId: "W", priority: 1, draining: false };
  const narrow = { gatewayId: "N", priority: 100, draining: false };
  /** Policy lets the sender reach the /24 through W: the compiler lists W on the /24 too. */
  const allowed = [
    { prefix: "10.0.0.0/16", candidates: [wide] },
    { prefix: "10.0.1.0/24", candidates: [narrow, wide] },
  ];
  /** Policy does not: the /24 names N only. */
  const denied = [
    { prefix: "10.0.0.0/16", candidates: [wide] },
    { prefix: "10.0.1.0/24", candidates: [narrow] },
  ];

  function overlap(routes: typeof allowed): Sim {
    const sim = new Sim();
    // W answers first and has the better priority: the /24 must still go to N.
    sim.gateway("W", 2);
    sim.gateway("N", 9);
    sim.setRoutes(routes);
    sim.run(1000);
    return sim;
  }

  test("the /24 wins while healthy, whatever the /16 gateway's priority", () => {
    for (const routes of [allowed, denied]) {
      const sim = overlap(routes);
      expect(sim.ctl.activeFor("10.0.1.0/24")).toBe("N");
      expect(sim.ctl.lookup(ip("10.0.1.5"))).toEqual({ gatewayId: "N", prefix: "10.0.1.0/24", viaPrefix: "10.0.1.0/24" });
      expect(sim.ctl.lookup(ip("10.0.2.5"))).toEqual({ gatewayId: "W", prefix: "10.0.0.0/16", viaPrefix: "10.0.0.0/16" });
    }
  });

  test("the /24 fails: fall back to the /16 gateway when policy allows it, and back when it returns", () => {
    const sim = overlap(allowed);
    sim.pingTo("10.0.1.5");
    sim.gateways.get("N")!.alive = false;
    sim.run(2000);
    expect(sim.ctl.activeFor("10.0.1.0/24")).toBeNull();
    expect(sim.ctl.lookup(ip("10.0.1.5"))).toEqual({ gatewayId: "W", prefix: "10.0.1.0/24", viaPrefix: "10.0.0.0/16" });
    expect(sim.longestOutageMs()).toBeLessThanOrEqual(610);
    const st = sim.ctl.status().find((s) => s.prefix === "10.0.1.0/24")!;
    expect(st.candidates.map((c) => [c.gatewayId, c.own])).toEqual([["N", true], ["W", false]]);
    expect(st.effective).toMatchObject({ gatewayId: "W", viaPrefix: "10.0.0.0/16" });
    sim.gateways.get("N")!.alive = true;
    sim.run(1000);
    expect(sim.ctl.lookup(ip("10.0.1.5")).gatewayId).toBe("N");
    expect(sim.decisions.at(-1)).toMatchObject({ group: "N", prefixes: ["10.0.1.0/24"], from: null, to: "N", reason: "recovered" });
  });

  test("the /24 fails and policy does not allow it through the /16: fail closed", () => {
    const sim = overlap(denied);
    sim.gateways.get("N")!.alive = false;
    sim.run(2000);
    expect(sim.ctl.lookup(ip("10.0.1.5"))).toEqual({ gatewayId: null, prefix: "10.0.1.0/24", reason: "no-healthy-gateway" });
    expect(sim.ctl.lookup(ip("10.0.2.5")).gatewayId).toBe("W");
  });

  test("the /16 fails: the /24 is untouched, the rest of the /16 fails closed", () => {
    const sim = overlap(allowed);
    sim.gateways.get("W")!.alive = false;
    sim.run(2000);
    expect(sim.ctl.lookup(ip("10.0.1.5")).gatewayId).toBe("N");
    expect(sim.ctl.lookup(ip("10.0.2.5"))).toEqual({ gatewayId: null, prefix: "10.0.0.0/16", reason: "no-healthy-gateway" });
    expect(sim.decisions.filter((d) => d.prefixes.includes("10.0.1.0/24")).map((d) => d.reason)).toEqual(["initial"]);
  });

  test("a /16 withdrawal covers the /24 fallback too", () => {
    const sim = overlap(allowed);
    sim.gateways.get("N")!.alive = false;
    sim.run(2000);
    sim.record(sim.ctl.setWithdrawn("W", ["10.0.0.0/16"]));
    expect(sim.ctl.lookup(ip("10.0.1.5")).gatewayId).toBeNull();
  });

  test("forwardingTable rows give the same answers as lookup", () => {
    const sim = overlap(allowed);
    sim.gateways.get("N")!.alive = false;
    sim.run(2000);
    expect(sim.ctl.forwardingTable()).toEqual([
      { prefix: "10.0.0.0/16", result: { gatewayId: "W", prefix: "10.0.0.0/16", viaPrefix: "10.0.0.0/16" } },
      { prefix: "10.0.1.0/24", result: { gatewayId: "W", prefix: "10.0.1.0/24", viaPrefix: "10.0.0.0/16" } },
    ]);
  });
});

test("IPv6 prefixes work the same way", () => {
  const ctl = new FailoverController({ now: () => 0, logger: silentLogger, sendProbe: () => {} });
  ctl.setRoutes([{ prefix: "fd00:1::/64", candidates: [{ gatewayId: "A", priority: 1, draining: false }] }]);
  expect(ctl.onProbeReply("A", 1)).toEqual([{ group: "A", prefixes: ["fd00:1::/64"], from: null, to: "A", reason: "initial", at: 0 }]);
  expect(ctl.lookup(ip("fd00:1::9")).gatewayId).toBe("A");
  expect(ctl.lookup(ip("10.0.0.1")).gatewayId).toBeNull();
});
