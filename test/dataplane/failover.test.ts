/**
 * @module test/dataplane/failover
 * Gateway failover end to end over the in-memory Tun/Bind pair on a fake clock: one client Device
 * and two gateway Devices A and B serving 172.26.0.0/20 (the "printer" 172.26.0.250 answers
 * pings and TCP on whichever gateway's LAN side it is reached). The client runs the real
 * FailoverController through core/failover/dataplane.ts: probes through the tunnel at 200 ms,
 * replies carrying the gateway's health report. Scenarios: the first working gateway is picked,
 * A killed (datagrams to and from it vanish), A's LAN link down (upstream monitor -> health report
 * -> withdrawal, no probe misses needed), A drained (zero lost pings, an open TCP flow stays on A
 * until idle), both down (fail closed, counted, nothing sent), inbound sources from both
 * gateways, probes never on a TUN, probe rate limit, route precedence and validation.
 * Pings run at 10 Hz, so the 1 s outage target allows at most 10 lost.
 */
import { describe, expect, test } from "bun:test";
import { Device, DeviceConfigError } from "../../core/dataplane/device.ts";
import type { GatewayConfig } from "../../core/dataplane/gateway.ts";
import type { FailoverDecision } from "../../core/failover/controller.ts";
import { DataPathFailover } from "../../core/failover/dataplane.ts";
import { UpstreamMonitor } from "../../core/failover/upstream.ts";
import { recordingLogger, silentLogger } from "../../core/log.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { encodeKey, generatePrivateKey, publicKeyFrom } from "../../core/wire/keys.ts";
import { fakeClock, seededRandom } from "../wire/helpers.ts";
import { type Datagram, MemoryNetwork, MemoryTun } from "./memory.ts";
import { SYN, ipPacket } from "./packets.ts";

const CLIENT = "100.64.0.2";
const A_VIRT = "100.64.0.1";
const B_VIRT = "100.64.0.3";
const SUBNET = "172.26.0.0/20";
const PRINTER = "172.26.0.250";
const PING_ID = 7;

interface GatewayNode {
  name: "A" | "B";
  device: Device;
  tun: MemoryTun;
  endpoint: { address: string; port: number };
  publicKey: string;
  /** Datagrams to and from it are delivered (false: SIGKILLed). */
  alive: boolean;
  /** Its LAN link (what the upstream monitor reads, and whether the printer answers). */
  link: boolean;
  upstream: UpstreamMonitor;
  draining: boolean;
  /** A new process with the same key: no sessions, no flows. */
  restart(): void;
}

