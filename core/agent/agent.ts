/**
 * @module core/agent/agent
 * The Agent: one running system. It streams NetMaps from the control plane (client.ts), applies
 * each one, reports what it knows about itself, and answers `status()`. Everything it touches
 * is injected, so the same class runs under `waygate run`, inside `waygate serve --standalone`,
 * and in tests with fakes:
 *
 *   dataplane        { setPeers(peers), stats() }: the Device behind platform/linux/host.ts
 *   discoverSubnets  the machine's connected IPv4 subnets (platform/linux/discover.ts)
 *   hooks            `onNetMap` hooks, run after the peers are set, in order: the seam where the
 *                    Router, the Firewall and DNS attach (the gateway work wires them); a hook
 *                    that throws is logged and does not stop the others
 *   client, logger, now, sleep, random
 *
 * Applying a NetMap (applyNetMap):
 *   A1 convert   NetMap peers -> Device PeerConfigs: publicKey, endpoint (IP literal host:port;
 *                anything else leaves the peer without one, logged `endpoint=unusable`), allowed
 *                IPs exactly as the NetMap lists them (own /32 first, then gatewayFor), keepalive.
 *   A2 diff      against what was applied last: added / removed / changed / unchanged, each peer
 *                logged at debug as a decision line; with no difference setPeers is skipped
 *                (the Device keeps its sessions either way: setPeers is idempotent).
 *   A3 set       dataplane.setPeers(complete list).
 *   A4 hooks     every onNetMap hook.
 *   A5 save      netmap.json (atomic, 0600) when the NetMap came from the server.
 *
 * Reports (POST /v1/agent/report): at start, every `reportIntervalMs`, and whenever the
 * discovered subnets or endpoints change (checked every `discoverIntervalMs`). Endpoints are
 * the machine's own addresses with the listen port; the server also sees the source address.
 *
 * Drop logging (`dropLogIntervalMs`, set by `run -v 5` only: otherwise nothing polls): every
 * interval one stats poll, then (logDropsNow) each drop the Device recorded since the previous
 * poll, once, as `dataplane: drop reason=... peer=<id> proto=... src=... dst=...[:port] len=...`
 * (`from=` instead of addresses for a datagram dropped before it was opened), deduplicated by
 * the drop log's sequence number; `dataplane: drop lost=N` when more drops happened between two
 * polls than stats carries (the Device keeps the newest 64 there); and the per-peer counter
 * summary, `agent: drop reason=... peer=<key> new=N total=M`.
 */
import type { DeviceStats, DropEntry, PeerConfig } from "../dataplane/device.ts";
import { protoName } from "../dataplane/drop-log.ts";
import type { Endpoint } from "../dataplane/ports.ts";
import type { AgentReport } from "../control/protocol.ts";
import type { Logger } from "../log.ts";
import { parseAddress, parsePrefix, prefixCovers } from "../net/address.ts";
import type { NetMap, NetMapPeer } from "../policy/netmap.ts";
import { type NetMapUpdate, type SyncState, newSyncState, runNetMapSync, type ControlClient } from "./client.ts";
import { buildStatus, type AgentStatus } from "./status.ts";
import { type Enrolment, type Identity, publicIdentity, readSavedNetMap, writeSavedNetMap } from "./state.ts";

export interface AgentDataplane {
  /** The complete peer list (idempotent: unchanged peers keep their sessions). */
  setPeers(peers: PeerConfig[]): void | Promise<void>;
  /** Device counters, or null when the data plane cannot say. */
  stats(): Promise<DeviceStats | null>;
}

/** One unicast address on an up interface, and the subnet it sits in. */
export interface DiscoveredAddress {
  interface: string;
  address: string;
  /** The connected subnet, canonical ("192.168.1.0/24"). */
  subnet: string;
}

export interface NetMapHookContext {
  revision: number;
  source: "server" | "disk";
  previous: NetMap | null;
}
export type NetMapHook = (netmap: NetMap, context: NetMapHookContext) => void | Promise<void>;

