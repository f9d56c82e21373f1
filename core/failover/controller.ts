/**
 * @module core/failover/controller
 * One client's gateway choice per routed prefix: at most one active gateway per prefix, switched
 * on data-path health (core/failover/health.ts), withdrawal, drain and route changes, and the
 * resolved forwarding answer the data plane asks for per destination. Pure: { now, logger } and
 * an injected probe transport; the host feeds inputs and calls `tick()` at `nextTickInMs()`.
 *
 * Selection, per prefix, over the prefix's own candidates (see "Overlaps" for which are own):
 * 1. No active yet: the first candidate that becomes healthy ("the first working session");
 *    when several become healthy in one evaluation, by (not draining, priority, gatewayId).
 * 2. The active one is down (data path) or withdrew the prefix (lost its LAN): the best healthy
 *    candidate by (not draining, priority, rtt, gatewayId), or none: fail closed.
 * 3. The active one drains: moved away only when another healthy, non-draining candidate exists
 *    (make-before-break, so no packet is lost); a draining gateway that is the only healthy one
 *    keeps carrying traffic. Existing flows may stay on it while it is healthy: `lookupPinned`.
 * 4. Otherwise no switch while the active one is healthy (no-preempt), however much better
 *    another candidate is. With `preempt`, a candidate with a strictly better (lower) priority
 *    that has been continuously up for `preemptHoldMs` takes over.
 * Health is evaluated whenever an input changes (every input method returns the switches it
 * caused), so a withdrawal or a recovery acts at once, not at the next tick.
 *
 * Overlaps (longest prefix). The NetMap's candidate list for a prefix already names every gateway
 * whose grant covers it (core/policy/netmap.ts): with G1 serving 10.0.0.0/16 and G2 10.0.1.0/24,
 * the /24's list is [G2, G1] when policy lets this sender reach the /24 through G1, and [G2]
 * when not. A candidate that also appears on a covering route is *inherited* (it serves the
 * covering prefix); the rest are the prefix's *own*. Selection runs over own candidates only, so
 * the /24 stays on G2 while G2 is healthy, whatever G1's priority. When no own candidate is
 * healthy the destination falls back to the nearest covering route whose active gateway is in
 * the /24's full candidate list — that is, the NetMap lets this sender reach the /24's addresses
 * through it — and otherwise fails closed: `{ gatewayId: null, reason: "no-healthy-gateway" }`,
 * the data plane drops and counts, never the local default route. A compiled NetMap lists the
 * /16 gateway on the /24 exactly when it lists the /16 route for this sender, so "the /16 route
 * exists" and "the /24 lists the /16 gateway" agree there; a hand-built route set that has the
 * /16 but leaves it off the /24 fails closed. The fallback is not a switch of the /24 (its active
 * is none); status shows it as `effective`. When the /24's own gateway recovers, it takes the
 * /24 back at once: that is the longest-prefix rule, not a flap.
 *
 * A withdrawal report names the gateway's lost subnets; it applies to every route prefix that
 * overlaps one of them (a gateway that lost part of a prefix cannot carry all of it). A route
 * candidate marked `withdrawn` (the control plane heard the same report: NetMap routes keep such
 * candidates, core/policy/netmap.ts) counts the same way for its prefix, whether or not an
 * in-band report arrived: not selected while another candidate is healthy, and when every
 * candidate is withdrawn the prefix fails closed (`no-healthy-gateway`) while the OS route stays.
 *
 * Groups (why the cost follows candidate sets, not prefixes). A subnet filter compiles into one
 * route per allowed host range, thousands of prefixes with the same candidates. Selection for a
 * prefix depends only on (its own candidates with their priorities and drain flags, which of them
 * withdrew it, its active gateway, whether it ever had one); prefixes equal in all four behave
 * identically from then on, so they share one *group* and one evaluation. A group splits when its
 * prefixes stop being equal (a withdrawal that covers only some of them; moved prefixes keep their
 * active gateway) and two groups merge when they become equal again (both moved to the same
 * gateway). `tick()` and every evaluation are O(groups + gateways); setRoutes and a changed
 * withdrawal are O(prefixes) (they re-place prefixes), once per change. `lookup` is one
 * PrefixTable lookup plus, after a change, one re-resolution of that prefix from answers built at
 * setRoutes (frozen objects, so the data path allocates nothing). `revision` changes whenever a
 * per-prefix answer or status field other than live health may have changed (engines re-send
 * per-prefix detail only then; platform/linux/device-engine.ts).
 *
 * Every switch is one decision per group, logged once with the group (its own candidates), how
 * many prefixes it covers and the first of them:
 * `failover: group=G982V,Q8QW8 prefixes=4094 from=G982V to=Q8QW8 reason=active-down first=172.26.0.1/32`
 * (`none` for no gateway).
 */
