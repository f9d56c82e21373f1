/**
 * @module test/policy/arbitrary
 * fast-check generators for small random policy states (a few systems, tags, gateways with
 * overlapping subnets, direct and gateway policies with filters, trust and denies), narrowing
 * and arbitrary mutations of them, and the compiled-side verdict: what the NetMaps, read the
 * way an agent and a gateway would, let through. The property tests compare that verdict with
 * evaluate.ts's brute-force `decide`.
 */
import fc from "fast-check";
import { parseAddress, parsePrefix } from "../../core/net/address.ts";
import { PrefixTable } from "../../core/net/prefix-table.ts";
import type {
  Acl,
  DirectAccessPolicy,
  GatewayAccessPolicy,
  PacketProtocol,
  PolicyState,
  SubnetFilterEntry,
  System,
  TimeWindow,
} from "../../core/policy/model.ts";
import { gatewayRulesPermit, rulesPermit, type NetMap } from "../../core/policy/netmap.ts";

export const TAGS = ["dev", "ops", "db", "web"] as const;
export const SUBNETS = [
  "10.0.0.0/16",
  "10.0.1.0/24",
  "10.0.1.128/25",
  "10.1.0.0/16",
  "0.0.0.0/0",
  "96.0.0.0/4",
  "100.64.0.0/24",
  "192.168.1.0/24",
  "fd00::/64",
] as const;
export const DESTINATIONS = [
  "10.0.1.5",
  "10.0.1.130",
  "10.0.0.7",
  "10.1.2.3",
  "10.0.1.201",
  "192.168.1.10",
  "8.8.8.8",
  "100.64.0.200",
  "100.63.255.255",
  "100.128.0.1",
  "fd00::5",
] as const;
export const PORTS = [22, 53, 80, 443, 8080] as const;
export const PROTOCOLS: readonly PacketProtocol[] = ["tcp", "udp", "icmp"];

/** Monday 2024-01-01 10:00 UTC and friends: inside and outside the windows below. */
export const INSTANTS = [
  Date.UTC(2024, 0, 1, 10, 0),
  Date.UTC(2024, 0, 1, 19, 30),
  Date.UTC(2024, 0, 6, 3, 0),
  Date.UTC(2024, 0, 7, 23, 59),
] as const;

const ACLS: Acl[] = [
  { protocol: "any" },
  { protocol: "tcp", ports: "22" },
  { protocol: "tcp", ports: "80-443" },
  { protocol: "udp", ports: "53" },
  { protocol: "icmp" },
];

const FILTERS: SubnetFilterEntry[] = [
  { destination: "10.0.1.5", protocol: "tcp", ports: "22" },
  { destination: "10.0.1.0-10.0.1.200", protocol: "any" },
  { destination: "10.0.0.0/8", protocol: "udp", ports: "53" },
  { destination: "0.0.0.0/0", protocol: "icmp" },
  { destination: "10.1.2.3", protocol: "any" },
  { destination: "8.8.8.0-8.8.8.8", protocol: "tcp", ports: "80-8080" },
  { destination: "fd00::/120", protocol: "any" },
];

const WINDOWS: TimeWindow[] = [
  { days: ["mon", "tue", "wed", "thu", "fri"], start: "08:00", end: "18:00", utcOffsetMinutes: 0 },
  { days: ["sat", "sun"], start: "22:00", end: "06:00", utcOffsetMinutes: 60 },
];

export function keyFor(i: number): string {
  return btoa(String.fromCharCode(...new Uint8Array(32).fill(i + 1)));
}

export function idFor(i: number): string {
  return `S${String(i).padStart(4, "0")}`;
}

const subsetOf = <T>(items: readonly T[], min = 0) => fc.subarray([...items], { minLength: min });