export interface AgentOptions {
  identity: Identity & { enrolment: Enrolment };
  stateDir: string;
  client: Pick<ControlClient, "stream" | "report">;
  dataplane: AgentDataplane;
  discoverSubnets(): Promise<DiscoveredAddress[]>;
  logger: Logger;
  now: () => number;
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Uniform in [0, 1): backoff jitter. */
  random: () => number;
  interfaceName: string;
  listenPort: number;
  version: string;
  os: string;
  hooks?: NetMapHook[];
  /** Default 60 s. */
  reportIntervalMs?: number;
  /** How often discovery runs to notice a changed subnet (default 30 s). */
  discoverIntervalMs?: number;
  /** Seconds; keeps NAT mappings open (default 25). */
  persistentKeepalive?: number;
  /** When set, per-peer drop counter changes are logged at debug this often (`run -v 5`). */
  dropLogIntervalMs?: number;
  /** Default 45 s (client.ts). */
  idleTimeoutMs?: number;
  /** Called after every apply (tests, standalone). */
  onApplied?(update: NetMapUpdate, source: "server" | "disk"): void;
}

export interface PeerPlan {
  peers: PeerConfig[];
  /** Peers whose endpoint text could not be used (configured without one). */
  unusableEndpoints: { id: string; endpoint: string }[];
}

export interface PeerDiff {
  added: string[];
  removed: string[];
  changed: string[];
  unchanged: string[];
}

/** "1.2.3.4:51820" or "[fd00::1]:51820" -> Endpoint; null for anything else (host names included). */
export function parseEndpoint(text: string): Endpoint | null {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  try {
    return { address: parseAddress(m[1]!).text, port };
  } catch {
    return null;
  }
}

/** A1: the Device peer list for a NetMap. */
export function peerConfigsFor(netmap: NetMap, options: { persistentKeepalive?: number } = {}): PeerPlan {
  const peers: PeerConfig[] = [];
  const unusableEndpoints: PeerPlan["unusableEndpoints"] = [];
  if (!netmap.self.active) return { peers, unusableEndpoints };
  for (const p of netmap.peers) {
    const config: PeerConfig = { publicKey: p.publicKey, allowedIps: [...p.allowedIps] };
    if (p.endpoint !== undefined && p.endpoint !== "") {
      const ep = parseEndpoint(p.endpoint);
      if (ep) config.endpoint = ep;
      else unusableEndpoints.push({ id: p.id, endpoint: p.endpoint });
    }
    const ka = options.persistentKeepalive ?? 25;
    if (ka > 0) config.persistentKeepalive = ka;
    peers.push(config);
  }
  return { peers, unusableEndpoints };
}

function peerKey(p: PeerConfig): string {
  return JSON.stringify([p.allowedIps, p.endpoint ?? null, p.persistentKeepalive ?? 0, p.presharedKey ?? ""]);
}

/** A2: what changes between two peer lists, by public key. */
export function diffPeers(previous: readonly PeerConfig[], next: readonly PeerConfig[]): PeerDiff {
  const before = new Map(previous.map((p) => [p.publicKey, peerKey(p)]));
  const diff: PeerDiff = { added: [], removed: [], changed: [], unchanged: [] };
  const seen = new Set<string>();
  for (const p of next) {
    seen.add(p.publicKey);
    const old = before.get(p.publicKey);
    if (old === undefined) diff.added.push(p.publicKey);
    else if (old !== peerKey(p)) diff.changed.push(p.publicKey);
    else diff.unchanged.push(p.publicKey);
  }
  for (const key of before.keys()) if (!seen.has(key)) diff.removed.push(key);
  return diff;
}

/** Discovered subnets minus anything inside the overlay network, sorted and unique. */
export function reportableSubnets(found: readonly DiscoveredAddress[], network: string): string[] {
  let overlay: ReturnType<typeof parsePrefix> | null = null;
  try {
    overlay = parsePrefix(network, { mask: true });
  } catch {
    overlay = null;
  }
  const out = new Set<string>();
  for (const d of found) {
    try {
      const p = parsePrefix(d.subnet, { mask: true });
      if (overlay && p.family === overlay.family && (prefixCovers(overlay, p) || prefixCovers(p, overlay))) continue;
      out.add(p.text);
    } catch {
      // discovery hands over canonical prefixes; a bad one is simply not reported
    }
  }
  return [...out].sort();
}

export class Agent {
  readonly sync: SyncState = newSyncState();
  readonly #o: AgentOptions;
  readonly #log: Logger;
  readonly #hooks: NetMapHook[];
  #applied: { update: NetMapUpdate; source: "server" | "disk"; at: number } | null = null;
  #peers: PeerConfig[] = [];
  #peersSetOnce = false;
  #discovered: DiscoveredAddress[] = [];
  #lastReport: string | null = null;
  #lastReportAt = Number.NEGATIVE_INFINITY;
  #reportError: string | null = null;
  #abort = new AbortController();
  #loops: Promise<void>[] = [];
  #applyChain: Promise<void> = Promise.resolve();
  #started = false;
  #lastDrops = new Map<string, string>();
  /** The newest drop log sequence number already logged. */
  #lastDropSeq = 0;

