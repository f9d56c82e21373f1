/**
 * @module platform/linux/agent-gateway
 * The agent's Linux gateway role and its client routes, as NetMap hooks (core/agent/agent.ts).
 *
 * Gateway (`startGatewayRole`), DESIGN.md "How a packet travels", steps 3-5. On a NetMap that
 * makes this system an active gateway, in this order (make-before-break: nothing is forwarded
 * before the rules that guard it are in place):
 *   G1 evidence   <stateDir>/forwarding.json is written BEFORE the first change to the OS: the
 *                 forwarding values found before we changed them. A crashed run leaves it behind;
 *                 the next start (or `waygate cleanup`) knows from it that rules may be left over
 *                 and which values to restore. Deleted only after everything is removed again.
 *   G2 place      `ip -j -4 addr show` (discover.ts) and, for served subnets that are not
 *                 connected, `ip -j -4 route get` / the default route: the interface facing each
 *                 subnet and the gateway's address there (core/agent/gateway-config.ts).
 *   G3 device     Device.setGateway (the engine's `setGateway` control message): the access
 *                 filter and flow table, validated on this thread first; sent only when it changed.
 *   G4 firewall   the Firewall (platform/linux/firewall): the backend detected once per process
 *                 (logged `firewall: backend=... reason=...`), other backends' leftovers removed
 *                 (`cleanupOthers`), then `set(config)`: a diff, so the same NetMap changes nothing.
 *   G5 forward    net.ipv4.ip_forward=1 (sysctl.ts), remembering the value from forwarding.json.
 *   G6 watchdog   `watchFirewall`: our rules deleted or flushed by hand are back within one
 *                 interval (2 s by default); its re-apply is serialised with G4 and always uses the
 *                 config current at that moment.
 * On a NetMap without the gateway role, and on stop(): the watchdog stops, the Device's gateway is
 * turned off, Waygate's rules are removed from every backend, forwarding is restored to the value
 * from before the first start, forwarding.json is deleted. A process that never was a gateway
 * and finds no forwarding.json never touches the firewall or sysctls (a pure client).
 * At start, with forwarding.json present (a crashed gateway run): the backend is detected and the
 * other backends cleaned at once; the chosen backend's leftovers are reconciled by the first set()
 * or removed by the first NetMap without the role.
 *
 * Upstream health (failover's gateway side, core/failover/upstream.ts): every served subnet the
 * firewall placed is watched through the interface it was placed on (link state from sysfs every
 * 200 ms, and `upstreamHosts[prefix]` TCP probes when configured: platform/linux/upstream.ts).
 *   U1 in-band   the Device's health report (engine `health` message, sent only when it changes):
 *                `withdrawn` = unreachable subnets plus subnets held back (below); `draining` when
 *                every served subnet drains (`waygate gateways drain`; a drain of some subnets only
 *                reaches clients through their NetMap's per-route flag, since the in-band flag is
 *                per gateway) or the gateway is leaving. Clients act on the next probe reply.
 *   U2 report    unless the agent is told not to (agent-adapters.ts `reportUnhealthySubnets`, on by
 *                default), the unreachable subnets also go to the control plane
 *                (AgentReport.unhealthySubnets; `onUnhealthyChange` lets the agent send a report at
 *                once), so the admin sees them and NetMaps follow: the subnet stays in every NetMap,
 *                its routes marked `withdrawn` (clients keep it on the TUN and fail closed). Should a
 *                control plane leave such a subnet out of our NetMap (older ones did), it is *held*,
 *                i.e. still watched on its last interface and withdrawn in-band, until it is reachable
 *                again (reported healthy, so it comes back) and the NetMap lists it again (or a minute
 *                passes: removed for good).
 *                An interface that goes down is no longer discovered, so the last placement is kept.
 *   U3 leave     `withdrawAll()` before a graceful stop: every subnet withdrawn and draining in-band;
 *                the caller keeps the data plane up ~500 ms so clients move before the teardown.
 *
 * Client (`clientRouterHook`): the Router (platform/linux/router.ts) from `routerConfig`: the
 * granted prefixes on the TUN (routes marked `withdrawn` included: fail closed), the control plane and peer endpoints as bypass host routes (only
 * where a tunnel route, e.g. the default route, would capture them), allowLanAccess and
 * failClosed as configured. Leftover `proto 87` routes of a crashed run go with the first set().
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { lookup } from "node:dns/promises";
import { join } from "node:path";
import * as v from "valibot";
import type { NetMapHook, DiscoveredAddress } from "../../core/agent/agent.ts";
import {
  type FirewallSetting,
  GATEWAY_INPUT_ALLOW,
  deviceGatewayConfig,
  firewallConfig,
  isGateway,
  routerConfig,
  subnetsToResolve,
  urlHostAddress,
  type RoutedSubnet,
} from "../../core/agent/gateway-config.ts";
import { upstreamSubnets } from "../../core/agent/failover-config.ts";
import { writeFileAtomic } from "../../core/agent/state.ts";
import { GatewayFilter } from "../../core/dataplane/filter.ts";
import type { GatewayConfig } from "../../core/dataplane/gateway.ts";
import { WaygateError } from "../../core/errors.ts";
import { type FirewallConfig, watchFirewall } from "../../core/firewall/firewall.ts";
import { type UpstreamChecks, type UpstreamStatus, type UpstreamSubnet, UpstreamMonitor } from "../../core/failover/upstream.ts";
import type { Logger } from "../../core/log.ts";
import type { NetMap } from "../../core/policy/netmap.ts";
import type { Router, TunnelId } from "../../core/router/router.ts";
import type { CommandRunner } from "../../core/runner.ts";
import type { DeviceEngineControl } from "./device-engine.ts";
import { parseIpAddrJson } from "./discover.ts";
import { createLinuxFirewall, type LinuxFirewall } from "./firewall/index.ts";
import { enableForwarding, type ForwardingSnapshot, IPV4_FORWARD, readSysctl, restoreForwarding } from "./sysctl.ts";
import { linuxUpstreamChecks } from "./upstream.ts";

export const FORWARDING_FILE = "forwarding.json";
export const DEFAULT_WATCHDOG_MS = 2000;
/** How long a subnet left out of our NetMap is still watched after it became reachable again. */
export const HELD_SUBNET_MS = 60_000;

