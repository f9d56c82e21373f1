/**
 * @module test/agent/gateway-config.test
 * core/agent/gateway-config.ts on hand-built NetMaps: the Device's GatewayConfig (senders keyed
 * by public key, allow and deny entries as listed, own addresses protected, null for non-gateways),
 * the Firewall's config (each subnet on the interface facing it with the gateway's address there,
 * MASQUERADE for the default route, NAT off kept, unplaceable subnets reported), the Router's
 * config (overlay prefixes left out, bypass for the control plane and every peer endpoint, LAN
 * access and fail-closed passed through), and a check that the Device filter and the Firewall
 * accept what is produced; with inboundAclsEnforced the Firewall accepts the virtual address.
 */
import { describe, expect, test } from "bun:test";
import type { DiscoveredAddress } from "../../core/agent/agent.ts";
import {
  deviceGatewayConfig,
  firewallConfig,
  hasDefaultRoute,
  isGateway,
  parseFirewallSetting,
  routerConfig,
  subnetsToResolve,
  urlHostAddress,
} from "../../core/agent/gateway-config.ts";
import { GatewayFilter } from "../../core/dataplane/filter.ts";
import { normaliseConfig } from "../../core/firewall/firewall.ts";
import type { NetMap, NetMapGatewayRule } from "../../core/policy/netmap.ts";
import { planRoutes } from "../../core/router/router.ts";
import { GW, PEER2, SELF, gatewayPeer, plainPeer, sampleNetMap } from "./fixtures.ts";

const LAPTOP = { ...plainPeer({ id: "LAP01", name: "laptop", publicKey: SELF.publicKey, virtualAddress: "100.64.0.2", allowedIps: ["100.64.0.2/32"], endpoint: "198.18.0.2:51820" }) };
const DESK = plainPeer();

function rule(over: Partial<NetMapGatewayRule>): NetMapGatewayRule {
  return { action: "allow", sender: "LAP01", senderAddress: "100.64.0.2", subnet: "172.26.0.0/20", nat: true, dst: "172.26.0.0/20", protocol: "any", policy: "p", ...over };
}

/** The gateway's NetMap: serving 172.26.0.0/20 (NAT on) and 10.9.0.0/16 (NAT off). */
function gatewayNetMap(over: Partial<NetMap> = {}, subnets = [
  { prefix: "172.26.0.0/20", nat: true, source: "discovered" as const, draining: false, priority: 100 },
  { prefix: "10.9.0.0/16", nat: false, source: "manual" as const, draining: false, priority: 100 },
]): NetMap {
  return {
    version: 1,
    self: { id: "GW001", name: "router", virtualAddress: "100.64.0.1", network: "100.64.0.0/10", active: true, gateway: { subnets } },
    peers: [LAPTOP, DESK],
    routes: [],
    inboundRules: [],
    outboundRules: [],
    gatewayRules: [
      rule({}),
      rule({ action: "deny", dst: "172.26.0.9/32", protocol: "tcp", ports: "22" }),
      rule({ sender: "PEER2", senderAddress: "100.64.0.3", dst: "172.26.0.250/32", protocol: "tcp", ports: "80" }),
      rule({ sender: "GONE1", senderAddress: "100.64.0.77" }),
    ],
    ...over,
  };
}

const LAN: DiscoveredAddress[] = [
  { interface: "eth1", address: "172.26.0.1", subnet: "172.26.0.0/20" },
  { interface: "eth0", address: "198.18.0.1", subnet: "198.18.0.0/24" },
];

describe("deviceGatewayConfig", () => {
  test("senders keyed by public key, allow and deny as listed, own addresses protected", () => {
    const r = deviceGatewayConfig(gatewayNetMap(), { localAddresses: ["172.26.0.1", "198.18.0.1", "not-an-address"] })!;
    expect(r.unknownSenders).toEqual(["GONE1"]);
    expect(r.config.overlayNetwork).toBe("100.64.0.0/10");
    expect(r.config.localAddresses).toEqual(["100.64.0.1", "172.26.0.1", "198.18.0.1"]);
    const bySender = new Map(r.config.senders.map((s) => [s.peerPublicKey, s]));
    expect(bySender.get(SELF.publicKey)).toEqual({
      peerPublicKey: SELF.publicKey,
      virtualAddresses: ["100.64.0.2"],
      allow: [{ destination: "172.26.0.0/20", protocol: "any" }],
      deny: [{ destination: "172.26.0.9/32", protocol: "tcp", ports: "22" }],
    });
    expect(bySender.get(PEER2.publicKey)).toEqual({
      peerPublicKey: PEER2.publicKey,
      virtualAddresses: ["100.64.0.3"],
      allow: [{ destination: "172.26.0.250/32", protocol: "tcp", ports: "80" }],
    });
    // The Device accepts it.
    expect(() => new GatewayFilter(r.config)).not.toThrow();
  });

  test("deterministic: the same NetMap gives byte-equal JSON (the agent sends only changes)", () => {
    const a = JSON.stringify(deviceGatewayConfig(gatewayNetMap(), { localAddresses: ["172.26.0.1"] }));
    const m = gatewayNetMap();
    m.gatewayRules.reverse();
    const b = JSON.stringify(deviceGatewayConfig(m, { localAddresses: ["172.26.0.1", "172.26.0.1"] }));
    expect(b).toBe(a);
  });

  test("null for a client, an inactive gateway; empty senders for a gateway with no grants", () => {
    expect(deviceGatewayConfig(sampleNetMap(), { localAddresses: [] })).toBeNull();
    const inactive = gatewayNetMap();
    inactive.self.active = false;
    expect(isGateway(inactive)).toBe(false);
    expect(deviceGatewayConfig(inactive, { localAddresses: [] })).toBeNull();
    expect(deviceGatewayConfig(gatewayNetMap({ gatewayRules: [] }), { localAddresses: [] })!.config.senders).toEqual([]);
  });
});

