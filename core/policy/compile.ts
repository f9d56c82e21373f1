/**
 * @module core/policy/compile
 * PolicyState -> NetMap, for one system (`compile`), for all (`compileAll`), and for only the
 * systems a change can affect (`affectedSystems` + `recompile`). Semantics: model.ts; the
 * oracle every result is tested against: evaluate.ts.
 *
 * Shape of the work. An index is built once per state: active systems by tag, enabled direct
 * policies by sender and receiver tag, gateway policies by sender tag and by gateway. Parsed
 * views of systems and policies are memoised by object identity (states are immutable), so
 * indexing a state that shares most objects with the last one costs a few map inserts.
 * Compiling one system then touches only the policies its tags name and the systems those
 * policies name: nothing here is per packet and nothing scans the whole state per system.
 *
 * Both ends of a relation are compiled by the same function (`directGrants(sender, receiver)`,
 * `gatewayGrants(sender, gateway)`), so a client's outbound rules and routes always agree with
 * the receiver's inbound rules or the gateway's forwarding rules.
 *
 * Subnet health is not policy: an unhealthy served subnet (the gateway reports it cannot reach
 * it) grants exactly what a healthy one does, so `decide` and every rule and allowed IP are the
 * same; only the route candidates through that gateway for prefixes overlapping it are marked
 * `withdrawn` (the same overlap rule as an in-band withdrawal, core/failover/controller.ts).
 * Keeping the route is what keeps the client's OS route on the TUN (fail closed).
 */
import { parseAddress, parsePrefix, prefixContainsAddress, prefixCovers, type Family, type Prefix } from "../net/address.ts";
import {
  actionOf,
  isActive,
  PolicyError,
  type AclProtocol,
  type DirectAccessPolicy,
  type GatewayAccessPolicy,
  type GatewaySubnet,
  type PolicyAction,
  type PolicyState,
  type System,
  type TimeWindow,
} from "./model.ts";
import {
  NETMAP_VERSION,
  type NetMap,
  type NetMapGatewayRule,
  type NetMapGatewaySubnet,
  type NetMapPeer,
  type NetMapRoute,
  type NetMapRule,
} from "./netmap.ts";
import {
  intersectRanges,
  parseDestination,
  parsePorts,
  portsText,
  prefixToRange,
  rangeCovers,
  rangeText,
  rangeToBlocks,
  subtractAll,
  type AddrRange,
} from "./ranges.ts";
import { nextWindowBoundary, timeWindowContains } from "./trust.ts";

export interface CompileOptions {
  /** Milliseconds since the epoch; trust time windows are evaluated at this instant. */
  now: number;
}

/** The DNS suffix of peer names: "<name>.waygate" and "<id>.id.waygate". */
export const DNS_SUFFIX = "waygate";
export const DEFAULT_SUBNET_PRIORITY = 100;
const DRAINING_PENALTY = 1000;

// ---------------------------------------------------------------------------------------------
// Parsed views, memoised by object identity.

interface ServedSubnet {
  prefix: Prefix;
  range: AddrRange;
  nat: boolean;
  source: GatewaySubnet["source"];
  draining: boolean;
  priority: number;
  healthy: boolean;
}

interface SysView {
  sys: System;
  id: string;
  /** The id as a base-36 number: same order as the id text for valid (5-character) ids, else NaN. */
  idKey: number;
  active: boolean;
  family: Family;
  address: string;
  host: string;
  /** Interned, deduplicated. */
  tags: readonly number[];
  publicIp: Uint8Array | null;
  dnsNames: string[];
  /** This system as a peer we route nothing through: shared by every NetMap that lists it so. */
  plainPeer: NetMapPeer;
  /** Subnets it serves; empty unless allowedAsGateway. Most specific first. */
  served: ServedSubnet[];
  /** The served subnets it reports unhealthy (usually none). */
  unhealthy: AddrRange[];
}

interface AclView {
  protocol: AclProtocol;
  ports: string | undefined;
  everything: boolean;
}

interface DirectView {
  id: string;
  action: PolicyAction;
  enabled: boolean;
  fromTags: Set<number>;
  toTags: Set<number>;
  acls: AclView[];
  /** A deny whose ACLs include "any protocol, any port": the pair is cut entirely. */
  cutsAll: boolean;
}

interface FilterView {
  range: AddrRange;
  protocol: AclProtocol;
  ports: string | undefined;
}

interface TargetSubnet {
  text: string;
  prefix: Prefix;
  range: AddrRange;
}

interface GatewayPolicyView {
  id: string;
  action: PolicyAction;
  enabled: boolean;
  senderTags: Set<number>;
  /** gateway id -> the subnets the policy names on it (entries for one gateway merged). */
  targets: Map<string, TargetSubnet[]>;
  filter: FilterView[] | undefined;
  publicIpWithin: Prefix[] | undefined;
  timeWindows: TimeWindow[] | undefined;
}