export type { FirewallSetting };

const ForwardingStateSchema = v.object({
  version: v.literal(1),
  /** The values found before the first change, restored on a clean stop. */
  previous: v.record(v.picklist([IPV4_FORWARD, "net.ipv6.conf.all.forwarding"]), v.string()),
  since: v.number(),
});
export type ForwardingState = v.InferOutput<typeof ForwardingStateSchema>;

/** forwarding.json could not be read: it is not what we write. */
export class GatewayStateError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_AGENT_STATE", message, options);
  }
}

export function forwardingPath(stateDir: string): string {
  return join(stateDir, FORWARDING_FILE);
}

/** The crash evidence, or null when there is none. */
export function readForwardingState(stateDir: string): ForwardingState | null {
  const path = forwardingPath(stateDir);
  if (!existsSync(path)) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (cause) {
    throw new GatewayStateError(`${path}: not JSON (${(cause as Error).message})`, { cause });
  }
  const r = v.safeParse(ForwardingStateSchema, raw);
  if (!r.success) throw new GatewayStateError(`${path}: unexpected shape at ${v.getDotPath(r.issues[0]) ?? "(top level)"}: ${r.issues[0].message}`);
  return r.output;
}

export function writeForwardingState(stateDir: string, state: ForwardingState): void {
  writeFileAtomic(forwardingPath(stateDir), `${JSON.stringify(state, null, 2)}\n`);
}