import type { Logger } from "../log.ts";
import { parsePrefix, prefixCovers, prefixesOverlap, type Prefix } from "../net/address.ts";
import { PrefixTable } from "../net/prefix-table.ts";
import type { RouteSnapshotRow } from "../dataplane/routes.ts";
import type { NetMapRoute } from "../policy/netmap.ts";
import { FailoverConfigError, HealthMonitor, type GatewayHealth, type Liveness } from "./health.ts";

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
  /** The NetMap marks it withdrawn for this prefix (absent: false). */
  withdrawn?: boolean;
}

export interface FailoverRoute {
  prefix: string;
  candidates: FailoverCandidate[];
}

/**
 * One switch of one group's active gateway (every prefix in `prefixes` switched together);
 * `null` is "no gateway" (fail closed).
 */
export interface FailoverDecision {
  /** The group: its own candidates' ids, sorted, comma-separated. */
  group: string;
  /** The prefixes that switched, sorted as status() sorts them (frozen; shared, do not copy per packet). */
  prefixes: readonly string[];
  from: string | null;
  to: string | null;
  reason: SwitchReason;
  at: number;
}

/** A switch without its prefix list: what crosses threads and goes into status. */
export interface SwitchSummary {
  group: string;
  prefixCount: number;
  /** The first prefix that switched (null for none). */
  firstPrefix: string | null;
  from: string | null;
  to: string | null;
  reason: SwitchReason;
  at: number;
}

const summaries = new WeakMap<FailoverDecision, SwitchSummary>();

/** The summary of a decision: one object per decision, so rows sharing a switch share it (and a structured clone copies it once). */
export function switchSummary(d: FailoverDecision): SwitchSummary {
  let s = summaries.get(d);
  if (s === undefined) {
    s = Object.freeze({ group: d.group, prefixCount: d.prefixes.length, firstPrefix: d.prefixes[0] ?? null, from: d.from, to: d.to, reason: d.reason, at: d.at });
    summaries.set(d, s);
  }
  return s;
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
  /** The group's id (GroupStatus.id). */
  group: string;
  active: string | null;
  /** What the data plane does for destinations matching this prefix. */
  effective: LookupResult;
  candidates: CandidateStatus[];
  lastSwitch: FailoverDecision | null;
}

/** A PrefixStatus as it crosses threads: the last switch summarised. */
export type PrefixStatusRow = Omit<PrefixStatus, "lastSwitch"> & { lastSwitch: SwitchSummary | null };