/**
 * Tags as small integers, process-wide: set lookups on numbers instead of strings in the
 * inner loops (pair checks run once per relation per side).
 */
const tagIds = new Map<string, number>();
function tagId(tag: string): number {
  let id = tagIds.get(tag);
  if (id === undefined) tagIds.set(tag, (id = tagIds.size));
  return id;
}
function tagSet(tags: readonly string[]): Set<number> {
  return new Set(tags.map(tagId));
}

const sysMemo = new WeakMap<System, SysView>();
const directMemo = new WeakMap<DirectAccessPolicy, DirectView>();
const gatewayMemo = new WeakMap<GatewayAccessPolicy, GatewayPolicyView>();

function fail(path: string, err: unknown): never {
  throw new PolicyError("E_POLICY_INVALID", path, err instanceof Error ? err.message : String(err), { cause: err });
}

function viewSystem(sys: System): SysView {
  let view = sysMemo.get(sys);
  if (view !== undefined) return view;
  let address;
  try {
    address = parseAddress(sys.virtualAddress);
  } catch (err) {
    fail(`system ${sys.id}.virtualAddress`, err);
  }
  const served: ServedSubnet[] = [];
  if (sys.allowedAsGateway) {
    for (const s of sys.gatewaySubnets) {
      let prefix;
      try {
        prefix = parsePrefix(s.prefix);
      } catch (err) {
        fail(`system ${sys.id}.gatewaySubnets`, err);
      }
      served.push({
        prefix,
        range: prefixToRange(prefix),
        nat: s.nat,
        source: s.source,
        draining: s.draining ?? false,
        priority: s.priority ?? DEFAULT_SUBNET_PRIORITY,
        healthy: s.healthy ?? true,
      });
    }
    served.sort((a, b) => b.prefix.length - a.prefix.length);
  }
  let publicIp: Uint8Array | null = null;
  if (sys.publicIp !== undefined) {
    try {
      publicIp = parseAddress(sys.publicIp).bytes;
    } catch {
      publicIp = null;
    }
  }
  const host = `${address.text}/${address.family === 4 ? 32 : 128}`;
  const names = dnsNames(sys);
  view = {
    sys,
    id: sys.id,
    idKey: /^[A-Z0-9]{5}$/.test(sys.id) ? parseInt(sys.id, 36) : NaN,
    active: isActive(sys),
    family: address.family,
    address: address.text,
    host,
    tags: [...tagSet(sys.tags)],
    publicIp,
    served,
    unhealthy: served.filter((s) => !s.healthy).map((s) => s.range),
    dnsNames: names,
    plainPeer: peerEntry(sys, address.text, [host], [], names),
  };
  sysMemo.set(sys, view);
  return view;
}

function viewAcl(protocol: AclProtocol, ports: string | undefined, path: string): AclView {
  let canonical: string | undefined;
  if (ports !== undefined) {
    try {
      canonical = portsText(parsePorts(ports));
    } catch (err) {
      fail(path, err);
    }
  }
  return { protocol, ports: canonical, everything: protocol === "any" && canonical === undefined };
}

function viewDirect(p: DirectAccessPolicy): DirectView {
  let view = directMemo.get(p);
  if (view !== undefined) return view;
  const action = actionOf(p);
  const acls = p.acls.map((a, i) => viewAcl(a.protocol, a.ports, `policy ${p.id}.acls[${i}]`));
  view = {
    id: p.id,
    action,
    enabled: p.enabled,
    fromTags: tagSet(p.fromTags),
    toTags: tagSet(p.toTags),
    acls,
    cutsAll: action === "deny" && acls.some((a) => a.everything),
  };
  directMemo.set(p, view);
  return view;
}

function viewGatewayPolicy(p: GatewayAccessPolicy): GatewayPolicyView {
  let view = gatewayMemo.get(p);
  if (view !== undefined) return view;
  const targets = new Map<string, TargetSubnet[]>();
  p.gateways.forEach((g, i) => {
    const list = targets.get(g.systemId) ?? [];
    g.subnets.forEach((text, j) => {
      let prefix;
      try {
        prefix = parsePrefix(text);
      } catch (err) {
        fail(`policy ${p.id}.gateways[${i}].subnets[${j}]`, err);
      }
      list.push({ text: prefix.text, prefix, range: prefixToRange(prefix) });
    });
    targets.set(g.systemId, list);
  });
  const filter = p.subnetFilter?.map((f, i): FilterView => {
    let range;
    try {
      range = parseDestination(f.destination);
    } catch (err) {
      fail(`policy ${p.id}.subnetFilter[${i}].destination`, err);
    }
    const acl = viewAcl(f.protocol, f.ports, `policy ${p.id}.subnetFilter[${i}].ports`);
    return { range, protocol: acl.protocol, ports: acl.ports };
  });
  const publicIpWithin = p.trust?.publicIpWithin?.map((t, i) => {
    try {
      return parsePrefix(t);
    } catch (err) {
      fail(`policy ${p.id}.trust.publicIpWithin[${i}]`, err);
    }
  });
  view = {
    id: p.id,
    action: actionOf(p),
    enabled: p.enabled,
    senderTags: tagSet(p.senderTags),
    targets,
    filter,
    publicIpWithin,
    timeWindows: p.trust?.timeWindows,
  };
  gatewayMemo.set(p, view);
  return view;
}

