/**
 * @module platform/linux/device-engine
 * The production EngineFactory (default export) that platform/linux/host.ts imports inside its
 * Worker: one core/dataplane Device with the crypto platform/crypto/select.ts picks (OpenSSL's
 * AEAD through FFI, @noble when forced or missing), the wall clock the host passes (TAI64N
 * handshake timestamps need wall time), the OS CSPRNG, and a logger tagged `engine` that the
 * host forwards to the main thread.
 *
 * Control messages (one postMessage each, never per packet):
 *   { type: "setPeers", peers: PeerConfig[] }   the complete peer list (Device.setPeers, idempotent)
 *   { type: "config", peers }                   the same, under the name the test engine used
 *   { type: "setGateway", gateway }             Device.setGateway: a GatewayConfig makes this device
 *                                               a gateway enforcing it, null turns that off (the agent's
 *                                               gateway role, platform/linux/agent-gateway.ts)
 *   { type: "setInboundRules", rules }          Device.setInboundRules: the NetMap's inbound rules
 *                                               (core/agent/acl-config.ts inboundAcls); null: no filter
 *   { type: "netmap", peers, routes }           the client's gateway routes (core/agent/failover-config.ts
 *                                               failoverNetMapMessage): the first one creates the
 *                                               DataPathFailover (core/failover/dataplane.ts) beside the
 *                                               Device, as its route selector and probe listener; later
 *                                               ones are applied only when they differ (idempotent anyway)
 *   { type: "health", withdrawn, draining }     Device.setHealthReport: what this device's probe replies
 *                                               say (a gateway's upstream monitor, agent-gateway.ts)
 *   { type: "failoverAck", revision }           the main thread holds the per-prefix failover detail of
 *                                               this revision: stats leave it out until it changes
 * `stats()` returns the DeviceStats plus the crypto name and, once failover runs, `failover`, sized
 * by the number of gateway groups, not of routed prefixes (a 10,000-entry subnet filter compiles to
 * ~4,094 prefixes that share one group): per group its active gateway, own candidates with health,
 * prefix count, first prefixes and last switch; per gateway its health; the controller's
 * `revision`; the last switches (summaries). The per-prefix status (`prefixes`) comes only while
 * `revision` differs from the last `failoverAck`: after a switch, a route or a withdrawal change,
 * never every poll. The agent polls it (platform/linux/agent-failover.ts): no message per packet or
 * per switch; every switch is logged once here by the controller, one line per group
 * (`failover: group=... prefixes=N from=... to=... reason=...`).
 *
 * Ticks: the host calls tick() at the deadline it returns: the Device's timers and the failover's
 * (probes every 200 ms, down deadlines), whichever is first, so detection adds no tick lag, and at
 * least every 50 ms while failover has routes (received bytes count as "heard from" at the tick
 * that sees them: coarser ticks would make a dead gateway look alive for longer). A
 * `netmap` message ticks the failover at once (the host learns the new deadline at its next tick,
 * at most 1 s later, the Device's MAX_TICK_MS).
 *
 * `timers` shortens WireGuard's constants (e2e rekey tests: `waygate up` reads the
 * WAYGATE_TEST_TIMERS environment variable and passes it here; the engine reads no environment).
 * A compiled binary carries this file as an extra `bun build --compile` entry point
 * (scripts/build.ts); `deviceEngineModule()` in platform/linux/wg-quick.ts names it.
 */
import { randomFillSync } from "node:crypto";
import { Device, type DeviceStats, type PeerConfig } from "../../core/dataplane/device.ts";
import type { GatewayConfig } from "../../core/dataplane/gateway.ts";
import type { InboundAcl } from "../../core/dataplane/acl.ts";
import type { HealthReport } from "../../core/dataplane/probe.ts";
import {
  type FailoverDecision,
  type GroupStatus,
  type LookupResult,
  type PrefixStatusRow,
  type SwitchSummary,
  switchSummary,
} from "../../core/failover/controller.ts";
import type { GatewayHealth } from "../../core/failover/health.ts";
import { DataPathFailover } from "../../core/failover/dataplane.ts";
import type { Logger } from "../../core/log.ts";
import type { NetMapRoute } from "../../core/policy/netmap.ts";
import type { TimerConfig } from "../../core/wire/timers.ts";
import { selectCrypto } from "../crypto/select.ts";
import type { EngineDeps, EngineFactory, HostedEngine } from "./host.ts";

export interface DeviceEngineConfig {
  /** Base64, as `wg genkey` prints it. */
  privateKey: string;
  peers: PeerConfig[];
  /** Tunnel MTU (padding); default 1420. */
  mtu?: number;
  /** Use @noble even where libcrypto loads (`waygate up --noble`, benches). */
  forceNoble?: boolean;
  /** Overrides of WireGuard's timer constants (tests only). */
  timers?: Partial<TimerConfig>;
  /** Handshake messages per second above which cookies are demanded (default 128). */
  underLoadHandshakesPerSecond?: number;
  /** IPv4 source of failover probes: this system's virtual address (default 0.0.0.0). */
  probeSource?: string;
  /** Failover knobs (core/agent/failover-config.ts FailoverSettings, already checked). */
  failover?: { preempt?: boolean; preemptHoldMs?: number; probeIntervalMs?: number; missedProbes?: number; recoverProbes?: number };
}

