/**
 * @module test/failover/sim
 * A fake clock and a fake tunnel for the failover controller: gateways that are alive or dead,
 * have a LAN or not, answer probes after their RTT; a host loop that delivers replies and ticks
 * at `nextTickInMs()` exactly as the agent will; and a pinger that sends one packet per `pingEveryMs`
 * through `lookup` and counts the ones that would be lost (dead gateway, lost LAN, or dropped).
 */
import { FailoverController, type FailoverDecision, type FailoverOptions, type FailoverRoute } from "../../core/failover/controller.ts";
import { recordingLogger } from "../../core/log.ts";
import { parseAddress } from "../../core/net/address.ts";

export interface SimGateway {
  alive: boolean;
  /** Its LAN is reachable (a gateway that lost it still answers probes). */
  lan: boolean;
  rttMs: number;
  /** Probes still to be lost in transit (jitter and loss on a healthy path). */
  lose: number;
}

export class Sim {
  t = 0;
  readonly gateways = new Map<string, SimGateway>();
  readonly logger = recordingLogger();
  readonly decisions: FailoverDecision[] = [];
  readonly ctl: FailoverController;
  probes = 0;
  private pending: { at: number; gw: string; sent: number }[] = [];
  /** Ping results: time, and whether it arrived. */
  pings: { at: number; ok: boolean; via: string | null }[] = [];
  pingDst: Uint8Array | null = null;
  pingEveryMs = 10;
  private nextPing = 0;
  /**
   * Called after every controller call, for invariant checks. `kind` says which: a tick or an
   * explicit input always evaluates; a probe reply evaluates only when it changed a liveness.
   */
  onStep: ((d: FailoverDecision[], kind: "tick" | "reply" | "input") => void) | null = null;

  constructor(options: Omit<FailoverOptions, "now" | "logger" | "sendProbe"> = {}) {
    this.ctl = new FailoverController({
      ...options,
      now: () => this.t,
      logger: this.logger,
      sendProbe: (gw) => {
        this.probes++;
        const g = this.gateways.get(gw);
        if (g !== undefined && g.lose > 0) g.lose--;
        else if (g?.alive) this.pending.push({ at: this.t + g.rttMs, gw, sent: this.t });
      },
    });
  }

  gateway(id: string, rttMs = 5): SimGateway {
    const g = { alive: true, lan: true, rttMs, lose: 0 };
    this.gateways.set(id, g);
    return g;
  }

  record(ds: FailoverDecision[], kind: "tick" | "reply" | "input" = "input"): FailoverDecision[] {
    this.decisions.push(...ds);
    this.onStep?.(ds, kind);
    return ds;
  }

  setRoutes(routes: FailoverRoute[]): FailoverDecision[] {
    return this.record(this.ctl.setRoutes(routes));
  }

  pingTo(address: string): void {
    this.pingDst = parseAddress(address).bytes;
    this.nextPing = this.t;
  }

  /** Runs the host loop until `t + ms`. */
  run(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const nextReply = this.pending.reduce((m, p) => Math.min(m, p.at), Number.POSITIVE_INFINITY);
      const nextTick = this.t + this.ctl.nextTickInMs();
      const nextPing = this.pingDst === null ? Number.POSITIVE_INFINITY : this.nextPing;
      const next = Math.min(nextReply, nextTick, nextPing);
      if (next > end) break;
      this.t = Math.max(this.t, next);
      if (nextReply <= this.t) {
        const due = this.pending.filter((p) => p.at <= this.t);
        this.pending = this.pending.filter((p) => p.at > this.t);
        for (const p of due) {
          // A gateway that died while the probe was in flight never answers it.
          if (this.gateways.get(p.gw)?.alive) this.record(this.ctl.onProbeReply(p.gw, this.t - p.sent), "reply");
        }
      }
      if (this.t + this.ctl.nextTickInMs() <= this.t) this.record(this.ctl.tick(), "tick");
      if (this.pingDst !== null && this.nextPing <= this.t) {
        const r = this.ctl.lookup(this.pingDst);
        const g = r.gatewayId === null ? undefined : this.gateways.get(r.gatewayId);
        this.pings.push({ at: this.t, ok: g !== undefined && g.alive && g.lan, via: r.gatewayId });
        this.nextPing += this.pingEveryMs;
      }
    }
    this.t = end;
  }

  /** The longest run of lost pings, in ms (first lost to first delivered after it). */
  longestOutageMs(): number {
    let worst = 0;
    let start: number | null = null;
    for (const p of this.pings) {
      if (!p.ok && start === null) start = p.at;
      if (p.ok && start !== null) {
        worst = Math.max(worst, p.at - start);
        start = null;
      }
    }
    if (start !== null) worst = Math.max(worst, this.t - start);
    return worst;
  }

  lostPings(): number {
    return this.pings.filter((p) => !p.ok).length;
  }

  switchLines(): string[] {
    return this.logger.lines.filter((l) => l.message.startsWith("failover: ")).map((l) => l.message);
  }
}
