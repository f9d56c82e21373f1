/**
 * @module test/agent/failover-config
 * The agent's failover glue: settings and upstream-host checks, the engine's `netmap` message
 * (routes the Router puts on the TUN, nothing inside the overlay, nothing for an inactive system),
 * the per-subnet status with keys turned back into system ids, DNS's `activeGatewayFrom`, and
 * which interface a gateway's upstream monitor watches. Then the packet Worker's engine
 * (platform/linux/device-engine.ts) on the in-memory network and a fake clock: a `netmap`
 * message starts failover (status in stats, ticks every <= 50 ms; before the first probe answers, packets
 * wait behind the provisional gateway's handshake rather than being dropped), a gateway's `health` message
 * withdraws the subnet in its probe replies and the client fails closed; per-prefix rows cross threads
 * only until acknowledged (`failoverAck`), per-group data every poll. And the main thread's side
 * (platform/linux/agent-failover.ts): it acknowledges rows, rebuilds per-subnet status with live
 * health only when asked, and asks again when it holds no rows for the engine's revision.
 * A route the NetMap marks withdrawn (the gateway reported the subnet unhealthy) stays on the TUN
 * and in the message, is never carried provisionally, and fails closed while its gateway answers.
 */
import { describe, expect, test } from "bun:test";
import {
  activeGatewayFrom,
  type FailoverStatusRow,
  failoverNetMapMessage,
  FailoverSettingsError,
  parseFailoverSettings,
  parseUpstreamHosts,
  subnetFailoverStatus,
  upstreamSubnets,
  withLiveHealth,
} from "../../core/agent/failover-config.ts";
import { routerConfig } from "../../core/agent/gateway-config.ts";
import { startAgentFailover } from "../../platform/linux/agent-failover.ts";
import type { PacketEngine } from "../../core/dataplane/ports.ts";
import { silentLogger } from "../../core/log.ts";
import createDeviceEngine, { type DeviceEngineStats } from "../../platform/linux/device-engine.ts";
import { MemoryNetwork, MemoryTun } from "../dataplane/memory.ts";
import { fakeClock } from "../wire/helpers.ts";
import { GW, gatewayPeer, keyPair, PEER2, plainPeer, sampleNetMap, SELF } from "./fixtures.ts";

const GW2 = keyPair(4);

describe("parseFailoverSettings / parseUpstreamHosts", () => {
  test("defaults and valid values pass; a bad one names its field with E_CONFIG_INVALID", () => {
    expect(parseFailoverSettings(undefined)).toEqual({});
    expect(parseFailoverSettings({ preempt: true, preemptHoldMs: 0, probeIntervalMs: 200, missedProbes: 3, recoverProbes: 2 })).toEqual({
      preempt: true,
      preemptHoldMs: 0,
      probeIntervalMs: 200,
      missedProbes: 3,
      recoverProbes: 2,
    });
    for (const [bad, field] of [
      [{ missedProbes: 0 }, "missedProbes"],
      [{ probeIntervalMs: 5 }, "probeIntervalMs"],
      [{ preempt: "yes" }, "preempt"],
      [{ preemptHoldMs: -1 }, "preemptHoldMs"],
    ] as const) {
      let err: unknown;
      try {
        parseFailoverSettings(bad);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FailoverSettingsError);
      expect((err as FailoverSettingsError).code).toBe("E_CONFIG_INVALID");
      expect((err as Error).message).toContain(field);
    }
    expect(() => parseFailoverSettings({ other: 1 })).toThrow(FailoverSettingsError);
  });

  test("upstream hosts: canonical subnet keys, address[:port] hosts, at most 8", () => {
    expect(parseUpstreamHosts(undefined)).toEqual({});
    expect(parseUpstreamHosts({ "172.26.0.9/20": ["172.26.0.250", "172.26.0.251:631", "172.26.0.250"], "fd00::/64": ["[fd00::10]:443"] })).toEqual({
      "172.26.0.0/20": ["172.26.0.250", "172.26.0.251:631"],
      "fd00::/64": ["[fd00::10]:443"],
    });
    expect(() => parseUpstreamHosts({ printer: ["172.26.0.250"] })).toThrow(/"printer" is not a subnet/);
    expect(() => parseUpstreamHosts({ "172.26.0.0/20": ["printer.local"] })).toThrow(/172\.26\.0\.0\/20: expected addresses/);
    expect(() => parseUpstreamHosts({ "172.26.0.0/20": Array.from({ length: 9 }, (_, i) => `172.26.0.${i + 1}`) })).toThrow(/at most 8/);
  });
});

