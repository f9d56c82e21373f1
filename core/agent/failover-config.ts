/**
 * @module core/agent/failover-config
 * The agent's side of gateway failover, pure (the controller itself is core/failover; it runs in
 * the packet Worker next to the Device, platform/linux/device-engine.ts):
 *
 *   settings        `FailoverSettings` (preempt, probe interval, misses...) checked once, so a bad
 *                   value is an E_CONFIG_INVALID at start, not a Worker that fails to build.
 *   netmap message  `failoverNetMapMessage(netmap)`: what the engine's `netmap` control message
 *                   carries: every peer's id and key (the controller works on keys, the NetMap on
 *                   system ids) and the routes the client's Router puts on the TUN (the same
 *                   overlay rule as core/agent/gateway-config.ts routerConfig), so every prefix
 *                   the OS sends into the tunnel is one the controller chooses a gateway for, and
 *                   nothing the Router leaves out is routed by the Device either. An inactive
 *                   system gets no routes. Routes marked `withdrawn` (the gateway reported the
 *                   subnet unhealthy to the control plane) are kept, flag and all: the controller
 *                   counts that candidate as withdrawn for the prefix, the Router keeps the prefix.
 *   upstream        `upstreamSubnets(...)`: what a gateway's upstream monitor watches (platform/linux/
 *                   agent-gateway.ts), from where its firewall placed each served subnet.
 *   status          `subnetFailoverStatus(rows, netmap)`: the controller's per-prefix status with
 *                   gateway keys turned back into system ids and names, for `waygate status`
 *                   (core/agent/status.ts renders it, one block per group) and for DNS
 *                   (`activeGatewayFrom`). The engine sends per-prefix rows only when they change
 *                   (platform/linux/device-engine.ts); `withLiveHealth` brings such rows up to date
 *                   with the per-gateway health every poll carries.
 *
 * Why OS routes never follow health (fail closed): the Router keeps every granted prefix on the TUN
 * whatever the gateways' state (a NetMap route marked `withdrawn` included); when no gateway is healthy the Device drops and counts
 * (`no-healthy-gateway`), so nothing falls through to the local default route.
 */
import * as v from "valibot";
import { WaygateError } from "../errors.ts";
import type { CandidateState, LookupResult, PrefixStatus, SwitchReason, SwitchSummary } from "../failover/controller.ts";
import type { GatewayHealth } from "../failover/health.ts";
import type { UpstreamSubnet } from "../failover/upstream.ts";
import { type Prefix, parsePrefix, prefixCovers } from "../net/address.ts";
import type { NetMap, NetMapRoute } from "../policy/netmap.ts";
import type { ActiveGatewayFor } from "./dns-config.ts";

/** Failover knobs an operator may set (core/failover/controller.ts and health.ts say what each does). */
export interface FailoverSettings {
  /** Move back to a better-priority gateway once it has been up for `preemptHoldMs` (default off). */
  preempt?: boolean;
  preemptHoldMs?: number;
  probeIntervalMs?: number;
  missedProbes?: number;
  recoverProbes?: number;
}

export class FailoverSettingsError extends WaygateError {
  constructor(message: string) {
    super("E_CONFIG_INVALID", message);
  }
}

const positiveInt = (max: number) => v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(max));
const FailoverSettingsSchema = v.strictObject({
  preempt: v.optional(v.boolean()),
  preemptHoldMs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(3_600_000))),
  probeIntervalMs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(20), v.maxValue(60_000))),
  missedProbes: v.optional(positiveInt(100)),
  recoverProbes: v.optional(positiveInt(100)),
});

/** Checks settings (from flags or a test); throws FailoverSettingsError naming the field. */
export function parseFailoverSettings(raw: unknown): FailoverSettings {
  const r = v.safeParse(FailoverSettingsSchema, raw ?? {});
  if (!r.success) {
    const issue = r.issues[0];
    throw new FailoverSettingsError(`failover settings: ${v.getDotPath(issue) ?? "(top level)"}: ${issue.message}`);
  }
  return r.output;
}

/**
 * Checks a gateway's upstream hosts: canonical prefix -> hosts ("a.b.c.d", "a.b.c.d:port",
 * "[v6]:port"), at most 8 per subnet (each is one TCP connect per 200 ms). Throws
 * FailoverSettingsError naming the subnet.
 */
