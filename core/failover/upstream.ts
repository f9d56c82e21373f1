/**
 * @module core/failover/upstream
 * The gateway's side of failover: does it still reach each subnet it serves? Per subnet, the
 * state of the interface it sits behind and, optionally, whether any of a few configured hosts
 * on it answers. A subnet it cannot reach is *withdrawn*: the list goes into every probe reply
 * (Device.setHealthReport), and clients move that subnet to another gateway at once, without
 * waiting for probes to go missing (the gateway itself is still alive and answering).
 * Pure: { now, logger } and injected checks (platform/linux/upstream.ts has the real ones); the
 * host calls `tick()` at `nextTickInMs()`.
 *
 * Rules (interval I = 200 ms as the client's probes; M = 3):
 * - Link: `linkUp(interface)` is read every tick (a file read on Linux: cheap and synchronous).
 *   A link the kernel reports down withdraws after `linkMisses` readings, default 1: the
 *   kernel's operstate is not a lossy probe, and waiting 3 readings would spend 400 ms of the
 *   1 s outage budget (withdraw <= I, client learns it <= I + RTT later).
 * - Hosts (optional): each tick starts one `probeHost(address, I)` per host that has none in
 *   flight. The subnet withdraws when no host has answered for M * I (the client's 3-miss rule);
 *   it is withdrawn from the start until one answers (a gateway does not offer a LAN it has not
 *   seen). One answering host is enough: a printer that is off does not withdraw its LAN.
 * - Recovery: `recoverChecks` consecutive ticks with the link up and (with hosts) an answer in
 *   each, default 2, so a flapping carrier does not flap every client.
 * Every change is logged once: `upstream: subnet=172.26.0.0/20 interface=eth1 from=ok to=withdrawn reason=link-down`.
 */
import type { Logger } from "../log.ts";
import { parsePrefix } from "../net/address.ts";
import { FailoverConfigError } from "./health.ts";

export const DEFAULT_UPSTREAM_INTERVAL_MS = 200;
export const DEFAULT_HOST_MISSES = 3;
export const DEFAULT_LINK_MISSES = 1;
export const DEFAULT_UPSTREAM_RECOVER_CHECKS = 2;

export interface UpstreamSubnet {
  /** The served subnet, e.g. "172.26.0.0/20". */
  prefix: string;
  /** The interface it is reached through, e.g. "eth1". */
  interface: string;
  /** Hosts on it to probe ("192.168.1.1", "192.168.1.1:443"; the check decides the format). */
  hosts?: string[];
}

export interface UpstreamChecks {
  /** Whether the interface is up with a carrier. Must not throw (false on any doubt). */
  linkUp(interfaceName: string): boolean;
  /** Whether the host answers within `timeoutMs`. Must resolve (false on any failure). */
  probeHost?(address: string, timeoutMs: number): Promise<boolean>;
}

export type UpstreamReason = "link-down" | "hosts-unreachable";

export interface UpstreamOptions {
  now: () => number;
  logger: Logger;
  checks: UpstreamChecks;
  intervalMs?: number;
  hostMisses?: number;
  linkMisses?: number;
  recoverChecks?: number;
  /** The complete withdrawn list, whenever it changes. */
  onChange?: (withdrawn: string[]) => void;
}

export interface UpstreamStatus {
  prefix: string;
  interface: string;
  withdrawn: boolean;
  /** Why it is withdrawn (null when not). */
  reason: UpstreamReason | null;
  linkUp: boolean;
  hosts: string[];
  /** When a host last answered (ms); null: never, or no hosts. */
  lastHostAnswerMs: number | null;
}

interface SubnetState {
  readonly prefix: string;
  readonly iface: string;
  readonly hosts: string[];
  withdrawn: boolean;
  reason: UpstreamReason | null;
  linkUp: boolean;
  linkBad: number;
  goodStreak: number;
  lastAnswer: number;
  answeredInRound: boolean;
  pending: Set<string>;
  /** Replaced on setSubnets, so answers to an old configuration's probes are ignored. */
  generation: number;
}

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new FailoverConfigError(`upstream: ${name} must be a positive integer, got ${value}`);
  return value;
}

export class UpstreamMonitor {
  readonly intervalMs: number;
  readonly hostMisses: number;
  readonly linkMisses: number;
  readonly recoverChecks: number;
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly checks: UpstreamChecks;
  private readonly onChange: ((withdrawn: string[]) => void) | null;
  private subnets: SubnetState[] = [];
  private nextTick = Number.NEGATIVE_INFINITY;
  private generation = 0;
  private last: string[] = [];

  constructor(options: UpstreamOptions) {
    this.now = options.now;
    this.log = options.logger;
    this.checks = options.checks;
    this.onChange = options.onChange ?? null;
    this.intervalMs = positiveInt("intervalMs", options.intervalMs ?? DEFAULT_UPSTREAM_INTERVAL_MS);
    this.hostMisses = positiveInt("hostMisses", options.hostMisses ?? DEFAULT_HOST_MISSES);
    this.linkMisses = positiveInt("linkMisses", options.linkMisses ?? DEFAULT_LINK_MISSES);
    this.recoverChecks = positiveInt("recoverChecks", options.recoverChecks ?? DEFAULT_UPSTREAM_RECOVER_CHECKS);
  }