describe("firewallConfig", () => {
  test("connected subnet: its interface and the gateway's address there; NAT off kept; routed subnet via the kernel's answer", () => {
    const nm = gatewayNetMap();
    expect(subnetsToResolve(nm, LAN, "wg0")).toEqual(["10.9.0.0/16"]);
    const plan = firewallConfig(nm, { addresses: LAN, routed: [{ prefix: "10.9.0.0/16", interface: "eth1", source: "172.26.0.1" }] }, { tunnelInterface: "wg0" })!;
    expect(plan.skipped).toEqual([]);
    expect(plan.config).toEqual({
      tunnelInterface: "wg0",
      overlayNetwork: "100.64.0.0/10",
      subnets: [
        { prefix: "172.26.0.0/20", nat: true, lanInterface: "eth1", snatAddress: "172.26.0.1" },
        { prefix: "10.9.0.0/16", nat: false, lanInterface: "eth1", snatAddress: "172.26.0.1" },
      ],
      mssClamp: true,
      protectGatewayInput: true,
      inputAllow: [{ protocol: "udp", port: 53 }, { protocol: "tcp", port: 53 }],
    });
    expect(() => normaliseConfig(plan.config)).not.toThrow();
  });

  test("inboundAclsEnforced: the gateway's virtual address becomes a tunnel address INPUT accepts; off by default", () => {
    const nm = gatewayNetMap();
    const on = firewallConfig(nm, { addresses: LAN }, { tunnelInterface: "wg0", inboundAclsEnforced: true })!;
    expect(on.config.tunnelAddresses).toEqual(["100.64.0.1"]);
    expect(normaliseConfig(on.config).tunnelAddresses).toEqual([{ family: 4, text: "100.64.0.1" }]);
    expect("tunnelAddresses" in firewallConfig(nm, { addresses: LAN }, { tunnelInterface: "wg0" })!.config).toBe(false);
    expect("tunnelAddresses" in firewallConfig(nm, { addresses: LAN }, { tunnelInterface: "wg0", inboundAclsEnforced: false })!.config).toBe(false);
  });

  test("a subnet inside a connected one, one containing two LANs, the default route (MASQUERADE), an unplaceable one", () => {
    const addresses: DiscoveredAddress[] = [
      { interface: "lan1", address: "10.1.1.1", subnet: "10.1.1.0/24" },
      { interface: "lan2", address: "10.1.2.1", subnet: "10.1.2.0/24" },
      { interface: "lan3", address: "192.168.7.1", subnet: "192.168.0.0/16" },
      { interface: "wg0", address: "100.64.0.1", subnet: "100.64.0.0/10" },
    ];
    const sub = (prefix: string, nat = true) => ({ prefix, nat, source: "manual" as const, draining: false, priority: 100 });
    const nm = gatewayNetMap({}, [sub("10.1.0.0/16"), sub("192.168.7.0/24"), sub("0.0.0.0/0"), sub("203.0.113.0/24"), sub("fd00::/64"), sub("100.64.5.0/24")]);
    expect(subnetsToResolve(nm, addresses, "wg0")).toEqual(["0.0.0.0/0", "203.0.113.0/24"]);
    const plan = firewallConfig(nm, { addresses, routed: [{ prefix: "0.0.0.0/0", interface: "uplink", source: "198.51.100.7" }, { prefix: "203.0.113.0/24", interface: "wg0" }] }, { tunnelInterface: "wg0" })!;
    expect(plan.config.subnets).toEqual([
      { prefix: "10.1.0.0/16", nat: true, lanInterface: "lan1", snatAddress: "10.1.1.1" },
      { prefix: "10.1.0.0/16", nat: true, lanInterface: "lan2", snatAddress: "10.1.2.1" },
      { prefix: "192.168.7.0/24", nat: true, lanInterface: "lan3", snatAddress: "192.168.7.1" },
      // No SNAT address for the default route: MASQUERADE (the uplink's address may change).
      { prefix: "0.0.0.0/0", nat: true, lanInterface: "uplink" },
    ]);
    expect(plan.skipped).toEqual([
      { prefix: "203.0.113.0/24", reason: "no-interface" },
      { prefix: "fd00::/64", reason: "ipv6-unsupported" },
      { prefix: "100.64.5.0/24", reason: "overlaps-overlay" },
    ]);
    expect(() => normaliseConfig(plan.config)).not.toThrow();
  });

  test("null for a client", () => {
    expect(firewallConfig(sampleNetMap(), { addresses: LAN }, { tunnelInterface: "wg0" })).toBeNull();
    expect(subnetsToResolve(sampleNetMap(), LAN, "wg0")).toEqual([]);
  });
});

