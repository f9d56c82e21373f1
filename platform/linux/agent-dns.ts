/**
 * @module platform/linux/agent-dns
 * The agent's DNS on Linux: one service, started by startLinuxAgent after the TUN has its
 * address, fed by a NetMap hook, stopped with the agent.
 *
 *   D1 listen    one server per address (a taken port on one does not stop the other): the
 *                virtual address on `overlayPort` (53: where clients' stubs reach a gateway's
 *                forwarder through the tunnel, and what systemd-resolved is given) and loopback
 *                on `listenPort` (default 53). Logged `dns: listen ... result=ok|failed`.
 *   D2 dispatch  by the query's source address (the Device has already dropped spoofed tunnel
 *                sources): this machine's own (loopback, our virtual address) -> the stub; anyone
 *                else -> the gateway forwarder when this system is an active gateway, otherwise
 *                REFUSED (`refused:not-local`: a client's stub is no open relay for other peers,
 *                which would otherwise resolve with this client's grants).
 *   D3 stub      core/dns/stub.ts over the current NetMap's peers (core/agent/dns-config.ts). Names
 *                outside the zone go to the gateways of `forwardTargets` (`activeGatewayFor`
 *                injected; failover replaces the NetMap default), tried in order: the first
 *                NOERROR answer wins, else the best of NXDOMAIN > REFUSED > anything else; none
 *                answering is SERVFAIL (the stub's). No gateway at all: REFUSED, answered here
 *                (`refused:no-gateway`), since such a client has no grant through any gateway and no
 *                route to one.
 *   D4 forwarder core/dns/forwarder.ts with the NetMap's gatewayRules as policy (swapped on every
 *                NetMap, counters kept), upstreams from `resolvConfPath`, hosts from `hostsPath`
 *                (re-read when their size/mtime change: checked on every NetMap and at most every
 *                5 s on queries). Nameservers that are our own listeners are skipped (logged).
 *   D5 register  systemd-resolved: `resolvectl revert` (crash leftovers), then per-link DNS = the
 *                virtual address (`ADDR:PORT` off port 53, systemd >= 246), domain `~<zone>`; `resolvectl default-route LINK yes` while there
 *                is a gateway to forward to (so other names reach the stub too), `no` otherwise.
 *                Skipped (`reason=other-netns`) when this process is not in PID 1's network
 *                namespace: resolved lives there and cannot see our link (tests, containers).
 *                Without resolved: the manual step is logged once (platform/linux/dns.ts).
 *   D6 stop      servers closed, `resolvectl revert LINK` when we registered. Idempotent.
 */
import { readFileSync, readlinkSync, statSync } from "node:fs";
import {
  type ActiveGatewayFor,
  DEFAULT_ZONE,
  forwardTargets,
  forwarderPolicyFor,
  isLocalQuerier,
  lowestMetricGateway,
  stubPeersFrom,
  usableUpstreams,
} from "../../core/agent/dns-config.ts";
import type { NetMapHook } from "../../core/agent/agent.ts";
import type { DnsStatus } from "../../core/agent/status.ts";
import { decodeHeader, decodeMessage, encodeMessage, formErrFor, makeResponse, RCODE } from "../../core/dns/codec.ts";
import { parseHosts, parseResolvConf, type Hosts } from "../../core/dns/config.ts";
import { DnsFormatError } from "../../core/dns/errors.ts";
import { createGatewayForwarder, type ForwarderPolicy, type GatewayForwarder } from "../../core/dns/forwarder.ts";
import { countInto, type DnsCounters, type QueryFrom } from "../../core/dns/handler.ts";
import { createStub, type StubPeer } from "../../core/dns/stub.ts";
import type { Logger } from "../../core/log.ts";
import type { NetMap } from "../../core/policy/netmap.ts";
import type { CommandRunner } from "../../core/runner.ts";
import { createExchange, type DnsServer, type Exchange, registerWithResolved, startDnsServer, unregister } from "./dns.ts";

export const DEFAULT_RESOLV_CONF = "/etc/resolv.conf";
export const DEFAULT_HOSTS_FILE = "/etc/hosts";
const RELOAD_CHECK_MS = 5000;
/** Gateways tried per forwarded query (each up to `gatewayTimeoutMs`). */
const MAX_GATEWAYS_TRIED = 3;