export function parseUpstreamHosts(raw: Readonly<Record<string, readonly string[]>> | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [key, hosts] of Object.entries(raw ?? {})) {
    let prefix: string;
    try {
      prefix = parsePrefix(key, { mask: true }).text;
    } catch (cause) {
      throw new FailoverSettingsError(`upstream hosts: ${JSON.stringify(key)} is not a subnet (${(cause as Error).message})`);
    }
    if (!Array.isArray(hosts) || hosts.some((h) => typeof h !== "string" || !/^(\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:.]+)(:\d{1,5})?$/.test(h))) {
      throw new FailoverSettingsError(`upstream hosts for ${prefix}: expected addresses like "172.26.0.10" or "172.26.0.10:443", got ${JSON.stringify(hosts)}`);
    }
    if (hosts.length > 8) throw new FailoverSettingsError(`upstream hosts for ${prefix}: at most 8, got ${hosts.length}`);
    out[prefix] = [...new Set(hosts)];
  }
  return out;
}

/** The engine's `netmap` control message (platform/linux/device-engine.ts). */
export interface FailoverNetMapMessage {
  type: "netmap";
  peers: { id: string; publicKey: string }[];
  routes: NetMapRoute[];
}

/** The routes failover chooses gateways for: the ones the client's Router puts on the TUN. */
export function failoverRoutes(netmap: NetMap): NetMapRoute[] {
  if (!netmap.self.active) return [];
  let overlay: Prefix | null = null;
  try {
    overlay = parsePrefix(netmap.self.network, { mask: true });
  } catch {
    overlay = null;
  }
  const out: NetMapRoute[] = [];
  for (const r of netmap.routes) {
    let p: Prefix;
    try {
      p = parsePrefix(r.prefix, { mask: true });
    } catch {
      continue; // the Router does not route it either
    }
    // Inside (or around) the overlay: the TUN's connected route and the peers' own /32s carry it.
    if (overlay !== null && p.family === overlay.family && p.length > 0 && (prefixCovers(overlay, p) || prefixCovers(p, overlay))) continue;
    out.push({ ...r, prefix: p.text });
  }
  return out;
}

export function failoverNetMapMessage(netmap: NetMap): FailoverNetMapMessage {
  const routes = failoverRoutes(netmap);
  return {
    type: "netmap",
    peers: netmap.self.active ? netmap.peers.map((p) => ({ id: p.id, publicKey: p.publicKey })) : [],
    routes,
  };
}

/** One candidate gateway of a subnet, as `waygate status` shows it. */
export interface FailoverCandidateView {
  /** System id (the key itself when the NetMap does not name it). */
  id: string;
  name: string;
  priority: number;
  draining: boolean;
  /** False: inherited from a covering route (a fallback, never selected for this subnet). */
  own: boolean;
  /** up, down, unknown (never answered yet) or withdrawn (it reports it cannot reach the subnet). */
  state: CandidateState;
  healthy: boolean;
  rttMs: number | null;
  missedProbes: number;
  upSince: number | null;
}

export interface FailoverSwitchView {
  from: string | null;
  to: string | null;
  reason: SwitchReason;
  at: number;
}

/** One routed subnet's failover state. */
export interface SubnetFailoverStatus {
  prefix: string;
  /** Its group (subnets that share candidates and state switch together); the text status shows one block per group. */
  group: string;
  /** The subnet's active gateway (system id); null: none healthy, fail closed (or a fallback, see `effective`). */
  active: string | null;
  /** Where the data plane sends it now: the active gateway, a covering route's (`via`), or nowhere. */
  effective: { gateway: string | null; via: string | null; reason: "no-healthy-gateway" | "no-route" | null };
  candidates: FailoverCandidateView[];
  lastSwitch: FailoverSwitchView | null;
}

/** A per-prefix status row as the engine sends it (the controller's PrefixStatus, last switch summarised). */
export type FailoverStatusRow = Omit<PrefixStatus, "group" | "lastSwitch"> & {
  /** Absent in rows from before grouping: the prefix is its own group. */
  group?: string;
  lastSwitch: (Pick<SwitchSummary, "from" | "to" | "reason" | "at"> & Partial<SwitchSummary>) | null;
};

/**
 * Rows from an earlier stats message with each candidate's liveness, RTT, misses and up-since
 * taken from `gateways` (the current per-gateway health); withdrawn stays withdrawn (that changes
 * only with the engine's revision, and so do the rows). A gateway `gateways` does not list keeps
 * its row's values.
 */
export function withLiveHealth(rows: readonly FailoverStatusRow[], gateways: readonly GatewayHealth[]): FailoverStatusRow[] {
  const live = new Map(gateways.map((g) => [g.gatewayId, g]));
  return rows.map((r) => ({
    ...r,
    candidates: r.candidates.map((c) => {
      const h = live.get(c.gatewayId);
      if (h === undefined) return c;
      const withdrawn = c.state === "withdrawn";
      return {
        ...c,
        state: withdrawn ? "withdrawn" : h.liveness,
        healthy: !withdrawn && h.liveness === "up",
        rttMs: h.rttMs,
        missed: h.missed,
        upSinceMs: h.upSinceMs,
      };
    }),
  }));
}