// ---------------------------------------------------------------------------------------------
// The per-state index.

/** One allowed slice of a gateway grant: destinations plus protocol and ports. */
interface AllowPiece {
  ranges: AddrRange[];
  dsts: string[];
  /** The ranges as CIDR blocks, for routes. */
  blocks: AddrRange[];
  protocol: AclProtocol;
  ports: string | undefined;
}

function allowPiece(ranges: AddrRange[], protocol: AclProtocol, ports: string | undefined): AllowPiece {
  return { ranges, dsts: ranges.map(rangeText), blocks: ranges.flatMap(rangeToBlocks), protocol, ports };
}

/** An allow grant through one gateway subnet, before per-sender denies and trust. */
interface Grant {
  policy: string;
  served: ServedSubnet;
  /** The granted region (target subnet minus the overlay network), before filters. */
  region: AddrRange[];
  pieces: AllowPiece[];
}

interface GatewayGrants {
  grants: Grant[];
  denies: NetMapGatewayRuleCore[];
}

interface NetMapGatewayRuleCore {
  subnet: string;
  nat: boolean;
  dst: string;
  protocol: AclProtocol;
  ports: string | undefined;
  policy: string;
}

interface DirectGrants {
  allows: DirectView[];
  denies: DirectView[];
}

const NO_DIRECT: DirectGrants = { allows: [], denies: [] };
const NO_GATEWAY: GatewayGrants = { grants: [], denies: [] };

function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

function hasAnyTag(tags: readonly number[], set: Set<number>): boolean {
  for (const t of tags) if (set.has(t)) return true;
  return false;
}

/**
 * Everything compile needs about one state, built once. Exposed so callers that compile many
 * systems of one state (the control plane, the bench) share it; `compile` builds its own.
 */
export class PolicyIndex {
  readonly network: string;
  readonly overlay: AddrRange;
  readonly systems = new Map<string, SysView>();
  private readonly activeByTag = new Map<number, SysView[]>();
  private readonly directByFrom = new Map<number, DirectView[]>();
  private readonly directByTo = new Map<number, DirectView[]>();
  private readonly gatewayBySender = new Map<number, GatewayPolicyView[]>();
  /** Per system: [direct as sender, direct as receiver, gateway as sender], built on first use. */
  private readonly perSystem = new Map<SysView, [DirectView[], DirectView[], GatewayPolicyView[]]>();
  private readonly gatewayByGateway = new Map<string, GatewayPolicyView[]>();
  private readonly grantCache = new Map<GatewayPolicyView, Map<string, Grant[]>>();

  constructor(
    readonly state: PolicyState,
    readonly now: number,
  ) {
    let network;
    try {
      network = parsePrefix(state.network);
    } catch (err) {
      fail("network", err);
    }
    this.network = network.text;
    this.overlay = prefixToRange(network);
    for (const sys of state.systems) {
      const view = viewSystem(sys);
      this.systems.set(sys.id, view);
      if (!view.active) continue;
      for (const tag of view.tags) pushTo(this.activeByTag, tag, view);
    }
    for (const p of state.directAccessPolicies) {
      if (!p.enabled) continue;
      const view = viewDirect(p);
      for (const tag of view.fromTags) pushTo(this.directByFrom, tag, view);
      for (const tag of view.toTags) pushTo(this.directByTo, tag, view);
    }
    for (const p of state.gatewayAccessPolicies) {
      if (!p.enabled) continue;
      const view = viewGatewayPolicy(p);
      for (const tag of view.senderTags) pushTo(this.gatewayBySender, tag, view);
      for (const id of view.targets.keys()) pushTo(this.gatewayByGateway, id, view);
    }
  }

  /** Active systems carrying any of the tags, each once. */
  membersOf(tags: Iterable<number>, into: Set<SysView>): void {
    for (const tag of tags) for (const s of this.activeByTag.get(tag) ?? []) into.add(s);
  }

  /** The policies indexed under any of the system's tags, each once. */
  private policiesByTags<P>(map: Map<number, P[]>, tags: readonly number[]): P[] {
    if (tags.length === 1) return map.get(tags[0]!) ?? [];
    const out = new Set<P>();
    for (const tag of tags) for (const p of map.get(tag) ?? []) out.add(p);
    return [...out];
  }

  private lists(s: SysView): [DirectView[], DirectView[], GatewayPolicyView[]] {
    let l = this.perSystem.get(s);
    if (l === undefined) {
      l = [
        this.policiesByTags(this.directByFrom, s.tags),
        this.policiesByTags(this.directByTo, s.tags),
        this.policiesByTags(this.gatewayBySender, s.tags),
      ];
      this.perSystem.set(s, l);
    }
    return l;
  }

