/**
 * @module test/policy/compile.test
 * Targeted NetMap rules, one per semantic promise in model.ts: inactive systems, gateway
 * permission, no leaks to the gateway itself or to its other subnets, the overlay carved out
 * of 0.0.0.0/0, receivers not initiating, failover candidates, filters, trust, denies.
 */
import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import { compile, compileAll } from "../../core/policy/compile.ts";
import { decide } from "../../core/policy/evaluate.ts";
import type { GatewayAccessPolicy, PolicyState } from "../../core/policy/model.ts";
import { gatewayRulesPermit, NetMapSchema, netMapJson, rulesPermit } from "../../core/policy/netmap.ts";
import { compiledVerdict } from "./arbitrary.ts";
import { MONDAY_10, office, SATURDAY_10, system } from "./fixtures.ts";

const now = MONDAY_10;

function withSystems(state: PolicyState, edit: (id: string) => Partial<PolicyState["systems"][number]> | null): PolicyState {
  return { ...state, systems: state.systems.map((s) => ({ ...s, ...(edit(s.id) ?? {}) })) };
}

const gp = (patch: Partial<GatewayAccessPolicy>): GatewayAccessPolicy => ({
  id: "p",
  name: "p",
  enabled: true,
  senderTags: ["dev"],
  gateways: [{ systemId: "G982V", subnets: ["172.26.0.0/20"] }],
  ...patch,
});

