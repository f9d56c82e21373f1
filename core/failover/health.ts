/**
 * @module core/failover/health
 * Per-gateway liveness from the data path: probes sent through the tunnel and traffic received
 * from the gateway, never the control plane's opinion. Pure: the clock is `now`, the transport
 * is `sendProbe(gatewayId)` (an authenticated keepalive or an ICMP echo to the gateway's virtual
 * address, whatever the host wires in), replies come back through `onProbeReply`.
 *
 * States: `unknown` (tracked, never heard), `up`, `down`. Withdrawn and draining are per
 * (gateway, prefix) facts the controller keeps; they are not liveness.
 *
 * Rules:
 * - Every tracked gateway gets one probe per `probeIntervalMs`, the first on the tick after it
 *   is tracked. Probing never stops while a gateway is a candidate: the probes are also what keep
 *   a WireGuard session open with every standby gateway, so a switch needs no handshake.
 * - A miss is one probe interval with nothing heard from the gateway: no probe reply and no data
 *   (`onData`, fed from the Device's per-peer rx counters). `misses = floor(silence / interval)`.
 *   After `missedProbes` misses the gateway is `down`; anything heard resets the count.
 * - `unknown -> up` on the first reply (a working session: "the first gateway it establishes a
 *   working session with"); `down -> up` only after `recoverProbes` consecutive replies (two
 *   replies more than 2 intervals apart are not consecutive: a probe in between was lost).
 *   Data alone keeps an `up` gateway up but never brings one back: a probe reply proves the
 *   gateway forwards, stray packets do not.
 * - RTT is an EWMA (alpha `rttAlpha`, first sample taken as is), for status and as a tiebreak.
 *
 * Detection arithmetic (defaults: interval I = 200 ms, missedProbes M = 3):
 * the gateway dies at t. The last reply we got, at e, answered a probe sent at most one interval
 * before the death, so t - I < e <= t. `down` is declared when the silence reaches M * I, i.e. at
 * e + M*I, which lies in (t + (M-1)*I, t + M*I] = (t + 400 ms, t + 600 ms]. The host ticks at
 * `nextDueInMs()`, which includes that deadline, so there is no extra tick lag. That leaves
 * >= 400 ms of the 1 s outage budget for the switch, which is one evaluation and a table swap
 * (the new gateway's session is already warm). Cost: one ~32-byte probe per candidate per 200 ms.
 * Recovery takes (R - 1) * I + RTT after the first answered probe (R = recoverProbes = 2): ~200 ms.
 * M = 2 would detect in <= 400 ms but declares a gateway dead after one lost probe plus one late
 * reply; M = 3 tolerates a single lost probe and a jittery reply without a false failover.
 */
import { WaygateError } from "../errors.ts";
import type { Logger } from "../log.ts";

export const DEFAULT_PROBE_INTERVAL_MS = 200;
export const DEFAULT_MISSED_PROBES = 3;
export const DEFAULT_RECOVER_PROBES = 2;
export const DEFAULT_RTT_ALPHA = 0.25;

export type Liveness = "unknown" | "up" | "down";

export interface HealthOptions {
  now: () => number;
  logger: Logger;
  /** Send one probe through the tunnel to this gateway; must not throw on a dead peer. */
  sendProbe: (gatewayId: string) => void;
  probeIntervalMs?: number;
  missedProbes?: number;
  recoverProbes?: number;
  rttAlpha?: number;
}

/** A copy of one gateway's health, for status and for tests. */
export interface GatewayHealth {
  gatewayId: string;
  liveness: Liveness;
  /** RTT EWMA in ms; null before the first reply. */
  rttMs: number | null;
  /** Whole probe intervals of silence so far. */
  missed: number;
  /** Consecutive probe replies (counts towards recovery). */
  replyStreak: number;
  /** When we last heard anything (reply or data); null when never. */
  lastHeardMs: number | null;
  /** Since when it has been `up` without interruption; null unless up. */
  upSinceMs: number | null;
  /** When liveness last changed (or tracking started). */
  changedMs: number;
}

/** A liveness change, in the order it happened. */
export interface HealthTransition {
  gatewayId: string;
  from: Liveness;
  to: Liveness;
  at: number;
}

export class FailoverConfigError extends WaygateError {
  constructor(message: string) {
    super("E_CONFIG_INVALID", message);
  }
}

interface Tracked {
  liveness: Liveness;
  rtt: number | null;
  replyStreak: number;
  lastReply: number | null;
  lastHeard: number | null;
  /** Silence is measured from here: the last thing heard, or when tracking started. */
  silenceFrom: number;
  upSince: number | null;
  changed: number;
  nextProbe: number;
}

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new FailoverConfigError(`failover: ${name} must be a positive integer, got ${value}`);
  return value;
}

export class HealthMonitor {
  readonly probeIntervalMs: number;
  readonly missedProbes: number;
  readonly recoverProbes: number;
  private readonly rttAlpha: number;
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly sendProbe: (gatewayId: string) => void;
  private readonly gateways = new Map<string, Tracked>();