  directFrom(s: SysView): DirectView[] {
    return this.lists(s)[0];
  }

  directTo(s: SysView): DirectView[] {
    return this.lists(s)[1];
  }

  gatewayPoliciesOfSender(s: SysView): GatewayPolicyView[] {
    return this.lists(s)[2];
  }

  gatewayPoliciesOfGateway(id: string): GatewayPolicyView[] {
    return this.gatewayByGateway.get(id) ?? [];
  }

  /** Sender `a` originating to receiver `b` (both active, distinct). */
  directGrants(a: SysView, b: SysView, fromOfA: DirectView[] = this.directFrom(a)): DirectGrants {
    let allows: DirectView[] | undefined;
    let denies: DirectView[] | undefined;
    for (const p of fromOfA) {
      if (!hasAnyTag(b.tags, p.toTags)) continue;
      if (p.action === "deny") {
        if (p.cutsAll) return NO_DIRECT;
        (denies ??= []).push(p);
      } else {
        (allows ??= []).push(p);
      }
    }
    if (allows === undefined) return NO_DIRECT;
    return { allows, denies: denies ?? [] };
  }

  private trustOk(p: GatewayPolicyView, sender: SysView): boolean {
    if (p.publicIpWithin !== undefined) {
      const ip = sender.publicIp;
      if (ip === null || !p.publicIpWithin.some((w) => prefixContainsAddress(w, ip))) return false;
    }
    if (p.timeWindows !== undefined && !p.timeWindows.some((w) => timeWindowContains(w, this.now))) return false;
    return true;
  }

  /** The sender-independent part of an allow policy's grants through one gateway (cached). */
  private baseGrants(p: GatewayPolicyView, gateway: SysView, extraMinus: readonly AddrRange[]): Grant[] {
    const cacheable = extraMinus.length === 0;
    if (cacheable) {
      const hit = this.grantCache.get(p)?.get(gateway.id);
      if (hit !== undefined) return hit;
    }
    const grants: Grant[] = [];
    for (const target of p.targets.get(gateway.id) ?? []) {
      const served = gateway.served.find((s) => prefixCovers(s.prefix, target.prefix));
      if (served === undefined) continue;
      const region = subtractAll([target.range], [this.overlay, ...extraMinus]);
      if (region.length === 0) continue;
      const pieces: AllowPiece[] = [];
      if (p.filter === undefined) {
        pieces.push(allowPiece(region, "any", undefined));
      } else {
        for (const f of p.filter) {
          const ranges: AddrRange[] = [];
          for (const r of region) {
            const x = intersectRanges(r, f.range);
            if (x !== null) ranges.push(x);
          }
          if (ranges.length > 0) pieces.push(allowPiece(ranges, f.protocol, f.ports));
        }
      }
      if (pieces.length > 0) grants.push({ policy: p.id, served, region, pieces });
    }
    if (cacheable) {
      let perGateway = this.grantCache.get(p);
      if (perGateway === undefined) this.grantCache.set(p, (perGateway = new Map()));
      perGateway.set(gateway.id, grants);
    }
    return grants;
  }

  /** What `sender` may send through `gateway` (both active, distinct). */
  gatewayGrants(sender: SysView, gateway: SysView): GatewayGrants {
    if (!gateway.sys.allowedAsGateway || sender === gateway) return NO_GATEWAY;
    const policies = this.gatewayPoliciesOfGateway(gateway.id);
    let cut: AddrRange[] | undefined;
    let filteredDenies: GatewayPolicyView[] | undefined;
    let allows: GatewayPolicyView[] | undefined;
    for (const p of policies) {
      if (!hasAnyTag(sender.tags, p.senderTags)) continue;
      if (p.action === "deny") {
        if (p.filter === undefined) {
          for (const t of p.targets.get(gateway.id)!) (cut ??= []).push(t.range);
        } else {
          (filteredDenies ??= []).push(p);
        }
      } else if (this.trustOk(p, sender)) {
        (allows ??= []).push(p);
      }
    }
    if (allows === undefined) return NO_GATEWAY;
    const grants: Grant[] = [];
    for (const p of allows) for (const g of this.baseGrants(p, gateway, cut ?? [])) grants.push(g);
    if (grants.length === 0) return NO_GATEWAY;
    const denies: NetMapGatewayRuleCore[] = [];
    for (const p of filteredDenies ?? []) {
      for (const t of p.targets.get(gateway.id)!) {
        const served = gateway.served.find((s) => prefixCovers(s.prefix, t.prefix));
        // Like grants, a deny covers only the non-overlay part of the subnet (model.ts rule 5):
        // these rules sit in the sender's outbound rules for the gateway peer, beside the direct
        // rules, so a deny reaching into the overlay would also block direct traffic.
        const region = subtractAll([t.range], [this.overlay]);
        for (const f of p.filter!) {
          for (const r of region) {
            const x = intersectRanges(r, f.range);
            if (x === null || !grants.some((g) => g.region.some((gr) => intersectRanges(gr, x) !== null))) continue;
            denies.push({
              subnet: t.text,
              nat: served?.nat ?? false,
              dst: rangeText(x),
              protocol: f.protocol,
              ports: f.ports,
              policy: p.id,
            });
          }
        }
      }
    }
    return { grants, denies };
  }
}

