/**
 * @module test/agent/acl-config.test
 * core/agent/acl-config.ts: NetMap inboundRules -> the Device's InboundAcl list, on hand-built
 * NetMaps (peers by id -> public key, allow / deny / "any" kept exactly, unknown peers left out,
 * stable order, a gateway's DNS for its senders, inactive systems) and on NetMaps the policy
 * compiler makes for the office network: the compiled ACL agrees with the NetMap's `rulesPermit`,
 * and, on two in-memory Devices configured from the gateway's NetMap (deviceGatewayConfig +
 * inboundAcls), a subnet-only grant reaches the LAN but not the gateway's own services until a
 * direct policy opens one.
 */
import { describe, expect, test } from "bun:test";
import { inboundAcls } from "../../core/agent/acl-config.ts";
import { deviceGatewayConfig, firewallConfig } from "../../core/agent/gateway-config.ts";
import { type InboundAcl, InboundAclFilter } from "../../core/dataplane/acl.ts";
import { Device } from "../../core/dataplane/device.ts";
import { PARSE_OK, PacketHeaders } from "../../core/dataplane/headers.ts";
import { normaliseConfig } from "../../core/firewall/firewall.ts";
import { renderIptables } from "../../core/firewall/iptables.ts";
import { silentLogger } from "../../core/log.ts";
import { compile } from "../../core/policy/compile.ts";
import type { PolicyState } from "../../core/policy/model.ts";
import { type NetMap, type NetMapRule, rulesPermit } from "../../core/policy/netmap.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { MemoryNetwork, MemoryTun } from "../dataplane/memory.ts";
import { SYN, ipPacket } from "../dataplane/packets.ts";
import { MONDAY_10, office } from "../policy/fixtures.ts";
import { fakeClock, seededRandom } from "../wire/helpers.ts";
import { GW, PEER2, keyPair, plainPeer, gatewayPeer, sampleNetMap } from "./fixtures.ts";

function rule(over: Partial<NetMapRule>): NetMapRule {
  return { action: "allow", peer: "PEER2", src: "100.64.0.3/32", dst: "100.64.0.2/32", protocol: "any", policy: "p", ...over };
}

