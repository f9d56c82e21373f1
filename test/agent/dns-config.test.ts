/**
 * @module test/agent/dns-config.test
 * The agent's DNS: core/agent/dns-config.ts (NetMap -> stub peers, forward targets through an
 * injected activeGatewayFor, forwarder policy, flags) and platform/linux/agent-dns.ts on loopback
 * only (no root, no namespaces): the dispatch by source (local -> stub, peers -> forwarder or
 * REFUSED), the gateway forwarder refusing a querier without a grant and filtering by the
 * current NetMap, hosts reloads, REFUSED for a client without a gateway, gateway fallback order,
 * and systemd-resolved registration against a fake runner (never the host's resolver).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  dnsSettingsFrom,
  forwardTargets,
  forwarderPolicyFor,
  isLocalQuerier,
  lowestMetricGateway,
  parseDnsZone,
  stubPeersFrom,
  usableUpstreams,
} from "../../core/agent/dns-config.ts";
import { renderStatus, buildStatus } from "../../core/agent/status.ts";
import { CLASS_IN, decodeMessage, encodeMessage, makeQuery, makeResponse, RCODE, rcodeName, TYPE } from "../../core/dns/codec.ts";
import { recordingLogger, silentLogger } from "../../core/log.ts";
import { formatAddress, parseAddress } from "../../core/net/address.ts";
import type { NetMap, NetMapGatewayRule } from "../../core/policy/netmap.ts";
import type { CommandRunner } from "../../core/runner.ts";
import { type AgentDns, type AgentDnsOptions, startAgentDns } from "../../platform/linux/agent-dns.ts";
import { createExchange } from "../../platform/linux/dns.ts";
import { gatewayPeer, plainPeer, sampleNetMap } from "./fixtures.ts";

const running: AgentDns[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const d of running.splice(0)) await d.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function twoGateways(): NetMap {
  const gw2 = gatewayPeer({ id: "GW002", name: "backup", virtualAddress: "100.64.0.9", allowedIps: ["100.64.0.9/32", "10.9.0.0/16"], gatewayFor: ["10.9.0.0/16", "192.168.50.0/24"], dnsNames: [] });
  const map = sampleNetMap([gatewayPeer(), gw2, plainPeer()]);
  map.routes = [
    { prefix: "10.9.0.0/16", via: "GW002", priority: 50, draining: false, withdrawn: false, metricHint: 50 },
    { prefix: "192.168.50.0/24", via: "GW001", priority: 100, draining: false, withdrawn: false, metricHint: 100 },
    { prefix: "192.168.50.0/24", via: "GW002", priority: 100, draining: true, withdrawn: false, metricHint: 1100 },
  ];
  return map;
}

/** The gateway's own NetMap: client A (100.64.0.2) may reach 10.0.0.0/24 on port 5432 only. */
function gatewayNetMap(rules: NetMapGatewayRule[]): NetMap {
  return {
    version: 1,
    self: { id: "GW001", name: "router", virtualAddress: "100.64.0.1", network: "100.64.0.0/10", active: true, gateway: { subnets: [{ prefix: "10.0.0.0/24", nat: true, source: "discovered", draining: false, priority: 100 }] } },
    peers: [{ id: "CLA01", name: "client a", publicKey: "k", virtualAddress: "100.64.0.2", allowedIps: ["100.64.0.2/32"], gatewayFor: [], dnsNames: [] }],
    routes: [],
    inboundRules: [],
    outboundRules: [],
    gatewayRules: rules,
  };
}

const RULE_A: NetMapGatewayRule = { action: "allow", sender: "CLA01", senderAddress: "100.64.0.2", subnet: "10.0.0.0/24", nat: true, dst: "10.0.0.0/24", protocol: "tcp", ports: "5432", policy: "db" };