// ---------------------------------------------------------------------------------------------
// Compiling one system.

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareRules(a: NetMapRule, b: NetMapRule): number {
  return (
    cmp(a.peer, b.peer) ||
    cmp(a.action, b.action) ||
    cmp(a.dst, b.dst) ||
    cmp(a.src, b.src) ||
    cmp(a.protocol, b.protocol) ||
    cmp(a.ports ?? "", b.ports ?? "") ||
    cmp(a.policy, b.policy)
  );
}

function compareGatewayRules(a: NetMapGatewayRule, b: NetMapGatewayRule): number {
  return (
    cmp(a.sender, b.sender) ||
    cmp(a.action, b.action) ||
    cmp(a.dst, b.dst) ||
    cmp(a.protocol, b.protocol) ||
    cmp(a.ports ?? "", b.ports ?? "") ||
    cmp(a.subnet, b.subnet) ||
    Number(a.nat) - Number(b.nat) ||
    cmp(a.policy, b.policy)
  );
}

function compareViews(a: SysView, b: SysView): number {
  return a.idKey - b.idKey || cmp(a.id, b.id);
}

/** Sort and drop exact duplicates (equal under the comparator, which reads every field). */
function sortUniqueInto<T>(items: T[], compare: (a: T, b: T) => number, out: T[]): void {
  if (items.length > 1) items.sort(compare);
  for (let i = 0; i < items.length; i++) {
    if (i > 0 && compare(items[i - 1]!, items[i]!) === 0) continue;
    out.push(items[i]!);
  }
}

/** What one NetMap collects about one peer before sorting. */
interface PeerAcc {
  view: SysView;
  /** Prefixes routed through this peer. */
  via: string[];
  inbound: NetMapRule[];
  outbound: NetMapRule[];
  gateway: NetMapGatewayRule[];
}

function rule(
  action: PolicyAction,
  peer: string,
  src: string,
  dst: string,
  protocol: AclProtocol,
  ports: string | undefined,
  policy: string,
): NetMapRule {
  return ports === undefined
    ? { action, peer, src, dst, protocol, policy }
    : { action, peer, src, dst, protocol, ports, policy };
}

function directRules(grants: DirectGrants, peer: string, src: string, dst: string, out: NetMapRule[]): void {
  for (const p of grants.allows) for (const a of p.acls) out.push(rule("allow", peer, src, dst, a.protocol, a.ports, p.id));
  for (const p of grants.denies) for (const a of p.acls) out.push(rule("deny", peer, src, dst, a.protocol, a.ports, p.id));
}

function dnsNames(sys: System): string[] {
  const slug = sys.name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
  const names = [`${sys.id.toLowerCase()}.id.${DNS_SUFFIX}`];
  if (slug !== "") names.push(`${slug}.${DNS_SUFFIX}`);
  return names.sort(cmp);
}

/** A peer entry; key order fixed by construction, endpoint or not, for byte-stable JSON. */
function peerEntry(sys: System, address: string, allowedIps: string[], gatewayFor: string[], names: string[]): NetMapPeer {
  return sys.endpoint === undefined
    ? { id: sys.id, name: sys.name, publicKey: sys.publicKey, virtualAddress: address, allowedIps, gatewayFor, dnsNames: names }
    : {
        id: sys.id,
        name: sys.name,
        publicKey: sys.publicKey,
        endpoint: sys.endpoint,
        virtualAddress: address,
        allowedIps,
        gatewayFor,
        dnsNames: names,
      };
}

function emptyNetMap(index: PolicyIndex, s: SysView): NetMap {
  return {
    version: NETMAP_VERSION,
    self: { id: s.id, name: s.sys.name, virtualAddress: s.address, network: index.network, active: false },
    peers: [],
    routes: [],
    inboundRules: [],
    outboundRules: [],
    gatewayRules: [],
  };
}

interface RouteCandidate {
  /** A CIDR block. */
  range: AddrRange;
  via: string;
  /** Its gateway's unhealthy subnets (see SysView). */
  unhealthy: readonly AddrRange[];
  priority: number;
  draining: boolean;
}

function metric(c: { priority: number; draining: boolean }): number {
  return c.priority + (c.draining ? DRAINING_PENALTY : 0);
}