describe("failoverNetMapMessage", () => {
  test("every peer's id and key, the routes the Router routes (nothing inside the overlay)", () => {
    const netmap = sampleNetMap();
    netmap.routes.push(
      { prefix: "100.64.5.0/24", via: "GW001", priority: 100, draining: false, withdrawn: false, metricHint: 100 },
      { prefix: "10.9.0.7/16", via: "PEER2", priority: 50, draining: true, withdrawn: false, metricHint: 1050 },
    );
    const m = failoverNetMapMessage(netmap);
    expect(m.type).toBe("netmap");
    expect(m.peers).toEqual([
      { id: "GW001", publicKey: GW.publicKey },
      { id: "PEER2", publicKey: PEER2.publicKey },
    ]);
    expect(m.routes).toEqual([
      { prefix: "192.168.50.0/24", via: "GW001", priority: 100, draining: false, withdrawn: false, metricHint: 100 },
      { prefix: "10.9.0.0/16", via: "PEER2", priority: 50, draining: true, withdrawn: false, metricHint: 1050 },
    ]);
  });

  test("an inactive system gets no peers and no routes", () => {
    const netmap = sampleNetMap();
    netmap.self.active = false;
    expect(failoverNetMapMessage(netmap)).toEqual({ type: "netmap", peers: [], routes: [] });
  });
});

const rows = (): FailoverStatusRow[] => [
  {
    prefix: "192.168.50.0/24",
    group: `${GW.publicKey},${GW2.publicKey}`,
    active: GW.publicKey,
    effective: { gatewayId: GW.publicKey, prefix: "192.168.50.0/24", viaPrefix: "192.168.50.0/24" },
    candidates: [
      { gatewayId: GW.publicKey, priority: 100, draining: false, own: true, state: "up", healthy: true, rttMs: 0.41234, missed: 0, upSinceMs: 1000.4 },
      { gatewayId: GW2.publicKey, priority: 100, draining: true, own: true, state: "withdrawn", healthy: false, rttMs: null, missed: 2, upSinceMs: null },
    ],
    lastSwitch: { group: `${GW.publicKey},${GW2.publicKey}`, prefixCount: 1, firstPrefix: "192.168.50.0/24", from: GW2.publicKey, to: GW.publicKey, reason: "withdrawn", at: 5000.6 },
  },
  {
    prefix: "10.0.0.0/16",
    active: null,
    effective: { gatewayId: null, prefix: "10.0.0.0/16", reason: "no-healthy-gateway" },
    candidates: [{ gatewayId: GW.publicKey, priority: 100, draining: false, own: true, state: "down", healthy: false, rttMs: 3, missed: 7, upSinceMs: null }],
    lastSwitch: { from: GW.publicKey, to: null, reason: "active-down", at: 6000 },
  },
  {
    prefix: "10.0.1.0/24",
    active: null,
    effective: { gatewayId: GW2.publicKey, prefix: "10.0.1.0/24", viaPrefix: "10.0.0.0/8" },
    candidates: [],
    lastSwitch: null,
  },
];

describe("subnetFailoverStatus / activeGatewayFrom", () => {
  const peers = [gatewayPeer(), plainPeer({ id: "GW002", name: "backup", publicKey: GW2.publicKey })];

  test("keys become system ids and names; times and RTT rounded; a key nobody names stays a key", () => {
    const s = subnetFailoverStatus(rows(), { peers });
    expect(s[0]).toEqual({
      prefix: "192.168.50.0/24",
      group: "GW001,GW002",
      active: "GW001",
      effective: { gateway: "GW001", via: "192.168.50.0/24", reason: null },
      candidates: [
        { id: "GW001", name: "router", priority: 100, draining: false, own: true, state: "up", healthy: true, rttMs: 0.41, missedProbes: 0, upSince: 1000 },
        { id: "GW002", name: "backup", priority: 100, draining: true, own: true, state: "withdrawn", healthy: false, rttMs: null, missedProbes: 2, upSince: null },
      ],
      lastSwitch: { from: "GW002", to: "GW001", reason: "withdrawn", at: 5001 },
    });
    expect(s[1]!.effective).toEqual({ gateway: null, via: null, reason: "no-healthy-gateway" });
    expect(s[1]!.lastSwitch).toEqual({ from: "GW001", to: null, reason: "active-down", at: 6000 });
    const unnamed = subnetFailoverStatus(rows(), { peers: [gatewayPeer()] });
    expect(unnamed[0]!.candidates[1]!.id).toBe(GW2.publicKey);
    expect(unnamed[0]!.candidates[1]!.name).toBe("");
  });

  test("DNS's gateway: the active one, a covering route's, none when none is healthy, else the fallback", () => {
    const f = activeGatewayFrom(subnetFailoverStatus(rows(), { peers }), (p) => `fallback:${p}`);
    expect(f("192.168.50.0/24")).toBe("GW001");
    expect(f("192.168.50.7/24")).toBe("GW001"); // canonicalised
    expect(f("10.0.0.0/16")).toBeNull();
    expect(f("10.0.1.0/24")).toBe("GW002");
    expect(f("172.16.0.0/12")).toBe("fallback:172.16.0.0/12");
    expect(activeGatewayFrom(null, () => "x")("10.0.0.0/16")).toBe("x");
  });
});