describe("compile", () => {
  test("a client gets the gateway as a peer, a route and outbound rules; the gateway gets forwarding rules", () => {
    const maps = compileAll(office(), { now });
    const laptop = maps.get("LAPT1")!;
    expect(v.safeParse(NetMapSchema, laptop).success).toBe(true);
    expect(laptop.peers.map((p) => p.id)).toEqual(["DBSRV", "G982V"]);
    const gw = laptop.peers.find((p) => p.id === "G982V")!;
    expect(gw.allowedIps).toEqual(["100.64.0.3/32", "172.26.0.0/20"]);
    expect(gw.gatewayFor).toEqual(["172.26.0.0/20"]);
    expect(gw.dnsNames).toEqual(["g982v-box.waygate", "g982v.id.waygate"]);
    expect(laptop.routes).toEqual([{ prefix: "172.26.0.0/20", via: "G982V", priority: 100, draining: false, withdrawn: false, metricHint: 100 }]);
    const gateway = maps.get("G982V")!;
    expect(gateway.self.gateway?.subnets.map((s) => [s.prefix, s.nat])).toEqual([
      ["10.9.0.0/16", false],
      ["172.26.0.0/20", true],
    ]);
    expect(gateway.gatewayRules).toEqual([
      {
        action: "allow",
        sender: "LAPT1",
        senderAddress: "100.64.0.1",
        subnet: "172.26.0.0/20",
        nat: true,
        dst: "172.26.0.0/20",
        protocol: "any",
        policy: "office-lan",
      },
    ]);
    expect(gateway.peers.map((p) => [p.id, p.allowedIps])).toEqual([["LAPT1", ["100.64.0.1/32"]]]);
    // GW002 serves the subnet too but no policy names it.
    expect(maps.get("GW002")!.peers).toEqual([]);
  });

  test("disabled and unapproved systems get an empty NetMap and are nobody's peer", () => {
    for (const patch of [{ enabled: false }, { approved: false }]) {
      const maps = compileAll(withSystems(office(), (id) => (id === "LAPT1" ? patch : null)), { now });
      const laptop = maps.get("LAPT1")!;
      expect(laptop.self.active).toBe(false);
      expect([laptop.peers, laptop.routes, laptop.inboundRules, laptop.outboundRules, laptop.gatewayRules]).toEqual([[], [], [], [], []]);
      for (const [, m] of maps) expect(m.peers.some((p) => p.id === "LAPT1")).toBe(false);
      expect(maps.get("G982V")!.gatewayRules).toEqual([]);
    }
    const gatewayOff = compileAll(withSystems(office(), (id) => (id === "G982V" ? { enabled: false } : null)), { now });
    expect(gatewayOff.get("LAPT1")!.routes).toEqual([]);
  });

  test("a gateway subnet only counts while the system is allowed to act as a gateway", () => {
    const state = withSystems(office(), (id) => (id === "G982V" ? { allowedAsGateway: false } : null));
    const maps = compileAll(state, { now });
    expect(maps.get("LAPT1")!.routes).toEqual([]);
    expect(maps.get("LAPT1")!.peers.map((p) => p.id)).toEqual(["DBSRV"]);
    expect(maps.get("G982V")!.self.gateway).toBeUndefined();
    expect(decide(state, "LAPT1", "172.26.0.250", "tcp", 443, now).reason).toBe("system G982V is not allowed to act as a gateway");
  });

  test("a subnet grant does not reach the gateway itself, nor its other subnets", () => {
    const state = office();
    const maps = compileAll(state, { now });
    // The gateway's own virtual address: no direct policy, so nothing.
    expect(compiledVerdict(maps, { sender: "LAPT1", destination: "100.64.0.3", protocol: "tcp", port: 22 })).toEqual({ direct: false, gateways: [] });
    expect(decide(state, "LAPT1", "100.64.0.3", "tcp", 22, now).allowed).toBe(false);
    // Its other subnet.
    expect(compiledVerdict(maps, { sender: "LAPT1", destination: "10.9.0.5", protocol: "tcp", port: 22 })).toEqual({ direct: false, gateways: [] });
    expect(maps.get("LAPT1")!.outboundRules.some((r) => r.dst.startsWith("10.9."))).toBe(false);
    // Inside the granted one.
    expect(compiledVerdict(maps, { sender: "LAPT1", destination: "172.26.15.255", protocol: "udp", port: 53 })).toEqual({ direct: false, gateways: ["G982V"] });
  });

  test("0.0.0.0/0 through a gateway never covers the overlay network", () => {
    const state = withSystems(
      office({ gatewayPolicies: [gp({ id: "exit", gateways: [{ systemId: "G982V", subnets: ["0.0.0.0/0"] }] })] }),
      (id) => (id === "G982V" ? { gatewaySubnets: [{ prefix: "0.0.0.0/0", nat: true, source: "manual" }] } : null),
    );
    const maps = compileAll(state, { now });
    const laptop = maps.get("LAPT1")!;
    expect(laptop.outboundRules.filter((r) => r.peer === "G982V").map((r) => r.dst)).toEqual(["0.0.0.0-100.63.255.255", "100.128.0.0-255.255.255.255"]);
    expect(laptop.routes.map((r) => r.prefix)).toEqual([
      "0.0.0.0/2",
      "100.0.0.0/10",
      "100.128.0.0/9",
      "101.0.0.0/8",
      "102.0.0.0/7",
      "104.0.0.0/5",
      "112.0.0.0/4",
      "128.0.0.0/1",
      "64.0.0.0/3",
      "96.0.0.0/6",
    ]);
    expect(compiledVerdict(maps, { sender: "LAPT1", destination: "8.8.8.8", protocol: "udp", port: 53 }).gateways).toEqual(["G982V"]);
    expect(compiledVerdict(maps, { sender: "LAPT1", destination: "100.64.0.3", protocol: "tcp", port: 22 }).gateways).toEqual([]);
    expect(maps.get("G982V")!.gatewayRules.map((r) => r.dst)).toEqual(["0.0.0.0-100.63.255.255", "100.128.0.0-255.255.255.255"]);
  });

  test("direct policies: senders initiate, receivers do not; both list each other as peers", () => {
    const maps = compileAll(office(), { now });
    const laptop = maps.get("LAPT1")!;
    const db = maps.get("DBSRV")!;
    expect(laptop.outboundRules.filter((r) => r.peer === "DBSRV")).toEqual([
      { action: "allow", peer: "DBSRV", src: "100.64.0.1/32", dst: "100.64.0.2/32", protocol: "tcp", ports: "5432", policy: "dev-db" },
    ]);
    expect(db.inboundRules).toEqual([
      { action: "allow", peer: "LAPT1", src: "100.64.0.1/32", dst: "100.64.0.2/32", protocol: "tcp", ports: "5432", policy: "dev-db" },
    ]);
    expect(db.outboundRules).toEqual([]);
    expect(db.peers.map((p) => p.id)).toEqual(["LAPT1"]);
    const forward = { sender: "LAPT1", destination: "100.64.0.2", protocol: "tcp" as const, port: 5432 };
    expect(compiledVerdict(maps, forward).direct).toBe(true);
    expect(compiledVerdict(maps, { ...forward, port: 22 }).direct).toBe(false);
    expect(compiledVerdict(maps, { sender: "DBSRV", destination: "100.64.0.1", protocol: "tcp", port: 5432 }).direct).toBe(false);
    expect(laptop.peers.find((p) => p.id === "DBSRV")!.endpoint).toBeUndefined();
    expect(db.peers.find((p) => p.id === "LAPT1")!.endpoint).toBe("203.0.113.9:41000");
  });

  test("several gateways for one subnet: every one is a route candidate, with priority and draining", () => {
    const state = office({
      gatewayPolicies: [gp({ id: "lan", gateways: [{ systemId: "G982V", subnets: ["172.26.0.0/20"] }, { systemId: "GW002", subnets: ["172.26.0.0/20"] }] })],
    });
    const laptop = compile(state, "LAPT1", { now });
    expect(laptop.routes).toEqual([
      { prefix: "172.26.0.0/20", via: "G982V", priority: 100, draining: false, withdrawn: false, metricHint: 100 },
      { prefix: "172.26.0.0/20", via: "GW002", priority: 200, draining: true, withdrawn: false, metricHint: 1200 },
    ]);
    expect(decide(state, "LAPT1", "172.26.1.1", "tcp", 80, now)).toMatchObject({ allowed: true, via: "G982V", gateways: ["G982V", "GW002"] });
  });

  test("an unhealthy subnet keeps its routes, marked withdrawn; allowed IPs, rules and the oracle unchanged", () => {
    const both = gp({ id: "lan", gateways: [{ systemId: "G982V", subnets: ["172.26.0.0/20"] }, { systemId: "GW002", subnets: ["172.26.0.0/20"] }] });
    const healthy = office({ gatewayPolicies: [both] });
    const sick = (ids: string[]) =>
      withSystems(healthy, (id) => {
        if (!ids.includes(id)) return null;
        const s = healthy.systems.find((x) => x.id === id)!;
        return { gatewaySubnets: s.gatewaySubnets.map((g) => (g.prefix === "172.26.0.0/20" ? { ...g, healthy: false } : g)) };
      });
    const before = compileAll(healthy, { now });
    const one = compileAll(sick(["G982V"]), { now });
    expect(one.get("LAPT1")!.routes).toEqual([
      { prefix: "172.26.0.0/20", via: "G982V", priority: 100, draining: false, withdrawn: true, metricHint: 100 },
      { prefix: "172.26.0.0/20", via: "GW002", priority: 200, draining: true, withdrawn: false, metricHint: 1200 },
    ]);
    // Everything but the flag is as before: peers (allowed IPs keep the subnet, so replies still
    // validate), every rule, and the gateways' own NetMaps.
    const strip = (m: ReturnType<typeof compile>) => ({ ...m, routes: m.routes.map((r) => ({ ...r, withdrawn: false })) });
    for (const id of ["LAPT1", "DBSRV", "G982V", "GW002"]) expect(strip(one.get(id)!)).toEqual(before.get(id)!);
    expect(one.get("LAPT1")!.peers.find((p) => p.id === "G982V")!.allowedIps).toEqual(["100.64.0.3/32", "172.26.0.0/20"]);
    expect(v.safeParse(NetMapSchema, one.get("LAPT1")!).success).toBe(true);
    // Every gateway of the subnet unhealthy: the route is still there (the client keeps it on its TUN).
    const all = compile(sick(["G982V", "GW002"]), "LAPT1", { now });
    expect(all.routes.map((r) => [r.prefix, r.via, r.withdrawn])).toEqual([
      ["172.26.0.0/20", "G982V", true],
      ["172.26.0.0/20", "GW002", true],
    ]);
    // Health is not policy: the oracle still allows, through both gateways.
    expect(decide(sick(["G982V", "GW002"]), "LAPT1", "172.26.1.1", "tcp", 80, now)).toMatchObject({ allowed: true, gateways: ["G982V", "GW002"] });
  });

  test("withdrawn follows overlap: a narrower route is withdrawn when a served subnet overlapping it is unhealthy", () => {
    const state = withSystems(
      office({ gatewayPolicies: [gp({ id: "f", gateways: [{ systemId: "G982V", subnets: ["10.9.0.0/16"] }], subnetFilter: [{ destination: "10.9.4.0/24", protocol: "any" }] })] }),
      (id) => (id === "G982V" ? { gatewaySubnets: [{ prefix: "172.26.0.0/20", nat: true, source: "discovered" }, { prefix: "10.9.0.0/16", nat: false, source: "manual", healthy: false }] } : null),
    );
    expect(compile(state, "LAPT1", { now }).routes.map((r) => [r.prefix, r.withdrawn])).toEqual([["10.9.4.0/24", true]]);
    // The other subnet of the same gateway is unaffected.
    const other = withSystems(office(), (id) =>
      id === "G982V" ? { gatewaySubnets: [{ prefix: "172.26.0.0/20", nat: true, source: "discovered" }, { prefix: "10.9.0.0/16", nat: false, source: "manual", healthy: false }] } : null,
    );
    expect(compile(other, "LAPT1", { now }).routes.map((r) => [r.prefix, r.withdrawn])).toEqual([["172.26.0.0/20", false]]);
  });

  test("a narrower route through one gateway still lists the gateway whose wider grant covers it", () => {
    const state = withSystems(
      office({
        gatewayPolicies: [
          gp({ id: "wide", gateways: [{ systemId: "G982V", subnets: ["10.9.0.0/16"] }] }),
          gp({ id: "narrow", gateways: [{ systemId: "GW002", subnets: ["10.9.1.0/24"] }], subnetFilter: [{ destination: "10.9.1.0/24", protocol: "tcp", ports: "22" }] }),
        ],
      }),
      (id) => (id === "GW002" ? { gatewaySubnets: [{ prefix: "10.9.1.0/24", nat: true, source: "manual" }] } : null),
    );
    const maps = compileAll(state, { now });
    expect(maps.get("LAPT1")!.routes.map((r) => `${r.prefix} via ${r.via}`)).toEqual([
      "10.9.0.0/16 via G982V",
      "10.9.1.0/24 via G982V",
      "10.9.1.0/24 via GW002",
    ]);
    // udp to 10.9.1.5 only G982V may carry; the longest match still offers it.
    expect(compiledVerdict(maps, { sender: "LAPT1", destination: "10.9.1.5", protocol: "udp", port: 53 }).gateways).toEqual(["G982V"]);
    expect(compiledVerdict(maps, { sender: "LAPT1", destination: "10.9.1.5", protocol: "tcp", port: 22 }).gateways).toEqual(["G982V", "GW002"]);
  });

  test("subnet filters: single IPs, ranges and ports narrow the grant", () => {
    const state = office({
      gatewayPolicies: [
        gp({
          subnetFilter: [
            { destination: "172.26.0.5", protocol: "tcp", ports: "22" },
            { destination: "172.26.0.10-172.26.0.20", protocol: "udp", ports: "1000-2000" },
          ],
        }),
      ],
    });
    const maps = compileAll(state, { now });
    const gw = maps.get("G982V")!.gatewayRules;
    expect(gw.map((r) => [r.dst, r.protocol, r.ports])).toEqual([
      ["172.26.0.10-172.26.0.20", "udp", "1000-2000"],
      ["172.26.0.5/32", "tcp", "22"],
    ]);
    const q = { sender: "LAPT1", src: "100.64.0.1" };
    expect(gatewayRulesPermit(gw, { ...q, dst: "172.26.0.5", protocol: "tcp", port: 22 })).toBe(true);
    expect(gatewayRulesPermit(gw, { ...q, dst: "172.26.0.5", protocol: "tcp", port: 23 })).toBe(false);
    expect(gatewayRulesPermit(gw, { ...q, dst: "172.26.0.15", protocol: "udp", port: 1500 })).toBe(true);
    expect(gatewayRulesPermit(gw, { ...q, dst: "172.26.0.21", protocol: "udp", port: 1500 })).toBe(false);
    expect(gatewayRulesPermit(gw, { ...q, src: "100.64.0.2", dst: "172.26.0.5", protocol: "tcp", port: 22 })).toBe(false);
    // Routes cover only what the filter lets through.
    expect(maps.get("LAPT1")!.routes.map((r) => r.prefix)).toEqual([
      "172.26.0.10/31",
      "172.26.0.12/30",
      "172.26.0.16/30",
      "172.26.0.20/32",
      "172.26.0.5/32",
    ]);
  });

  test("trust: public IP and time windows are evaluated at compile time", () => {
    const trusted = (trust: GatewayAccessPolicy["trust"]) => office({ gatewayPolicies: [gp({ trust })] });
    const routes = (state: PolicyState, at: number) => compile(state, "LAPT1", { now: at }).routes.length;
    expect(routes(trusted({ publicIpWithin: ["203.0.113.0/24"] }), now)).toBe(1);
    expect(routes(trusted({ publicIpWithin: ["198.51.100.0/24"] }), now)).toBe(0);
    const hours = trusted({ timeWindows: [{ days: ["mon", "tue", "wed", "thu", "fri"], start: "08:00", end: "18:00", utcOffsetMinutes: 0 }] });
    expect(routes(hours, MONDAY_10)).toBe(1);
    expect(routes(hours, SATURDAY_10)).toBe(0);
    expect(compile(hours, "G982V", { now: SATURDAY_10 }).gatewayRules).toEqual([]);
  });

  test("deny policies win: a whole-subnet deny removes the grant, a filtered deny becomes deny rules", () => {
    const whole = office({
      gatewayPolicies: [gp({ id: "allow" }), gp({ id: "deny", action: "deny", gateways: [{ systemId: "G982V", subnets: ["172.26.0.0/24"] }] })],
    });
    const maps = compileAll(whole, { now });
    expect(maps.get("G982V")!.gatewayRules.map((r) => r.dst)).toEqual(["172.26.1.0-172.26.15.255"]);
    const filtered = office({
      gatewayPolicies: [gp({ id: "allow" }), gp({ id: "deny", action: "deny", subnetFilter: [{ destination: "172.26.0.5", protocol: "tcp", ports: "22" }] })],
    });
    const fm = compileAll(filtered, { now });
    expect(fm.get("G982V")!.gatewayRules.map((r) => [r.action, r.dst])).toEqual([
      ["allow", "172.26.0.0/20"],
      ["deny", "172.26.0.5/32"],
    ]);
    expect(rulesPermit(fm.get("LAPT1")!.outboundRules, { peer: "G982V", src: "100.64.0.1", dst: "172.26.0.5", protocol: "tcp", port: 22 })).toBe(false);
    expect(rulesPermit(fm.get("LAPT1")!.outboundRules, { peer: "G982V", src: "100.64.0.1", dst: "172.26.0.5", protocol: "tcp", port: 80 })).toBe(true);
    const directDeny: PolicyState = {
      ...office(),
      directAccessPolicies: [
        ...office().directAccessPolicies,
        { id: "no-db", name: "no db", enabled: true, action: "deny", fromTags: ["dev"], toTags: ["db"], acls: [{ protocol: "any" }] },
      ],
    };
    expect(compile(directDeny, "DBSRV", { now }).peers).toEqual([]);
  });

  test("a gateway deny on a subnet containing the overlay never blocks direct traffic", () => {
    // S0004 (dev) serves 96.0.0.0/4, which contains the overlay 100.64.0.0/10. The deny on that
    // subnet governs forwarded traffic only: direct traffic to S0004's own address (and to other
    // overlay addresses) is decided by direct policies alone (model.ts rule 5).
    const state: PolicyState = {
      network: "100.64.0.0/10",
      systems: [
        system("S0002", 3, { tags: ["ops"] }),
        system("S0004", 5, {
          tags: ["dev"],
          allowedAsGateway: true,
          gatewaySubnets: [{ prefix: "96.0.0.0/4", nat: false, source: "manual" }],
        }),
        system("S0005", 6, { tags: ["dev"] }),
      ],
      directAccessPolicies: [{ id: "d0", name: "ops to dev", enabled: true, fromTags: ["ops"], toTags: ["dev"], acls: [{ protocol: "icmp" }] }],
      gatewayAccessPolicies: [
        gp({ id: "g0", senderTags: ["ops"], gateways: [{ systemId: "S0004", subnets: ["96.0.0.0/4"] }] }),
        gp({
          id: "g1",
          action: "deny",
          senderTags: ["ops"],
          gateways: [{ systemId: "S0004", subnets: ["96.0.0.0/4"] }],
          subnetFilter: [{ destination: "0.0.0.0/0", protocol: "icmp" }],
        }),
      ],
    };
    const maps = compileAll(state, { now });
    for (const destination of ["100.64.0.5", "100.64.0.6"]) {
      const p = { sender: "S0002", destination, protocol: "icmp" as const, port: undefined };
      const d = decide(state, p.sender, p.destination, p.protocol, p.port, now);
      expect(d.allowed).toBe(true);
      expect(d.path).toBe("direct");
      expect(compiledVerdict(maps, p)).toEqual({ direct: true, gateways: [] });
    }
    // The deny still applies to forwarded traffic outside the overlay, and only there.
    const forwarded = { sender: "S0002", destination: "99.1.2.3", protocol: "icmp" as const, port: undefined };
    expect(decide(state, forwarded.sender, forwarded.destination, forwarded.protocol, forwarded.port, now).allowed).toBe(false);
    expect(compiledVerdict(maps, forwarded)).toEqual({ direct: false, gateways: [] });
    expect(compiledVerdict(maps, { ...forwarded, protocol: "tcp", port: 443 })).toEqual({ direct: false, gateways: ["S0004"] });
    const denyDsts = (rules: readonly { action: string; dst: string }[]) => rules.filter((r) => r.action === "deny").map((r) => r.dst);
    expect(denyDsts(maps.get("S0002")!.outboundRules)).toEqual(["100.128.0.0-111.255.255.255", "96.0.0.0-100.63.255.255"]);
    expect(denyDsts(maps.get("S0004")!.gatewayRules)).toEqual(["100.128.0.0-111.255.255.255", "96.0.0.0-100.63.255.255"]);
  });

  test("IPv6 gateway subnets and destinations", () => {
    const state = withSystems(
      office({ gatewayPolicies: [gp({ gateways: [{ systemId: "G982V", subnets: ["fd00:1::/64"] }] })] }),
      (id) => (id === "G982V" ? { gatewaySubnets: [{ prefix: "fd00:1::/48", nat: false, source: "manual" }] } : null),
    );
    const maps = compileAll(state, { now });
    expect(maps.get("LAPT1")!.routes.map((r) => r.prefix)).toEqual(["fd00:1::/64"]);
    expect(compiledVerdict(maps, { sender: "LAPT1", destination: "fd00:1::5", protocol: "tcp", port: 443 }).gateways).toEqual(["G982V"]);
    expect(compiledVerdict(maps, { sender: "LAPT1", destination: "fd00:1:0:1::5", protocol: "tcp", port: 443 }).gateways).toEqual([]);
  });

  test("byte-equal JSON for equal input; unknown ids throw E_POLICY_UNKNOWN_SYSTEM", () => {
    expect(netMapJson(compile(office(), "LAPT1", { now }))).toBe(netMapJson(compile(structuredClone(office()), "LAPT1", { now })));
    expect(() => compile(office(), "NOPE0", { now })).toThrow(expect.objectContaining({ code: "E_POLICY_UNKNOWN_SYSTEM" }));
  });

  test("a system is never its own peer or gateway", () => {
    const state: PolicyState = {
      ...office({ gatewayPolicies: [gp({ senderTags: ["gw"] })] }),
      directAccessPolicies: [{ id: "self", name: "self", enabled: true, fromTags: ["gw"], toTags: ["gw"], acls: [{ protocol: "any" }] }],
    };
    const g = compile(state, "G982V", { now });
    expect(g.peers.map((p) => p.id)).toEqual(["GW002"]);
    expect(g.routes).toEqual([]);
    expect(compile(state, "GW002", { now }).routes.map((r) => r.via)).toEqual(["G982V"]);
  });
});