/**
 * Routes with full candidate lists: every gateway whose granted prefix covers a route prefix is
 * a candidate for it, so the most specific match for any destination names every gateway that
 * may carry it (prefixes nest or are disjoint, so any granted prefix holding the destination
 * covers the most specific one). A candidate is withdrawn for a route prefix when its gateway
 * reports any served subnet overlapping that prefix unhealthy.
 */
function buildRoutes(candidates: RouteCandidate[]): NetMapRoute[] {
  const byPrefix = new Map<string, AddrRange>();
  for (const c of candidates) byPrefix.set(`${c.range.family}/${c.range.lo}/${c.range.hi}`, c.range);
  const routes: NetMapRoute[] = [];
  for (const range of byPrefix.values()) {
    const prefix = rangeText(range);
    const best = new Map<string, RouteCandidate>();
    for (const c of candidates) {
      if (!rangeCovers(c.range, range)) continue;
      const seen = best.get(c.via);
      if (seen === undefined || metric(c) < metric(seen)) best.set(c.via, c);
    }
    for (const [via, c] of best) {
      const withdrawn = c.unhealthy.length > 0 && c.unhealthy.some((u) => intersectRanges(u, range) !== null);
      routes.push({ prefix, via, priority: c.priority, draining: c.draining, withdrawn, metricHint: metric(c) });
    }
  }
  routes.sort((a, b) => cmp(a.prefix, b.prefix) || a.metricHint - b.metricHint || cmp(a.via, b.via));
  return routes;
}

/** Compile one system's NetMap against a prebuilt index. */
export function compileWithIndex(index: PolicyIndex, systemId: string): NetMap {
  const self = index.systems.get(systemId);
  if (self === undefined) {
    throw new PolicyError("E_POLICY_UNKNOWN_SYSTEM", "", `no system ${JSON.stringify(systemId)} in the policy state`);
  }
  if (!self.active) return emptyNetMap(index, self);

  // Rules are collected per peer: every rule list sorts by peer first, so sorting the peers and
  // then each peer's few rules is the same order as sorting everything, for far less work.
  const peers = new Map<SysView, PeerAcc>();
  const acc = (p: SysView): PeerAcc => {
    let a = peers.get(p);
    if (a === undefined) peers.set(p, (a = { view: p, via: [], inbound: [], outbound: [], gateway: [] }));
    return a;
  };

  // Direct, as sender.
  const selfFrom = index.directFrom(self);
  const receivers = new Set<SysView>();
  for (const p of selfFrom) if (p.action === "allow") index.membersOf(p.toTags, receivers);
  for (const b of receivers) {
    if (b === self) continue;
    const g = index.directGrants(self, b, selfFrom);
    if (g.allows.length === 0) continue;
    directRules(g, b.id, self.host, b.host, acc(b).outbound);
  }
  // Direct, as receiver.
  const senders = new Set<SysView>();
  for (const p of index.directTo(self)) if (p.action === "allow") index.membersOf(p.fromTags, senders);
  for (const a of senders) {
    if (a === self) continue;
    const g = index.directGrants(a, self);
    if (g.allows.length === 0) continue;
    directRules(g, a.id, a.host, self.host, acc(a).inbound);
  }

  // Through gateways, as a client.
  const gateways = new Set<SysView>();
  for (const p of index.gatewayPoliciesOfSender(self)) {
    if (p.action !== "allow") continue;
    for (const id of p.targets.keys()) {
      const g = index.systems.get(id);
      if (g !== undefined && g.active && g !== self) gateways.add(g);
    }
  }
  const candidates: RouteCandidate[] = [];
  for (const gw of gateways) {
    const grants = index.gatewayGrants(self, gw);
    if (grants.grants.length === 0) continue;
    const out = acc(gw).outbound;
    for (const grant of grants.grants) {
      for (const piece of grant.pieces) {
        for (const dst of piece.dsts) out.push(rule("allow", gw.id, self.host, dst, piece.protocol, piece.ports, grant.policy));
        for (const block of piece.blocks) {
          candidates.push({
            range: block,
            via: gw.id,
            unhealthy: gw.unhealthy,
            priority: grant.served.priority,
            draining: grant.served.draining,
          });
        }
      }
    }
    for (const d of grants.denies) out.push(rule("deny", gw.id, self.host, d.dst, d.protocol, d.ports, d.policy));
  }
  const routes = buildRoutes(candidates);
  for (const r of routes) acc(index.systems.get(r.via)!).via.push(r.prefix);

  // As a gateway.
  if (self.sys.allowedAsGateway) {
    const users = new Set<SysView>();
    for (const p of index.gatewayPoliciesOfGateway(self.id)) if (p.action === "allow") index.membersOf(p.senderTags, users);
    for (const u of users) {
      if (u === self) continue;
      const grants = index.gatewayGrants(u, self);
      if (grants.grants.length === 0) continue;
      const out = acc(u).gateway;
      for (const grant of grants.grants) {
        const subnet = grant.served.prefix.text;
        for (const piece of grant.pieces) {
          for (const dst of piece.dsts) {
            out.push(gatewayRule("allow", u, subnet, grant.served.nat, dst, piece.protocol, piece.ports, grant.policy));
          }
        }
      }
      for (const d of grants.denies) out.push(gatewayRule("deny", u, d.subnet, d.nat, d.dst, d.protocol, d.ports, d.policy));
    }
  }

  const ordered = [...peers.values()].sort((a, b) => compareViews(a.view, b.view));
  const peerList: NetMapPeer[] = [];
  const inboundRules: NetMapRule[] = [];
  const outboundRules: NetMapRule[] = [];
  const gatewayRules: NetMapGatewayRule[] = [];
  for (const a of ordered) {
    const p = a.view;
    const gatewayFor = a.via.length === 0 ? a.via : [...new Set(a.via)].sort(cmp);
    peerList.push(
      gatewayFor.length === 0 ? p.plainPeer : peerEntry(p.sys, p.address, [p.host, ...gatewayFor], gatewayFor, p.dnsNames),
    );
    sortUniqueInto(a.inbound, compareRules, inboundRules);
    sortUniqueInto(a.outbound, compareRules, outboundRules);
    sortUniqueInto(a.gateway, compareGatewayRules, gatewayRules);
  }

  const selfPart: NetMap["self"] = {
    id: self.id,
    name: self.sys.name,
    virtualAddress: self.address,
    network: index.network,
    active: true,
  };
  if (self.sys.allowedAsGateway) {
    const subnets: NetMapGatewaySubnet[] = self.served
      .map((s) => ({ prefix: s.prefix.text, nat: s.nat, source: s.source, draining: s.draining, priority: s.priority }))
      .sort((a, b) => cmp(a.prefix, b.prefix) || a.priority - b.priority || cmp(a.source, b.source) || Number(a.nat) - Number(b.nat));
    selfPart.gateway = { subnets };
  }
  return {
    version: NETMAP_VERSION,
    self: selfPart,
    peers: peerList,
    routes,
    inboundRules,
    outboundRules,
    gatewayRules,
  };
}