/** One group: what `waygate status` shows once for all its prefixes. */
export interface GroupStatus {
  /** The own candidates' ids, sorted, comma-separated; `#2`, `#3`... when groups share candidates. */
  id: string;
  active: string | null;
  prefixCount: number;
  /** The first prefixes (sorted as status() sorts), at most the `sample` asked for. */
  prefixes: string[];
  /** The group's own candidates (inherited ones differ per prefix: see status()). */
  candidates: CandidateStatus[];
  /** The latest switch of any of its prefixes. */
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

/** One distinct own-candidate list (ids, priorities, drain flags), shared by every group using it. */
interface CandidateSet {
  readonly key: string;
  /** Own candidate ids, sorted, comma-separated: the group's name in logs and status. */
  readonly label: string;
  readonly byId: ReadonlyMap<string, FailoverCandidate>;
  readonly ids: readonly string[];
}

/** Prefixes that behave identically (see "Groups" in the module doc). */
interface Group {
  set: CandidateSet;
  /** Own candidates that withdrew these prefixes. */
  withdrawn: ReadonlySet<string>;
  withdrawnKey: string;
  active: string | null;
  everActive: boolean;
  /** The key this group is filed under in `groups`. */
  key: string;
  members: Set<Entry>;
  /** Sorted prefix texts of the members; null when membership changed since. */
  membersList: readonly string[] | null;
  /** Its latest switch, and the decision sequence number it got (see Entry.joinedSeq). */
  last: FailoverDecision | null;
  lastSeq: number;
  /** The latest switch of any member (what status shows for the group). */
  shown: FailoverDecision | null;
}

/** One route prefix. */
interface Entry {
  readonly prefix: Prefix;
  /** Position in status order (family, text). */
  order: number;
  /** Every candidate, by gatewayId. */
  candidates: Map<string, FailoverCandidate>;
  /** Own candidates (see the module doc). */
  own: Set<string>;
  ownKey: string;
  /** Covering routes, nearest first. */
  covering: Entry[];
  /** Candidates (own or not) that withdrew a subnet overlapping this prefix, in-band or in the route. */
  withdrawn: ReadonlySet<string>;
  group: Group;
  /** The prefix's last switch as of joining its group; the group's own applies once newer. */
  prevLast: FailoverDecision | null;
  joinedSeq: number;
  /** Frozen answers: through each candidate for this prefix itself (also lookupPinned's). */
  answers: Map<string, LookupResult>;
  /** Frozen answers through a covering route's active gateway, parallel to `covering`. */
  fallbacks: Map<string, LookupResult>[];
  noHealthy: LookupResult;
  resolved: LookupResult;
  resolvedRev: number;
}

const NO_ROUTE: LookupResult = Object.freeze({ gatewayId: null, prefix: null, reason: "no-route" });
const EMPTY: ReadonlySet<string> = new Set();
/** Separators that cannot occur in gateway ids (peer keys, system ids). */
const SEP = "\u0001";
const SEP2 = "\u0002";

/** NetMap routes (one row per prefix and gateway) grouped into FailoverRoutes. */
export function routesFromNetMap(routes: readonly NetMapRoute[]): FailoverRoute[] {
  const byPrefix = new Map<string, FailoverRoute>();
  for (const r of routes) {
    let route = byPrefix.get(r.prefix);
    if (route === undefined) byPrefix.set(r.prefix, (route = { prefix: r.prefix, candidates: [] }));
    route.candidates.push(
      r.withdrawn === true
        ? { gatewayId: r.via, priority: r.priority, draining: r.draining, withdrawn: true }
        : { gatewayId: r.via, priority: r.priority, draining: r.draining },
    );
  }
  return [...byPrefix.values()];
}

export class FailoverController {
  readonly preempt: boolean;
  readonly preemptHoldMs: number;
  readonly health: HealthMonitor;
  private readonly now: () => number;
  private readonly log: Logger;
  private routes = new Map<string, Entry>();
  /** Entries in status order. */
  private sortedEntries: Entry[] = [];
  private table = new PrefixTable<Entry>();
  private sets = new Map<string, CandidateSet>();
  private byKey = new Map<string, Group>();
  /** Withdrawn subnets per gateway, as the gateway last reported them. */
  private withdrawn = new Map<string, Prefix[]>();
  private withdrawnText = new Map<string, string>();
  /** Admin drains reported outside the NetMap (in-band), per gateway. */
  private drained = new Set<string>();
  /** Decisions so far (orders a group's switch against when a prefix joined it). */
  private seq = 0;
  /** Bumped whenever a resolved answer may have changed: lookups re-resolve lazily. */
  private rev = 1;
  private detailRevision = 1;
  private changed: Group[] = [];

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

  /**
   * Changes whenever per-prefix status other than live gateway health (liveness, RTT, misses)
   * may have changed: routes, withdrawals, drains, switches. Equal revisions: equal `status()`
   * apart from those live fields, which `groups()` and `health` carry.
   */
  get revision(): number {
    return this.detailRevision;
  }

  get prefixCount(): number {
    return this.routes.size;
  }

