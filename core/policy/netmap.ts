/**
 * @module core/policy/netmap
 * The NetMap: everything one system needs to know, compiled from the policy state
 * (compile.ts) and later streamed to its agent. Valibot schema because it crosses the wire.
 *
 * Every list is sorted, so equal inputs give byte-equal JSON. NetMaps of one compile share
 * sub-objects (a peer entry with no routes through it is one object in every NetMap listing
 * it): treat them as immutable.
 *
 * How the agent reads it:
 * - peers: the WireGuard peers, with their allowed IPs (their /32 or /128 plus every prefix we
 *   may send through them). Two gateways serving one subnet both list it: cryptokey routing on
 *   the way out goes through `routes`, not through a single-owner allowed-IPs trie.
 * - routes: prefix -> candidate gateways. Candidate lists already include every gateway whose
 *   grant covers the prefix, so a longest-prefix match on the destination yields every gateway
 *   that could carry it. Failover picks among candidates by `metricHint` (lower first) and
 *   liveness, and should skip a candidate whose outbound rules refuse the packet. A candidate
 *   whose gateway reports a served subnet overlapping the prefix unhealthy is kept, marked
 *   `withdrawn`: failover does not pick it, and the Router still routes the prefix into the TUN,
 *   so losing every gateway of a subnet drops packets instead of leaking them to the local
 *   default route. Its peer's allowed IPs keep the prefix (late replies still validate).
 * - inboundRules / outboundRules: the packet filter, per peer. A packet passes when some
 *   "allow" rule matches and no "deny" rule does. Replies to a permitted flow are the flow
 *   table's business, not these rules'.
 * - gatewayRules (gateways only): forwarded traffic from a sender (checked by its virtual
 *   address) to destinations in one of this gateway's subnets, with that subnet's NAT flag.
 *   Traffic addressed to the gateway itself is inbound traffic, never a gateway rule.
 */
import * as v from "valibot";
import { parseAddress } from "../net/address.ts";
import { bytesToBigint, parseDestination, parsePorts, type AddrRange, type PortRange } from "./ranges.ts";
import type { PacketProtocol } from "./model.ts";

export const NETMAP_VERSION = 1;

const RuleProtocolSchema = v.picklist(["any", "tcp", "udp", "icmp"]);

export const NetMapPeerSchema = v.object({
  id: v.string(),
  name: v.string(),
  publicKey: v.string(),
  endpoint: v.optional(v.string()),
  virtualAddress: v.string(),
  /** Its own /32 (or /128) first, then the prefixes in `gatewayFor`. */
  allowedIps: v.array(v.string()),
  /** Prefixes we may route through this peer as a gateway (sorted). */
  gatewayFor: v.array(v.string()),
  dnsNames: v.array(v.string()),
});

export const NetMapRouteSchema = v.object({
  prefix: v.string(),
  via: v.string(),
  /** The serving subnet's priority (lower is preferred, default 100). */
  priority: v.number(),
  draining: v.boolean(),
  /**
   * The gateway reports it cannot reach (part of) this prefix (core/policy/model.ts `healthy`).
   * The route stays so the client keeps the prefix on its TUN (fail closed); failover treats this
   * candidate as withdrawn for it. Absent from an older control plane: false.
   */
  withdrawn: v.optional(v.boolean(), false),
  /** What failover sorts by: priority, plus 1000 while the subnet drains. */
  metricHint: v.number(),
});

export const NetMapRuleSchema = v.object({
  action: v.picklist(["allow", "deny"]),
  peer: v.string(),
  /** Source: a prefix "a/len" or a range "lo-hi". */
  src: v.string(),
  /** Destination: a prefix "a/len" or a range "lo-hi". */
  dst: v.string(),
  protocol: RuleProtocolSchema,
  /** Destination ports, "80" or "1000-2000"; absent means all. */
  ports: v.optional(v.string()),
  policy: v.string(),
});

export const NetMapGatewayRuleSchema = v.object({
  action: v.picklist(["allow", "deny"]),
  sender: v.string(),
  senderAddress: v.string(),
  /** The gateway subnet the destination lies in (for a deny, the subnet the policy names). */
  subnet: v.string(),
  nat: v.boolean(),
  dst: v.string(),
  protocol: RuleProtocolSchema,
  ports: v.optional(v.string()),
  policy: v.string(),
});

export const NetMapGatewaySubnetSchema = v.object({
  prefix: v.string(),
  nat: v.boolean(),
  source: v.picklist(["discovered", "manual", "migrated"]),
  draining: v.boolean(),
  priority: v.number(),
});

