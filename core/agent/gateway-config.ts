/**
 * @module core/agent/gateway-config
 * Pure translations of a NetMap into the three OS-facing configurations the agent applies
 * (DESIGN.md "How a packet travels"), so that every decision is made, and tested, once here:
 *
 *   deviceGatewayConfig  NetMap -> the Device's GatewayConfig (step 3: the gateway's own access
 *                        filter): one sender per peer named by a gateway rule, keyed by its public
 *                        key, with its virtual address(es) and its allow and deny entries
 *                        (destination, protocol, ports) exactly as the NetMap's gatewayRules list
 *                        them. null when this system is not an active gateway.
 *   firewallConfig       NetMap + this machine's interfaces -> the kernel Firewall's config (step
 *                        4): every served IPv4 subnet mapped to the interface facing it and the
 *                        gateway's address there (the SNAT source; MASQUERADE for 0.0.0.0/0 or when
 *                        the address is unknown), NAT as the subnet's switch says. Subnets that
 *                        cannot be placed are returned in `skipped` with a reason, never guessed.
 *                        With `inboundAclsEnforced` (the Device runs setInboundRules with
 *                        acl-config.ts's inboundAcls), the gateway's virtual address is a tunnel
 *                        address the kernel's INPUT guard accepts (the Device filtered it); its
 *                        LAN addresses stay closed to the tunnel either way.
 *   routerConfig         NetMap -> the client's RouterConfig (step 1): the granted prefixes outside
 *                        the overlay, and the bypass list (the control plane's and every peer
 *                        endpoint's host), which the Router turns into host routes only where a
 *                        tunnel route would otherwise capture them (a default route, or a grant
 *                        that happens to contain the control plane): no loop.
 *
 * Interface placement for a served subnet, first match wins:
 *   1. a connected subnet (discovery) that contains or equals it: that interface and address;
 *   2. connected subnets inside it (a /16 served over two /24 LANs): one entry per interface;
 *   3. `routed`: where the kernel routes it (the caller's `ip route get`), with its preferred
 *      source as the SNAT address when known; the default route's interface for 0.0.0.0/0.
 * The tunnel interface is never a LAN interface.
 */
import type { GatewayConfig } from "../dataplane/gateway.ts";
import { WaygateError } from "../errors.ts";
import type { GatewayRule } from "../dataplane/filter.ts";
import type { FirewallConfig, FirewallSubnet, InputAllow } from "../firewall/firewall.ts";
import { type Prefix, parseAddress, parsePrefix, prefixCovers } from "../net/address.ts";
import type { NetMap, NetMapGatewayRule } from "../policy/netmap.ts";
import type { RouterConfig, TunnelId } from "../router/router.ts";
import { type DiscoveredAddress, parseEndpoint } from "./agent.ts";

/** `--firewall` (run, serve): auto lets the detector decide; the iptables variants by name too. */
export type FirewallSetting = "auto" | "iptables" | "nftables" | "iptables-legacy" | "iptables-nft";
export const FIREWALL_SETTINGS: readonly FirewallSetting[] = ["auto", "iptables", "nftables", "iptables-legacy", "iptables-nft"];

export function parseFirewallSetting(text: unknown): FirewallSetting {
  if (text === undefined || text === "") return "auto";
  if (typeof text === "string" && (FIREWALL_SETTINGS as readonly string[]).includes(text)) return text as FirewallSetting;
  throw new WaygateError("E_USAGE", `--firewall must be auto, iptables or nftables (or iptables-legacy, iptables-nft), got ${JSON.stringify(text)}`);
}

/** What the gateway's own forwarder (DNS) serves on its overlay address: open to the tunnel. */
export const GATEWAY_INPUT_ALLOW: readonly InputAllow[] = Object.freeze([
  { protocol: "udp", port: 53 },
  { protocol: "tcp", port: 53 },
]);

/** Whether this NetMap makes the system a gateway (active, with a gateway section). */
export function isGateway(netmap: NetMap): boolean {
  return netmap.self.active && netmap.self.gateway !== undefined;
}

function ruleEntry(r: NetMapGatewayRule): GatewayRule {
  return { destination: r.dst, protocol: r.protocol, ...(r.ports !== undefined ? { ports: r.ports } : {}) };
}