describe("core/agent/dns-config", () => {
  test("stub peers: every NetMap peer and this system", () => {
    const peers = stubPeersFrom(sampleNetMap());
    expect(peers.map((p) => `${p.id} ${p.name} ${p.virtualAddress}`)).toEqual(["GW001 router 100.64.0.1", "PEER2 desk 100.64.0.3", "ABC12 laptop 100.64.0.2"]);
    expect(peers[0]!.dnsNames).toEqual(["router.waygate"]);
  });

  test("default active gateway: lowest metricHint per prefix, ties to the lower id, unknown prefix null", () => {
    const pick = lowestMetricGateway(twoGateways());
    expect(pick("192.168.50.0/24")).toBe("GW001");
    expect(pick("10.9.0.0/16")).toBe("GW002");
    expect(pick("10.1.0.0/16")).toBeNull();
    const tie = lowestMetricGateway({ routes: [{ prefix: "p", via: "B", priority: 1, draining: false, withdrawn: false, metricHint: 7 }, { prefix: "p", via: "A", priority: 1, draining: false, withdrawn: false, metricHint: 7 }] });
    expect(tie("p")).toBe("A");
  });

  test("forward targets: one per gateway, ordered by the chosen route's metric; failover's choice wins; self, unknown and inactive skipped", () => {
    const map = twoGateways();
    expect(forwardTargets(map, lowestMetricGateway(map))).toEqual([
      { gatewayId: "GW002", address: "100.64.0.9", prefix: "10.9.0.0/16" },
      { gatewayId: "GW001", address: "100.64.0.1", prefix: "192.168.50.0/24" },
    ]);
    // Failover moved 192.168.50.0/24 to GW002 and has nothing healthy for 10.9.0.0/16.
    const failover = (p: string) => (p === "192.168.50.0/24" ? "GW002" : null);
    expect(forwardTargets(map, failover)).toEqual([{ gatewayId: "GW002", address: "100.64.0.9", prefix: "192.168.50.0/24" }]);
    expect(forwardTargets(map, () => "ABC12")).toEqual([]);
    expect(forwardTargets(map, () => "NOPE1")).toEqual([]);
    expect(forwardTargets({ ...map, self: { ...map.self, active: false } }, lowestMetricGateway(map))).toEqual([]);
    expect(forwardTargets(sampleNetMap([plainPeer()]), () => "GW001")).toEqual([]);
  });

  test("forwarder policy only for an active gateway, from its gatewayRules (ports ignored)", () => {
    expect(forwarderPolicyFor(sampleNetMap())).toBeNull();
    const gw = gatewayNetMap([RULE_A]);
    expect(forwarderPolicyFor({ ...gw, self: { ...gw.self, active: false } })).toBeNull();
    const policy = forwarderPolicyFor(gw)!;
    expect(policy.hasGrant("100.64.0.2")).toBe(true);
    expect(policy.hasGrant("100.64.0.3")).toBe(false);
    expect(policy.mayReach("100.64.0.2", parseAddress("10.0.0.30").bytes)).toBe(true);
    expect(policy.mayReach("100.64.0.2", parseAddress("192.168.0.30").bytes)).toBe(false);
  });

  test("upstreams that are our own listeners are skipped; local queriers", () => {
    expect(usableUpstreams(["10.0.0.53", "127.0.0.1", "100.64.0.1", "::ffff:100.64.0.1"], ["100.64.0.1", "127.0.0.1"])).toEqual({
      upstreams: ["10.0.0.53"],
      skipped: ["127.0.0.1", "100.64.0.1", "::ffff:100.64.0.1"],
    });
    expect(isLocalQuerier("127.0.0.1", ["100.64.0.2"])).toBe(true);
    expect(isLocalQuerier("127.0.0.53", ["100.64.0.2"])).toBe(true);
    expect(isLocalQuerier("::1", ["100.64.0.2"])).toBe(true);
    expect(isLocalQuerier("::ffff:100.64.0.2", ["100.64.0.2"])).toBe(true);
    expect(isLocalQuerier("100.64.0.3", ["100.64.0.2"])).toBe(false);
    expect(isLocalQuerier("garbage", ["100.64.0.2"])).toBe(false);
  });

  test("flags: --no-dns, zone, paths from flags, then environment, then /etc", () => {
    expect(dnsSettingsFrom({ dns: false }, {})).toBeNull();
    expect(dnsSettingsFrom({ dns: true }, {})).toEqual({ zone: "waygate", resolvConfPath: "/etc/resolv.conf", hostsPath: "/etc/hosts" });
    expect(dnsSettingsFrom({ "dns-zone": "Corp.Example." }, { WAYGATE_RESOLV_CONF: "/tmp/r", WAYGATE_HOSTS_FILE: "/tmp/h" })).toEqual({
      zone: "corp.example",
      resolvConfPath: "/tmp/r",
      hostsPath: "/tmp/h",
    });
    expect(dnsSettingsFrom({ "resolv-conf": "/a", "hosts-file": "/b" }, { WAYGATE_RESOLV_CONF: "/tmp/r", WAYGATE_HOSTS_FILE: "/tmp/h" })).toMatchObject({ resolvConfPath: "/a", hostsPath: "/b" });
    for (const bad of [".", "", "a..b", "in-addr.arpa"]) expect(() => parseDnsZone(bad)).toThrow(expect.objectContaining({ code: "E_DNS" }));
  });
});