  constructor(options: HealthOptions) {
    this.now = options.now;
    this.log = options.logger;
    this.sendProbe = options.sendProbe;
    this.probeIntervalMs = positiveInt("probeIntervalMs", options.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS);
    this.missedProbes = positiveInt("missedProbes", options.missedProbes ?? DEFAULT_MISSED_PROBES);
    this.recoverProbes = positiveInt("recoverProbes", options.recoverProbes ?? DEFAULT_RECOVER_PROBES);
    this.rttAlpha = options.rttAlpha ?? DEFAULT_RTT_ALPHA;
    if (!(this.rttAlpha > 0 && this.rttAlpha <= 1)) {
      throw new FailoverConfigError(`failover: rttAlpha must be in (0, 1], got ${this.rttAlpha}`);
    }
  }

  /** Worst-case time from a gateway's death to `down`, with an RTT below one interval. */
  get detectionBudgetMs(): number {
    return this.missedProbes * this.probeIntervalMs;
  }

  /** The set of gateways to probe (idempotent): new ones start `unknown`, missing ones are forgotten. */
  setGateways(ids: Iterable<string>): void {
    const want = new Set(ids);
    for (const id of this.gateways.keys()) if (!want.has(id)) this.gateways.delete(id);
    const now = this.now();
    for (const id of want) {
      if (this.gateways.has(id)) continue;
      this.gateways.set(id, {
        liveness: "unknown",
        rtt: null,
        replyStreak: 0,
        lastReply: null,
        lastHeard: null,
        silenceFrom: now,
        upSince: null,
        changed: now,
        nextProbe: now,
      });
    }
  }

  has(id: string): boolean {
    return this.gateways.has(id);
  }

  isUp(id: string): boolean {
    return this.gateways.get(id)?.liveness === "up";
  }

  /** A reply to one of our probes, with its measured round trip. Unknown gateways are ignored. */
  onProbeReply(id: string, rttMs: number): HealthTransition | null {
    const g = this.gateways.get(id);
    if (g === undefined) return null;
    const now = this.now();
    const rtt = Math.max(0, rttMs);
    g.rtt = g.rtt === null ? rtt : g.rtt + this.rttAlpha * (rtt - g.rtt);
    g.replyStreak = g.lastReply !== null && now - g.lastReply <= 2 * this.probeIntervalMs ? g.replyStreak + 1 : 1;
    g.lastReply = now;
    g.lastHeard = now;
    g.silenceFrom = now;
    if (g.liveness === "unknown" || (g.liveness === "down" && g.replyStreak >= this.recoverProbes)) {
      return this.transition(id, g, "up", now);
    }
    return null;
  }

  /** Traffic received from the gateway (rx counter moved): it is alive, whatever the probes say. */
  onData(id: string): void {
    const g = this.gateways.get(id);
    if (g === undefined) return;
    const now = this.now();
    g.lastHeard = now;
    g.silenceFrom = now;
  }

  /** Sends due probes and declares silent gateways down. */
  tick(): HealthTransition[] {
    const now = this.now();
    const out: HealthTransition[] = [];
    const interval = this.probeIntervalMs;
    for (const [id, g] of this.gateways) {
      if (g.liveness !== "down" && now - g.silenceFrom >= this.missedProbes * interval) {
        out.push(this.transition(id, g, "down", now));
      }
      if (g.lastReply !== null && now - g.lastReply > 2 * interval) g.replyStreak = 0;
      if (now >= g.nextProbe) {
        // One probe however late the tick: a burst after a stall would only measure the stall.
        g.nextProbe = now - ((now - g.nextProbe) % interval) + interval;
        this.sendProbe(id);
      }
    }
    return out;
  }

  /** Ms until the next probe or down deadline (0 when one is due now); Infinity with nothing tracked. */
  nextDueInMs(): number {
    const now = this.now();
    let next = Number.POSITIVE_INFINITY;
    for (const g of this.gateways.values()) {
      next = Math.min(next, g.nextProbe);
      if (g.liveness !== "down") next = Math.min(next, g.silenceFrom + this.missedProbes * this.probeIntervalMs);
    }
    return Math.max(0, next - now);
  }

  /** Every tracked gateway's health (O(gateways)). */
  list(): GatewayHealth[] {
    return [...this.gateways.keys()].map((id) => this.get(id)!);
  }

  get(id: string): GatewayHealth | undefined {
    const g = this.gateways.get(id);
    if (g === undefined) return undefined;
    return {
      gatewayId: id,
      liveness: g.liveness,
      rttMs: g.rtt,
      missed: Math.floor((this.now() - g.silenceFrom) / this.probeIntervalMs),
      replyStreak: g.replyStreak,
      lastHeardMs: g.lastHeard,
      upSinceMs: g.upSince,
      changedMs: g.changed,
    };
  }

  private transition(id: string, g: Tracked, to: Liveness, now: number): HealthTransition {
    const from = g.liveness;
    g.liveness = to;
    g.changed = now;
    g.upSince = to === "up" ? now : null;
    if (to !== "up") g.replyStreak = 0;
    const silence = now - g.silenceFrom;
    this.log.info(
      to === "down"
        ? `failover-health: gateway=${id} from=${from} to=down silence_ms=${silence}`
        : `failover-health: gateway=${id} from=${from} to=${to} rtt_ms=${g.rtt === null ? "none" : g.rtt.toFixed(1)}`,
    );
    return { gatewayId: id, from, to, at: now };
  }
}
