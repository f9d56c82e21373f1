/**
 * @module test/agent/agent
 * The Agent with fakes: NetMap -> Device peers (endpoint parsing, allowed IPs as listed,
 * keepalive), the diff that skips unchanged NetMaps and logs every decision, hooks in order (a
 * failing one does not stop the rest), the NetMap saved 0600 for restarts, reports sent on
 * change only, and status() data without the private key.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, type AgentDataplane, diffPeers, dropLine, type DiscoveredAddress, parseEndpoint, peerConfigsFor, reportableSubnets } from "../../core/agent/agent.ts";
import type { StreamItem } from "../../core/agent/client.ts";
import { netMapPath, readSavedNetMap, writeSavedNetMap } from "../../core/agent/state.ts";
import type { AgentReport } from "../../core/control/protocol.ts";
import type { DeviceStats, PeerConfig } from "../../core/dataplane/device.ts";
import { recordingLogger } from "../../core/log.ts";
import { DropLog } from "../../core/dataplane/drop-log.ts";
import { taggedLogger } from "../../core/agent/log.ts";
import { ipPacket } from "../dataplane/packets.ts";
import { ENROLLED_IDENTITY, gatewayPeer, GW, PEER2, plainPeer, sampleNetMap, SELF, SERVER } from "./fixtures.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "wg-agent-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const identity = ENROLLED_IDENTITY;

function fakeDataplane(): AgentDataplane & { calls: PeerConfig[][] } {
  const calls: PeerConfig[][] = [];
  return {
    calls,
    setPeers(peers) {
      calls.push(peers);
    },
    async stats(): Promise<DeviceStats> {
      const last = calls.at(-1) ?? [];
      return {
        publicKey: SELF.publicKey,
        peers: last.map((p, i) => ({
          publicKey: p.publicKey,
          endpoint: p.endpoint ?? null,
          latestHandshakeMs: i === 0 ? 99_000 : 0,
          rxBytes: 1536 * (i + 1),
          txBytes: 100,
          handshakes: i === 0 ? 1 : 0,
          handshakeInitiations: 1,
          allowedIps: p.allowedIps,
          persistentKeepalive: 25,
          drops: i === 0 ? { "source-not-allowed": 2 } : {},
        })),
        drops: {},
        gateway: null,
        cookieRepliesSent: 0,
        underLoad: false,
      };
    },
  };
}

function makeAgent(options: { found?: DiscoveredAddress[]; reports?: AgentReport[]; hooks?: ((n: unknown) => void)[] } = {}) {
  const dataplane = fakeDataplane();
  const logger = recordingLogger();
  const reports = options.reports ?? [];
  let found = options.found ?? [{ interface: "eth0", address: "10.0.0.2", subnet: "10.0.0.0/24" }];
  const agent = new Agent({
    identity,
    stateDir: dir,
    client: {
      async *stream(): AsyncGenerator<StreamItem> {},
      async report(r) {
        reports.push(r);
      },
    },
    dataplane,
    discoverSubnets: async () => found,
    logger,
    now: () => 100_000,
    sleep: async () => {},
    random: () => 0,
    interfaceName: "wg-waygate",
    listenPort: 51820,
    version: "1.2.3",
    os: "linux-x64",
    hooks: options.hooks ?? [],
  });
  return { agent, dataplane, logger, reports, setFound: (f: DiscoveredAddress[]) => (found = f) };
}

describe("NetMap -> peers", () => {
  test("endpoints: IPv4, bracketed IPv6, refusals", () => {
    expect(parseEndpoint("10.0.0.1:51820")).toEqual({ address: "10.0.0.1", port: 51820 });
    expect(parseEndpoint("[FD00::0003]:1")).toEqual({ address: "fd00::3", port: 1 });
    for (const bad of ["router.lan:51820", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", "fd00::3:51820", "[fd00::3]"]) expect(parseEndpoint(bad)).toBeNull();
  });

  test("peer configs carry key, endpoint, allowed IPs as listed, keepalive; inactive -> none", () => {
    const plan = peerConfigsFor(sampleNetMap([gatewayPeer(), plainPeer({ endpoint: "desk.lan:51820" })]));
    expect(plan.peers).toEqual([
      { publicKey: GW.publicKey, allowedIps: ["100.64.0.1/32", "192.168.50.0/24"], endpoint: { address: "10.0.0.1", port: 51820 }, persistentKeepalive: 25 },
      { publicKey: PEER2.publicKey, allowedIps: ["100.64.0.3/32"], persistentKeepalive: 25 },
    ]);
    expect(plan.unusableEndpoints).toEqual([{ id: "PEER2", endpoint: "desk.lan:51820" }]);
    const inactive = sampleNetMap();
    inactive.self.active = false;
    expect(peerConfigsFor(inactive).peers).toEqual([]);
    expect(peerConfigsFor(sampleNetMap(), { persistentKeepalive: 0 }).peers[0]!.persistentKeepalive).toBeUndefined();
  });

  test("diff by public key", () => {
    const a = peerConfigsFor(sampleNetMap()).peers;
    const b = peerConfigsFor(sampleNetMap([gatewayPeer({ allowedIps: ["100.64.0.1/32"], gatewayFor: [] })])).peers;
    expect(diffPeers(a, b)).toEqual({ added: [], removed: [PEER2.publicKey], changed: [GW.publicKey], unchanged: [] });
    expect(diffPeers([], a)).toEqual({ added: [GW.publicKey, PEER2.publicKey], removed: [], changed: [], unchanged: [] });
    expect(diffPeers(a, a).unchanged.length).toBe(2);
  });

  test("reportable subnets leave out the overlay network and duplicates", () => {
    expect(
      reportableSubnets(
        [
          { interface: "eth0", address: "192.168.50.1", subnet: "192.168.50.0/24" },
          { interface: "eth1", address: "192.168.50.2", subnet: "192.168.50.0/24" },
          { interface: "tun9", address: "100.64.5.1", subnet: "100.64.5.0/24" },
          { interface: "eth2", address: "10.0.0.1", subnet: "10.0.0.0/8" },
        ],
        "100.64.0.0/10",
      ),
    ).toEqual(["10.0.0.0/8", "192.168.50.0/24"]);
  });
});

describe("Agent.applyNetMap", () => {
  test("sets peers, skips an unchanged NetMap, applies a change, saves each server NetMap 0600", async () => {
    const order: string[] = [];
    const { agent, dataplane, logger } = makeAgent({ hooks: [() => void order.push("router"), () => { order.push("firewall"); throw new Error("iptables missing"); }, () => void order.push("dns")] });
    await agent.applyNetMap({ revision: 1, netmap: sampleNetMap() }, "server");
    expect(dataplane.calls.length).toBe(1);
    expect(order).toEqual(["router", "firewall", "dns"]);
    expect(logger.lines.some((l) => l.level === "error" && l.message.startsWith("agent: hook=1 failed revision=1"))).toBe(true);
    expect(readSavedNetMap(dir)!.revision).toBe(1);
    expect(statSync(netMapPath(dir)).mode & 0o777).toBe(0o600);

    await agent.applyNetMap({ revision: 2, netmap: sampleNetMap() }, "server");
    expect(dataplane.calls.length).toBe(1); // nothing changed for the Device
    expect(order.length).toBe(6); // hooks still see every NetMap
    expect(readSavedNetMap(dir)!.revision).toBe(2);
    expect(agent.revision).toBe(2);

    await agent.applyNetMap({ revision: 3, netmap: sampleNetMap([plainPeer()]) }, "server");
    expect(dataplane.calls.length).toBe(2);
    expect(dataplane.calls[1]!.map((p) => p.publicKey)).toEqual([PEER2.publicKey]);
    const decisions = logger.lines.filter((l) => l.level === "debug" && l.message.startsWith("agent: peer=")).map((l) => l.message.split(" ").slice(1, 3).join(" "));
    expect(decisions).toEqual(["peer=add id=GW001", "peer=add id=PEER2", "peer=keep id=GW001", "peer=keep id=PEER2", "peer=remove id=GW001", "peer=keep id=PEER2"]);
    expect(logger.lines.some((l) => l.message.startsWith("agent: netmap applied revision=3 source=server active=true peers=1 added=0 removed=1 changed=0 unchanged=1"))).toBe(true);
  });

  test("an empty first NetMap still sets (empty) peers; a disk NetMap never replaces a server one", async () => {
    const { agent, dataplane } = makeAgent();
    await agent.applyNetMap({ revision: 1, netmap: sampleNetMap([]) }, "server");
    expect(dataplane.calls).toEqual([[]]);
    await agent.applyNetMap({ revision: 0, netmap: sampleNetMap() }, "disk");
    expect(dataplane.calls.length).toBe(1);
    expect(agent.revision).toBe(1);
  });

  test("a NetMap for another system is ignored", async () => {
    const { agent, dataplane, logger } = makeAgent();
    const other = sampleNetMap();
    other.self.id = "ZZZ99";
    await agent.applyNetMap({ revision: 1, netmap: other }, "server");
    expect(dataplane.calls.length).toBe(0);
    expect(logger.lines.some((l) => l.message.includes("reason=wrong-system"))).toBe(true);
  });

  test("start applies the saved NetMap when the server is unreachable", async () => {
    writeSavedNetMap(dir, { serverUrl: identity.enrolment.serverUrl, revision: 5, savedAt: 1, netmap: sampleNetMap() });
    const dataplane = fakeDataplane();
    const logger = recordingLogger();
    let applied!: () => void;
    const appliedOnce = new Promise<void>((r) => (applied = r));
    const agent = new Agent({
      identity,
      stateDir: dir,
      client: {
        async *stream(): AsyncGenerator<StreamItem> {
          throw new Error("ECONNREFUSED");
        },
        async report() {
          throw new Error("ECONNREFUSED");
        },
      },
      dataplane,
      discoverSubnets: async () => [],
      logger,
      now: () => 0,
      sleep: (ms, signal) => new Promise((r) => { const t = setTimeout(r, Math.min(ms, 5)); signal?.addEventListener("abort", () => { clearTimeout(t); r(); }); }),
      random: () => 0,
      interfaceName: "wg-waygate",
      listenPort: 51820,
      version: "1",
      os: "linux",
      onApplied: () => applied(),
    });
    agent.start();
    await appliedOnce;
    await agent.stop();
    expect(dataplane.calls.length).toBe(1);
    expect(agent.revision).toBe(5);
    expect((await agent.status()).netmap).toEqual({ revision: 5, source: "disk", appliedAt: 0 });
  });
});

describe("reports", () => {
  test("sent at first, then only on change (or when forced)", async () => {
    const { agent, reports, setFound } = makeAgent();
    expect(await agent.reportNow()).toBe(true);
    expect(reports[0]).toEqual({ listenPort: 51820, endpoints: ["10.0.0.2:51820"], discoveredSubnets: ["10.0.0.0/24"], agentVersion: "1.2.3", os: "linux-x64" });
    expect(await agent.reportNow()).toBe(false);
    setFound([
      { interface: "eth0", address: "10.0.0.2", subnet: "10.0.0.0/24" },
      { interface: "eth1", address: "192.168.50.1", subnet: "192.168.50.0/24" },
    ]);
    expect(await agent.reportNow()).toBe(true);
    expect(reports[1]!.discoveredSubnets).toEqual(["10.0.0.0/24", "192.168.50.0/24"]);
    expect(await agent.reportNow(true)).toBe(true);
    expect(reports.length).toBe(3);
  });
});

describe("status()", () => {
  test("self, peers with state, gateway for, ACLs; no private key", async () => {
    const { agent } = makeAgent();
    await agent.applyNetMap({ revision: 4, netmap: sampleNetMap() }, "server");
    await agent.reportNow();
    const s = await agent.status();
    expect(JSON.stringify(s)).not.toContain(SELF.privateKey);
    expect(s.running).toBe(true);
    expect(s.self).toMatchObject({ systemId: "ABC12", virtualAddress: "100.64.0.2", network: "100.64.0.0/10", interface: "wg-waygate", listenPort: 51820, tags: ["laptops"], discoveredSubnets: ["10.0.0.0/24"] });
    expect(s.netmap).toEqual({ revision: 4, source: "server", appliedAt: 100_000 });
    const [gw, desk] = s.peers;
    expect(gw).toMatchObject({ id: "GW001", state: "up", endpoint: "10.0.0.1:51820", lastHandshakeAt: 99_000, rxBytes: 1536, gatewayFor: ["192.168.50.0/24"], dnsNames: ["router.waygate"], drops: { "source-not-allowed": 2 } });
    expect(gw!.acls).toEqual([{ direction: "out", action: "allow", src: "100.64.0.2/32", dst: "192.168.50.0/24", protocol: "tcp", ports: "22", policy: "lan-ssh" }]);
    expect(desk).toMatchObject({ id: "PEER2", state: "connecting", endpoint: "[fd00::3]:51820", gatewayFor: [], rttMs: null });
  });
});

describe("drop log (run -v 5)", () => {
  /** An Agent whose data plane reports the drops recorded in `log` (a real drop log), and counts stats polls. */
  function dropAgent(options: { dropLogIntervalMs?: number } = {}) {
    const log = new DropLog();
    const base = fakeDataplane();
    let polls = 0;
    const dataplane: AgentDataplane = {
      setPeers: (p) => base.setPeers(p),
      async stats() {
        polls++;
        return { ...(await base.stats())!, recentDrops: log.snapshot() };
      },
    };
    const logger = recordingLogger();
    const agent = new Agent({
      identity,
      stateDir: dir,
      client: {
        async *stream(): AsyncGenerator<StreamItem> {
          throw new Error("ECONNREFUSED");
        },
        async report() {},
      },
      dataplane,
      discoverSubnets: async () => [],
      logger,
      now: () => 100_000,
      sleep: (ms, signal) =>
        new Promise((r) => {
          const t = setTimeout(r, Math.min(ms, 5));
          signal?.addEventListener("abort", () => {
            clearTimeout(t);
            r();
          });
        }),
      random: () => 0,
      interfaceName: "wg-waygate",
      listenPort: 51820,
      version: "1",
      os: "linux",
      ...(options.dropLogIntervalMs !== undefined ? { dropLogIntervalMs: options.dropLogIntervalMs } : {}),
    });
    const lines = () => logger.lines.filter((l) => l.message.startsWith("dataplane: drop")).map((l) => l.message);
    return { agent, log, logger, lines, polls: () => polls };
  }
  const grantless = ipPacket({ src: "100.64.0.2", dst: "172.26.0.251", proto: "tcp", sport: 40000, dport: 80 });

  test("each new drop logged once with its reason, the peer by its system id; the counter summary too", async () => {
    const { agent, log, logger, lines } = dropAgent();
    await agent.applyNetMap({ revision: 1, netmap: sampleNetMap() }, "server");
    log.record(1, "gateway-no-grant", GW.publicKey, grantless, grantless.length, null);
    log.record(2, "mac1-invalid", null, new Uint8Array(148), 148, { address: "203.0.113.9", port: 40000 });
    await agent.logDropsNow();
    expect(lines()).toEqual([
      "dataplane: drop reason=gateway-no-grant peer=GW001 proto=tcp src=100.64.0.2 dst=172.26.0.251:80 len=40",
      "dataplane: drop reason=mac1-invalid from=203.0.113.9:40000 len=148",
    ]);
    expect(logger.lines.filter((l) => l.message.startsWith("dataplane: drop")).every((l) => l.level === "debug")).toBe(true);
    expect(logger.lines.map((l) => l.message)).toContain(`agent: drop reason=source-not-allowed peer=${GW.publicKey} new=2 total=2`);

    await agent.logDropsNow(); // nothing new: nothing logged
    expect(lines().length).toBe(2);

    const v6 = ipPacket({ src: "fd00::3", dst: "fd00::2", proto: "udp", sport: 5353, dport: 53 });
    log.record(3, "source-not-allowed", PEER2.publicKey, v6, v6.length, null);
    log.record(4, "acl-denied", SERVER.publicKey, icmp(), 28, null);
    await agent.logDropsNow();
    expect(lines().slice(2)).toEqual([
      `dataplane: drop reason=source-not-allowed peer=PEER2 proto=udp src=fd00::3 dst=[fd00::2]:53 len=${v6.length}`,
      `dataplane: drop reason=acl-denied peer=${SERVER.publicKey} proto=icmp src=100.64.0.3 dst=100.64.0.2 len=28`,
    ]);
  });

  test("more drops between two polls than stats carries: one lost=N line, then the newest, each once", async () => {
    const { agent, log, lines } = dropAgent();
    for (let i = 0; i < 100; i++) log.record(i, "replayed", GW.publicKey, null, 32, { address: "10.0.0.1", port: 51820 });
    await agent.logDropsNow();
    expect(lines()[0]).toBe("dataplane: drop lost=36 since_seq=0");
    expect(lines().length).toBe(1 + 64);
    for (let i = 0; i < 300; i++) log.record(i, "decrypt-failed", GW.publicKey, null, 64, { address: "10.0.0.1", port: 51820 });
    await agent.logDropsNow();
    const second = lines().slice(65);
    expect(second[0]).toBe("dataplane: drop lost=236 since_seq=100");
    expect(second.slice(1)).toEqual(new Array(64).fill(`dataplane: drop reason=decrypt-failed peer=${GW.publicKey} from=10.0.0.1:51820 len=64`));
    // drops only after the newest one logged: exactly those, no lost line
    log.record(0, "replayed", null, null, 32, { address: "10.0.0.9", port: 1 });
    await agent.logDropsNow();
    expect(lines().slice(65 + 65)).toEqual(["dataplane: drop reason=replayed from=10.0.0.9:1 len=32"]);
  });

  test("the lines go to consola's dataplane tag", () => {
    const tagged: string[] = [];
    const base = { ...recordingLogger(), withTag: (tag: string) => ({ ...recordingLogger(), debug: (m: string) => tagged.push(`[${tag}] ${m}`) }) };
    const log = new DropLog();
    log.record(0, "gateway-no-grant", GW.publicKey, grantless, 60, null);
    taggedLogger(base).debug(dropLine(log.since(0).entries[0]!, new Map([[GW.publicKey, "Y7299"]])));
    expect(tagged).toEqual(["[dataplane] drop reason=gateway-no-grant peer=Y7299 proto=tcp src=100.64.0.2 dst=172.26.0.251:80 len=60"]);
  });

  test("polled only when dropLogIntervalMs is set (run -v 5): no stats polls otherwise", async () => {
    for (const interval of [undefined, 10]) {
      const { agent, log, lines, polls } = dropAgent(interval === undefined ? {} : { dropLogIntervalMs: interval });
      log.record(1, "no-peer-for-destination", null, grantless, 40, null);
      agent.start();
      await new Promise((r) => setTimeout(r, 80));
      await agent.stop();
      if (interval === undefined) {
        expect(polls()).toBe(0);
        expect(lines()).toEqual([]);
      } else {
        expect(polls()).toBeGreaterThanOrEqual(2);
        expect(lines()).toEqual(["dataplane: drop reason=no-peer-for-destination proto=tcp src=100.64.0.2 dst=172.26.0.251:80 len=40"]);
      }
    }
  });
});

function icmp(): Uint8Array {
  return ipPacket({ src: "100.64.0.3", dst: "100.64.0.2", proto: "icmp" });
}
