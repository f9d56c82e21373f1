/**
 * @module test/failover/per-prefix-oracle
 * The failover controller as it was before grouping (one selection state per prefix, every prefix
 * evaluated at every tick): the oracle test/failover/grouped.property.test.ts holds the grouped
 * core/failover/controller.ts to. Kept verbatim apart from imports and names, so "same semantics"
 * means the semantics that shipped; do not optimise it.
 */
import type { Logger } from "../../core/log.ts";
import { parsePrefix, prefixCovers, prefixesOverlap, type Prefix } from "../../core/net/address.ts";
import { PrefixTable } from "../../core/net/prefix-table.ts";
import type { RouteSnapshotRow } from "../../core/dataplane/routes.ts";
import type { NetMapRoute } from "../../core/policy/netmap.ts";
import { FailoverConfigError, HealthMonitor, type GatewayHealth, type Liveness } from "../../core/failover/health.ts";

export const DEFAULT_PREEMPT_HOLD_MS = 10_000;

export type SwitchReason =
  | "initial"
  | "active-down"
  | "withdrawn"
  | "draining"
  | "preempt"
  | "route-removed"
  /** Every candidate had failed (active none) and one is healthy again. */
  | "recovered";

export interface FailoverCandidate {
  gatewayId: string;
  /** Lower is preferred. */
  priority: number;
  draining: boolean;
}

export interface FailoverRoute {
  prefix: string;
  candidates: FailoverCandidate[];
}

/** One switch of one prefix's active gateway; `null` is "no gateway" (fail closed). */
export interface FailoverDecision {
  prefix: string;
  from: string | null;
  to: string | null;
  reason: SwitchReason;
  at: number;
}

export type LookupResult =
  | {
      readonly gatewayId: string;
      /** The route prefix the destination matched. */
      readonly prefix: string;
      /** The route prefix whose active gateway carries it (differs from `prefix` on fallback). */
      readonly viaPrefix: string;
    }
  | {
      readonly gatewayId: null;
      /** The route prefix the destination matched; null when no route covers it. */
      readonly prefix: string | null;
      readonly reason: "no-healthy-gateway" | "no-route";
    };

export type CandidateState = Liveness | "withdrawn";

export interface CandidateStatus {
  gatewayId: string;
  priority: number;
  draining: boolean;
  /** False for a gateway inherited from a covering route (a fallback, not selected here). */
  own: boolean;
  /** `withdrawn` when it withdrew this prefix, else its liveness. */
  state: CandidateState;
  healthy: boolean;
  rttMs: number | null;
  missed: number;
  /** Up without interruption since (ms); null unless up. */
  upSinceMs: number | null;
}

export interface PrefixStatus {
  prefix: string;
  active: string | null;
  /** What the data plane does for destinations matching this prefix. */
  effective: LookupResult;
  candidates: CandidateStatus[];
  lastSwitch: FailoverDecision | null;
}

export interface FailoverOptions {
  now: () => number;
  logger: Logger;
  sendProbe: (gatewayId: string) => void;
  preempt?: boolean;
  preemptHoldMs?: number;
  probeIntervalMs?: number;
  missedProbes?: number;
  recoverProbes?: number;
  rttAlpha?: number;
}

interface RouteState {
  readonly prefix: Prefix;
  /** Every candidate, by gatewayId. */
  candidates: Map<string, FailoverCandidate>;
  /** Own candidates (see the module doc). */
  own: Set<string>;
  /** Covering routes, nearest first. */
  covering: RouteState[];
  active: string | null;
  everActive: boolean;
  lastSwitch: FailoverDecision | null;
  resolved: LookupResult;
  /** lookupPinned's answers, one frozen object per gateway, so the data path allocates nothing. */
  pinnedAnswers: Map<string, LookupResult>;
}

const NO_ROUTE: LookupResult = Object.freeze({ gatewayId: null, prefix: null, reason: "no-route" });

/** NetMap routes (one row per prefix and gateway) grouped into FailoverRoutes. */
function routesFromNetMap(routes: readonly NetMapRoute[]): FailoverRoute[] {
  const byPrefix = new Map<string, FailoverRoute>();
  for (const r of routes) {
    let route = byPrefix.get(r.prefix);
    if (route === undefined) byPrefix.set(r.prefix, (route = { prefix: r.prefix, candidates: [] }));
    route.candidates.push({ gatewayId: r.via, priority: r.priority, draining: r.draining });
  }
  return [...byPrefix.values()];
}

export class PerPrefixController {
  readonly preempt: boolean;
  readonly preemptHoldMs: number;
  readonly health: HealthMonitor;
  private readonly now: () => number;
  private readonly log: Logger;
  private routes = new Map<string, RouteState>();
  private table = new PrefixTable<RouteState>();
  /** Withdrawn subnets per gateway, as the gateway last reported them. */
  private withdrawn = new Map<string, Prefix[]>();
  /** Admin drains reported outside the NetMap (in-band), per gateway. */
  private drained = new Set<string>();