function rig(options: { pinTcpMs?: number; seed?: number } = {}) {
  const crypto = nobleCrypto();
  const clock = fakeClock();
  const random = seededRandom(options.seed ?? 23);
  const net = new MemoryNetwork();
  const logger = recordingLogger();
  const keyPair = () => {
    const privateKey = generatePrivateKey(random);
    return { privateKey, publicKey: encodeKey(publicKeyFrom(crypto, privateKey)) };
  };

  const clientKeys = keyPair();
  const clientEndpoint = { address: "192.0.2.10", port: 51820 };
  const clientTun = new MemoryTun();
  const client = new Device({
    privateKey: clientKeys.privateKey,
    crypto,
    now: clock.now,
    random,
    logger: silentLogger,
    tun: clientTun,
    bind: net.bind(clientEndpoint),
    probeSource: CLIENT,
    ...(options.pinTcpMs !== undefined && { pinIdleMs: { tcp: options.pinTcpMs } }),
  });
  net.attach(clientEndpoint, client);

  const gateway = (name: "A" | "B", address: string, virt: string): GatewayNode => {
    const keys = keyPair();
    const endpoint = { address, port: 51820 };
    const tun = new MemoryTun();
    const start = () => {
      const device = new Device({
        privateKey: keys.privateKey,
        crypto,
        now: clock.now,
        random,
        logger: silentLogger,
        tun,
        bind: net.bind(endpoint),
        probeSource: virt,
      });
      net.attach(endpoint, device);
      device.setPeers([{ publicKey: clientKeys.publicKey, allowedIps: [`${CLIENT}/32`] }]);
      device.setGateway(config);
      return device;
    };
    const config: GatewayConfig = {
      senders: [
        {
          peerPublicKey: clientKeys.publicKey,
          virtualAddresses: [CLIENT],
          allow: [
            { destination: PRINTER, protocol: "icmp" },
            { destination: PRINTER, protocol: "tcp", ports: "80" },
          ],
        },
      ],
      localAddresses: [virt, "172.26.0.1"],
      overlayNetwork: "100.64.0.0/10",
    };
    const node: GatewayNode = {
      name,
      device: start(),
      tun,
      endpoint,
      publicKey: keys.publicKey,
      alive: true,
      link: true,
      draining: false,
      upstream: undefined as unknown as UpstreamMonitor,
      restart() {
        node.device = start();
        node.device.setHealthReport({ withdrawn: node.upstream.withdrawn(), draining: node.draining });
      },
    };
    node.upstream = new UpstreamMonitor({
      now: clock.now,
      logger,
      checks: { linkUp: (iface) => iface === "eth1" && node.link },
      onChange: (withdrawn) => node.device.setHealthReport({ withdrawn, draining: node.draining }),
    });
    node.upstream.setSubnets([{ prefix: SUBNET, interface: "eth1" }]);
    return node;
  };
  const a = gateway("A", "192.0.2.1", A_VIRT);
  const b = gateway("B", "192.0.2.2", B_VIRT);
  const byAddress = new Map([a, b].map((g) => [g.endpoint.address, g]));

  client.setPeers([
    { publicKey: a.publicKey, allowedIps: [`${A_VIRT}/32`, SUBNET], endpoint: a.endpoint },
    { publicKey: b.publicKey, allowedIps: [`${B_VIRT}/32`, SUBNET], endpoint: b.endpoint },
  ]);
  const decisions: FailoverDecision[] = [];
  const failover = new DataPathFailover({
    device: client,
    now: clock.now,
    logger,
    onDecision: (d) => decisions.push(d),
  });
  const name = (key: string | null) => (key === a.publicKey ? "A" : key === b.publicKey ? "B" : key);
  const setRoutes = (draining: { A?: boolean; B?: boolean } = {}) =>
    failover.setRoutes([
      {
        prefix: SUBNET,
        candidates: [
          { gatewayId: a.publicKey, priority: 100, draining: draining.A ?? false },
          { gatewayId: b.publicKey, priority: 100, draining: draining.B ?? false },
        ],
      },
    ]);
  setRoutes();

  /** Datagrams that a dead gateway would never see or send. */
  const reachable = (d: Datagram) => (byAddress.get(d.to.address)?.alive ?? true) && (byAddress.get(d.from.address)?.alive ?? true);

  // ------------------------------------------------------------------ the LAN side
  /** Every packet that reached a gateway's TUN (i.e. its LAN), with when and where. */
  const lan: { at: number; via: "A" | "B"; packet: Uint8Array }[] = [];
  const settle = () => {
    for (let round = 0; round < 20; round++) {
      net.deliver(reachable);
      let more = false;
      for (const g of [a, b]) {
        for (const p of g.tun.take()) {
          lan.push({ at: clock.now(), via: g.name, packet: p });
          if (!g.alive || !g.link) continue;
          // The printer answers echo requests (payload echoed) and SYNs to port 80.
          if (p[9] === 1 && p[20] === 8) {
            g.device.handleTunPacket(ipPacket({ src: PRINTER, dst: CLIENT, proto: "icmp", icmpType: 0, icmpId: (p[24]! << 8) | p[25]!, payload: p.subarray(28) }));
            more = true;
          }
        }
      }
      if (!more && net.queue.length === 0) return;
    }
  };

  // ------------------------------------------------------------------ pinger and clock
  const pings: { seq: number; at: number; via: "A" | "B" | null; ok: boolean }[] = [];
  let seq = 0;
  const ping = () => {
    const s = ++seq;
    const payload = new Uint8Array([s >> 8, s & 255, 0x77, 0x67]);
    const before = lan.length;
    client.handleTunPacket(ipPacket({ src: CLIENT, dst: PRINTER, proto: "icmp", icmpId: PING_ID, payload }));
    settle();
    const carried = lan.slice(before).find((l) => l.packet[9] === 1 && l.packet[20] === 8 && l.packet[28] === s >> 8 && l.packet[29] === (s & 255));
    const got = clientTun.take();
    const ok = got.some((p) => p[9] === 1 && p[20] === 0 && p[28] === s >> 8 && p[29] === (s & 255));
    pings.push({ seq: s, at: clock.now(), via: carried?.via ?? null, ok });
    return ok;
  };

  let nextPing = Number.POSITIVE_INFINITY;
  /** Runs the host loop for `ms`: 10 ms steps; devices, monitors and failover ticked when due. */
  const run = (ms: number, pingEvery: number | null = null) => {
    if (pingEvery !== null && !Number.isFinite(nextPing)) nextPing = clock.now();
    const end = clock.now() + ms;
    while (clock.now() < end) {
      for (const g of [a, b]) {
        if (!g.alive) continue;
        g.device.tick();
        if (g.upstream.nextTickInMs() === 0) g.upstream.tick();
      }
      client.tick();
      if (failover.nextTickInMs() === 0) failover.tick();
      settle();
      if (pingEvery !== null && clock.now() >= nextPing) {
        ping();
        nextPing += pingEvery;
      }
      clock.advance(10);
    }
    if (pingEvery === null) nextPing = Number.POSITIVE_INFINITY;
  };

  const active = () => name(failover.controller.activeFor(SUBNET));
  const lost = (from: number) => pings.filter((p) => p.at >= from && !p.ok).length;
  return { client, clientTun, a, b, net, clock, failover, decisions, name, setRoutes, lan, ping, pings, run, settle, active, lost, logger };
}