export function removeForwardingState(stateDir: string): void {
  rmSync(forwardingPath(stateDir), { force: true });
}

/** This machine's IPv4 addresses: the connected subnets, and every own address (for the filter). */
export async function readInterfaces(
  runner: CommandRunner,
  options: { tunnelInterface: string; network: string },
): Promise<{ found: DiscoveredAddress[]; localAddresses: string[] }> {
  const r = await runner.run(["ip", "-j", "-4", "addr", "show"]);
  const { found, skipped } = parseIpAddrJson(r.stdout, { excludeInterfaces: [options.tunnelInterface], excludePrefixes: [options.network] });
  const local = new Set(found.map((f) => f.address));
  for (const s of skipped) if (s.address !== null && s.reason !== "excluded-interface") local.add(s.address);
  return { found, localAddresses: [...local].sort() };
}

interface RouteGetEntry {
  dst?: string;
  dev?: string;
  prefsrc?: string;
  metric?: number;
  type?: string;
}

function parseJsonArray(text: string): RouteGetEntry[] {
  try {
    const data = JSON.parse(text.trim() === "" ? "[]" : text) as unknown;
    return Array.isArray(data) ? (data as RouteGetEntry[]) : [];
  } catch {
    return [];
  }
}

/** Where the kernel routes each prefix now (a lookup: no packet is sent). */
export async function resolveRoutedSubnets(runner: CommandRunner, prefixes: readonly string[], tunnelInterface: string): Promise<RoutedSubnet[]> {
  const out: RoutedSubnet[] = [];
  for (const prefix of prefixes) {
    let entry: RouteGetEntry | undefined;
    if (prefix === "0.0.0.0/0") {
      const r = await runner.run(["ip", "-j", "-4", "route", "show", "default"], { allowFailure: true });
      entry = parseJsonArray(r.stdout)
        .filter((e) => e.dev !== undefined && e.dev !== tunnelInterface && (e.type === undefined || e.type === "unicast"))
        .sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0))[0];
    } else {
      const r = await runner.run(["ip", "-j", "-4", "route", "get", prefix.split("/")[0]!], { allowFailure: true });
      entry = r.exitCode === 0 ? parseJsonArray(r.stdout)[0] : undefined;
    }
    if (entry?.dev !== undefined && entry.dev !== tunnelInterface) {
      out.push({ prefix, interface: entry.dev, ...(entry.prefsrc !== undefined ? { source: entry.prefsrc } : {}) });
    }
  }
  return out;
}

/**
 * `iptables` names whatever the plain `iptables` is; when the suffixed tool of that variant exists
 * it is named instead (iptables-nft, iptables-legacy). Otherwise `cleanupOthers()` would see the
 * "system" variant and the nft (or legacy) variant as two backends and remove the very rules it
 * is about to reconcile: a rewrite on every restart instead of no change.
 */
export async function concreteFirewallSetting(setting: FirewallSetting, runner: CommandRunner): Promise<FirewallSetting> {
  if (setting !== "iptables") return setting;
  const plain = await runner.run(["iptables", "-V"], { allowFailure: true });
  if (plain.exitCode !== 0) return setting;
  const variant = /nf_tables/.test(plain.stdout + plain.stderr) ? "iptables-nft" : "iptables-legacy";
  const suffixed = await runner.run([variant, "-V"], { allowFailure: true });
  return suffixed.exitCode === 0 ? variant : setting;
}

