/**
 * @module test/agent/status
 * `waygate status`: the Enclave-style text (identity, virtual address and network, a block per
 * peer with Peer state, Endpoint, Last activity, Transfer, Link RTT, Gateway for, DNS names,
 * ACLs), --json with the same data, the offline form from disk, and never the private key.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildStatus, formatAgo, formatBytes, renderStatus, type StatusInput } from "../../core/agent/status.ts";
import { publicIdentity, writeIdentity, writeSavedNetMap } from "../../core/agent/state.ts";
import { newSyncState } from "../../core/agent/client.ts";
import { runCli } from "../../cmd/main.ts";
import { ENROLLED_IDENTITY, gatewayPeer, GW, PEER2, plainPeer, sampleNetMap, SELF } from "./fixtures.ts";

const identity = ENROLLED_IDENTITY;

function input(overrides: Partial<StatusInput> = {}): StatusInput {
  const sync = newSyncState();
  sync.connected = true;
  return {
    now: 1_000_000,
    running: true,
    version: "0.1.0-dev",
    identity: publicIdentity(identity),
    interfaceName: "wg-waygate",
    listenPort: 51820,
    netmap: { revision: 12, netmap: sampleNetMap(), source: "server", appliedAt: 990_000 },
    stats: {
      publicKey: SELF.publicKey,
      peers: [
        { publicKey: GW.publicKey, endpoint: { address: "10.0.0.1", port: 51820 }, latestHandshakeMs: 997_000, rxBytes: 2048, txBytes: 5_000_000, handshakes: 1, handshakeInitiations: 1, allowedIps: [], persistentKeepalive: 25, drops: {} },
        { publicKey: PEER2.publicKey, endpoint: null, latestHandshakeMs: 0, rxBytes: 0, txBytes: 0, handshakes: 0, handshakeInitiations: 0, allowedIps: [], persistentKeepalive: 25, drops: {} },
      ],
      drops: {},
      gateway: null,
      cookieRepliesSent: 0,
      underLoad: false,
    },
    sync,
    discoveredSubnets: ["10.0.0.0/24"],
    ...overrides,
  };
}

describe("renderStatus", () => {
  test("Enclave-style blocks", () => {
    const text = renderStatus(buildStatus(input()));
    expect(text).toBe(
      [
        "Local identity:   ABC12 (laptop)",
        `Public key:       ${SELF.publicKey}`,
        "Virtual address:  100.64.0.2 (network 100.64.0.0/10)",
        "Tags:             laptops",
        "Agent:            running, version 0.1.0-dev",
        "Interface:        wg-waygate, UDP port 51820",
        "Control plane:    http://10.0.0.1:7070 (connected)",
        "NetMap:           revision 12 from the control plane, applied 10 seconds ago",
        "Local subnets:    10.0.0.0/24",
        "",
        "Peer: GW001 (router)",
        "   Peer state:       Up",
        "   Identity:         GW001",
        `   Public key:       ${GW.publicKey}`,
        "   Endpoint:         10.0.0.1:51820",
        "   Last activity:    3 seconds ago",
        "   Transfer:         2.00 KiB received, 4.77 MiB sent",
        "   Link RTT:         -",
        "   Virtual address:  100.64.0.1",
        "   Gateway for:      192.168.50.0/24",
        "   DNS names:        router.waygate",
        "   ACLs:             allow tcp/22 to peer: 100.64.0.2/32 -> 192.168.50.0/24 (policy lan-ssh)",
        "",
        "Peer: PEER2 (desk)",
        "   Peer state:       Idle (no session)",
        "   Identity:         PEER2",
        `   Public key:       ${PEER2.publicKey}`,
        "   Endpoint:         [fd00::3]:51820",
        "   Last activity:    never",
        "   Transfer:         0 B received, 0 B sent",
        "   Link RTT:         -",
        "   Virtual address:  100.64.0.3",
        "   Gateway for:      -",
        "   DNS names:        desk.waygate",
        "   ACLs:             allow any to peer: 100.64.0.2/32 -> 100.64.0.3/32 (policy desk)",
        "",
      ].join("\n"),
    );
  });

  test("a gateway shows what it serves; an inactive system says why it has no peers", () => {
    const map = sampleNetMap([]);
    map.self.gateway = { subnets: [{ prefix: "192.168.50.0/24", nat: true, source: "discovered", draining: false, priority: 100 }] };
    const text = renderStatus(buildStatus(input({ netmap: { revision: 1, netmap: map, source: "server", appliedAt: 1 } })));
    expect(text).toContain("Gateway for:      192.168.50.0/24 (NAT)\n");
    expect(text).toContain("No peers.");
    map.self.active = false;
    expect(renderStatus(buildStatus(input({ netmap: { revision: 1, netmap: map, source: "server", appliedAt: 1 } })))).toContain("State:            inactive (disabled or awaiting approval): no peers");
  });

  test("failover: a Subnet block per routed subnet (active, candidates, last switch), before the peers; a gateway's upstream", () => {
    const status = buildStatus(input());
    status.failover = [
      {
        prefix: "192.168.50.0/24",
        group: "GW001,GW002",
        active: "GW001",
        effective: { gateway: "GW001", via: "192.168.50.0/24", reason: null },
        candidates: [
          { id: "GW001", name: "router", priority: 100, draining: false, own: true, state: "up", healthy: true, rttMs: 0.42, missedProbes: 0, upSince: 900_000 },
          { id: "GW002", name: "backup", priority: 50, draining: true, own: true, state: "withdrawn", healthy: false, rttMs: null, missedProbes: 0, upSince: null },
          { id: "GW003", name: "", priority: 100, draining: false, own: false, state: "down", healthy: false, rttMs: 3.5, missedProbes: 9, upSince: null },
        ],
        lastSwitch: { from: "GW002", to: "GW001", reason: "withdrawn", at: 988_000 },
      },
      {
        prefix: "10.0.0.0/16",
        group: "GW001",
        active: null,
        effective: { gateway: null, via: null, reason: "no-healthy-gateway" },
        candidates: [{ id: "GW001", name: "router", priority: 100, draining: false, own: true, state: "unknown", healthy: false, rttMs: null, missedProbes: 1, upSince: null }],
        lastSwitch: null,
      },
      {
        prefix: "10.0.1.0/24",
        group: "GW002",
        active: null,
        effective: { gateway: "GW001", via: "10.0.0.0/8", reason: null },
        candidates: [],
        lastSwitch: { from: "GW002", to: null, reason: "active-down", at: 999_000 },
      },
    ];
    status.upstream = [{ prefix: "192.168.50.0/24", interface: "eth1", withdrawn: true, reason: "link-down", linkUp: false, hosts: ["192.168.50.9"], lastHostAnswerMs: null }];
    const text = renderStatus(status);
    expect(text).toContain("Upstream:         192.168.50.0/24 on eth1: withdrawn (link-down), hosts 192.168.50.9\n");
    expect(text).toContain(
      [
        "",
        "Subnet: 192.168.50.0/24",
        "   Active gateway:   GW001 (router)",
        "   Candidates:       GW001 (router): up, RTT 0.42 ms, priority 100, active",
        "                     GW002 (backup): withdrawn (cannot reach the subnet), priority 50, draining",
        "                     GW003: down (probes unanswered), RTT 3.5 ms, priority 100, inherited from a covering route",
        "   Last switch:      GW002 (backup) -> GW001 (router) (withdrawn), 12 seconds ago",
        "",
        "Subnet: 10.0.0.0/16",
        "   Active gateway:   none: no healthy gateway (packets are dropped and counted, never sent outside the tunnel)",
        "   Candidates:       GW001 (router): unknown (no answer yet), priority 100",
        "   Last switch:      none",
        "",
        "Subnet: 10.0.1.0/24",
        "   Active gateway:   none (carried by GW001 for 10.0.0.0/8)",
        "   Candidates:       -",
        "   Last switch:      GW002 -> none (active-down), 1 second ago",
        "",
        "Peer: GW001 (router)",
      ].join("\n"),
    );
    // --json is the same object: the block is there as it is.
    expect(JSON.parse(JSON.stringify(status)).failover[0].lastSwitch).toEqual({ from: "GW002", to: "GW001", reason: "withdrawn", at: 988_000 });
  });

  test("failover: one block per group, naming a few of its subnets and counting the rest; JSON keeps every subnet", () => {
    const status = buildStatus(input());
    const candidates = [
      { id: "GW001", name: "router", priority: 100, draining: false, own: true, state: "down" as const, healthy: false, rttMs: null, missedProbes: 4, upSince: null },
      { id: "GW002", name: "backup", priority: 100, draining: false, own: true, state: "up" as const, healthy: true, rttMs: 1.5, missedProbes: 0, upSince: 900_000 },
    ];
    const lastSwitch = { from: "GW001", to: "GW002", reason: "active-down" as const, at: 995_000 };
    const hosts = Array.from({ length: 4094 }, (_, i) => `172.26.${(i + 1) >> 8}.${(i + 1) & 255}/32`);
    status.failover = [
      ...hosts.map((prefix) => ({
        prefix,
        group: "GW001,GW002",
        active: "GW002",
        effective: { gateway: "GW002", via: prefix, reason: null },
        candidates,
        lastSwitch,
      })),
      // Same candidates, but split off (a withdrawal covered only these): its own block.
      ...["10.9.0.1/32", "10.9.0.2/32"].map((prefix, i) => ({
        prefix,
        group: "GW001,GW002#2",
        active: null,
        effective: i === 0 ? { gateway: "GW003", via: "10.9.0.0/16", reason: null } : { gateway: null, via: null, reason: "no-healthy-gateway" as const },
        candidates,
        lastSwitch: null,
      })),
    ];
    const text = renderStatus(status);
    expect(text).toContain(
      [
        "",
        "Subnets: 172.26.0.1/32, 172.26.0.2/32, 172.26.0.3/32 and 4091 more (4094 subnets, one failover group)",
        "   Active gateway:   GW002 (backup)",
        "   Candidates:       GW001 (router): down (probes unanswered), priority 100",
        "                     GW002 (backup): up, RTT 1.5 ms, priority 100, active",
        "   Last switch:      GW001 (router) -> GW002 (backup) (active-down), 5 seconds ago",
        "",
        "Subnets: 10.9.0.1/32, 10.9.0.2/32 (2 subnets, one failover group)",
        "   Active gateway:   none (carried by GW003 for 10.9.0.0/16)",
        "   Carried by:       GW003 for 10.9.0.0/16 (1 subnet)",
        "                     dropped: no healthy gateway (1 subnet)",
        "   Candidates:       GW001 (router): down (probes unanswered), priority 100",
        "                     GW002 (backup): up, RTT 1.5 ms, priority 100",
        "   Last switch:      none",
        "",
        "Peer: GW001 (router)",
      ].join("\n"),
    );
    expect(text.split("\n").length).toBeLessThan(60);
    expect(text).not.toContain("172.26.0.4/32");
    const json = JSON.parse(JSON.stringify(status));
    expect(json.failover).toHaveLength(4096);
    expect(json.failover[4093]).toMatchObject({ prefix: "172.26.15.254/32", group: "GW001,GW002", active: "GW002" });
  });

  test("helpers", () => {
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(1024 * 1024 * 3)).toBe("3.00 MiB");
    expect(formatAgo(null, 5)).toBe("never");
    expect(formatAgo(0, 1000)).toBe("1 second ago");
    expect(formatAgo(0, 125_000)).toBe("2 minutes, 5 seconds ago");
  });
});

describe("waygate status (no agent running)", () => {
  let dir: string;
  let printed: string[];
  const origWrite = process.stdout.write.bind(process.stdout);
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "wg-status-"));
    printed = [];
    process.stdout.write = ((chunk: string) => {
      printed.push(String(chunk));
      return true;
    }) as typeof process.stdout.write;
  });
  afterEach(() => {
    process.stdout.write = origWrite;
    rmSync(dir, { recursive: true, force: true });
  });

  test("text and --json from the saved NetMap; no private key in either", async () => {
    writeIdentity(dir, identity);
    writeSavedNetMap(dir, { serverUrl: "http://10.0.0.1:7070", revision: 8, savedAt: 5, netmap: sampleNetMap([gatewayPeer(), plainPeer()]) });
    expect(await runCli(["status", "--state-dir", dir])).toBe(0);
    const text = printed.join("");
    expect(text).toContain("Agent:            not running (showing the NetMap saved on disk)");
    expect(text).toContain("Peer state:       Unknown (agent not running)");
    expect(text).toContain("Gateway for:      192.168.50.0/24");
    printed.length = 0;
    expect(await runCli(["status", "--state-dir", dir, "--json"])).toBe(0);
    const json = JSON.parse(printed.join(""));
    expect(json.running).toBe(false);
    expect(json.netmap.revision).toBe(8);
    expect(json.peers[0].gatewayFor).toEqual(["192.168.50.0/24"]);
    expect(printed.join("") + text).not.toContain(SELF.privateKey);
  });

  test("not enrolled: a usage error that says what to run", async () => {
    const errors: string[] = [];
    const origErr = console.error;
    console.error = (m: string) => errors.push(m);
    try {
      expect(await runCli(["status", "--state-dir", dir])).toBe(20);
    } finally {
      console.error = origErr;
    }
    expect(errors.join("\n")).toContain("waygate enrol --server URL --key KEY");
  });
});

describe("Link RTT and last activity", () => {
  test("from the Device's stats: `0.4 ms` (one decimal below 10 ms), JSON the number; last activity is the later of rx and handshake", async () => {
    const { formatRtt } = await import("../../core/agent/status.ts");
    const base = input();
    const [gw, desk] = base.stats!.peers;
    base.stats!.peers = [
      { ...gw!, rttMs: 0.42, lastRxMs: 999_000 }, // handshake 3 s ago, a keepalive 1 s ago
      { ...desk!, rttMs: 23.4, lastRxMs: 0 },
    ];
    const status = buildStatus(base);
    expect(status.peers.map((p) => [p.rttMs, p.lastActivityAt])).toEqual([
      [0.42, 999_000],
      [23.4, null],
    ]);
    const text = renderStatus(status);
    expect(text).toContain(["   Last activity:    1 second ago", "   Transfer:         2.00 KiB received, 4.77 MiB sent", "   Link RTT:         0.4 ms"].join("\n"));
    expect(text).toContain(["   Last activity:    never", "   Transfer:         0 B received, 0 B sent", "   Link RTT:         23 ms"].join("\n"));
    expect(JSON.parse(JSON.stringify(status)).peers[0]).toMatchObject({ rttMs: 0.42, lastActivityAt: 999_000, lastHandshakeAt: 997_000 });
    expect([formatRtt(0), formatRtt(0.04), formatRtt(9.94), formatRtt(9.96), formatRtt(123.6)]).toEqual(["0.0 ms", "0.0 ms", "9.9 ms", "10 ms", "124 ms"]);
    // Stats from a host that builds them by hand without the new fields: "-" and the handshake.
    const plain = renderStatus(buildStatus(input()));
    expect(plain).toContain("   Last activity:    3 seconds ago");
    expect(plain).toContain("   Link RTT:         -");
  });

  test("measured by two Devices: 7 ms each way shows as 14 ms", async () => {
    const { twoDevices, icmpEcho } = await import("../dataplane/memory.ts");
    const rig = twoDevices();
    rig.a.device.handleTunPacket(icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2" }));
    for (let n = 0; rig.net.queue.length > 0 && n < 100; n++) {
      const d = rig.net.queue.shift()!;
      rig.clock.advance(7);
      (d.to.address === rig.a.endpoint.address ? rig.a : rig.b).device.handleDatagram(d.data, d.from);
    }
    const netmap = sampleNetMap([gatewayPeer({ publicKey: rig.b.publicKey })]);
    const status = buildStatus(input({ now: rig.clock.now(), netmap: { revision: 1, netmap, source: "server", appliedAt: 1 }, stats: rig.a.device.stats() }));
    expect(status.peers[0]).toMatchObject({ state: "up", rttMs: 14 });
    expect(renderStatus(status)).toContain("   Link RTT:         14 ms\n");
  });
});