const ruleKey = (r: GatewayRule) => `${r.destination} ${r.protocol} ${r.ports ?? ""}`;

function uniqueRules(rules: GatewayRule[]): GatewayRule[] {
  const m = new Map<string, GatewayRule>();
  for (const r of rules) m.set(ruleKey(r), r);
  return [...m.values()].sort((a, b) => cmp(ruleKey(a), ruleKey(b)));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface DeviceGatewayResult {
  config: GatewayConfig;
  /** Senders named by a gateway rule that are not among the NetMap's peers (no key to check). */
  unknownSenders: string[];
}

/**
 * The Device's gateway configuration, or null when this system is not an active gateway.
 * `localAddresses`: this machine's own addresses (LAN ones from discovery); the virtual address
 * is always added. A grant never reaches them (filter.ts `gateway-local-address`).
 */
export function deviceGatewayConfig(netmap: NetMap, options: { localAddresses: readonly string[] }): DeviceGatewayResult | null {
  if (!isGateway(netmap)) return null;
  const byId = new Map(netmap.peers.map((p) => [p.id, p]));
  const senders = new Map<string, { addresses: Set<string>; allow: GatewayRule[]; deny: GatewayRule[] }>();
  const unknown = new Set<string>();
  for (const r of netmap.gatewayRules) {
    const peer = byId.get(r.sender);
    if (peer === undefined) {
      unknown.add(r.sender);
      continue;
    }
    let s = senders.get(peer.publicKey);
    if (s === undefined) {
      s = { addresses: new Set([peer.virtualAddress]), allow: [], deny: [] };
      senders.set(peer.publicKey, s);
    }
    s.addresses.add(r.senderAddress);
    (r.action === "allow" ? s.allow : s.deny).push(ruleEntry(r));
  }
  const local = new Set<string>([netmap.self.virtualAddress]);
  for (const a of options.localAddresses) {
    try {
      local.add(parseAddress(a).text);
    } catch {
      // not an address: nothing to protect
    }
  }
  const config: GatewayConfig = {
    senders: [...senders.entries()]
      .sort(([a], [b]) => cmp(a, b))
      .map(([peerPublicKey, s]) => ({
        peerPublicKey,
        virtualAddresses: [...s.addresses].sort(),
        allow: uniqueRules(s.allow),
        ...(s.deny.length > 0 ? { deny: uniqueRules(s.deny) } : {}),
      })),
    localAddresses: [...local].sort(),
    overlayNetwork: netmap.self.network,
  };
  return { config, unknownSenders: [...unknown].sort() };
}

/** Where the kernel routes a served subnet that is not directly connected (`ip route get`). */
export interface RoutedSubnet {
  prefix: string;
  interface: string;
  /** The preferred source address on that interface (`prefsrc`), when the route names one. */
  source?: string;
}

export interface GatewayInterfaces {
  /** This machine's connected IPv4 subnets (platform/linux/discover.ts). */
  addresses: readonly DiscoveredAddress[];
  /** Resolved routes for served subnets that are not connected (0.0.0.0/0: the default route). */
  routed?: readonly RoutedSubnet[];
}

export interface FirewallOptions {
  tunnelInterface: string;
  mssClamp?: boolean;
  protectGatewayInput?: boolean;
  inputAllow?: readonly InputAllow[];
  /**
   * The Device enforces inbound ACLs (setInboundRules): accept everything from the tunnel to the
   * gateway's virtual address in INPUT, where direct policies to the gateway get through. Off
   * (the default), only `inputAllow` and answers do: never turn it on without the ACLs.
   */
  inboundAclsEnforced?: boolean;
}

export interface SkippedSubnet {
  prefix: string;
  reason: "ipv6-unsupported" | "no-interface" | "invalid" | "overlaps-overlay";
}

export interface FirewallPlan {
  config: FirewallConfig;
  skipped: SkippedSubnet[];
}

/** The kernel Firewall's configuration for an active gateway, or null for anything else. */
export function firewallConfig(netmap: NetMap, interfaces: GatewayInterfaces, options: FirewallOptions): FirewallPlan | null {
  if (!isGateway(netmap)) return null;
  const overlay = parsePrefix(netmap.self.network, { mask: true });
  const tun = options.tunnelInterface;
  const connected: { d: DiscoveredAddress; p: Prefix }[] = [];
  for (const d of interfaces.addresses) {
    if (d.interface === tun) continue;
    try {
      connected.push({ d, p: parsePrefix(d.subnet, { mask: true }) });
    } catch {
      // discovery hands over canonical subnets; a bad one places nothing
    }
  }
  connected.sort((a, b) => b.p.length - a.p.length || cmp(a.d.interface, b.d.interface) || cmp(a.d.address, b.d.address));
  const subnets: FirewallSubnet[] = [];
  const skipped: SkippedSubnet[] = [];
  for (const s of netmap.self.gateway!.subnets) {
    let p: Prefix;
    try {
      p = parsePrefix(s.prefix, { mask: true });
    } catch {
      skipped.push({ prefix: s.prefix, reason: "invalid" });
      continue;
    }
    if (p.family !== 4) {
      skipped.push({ prefix: p.text, reason: "ipv6-unsupported" });
      continue;
    }
    if (p.length > 0 && (prefixCovers(overlay, p) || prefixCovers(p, overlay))) {
      skipped.push({ prefix: p.text, reason: "overlaps-overlay" });
      continue;
    }
    const push = (lanInterface: string, address: string | undefined) =>
      subnets.push({ prefix: p.text, nat: s.nat, lanInterface, ...(address !== undefined && p.length > 0 ? { snatAddress: address } : {}) });
    // 1. inside (or equal to) a connected subnet: the most specific one.
    const outer = p.length > 0 ? connected.find((c) => c.p.family === 4 && prefixCovers(c.p, p)) : undefined;
    if (outer) {
      push(outer.d.interface, outer.d.address);
      continue;
    }
    // 2. containing connected subnets: one entry per interface (its first address).
    const inner = p.length > 0 ? connected.filter((c) => c.p.family === 4 && prefixCovers(p, c.p)) : [];
    if (inner.length > 0) {
      const seen = new Set<string>();
      for (const c of inner) {
        if (seen.has(c.d.interface)) continue;
        seen.add(c.d.interface);
        push(c.d.interface, c.d.address);
      }
      continue;
    }
    // 3. routed elsewhere (or the default route).
    const r = (interfaces.routed ?? []).find((x) => {
      try {
        return parsePrefix(x.prefix, { mask: true }).text === p.text && x.interface !== tun;
      } catch {
        return false;
      }
    });
    if (r) {
      let source: string | undefined;
      try {
        source = r.source !== undefined ? parseAddress(r.source, { family: 4 }).text : undefined;
      } catch {
        source = undefined;
      }
      push(r.interface, source);
      continue;
    }
    skipped.push({ prefix: p.text, reason: "no-interface" });
  }
  return {
    config: {
      tunnelInterface: tun,
      overlayNetwork: overlay.text,
      subnets,
      mssClamp: options.mssClamp ?? true,
      protectGatewayInput: options.protectGatewayInput ?? true,
      inputAllow: [...(options.inputAllow ?? GATEWAY_INPUT_ALLOW)],
      ...(options.inboundAclsEnforced === true ? { tunnelAddresses: [parseAddress(netmap.self.virtualAddress.split("/")[0]!).text] } : {}),
    },
    skipped,
  };
}

/** Served IPv4 subnets that are not connected: the ones the caller must resolve with the kernel. */
export function subnetsToResolve(netmap: NetMap, addresses: readonly DiscoveredAddress[], tunnelInterface: string): string[] {
  if (!isGateway(netmap)) return [];
  const connected: Prefix[] = [];
  for (const d of addresses) {
    if (d.interface === tunnelInterface) continue;
    try {
      connected.push(parsePrefix(d.subnet, { mask: true }));
    } catch {
      // ignored, as in firewallConfig
    }
  }
  let overlay: Prefix | null = null;
  try {
    overlay = parsePrefix(netmap.self.network, { mask: true });
  } catch {
    overlay = null;
  }
  const out = new Set<string>();
  for (const s of netmap.self.gateway!.subnets) {
    try {
      const p = parsePrefix(s.prefix, { mask: true });
      if (p.family !== 4) continue;
      if (overlay && p.length > 0 && (prefixCovers(overlay, p) || prefixCovers(p, overlay))) continue;
      if (p.length > 0 && connected.some((c) => prefixCovers(c, p) || prefixCovers(p, c))) continue;
      out.add(p.text);
    } catch {
      // reported by firewallConfig
    }
  }
  return [...out].sort();
}

export interface RouterOptions {
  tunnel: TunnelId;
  /** The control plane's address(es): IP literals (a host name is resolved by the caller). */
  controlPlaneAddresses?: readonly string[];
  allowLanAccess?: boolean;
  failClosed?: boolean;
}

/** The host part of an http(s) URL when it is an IP literal, else null (needs resolving). */
export function urlHostAddress(url: string): string | null {
  try {
    const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
    return parseAddress(host).text;
  } catch {
    return null;
  }
}

function toBig(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

/** Whether `prefixes` together cover every address of `family`. */
export function coversFamily(prefixes: readonly Prefix[], family: 4 | 6): boolean {
  const bits = family === 4 ? 32 : 128;
  const ivs = prefixes
    .filter((p) => p.family === family)
    .map((p) => {
      const lo = toBig(p.bytes);
      return [lo, lo + (1n << BigInt(bits - p.length)) - 1n] as const;
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let next = 0n;
  for (const [lo, hi] of ivs) {
    if (lo > next) return false;
    if (hi + 1n > next) next = hi + 1n;
  }
  return next === 1n << BigInt(bits);
}

/**
 * The default routes a NetMap grants, per family. The compiler hands a grant of 0.0.0.0/0 over as
 * the pieces of the address space outside the overlay network (0.0.0.0/2, 64.0.0.0/3, ...,
 * 128.0.0.0/1): when the routes and the overlay together cover a whole family, that is a default
 * route, and the Router must see it as one (two /1 halves, bypass, LAN access, fail-closed).
 */
export function defaultRouteFamilies(netmap: NetMap): (4 | 6)[] {
  const prefixes: Prefix[] = [];
  for (const text of [netmap.self.network, ...netmap.routes.map((r) => r.prefix)]) {
    try {
      prefixes.push(parsePrefix(text, { mask: true }));
    } catch {
      // not a prefix
    }
  }
  const routed = new Set(prefixes.slice(1).map((p) => p.family));
  return ([4, 6] as const).filter((f) => routed.has(f) && coversFamily(prefixes, f));
}

/**
 * The client's routes: the NetMap's granted prefixes, minus anything inside (or containing) the
 * overlay network (the TUN's own connected route carries those), a family whose routes cover the
 * whole address space as its default route, plus the bypass list.
 */
export function routerConfig(netmap: NetMap, options: RouterOptions): RouterConfig {
  let overlay: Prefix | null = null;
  try {
    overlay = parsePrefix(netmap.self.network, { mask: true });
  } catch {
    overlay = null;
  }
  const defaults = defaultRouteFamilies(netmap);
  const prefixes = new Set<string>(defaults.map((f) => (f === 4 ? "0.0.0.0/0" : "::/0")));
  for (const r of netmap.routes) {
    try {
      const q = parsePrefix(r.prefix, { mask: true });
      if (defaults.includes(q.family)) continue;
      if (overlay && q.family === overlay.family && q.length > 0 && (prefixCovers(overlay, q) || prefixCovers(q, overlay))) continue;
      prefixes.add(q.text);
    } catch {
      // a prefix we cannot parse is not routed
    }
  }
  const bypass = new Set<string>();
  for (const a of options.controlPlaneAddresses ?? []) {
    try {
      bypass.add(parseAddress(a).text);
    } catch {
      // not an address
    }
  }
  for (const p of netmap.peers) {
    const ep = p.endpoint ? parseEndpoint(p.endpoint) : null;
    if (ep) bypass.add(ep.address);
  }
  return {
    ...options.tunnel,
    routes: [...prefixes].sort().map((prefix) => ({ prefix })),
    bypass: [...bypass].sort(),
    ...(options.allowLanAccess !== undefined ? { allowLanAccess: options.allowLanAccess } : {}),
    ...(options.failClosed !== undefined ? { failClosed: options.failClosed } : {}),
  };
}

/** Whether the NetMap routes a default route (0.0.0.0/0 or ::/0, whole or in pieces) through a gateway. */
export function hasDefaultRoute(netmap: NetMap): boolean {
  return defaultRouteFamilies(netmap).length > 0;
}