describe("withLiveHealth", () => {
  test("liveness, RTT, misses and up-since from the latest poll; withdrawn stays withdrawn; unknown gateways keep their values", () => {
    const live = [
      { gatewayId: GW.publicKey, liveness: "down" as const, rttMs: 9, missed: 5, replyStreak: 0, lastHeardMs: 1, upSinceMs: null, changedMs: 1 },
      { gatewayId: GW2.publicKey, liveness: "up" as const, rttMs: 2, missed: 0, replyStreak: 3, lastHeardMs: 1, upSinceMs: 7, changedMs: 1 },
    ];
    const out = withLiveHealth(rows(), live);
    expect(out[0]!.candidates).toEqual([
      { gatewayId: GW.publicKey, priority: 100, draining: false, own: true, state: "down", healthy: false, rttMs: 9, missed: 5, upSinceMs: null },
      { gatewayId: GW2.publicKey, priority: 100, draining: true, own: true, state: "withdrawn", healthy: false, rttMs: 2, missed: 0, upSinceMs: 7 },
    ]);
    expect(withLiveHealth(rows(), [])).toEqual(rows());
  });
});

const HOOK_CONTEXT = { revision: 1, source: "server" as const, previous: null };

describe("startAgentFailover (the main thread's side)", () => {
  test("acknowledges per-prefix rows, builds status on demand with live health, asks again when it lacks the revision's rows", async () => {
    const sent: unknown[] = [];
    const gateway = (liveness: "up" | "down") => [{ gatewayId: GW.publicKey, liveness, rttMs: 1, missed: 0, replyStreak: 2, lastHeardMs: 0, upSinceMs: 0, changedMs: 0 }];
    const base = { revision: 4, prefixCount: 3, groups: [], switches: 1, recent: [] };
    let next: unknown = { failover: { ...base, gateways: gateway("up"), prefixes: rows() } };
    const fo = startAgentFailover({
      engineControl: (m) => void sent.push(m),
      engineStats: async () => next,
      logger: silentLogger,
      pollMs: 3_600_000,
    });
    fo.hook(sampleNetMap([gatewayPeer(), plainPeer({ id: "GW002", name: "backup", publicKey: GW2.publicKey })]), HOOK_CONTEXT);
    expect(fo.status()).toBeNull();
    const first = await fo.refresh();
    expect(first!.map((r) => [r.prefix, r.group, r.active])).toEqual([
      ["192.168.50.0/24", "GW001,GW002", "GW001"],
      ["10.0.0.0/16", "10.0.0.0/16", null],
      ["10.0.1.0/24", "10.0.1.0/24", null],
    ]);
    expect(sent.at(-1)).toEqual({ type: "failoverAck", revision: 4 });
    expect(fo.activeGatewayFor("192.168.50.0/24")).toBe("GW001");
    // The next poll has no rows (same revision) and new health: status follows the health.
    next = { failover: { ...base, gateways: gateway("down") } };
    const second = await fo.refresh();
    expect(second![0]!.candidates[0]).toMatchObject({ id: "GW001", state: "down", healthy: false });
    expect(fo.status()).toBe(second);
    const acks = sent.length;
    // A revision it has no rows for (another reader took them): it asks the engine to send them again.
    next = { failover: { ...base, revision: 5, gateways: gateway("up") } };
    await fo.refresh();
    expect(sent.length).toBe(acks + 1);
    expect(sent.at(-1)).toEqual({ type: "failoverAck", revision: -1 });
    fo.stop();
  });
});