describe("inboundAcls on hand-built NetMaps", () => {
  test("one entry per sending peer by public key; allow, deny and any kept exactly; unknown peers left out", () => {
    const netmap: NetMap = {
      ...sampleNetMap(),
      inboundRules: [
        rule({ peer: "GONE1", protocol: "tcp", ports: "22" }),
        rule({ peer: "GW001", src: "100.64.0.1/32", protocol: "icmp", policy: "gw-ping" }),
        rule({ protocol: "any", policy: "desk-all" }),
        rule({ protocol: "tcp", ports: "22", policy: "desk-ssh" }),
        rule({ protocol: "tcp", ports: "22", policy: "desk-ssh-again" }),
        rule({ action: "deny", protocol: "tcp", ports: "23", policy: "no-telnet" }),
      ],
    };
    const acls = inboundAcls(netmap);
    const want: InboundAcl[] = [
      {
        peerPublicKey: PEER2.publicKey,
        allow: [
          { source: "100.64.0.3/32", destination: "100.64.0.2/32", protocol: "any" },
          { source: "100.64.0.3/32", destination: "100.64.0.2/32", protocol: "tcp", ports: "22" },
        ],
        deny: [{ source: "100.64.0.3/32", destination: "100.64.0.2/32", protocol: "tcp", ports: "23" }],
      },
      { peerPublicKey: GW.publicKey, allow: [{ source: "100.64.0.1/32", destination: "100.64.0.2/32", protocol: "icmp" }] },
    ];
    expect(acls).toEqual(want.sort((a, b) => (a.peerPublicKey < b.peerPublicKey ? -1 : 1)));
    // The Device accepts it, and decides as rulesPermit does.
    const filter = new InboundAclFilter(acls);
    const decide = (key: string, spec: Parameters<typeof ipPacket>[0]) => {
      const h = new PacketHeaders();
      const p = ipPacket(spec);
      expect(h.parse(p, p.length)).toBe(PARSE_OK);
      return filter.peer(key)?.permits(h) ?? false;
    };
    expect(decide(PEER2.publicKey, { src: "100.64.0.3", dst: "100.64.0.2", proto: "tcp", dport: 80 })).toBe(true);
    expect(decide(PEER2.publicKey, { src: "100.64.0.3", dst: "100.64.0.2", proto: "tcp", dport: 23 })).toBe(false);
    expect(decide(PEER2.publicKey, { src: "100.64.0.3", dst: "100.64.0.2", proto: "udp", dport: 23 })).toBe(true);
    expect(decide(GW.publicKey, { src: "100.64.0.1", dst: "100.64.0.2", proto: "icmp" })).toBe(true);
    expect(decide(GW.publicKey, { src: "100.64.0.1", dst: "100.64.0.2", proto: "tcp", dport: 22 })).toBe(false);
    expect(inboundAcls(netmap)).toEqual(acls); // stable
  });

  test("no rules: no entries (the Device then admits only answers); an inactive system: none", () => {
    expect(inboundAcls(sampleNetMap())).toEqual([]);
    const inactive = { ...sampleNetMap(), self: { ...sampleNetMap().self, active: false }, inboundRules: [rule({})] };
    expect(inboundAcls(inactive)).toEqual([]);
  });

  test("a gateway's senders get its DNS forwarder on the virtual address, nothing more; other services by option", () => {
    const netmap: NetMap = {
      ...sampleNetMap([plainPeer(), gatewayPeer({ id: "LAP01", publicKey: keyPair(7).publicKey, virtualAddress: "100.64.0.7", allowedIps: ["100.64.0.7/32"], gatewayFor: [] })]),
      self: { id: "GW001", name: "router", virtualAddress: "100.64.0.1", network: "100.64.0.0/10", active: true, gateway: { subnets: [] } },
      gatewayRules: [
        { action: "allow", sender: "LAP01", senderAddress: "100.64.0.7", subnet: "172.26.0.0/20", nat: true, dst: "172.26.0.0/20", protocol: "any", policy: "lan" },
        { action: "allow", sender: "LAP01", senderAddress: "100.64.0.7", subnet: "10.9.0.0/16", nat: true, dst: "10.9.0.0/16", protocol: "any", policy: "lan2" },
        { action: "deny", sender: "PEER2", senderAddress: "100.64.0.3", subnet: "172.26.0.0/20", nat: true, dst: "172.26.0.0/20", protocol: "any", policy: "no" },
      ],
    };
    expect(inboundAcls(netmap)).toEqual([
      {
        peerPublicKey: keyPair(7).publicKey,
        allow: [
          { source: "100.64.0.7", destination: "100.64.0.1", protocol: "udp", ports: "53" },
          { source: "100.64.0.7", destination: "100.64.0.1", protocol: "tcp", ports: "53" },
        ],
      },
    ]);
    expect(inboundAcls(netmap, { gatewayServices: [] })).toEqual([]);
    expect(inboundAcls(netmap, { gatewayServices: [{ protocol: "tcp", port: 853 }] })[0]!.allow).toEqual([
      { source: "100.64.0.7", destination: "100.64.0.1", protocol: "tcp", ports: "853" },
    ]);
  });
});

// ---------------------------------------------------------------- compiled NetMaps

/** The office (test/policy/fixtures.ts) with keys we hold the private halves of. */
function officeWithKeys(extra: Partial<PolicyState> = {}): PolicyState {
  const state = office();
  return {
    ...state,
    systems: state.systems.map((s, i) => ({ ...s, publicKey: keyPair(20 + i).publicKey, endpoint: `192.0.2.${10 + i}:51820` })),
    ...extra,
  };
}

const LAPTOP = "100.64.0.1";
const DB = "100.64.0.2";
const GW_VA = "100.64.0.3";
const PRINTER = "172.26.0.250";