  constructor(options: FailoverOptions) {
    this.now = options.now;
    this.log = options.logger;
    this.preempt = options.preempt ?? false;
    this.preemptHoldMs = options.preemptHoldMs ?? DEFAULT_PREEMPT_HOLD_MS;
    if (!(this.preemptHoldMs >= 0)) throw new FailoverConfigError(`failover: preemptHoldMs must be >= 0, got ${this.preemptHoldMs}`);
    this.health = new HealthMonitor({
      now: options.now,
      logger: options.logger,
      sendProbe: options.sendProbe,
      ...(options.probeIntervalMs !== undefined && { probeIntervalMs: options.probeIntervalMs }),
      ...(options.missedProbes !== undefined && { missedProbes: options.missedProbes }),
      ...(options.recoverProbes !== undefined && { recoverProbes: options.recoverProbes }),
      ...(options.rttAlpha !== undefined && { rttAlpha: options.rttAlpha }),
    });
  }

  // ------------------------------------------------------------------ inputs

  /**
   * The routes from this client's NetMap (idempotent). A prefix keeps its active gateway while
   * that gateway is still one of its own candidates; otherwise it switches with `route-removed`.
   * Throws AddressError on a bad prefix, before changing anything.
   */
  setRoutes(routes: readonly FailoverRoute[]): FailoverDecision[] {
    const parsed = new Map<string, { prefix: Prefix; candidates: Map<string, FailoverCandidate> }>();
    for (const r of routes) {
      const prefix = parsePrefix(r.prefix, { mask: true });
      let entry = parsed.get(prefix.text);
      if (entry === undefined) parsed.set(prefix.text, (entry = { prefix, candidates: new Map() }));
      for (const c of r.candidates) {
        const seen = entry.candidates.get(c.gatewayId);
        // A gateway listed twice for one prefix: keep its better entry, as the compiler does.
        if (seen === undefined || rank(c) < rank(seen)) entry.candidates.set(c.gatewayId, { ...c });
      }
    }

    const decisions: FailoverDecision[] = [];
    const at = this.now();
    for (const [text, state] of this.routes) {
      if (parsed.has(text)) continue;
      this.routes.delete(text);
      this.table.remove(state.prefix);
      if (state.active !== null) decisions.push(this.record(state, null, "route-removed", at));
    }
    for (const [text, { prefix, candidates }] of parsed) {
      let state = this.routes.get(text);
      if (state === undefined) {
        state = {
          prefix,
          candidates,
          own: new Set(),
          covering: [],
          active: null,
          everActive: false,
          lastSwitch: null,
          resolved: NO_ROUTE,
          pinnedAnswers: new Map(),
        };
        this.routes.set(text, state);
        this.table.insert(prefix, state);
      } else {
        state.candidates = candidates;
      }
    }
    // Own vs inherited, and the covering chain, depend on the whole set.
    const all = [...this.routes.values()];
    for (const s of all) {
      s.covering = all
        .filter((o) => o !== s && prefixCovers(o.prefix, s.prefix))
        .sort((a, b) => b.prefix.length - a.prefix.length);
      const inherited = new Set<string>();
      for (const o of s.covering) for (const id of o.candidates.keys()) inherited.add(id);
      s.own = new Set([...s.candidates.keys()].filter((id) => !inherited.has(id)));
      if (s.own.size === 0) s.own = new Set(s.candidates.keys());
    }
    const gateways = new Set<string>();
    for (const s of all) for (const id of s.candidates.keys()) gateways.add(id);
    this.health.setGateways(gateways);
    return [...decisions, ...this.evaluate()];
  }

  /** Convenience: `setRoutes(routesFromNetMap(netMap.routes))`. */
  setNetMapRoutes(routes: readonly NetMapRoute[]): FailoverDecision[] {
    return this.setRoutes(routesFromNetMap(routes));
  }

  onProbeReply(gatewayId: string, rttMs: number): FailoverDecision[] {
    return this.health.onProbeReply(gatewayId, rttMs) === null ? [] : this.evaluate();
  }

  /** Traffic from the gateway (its rx counter moved since the last look). */
  onData(gatewayId: string): void {
    this.health.onData(gatewayId);
  }

  /**
   * The subnets this gateway currently reports as lost (its full list, so a repeat is a no-op and
   * `[]` restores it). Acts at once: `withdrawn` switches in the returned decisions.
   */
  setWithdrawn(gatewayId: string, subnets: readonly string[]): FailoverDecision[] {
    const prefixes = subnets.map((s) => parsePrefix(s, { mask: true }));
    if (prefixes.length === 0) this.withdrawn.delete(gatewayId);
    else this.withdrawn.set(gatewayId, prefixes);
    return this.evaluate();
  }