describe("upstreamSubnets", () => {
  test("one per prefix on its first placement; a down interface keeps its last placement; never placed: not watched", () => {
    const placedOn = new Map<string, string>();
    const first = upstreamSubnets(
      [
        { prefix: "172.26.0.0/20", lanInterface: "eth1" },
        { prefix: "10.0.0.0/16", lanInterface: "eth2" },
        { prefix: "10.0.0.0/16", lanInterface: "eth3" },
      ],
      [{ prefix: "192.168.9.0/24" }],
      placedOn,
      { "172.26.0.1/20": ["172.26.0.250"] },
    );
    expect(first).toEqual([
      { prefix: "172.26.0.0/20", interface: "eth1", hosts: ["172.26.0.250"] },
      { prefix: "10.0.0.0/16", interface: "eth2", hosts: [] },
    ]);
    // eth1 went down: discovery no longer lists it, the firewall skips the subnet.
    const later = upstreamSubnets([{ prefix: "10.0.0.0/16", lanInterface: "eth2" }], [{ prefix: "172.26.0.0/20" }, { prefix: "192.168.9.0/24" }], placedOn);
    expect(later).toEqual([
      { prefix: "10.0.0.0/16", interface: "eth2", hosts: [] },
      { prefix: "172.26.0.0/20", interface: "eth1", hosts: [] },
    ]);
  });
});

type Engine = PacketEngine & { control(m: unknown): void; stats(): DeviceEngineStats };