export const NetMapSchema = v.object({
  version: v.literal(NETMAP_VERSION),
  self: v.object({
    id: v.string(),
    name: v.string(),
    virtualAddress: v.string(),
    network: v.string(),
    /** False for a disabled or unapproved system: then every list below is empty. */
    active: v.boolean(),
    /** Present when the system is active and allowed to act as a gateway. */
    gateway: v.optional(v.object({ subnets: v.array(NetMapGatewaySubnetSchema) })),
  }),
  peers: v.array(NetMapPeerSchema),
  routes: v.array(NetMapRouteSchema),
  inboundRules: v.array(NetMapRuleSchema),
  outboundRules: v.array(NetMapRuleSchema),
  gatewayRules: v.array(NetMapGatewayRuleSchema),
});

export type NetMapPeer = v.InferOutput<typeof NetMapPeerSchema>;
export type NetMapRoute = v.InferOutput<typeof NetMapRouteSchema>;
export type NetMapRule = v.InferOutput<typeof NetMapRuleSchema>;
export type NetMapGatewayRule = v.InferOutput<typeof NetMapGatewayRuleSchema>;
export type NetMapGatewaySubnet = v.InferOutput<typeof NetMapGatewaySubnetSchema>;
export type NetMap = v.InferOutput<typeof NetMapSchema>;

/** A packet as the filter sees it. `port` is the destination port (tcp/udp only). */
export interface PacketQuery {
  peer: string;
  src: string;
  dst: string;
  protocol: PacketProtocol;
  port?: number | undefined;
}

const rangeCache = new Map<string, AddrRange>();
const portCache = new Map<string, PortRange>();

function cachedRange(text: string): AddrRange {
  let r = rangeCache.get(text);
  if (r === undefined) {
    r = parseDestination(text);
    if (rangeCache.size > 100_000) rangeCache.clear();
    rangeCache.set(text, r);
  }
  return r;
}

function cachedPorts(text: string): PortRange {
  let p = portCache.get(text);
  if (p === undefined) {
    p = parsePorts(text);
    portCache.set(text, p);
  }
  return p;
}

function inText(text: string, family: 4 | 6, n: bigint): boolean {
  const r = cachedRange(text);
  return r.family === family && r.lo <= n && n <= r.hi;
}

function protocolAndPortMatch(
  rule: { protocol: string; ports?: string | undefined },
  protocol: PacketProtocol,
  port: number | undefined,
): boolean {
  if (rule.protocol !== "any" && rule.protocol !== protocol) return false;
  if (rule.ports === undefined) return true;
  if (port === undefined) return false;
  const p = cachedPorts(rule.ports);
  return p.lo <= port && port <= p.hi;
}

/**
 * The filter's verdict for one packet over inbound or outbound rules: some allow matches and no
 * deny does. A reference implementation for tests and tools; the data plane compiles the rules
 * into its own tables.
 */
export function rulesPermit(rules: readonly NetMapRule[], q: PacketQuery): boolean {
  const src = parseAddress(q.src);
  const dst = parseAddress(q.dst);
  const s = bytesToBigint(src.bytes);
  const d = bytesToBigint(dst.bytes);
  let allowed = false;
  for (const rule of rules) {
    if (rule.peer !== q.peer) continue;
    if (!inText(rule.src, src.family, s) || !inText(rule.dst, dst.family, d)) continue;
    if (!protocolAndPortMatch(rule, q.protocol, q.port)) continue;
    if (rule.action === "deny") return false;
    allowed = true;
  }
  return allowed;
}

/** The same verdict over a gateway's forwarding rules: `sender` must match by id and address. */
export function gatewayRulesPermit(
  rules: readonly NetMapGatewayRule[],
  q: { sender: string; src: string; dst: string; protocol: PacketProtocol; port?: number | undefined },
): boolean {
  const src = parseAddress(q.src);
  const dst = parseAddress(q.dst);
  const d = bytesToBigint(dst.bytes);
  let allowed = false;
  for (const rule of rules) {
    if (rule.sender !== q.sender || parseAddress(rule.senderAddress).text !== src.text) continue;
    if (!inText(rule.dst, dst.family, d)) continue;
    if (!protocolAndPortMatch(rule, q.protocol, q.port)) continue;
    if (rule.action === "deny") return false;
    allowed = true;
  }
  return allowed;
}

/** Byte-stable JSON of a NetMap (the lists are already sorted; key order is construction order). */
export function netMapJson(map: NetMap): string {
  return JSON.stringify(map);
}