  get groupCount(): number {
    return this.byKey.size;
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
    // Removed prefixes: one decision per group they leave that had an active gateway.
    const removed = new Map<Group, Entry[]>();
    for (const [text, e] of this.routes) {
      if (parsed.has(text)) continue;
      this.routes.delete(text);
      this.table.remove(e.prefix);
      if (e.group.active !== null) {
        let list = removed.get(e.group);
        if (list === undefined) removed.set(e.group, (list = []));
        list.push(e);
      }
    }
    for (const [g, list] of removed) {
      list.sort((a, b) => a.order - b.order);
      const prefixes = Object.freeze(list.map((e) => e.prefix.text));
      decisions.push(this.logDecision(Object.freeze({ group: g.set.label, prefixes, from: g.active, to: null, reason: "route-removed" as const, at })));
    }

    // Each prefix's state before this call (group state and its own last switch).
    const before = new Map<Entry, { active: string | null; everActive: boolean; last: FailoverDecision | null }>();
    for (const e of this.routes.values()) before.set(e, { active: e.group.active, everActive: e.group.everActive, last: lastOf(e) });
    for (const [text, { prefix, candidates }] of parsed) {
      let e = this.routes.get(text);
      if (e === undefined) {
        e = {
          prefix,
          order: 0,
          candidates,
          own: new Set(),
          ownKey: "",
          covering: [],
          withdrawn: EMPTY,
          group: null as unknown as Group,
          prevLast: null,
          joinedSeq: 0,
          answers: new Map(),
          fallbacks: [],
          noHealthy: NO_ROUTE,
          resolved: NO_ROUTE,
          resolvedRev: 0,
        };
        this.routes.set(text, e);
        this.table.insert(prefix, e);
      } else {
        e.candidates = candidates;
      }
    }

    // Covering chains in one pass over the prefixes in address order (a stack of open ranges).
    const byAddress = [...this.routes.values()].sort(addressOrder);
    const stack: Entry[] = [];
    for (const e of byAddress) {
      while (stack.length > 0 && !prefixCovers(stack[stack.length - 1]!.prefix, e.prefix)) stack.pop();
      e.covering = stack.length === 0 ? [] : stack.slice().reverse();
      stack.push(e);
    }
    this.sortedEntries = [...this.routes.values()].sort((a, b) => a.prefix.family - b.prefix.family || cmp(a.prefix.text, b.prefix.text));
    this.sortedEntries.forEach((e, i) => (e.order = i));

    // Own vs inherited, answers, withdrawals; then every prefix is re-filed into its group.
    this.sets.clear();
    this.byKey.clear();
    for (const e of this.sortedEntries) {
      const inherited = new Set<string>();
      for (const o of e.covering) for (const id of o.candidates.keys()) inherited.add(id);
      e.own = new Set([...e.candidates.keys()].filter((id) => !inherited.has(id)));
      if (e.own.size === 0) e.own = new Set(e.candidates.keys());
      e.ownKey = [...e.own]
        .sort(cmp)
        .map((id) => {
          const c = e.candidates.get(id)!;
          return `${id}${SEP2}${c.priority}${SEP2}${c.draining ? 1 : 0}`;
        })
        .join(SEP);
      const text = e.prefix.text;
      e.answers = new Map([...e.candidates.keys()].map((id) => [id, Object.freeze({ gatewayId: id, prefix: text, viaPrefix: text })]));
      e.fallbacks = e.covering.map(
        (o) =>
          new Map(
            [...o.candidates.keys()]
              .filter((id) => e.candidates.has(id))
              .map((id) => [id, Object.freeze({ gatewayId: id, prefix: text, viaPrefix: o.prefix.text }) as LookupResult]),
          ),
      );
      e.noHealthy = Object.freeze({ gatewayId: null, prefix: text, reason: "no-healthy-gateway" });
      e.withdrawn = this.withdrawnFor(e);
      const was = before.get(e);
      e.prevLast = was?.last ?? null;
      e.joinedSeq = this.seq;
      this.file(e, was?.active ?? null, was?.everActive ?? false);
    }
    // Each group shows its members' latest switch.
    for (const g of this.byKey.values()) {
      for (const e of g.members) if (e.prevLast !== null && (g.shown === null || e.prevLast.at > g.shown.at)) g.shown = e.prevLast;
    }
    const gateways = new Set<string>();
    for (const e of this.routes.values()) for (const id of e.candidates.keys()) gateways.add(id);
    this.health.setGateways(gateways);
    this.touch();
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
    const text = prefixes.map((p) => p.text).join(",");
    if ((this.withdrawnText.get(gatewayId) ?? "") !== text) {
      if (prefixes.length === 0) {
        this.withdrawn.delete(gatewayId);
        this.withdrawnText.delete(gatewayId);
      } else {
        this.withdrawn.set(gatewayId, prefixes);
        this.withdrawnText.set(gatewayId, text);
      }
      // Re-place the prefixes this gateway may carry (O(prefixes), once per changed report).
      for (const e of this.sortedEntries) {
        if (!e.candidates.has(gatewayId)) continue;
        const next = this.withdrawnFor(e);
        if (sameSet(next, e.withdrawn)) continue;
        e.withdrawn = next;
        const g = e.group;
        if (e.own.has(gatewayId)) this.move(e, g.active, g.everActive);
      }
      this.touch();
    }
    return this.evaluate();
  }