function gatewayRule(
  action: PolicyAction,
  sender: SysView,
  subnet: string,
  nat: boolean,
  dst: string,
  protocol: AclProtocol,
  ports: string | undefined,
  policy: string,
): NetMapGatewayRule {
  const base = { action, sender: sender.id, senderAddress: sender.address, subnet, nat, dst, protocol };
  return ports === undefined ? { ...base, policy } : { ...base, ports, policy };
}

// ---------------------------------------------------------------------------------------------
// Public entry points.

/** The NetMap of one system. Throws PolicyError E_POLICY_UNKNOWN_SYSTEM for an unknown id. */
export function compile(state: PolicyState, systemId: string, options: CompileOptions): NetMap {
  return compileWithIndex(new PolicyIndex(state, options.now), systemId);
}

/** Every system's NetMap, keyed by id in the state's order, sharing one index. */
export function compileAll(state: PolicyState, options: CompileOptions): Map<string, NetMap> {
  const index = new PolicyIndex(state, options.now);
  const out = new Map<string, NetMap>();
  for (const s of state.systems) out.set(s.id, compileWithIndex(index, s.id));
  return out;
}

/** A tag -> systems map over all systems (active or not), built on demand per state. */
function tagMembers(state: PolicyState): (tags: Iterable<string>, into: Set<string>) => void {
  let byTag: Map<string, string[]> | undefined;
  return (tags, into) => {
    if (byTag === undefined) {
      byTag = new Map();
      for (const s of state.systems) for (const t of s.tags) pushTo(byTag, t, s.id);
    }
    for (const t of tags) for (const id of byTag.get(t) ?? []) into.add(id);
  };
}