export interface GatewayRoleOptions {
  runner: CommandRunner;
  logger: Logger;
  stateDir: string;
  /** The Waygate TUN. */
  tunnelInterface: string;
  /** One control message to the Device engine (the data-plane host). */
  engineControl(message: DeviceEngineControl): void;
  /** `--firewall`: auto (the detector decides), iptables or nftables. */
  firewall?: FirewallSetting;
  /** How often the watchdog verifies our rules (default 2000 ms). */
  watchdogIntervalMs?: number;
  now?: () => number;
  /** Hosts to probe per served subnet ("172.26.0.10", "172.26.0.10:443"); absent: link state only. */
  upstreamHosts?: Readonly<Record<string, readonly string[]>>;
  /** The upstream checks (default: sysfs link state and TCP probes, platform/linux/upstream.ts). */
  upstreamChecks?: UpstreamChecks;
  /** Upstream check interval (default 200 ms, the clients' probe interval). */
  upstreamIntervalMs?: number;
  /** The unreachable subnets changed (the agent reports them to the control plane at once). */
  onUnhealthyChange?(unhealthy: string[]): void;
}

export interface GatewayRoleStatus {
  active: boolean;
  backend: string | null;
  reason: string | null;
  subnets: FirewallConfig["subnets"];
  forwardingPrevious: ForwardingSnapshot | null;
  /** Served subnets' upstream state (withdrawn ones included, held ones too). */
  upstream: UpstreamStatus[];
  /** What probe replies report now. */
  health: { withdrawn: string[]; draining: boolean };
}

export interface GatewayRole {
  /** The onNetMap hook. */
  readonly hook: NetMapHook;
  status(): GatewayRoleStatus;
  /** Subnets whose upstream is unreachable now (AgentReport.unhealthySubnets). */
  unhealthy(): string[];
  /**
   * Before a graceful stop: every served subnet withdrawn (and draining) in probe replies, so
   * clients move away while the data plane still runs. Returns how many subnets were withdrawn
   * (0: not a gateway, no need to wait).
   */
  withdrawAll(): number;
  /** Removes everything the role put into the OS; idempotent. */
  stop(): Promise<void>;
}

