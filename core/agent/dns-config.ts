/**
 * @module core/agent/dns-config
 * What the agent's DNS needs from a NetMap, pure (platform/linux/agent-dns.ts runs the sockets):
 *
 * - `stubPeersFrom`: the names the local stub answers: every peer in the NetMap (the peers this
 *   system may see) and this system itself, as `<id>.id.<zone>`, `<name>.<zone>` and the peer's
 *   NetMap `dnsNames` under the zone.
 * - `forwardTargets`: where a query the stub cannot answer goes: for every routed prefix, the
 *   gateway `activeGatewayFor(prefix)` names (injected: the failover controller's choice later;
 *   `lowestMetricGateway` from the NetMap's routes until then), deduplicated, ordered by the
 *   chosen route's metricHint and then by NetMap order. This system itself and gateways that are
 *   not peers (no virtual address to send to) are skipped. Empty: the stub answers REFUSED
 *   itself (a client with no gateway has no grant through any, and cannot reach one).
 * - `forwarderPolicyFor`: the gateway forwarder's per-querier policy (`policyFromNetMap` over the
 *   NetMap's gatewayRules), or null when this system is not an active gateway.
 * - `usableUpstreams`: resolv.conf nameservers minus our own DNS listeners (a gateway whose
 *   resolv.conf names its own stub would ask itself).
 */
import { canonicalName, nameToLabels } from "../dns/codec.ts";
import { DnsConfigError, DnsFormatError } from "../dns/errors.ts";
import { type ForwarderPolicy, policyFromNetMap, querierKey } from "../dns/forwarder.ts";
import { DEFAULT_ZONE, type StubPeer } from "../dns/stub.ts";
import type { NetMap } from "../policy/netmap.ts";

export { DEFAULT_ZONE };

/** The gateway that carries `prefix` now (a system id), or null when none does. */
export type ActiveGatewayFor = (prefix: string) => string | null;

export interface ForwardTarget {
  gatewayId: string;
  /** The gateway's virtual address (no prefix length): where its forwarder listens. */
  address: string;
  /** The routed prefix this gateway was chosen for (the first one, in target order). */
  prefix: string;
}

/** A `--dns-zone` value, canonical ("Corp.Example." -> "corp.example"); throws E_DNS when unusable. */
export function parseDnsZone(text: string): string {
  const zone = canonicalName(text.trim());
  if (zone === "." || zone === "") throw new DnsConfigError("--dns-zone", `${JSON.stringify(text)} is not a domain name (the root zone cannot be ours)`);
  try {
    nameToLabels(zone);
  } catch (err) {
    if (!(err instanceof DnsFormatError)) throw err;
    throw new DnsConfigError("--dns-zone", `${JSON.stringify(text)} is not a domain name: ${err.reason}`, { cause: err });
  }
  if (zone.endsWith(".arpa") || zone === "arpa") throw new DnsConfigError("--dns-zone", `${JSON.stringify(text)}: reverse-lookup zones are not ours to answer`);
  return zone;
}

function bareAddress(text: string): string {
  return text.split("/")[0]!;
}

/** The peers the stub answers for: every NetMap peer, then this system. */
export function stubPeersFrom(netmap: NetMap): StubPeer[] {
  const out: StubPeer[] = netmap.peers.map((p) => ({ id: p.id, name: p.name, virtualAddress: p.virtualAddress, dnsNames: [...p.dnsNames] }));
  if (netmap.self.virtualAddress !== "") out.push({ id: netmap.self.id, name: netmap.self.name, virtualAddress: netmap.self.virtualAddress });
  return out;
}

/**
 * The default `activeGatewayFor` until failover supplies one: among the NetMap's routes for
 * exactly `prefix`, the candidate with the lowest metricHint (ties: the lower system id).
 */
export function lowestMetricGateway(netmap: Pick<NetMap, "routes">): ActiveGatewayFor {
  const best = new Map<string, { via: string; metric: number }>();
  for (const r of netmap.routes) {
    const cur = best.get(r.prefix);
    if (cur === undefined || r.metricHint < cur.metric || (r.metricHint === cur.metric && r.via < cur.via)) best.set(r.prefix, { via: r.via, metric: r.metricHint });
  }
  return (prefix) => best.get(prefix)?.via ?? null;
}