/** A rig that has run until the client has an active gateway and warm sessions with both. */
function warm(options: Parameters<typeof rig>[0] = {}) {
  const r = rig(options);
  r.run(1000);
  expect(r.active()).toBe("A");
  for (const g of [r.a, r.b]) expect(r.client.sessionInfo(g.publicKey)!.current).toBe(true);
  return r;
}

describe("gateway choice and probes", () => {
  test("fails closed until a gateway answers, then picks the first working session; probes never reach a TUN", () => {
    const r = rig();
    // No session yet: the route points at the tunnel and drops, counted; nothing is sent for it.
    r.client.handleTunPacket(ipPacket({ src: CLIENT, dst: PRINTER, proto: "icmp", icmpId: PING_ID }));
    expect(r.net.queue).toEqual([]);
    expect(r.client.stats().drops).toEqual({ "no-healthy-gateway": 1 });

    r.run(1000);
    expect(r.active()).toBe("A");
    expect(r.decisions.map((d) => [r.name(d.to), d.reason])).toEqual([["A", "initial"]]);
    // Probes and their replies stayed inside the Devices.
    expect(r.lan).toEqual([]);
    expect(r.clientTun.packets).toEqual([]);
    const peers = r.client.stats().peers;
    for (const p of peers) {
      expect(p.probes!.sent).toBeGreaterThanOrEqual(3);
      expect(p.probes!.replies).toBe(p.probes!.sent);
      expect(p.drops).toEqual({});
    }
    for (const g of [r.a, r.b]) {
      const gs = g.device.stats();
      expect(gs.peers[0]!.probes!.answered).toBeGreaterThanOrEqual(3);
      expect(gs.peers[0]!.drops).toEqual({});
      expect(gs.gateway!.flows).toBe(0); // a probe opens no flow
    }
    expect(r.client.stats().routes).toEqual({ prefixes: 1, pinnedFlows: 0, maxPinnedFlows: 16_384, selector: true });

    for (let i = 0; i < 5; i++) expect(r.ping()).toBe(true);
    expect(new Set(r.pings.slice(-5).map((p) => p.via))).toEqual(new Set(["A"]));
    const st = r.failover.controller.status()[0]!;
    expect(st.candidates.map((c) => [r.name(c.gatewayId), c.state]).sort()).toEqual([
      ["A", "up"],
      ["B", "up"],
    ]);
  });

  test("no flap back: B stays active when A recovers (no-preempt)", () => {
    const r = warm();
    r.a.alive = false;
    r.run(1000, 100);
    expect(r.active()).toBe("B");
    r.a.alive = true;
    r.run(5000, 100);
    expect(r.active()).toBe("B");
    expect(r.failover.controller.status()[0]!.candidates.find((c) => r.name(c.gatewayId) === "A")!.state).toBe("up");
    expect(r.decisions.map((d) => [r.name(d.from), r.name(d.to), d.reason])).toEqual([
      [null, "A", "initial"],
      ["A", "B", "active-down"],
    ]);
  });
});