  constructor(options: AgentOptions) {
    this.#o = options;
    this.#log = options.logger;
    this.#hooks = [...(options.hooks ?? [])];
  }

  /** Adds an onNetMap hook (Router, Firewall, DNS); it runs from the next NetMap on. */
  addHook(hook: NetMapHook): void {
    this.#hooks.push(hook);
  }

  get netmap(): NetMap | null {
    return this.#applied?.update.netmap ?? null;
  }

  get revision(): number | null {
    return this.#applied?.update.revision ?? null;
  }

  /** Starts streaming, reporting and (optionally) drop logging. Returns at once. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    const e = this.#o.identity.enrolment;
    this.#log.info(
      `agent: start system=${e.systemId} address=${e.virtualAddress} network=${e.network} server=${e.serverUrl} interface=${this.#o.interfaceName} listen_port=${this.#o.listenPort}`,
    );
    const signal = this.#abort.signal;
    this.#loops.push(
      runNetMapSync({
        client: this.#o.client,
        logger: this.#log,
        now: this.#o.now,
        sleep: this.#o.sleep,
        random: this.#o.random,
        signal,
        state: this.sync,
        ...(this.#o.idleTimeoutMs !== undefined ? { idleTimeoutMs: this.#o.idleTimeoutMs } : {}),
        onNetMap: (update, source) => this.applyNetMap(update, source),
        loadCached: () => this.#loadCached(),
      }),
    );
    this.#loops.push(this.#reportLoop(signal));
    if (this.#o.dropLogIntervalMs !== undefined && this.#o.dropLogIntervalMs > 0) this.#loops.push(this.#dropLoop(signal, this.#o.dropLogIntervalMs));
  }

  /** Stops the loops (the data plane is the caller's to stop). */
  async stop(): Promise<void> {
    this.#abort.abort();
    await Promise.allSettled(this.#loops);
    await this.#applyChain.catch(() => {});
    this.#log.info("agent: stopped");
  }

  #loadCached(): NetMapUpdate | null {
    try {
      const saved = readSavedNetMap(this.#o.stateDir, this.#log);
      if (saved === null) return null;
      if (saved.serverUrl !== this.#o.identity.enrolment.serverUrl) {
        this.#log.warn(`agent: netmap source=disk ignored reason=other-server saved_server=${saved.serverUrl}`);
        return null;
      }
      return { revision: saved.revision, netmap: saved.netmap };
    } catch (err) {
      this.#log.warn(`agent: netmap source=disk ignored reason=${JSON.stringify((err as Error).message)}`);
      return null;
    }
  }

  /** Applies one NetMap (serialised: a second call waits for the first). */
  applyNetMap(update: NetMapUpdate, source: "server" | "disk"): Promise<void> {
    const run = this.#applyChain.then(() => this.#apply(update, source));
    this.#applyChain = run.catch(() => {});
    return run;
  }

  async #apply(update: NetMapUpdate, source: "server" | "disk"): Promise<void> {
    const { netmap, revision } = update;
    const previous = this.#applied?.update.netmap ?? null;
    if (source === "disk" && this.#applied !== null) {
      this.#log.debug(`agent: netmap source=disk skipped reason=already-have revision=${this.#applied.update.revision}`);
      return;
    }
    const self = this.#o.identity.enrolment;
    if (netmap.self.id !== self.systemId) {
      this.#log.warn(`agent: netmap ignored reason=wrong-system netmap_self=${netmap.self.id} ours=${self.systemId}`);
      return;
    }
    if (netmap.self.virtualAddress !== self.virtualAddress) {
      this.#log.warn(`agent: virtual address changed from=${self.virtualAddress} to=${netmap.self.virtualAddress} (re-enrol or restart to re-address the interface)`);
    }
    // A1 convert
    const plan = peerConfigsFor(netmap, { persistentKeepalive: this.#o.persistentKeepalive ?? 25 });
    for (const u of plan.unusableEndpoints) this.#log.warn(`agent: peer=${u.id} endpoint=unusable value=${JSON.stringify(u.endpoint)} reason=not-an-ip-literal`);
    // A2 diff
    const diff = diffPeers(this.#peers, plan.peers);
    const names = new Map(netmap.peers.map((p) => [p.publicKey, p]));
    const oldNames = new Map((previous?.peers ?? []).map((p) => [p.publicKey, p]));
    for (const [verb, keys] of [["add", diff.added], ["change", diff.changed], ["remove", diff.removed], ["keep", diff.unchanged]] as const) {
      for (const key of keys) {
        const p = names.get(key) ?? oldNames.get(key);
        const cfg = plan.peers.find((c) => c.publicKey === key);
        this.#log.debug(
          `agent: peer=${verb} id=${p?.id ?? "?"} name=${JSON.stringify(p?.name ?? "")} key=${key}` +
            (cfg ? ` endpoint=${cfg.endpoint ? `${cfg.endpoint.address}:${cfg.endpoint.port}` : "none"} allowed_ips=${cfg.allowedIps.join(",")}` : ""),
        );
      }
    }
    // A3 set
    const changed = diff.added.length + diff.removed.length + diff.changed.length > 0;
    if (changed || !this.#peersSetOnce) {
      await this.#o.dataplane.setPeers(plan.peers);
      this.#peersSetOnce = true;
      this.#peers = plan.peers;
    }
    // A4 hooks
    for (const [i, hook] of this.#hooks.entries()) {
      try {
        await hook(netmap, { revision, source, previous });
      } catch (err) {
        this.#log.error(`agent: hook=${i} failed revision=${revision} error=${JSON.stringify((err as Error).message ?? String(err))}`);
      }
    }
    this.#applied = { update, source, at: this.#o.now() };
    // A5 save
    if (source === "server") {
      try {
        writeSavedNetMap(this.#o.stateDir, { serverUrl: self.serverUrl, revision, savedAt: this.#o.now(), netmap }, this.#log);
      } catch (err) {
        this.#log.warn(`agent: netmap save failed error=${JSON.stringify((err as Error).message)}`);
      }
    }
    const gatewayRoutes = netmap.routes.length;
    this.#log.info(
      `agent: netmap applied revision=${revision} source=${source} active=${netmap.self.active} peers=${plan.peers.length} ` +
        `added=${diff.added.length} removed=${diff.removed.length} changed=${diff.changed.length} unchanged=${diff.unchanged.length} ` +
        `routes=${gatewayRoutes} gateway=${netmap.self.gateway ? netmap.self.gateway.subnets.map((s) => s.prefix).join(",") || "yes" : "no"}`,
    );
    this.#o.onApplied?.(update, source);
  }

  /** The report body now (discovery runs first). */
  async buildReport(): Promise<AgentReport> {
    try {
      this.#discovered = await this.#o.discoverSubnets();
    } catch (err) {
      this.#log.warn(`agent: discovery failed error=${JSON.stringify((err as Error).message)}`);
    }
    const subnets = reportableSubnets(this.#discovered, this.#o.identity.enrolment.network);
    const endpoints = [...new Set(this.#discovered.filter((d) => !d.address.includes(":")).map((d) => `${d.address}:${this.#o.listenPort}`))].sort();
    return { listenPort: this.#o.listenPort, endpoints, discoveredSubnets: subnets, agentVersion: this.#o.version.slice(0, 64), os: this.#o.os.slice(0, 64) };
  }

  /** Sends a report when it differs from the last one sent or `force`; returns whether it sent. */
  async reportNow(force = false): Promise<boolean> {
    const report = await this.buildReport();
    const text = JSON.stringify(report);
    if (!force && text === this.#lastReport) return false;
    try {
      await this.#o.client.report(report);
      const changed = text !== this.#lastReport;
      this.#lastReport = text;
      this.#lastReportAt = this.#o.now();
      this.#reportError = null;
      this.#log.info(
        `agent: report sent reason=${changed ? "changed" : "interval"} subnets=${report.discoveredSubnets.join(",") || "none"} endpoints=${report.endpoints.join(",") || "none"}`,
      );
      return true;
    } catch (err) {
      this.#reportError = (err as Error).message ?? String(err);
      this.#log.warn(`agent: report failed error=${JSON.stringify(this.#reportError)}`);
      return false;
    }
  }

  async #reportLoop(signal: AbortSignal): Promise<void> {
    const every = this.#o.reportIntervalMs ?? 60_000;
    const check = this.#o.discoverIntervalMs ?? 30_000;
    let attempt = 0;
    while (!signal.aborted) {
      const due = this.#o.now() - this.#lastReportAt >= every;
      const sent = await this.reportNow(due);
      // A failed report is retried sooner (the control plane may just be restarting).
      const failed = this.#reportError !== null;
      attempt = failed ? attempt + 1 : 0;
      if (!sent && failed) this.#lastReport = null;
      const wait = failed ? Math.min(check, 1000 * 2 ** Math.min(attempt, 5)) : Math.min(check, every);
      await this.#o.sleep(wait, signal).catch(() => {});
    }
  }

  async #dropLoop(signal: AbortSignal, every: number): Promise<void> {
    while (!signal.aborted) {
      await this.#o.sleep(every, signal).catch(() => {});
      if (signal.aborted) break;
      await this.logDropsNow();
    }
  }

  /** One drop-logging poll (see the module comment); the `-v 5` loop calls it every interval. */
  async logDropsNow(): Promise<void> {
    const stats = await this.#o.dataplane.stats().catch(() => null);
    if (!stats) return;
    this.#logRecentDrops(stats);
    const lines: [string, Record<string, number | undefined>][] = [["device", stats.drops], ...stats.peers.map((p) => [p.publicKey, p.drops] as [string, Record<string, number | undefined>])];
    for (const [who, drops] of lines) {
      for (const [reason, count] of Object.entries(drops)) {
        const key = `${who}/${reason}`;
        const before = Number(this.#lastDrops.get(key) ?? 0);
        if (count !== undefined && count > before) {
          this.#log.debug(`agent: drop reason=${reason} ${who === "device" ? "scope=device" : `peer=${who}`} new=${count - before} total=${count}`);
          this.#lastDrops.set(key, String(count));
        }
      }
    }
  }

  #logRecentDrops(stats: DeviceStats): void {
    const recent = stats.recentDrops;
    if (recent === undefined) return;
    // A sequence number behind ours: the data plane was restarted, its log begins again.
    if (recent.seq < this.#lastDropSeq) this.#lastDropSeq = 0;
    const last = this.#lastDropSeq;
    if (recent.seq === last) return;
    const fresh = recent.entries.filter((e) => e.seq > last);
    const lost = (fresh.length > 0 ? fresh[0]!.seq : recent.seq + 1) - (last + 1);
    if (lost > 0) this.#log.debug(`dataplane: drop lost=${lost} since_seq=${last}`);
    const ids = new Map((this.netmap?.peers ?? []).map((p) => [p.publicKey, p.id]));
    for (const e of fresh) this.#log.debug(dropLine(e, ids));
    this.#lastDropSeq = recent.seq;
  }

  /** What `waygate status` shows (never the private key). */
  async status(): Promise<AgentStatus> {
    const stats = await this.#o.dataplane.stats().catch(() => null);
    return buildStatus({
      now: this.#o.now(),
      running: true,
      version: this.#o.version,
      identity: publicIdentity(this.#o.identity),
      interfaceName: this.#o.interfaceName,
      listenPort: this.#o.listenPort,
      netmap: this.#applied ? { revision: this.#applied.update.revision, netmap: this.#applied.update.netmap, source: this.#applied.source, appliedAt: this.#applied.at } : null,
      stats,
      sync: this.sync,
      discoveredSubnets: reportableSubnets(this.#discovered, this.#o.identity.enrolment.network),
      lastReportAt: Number.isFinite(this.#lastReportAt) ? this.#lastReportAt : null,
      reportError: this.#reportError,
    });
  }
}

/** One drop as a key=value line (`dataplane: drop reason=...`); peers by their system id when known. */
export function dropLine(e: DropEntry, ids: ReadonlyMap<string, string> = new Map()): string {
  const parts = [`dataplane: drop reason=${e.reason}`];
  if (e.peer !== null) parts.push(`peer=${ids.get(e.peer) ?? e.peer}`);
  if (e.ipVersion !== 0) {
    const dst = e.dstPort === null ? e.dst : e.ipVersion === 6 ? `[${e.dst}]:${e.dstPort}` : `${e.dst}:${e.dstPort}`;
    parts.push(`proto=${protoName(e.proto)}`, `src=${e.src}`, `dst=${dst}`);
  }
  if (e.from !== null) parts.push(`from=${e.from}`);
  parts.push(`len=${e.len}`);
  return parts.join(" ");
}

export type { NetMapPeer };