const systemArb = (i: number): fc.Arbitrary<System> =>
  fc
    .record({
      tags: subsetOf(TAGS),
      enabled: fc.constantFrom(true, true, true, true, false),
      approved: fc.constantFrom(true, true, true, true, false),
      publicIp: fc.constantFrom(undefined, "203.0.113.9", "198.51.100.7"),
      endpoint: fc.constantFrom(undefined, `198.51.100.${i + 1}:51820`),
      allowedAsGateway: fc.boolean(),
      subnets: subsetOf(SUBNETS),
      nat: fc.array(fc.boolean(), { minLength: SUBNETS.length, maxLength: SUBNETS.length }),
      priority: fc.array(fc.constantFrom(undefined, 50, 100, 200), { minLength: SUBNETS.length, maxLength: SUBNETS.length }),
      draining: fc.array(fc.constantFrom(undefined, false, true), { minLength: SUBNETS.length, maxLength: SUBNETS.length }),
    })
    .map((r) => {
      const sys: System = {
        id: idFor(i),
        name: `system ${i}`,
        publicKey: keyFor(i),
        virtualAddress: `100.64.0.${i + 1}`,
        tags: r.tags,
        approved: r.approved,
        enabled: r.enabled,
        allowedAsGateway: r.allowedAsGateway,
        gatewaySubnets: r.subnets.map((prefix, j) => {
          const s: System["gatewaySubnets"][number] = { prefix, nat: r.nat[j]!, source: "manual" };
          if (r.priority[j] !== undefined) s.priority = r.priority[j];
          if (r.draining[j] !== undefined) s.draining = r.draining[j];
          // Health is not policy: unhealthy subnets must change no verdict (only route flags). Set
          // by position, not drawn, so the seeded runs generate the same policies as before.
          const health = (i + j) % 3;
          if (health !== 0) s.healthy = health === 2;
          return s;
        }),
      };
      if (r.publicIp !== undefined) sys.publicIp = r.publicIp;
      if (r.endpoint !== undefined) sys.endpoint = r.endpoint;
      return sys;
    });

export const directPolicyArb = (id: string, action?: "allow" | "deny"): fc.Arbitrary<DirectAccessPolicy> =>
  fc
    .record({
      enabled: fc.constantFrom(true, true, true, false),
      action: action === undefined ? fc.constantFrom<"allow" | "deny" | undefined>(undefined, "allow", "allow", "deny") : fc.constant(action),
      fromTags: subsetOf(TAGS, 1),
      toTags: subsetOf(TAGS, 1),
      acls: fc.subarray(ACLS, { minLength: 1, maxLength: 2 }),
    })
    .map((r) => {
      const p: DirectAccessPolicy = { id, name: `direct ${id}`, enabled: r.enabled, fromTags: r.fromTags, toTags: r.toTags, acls: r.acls };
      if (r.action !== undefined) p.action = r.action;
      return p;
    });

const rarely = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | null> =>
  fc.oneof({ arbitrary: fc.constant(null), weight: 3 }, { arbitrary: arb, weight: 1 });

/** A gateway entry: mostly a gateway-capable system and subnets it serves (or narrower ones). */
function gatewayEntryArb(systems: readonly System[]) {
  const capable = systems.filter((s) => s.allowedAsGateway && s.gatewaySubnets.length > 0);
  const any = fc.record({
    systemId: fc.constantFrom(...systems.map((s) => s.id)),
    subnets: fc.subarray([...SUBNETS], { minLength: 1, maxLength: 3 }),
  });
  if (capable.length === 0) return any;
  const served = fc.constantFrom(...capable).chain((g) => {
    const pool = [...new Set([...g.gatewaySubnets.map((x) => x.prefix), "10.0.1.0/24"])];
    return fc.record({
      systemId: fc.constant(g.id),
      subnets: fc.subarray(pool, { minLength: 1, maxLength: Math.min(3, pool.length) }),
    });
  });
  return fc.oneof({ arbitrary: served, weight: 3 }, { arbitrary: any, weight: 1 });
}