describe("failover on the data path", () => {
  test("A killed: within the detection budget pings flow via B, at most 1 s of them lost", () => {
    const r = warm();
    r.run(1000, 100);
    expect(r.lost(0)).toBe(0);
    const killedAt = r.clock.now();
    r.a.alive = false;
    r.run(3000, 100);
    const sw = r.decisions.find((d) => d.reason === "active-down")!;
    expect(r.name(sw.to)).toBe("B");
    expect(sw.at - killedAt).toBeLessThanOrEqual(610); // 3 missed 200 ms probes, 10 ms steps
    const lost = r.lost(killedAt);
    if (process.env.FAILOVER_DEBUG) console.log({ detectMs: sw.at - killedAt, lost, pings: r.pings.filter((p) => p.at >= killedAt).slice(0, 10) });
    expect(lost).toBeGreaterThan(0);
    expect(lost).toBeLessThanOrEqual(7);
    const after = r.pings.filter((p) => p.at > sw.at);
    expect(after.length).toBeGreaterThan(20);
    expect(after.every((p) => p.ok && p.via === "B")).toBe(true);
    // B's session was warm: no handshake on the switch.
    expect(r.client.stats().peers.find((p) => p.publicKey === r.b.publicKey)!.handshakes).toBe(1);
  });

  test("A's LAN link down: withdrawn through the probe reply, switch without waiting for probe misses", () => {
    const r = warm();
    r.run(500, 100);
    const downAt = r.clock.now();
    r.a.link = false;
    r.run(2000, 100);
    const sw = r.decisions.find((d) => d.reason === "withdrawn")!;
    expect(r.name(sw.from)).toBe("A");
    expect(r.name(sw.to)).toBe("B");
    // Monitor tick (<= 200 ms) + next probe reply (<= 200 ms): faster than 3 missed probes.
    expect(sw.at - downAt).toBeLessThanOrEqual(410);
    expect(r.lost(downAt)).toBeLessThanOrEqual(5);
    expect(r.pings.filter((p) => p.at > sw.at).every((p) => p.ok && p.via === "B")).toBe(true);
    const a = r.failover.controller.status()[0]!.candidates.find((c) => r.name(c.gatewayId) === "A")!;
    expect(a.state).toBe("withdrawn");
    expect(r.failover.controller.health.isUp(r.a.publicKey)).toBe(true); // alive and answering all along
    expect(r.a.device.getHealthReport()).toEqual({ withdrawn: [SUBNET], draining: false });
    expect(r.logger.lines.some((l) => l.message === `upstream: subnet=${SUBNET} interface=eth1 from=ok to=withdrawn reason=link-down`)).toBe(true);

    // The link comes back: A is usable again but B keeps the subnet (no-preempt).
    r.a.link = true;
    r.run(1000, 100);
    expect(r.a.device.getHealthReport().withdrawn).toEqual([]);
    expect(r.failover.controller.isHealthyFor(r.a.publicKey, SUBNET)).toBe(true);
    expect(r.active()).toBe("B");
  });

  test("A drained: zero lost pings; an open TCP flow stays on A until idle, new flows go to B", () => {
    const r = warm({ pinTcpMs: 3000 });
    const tcp = (sport: number) => ipPacket({ src: CLIENT, dst: PRINTER, proto: "tcp", sport, dport: 80, flags: SYN });
    const carrier = (sport: number) => {
      const before = r.lan.length;
      r.client.handleTunPacket(tcp(sport));
      r.settle();
      const hit = r.lan.slice(before).find((l) => l.packet[9] === 6 && ((l.packet[20]! << 8) | l.packet[21]!) === sport);
      return hit?.via ?? null;
    };
    expect(carrier(40000)).toBe("A");
    r.run(500, 100);

    // The admin drains A: it says so in every probe reply (and may keep serving flows).
    const drainAt = r.clock.now();
    r.a.draining = true;
    r.a.device.setHealthReport({ withdrawn: [], draining: true });
    r.run(2000, 100);
    expect(r.lost(0)).toBe(0);
    const sw = r.decisions.find((d) => d.reason === "draining")!;
    expect(r.name(sw.to)).toBe("B");
    expect(sw.at - drainAt).toBeLessThanOrEqual(210);
    expect(r.pings.filter((p) => p.at > sw.at).every((p) => p.via === "B")).toBe(true);

    // The old flow is pinned to A; a new one goes to B.
    expect(carrier(40000)).toBe("A");
    expect(carrier(40001)).toBe("B");
    expect(r.client.stats().routes!.pinnedFlows).toBe(2);
    // Idle for longer than the pin: the flow's next packet follows the active gateway.
    r.run(3500, 100);
    expect(carrier(40000)).toBe("B");
    expect(r.lost(0)).toBe(0);
  });

  test("A restarted (no sessions): found again within seconds by a fresh handshake, not WireGuard's 15 s", () => {
    const r = warm();
    r.a.alive = false;
    r.run(1000, 100);
    expect(r.active()).toBe("B");
    r.a.restart();
    r.a.alive = true;
    const back = r.clock.now();
    let upAt = 0;
    while (upAt === 0 && r.clock.now() - back < 8000) {
      r.run(100, 100);
      if (r.failover.controller.health.isUp(r.a.publicKey)) upAt = r.clock.now();
    }
    if (process.env.FAILOVER_DEBUG) console.log({ recoveredAfterMs: upAt - back });
    expect(upAt - back).toBeGreaterThan(0);
    expect(upAt - back).toBeLessThanOrEqual(6000);
    expect(r.lost(back)).toBe(0);
    expect(r.active()).toBe("B");
  });

  test("a pinned flow moves when its gateway dies (pins never outlive health)", () => {
    const r = warm();
    const syn = ipPacket({ src: CLIENT, dst: PRINTER, proto: "tcp", sport: 41000, dport: 80, flags: SYN });
    r.client.handleTunPacket(syn);
    r.settle();
    expect(r.lan.at(-1)!.via).toBe("A");
    r.a.alive = false;
    r.run(1000);
    const before = r.lan.length;
    r.client.handleTunPacket(syn);
    r.settle();
    expect(r.lan.slice(before).map((l) => l.via)).toEqual(["B"]);
  });

  test("both down: fail closed, drops counted as no-healthy-gateway, nothing sent anywhere", () => {
    const r = warm();
    r.a.alive = false;
    r.b.alive = false;
    r.run(1000);
    expect(r.active()).toBe(null);
    expect(r.decisions.at(-1)!.to).toBe(null);
    const lanBefore = r.lan.length;
    r.net.take();
    for (let i = 0; i < 10; i++) {
      r.client.handleTunPacket(ipPacket({ src: CLIENT, dst: PRINTER, proto: "icmp", icmpId: PING_ID }));
      r.client.handleTunPacket(ipPacket({ src: CLIENT, dst: "172.26.3.3", proto: "tcp", sport: 50000 + i, dport: 80 }));
    }
    expect(r.net.queue).toEqual([]); // not sealed for any peer
    expect(r.client.stats().drops).toEqual({ "no-healthy-gateway": 20 });
    expect(r.lan.length).toBe(lanBefore);
    expect(r.clientTun.packets).toEqual([]);

    // B comes back: the route recovers with it.
    r.b.alive = true;
    r.run(1500, 100);
    expect(r.active()).toBe("B");
    expect(r.decisions.at(-1)!.reason).toBe("recovered");
    expect(r.pings.at(-1)!.ok).toBe(true);
  });
});