/** The controller's status (gateway keys) in system ids; rows come from the engine's stats. */
export function subnetFailoverStatus(rows: readonly FailoverStatusRow[], netmap: { peers: readonly { publicKey: string; id: string; name: string }[] } | null): SubnetFailoverStatus[] {
  const byKey = new Map((netmap?.peers ?? []).map((p) => [p.publicKey, p]));
  const id = (key: string | null): string | null => (key === null ? null : (byKey.get(key)?.id ?? key));
  // A group is named by its gateways' keys ("KEY1,KEY2#2"): the same in system ids.
  const names = new Map<string, string>();
  const groupName = (g: string): string => {
    let n = names.get(g);
    if (n === undefined) {
      const hash = g.indexOf("#");
      const ids = hash < 0 ? g : g.slice(0, hash);
      n = `${ids.split(",").map((k) => id(k)).join(",")}${hash < 0 ? "" : g.slice(hash)}`;
      names.set(g, n);
    }
    return n;
  };
  const effective = (e: LookupResult): SubnetFailoverStatus["effective"] =>
    e.gatewayId !== null ? { gateway: id(e.gatewayId), via: e.viaPrefix, reason: null } : { gateway: null, via: null, reason: e.reason };
  return rows.map((r) => ({
    prefix: r.prefix,
    group: groupName(r.group ?? r.prefix),
    active: id(r.active),
    effective: effective(r.effective),
    candidates: r.candidates.map((c) => ({
      id: id(c.gatewayId)!,
      name: byKey.get(c.gatewayId)?.name ?? "",
      priority: c.priority,
      draining: c.draining,
      own: c.own,
      state: c.state,
      healthy: c.healthy,
      rttMs: c.rttMs === null ? null : Math.round(c.rttMs * 100) / 100,
      missedProbes: c.missed,
      upSince: c.upSinceMs === null ? null : Math.round(c.upSinceMs),
    })),
    lastSwitch: r.lastSwitch === null ? null : { from: id(r.lastSwitch.from), to: id(r.lastSwitch.to), reason: r.lastSwitch.reason, at: Math.round(r.lastSwitch.at) },
  }));
}

/**
 * DNS's `activeGatewayFor` over a failover status: the gateway that carries the subnet now (its
 * active one, or a covering route's), null when none is healthy. A prefix failover does not know
 * (no status yet) gets `fallback`'s answer.
 */
export function activeGatewayFrom(status: readonly SubnetFailoverStatus[] | null, fallback: ActiveGatewayFor): ActiveGatewayFor {
  const byPrefix = new Map((status ?? []).map((s) => [s.prefix, s]));
  return (prefix) => {
    let key = prefix;
    try {
      key = parsePrefix(prefix, { mask: true }).text;
    } catch {
      // not a prefix: the fallback decides
    }
    const s = byPrefix.get(key);
    if (s === undefined) return fallback(prefix);
    return s.effective.gateway;
  };
}

/**
 * The subnets the upstream monitor watches: one per served prefix, on the interface the firewall
 * placed it on (the first, for a prefix spread over several LANs), or, when it cannot be placed now
 * (its interface went down, so discovery no longer lists it), on the one it was last placed on;
 * a prefix never placed is not watched (the firewall skipped it and said why). Updates `placedOn`.
 */
export function upstreamSubnets(
  placed: readonly { prefix: string; lanInterface: string }[],
  skipped: readonly { prefix: string }[],
  placedOn: Map<string, string>,
  hosts: Readonly<Record<string, readonly string[]>> = {},
): UpstreamSubnet[] {
  const out = new Map<string, UpstreamSubnet>();
  const hostsFor = (prefix: string): string[] => {
    for (const [k, list] of Object.entries(hosts)) {
      try {
        if (parsePrefix(k, { mask: true }).text === prefix) return [...list];
      } catch {
        // a bad key matches nothing (parseUpstreamHosts rejects it at start)
      }
    }
    return [];
  };
  for (const s of placed) {
    if (out.has(s.prefix)) continue;
    placedOn.set(s.prefix, s.lanInterface);
    out.set(s.prefix, { prefix: s.prefix, interface: s.lanInterface, hosts: hostsFor(s.prefix) });
  }
  for (const s of skipped) {
    const last = placedOn.get(s.prefix);
    if (last === undefined || out.has(s.prefix)) continue;
    out.set(s.prefix, { prefix: s.prefix, interface: last, hosts: hostsFor(s.prefix) });
  }
  return [...out.values()];
}