export type DeviceEngineControl =
  | { type: "setPeers"; peers: PeerConfig[] }
  | { type: "config"; peers: PeerConfig[] }
  | { type: "setGateway"; gateway: GatewayConfig | null }
  | { type: "setInboundRules"; rules: InboundAcl[] | null }
  | { type: "netmap"; peers: { id: string; publicKey: string }[]; routes: NetMapRoute[] }
  | { type: "health"; withdrawn: string[]; draining: boolean }
  | { type: "failoverAck"; revision: number };

/** One group in the engine's stats: its last switch summarised (no prefix list). */
export type EngineFailoverGroup = Omit<GroupStatus, "lastSwitch"> & { lastSwitch: SwitchSummary | null };

/** The failover part of the engine's stats: O(groups + gateways), plus per-prefix detail when it changed. */
export interface EngineFailoverStats {
  /** The controller's revision: per-prefix detail (other than live health) changes only with it. */
  revision: number;
  prefixCount: number;
  groups: EngineFailoverGroup[];
  /** Live health per gateway (applies to every prefix's candidate rows). */
  gateways: GatewayHealth[];
  /** Per-prefix status, present while `revision` is not the last one acknowledged (`failoverAck`). */
  prefixes?: PrefixStatusRow[];
  /** Switches so far (one per group switch). */
  switches: number;
  /** The latest switches, oldest first (at most RECENT_DECISIONS). */
  recent: SwitchSummary[];
}

export interface DeviceEngineStats extends DeviceStats {
  crypto: string;
  /** Present once a `netmap` message started failover. */
  failover?: EngineFailoverStats;
}

const RECENT_DECISIONS = 16;
/** Prefixes named per group in stats (the rest are counted). */
const GROUP_SAMPLE = 3;
/** The failover's tick period at most, while it has routes (see `tick`). */
const RX_OBSERVE_MS = 50;

/** Prefixes every line with `engine:`-style tags unless the line already names its stage. */
function tagged(logger: Logger, tag: string): Logger {
  const t = (m: string) => (m.startsWith(`${tag}:`) || /^[a-z]+: /.test(m) ? m : `${tag}: ${m}`);
  return {
    debug: (m, ...a) => logger.debug(t(m), ...a),
    info: (m, ...a) => logger.info(t(m), ...a),
    warn: (m, ...a) => logger.warn(t(m), ...a),
    error: (m, ...a) => logger.error(t(m), ...a),
  };
}

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  randomFillSync(out);
  return out;
}