/** What `waygate run` / `serve --standalone` configure (cmd flags). */
export interface AgentDnsConfig {
  zone?: string;
  resolvConfPath?: string;
  hostsPath?: string;
  /** The loopback listener's port (default 53). */
  listenPort?: number;
  /** The loopback address (default 127.0.0.1); false: none. */
  loopback?: string | false;
  /** Port of the virtual-address listener and of the gateways' forwarders (default 53). */
  overlayPort?: number;
  /** Register with systemd-resolved (default true; see D5). */
  register?: boolean;
  /** The failover controller's choice; default: lowestMetricGateway over the current NetMap. */
  activeGatewayFor?: ActiveGatewayFor;
}

export interface AgentDnsOptions extends AgentDnsConfig {
  virtualAddress: string;
  /** The TUN (systemd-resolved's link). */
  interfaceName: string;
  logger: Logger;
  runner: CommandRunner;
  now: () => number;
  /** Exchange with gateways and upstreams (createExchange by default). */
  exchange?: Exchange;
  /** Per-gateway wait for the stub's forward (default 1500 ms). */
  gatewayTimeoutMs?: number;
  /** For the resolved detection (tests). */
  exists?: (path: string) => boolean;
  /** Whether this process shares PID 1's network namespace (tests inject). */
  inInitNetns?: () => boolean;
}

export interface AgentDns {
  readonly hook: NetMapHook;
  readonly counters: DnsCounters;
  status(): DnsStatus;
  /** The gateway forwarder, when this system is an active gateway (tests). */
  readonly forwarder: GatewayForwarder | null;
  /** D2's dispatch, as the sockets call it (tests call it with any source address). */
  handle(query: Uint8Array, from: QueryFrom): Promise<Uint8Array | null>;
  stop(): Promise<void>;
}

/** Whether /proc/self/ns/net is PID 1's (false when it cannot be told: do not register). */
export function sharesInitNetns(): boolean {
  try {
    return readlinkSync("/proc/self/ns/net") === readlinkSync("/proc/1/ns/net");
  } catch {
    return false;
  }
}

function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/** REFUSED for a query's bytes (FORMERR, or nothing, when they do not decode). */
function refuse(bytes: Uint8Array): Uint8Array | null {
  try {
    const q = decodeMessage(bytes);
    if (q.qr) return null;
    return encodeMessage(makeResponse(q, RCODE.REFUSED));
  } catch (err) {
    if (!(err instanceof DnsFormatError)) throw err;
    return formErrFor(bytes);
  }
}

const RANK: Record<number, number> = { [RCODE.NOERROR]: 0, [RCODE.NXDOMAIN]: 1, [RCODE.REFUSED]: 2 };

function fileKey(path: string): string {
  try {
    const s = statSync(path);
    return `${s.ino}:${s.size}:${s.mtimeMs}`;
  } catch (err) {
    return `missing:${(err as NodeJS.ErrnoException).code ?? "?"}`;
  }
}