describe("inboundAcls on compiled NetMaps", () => {
  test("the database server admits the laptop on tcp/5432 only, exactly as rulesPermit says", () => {
    const state = officeWithKeys();
    const db = compile(state, "DBSRV", { now: MONDAY_10 });
    const acls = inboundAcls(db);
    expect(acls).toEqual([{ peerPublicKey: keyPair(20).publicKey, allow: [{ source: `${LAPTOP}/32`, destination: `${DB}/32`, protocol: "tcp", ports: "5432" }] }]);
    const filter = new InboundAclFilter(acls);
    const h = new PacketHeaders();
    for (const proto of ["tcp", "udp", "icmp"] as const) {
      for (const dport of [22, 5431, 5432, 5433]) {
        for (const [peerId, key, src] of [["LAPT1", keyPair(20).publicKey, LAPTOP], ["G982V", keyPair(22).publicKey, GW_VA]] as const) {
          const p = ipPacket({ src, dst: DB, proto, dport });
          h.parse(p, p.length);
          const got = filter.peer(key)?.permits(h) ?? false;
          expect(got).toBe(rulesPermit(db.inboundRules, { peer: peerId, src, dst: DB, protocol: proto, port: proto === "icmp" ? undefined : dport }));
        }
      }
    }
  });

  test("the gateway with inboundAclsEnforced: the kernel accepts its virtual address from the tunnel, never its LAN address", () => {
    const gw = compile(officeWithKeys(), "G982V", { now: MONDAY_10 });
    const plan = firewallConfig(gw, { addresses: [{ interface: "eth1", address: "172.26.0.1", subnet: "172.26.0.0/20" }] }, { tunnelInterface: "wg0", inboundAclsEnforced: true })!;
    expect(plan.config.tunnelAddresses).toEqual([GW_VA]);
    const input = renderIptables(normaliseConfig(plan.config)).find((c) => c.chain === "WAYGATE-INPUT")!.rules;
    expect(input).toContain(`-A WAYGATE-INPUT -d ${GW_VA}/32 -i wg0 -j ACCEPT`);
    expect(input.at(-1)).toBe("-A WAYGATE-INPUT -i wg0 -j DROP");
    expect(input.some((r) => r.includes("172.26.0.1"))).toBe(false);
    const without = firewallConfig(gw, { addresses: [] }, { tunnelInterface: "wg0" })!;
    expect(without.config.tunnelAddresses).toBeUndefined();
  });

  /** A laptop and the gateway as Devices configured from their compiled NetMaps. */
  function compiledGateway(state: PolicyState) {
    const gwMap = compile(state, "G982V", { now: MONDAY_10 });
    const crypto = nobleCrypto();
    const clock = fakeClock();
    const random = seededRandom(31);
    const net = new MemoryNetwork();
    const node = (seed: number, address: string) => {
      const tun = new MemoryTun();
      const endpoint = { address, port: 51820 };
      const device = new Device({ privateKey: keyPair(seed).privateKey, crypto, now: clock.now, random, logger: silentLogger, tun, bind: net.bind(endpoint) });
      net.attach(endpoint, device);
      return { device, tun, endpoint };
    };
    const laptop = node(20, "192.0.2.10");
    const gateway = node(22, "192.0.2.12");
    laptop.device.setPeers([{ publicKey: keyPair(22).publicKey, allowedIps: [`${GW_VA}/32`, "172.26.0.0/20"], endpoint: gateway.endpoint }]);
    gateway.device.setPeers(gwMap.peers.map((p) => ({ publicKey: p.publicKey, allowedIps: p.allowedIps })));
    gateway.device.setGateway(deviceGatewayConfig(gwMap, { localAddresses: ["172.26.0.1"] })!.config);
    gateway.device.setInboundRules(inboundAcls(gwMap));
    const send = (dst: string, proto: "tcp" | "udp" | "icmp", dport = 0) => {
      laptop.device.handleTunPacket(ipPacket({ src: LAPTOP, dst, proto, sport: 40000, dport, flags: SYN }));
      net.deliver();
      return gateway.tun.take().length;
    };
    const drops = () => gateway.device.stats().peers.find((p) => p.publicKey === keyPair(20).publicKey)!.drops;
    return { gwMap, send, drops };
  }

  test("a subnet-only grant (compiled): the LAN and the gateway's DNS yes, its other services and LAN address no", () => {
    const r = compiledGateway(officeWithKeys());
    expect(r.send(PRINTER, "tcp", 80)).toBe(1);
    expect(r.send(GW_VA, "udp", 53)).toBe(1);
    expect(r.send(GW_VA, "tcp", 22)).toBe(0);
    expect(r.send(GW_VA, "icmp")).toBe(0);
    expect(r.send("172.26.0.1", "tcp", 22)).toBe(0);
    expect(r.drops()).toEqual({ "acl-denied": 2, "gateway-local-address": 1 });
  });

  test("... and with a direct policy laptop -> gateway on tcp/22, that one service opens", () => {
    const base = officeWithKeys();
    const r = compiledGateway({
      ...base,
      directAccessPolicies: [
        ...base.directAccessPolicies,
        { id: "dev-gw-ssh", name: "developers to the gateway", enabled: true, fromTags: ["dev"], toTags: ["gw"], acls: [{ protocol: "tcp", ports: "22" }] },
      ],
    });
    expect(r.gwMap.inboundRules.map((x) => `${x.peer} ${x.protocol}/${x.ports}`)).toEqual(["LAPT1 tcp/22"]);
    expect(r.send(GW_VA, "tcp", 22)).toBe(1);
    expect(r.send(GW_VA, "tcp", 80)).toBe(0);
    expect(r.send("172.26.0.1", "tcp", 22)).toBe(0);
    expect(r.send(PRINTER, "tcp", 80)).toBe(1);
    expect(r.drops()).toEqual({ "acl-denied": 1, "gateway-local-address": 1 });
  });
});