  /** An admin drain learnt outside the NetMap (in-band from the gateway); ORed with the routes' flag. */
  setDraining(gatewayId: string, draining: boolean): FailoverDecision[] {
    if (this.drained.has(gatewayId) !== draining) {
      if (draining) this.drained.add(gatewayId);
      else this.drained.delete(gatewayId);
      this.detailRevision++;
    }
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
    for (const g of this.byKey.values()) {
      if (g.active === null) continue;
      const mine = g.set.byId.get(g.active)?.priority ?? Number.NEGATIVE_INFINITY;
      for (const id of g.set.ids) {
        const up = this.health.get(id)?.upSinceMs;
        if (up === null || up === undefined || g.set.byId.get(id)!.priority >= mine) continue;
        if (this.isDraining(id, g) || !this.healthyFor(id, g)) continue;
        due = Math.min(due, Math.max(0, up + this.preemptHoldMs - now));
      }
    }
    return due;
  }

  // ------------------------------------------------------------------ queries

  activeFor(prefix: string): string | null {
    return this.routes.get(parsePrefix(prefix, { mask: true }).text)?.group.active ?? null;
  }

  /**
   * The data path's answer for a 4- or 16-byte destination: the gateway to send through, or
   * null (drop and count). No allocation: every answer is a frozen object built at setRoutes.
   */
  lookup(destination: Uint8Array): LookupResult {
    const e = this.table.lookup(destination);
    if (e === undefined) return NO_ROUTE;
    return e.resolvedRev === this.rev ? e.resolved : this.resolve(e);
  }

  /**
   * For an existing flow pinned to `pinned`: keep it there while that gateway is healthy for the
   * matched prefix (draining included, so drained flows finish), else the normal answer.
   */
  lookupPinned(destination: Uint8Array, pinned: string): LookupResult {
    const e = this.table.lookup(destination);
    if (e === undefined) return NO_ROUTE;
    const answer = e.answers.get(pinned);
    if (answer !== undefined && this.health.isUp(pinned) && !e.withdrawn.has(pinned)) return answer;
    return e.resolvedRev === this.rev ? e.resolved : this.resolve(e);
  }

  /**
   * The data plane's view, for a Device in another thread (core/dataplane/routes.ts
   * SnapshotSelector): per route prefix, the resolved gateway and the candidates healthy for it
   * (where pinned flows may stay). Equal snapshots give equal answers; re-send on a difference.
   */
  snapshot(): RouteSnapshotRow[] {
    return this.sortedEntries.map((e) => ({
      prefix: e.prefix.text,
      gatewayId: this.resolved(e).gatewayId,
      healthy: [...e.candidates.keys()].filter((id) => this.health.isUp(id) && !e.withdrawn.has(id)).sort(cmp),
    }));
  }