export async function startAgentDns(o: AgentDnsOptions): Promise<AgentDns> {
  const { logger, runner } = o;
  const zone = o.zone ?? DEFAULT_ZONE;
  const resolvConfPath = o.resolvConfPath ?? DEFAULT_RESOLV_CONF;
  const hostsPath = o.hostsPath ?? DEFAULT_HOSTS_FILE;
  const overlayPort = o.overlayPort ?? 53;
  const listenPort = o.listenPort ?? 53;
  const loopback = o.loopback === undefined ? "127.0.0.1" : o.loopback;
  const exchange = o.exchange ?? createExchange({ timeoutMs: o.gatewayTimeoutMs ?? 1500, logger });
  const counters: DnsCounters = {};
  const own = [o.virtualAddress];

  let netmap: NetMap | null = null;
  let peers: StubPeer[] = [];
  let policy: ForwarderPolicy | null = null;
  let forwarder: GatewayForwarder | null = null;
  let forwarderInfo: DnsStatus["forwarder"] = null;
  let filesKey = "";
  let lastCheck = Number.NEGATIVE_INFINITY;
  let registration: DnsStatus["registration"] = o.register === false ? "off" : "skipped";
  let defaultRoute: boolean | null = null;
  let stopped = false;
  const servers: DnsServer[] = [];

  const activeGatewayFor: ActiveGatewayFor = (prefix) => {
    if (o.activeGatewayFor) return o.activeGatewayFor(prefix);
    return netmap === null ? null : lowestMetricGateway(netmap)(prefix);
  };
  const targets = () => (netmap === null ? [] : forwardTargets(netmap, activeGatewayFor));

  // D3
  const stub = createStub({
    zone,
    peers: () => peers,
    logger,
    timeoutMs: (o.gatewayTimeoutMs ?? 1500) * MAX_GATEWAYS_TRIED + 500,
    forward: async (query) => {
      const list = targets().slice(0, MAX_GATEWAYS_TRIED);
      if (list.length === 0) {
        countInto(counters, "refused:no-gateway");
        return refuse(query);
      }
      let best: Uint8Array | null = null;
      let bestRank = Number.POSITIVE_INFINITY;
      for (const t of list) {
        let reply: Uint8Array;
        try {
          reply = await exchange(query, hostPort(t.address, overlayPort));
        } catch (err) {
          countInto(counters, "gateway:failed");
          logger.debug(`dns: forward gateway=${t.gatewayId} address=${t.address} result=failed error=${JSON.stringify((err as Error).message)}`);
          continue;
        }
        const rcode = decodeHeader(reply)?.rcode ?? RCODE.SERVFAIL;
        countInto(counters, `gateway:rcode-${rcode}`);
        if (rcode === RCODE.NOERROR) return reply;
        const rank = RANK[rcode] ?? 3;
        if (rank < bestRank) {
          best = reply;
          bestRank = rank;
        }
      }
      return best;
    },
  });

  // D4
  const loadFiles = (): { upstreams: string[]; hosts: Hosts } => {
    let resolvText = "";
    let hostsText = "";
    try {
      resolvText = readFileSync(resolvConfPath, "utf8");
    } catch (err) {
      logger.warn(`dns: forwarder resolv_conf=${resolvConfPath} unreadable error=${JSON.stringify((err as Error).message)} (no upstreams)`);
    }
    try {
      hostsText = readFileSync(hostsPath, "utf8");
    } catch (err) {
      logger.warn(`dns: forwarder hosts=${hostsPath} unreadable error=${JSON.stringify((err as Error).message)}`);
    }
    const resolv = parseResolvConf(resolvText);
    const hosts = parseHosts(hostsText);
    for (const i of resolv.ignored) logger.warn(`dns: forwarder resolv_conf=${resolvConfPath} line=${i.line} ignored reason=${JSON.stringify(i.reason)}`);
    // Our own listeners on the standard port would be asked by ourselves.
    const ownOn53 = [...(overlayPort === 53 ? own : []), ...(loopback !== false && listenPort === 53 ? [loopback] : [])];
    const { upstreams, skipped } = usableUpstreams(resolv.nameservers, ownOn53);
    for (const s of skipped) logger.warn(`dns: forwarder upstream=${s} skipped reason=own-listener`);
    return { upstreams, hosts };
  };

  const delegating: ForwarderPolicy = {
    hasGrant: (q) => policy?.hasGrant(q) ?? false,
    mayReach: (q, a) => policy?.mayReach(q, a) ?? false,
  };

  let forwarderCounters: DnsCounters = {};
  const refreshForwarder = (force: boolean): void => {
    if (policy === null) {
      forwarder = null;
      forwarderInfo = null;
      filesKey = "";
      return;
    }
    lastCheck = o.now();
    const key = `${fileKey(resolvConfPath)}|${fileKey(hostsPath)}`;
    if (!force && forwarder !== null && key === filesKey) return;
    filesKey = key;
    const { upstreams, hosts } = loadFiles();
    // Counters carry over a reload: one running total per service.
    if (forwarder !== null) forwarderCounters = forwarder.counters;
    const next = createGatewayForwarder({ upstreams, hosts, policy: delegating, resolve: exchange, logger });
    Object.assign(next.counters, forwarderCounters);
    forwarder = next;
    forwarderInfo = { upstreams, hostsEntries: hosts.entries.length };
  };

  // D2
  const handler = async (query: Uint8Array, from: QueryFrom): Promise<Uint8Array | null> => {
    if (isLocalQuerier(from.address, own)) return stub.handle(query, from);
    if (policy !== null) {
      if (o.now() - lastCheck >= RELOAD_CHECK_MS) refreshForwarder(false);
      if (forwarder !== null) return forwarder.handle(query, from);
    }
    countInto(counters, "refused:not-local");
    return refuse(query);
  };

  // D1
  const listen: { address: string; port: number }[] = [{ address: o.virtualAddress, port: overlayPort }];
  if (loopback !== false) listen.push({ address: loopback, port: listenPort });
  for (const l of listen) {
    try {
      servers.push(await startDnsServer({ listen: [l], handler, logger }));
    } catch (err) {
      logger.warn(`dns: listen address=${l.address} port=${l.port} result=failed error=${JSON.stringify((err as Error).message)}`);
    }
  }
  const bound = servers.flatMap((s) => s.bound.map((b) => hostPort(b.address, b.port)));
  logger.info(`dns: stub zone=${zone} listen=${bound.join(",") || "none"} resolv_conf=${resolvConfPath} hosts=${hostsPath}`);

  // D5
  const vaddrPort = servers.flatMap((s) => s.bound).find((b) => b.address === o.virtualAddress)?.port;
  const resolvedDeps = { runner, logger, ...(o.exists ? { exists: o.exists } : {}) };
  if (o.register !== false) {
    if (!(o.inInitNetns ?? sharesInitNetns)()) {
      logger.info(`dns: register=skipped reason=other-netns link=${o.interfaceName}`);
    } else if (vaddrPort === undefined) {
      logger.warn(`dns: register=skipped reason=not-listening link=${o.interfaceName}`);
    } else {
      try {
        await unregister({ ...resolvedDeps, link: o.interfaceName });
        const r = await registerWithResolved({ ...resolvedDeps, link: o.interfaceName, dnsServer: vaddrPort === 53 ? o.virtualAddress : hostPort(o.virtualAddress, vaddrPort), domains: [`~${zone}`] });
        registration = r.mode;
      } catch (err) {
        registration = "failed";
        logger.warn(`dns: register=failed link=${o.interfaceName} error=${JSON.stringify((err as Error).message)}`);
      }
    }
  }

  const setDefaultRoute = async (on: boolean): Promise<void> => {
    if (registration !== "resolved" || defaultRoute === on) return;
    defaultRoute = on;
    const r = await runner.run(["resolvectl", "default-route", o.interfaceName, on ? "yes" : "no"], { allowFailure: true });
    logger.info(`dns: default-route link=${o.interfaceName} value=${on ? "yes" : "no"} result=${r.exitCode === 0 ? "ok" : `exit-${r.exitCode}`}`);
  };

  const hook: NetMapHook = async (next) => {
    if (stopped) return;
    netmap = next;
    peers = stubPeersFrom(next);
    const wasGateway = policy !== null;
    policy = forwarderPolicyFor(next);
    refreshForwarder(policy !== null && !wasGateway);
    const t = targets();
    logger.debug(
      `dns: netmap peers=${peers.length} forward_to=${t.map((x) => `${x.gatewayId}@${x.address}`).join(",") || "none"} forwarder=${policy !== null ? "on" : "off"}`,
    );
    await setDefaultRoute(t.length > 0);
  };

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    for (const s of servers) s.close();
    if (registration === "resolved") {
      await unregister({ ...resolvedDeps, link: o.interfaceName }).catch((err: unknown) => logger.warn(`dns: unregister failed error=${JSON.stringify(String(err))}`));
    }
  };

  return {
    hook,
    counters,
    get forwarder() {
      return forwarder;
    },
    handle: handler,
    status: () => ({
      zone,
      listen: bound,
      forwardTo: targets().map((t) => `${t.gatewayId} ${t.address}`),
      forwarder: forwarderInfo ? { upstreams: [...forwarderInfo.upstreams], hostsEntries: forwarderInfo.hostsEntries } : null,
      registration,
    }),
    stop,
  };
}