  /** An admin drain learnt outside the NetMap (in-band from the gateway); ORed with the routes' flag. */
  setDraining(gatewayId: string, draining: boolean): FailoverDecision[] {
    if (draining) this.drained.add(gatewayId);
    else this.drained.delete(gatewayId);
    return this.evaluate();
  }

  /** Probes and down detection, then one evaluation. Call at `nextTickInMs()`. */
  tick(): FailoverDecision[] {
    this.health.tick();
    return this.evaluate();
  }

  nextTickInMs(): number {
    const next = this.health.nextDueInMs();
    if (!this.preempt) return next;
    // A preemption becomes possible when a better candidate's hold time runs out.
    const now = this.now();
    let due = next;
    for (const s of this.routes.values()) {
      if (s.active === null) continue;
      const mine = s.candidates.get(s.active)?.priority ?? Number.NEGATIVE_INFINITY;
      for (const id of s.own) {
        const up = this.health.get(id)?.upSinceMs;
        if (up === null || up === undefined || s.candidates.get(id)!.priority >= mine) continue;
        if (this.isDraining(id, s) || !this.healthyFor(id, s)) continue;
        due = Math.min(due, Math.max(0, up + this.preemptHoldMs - now));
      }
    }
    return due;
  }

  // ------------------------------------------------------------------ queries

  activeFor(prefix: string): string | null {
    return this.routes.get(parsePrefix(prefix, { mask: true }).text)?.active ?? null;
  }

  /**
   * The data path's answer for a 4- or 16-byte destination: the gateway to send through, or
   * null (drop and count). No allocation: the answers are resolved at each evaluation.
   */
  lookup(destination: Uint8Array): LookupResult {
    return this.table.lookup(destination)?.resolved ?? NO_ROUTE;
  }

  /**
   * For an existing flow pinned to `pinned`: keep it there while that gateway is healthy for the
   * matched prefix (draining included, so drained flows finish), else the normal answer.
   */
  lookupPinned(destination: Uint8Array, pinned: string): LookupResult {
    const s = this.table.lookup(destination);
    if (s === undefined) return NO_ROUTE;
    if (s.candidates.has(pinned) && this.healthyFor(pinned, s)) {
      let answer = s.pinnedAnswers.get(pinned);
      if (answer === undefined) {
        answer = Object.freeze({ gatewayId: pinned, prefix: s.prefix.text, viaPrefix: s.prefix.text });
        s.pinnedAnswers.set(pinned, answer);
      }
      return answer;
    }
    return s.resolved;
  }

  /**
   * The data plane's view, for a Device in another thread (core/dataplane/routes.ts
   * SnapshotSelector): per route prefix, the resolved gateway and the candidates healthy for it
   * (where pinned flows may stay). Equal snapshots give equal answers; re-send on a difference.
   */
  snapshot(): RouteSnapshotRow[] {
    return this.sorted().map((s) => ({
      prefix: s.prefix.text,
      gatewayId: s.resolved.gatewayId,
      healthy: [...s.candidates.keys()].filter((id) => this.healthyFor(id, s)).sort(cmp),
    }));
  }

  /**
   * Per route prefix, the resolved answer: what to load into the data plane's per-destination
   * override table (longest prefix over these rows gives the same answers as `lookup`).
   */
  forwardingTable(): { prefix: string; result: LookupResult }[] {
    return this.sorted().map((s) => ({ prefix: s.prefix.text, result: s.resolved }));
  }

  /** Whether the gateway is a usable target for this prefix now (up, not withdrawn). */
  isHealthyFor(gatewayId: string, prefix: string): boolean {
    const s = this.routes.get(parsePrefix(prefix, { mask: true }).text);
    return s !== undefined && s.candidates.has(gatewayId) && this.healthyFor(gatewayId, s);
  }

  status(): PrefixStatus[] {
    return this.sorted().map((s) => ({
      prefix: s.prefix.text,
      active: s.active,
      effective: s.resolved,
      candidates: [...s.candidates.values()]
        .map((c): CandidateStatus => {
          const h = this.health.get(c.gatewayId);
          return {
            gatewayId: c.gatewayId,
            priority: c.priority,
            draining: this.isDraining(c.gatewayId, s),
            own: s.own.has(c.gatewayId),
            state: this.isWithdrawn(c.gatewayId, s) ? "withdrawn" : (h?.liveness ?? "unknown"),
            healthy: this.healthyFor(c.gatewayId, s),
            rttMs: h?.rttMs ?? null,
            missed: h?.missed ?? 0,
            upSinceMs: h?.upSinceMs ?? null,
          };
        })
        .sort((a, b) => Number(b.own) - Number(a.own) || a.priority - b.priority || cmp(a.gatewayId, b.gatewayId)),
      lastSwitch: s.lastSwitch,
    }));
  }