const createDeviceEngine: EngineFactory = (config: DeviceEngineConfig, deps: EngineDeps): HostedEngine => {
  const logger = tagged(deps.logger, "engine");
  const crypto = selectCrypto({ forceNoble: config.forceNoble === true, logger });
  const device = new Device({
    privateKey: config.privateKey,
    crypto,
    now: deps.now,
    random,
    logger,
    tun: deps.tun,
    bind: deps.bind,
    timers: config.timers,
    mtu: config.mtu,
    underLoadHandshakesPerSecond: config.underLoadHandshakesPerSecond,
    ...(config.probeSource !== undefined ? { probeSource: config.probeSource } : {}),
  });
  if (config.timers && Object.keys(config.timers).length > 0) {
    logger.warn(`engine: timers=override values=${JSON.stringify(config.timers)} (tests only)`);
  }
  device.setPeers(config.peers);
  let failover: DataPathFailover | null = null;
  let netmapJson = "";
  let switches = 0;
  let ackedRevision = -1;
  const recent: SwitchSummary[] = [];
  /**
   * Before a prefix's first working session (no decision yet) the controller has no gateway for
   * it, and the Device would drop: the first packets of a fresh agent (a ping, a SYN) would be
   * lost for the ~200 ms + handshake until the first probe answers. Until then the prefix's best
   * candidate by (not draining, priority, key) carries it provisionally: its packets wait behind
   * that gateway's handshake, as without failover. Still the tunnel, never the default route; once
   * any decision is made for the prefix (the first answer: `initial`), the controller alone decides.
   * A candidate the NetMap marks `withdrawn` never carries a prefix provisionally: with every
   * candidate withdrawn no decision ever comes, and the prefix must fail closed, not stick to one.
   */
  const provisional = new Map<string, LookupResult>();
  const settled = new Set<string>();
  const onDecision = (d: FailoverDecision): void => {
    switches++;
    recent.push(switchSummary(d));
    if (recent.length > RECENT_DECISIONS) recent.shift();
    // O(prefixes) per group switch (rare), never per tick.
    for (const p of d.prefixes) settled.add(p);
    if (provisional.size > 0) for (const p of d.prefixes) provisional.delete(p);
  };
  const withProvisional = (r: LookupResult): LookupResult =>
    r.gatewayId === null && r.prefix !== null && provisional.size > 0 ? (provisional.get(r.prefix) ?? r) : r;
  const setProvisional = (peers: { id: string; publicKey: string }[], routes: NetMapRoute[]): void => {
    provisional.clear();
    const keyById = new Map(peers.map((p) => [p.id, p.publicKey]));
    const best = new Map<string, NetMapRoute & { key: string }>();
    for (const r of routes) {
      const key = keyById.get(r.via);
      if (key === undefined || settled.has(r.prefix) || r.withdrawn === true) continue;
      const cur = best.get(r.prefix);
      const rank = (x: NetMapRoute) => x.priority + (x.draining ? 1000 : 0);
      if (cur === undefined || rank(r) < rank(cur) || (rank(r) === rank(cur) && key < cur.key)) best.set(r.prefix, { ...r, key });
    }
    for (const [prefix, r] of best) provisional.set(prefix, Object.freeze({ gatewayId: r.key, prefix, viaPrefix: prefix }));
  };
  const tick = (): number => {
    const next = device.tick();
    const f = failover;
    if (f === null) return next;
    // Every tick, not only when a probe or deadline is due: the failover reads the peers' rx
    // counters at its ticks, and "heard from" is the tick's time, so RX_OBSERVE_MS bounds how late
    // a dead gateway's last packet is noticed (with 200 ms ticks it added up to 200 ms to the outage).
    f.tick();
    return Math.min(next, f.nextTickInMs(), RX_OBSERVE_MS);
  };
  const failoverStats = (f: DataPathFailover): EngineFailoverStats => {
    const c = f.controller;
    const revision = c.revision;
    return {
      revision,
      prefixCount: c.prefixCount,
      groups: c.groups(GROUP_SAMPLE).map((g) => ({ ...g, lastSwitch: g.lastSwitch === null ? null : switchSummary(g.lastSwitch) })),
      gateways: c.health.list(),
      ...(revision !== ackedRevision
        ? { prefixes: c.status().map((r) => ({ ...r, lastSwitch: r.lastSwitch === null ? null : switchSummary(r.lastSwitch) })) }
        : {}),
      switches,
      recent: [...recent],
    };
  };
  return {
    handleTunPacket: (packet) => device.handleTunPacket(packet),
    handleDatagram: (data, from) => device.handleDatagram(data, from),
    tick,
    control(message: unknown): void {
      const m = message as Partial<DeviceEngineControl> | null;
      if (m && m.type === "netmap" && Array.isArray(m.peers) && Array.isArray(m.routes)) {
        const json = JSON.stringify([m.peers, m.routes]);
        if (json === netmapJson) return;
        netmapJson = json;
        // A system with no gateway routes (a gateway, a peer-to-peer client) needs no selector.
        if (failover === null && m.routes.length === 0) return;
        if (failover === null) {
          const f = new DataPathFailover({ device, now: deps.now, logger, onDecision, ...(config.failover ?? {}) });
          const c = f.controller;
          device.setRouteSelector({
            lookup: (dst) => withProvisional(c.lookup(dst)),
            lookupPinned: (dst, pinned) => withProvisional(c.lookupPinned(dst, pinned)),
          });
          failover = f;
        }
        setProvisional(m.peers, m.routes);
        failover.setNetMap({ peers: m.peers, routes: m.routes });
        // The host recomputes its deadline only at a tick (within MAX_TICK_MS = 1 s): probe now,
        // so new candidates get their handshakes going without waiting for it.
        failover.tick();
        logger.info(
          `engine: failover routes=${new Set(m.routes.map((r) => r.prefix)).size} candidates=${m.routes.length} groups=${failover.controller.groupCount}`,
        );
        return;
      }
      if (m && m.type === "failoverAck" && typeof m.revision === "number") {
        ackedRevision = m.revision;
        return;
      }
      if (m && m.type === "health" && Array.isArray(m.withdrawn)) {
        const report: HealthReport = { withdrawn: m.withdrawn, draining: m.draining === true };
        device.setHealthReport(report);
        return;
      }
      if (m && (m.type === "setPeers" || m.type === "config") && Array.isArray(m.peers)) {
        device.setPeers(m.peers);
        logger.info(`engine: peers set count=${m.peers.length}`);
        return;
      }
      if (m && m.type === "setGateway" && (m.gateway === null || typeof m.gateway === "object")) {
        device.setGateway(m.gateway ?? null);
        return;
      }
      if (m && m.type === "setInboundRules" && (m.rules === null || Array.isArray(m.rules))) {
        device.setInboundRules(m.rules ?? null);
        logger.info(`engine: inbound rules set peers=${m.rules === null ? "off" : m.rules.length}`);
        return;
      }
      logger.warn(`engine: unknown control message ${JSON.stringify(message)?.slice(0, 200)}`);
    },
    stats: (): DeviceEngineStats => ({
      ...device.stats(),
      crypto: crypto.name,
      ...(failover !== null ? { failover: failoverStats(failover) } : {}),
    }),
    close: () => failover?.close(),
  };
};

export default createDeviceEngine;