// ---------------------------------------------------------------------------------------------

interface Answer {
  rcode: string;
  answers: string[];
}

async function ask(dns: AgentDns, from: string, name: string, type = TYPE.A): Promise<Answer> {
  const bytes = await dns.handle(encodeMessage(makeQuery(0x4242, name, type)), { address: from, transport: "udp" });
  const m = decodeMessage(bytes!);
  expect(m.id).toBe(0x4242);
  return { rcode: rcodeName(m.rcode), answers: m.answers.map((r) => (r.data.kind === "address" ? formatAddress(r.data.address) : r.data.kind)) };
}

/** An upstream/gateway exchange answering from a table; records where each query went. */
function fakeExchange(table: Record<string, Record<string, string[] | "NXDOMAIN" | "REFUSED" | "fail">>) {
  const calls: string[] = [];
  const exchange = async (query: Uint8Array, upstream: string): Promise<Uint8Array> => {
    const q = decodeMessage(query);
    const name = q.questions[0]!.name.toLowerCase();
    calls.push(`${upstream} ${name}`);
    const entry = table[upstream]?.[name];
    if (entry === undefined || entry === "fail") throw new Error(`no answer from ${upstream}`);
    if (entry === "NXDOMAIN" || entry === "REFUSED") return encodeMessage(makeResponse(q, RCODE[entry]));
    const res = makeResponse(q, RCODE.NOERROR);
    for (const a of entry) res.answers.push({ name: q.questions[0]!.name, type: TYPE.A, class: CLASS_IN, ttl: 30, data: { kind: "address", address: parseAddress(a).bytes } });
    return encodeMessage(res);
  };
  return { exchange, calls };
}

async function start(overrides: Partial<AgentDnsOptions> & Pick<AgentDnsOptions, "virtualAddress">): Promise<AgentDns> {
  const dns = await startAgentDns({
    interfaceName: "wgtest0",
    logger: silentLogger,
    runner: { run: async (argv) => Promise.reject(new Error(`unexpected command ${argv.join(" ")}`)) },
    now: () => Date.now(),
    listenPort: 0,
    overlayPort: 0,
    register: false,
    ...overrides,
  });
  running.push(dns);
  return dns;
}

function tempFiles(resolv: string, hosts: string): { resolvConfPath: string; hostsPath: string } {
  const dir = mkdtempSync(join(tmpdir(), "waygate-agent-dns-"));
  dirs.push(dir);
  const resolvConfPath = join(dir, "resolv.conf");
  const hostsPath = join(dir, "hosts");
  writeFileSync(resolvConfPath, resolv);
  writeFileSync(hostsPath, hosts);
  return { resolvConfPath, hostsPath };
}