export const gatewayPolicyArb = (id: string, systems: readonly System[], action?: "allow" | "deny"): fc.Arbitrary<GatewayAccessPolicy> =>
  fc
    .record({
      enabled: fc.constantFrom(true, true, true, false),
      action: action === undefined ? fc.constantFrom<"allow" | "deny" | undefined>(undefined, "allow", "allow", "deny") : fc.constant(action),
      senderTags: subsetOf(TAGS, 1),
      gateways: fc.array(gatewayEntryArb(systems), { minLength: 1, maxLength: 2 }),
      filter: fc.option(fc.subarray(FILTERS, { minLength: 1, maxLength: 3 }), { freq: 2 }),
      publicIp: rarely(fc.constantFrom<string[]>(["203.0.113.0/24"], ["198.51.100.0/24", "192.0.2.0/24"])),
      windows: rarely(fc.subarray(WINDOWS, { minLength: 1 })),
    })
    .map((r) => {
      const p: GatewayAccessPolicy = { id, name: `gateway ${id}`, enabled: r.enabled, senderTags: r.senderTags, gateways: r.gateways };
      if (r.action !== undefined) p.action = r.action;
      if (r.filter !== null) p.subnetFilter = r.filter;
      if (r.action !== "deny" && (r.publicIp !== null || r.windows !== null)) {
        p.trust = {};
        if (r.publicIp !== null) p.trust.publicIpWithin = r.publicIp;
        if (r.windows !== null) p.trust.timeWindows = r.windows;
      }
      return p;
    });

export const stateArb: fc.Arbitrary<PolicyState> = fc
  .integer({ min: 2, max: 6 })
  .chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => systemArb(i))))
  .chain((systems) =>
    fc
      .record({
        direct: fc.integer({ min: 0, max: 4 }).chain((k) => fc.tuple(...Array.from({ length: k }, (_, i) => directPolicyArb(`d${i}`)))),
        gateway: fc
          .integer({ min: 1, max: 5 })
          .chain((k) => fc.tuple(...Array.from({ length: k }, (_, i) => gatewayPolicyArb(`g${i}`, systems)))),
      })
      .map((r) => ({
        network: "100.64.0.0/10",
        systems,
        directAccessPolicies: r.direct,
        gatewayAccessPolicies: r.gateway,
      })),
  );

export interface Packet {
  sender: string;
  destination: string;
  protocol: PacketProtocol;
  port: number | undefined;
}

/** Every sender x destination (pool plus every virtual address) x protocol/port. */
export function packetsFor(state: PolicyState): Packet[] {
  const dsts = [...DESTINATIONS, ...state.systems.map((s) => s.virtualAddress)];
  const out: Packet[] = [];
  for (const s of state.systems) {
    for (const destination of dsts) {
      for (const protocol of PROTOCOLS) {
        const ports = protocol === "icmp" ? [undefined] : PORTS;
        for (const port of ports) out.push({ sender: s.id, destination, protocol, port });
      }
    }
  }
  return out;
}

export interface CompiledVerdict {
  direct: boolean;
  gateways: string[];
}

const routeTables = new WeakMap<NetMap, PrefixTable<string[]>>();

function routeTable(map: NetMap): PrefixTable<string[]> {
  let table = routeTables.get(map);
  if (table === undefined) {
    table = new PrefixTable<string[]>();
    for (const r of map.routes) {
      const prefix = parsePrefix(r.prefix);
      const list = table.get(prefix) ?? [];
      list.push(r.via);
      table.insert(prefix, list);
    }
    routeTables.set(map, table);
  }
  return table;
}

/**
 * What the compiled NetMaps let through, read as the data plane would: the sender's outbound
 * rules and routes (longest match, then every candidate), the receiver's inbound rules or the
 * gateway's forwarding rules, and both ends listing each other as peers.
 */
export function compiledVerdict(maps: ReadonlyMap<string, NetMap>, p: Packet): CompiledVerdict {
  const me = maps.get(p.sender)!;
  if (!me.self.active) return { direct: false, gateways: [] };
  const src = me.self.virtualAddress;
  const dst = parseAddress(p.destination);
  const knows = (a: NetMap, id: string) => a.peers.some((x) => x.id === id);
  let direct = false;
  for (const peer of me.peers) {
    if (parseAddress(peer.virtualAddress).text !== dst.text) continue;
    const them = maps.get(peer.id)!;
    const q = { src, dst: dst.text, protocol: p.protocol, port: p.port };
    if (
      knows(them, p.sender) &&
      rulesPermit(me.outboundRules, { peer: peer.id, ...q }) &&
      rulesPermit(them.inboundRules, { peer: p.sender, ...q })
    ) {
      direct = true;
    }
  }
  const candidates = routeTable(me).lookup(dst.bytes) ?? [];
  const gateways = candidates
    .filter((g) => {
      const gw = maps.get(g)!;
      const q = { src, dst: dst.text, protocol: p.protocol, port: p.port };
      return (
        knows(me, g) &&
        knows(gw, p.sender) &&
        rulesPermit(me.outboundRules, { peer: g, ...q }) &&
        gatewayRulesPermit(gw.gatewayRules, { sender: p.sender, ...q })
      );
    })
    .sort();
  return { direct, gateways: [...new Set(gateways)] };
}