  /**
   * Per route prefix, the resolved answer: what to load into the data plane's per-destination
   * override table (longest prefix over these rows gives the same answers as `lookup`).
   */
  forwardingTable(): { prefix: string; result: LookupResult }[] {
    return this.sortedEntries.map((e) => ({ prefix: e.prefix.text, result: this.resolved(e) }));
  }

  /** Whether the gateway is a usable target for this prefix now (up, not withdrawn). */
  isHealthyFor(gatewayId: string, prefix: string): boolean {
    const e = this.routes.get(parsePrefix(prefix, { mask: true }).text);
    return e !== undefined && e.candidates.has(gatewayId) && this.health.isUp(gatewayId) && !e.withdrawn.has(gatewayId);
  }

  /** Per prefix (O(prefixes): for `waygate status --json`, not for polling; see `groups()`). */
  status(): PrefixStatus[] {
    const ids = this.groupIds();
    return this.sortedEntries.map((e) => ({
      prefix: e.prefix.text,
      group: ids.get(e.group)!,
      active: e.group.active,
      effective: this.resolved(e),
      candidates: [...e.candidates.values()]
        .map((c) => this.candidateStatus(c, e.own.has(c.gatewayId), e.withdrawn.has(c.gatewayId), c.draining))
        .sort(candidateOrder),
      lastSwitch: lastOf(e),
    }));
  }

  /** Per group (O(groups + gateways)): active, own candidates with health, the first `sample` prefixes. */
  groups(sample = 3): GroupStatus[] {
    const ids = this.groupIds();
    return [...ids].map(([g, id]) => ({
      id,
      active: g.active,
      prefixCount: g.members.size,
      prefixes: this.membersOf(g).slice(0, sample),
      candidates: g.set.ids
        .map((gid) => {
          const c = g.set.byId.get(gid)!;
          return this.candidateStatus(c, true, g.withdrawn.has(gid), c.draining);
        })
        .sort(candidateOrder),
      lastSwitch: g.shown,
    }));
  }

  // ------------------------------------------------------------------ internals

  private candidateStatus(c: FailoverCandidate, own: boolean, withdrawn: boolean, draining: boolean): CandidateStatus {
    const h: GatewayHealth | undefined = this.health.get(c.gatewayId);
    return {
      gatewayId: c.gatewayId,
      priority: c.priority,
      draining: this.drained.has(c.gatewayId) || draining,
      own,
      state: withdrawn ? "withdrawn" : (h?.liveness ?? "unknown"),
      healthy: !withdrawn && this.health.isUp(c.gatewayId),
      rttMs: h?.rttMs ?? null,
      missed: h?.missed ?? 0,
      upSinceMs: h?.upSinceMs ?? null,
    };
  }

  /** Groups in status order (by their first prefix), with unique display ids. */
  private groupIds(): Map<Group, string> {
    const first = (g: Group) => this.routes.get(this.membersOf(g)[0]!)?.order ?? 0;
    const list = [...this.byKey.values()].sort((a, b) => first(a) - first(b));
    const seen = new Map<string, number>();
    const out = new Map<Group, string>();
    for (const g of list) {
      const n = (seen.get(g.set.label) ?? 0) + 1;
      seen.set(g.set.label, n);
      out.set(g, n === 1 ? g.set.label : `${g.set.label}#${n}`);
    }
    return out;
  }

  private membersOf(g: Group): readonly string[] {
    if (g.membersList === null) {
      g.membersList = Object.freeze([...g.members].sort((a, b) => a.order - b.order).map((e) => e.prefix.text));
    }
    return g.membersList;
  }

  private withdrawnFor(e: Entry): ReadonlySet<string> {
    let out: Set<string> | null = null;
    for (const [id, c] of e.candidates) if (c.withdrawn === true) (out ??= new Set()).add(id);
    for (const [id, lost] of this.withdrawn) {
      if (!e.candidates.has(id) || !lost.some((p) => prefixesOverlap(p, e.prefix))) continue;
      (out ??= new Set()).add(id);
    }
    return out ?? EMPTY;
  }