  // ------------------------------------------------------------------ internals

  private sorted(): RouteState[] {
    return [...this.routes.values()].sort(
      (a, b) => a.prefix.family - b.prefix.family || cmp(a.prefix.text, b.prefix.text),
    );
  }

  private isWithdrawn(id: string, s: RouteState): boolean {
    const lost = this.withdrawn.get(id);
    return lost !== undefined && lost.some((p) => prefixesOverlap(p, s.prefix));
  }

  private isDraining(id: string, s: RouteState): boolean {
    return this.drained.has(id) || (s.candidates.get(id)?.draining ?? false);
  }

  private healthyFor(id: string, s: RouteState): boolean {
    return this.health.isUp(id) && !this.isWithdrawn(id, s);
  }

  /** Selection order for a target: not draining, priority, rtt, gatewayId. */
  private better(s: RouteState, useRtt: boolean) {
    return (a: string, b: string): number => {
      const ca = s.candidates.get(a)!;
      const cb = s.candidates.get(b)!;
      const d = Number(this.isDraining(a, s)) - Number(this.isDraining(b, s));
      if (d !== 0) return d;
      if (ca.priority !== cb.priority) return ca.priority - cb.priority;
      if (useRtt) {
        const ra = this.health.get(a)?.rttMs ?? Number.POSITIVE_INFINITY;
        const rb = this.health.get(b)?.rttMs ?? Number.POSITIVE_INFINITY;
        if (ra !== rb) return ra < rb ? -1 : 1;
      }
      return cmp(a, b);
    };
  }

  private best(s: RouteState, ids: string[], useRtt: boolean): string | null {
    if (ids.length === 0) return null;
    return ids.sort(this.better(s, useRtt))[0]!;
  }

  private evaluate(): FailoverDecision[] {
    const at = this.now();
    const decisions: FailoverDecision[] = [];
    for (const s of this.routes.values()) {
      const d = this.evaluateOne(s, at);
      if (d !== null) decisions.push(d);
    }
    for (const s of this.routes.values()) s.resolved = this.resolve(s);
    return decisions;
  }

  private evaluateOne(s: RouteState, at: number): FailoverDecision | null {
    const healthy = [...s.own].filter((id) => this.healthyFor(id, s));
    const a = s.active;
    if (a === null) {
      if (healthy.length === 0) return null;
      return this.record(s, this.best(s, healthy, false), s.everActive ? "recovered" : "initial", at);
    }
    if (!s.own.has(a)) return this.record(s, this.best(s, healthy, true), "route-removed", at);
    if (!this.healthyFor(a, s)) {
      const reason: SwitchReason = this.isWithdrawn(a, s) ? "withdrawn" : "active-down";
      return this.record(s, this.best(s, healthy, true), reason, at);
    }
    if (this.isDraining(a, s)) {
      const ready = healthy.filter((id) => !this.isDraining(id, s));
      return ready.length === 0 ? null : this.record(s, this.best(s, ready, true), "draining", at);
    }
    if (this.preempt) {
      const mine = s.candidates.get(a)!.priority;
      const ready = healthy.filter((id) => {
        const up = this.health.get(id)!.upSinceMs;
        return (
          !this.isDraining(id, s) && s.candidates.get(id)!.priority < mine && up !== null && at - up >= this.preemptHoldMs
        );
      });
      if (ready.length > 0) return this.record(s, this.best(s, ready, true), "preempt", at);
    }
    return null;
  }

  private resolve(s: RouteState): LookupResult {
    const prefix = s.prefix.text;
    if (s.active !== null) return Object.freeze({ gatewayId: s.active, prefix, viaPrefix: prefix });
    for (const o of s.covering) {
      if (o.active !== null && s.candidates.has(o.active)) {
        return Object.freeze({ gatewayId: o.active, prefix, viaPrefix: o.prefix.text });
      }
    }
    return Object.freeze({ gatewayId: null, prefix, reason: "no-healthy-gateway" });
  }

  private record(s: RouteState, to: string | null, reason: SwitchReason, at: number): FailoverDecision {
    const decision: FailoverDecision = Object.freeze({ prefix: s.prefix.text, from: s.active, to, reason, at });
    s.active = to;
    if (to !== null) s.everActive = true;
    s.lastSwitch = decision;
    this.log.info(`failover: prefix=${decision.prefix} from=${decision.from ?? "none"} to=${to ?? "none"} reason=${reason}`);
    return decision;
  }
}

function rank(c: FailoverCandidate): number {
  return c.priority + (c.draining ? 1000 : 0);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