describe("platform/linux/agent-dns", () => {
  test("gateway: filters by the querier's grant, REFUSED without one, hosts file, policy follows the NetMap", async () => {
    const files = tempFiles("nameserver 10.0.0.53\n", "127.0.0.1 localhost\n10.0.0.40 printer.corp.net\n");
    const { exchange, calls } = fakeExchange({ "10.0.0.53": { "dbserver1.corp.net": ["10.0.0.30"], "other.corp.net": ["192.168.0.30"], "mixed.corp.net": ["192.168.0.31", "10.0.0.31"] } });
    const dns = await start({ virtualAddress: "127.0.0.2", loopback: false, exchange, ...files });
    // Before any NetMap nobody is a gateway's querier.
    expect(await ask(dns, "100.64.0.2", "dbserver1.corp.net")).toEqual({ rcode: "REFUSED", answers: [] });
    await dns.hook(gatewayNetMap([RULE_A]), { revision: 1, source: "server", previous: null });
    expect(dns.status().forwarder).toEqual({ upstreams: ["10.0.0.53"], hostsEntries: 2 });
    expect(await ask(dns, "100.64.0.2", "dbserver1.corp.net")).toEqual({ rcode: "NOERROR", answers: ["10.0.0.30"] });
    expect(await ask(dns, "100.64.0.2", "other.corp.net")).toEqual({ rcode: "NXDOMAIN", answers: [] });
    expect(await ask(dns, "100.64.0.2", "mixed.corp.net")).toEqual({ rcode: "NOERROR", answers: ["10.0.0.31"] });
    expect(await ask(dns, "100.64.0.2", "printer.corp.net")).toEqual({ rcode: "NOERROR", answers: ["10.0.0.40"] });
    // B has no grant through this gateway: refused before anything is looked up.
    const before = calls.length;
    expect(await ask(dns, "100.64.0.3", "dbserver1.corp.net")).toEqual({ rcode: "REFUSED", answers: [] });
    expect(await ask(dns, "::ffff:100.64.0.3", "printer.corp.net")).toEqual({ rcode: "REFUSED", answers: [] });
    expect(calls.length).toBe(before);
    expect(dns.forwarder!.counters["refused:no-grant"]).toBe(2);
    // A's own machine asking the gateway's listener is served by the gateway's stub (peer names).
    expect(await ask(dns, "127.0.0.2", "cla01.id.waygate")).toEqual({ rcode: "NOERROR", answers: ["100.64.0.2"] });
    // The grant is revoked: the next NetMap refuses A too; counters survive.
    await dns.hook(gatewayNetMap([]), { revision: 2, source: "server", previous: null });
    expect(await ask(dns, "100.64.0.2", "dbserver1.corp.net")).toEqual({ rcode: "REFUSED", answers: [] });
    expect(dns.forwarder!.counters["refused:no-grant"]).toBe(3);
    // A hosts file change is picked up on the next NetMap.
    writeFileSync(files.hostsPath, "10.0.0.40 printer.corp.net\n10.0.0.41 scanner.corp.net\n");
    await dns.hook(gatewayNetMap([RULE_A]), { revision: 3, source: "server", previous: null });
    expect(await ask(dns, "100.64.0.2", "scanner.corp.net")).toEqual({ rcode: "NOERROR", answers: ["10.0.0.41"] });
    // No longer a gateway: peers are refused (no open relay), the forwarder is gone.
    await dns.hook(sampleNetMap(), { revision: 4, source: "server", previous: null });
    expect(dns.forwarder).toBeNull();
    expect(await ask(dns, "100.64.0.2", "dbserver1.corp.net")).toEqual({ rcode: "REFUSED", answers: [] });
    expect(dns.counters["refused:not-local"]).toBe(2);
  });

  test("client: peer names locally, other names to the active gateway, next gateway on NXDOMAIN or failure", async () => {
    const { exchange, calls } = fakeExchange({
      "100.64.0.9:53": { "a.corp.net": "NXDOMAIN", "b.corp.net": ["10.9.0.5"], "c.corp.net": "fail", "d.corp.net": "REFUSED" },
      "100.64.0.1:53": { "a.corp.net": ["192.168.50.5"], "c.corp.net": ["192.168.50.6"], "d.corp.net": "NXDOMAIN" },
    });
    const dns = await start({ virtualAddress: "127.0.0.2", overlayPort: 53, loopback: false, exchange });
    await dns.hook(twoGateways(), { revision: 1, source: "server", previous: null });
    expect(dns.status().forwardTo).toEqual(["GW002 100.64.0.9", "GW001 100.64.0.1"]);
    expect(await ask(dns, "127.0.0.1", "router.waygate")).toEqual({ rcode: "NOERROR", answers: ["100.64.0.1"] });
    expect(await ask(dns, "127.0.0.1", "abc12.id.waygate")).toEqual({ rcode: "NOERROR", answers: ["100.64.0.2"] });
    expect(await ask(dns, "127.0.0.1", "nobody.waygate")).toEqual({ rcode: "NXDOMAIN", answers: [] });
    expect(await ask(dns, "127.0.0.1", "b.corp.net")).toEqual({ rcode: "NOERROR", answers: ["10.9.0.5"] });
    expect(await ask(dns, "127.0.0.1", "a.corp.net")).toEqual({ rcode: "NOERROR", answers: ["192.168.50.5"] });
    expect(await ask(dns, "127.0.0.1", "c.corp.net")).toEqual({ rcode: "NOERROR", answers: ["192.168.50.6"] });
    // Nobody says yes: NXDOMAIN beats REFUSED.
    expect(await ask(dns, "127.0.0.1", "d.corp.net")).toEqual({ rcode: "NXDOMAIN", answers: [] });
    expect(calls.filter((c) => !c.includes("waygate"))).toEqual([
      "100.64.0.9:53 b.corp.net",
      "100.64.0.9:53 a.corp.net",
      "100.64.0.1:53 a.corp.net",
      "100.64.0.9:53 c.corp.net",
      "100.64.0.1:53 c.corp.net",
      "100.64.0.9:53 d.corp.net",
      "100.64.0.1:53 d.corp.net",
    ]);
    // A peer asking this client's listener is refused: the stub is for this machine only.
    expect(await ask(dns, "100.64.0.3", "b.corp.net")).toEqual({ rcode: "REFUSED", answers: [] });
  });

  test("client without a gateway: REFUSED from the stub itself, nothing sent; peer names still answered over a real socket", async () => {
    const { exchange, calls } = fakeExchange({});
    const dns = await start({ virtualAddress: "127.0.0.2", exchange });
    await dns.hook(sampleNetMap([plainPeer()]), { revision: 1, source: "server", previous: null });
    expect(await ask(dns, "127.0.0.1", "dbserver1.corp.net")).toEqual({ rcode: "REFUSED", answers: [] });
    expect(calls).toEqual([]);
    expect(dns.counters["refused:no-gateway"]).toBe(1);
    const status = dns.status();
    expect(status.listen).toHaveLength(2);
    expect(status.forwardTo).toEqual([]);
    expect(status.registration).toBe("off");
    // The loopback listener, through a real UDP socket.
    const real = createExchange({ timeoutMs: 1000 });
    const loop = status.listen.find((l) => l.startsWith("127.0.0.1:"))!;
    const reply = decodeMessage(await real(encodeMessage(makeQuery(7, "Desk.Waygate", TYPE.A)), loop));
    expect(reply.answers.map((r) => formatAddress((r.data as { address: Uint8Array }).address))).toEqual(["100.64.0.3"]);
    // status text
    const text = renderStatus({ ...buildStatus({ now: 0, running: true, version: "t", identity: { publicKey: "pk" } as never, interfaceName: null, listenPort: null, netmap: null, stats: null, sync: null, discoveredSubnets: [] }), dns: status });
    expect(text).toMatch(/^DNS:\s+stub 127\.0\.0\.2:\d+, 127\.0\.0\.1:\d+, zone waygate, registration off$/m);
    expect(text).toMatch(/^DNS forwards to:\s+no gateway \(other names: REFUSED\)$/m);
  });

  test("systemd-resolved: revert, register the virtual address for ~zone, default-route while a gateway exists, revert on stop", async () => {
    const calls: string[] = [];
    const runner: CommandRunner = {
      async run(argv) {
        calls.push(argv.join(" "));
        if (argv[0] !== "resolvectl" || !["status", "dns", "domain", "revert", "default-route"].includes(argv[1]!)) throw new Error(`unexpected command ${argv.join(" ")}`);
        return { stdout: "", stderr: "", exitCode: 0 };
      },
    };
    const logger = recordingLogger();
    const dns = await start({ virtualAddress: "127.0.0.2", overlayPort: 0, loopback: false, register: true, runner, logger, exists: () => true, inInitNetns: () => true, zone: "corp.example" });
    const port = Number(dns.status().listen[0]!.split(":")[1]);
    expect(dns.status().registration).toBe("resolved");
    await dns.hook(sampleNetMap(), { revision: 1, source: "server", previous: null });
    await dns.hook(sampleNetMap(), { revision: 2, source: "server", previous: null });
    await dns.hook(sampleNetMap([plainPeer()]), { revision: 3, source: "server", previous: null });
    await dns.stop();
    await dns.stop();
    expect(calls).toEqual([
      "resolvectl status",
      "resolvectl revert wgtest0",
      `resolvectl dns wgtest0 127.0.0.2:${port}`,
      "resolvectl domain wgtest0 ~corp.example",
      "resolvectl default-route wgtest0 yes",
      "resolvectl default-route wgtest0 no",
      "resolvectl revert wgtest0",
    ]);
    expect(logger.lines.some((l) => l.message === "dns: register=resolved link=wgtest0 server=127.0.0.2:" + port + " domains=~corp.example")).toBe(true);
  });

  test("systemd-resolved is never asked from another network namespace", async () => {
    const logger = recordingLogger();
    const dns = await start({ virtualAddress: "127.0.0.2", loopback: false, register: true, logger, exists: () => true, inInitNetns: () => false });
    await dns.hook(sampleNetMap(), { revision: 1, source: "server", previous: null });
    expect(dns.status().registration).toBe("skipped");
    expect(logger.lines.map((l) => l.message)).toContain("dns: register=skipped reason=other-netns link=wgtest0");
  });
});