  /**
   * The subnets this gateway serves (idempotent: a subnet whose interface and hosts are unchanged
   * keeps its state). A new one is checked at once: link now, hosts from the next tick. Returns
   * the withdrawn list. Throws FailoverConfigError on a bad prefix or a host without probeHost.
   */
  setSubnets(subnets: readonly UpstreamSubnet[]): string[] {
    const next: { prefix: string; interface: string; hosts: string[] }[] = [];
    const seen = new Set<string>();
    for (const s of subnets) {
      let prefix: string;
      try {
        prefix = parsePrefix(s.prefix, { mask: true }).text;
      } catch (cause) {
        throw new FailoverConfigError(`upstream: subnet ${JSON.stringify(s.prefix)} is invalid: ${(cause as Error).message}`);
      }
      if (seen.has(prefix)) throw new FailoverConfigError(`upstream: subnet ${prefix} appears twice`);
      seen.add(prefix);
      const hosts = [...new Set(s.hosts ?? [])];
      if (hosts.length > 0 && this.checks.probeHost === undefined) {
        throw new FailoverConfigError(`upstream: subnet ${prefix} lists hosts but no host probe is available`);
      }
      next.push({ prefix, interface: s.interface, hosts });
    }
    const old = new Map(this.subnets.map((s) => [s.prefix, s]));
    this.subnets = next.map((s) => {
      const o = old.get(s.prefix);
      if (o !== undefined && o.iface === s.interface && o.hosts.join(",") === s.hosts.join(",")) return o;
      const linkUp = this.checks.linkUp(s.interface);
      const state: SubnetState = {
        prefix: s.prefix,
        iface: s.interface,
        hosts: s.hosts,
        withdrawn: false,
        reason: null,
        linkUp,
        linkBad: linkUp ? 0 : 1,
        goodStreak: 0,
        lastAnswer: Number.NEGATIVE_INFINITY,
        answeredInRound: false,
        pending: new Set(),
        generation: ++this.generation,
      };
      if (state.linkBad >= this.linkMisses) this.withdraw(state, "link-down", "new");
      else if (state.hosts.length > 0) this.withdraw(state, "hosts-unreachable", "new");
      return state;
    });
    this.nextTick = this.now();
    this.changed();
    return this.withdrawn();
  }

  /** Reads links, counts host answers, starts host probes. Returns the withdrawn list when it changed. */
  tick(): string[] | null {
    const now = this.now();
    const links = new Map<string, boolean>();
    for (const s of this.subnets) {
      let up = links.get(s.iface);
      if (up === undefined) links.set(s.iface, (up = this.checks.linkUp(s.iface)));
      s.linkUp = up;
      s.linkBad = up ? 0 : s.linkBad + 1;
      const hostsOk = s.hosts.length === 0 || now - s.lastAnswer < this.hostMisses * this.intervalMs;
      const roundGood = up && (s.hosts.length === 0 || s.answeredInRound);
      s.answeredInRound = false;
      if (s.withdrawn) {
        s.goodStreak = roundGood ? s.goodStreak + 1 : 0;
        if (s.goodStreak >= this.recoverChecks && up && hostsOk) this.restore(s);
      } else if (s.linkBad >= this.linkMisses) {
        this.withdraw(s, "link-down");
      } else if (!hostsOk) {
        this.withdraw(s, "hosts-unreachable");
      }
      this.startProbes(s);
    }
    this.nextTick = now - ((now - this.nextTick) % this.intervalMs) + this.intervalMs;
    if (!Number.isFinite(this.nextTick) || this.nextTick <= now) this.nextTick = now + this.intervalMs;
    return this.changed() ? this.withdrawn() : null;
  }

  nextTickInMs(): number {
    if (this.subnets.length === 0) return Number.POSITIVE_INFINITY;
    return Math.max(0, this.nextTick - this.now());
  }

  /** Withdrawn subnets, sorted (what goes into the health report). */
  withdrawn(): string[] {
    return this.subnets
      .filter((s) => s.withdrawn)
      .map((s) => s.prefix)
      .sort();
  }

  status(): UpstreamStatus[] {
    return this.subnets.map((s) => ({
      prefix: s.prefix,
      interface: s.iface,
      withdrawn: s.withdrawn,
      reason: s.reason,
      linkUp: s.linkUp,
      hosts: [...s.hosts],
      lastHostAnswerMs: Number.isFinite(s.lastAnswer) ? s.lastAnswer : null,
    }));
  }

  private startProbes(s: SubnetState): void {
    const probe = this.checks.probeHost;
    if (probe === undefined) return;
    for (const host of s.hosts) {
      if (s.pending.has(host)) continue;
      s.pending.add(host);
      const generation = s.generation;
      let result: Promise<boolean>;
      try {
        result = probe(host, this.intervalMs);
      } catch {
        result = Promise.resolve(false);
      }
      result.then(
        (ok) => {
          s.pending.delete(host);
          if (ok && s.generation === generation) {
            s.lastAnswer = this.now();
            s.answeredInRound = true;
          }
        },
        () => s.pending.delete(host),
      );
    }
  }

  private withdraw(s: SubnetState, reason: UpstreamReason, from: "ok" | "new" = "ok"): void {
    s.withdrawn = true;
    s.reason = reason;
    s.goodStreak = 0;
    this.log.info(`upstream: subnet=${s.prefix} interface=${s.iface} from=${from} to=withdrawn reason=${reason}`);
  }

  private restore(s: SubnetState): void {
    this.log.info(`upstream: subnet=${s.prefix} interface=${s.iface} from=withdrawn to=ok reason=${s.reason}-recovered`);
    s.withdrawn = false;
    s.reason = null;
    s.goodStreak = 0;
  }

  private changed(): boolean {
    const now = this.withdrawn();
    if (now.join(",") === this.last.join(",")) return false;
    this.last = now;
    this.onChange?.(now);
    return true;
  }
}