/** Where forwarded queries go, in the order they are tried (see the module comment). */
export function forwardTargets(netmap: NetMap, activeGatewayFor: ActiveGatewayFor): ForwardTarget[] {
  if (!netmap.self.active) return [];
  const peers = new Map(netmap.peers.map((p) => [p.id, p]));
  const prefixes: string[] = [];
  for (const r of netmap.routes) if (!prefixes.includes(r.prefix)) prefixes.push(r.prefix);
  const chosen: (ForwardTarget & { metric: number; order: number })[] = [];
  prefixes.forEach((prefix, order) => {
    const id = activeGatewayFor(prefix);
    if (id === null || id === netmap.self.id) return;
    const peer = peers.get(id);
    if (peer === undefined || peer.virtualAddress === "") return;
    const route = netmap.routes.find((r) => r.prefix === prefix && r.via === id);
    const metric = route?.metricHint ?? Number.MAX_SAFE_INTEGER;
    const seen = chosen.find((c) => c.gatewayId === id);
    if (seen !== undefined) {
      if (metric < seen.metric) Object.assign(seen, { metric, prefix, order });
      return;
    }
    chosen.push({ gatewayId: id, address: bareAddress(peer.virtualAddress), prefix, metric, order });
  });
  chosen.sort((a, b) => a.metric - b.metric || a.order - b.order);
  return chosen.map(({ gatewayId, address, prefix }) => ({ gatewayId, address, prefix }));
}

/** The forwarder's policy when this system is an active gateway, else null (no forwarder). */
export function forwarderPolicyFor(netmap: NetMap): ForwarderPolicy | null {
  if (!netmap.self.active || netmap.self.gateway === undefined) return null;
  return policyFromNetMap(netmap);
}

/**
 * resolv.conf nameservers the forwarder may use: those that are not one of our own DNS
 * listeners on the standard port (`own`: addresses we serve on port 53), in their order.
 */
export function usableUpstreams(nameservers: readonly string[], own: readonly string[]): { upstreams: string[]; skipped: string[] } {
  const mine = new Set(own.map((a) => querierKey(a)).filter((a): a is string => a !== null));
  const upstreams: string[] = [];
  const skipped: string[] = [];
  for (const n of nameservers) {
    const k = querierKey(n);
    if (k !== null && mine.has(k)) skipped.push(n);
    else upstreams.push(n);
  }
  return { upstreams, skipped };
}

/** Whether a query from `address` is this machine's own (served by the stub, never the forwarder). */
export function isLocalQuerier(address: string, ownAddresses: readonly string[]): boolean {
  const k = querierKey(address);
  if (k === null) return false;
  if (k === "::1" || /^127\./.test(k)) return true;
  return ownAddresses.some((a) => querierKey(a) === k);
}

/** The DNS settings `waygate run` and `serve --standalone` take (flags, then environment). */
export interface AgentDnsSettings {
  zone: string;
  resolvConfPath: string;
  hostsPath: string;
}

export interface DnsFlags {
  /** `--dns` (default) / `--no-dns`. */
  dns?: boolean | undefined;
  "dns-zone"?: string | undefined;
  "resolv-conf"?: string | undefined;
  "hosts-file"?: string | undefined;
}

/**
 * The settings from the flags, null for `--no-dns`. Paths: the flag, else WAYGATE_RESOLV_CONF /
 * WAYGATE_HOSTS_FILE, else /etc/resolv.conf and /etc/hosts (read only when this system is a
 * gateway, and only by its forwarder).
 */
export function dnsSettingsFrom(flags: DnsFlags, env: Record<string, string | undefined>): AgentDnsSettings | null {
  if (flags.dns === false) return null;
  const pick = (flag: string | undefined, name: string, fallback: string) => {
    const v = flag !== undefined && flag !== "" ? flag : env[name];
    return v !== undefined && v !== "" ? v : fallback;
  };
  return {
    zone: parseDnsZone(flags["dns-zone"] !== undefined && flags["dns-zone"] !== "" ? flags["dns-zone"] : DEFAULT_ZONE),
    resolvConfPath: pick(flags["resolv-conf"], "WAYGATE_RESOLV_CONF", "/etc/resolv.conf"),
    hostsPath: pick(flags["hosts-file"], "WAYGATE_HOSTS_FILE", "/etc/hosts"),
  };
}

/** The citty argument definitions both commands share. */
export const DNS_ARGS = {
  dns: {
    type: "boolean",
    description: "Run the DNS stub on the virtual address and 127.0.0.1:53 (and the forwarder on a gateway)",
    negativeDescription: "No DNS stub, no gateway forwarder, no systemd-resolved registration",
    default: true,
  },
  "dns-zone": { type: "string", description: `Zone the stub answers peer names in (default ${DEFAULT_ZONE})`, valueHint: "ZONE" },
  "resolv-conf": { type: "string", description: "Gateway forwarder's nameservers (default $WAYGATE_RESOLV_CONF or /etc/resolv.conf)", valueHint: "FILE" },
  "hosts-file": { type: "string", description: "Gateway forwarder's hosts file (default $WAYGATE_HOSTS_FILE or /etc/hosts)", valueHint: "FILE" },
} as const;