function sameJson(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

function byId<T extends { id: string }>(list: readonly T[]): Map<string, T> {
  const m = new Map<string, T>();
  for (const item of list) m.set(item.id, item);
  return m;
}

/** Everyone a system could possibly be related to in a state, by any enabled policy. */
function relatedTo(state: PolicyState, sys: System, members: ReturnType<typeof tagMembers>, into: Set<string>): void {
  const tags = new Set(sys.tags);
  const any = (list: readonly string[]) => list.some((t) => tags.has(t));
  for (const p of state.directAccessPolicies) {
    if (!p.enabled) continue;
    if (any(p.fromTags)) members(p.toTags, into);
    if (any(p.toTags)) members(p.fromTags, into);
  }
  for (const p of state.gatewayAccessPolicies) {
    if (!p.enabled) continue;
    if (any(p.senderTags)) for (const g of p.gateways) into.add(g.systemId);
    if (p.gateways.some((g) => g.systemId === sys.id)) members(p.senderTags, into);
  }
}

/**
 * The ids whose NetMap can differ between two states compiled at the same `now`: every system
 * added, removed or changed, everyone related to such a system in either state, and every
 * system a changed policy names (by tag or as a gateway) in either state. A subnet's health is
 * part of its gateway's system entry, so a health change reaches that gateway's senders through
 * `relatedTo`. An over-approximation by design; test/policy/incremental.test.ts checks that nothing outside it changes.
 */
export function affectedSystems(oldState: PolicyState, newState: PolicyState): Set<string> {
  const affected = new Set<string>();
  if (oldState.network !== newState.network) {
    for (const s of oldState.systems) affected.add(s.id);
    for (const s of newState.systems) affected.add(s.id);
    return affected;
  }
  const oldMembers = tagMembers(oldState);
  const newMembers = tagMembers(newState);
  const oldSystems = byId(oldState.systems);
  const newSystems = byId(newState.systems);
  for (const [id, o] of oldSystems) {
    const n = newSystems.get(id);
    if (n !== undefined && sameJson(o, n)) continue;
    affected.add(id);
    relatedTo(oldState, o, oldMembers, affected);
    if (n !== undefined) relatedTo(newState, n, newMembers, affected);
  }
  for (const [id, n] of newSystems) {
    if (oldSystems.has(id)) continue;
    affected.add(id);
    relatedTo(newState, n, newMembers, affected);
  }
  const directNames = (p: DirectAccessPolicy, members: ReturnType<typeof tagMembers>) => {
    members(p.fromTags, affected);
    members(p.toTags, affected);
  };
  const gatewayNames = (p: GatewayAccessPolicy, members: ReturnType<typeof tagMembers>) => {
    members(p.senderTags, affected);
    for (const g of p.gateways) affected.add(g.systemId);
  };
  diffPolicies(oldState.directAccessPolicies, newState.directAccessPolicies, (o, n) => {
    if (o !== undefined) directNames(o, oldMembers);
    if (n !== undefined) directNames(n, newMembers);
  });
  diffPolicies(oldState.gatewayAccessPolicies, newState.gatewayAccessPolicies, (o, n) => {
    if (o !== undefined) gatewayNames(o, oldMembers);
    if (n !== undefined) gatewayNames(n, newMembers);
  });
  return affected;
}

function diffPolicies<P extends { id: string }>(
  before: readonly P[],
  after: readonly P[],
  changed: (o: P | undefined, n: P | undefined) => void,
): void {
  const oldById = byId(before);
  const newById = byId(after);
  for (const [id, o] of oldById) {
    const n = newById.get(id);
    if (n === undefined || !sameJson(o, n)) changed(o, n);
  }
  for (const [id, n] of newById) if (!oldById.has(id)) changed(undefined, n);
}

/**
 * The systems whose NetMap can differ between `then` and `now` on one state because a time
 * window opened or closed: the senders and gateways of every enabled policy whose window
 * verdict changed.
 */
export function affectedByTime(state: PolicyState, then: number, now: number): Set<string> {
  const affected = new Set<string>();
  const members = tagMembers(state);
  for (const p of state.gatewayAccessPolicies) {
    const windows = p.trust?.timeWindows;
    if (!p.enabled || windows === undefined) continue;
    const before = windows.some((w) => timeWindowContains(w, then));
    const after = windows.some((w) => timeWindowContains(w, now));
    if (before === after) continue;
    members(p.senderTags, affected);
    for (const g of p.gateways) affected.add(g.systemId);
  }
  return affected;
}

/** The next instant after `now` at which any enabled policy's time window opens or closes. */
export function nextTrustChange(state: PolicyState, now: number): number | null {
  let best: number | null = null;
  for (const p of state.gatewayAccessPolicies) {
    if (!p.enabled) continue;
    for (const w of p.trust?.timeWindows ?? []) {
      const at = nextWindowBoundary(w, now);
      if (at !== null && (best === null || at < best)) best = at;
    }
  }
  return best;
}

export interface RecompileResult {
  /** Every system's NetMap for the new state. */
  netmaps: Map<string, NetMap>;
  /** The ids that were recompiled (sorted). */
  recompiled: string[];
}

/**
 * New NetMaps after a change, recompiling only `affectedSystems(oldState, newState)` and
 * reusing `previous` (the NetMaps of `oldState`, same `now`) for everyone else.
 */
export function recompile(
  previous: ReadonlyMap<string, NetMap>,
  oldState: PolicyState,
  newState: PolicyState,
  options: CompileOptions,
): RecompileResult {
  const affected = affectedSystems(oldState, newState);
  const index = new PolicyIndex(newState, options.now);
  const netmaps = new Map<string, NetMap>();
  const recompiled: string[] = [];
  for (const s of newState.systems) {
    const before = previous.get(s.id);
    if (before !== undefined && !affected.has(s.id)) {
      netmaps.set(s.id, before);
    } else {
      netmaps.set(s.id, compileWithIndex(index, s.id));
      recompiled.push(s.id);
    }
  }
  recompiled.sort(cmp);
  return { netmaps, recompiled };
}