  private candidateSet(e: Entry): CandidateSet {
    let set = this.sets.get(e.ownKey);
    if (set === undefined) {
      const ids = [...e.own].sort(cmp);
      set = { key: e.ownKey, label: ids.join(","), byId: new Map(ids.map((id) => [id, e.candidates.get(id)!])), ids };
      this.sets.set(e.ownKey, set);
    }
    return set;
  }

  /** Files a prefix (not in any group yet) under the group for its state, creating it if needed. */
  private file(e: Entry, active: string | null, everActive: boolean): void {
    const set = this.candidateSet(e);
    const withdrawnOwn = set.ids.filter((id) => e.withdrawn.has(id));
    const withdrawnKey = withdrawnOwn.join(SEP);
    const key = groupKey(set.key, withdrawnKey, active, everActive);
    let g = this.byKey.get(key);
    if (g === undefined) {
      g = {
        set,
        withdrawn: withdrawnOwn.length === 0 ? EMPTY : new Set(withdrawnOwn),
        withdrawnKey,
        active,
        everActive,
        key,
        members: new Set(),
        membersList: null,
        last: null,
        lastSeq: -1,
        shown: null,
      };
      this.byKey.set(key, g);
    }
    g.members.add(e);
    g.membersList = null;
    e.group = g;
  }

  /** Moves a prefix from its group to the one for its (possibly new) state. */
  private move(e: Entry, active: string | null, everActive: boolean): void {
    const from = e.group;
    e.prevLast = lastOf(e);
    e.joinedSeq = this.seq;
    from.members.delete(e);
    from.membersList = null;
    if (from.members.size === 0 && this.byKey.get(from.key) === from) this.byKey.delete(from.key);
    this.file(e, active, everActive);
    const to = e.group;
    if (e.prevLast !== null && (to.shown === null || e.prevLast.at > to.shown.at)) to.shown = e.prevLast;
  }

  private touch(): void {
    this.rev++;
    this.detailRevision++;
  }

  private resolved(e: Entry): LookupResult {
    return e.resolvedRev === this.rev ? e.resolved : this.resolve(e);
  }

  private resolve(e: Entry): LookupResult {
    let r = e.noHealthy;
    const active = e.group.active;
    if (active !== null) r = e.answers.get(active) ?? r;
    else {
      for (let i = 0; i < e.covering.length; i++) {
        const via = e.covering[i]!.group.active;
        if (via === null) continue;
        const answer = e.fallbacks[i]!.get(via);
        if (answer !== undefined) {
          r = answer;
          break;
        }
      }
    }
    e.resolved = r;
    e.resolvedRev = this.rev;
    return r;
  }

  private isDraining(id: string, g: Group): boolean {
    return this.drained.has(id) || (g.set.byId.get(id)?.draining ?? false);
  }

  private healthyFor(id: string, g: Group): boolean {
    return this.health.isUp(id) && !g.withdrawn.has(id);
  }