describe("routerConfig", () => {
  const tunnel = { interfaceName: "wg0", addresses: ["100.64.0.2/10"] };

  test("granted prefixes outside the overlay; bypass = control plane + peer endpoints", () => {
    const nm = sampleNetMap([gatewayPeer(), plainPeer({ endpoint: "[fd00::3]:51820" }), plainPeer({ id: "P3", publicKey: GW.publicKey, endpoint: "host.example:51820" })]);
    nm.routes.push({ prefix: "100.64.9.0/24", via: "GW001", priority: 100, draining: false, withdrawn: false, metricHint: 100 });
    const c = routerConfig(nm, { tunnel, controlPlaneAddresses: ["10.0.0.1", "nonsense"] });
    expect(c).toEqual({ ...tunnel, routes: [{ prefix: "192.168.50.0/24" }], bypass: ["10.0.0.1", "fd00::3"] });
    expect(hasDefaultRoute(nm)).toBe(false);
  });

  test("default route: the planner keeps the control plane and endpoints outside the tunnel; LAN access and fail-closed passed on", () => {
    const nm = sampleNetMap([gatewayPeer({ endpoint: "198.18.0.1:51820", allowedIps: ["100.64.0.1/32", "0.0.0.0/0"], gatewayFor: ["0.0.0.0/0"] })]);
    expect(hasDefaultRoute(nm)).toBe(true);
    const c = routerConfig(nm, { tunnel, controlPlaneAddresses: ["198.18.0.1"], allowLanAccess: false, failClosed: true });
    expect(c.routes).toEqual([{ prefix: "0.0.0.0/0" }]);
    expect(c.bypass).toEqual(["198.18.0.1"]);
    expect(c.failClosed).toBe(true);
    expect(c.allowLanAccess).toBe(false);
    const plan = planRoutes(
      c,
      { routes: [{ prefix: "0.0.0.0/0", device: "eth0", gateway: "192.168.1.1" }, { prefix: "192.168.1.0/24", device: "eth0", connected: true }] },
      { metrics: true, blackhole: true },
    );
    const text = plan.want.map((r) => `${r.prefix} ${r.target.kind}`);
    expect(text).toContain("198.18.0.1/32 gateway");
    expect(text).toContain("0.0.0.0/1 tunnel");
    expect(text).toContain("0.0.0.0/1 blackhole");
    expect(text).toContain("192.168.1.0/25 tunnel");
  });

  test("a default route granted as the pieces outside the overlay is one default route", () => {
    const pieces = ["0.0.0.0/2", "100.0.0.0/10", "100.128.0.0/9", "101.0.0.0/8", "102.0.0.0/7", "104.0.0.0/5", "112.0.0.0/4", "128.0.0.0/1", "64.0.0.0/3", "96.0.0.0/6"];
    const nm = sampleNetMap([gatewayPeer({ allowedIps: ["100.64.0.1/32", ...pieces], gatewayFor: pieces })]);
    nm.routes.push({ prefix: "192.168.50.0/24", via: "GW001", priority: 100, draining: false, withdrawn: false, metricHint: 100 });
    expect(hasDefaultRoute(nm)).toBe(true);
    expect(routerConfig(nm, { tunnel }).routes).toEqual([{ prefix: "0.0.0.0/0" }]);
    // One piece missing: not a default route, the pieces are routed as they are.
    const partial = sampleNetMap([gatewayPeer({ gatewayFor: pieces.slice(1) })]);
    expect(hasDefaultRoute(partial)).toBe(false);
    expect(routerConfig(partial, { tunnel }).routes.map((r) => r.prefix)).toContain("128.0.0.0/1");
  });

  test("urlHostAddress: IP literals only", () => {
    expect(urlHostAddress("http://198.18.0.1:7070")).toBe("198.18.0.1");
    expect(urlHostAddress("https://[fd00::1]:7070/")).toBe("fd00::1");
    expect(urlHostAddress("https://waygate.example.com")).toBeNull();
  });
});

test("parseFirewallSetting", () => {
  expect(parseFirewallSetting(undefined)).toBe("auto");
  expect(parseFirewallSetting("nftables")).toBe("nftables");
  expect(parseFirewallSetting("iptables")).toBe("iptables");
  expect(() => parseFirewallSetting("pf")).toThrow(/--firewall must be/);
});