export function allowedCompiled(maps: ReadonlyMap<string, NetMap>, p: Packet): boolean {
  const v = compiledVerdict(maps, p);
  return v.direct || v.gateways.length > 0;
}

/** Fisher-Yates with fast-check's randomness, for order-independence checks. */
export function shuffled<T>(items: readonly T[], order: readonly number[]): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = order[i % order.length]! % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Subnets that contain the overlay network 100.64.0.0/10. */
export const OVERLAY_CONTAINING = ["0.0.0.0/0", "96.0.0.0/4"] as const;

/** Deny filters that reach into the overlay (and one that does not). */
const OVERLAY_FILTERS: SubnetFilterEntry[] = [
  { destination: "0.0.0.0/0", protocol: "icmp" },
  { destination: "100.64.0.0/10", protocol: "any" },
  { destination: "96.0.0.0/4", protocol: "tcp", ports: "22" },
  { destination: "100.64.0.1-100.64.0.4", protocol: "udp", ports: "53" },
  { destination: "8.8.8.0-8.8.8.8", protocol: "any" },
];

/** A gateway deny, mostly filtered with entries overlapping the overlay. */
const overlayDenyArb = (id: string, systems: readonly System[]): fc.Arbitrary<GatewayAccessPolicy> =>
  fc
    .record({
      senderTags: subsetOf(TAGS, 1),
      gateways: fc.array(gatewayEntryArb(systems), { minLength: 1, maxLength: 2 }),
      filter: fc.option(fc.subarray(OVERLAY_FILTERS, { minLength: 1, maxLength: 2 }), { freq: 5 }),
    })
    .map((r) => {
      const p: GatewayAccessPolicy = { id, name: `gateway ${id}`, enabled: true, action: "deny", senderTags: r.senderTags, gateways: r.gateways };
      if (r.filter !== null) p.subnetFilter = r.filter;
      return p;
    });

/**
 * States where gateways serve subnets that contain the overlay and deny policies are common: the
 * case where a gateway rule could reach into direct traffic. Every system may act as a gateway
 * and serves at least one overlay-containing subnet; gateway policies are allows and denies.
 */
export const overlayStateArb: fc.Arbitrary<PolicyState> = fc
  .integer({ min: 2, max: 5 })
  .chain((n) =>
    fc.tuple(
      ...Array.from({ length: n }, (_, i) =>
        fc.tuple(systemArb(i), fc.constantFrom(...OVERLAY_CONTAINING), fc.boolean()).map(([s, wide, nat]): System => {
          const subnets = s.gatewaySubnets.filter((g) => g.prefix !== wide);
          return { ...s, allowedAsGateway: true, gatewaySubnets: [...subnets, { prefix: wide, nat, source: "manual" }] };
        }),
      ),
    ),
  )
  .chain((systems) =>
    fc
      .record({
        direct: fc.integer({ min: 1, max: 4 }).chain((k) => fc.tuple(...Array.from({ length: k }, (_, i) => directPolicyArb(`d${i}`)))),
        allows: fc
          .integer({ min: 1, max: 3 })
          .chain((k) => fc.tuple(...Array.from({ length: k }, (_, i) => gatewayPolicyArb(`g${i}`, systems, "allow")))),
        denies: fc
          .integer({ min: 1, max: 3 })
          .chain((k) => fc.tuple(...Array.from({ length: k }, (_, i) => overlayDenyArb(`x${i}`, systems)))),
      })
      .map((r) => ({
        network: "100.64.0.0/10",
        systems,
        directAccessPolicies: r.direct,
        gatewayAccessPolicies: [...r.allows, ...r.denies],
      })),
  );