export async function startGatewayRole(o: GatewayRoleOptions): Promise<GatewayRole> {
  const { runner, logger } = o;
  const now = o.now ?? (() => Date.now());
  let evidence: ForwardingState | null = null;
  try {
    evidence = readForwardingState(o.stateDir);
  } catch (err) {
    // Unreadable: treat as evidence of a crashed run whose previous values are lost.
    logger.warn(`gateway: ${(err as Error).message}; leftovers will be removed, forwarding left as it is`);
    evidence = { version: 1, previous: {}, since: now() };
  }
  let fw: LinuxFirewall | null = null;
  let firewallConfigNow: FirewallConfig | null = null;
  let deviceJson: string | null = null;
  let stopWatchdog: (() => void) | null = null;
  let active = false;
  let stopped = false;
  let leaving = false;
  let lastSummary = "";
  // Upstream health (U1-U3 in the module comment).
  let served: string[] = [];
  let drainingAll = false;
  /** Subnets left out of our NetMap while withdrawn: watched on, withdrawn in-band. */
  const held = new Map<string, { subnet: UpstreamSubnet; healthySince: number | null }>();
  /** The interface each subnet was last placed on (a down interface is not discovered). */
  const placedOn = new Map<string, string>();
  let healthJson = JSON.stringify({ withdrawn: [], draining: false });
  let healthNow = { withdrawn: [] as string[], draining: false };
  let unhealthyNow: string[] = [];
  let upstreamTimer: ReturnType<typeof setTimeout> | null = null;
  const monitor = new UpstreamMonitor({
    now,
    logger,
    checks: o.upstreamChecks ?? linuxUpstreamChecks(),
    ...(o.upstreamIntervalMs !== undefined ? { intervalMs: o.upstreamIntervalMs } : {}),
    onChange: () => publish(),
  });
  const publish = (): void => {
    // After stop() the report stays as withdrawAll() left it (the Device goes away with the host).
    if (stopped) return;
    const lost = monitor.withdrawn();
    const inBand = leaving ? [...new Set([...served, ...held.keys()])].sort() : [...new Set([...lost, ...held.keys()])].sort();
    const health = { withdrawn: inBand, draining: leaving || drainingAll };
    const json = JSON.stringify(health);
    if (json !== healthJson) {
      healthJson = json;
      healthNow = health;
      try {
        o.engineControl({ type: "health", ...health });
      } catch (err) {
        logger.warn(`gateway: health report failed error=${JSON.stringify(String(err))}`);
      }
    }
    if (!leaving && lost.join(",") !== unhealthyNow.join(",")) {
      unhealthyNow = lost; // each change is logged once, per subnet, by the monitor (`upstream: ...`)
      o.onUnhealthyChange?.(lost);
    }
  };
  const scheduleUpstream = (): void => {
    if (upstreamTimer !== null || stopped) return;
    const due = monitor.nextTickInMs();
    if (!Number.isFinite(due)) return;
    upstreamTimer = setTimeout(() => {
      upstreamTimer = null;
      if (stopped) return;
      monitor.tick();
      expireHeld();
      scheduleUpstream();
    }, due);
  };
  const expireHeld = (): void => {
    const lost = new Set(monitor.withdrawn());
    let changed = false;
    for (const [prefix, h] of held) {
      if (lost.has(prefix)) h.healthySince = null;
      else if (h.healthySince === null) h.healthySince = now();
      else if (now() - h.healthySince >= HELD_SUBNET_MS) {
        held.delete(prefix);
        changed = true;
      }
    }
    if (changed) watch();
  };
  /** The monitor's subnets: the NetMap's placed ones plus the held ones. */
  let lastPlaced: UpstreamSubnet[] = [];
  const watch = (placed: UpstreamSubnet[] = lastPlaced): void => {
    lastPlaced = placed;
    const list = [...placed, ...[...held.values()].map((h) => h.subnet)];
    try {
      monitor.setSubnets(list);
    } catch (err) {
      logger.error(`gateway: upstream monitor not set error=${JSON.stringify((err as Error).message)}`);
    }
    publish();
    scheduleUpstream();
  };
  /** Stops watching; the monitor's change resets the report unless stop() is under way. */
  const stopUpstream = (): void => {
    if (upstreamTimer !== null) clearTimeout(upstreamTimer);
    upstreamTimer = null;
    held.clear();
    served = [];
    drainingAll = false;
    lastPlaced = [];
    monitor.setSubnets([]);
    publish();
  };
  let chain: Promise<unknown> = Promise.resolve();
  const serial = <T>(f: () => Promise<T>): Promise<T> => {
    const run = chain.then(f);
    chain = run.catch(() => {});
    return run;
  };

  const firewall = async (): Promise<LinuxFirewall> => {
    if (fw === null) {
      fw = await createLinuxFirewall({ runner, logger, explicit: await concreteFirewallSetting(o.firewall ?? "auto", runner) });
      const others = await fw.cleanupOthers();
      if (others.length > 0) logger.info(`gateway: removed leftovers of other backends changes=${others.length}`);
    }
    return fw;
  };

  if (evidence !== null) {
    logger.info(`gateway: leftovers of an earlier run (${FORWARDING_FILE} since ${new Date(evidence.since).toISOString()}); reconciling`);
    await firewall().catch((err: unknown) => logger.error(`gateway: firewall unavailable error=${JSON.stringify((err as Error).message)}`));
  }

  const apply = async (netmap: NetMap, revision: number): Promise<void> => {
    if (stopped) return;
    if (!isGateway(netmap)) {
      await remove("not-a-gateway");
      return;
    }
    // G2 place
    const { found, localAddresses } = await readInterfaces(runner, { tunnelInterface: o.tunnelInterface, network: netmap.self.network });
    const routed = await resolveRoutedSubnets(runner, subnetsToResolve(netmap, found, o.tunnelInterface), o.tunnelInterface);
    const device = deviceGatewayConfig(netmap, { localAddresses })!;
    const plan = firewallConfig(netmap, { addresses: found, routed }, { tunnelInterface: o.tunnelInterface, inputAllow: GATEWAY_INPUT_ALLOW, inboundAclsEnforced: true })!;
    // Validated here, where an error can be reported; the engine would only log it.
    new GatewayFilter(device.config);
    // G1 evidence
    if (evidence === null) {
      const previous: ForwardingSnapshot = { [IPV4_FORWARD]: await readSysctl(IPV4_FORWARD, { runner }) };
      evidence = { version: 1, previous, since: now() };
      writeForwardingState(o.stateDir, evidence);
    }
    // G3 device
    const json = JSON.stringify(device.config);
    if (json !== deviceJson) {
      o.engineControl({ type: "setGateway", gateway: device.config as GatewayConfig });
      deviceJson = json;
    }
    // G4 firewall
    const f = await firewall();
    firewallConfigNow = plan.config;
    const changes = await f.set(plan.config);
    // G5 forward
    await enableForwarding({ ipv4: true, ipv6: false }, { runner, logger, remembered: evidence.previous });
    active = true;
    // Upstream health: watch what is served now, hold what the control plane took away while withdrawn.
    const subnets = netmap.self.gateway!.subnets;
    served = subnets.map((x) => x.prefix);
    drainingAll = subnets.length > 0 && subnets.every((x) => x.draining);
    const upstream = upstreamSubnets(plan.config.subnets, plan.skipped, placedOn, o.upstreamHosts);
    const listed = new Set(upstream.map((u) => u.prefix));
    const withdrawnNow = new Set(monitor.withdrawn());
    for (const prev of monitor.status()) {
      if (listed.has(prev.prefix) || held.has(prev.prefix) || !withdrawnNow.has(prev.prefix)) continue;
      held.set(prev.prefix, { subnet: { prefix: prev.prefix, interface: prev.interface, hosts: prev.hosts }, healthySince: null });
      logger.info(`gateway: subnet=${prev.prefix} held reason=withdrawn-and-left-netmap`);
    }
    for (const prefix of [...held.keys()]) if (listed.has(prefix)) held.delete(prefix);
    watch(upstream);
    // G6 watchdog
    stopWatchdog ??= watchFirewall(
      {
        backend: f.backend,
        // Serialised with apply/remove, and always the config current when it runs.
        set: () => serial(async () => (firewallConfigNow !== null && !stopped ? f.set(firewallConfigNow) : [])),
        cleanup: () => f.cleanup(),
        verify: () => serial(async () => firewallConfigNow === null || stopped || (await f.verify!())),
      },
      () => firewallConfigNow,
      {
        intervalMs: o.watchdogIntervalMs ?? DEFAULT_WATCHDOG_MS,
        logger,
        every: (ms, fn) => {
          const t = setInterval(fn, ms);
          return () => clearInterval(t);
        },
      },
    );
    const summary =
      `subnets=${plan.config.subnets.map((s) => `${s.prefix}@${s.lanInterface}:${s.nat ? (s.snatAddress ? `snat=${s.snatAddress}` : "masquerade") : "nat=off"}`).join(",") || "none"}` +
      ` senders=${device.config.senders.length}` +
      (plan.skipped.length > 0 ? ` skipped=${plan.skipped.map((s) => `${s.prefix}:${s.reason}`).join(",")}` : "") +
      (device.unknownSenders.length > 0 ? ` unknown_senders=${device.unknownSenders.join(",")}` : "");
    if (changes.length > 0 || summary !== lastSummary) {
      logger.info(`gateway: applied revision=${revision} backend=${f.backend} firewall_changes=${changes.length} forwarding=on ${summary}`);
    } else {
      logger.debug(`gateway: unchanged revision=${revision}`);
    }
    lastSummary = summary;
    for (const s of plan.skipped) logger.warn(`gateway: subnet=${s.prefix} skipped reason=${s.reason}`);
  };

  const remove = async (why: string): Promise<void> => {
    stopUpstream();
    if (!active && evidence === null && deviceJson === null) return;
    stopWatchdog?.();
    stopWatchdog = null;
    firewallConfigNow = null;
    if (deviceJson !== null) {
      try {
        o.engineControl({ type: "setGateway", gateway: null });
      } catch (err) {
        logger.warn(`gateway: device off failed error=${JSON.stringify(String(err))}`);
      }
      deviceJson = null;
    }
    let changes = 0;
    let failure: unknown = null;
    try {
      changes = (await (await firewall()).cleanup()).length;
    } catch (err) {
      failure = err;
      logger.error(`gateway: firewall cleanup failed error=${JSON.stringify((err as Error).message)}`);
    }
    if (evidence !== null) {
      await restoreForwarding(evidence.previous, { runner, logger });
      // Kept while rules may remain: the next start (or `waygate cleanup`) tries again.
      if (failure === null) {
        removeForwardingState(o.stateDir);
        evidence = null;
      }
    }
    active = false;
    lastSummary = "";
    if (failure !== null) throw failure;
    logger.info(`gateway: removed reason=${why} firewall_changes=${changes} forwarding=restored`);
  };

  return {
    hook: (netmap, context) => serial(() => apply(netmap, context.revision)),
    status: () => ({
      active,
      backend: fw?.backend ?? null,
      reason: fw?.choice.reason ?? null,
      subnets: firewallConfigNow?.subnets ?? [],
      forwardingPrevious: evidence?.previous ?? null,
      upstream: monitor.status(),
      health: { withdrawn: [...healthNow.withdrawn], draining: healthNow.draining },
    }),
    unhealthy: () => [...unhealthyNow],
    withdrawAll: () => {
      if (!active || leaving) return 0;
      leaving = true;
      publish();
      logger.info(`gateway: leaving withdrawn=${healthNow.withdrawn.join(",") || "none"} draining=true`);
      return healthNow.withdrawn.length;
    },
    stop: () =>
      serial(async () => {
        stopped = true;
        await remove("stop");
      }),
  };
}