describe("the device engine's failover messages (in-memory network, fake clock)", () => {
  test("netmap starts failover; a gateway's health report withdraws the subnet; the client fails closed", () => {
    const clock = fakeClock();
    const net = new MemoryNetwork();
    const ep = { client: { address: "10.0.0.2", port: 51820 }, gw: { address: "10.0.0.1", port: 51820 } };
    const deps = (local: { address: string; port: number }, tun: MemoryTun) => ({ tun, bind: net.bind(local), now: clock.now, logger: silentLogger });
    const clientTun = new MemoryTun();
    const gatewayTun = new MemoryTun();
    const client = createDeviceEngine(
      {
        privateKey: SELF.privateKey,
        peers: [{ publicKey: GW.publicKey, endpoint: ep.gw, allowedIps: ["100.64.0.1/32", "192.168.50.0/24"] }],
        forceNoble: true,
        probeSource: "100.64.0.2",
      },
      deps(ep.client, clientTun),
    ) as unknown as Engine;
    const gateway = createDeviceEngine(
      { privateKey: GW.privateKey, peers: [{ publicKey: SELF.publicKey, endpoint: ep.client, allowedIps: ["100.64.0.2/32"] }], forceNoble: true, probeSource: "100.64.0.1" },
      deps(ep.gw, gatewayTun),
    ) as unknown as Engine;
    net.attach(ep.client, client);
    net.attach(ep.gw, gateway);

    expect(client.stats().failover).toBeUndefined();
    client.control(failoverNetMapMessage(sampleNetMap()));
    // Before the first probe answers, the subnet's packets wait behind the provisional gateway's
    // handshake instead of being dropped (a fresh agent's first ping is not lost).
    const packet = new Uint8Array(28);
    packet.set([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 100, 64, 0, 2, 192, 168, 50, 9, 8, 0, 0, 0, 0, 1, 0, 1]);
    client.handleTunPacket(packet);
    expect(client.stats().drops["no-healthy-gateway"]).toBeUndefined();
    const run = (ms: number) => {
      for (let t = 0; t < ms; t += 10) {
        clock.advance(10);
        const due = client.tick();
        expect(due).toBeLessThanOrEqual(50);
        gateway.tick();
        net.deliver();
      }
    };
    run(1000);
    expect(gatewayTun.packets.some((p) => p[19] === 9 && p[9] === 1)).toBe(true);
    let f = client.stats().failover!;
    expect(f.prefixes![0]).toMatchObject({ prefix: "192.168.50.0/24", active: GW.publicKey, lastSwitch: { from: null, to: GW.publicKey, reason: "initial" } });
    expect(f.switches).toBe(1);
    expect(f.groups).toMatchObject([{ id: GW.publicKey, active: GW.publicKey, prefixCount: 1, prefixes: ["192.168.50.0/24"] }]);
    expect(f.gateways.map((g) => [g.gatewayId, g.liveness])).toEqual([[GW.publicKey, "up"]]);
    // Acknowledged: the per-prefix rows stay out of stats until the revision moves.
    client.control({ type: "failoverAck", revision: f.revision });
    run(200);
    expect(client.stats().failover!.prefixes).toBeUndefined();
    expect(client.stats().failover!.revision).toBe(f.revision);

    gateway.control({ type: "health", withdrawn: ["192.168.50.0/24"], draining: false });
    expect(gateway.stats().drops).toBeDefined();
    run(500);
    f = client.stats().failover!;
    expect(f.prefixes![0]).toMatchObject({ active: null, effective: { gatewayId: null, reason: "no-healthy-gateway" } });
    expect(f.prefixes![0]!.candidates[0]).toMatchObject({ state: "withdrawn", healthy: false });
    expect(f.recent.map((d) => d.reason)).toEqual(["initial", "withdrawn"]);

    // Fail closed: a packet to the subnet is dropped and counted, not sent.
    const before = client.stats().drops["no-healthy-gateway"] ?? 0;
    client.handleTunPacket(packet);
    expect(client.stats().drops["no-healthy-gateway"]).toBe(before + 1);

    // The same NetMap again changes nothing; a NetMap without routes leaves none.
    client.control(failoverNetMapMessage(sampleNetMap()));
    expect(client.stats().failover!.switches).toBe(2);
    client.control(failoverNetMapMessage(sampleNetMap([plainPeer()])));
    expect(client.stats().failover!.prefixes).toEqual([]);
  });

  test("a NetMap route marked withdrawn: kept on the TUN, never carried, dropped and counted while the gateway answers", () => {
    const clock = fakeClock();
    const net = new MemoryNetwork();
    const ep = { client: { address: "10.0.0.2", port: 51820 }, gw: { address: "10.0.0.1", port: 51820 } };
    const deps = (local: { address: string; port: number }, tun: MemoryTun) => ({ tun, bind: net.bind(local), now: clock.now, logger: silentLogger });
    const gatewayTun = new MemoryTun();
    const client = createDeviceEngine(
      {
        privateKey: SELF.privateKey,
        peers: [{ publicKey: GW.publicKey, endpoint: ep.gw, allowedIps: ["100.64.0.1/32", "192.168.50.0/24"] }],
        forceNoble: true,
        probeSource: "100.64.0.2",
      },
      deps(ep.client, new MemoryTun()),
    ) as unknown as Engine;
    const gateway = createDeviceEngine(
      { privateKey: GW.privateKey, peers: [{ publicKey: SELF.publicKey, endpoint: ep.client, allowedIps: ["100.64.0.2/32"] }], forceNoble: true, probeSource: "100.64.0.1" },
      deps(ep.gw, gatewayTun),
    ) as unknown as Engine;
    net.attach(ep.client, client);
    net.attach(ep.gw, gateway);

    const netmap = sampleNetMap();
    netmap.routes = netmap.routes.map((r) => ({ ...r, withdrawn: true }));
    expect(netmap.routes.map((r) => r.prefix)).toEqual(["192.168.50.0/24"]);
    // The Router keeps the prefix on the TUN, the engine's message keeps the flag.
    expect(routerConfig(netmap, { tunnel: { interfaceName: "wg0", addresses: ["100.64.0.2/10"] } }).routes.map((r) => r.prefix)).toContain("192.168.50.0/24");
    const message = failoverNetMapMessage(netmap);
    expect(message.routes.map((r) => [r.prefix, r.withdrawn])).toEqual([["192.168.50.0/24", true]]);
    client.control(message);
    // No provisional gateway for a withdrawn candidate: dropped and counted from the first packet.
    const packet = new Uint8Array(28);
    packet.set([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 100, 64, 0, 2, 192, 168, 50, 9, 8, 0, 0, 0, 0, 1, 0, 1]);
    client.handleTunPacket(packet);
    expect(client.stats().drops["no-healthy-gateway"]).toBe(1);
    for (let t = 0; t < 1000; t += 10) {
      clock.advance(10);
      client.tick();
      gateway.tick();
      net.deliver();
    }
    // The gateway answers probes (up), yet the prefix has no active gateway: fail closed.
    const f = client.stats().failover!;
    expect(f.gateways.map((g) => [g.gatewayId, g.liveness])).toEqual([[GW.publicKey, "up"]]);
    expect(f.prefixes![0]).toMatchObject({ prefix: "192.168.50.0/24", active: null, effective: { gatewayId: null, reason: "no-healthy-gateway" } });
    expect(f.prefixes![0]!.candidates[0]).toMatchObject({ state: "withdrawn", healthy: false });
    client.handleTunPacket(packet);
    expect(client.stats().drops["no-healthy-gateway"]).toBe(2);
    expect(gatewayTun.packets.some((p) => p[19] === 9 && p[9] === 1)).toBe(false);
  });
});