describe("cryptokey routing with shared subnets", () => {
  test("inbound: a source in the shared subnet is accepted from either gateway; others are not", () => {
    const r = warm();
    for (const g of [r.a, r.b]) {
      // The gateway host writes a packet from its LAN to the client (its flow check off for this).
      g.device.setGateway(null);
      g.device.handleTunPacket(ipPacket({ src: "172.26.0.9", dst: CLIENT, proto: "udp", sport: 53, dport: 40000 }));
      g.device.handleTunPacket(ipPacket({ src: "10.9.9.9", dst: CLIENT, proto: "udp", sport: 53, dport: 40000 }));
      g.device.handleTunPacket(ipPacket({ src: g === r.a ? B_VIRT : A_VIRT, dst: CLIENT, proto: "udp", sport: 53, dport: 40000 }));
      r.settle();
      const got = r.clientTun.take();
      expect(got.map((p) => `${p[12]}.${p[13]}.${p[14]}.${p[15]}`)).toEqual(["172.26.0.9"]);
    }
    for (const p of r.client.stats().peers) expect(p.drops).toEqual({ "source-not-allowed": 2 });
  });

  test("outbound: a longer allowed IP beats a route, an equal one loses to it; unknown gateway and no selector drop", () => {
    const r = warm();
    const random = seededRandom(99);
    const direct = encodeKey(publicKeyFrom(nobleCrypto(), generatePrivateKey(random)));
    r.client.setPeers([
      { publicKey: r.a.publicKey, allowedIps: [`${A_VIRT}/32`, SUBNET], endpoint: r.a.endpoint },
      { publicKey: r.b.publicKey, allowedIps: [`${B_VIRT}/32`, SUBNET], endpoint: r.b.endpoint },
      { publicKey: direct, allowedIps: ["172.26.0.5/32"], endpoint: { address: "192.0.2.99", port: 51820 } },
    ]);
    r.net.take();
    r.client.handleTunPacket(ipPacket({ src: CLIENT, dst: "172.26.0.5", proto: "udp" }));
    expect(r.net.take().map((d) => d.to.address)).toEqual(["192.0.2.99"]); // a handshake to the direct peer
    r.client.handleTunPacket(ipPacket({ src: CLIENT, dst: "172.26.0.6", proto: "udp" }));
    expect(r.net.take().map((d) => d.to.address)).toEqual(["192.0.2.1"]); // routed: A, not B (the last lister)

    r.client.setRouteSelector({ lookup: () => ({ gatewayId: "no such peer" }) });
    r.client.handleTunPacket(ipPacket({ src: CLIENT, dst: "172.26.0.6", proto: "udp" }));
    r.client.setRouteSelector(null);
    r.client.handleTunPacket(ipPacket({ src: CLIENT, dst: "172.26.0.6", proto: "udp" }));
    expect(r.net.queue).toEqual([]);
    expect(r.client.stats().drops).toEqual({ "route-gateway-unknown": 1, "no-healthy-gateway": 1 });

    // Routes removed: the subnet is plain allowed IPs again (the last peer listing it owns it).
    r.client.setRoutes(null);
    expect(r.client.stats().routes).toBeNull();
    r.client.handleTunPacket(ipPacket({ src: CLIENT, dst: "172.26.0.6", proto: "udp" }));
    expect(r.net.take().map((d) => d.to.address)).toEqual(["192.0.2.2"]);
  });

  test("setRoutes validates before changing anything", () => {
    const r = rig();
    expect(() => r.client.setRoutes([{ prefix: "172.26.0.0/33", candidates: [] }])).toThrow(DeviceConfigError);
    expect(() => r.client.setRoutes([{ prefix: SUBNET, candidates: ["not a key"] }])).toThrow(/route 1 candidate 1/);
    expect(() =>
      r.client.setRoutes([
        { prefix: SUBNET, candidates: [] },
        { prefix: "172.26.0.1/20", candidates: [] },
      ]),
    ).toThrow(/appears twice/);
    expect(r.client.stats().routes).toEqual({ prefixes: 1, pinnedFlows: 0, maxPinnedFlows: 16_384, selector: true });
    expect(() => r.a.device.setHealthReport({ withdrawn: ["nope"], draining: false })).toThrow(DeviceConfigError);
    expect(() => new Device({ ...deviceBasics(), probeSource: "fd00::1" })).toThrow(/probeSource/);
  });
});