/** The control plane's addresses: the URL's IP literal, or what its host name resolves to now. */
export async function controlPlaneAddresses(serverUrl: string, logger: Logger): Promise<string[]> {
  const literal = urlHostAddress(serverUrl);
  if (literal !== null) return [literal];
  try {
    const host = new URL(serverUrl).hostname;
    return [...new Set((await lookup(host, { all: true })).map((a) => a.address))].sort();
  } catch (err) {
    logger.warn(`router: control plane ${serverUrl} not resolved (no bypass route for it) error=${JSON.stringify((err as Error).message)}`);
    return [];
  }
}

export interface ClientRouterOptions {
  router: Router;
  tunnel: TunnelId;
  serverUrl: string;
  logger: Logger;
  allowLanAccess?: boolean;
  failClosed?: boolean;
}

/** The client side: the NetMap's routes onto the TUN, with bypass, LAN access and fail-closed. */
export function clientRouterHook(o: ClientRouterOptions): NetMapHook {
  let addresses: Promise<string[]> | null = null;
  return async (netmap) => {
    addresses ??= controlPlaneAddresses(o.serverUrl, o.logger);
    const config = routerConfig(netmap, {
      tunnel: o.tunnel,
      controlPlaneAddresses: await addresses,
      ...(o.allowLanAccess !== undefined ? { allowLanAccess: o.allowLanAccess } : {}),
      ...(o.failClosed !== undefined ? { failClosed: o.failClosed } : {}),
    });
    const result = await o.router.set(config);
    if (result.changes.length > 0) {
      o.logger.info(
        `router: changes=${result.changes.length} routes=${config.routes.map((r) => r.prefix).join(",") || "none"}` +
          (config.failClosed ? " fail_closed=true" : "") +
          (config.allowLanAccess === false ? " lan_access=false" : ""),
      );
    }
  };
}