  /** Selection order for a target: not draining, priority, rtt, gatewayId. */
  private better(g: Group, useRtt: boolean) {
    return (a: string, b: string): number => {
      const ca = g.set.byId.get(a)!;
      const cb = g.set.byId.get(b)!;
      const d = Number(this.isDraining(a, g)) - Number(this.isDraining(b, g));
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

  private best(g: Group, ids: string[], useRtt: boolean): string | null {
    if (ids.length === 0) return null;
    return ids.sort(this.better(g, useRtt))[0]!;
  }

  /** One evaluation of every group: O(groups x own candidates), nothing per prefix. */
  private evaluate(): FailoverDecision[] {
    const at = this.now();
    const decisions: FailoverDecision[] = [];
    const changed = this.changed;
    for (const g of this.byKey.values()) {
      const d = this.evaluateOne(g, at);
      if (d !== null) {
        decisions.push(d);
        changed.push(g);
      }
    }
    if (changed.length > 0) {
      this.rev++;
      // Re-file switched groups under their new state; equal groups merge (after the pass, so
      // every group is evaluated exactly once per evaluation, as each prefix was).
      for (const g of changed) this.refile(g);
      changed.length = 0;
    }
    return decisions;
  }

  private refile(g: Group): void {
    if (this.byKey.get(g.key) === g) this.byKey.delete(g.key);
    const key = groupKey(g.set.key, g.withdrawnKey, g.active, g.everActive);
    const other = this.byKey.get(key);
    g.key = key;
    if (other === undefined) {
      this.byKey.set(key, g);
      return;
    }
    // Same state from now on: the smaller one's prefixes join the larger one.
    const [big, small] = other.members.size >= g.members.size ? [other, g] : [g, other];
    this.byKey.set(key, big);
    for (const e of [...small.members]) this.move(e, big.active, big.everActive);
  }

  private evaluateOne(g: Group, at: number): FailoverDecision | null {
    const a = g.active;
    const ids = g.set.ids;
    // The common case, allocation-free: a healthy, non-draining active gateway and no preempt.
    if (a !== null && !this.preempt && g.set.byId.has(a) && this.healthyFor(a, g) && !this.isDraining(a, g)) return null;
    const healthy = ids.filter((id) => this.healthyFor(id, g));
    if (a === null) {
      if (healthy.length === 0) return null;
      return this.record(g, this.best(g, healthy, false), g.everActive ? "recovered" : "initial", at);
    }
    if (!g.set.byId.has(a)) return this.record(g, this.best(g, healthy, true), "route-removed", at);
    if (!this.healthyFor(a, g)) {
      const reason: SwitchReason = g.withdrawn.has(a) ? "withdrawn" : "active-down";
      return this.record(g, this.best(g, healthy, true), reason, at);
    }
    if (this.isDraining(a, g)) {
      const ready = healthy.filter((id) => !this.isDraining(id, g));
      return ready.length === 0 ? null : this.record(g, this.best(g, ready, true), "draining", at);
    }
    if (this.preempt) {
      const mine = g.set.byId.get(a)!.priority;
      const ready = healthy.filter((id) => {
        const up = this.health.get(id)!.upSinceMs;
        return !this.isDraining(id, g) && g.set.byId.get(id)!.priority < mine && up !== null && at - up >= this.preemptHoldMs;
      });
      if (ready.length > 0) return this.record(g, this.best(g, ready, true), "preempt", at);
    }
    return null;
  }

  private record(g: Group, to: string | null, reason: SwitchReason, at: number): FailoverDecision {
    const decision: FailoverDecision = Object.freeze({ group: g.set.label, prefixes: this.membersOf(g), from: g.active, to, reason, at });
    g.active = to;
    if (to !== null) g.everActive = true;
    g.last = decision;
    g.lastSeq = ++this.seq;
    g.shown = decision;
    this.detailRevision++;
    return this.logDecision(decision);
  }

  private logDecision(d: FailoverDecision): FailoverDecision {
    this.log.info(
      `failover: group=${d.group} prefixes=${d.prefixes.length} from=${d.from ?? "none"} to=${d.to ?? "none"} reason=${d.reason} first=${d.prefixes[0] ?? "none"}`,
    );
    return d;
  }
}

/** A prefix's last switch: its group's once that is newer than the prefix's membership. */
function lastOf(e: Entry): FailoverDecision | null {
  return e.group.lastSeq > e.joinedSeq ? e.group.last : e.prevLast;
}

function groupKey(setKey: string, withdrawnKey: string, active: string | null, everActive: boolean): string {
  return `${setKey}|${withdrawnKey}|${active === null ? "" : `=${active}`}|${everActive ? 1 : 0}`;
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

function addressOrder(a: Entry, b: Entry): number {
  const pa = a.prefix;
  const pb = b.prefix;
  if (pa.family !== pb.family) return pa.family - pb.family;
  for (let i = 0; i < pa.bytes.length; i++) {
    const d = pa.bytes[i]! - pb.bytes[i]!;
    if (d !== 0) return d;
  }
  return pa.length - pb.length;
}

function candidateOrder(a: CandidateStatus, b: CandidateStatus): number {
  return Number(b.own) - Number(a.own) || a.priority - b.priority || cmp(a.gatewayId, b.gatewayId);
}

function rank(c: FailoverCandidate): number {
  return c.priority + (c.draining ? 1000 : 0);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