function deviceBasics() {
  const random = seededRandom(5);
  return {
    privateKey: generatePrivateKey(random),
    crypto: nobleCrypto(),
    now: () => 1,
    random,
    logger: silentLogger,
    tun: new MemoryTun(),
    bind: new MemoryNetwork().bind({ address: "192.0.2.50", port: 1 }),
  };
}

describe("probe handling", () => {
  test("replies are rate-limited per peer; a gateway's report reaches the listener unchanged", () => {
    const r = warm();
    const seen: { rtt: number; draining: boolean | undefined }[] = [];
    r.failover.close();
    r.client.setProbeListener((key, rtt, report) => {
      if (key === r.a.publicKey) seen.push({ rtt, draining: report?.draining });
    });
    r.a.device.setHealthReport({ withdrawn: ["172.26.4.0/24", "fd00:1::/64"], draining: true });
    const answeredBefore = r.a.device.stats().peers[0]!.probes!.answered;
    // A burst of 12 before any reply: all answered, but only the newest 8 are in the client's window.
    for (let i = 0; i < 12; i++) r.client.probe(r.a.publicKey);
    r.settle();
    expect(seen.length).toBe(8);
    expect(r.client.stats().peers.find((p) => p.publicKey === r.a.publicKey)!.drops).toEqual({ "probe-unexpected": 4 });
    // Without time passing the gateway's bucket (20) holds 8 more answers.
    for (let i = 0; i < 10; i++) {
      r.client.probe(r.a.publicKey);
      r.settle();
    }
    const gwPeer = r.a.device.stats().peers[0]!;
    expect(gwPeer.drops).toEqual({ "probe-rate-limited": 2 });
    expect(gwPeer.probes!.answered - answeredBefore).toBe(20);
    expect(seen.length).toBe(16);
    expect(seen.every((s) => s.rtt === 0 && s.draining === true)).toBe(true);
    expect(r.client.probe("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")).toBe(false);
    expect(r.lan).toEqual([]);
    expect(r.clientTun.packets).toEqual([]);
  });
});
