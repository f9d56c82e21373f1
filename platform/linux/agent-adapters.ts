/**
 * @module platform/linux/agent-adapters
 * `startLinuxAgent`: what `waygate run` (and the agent half of `waygate serve --standalone`)
 * does on Linux, each change to the OS paired with its removal:
 *
 *   1. claim the control socket <stateDir>/agent.sock (platform/linux/control.ts, mode 0600):
 *      refuses when an agent already runs on this state directory;
 *   2. start the data-plane host (platform/linux/host.ts) with the production Device engine
 *      (platform/linux/device-engine.ts), no peers yet: creates the TUN, binds the listen port,
 *      `ip addr replace <virtual address>/<network length>`, MTU 1420, up;
 *   3. the Agent (core/agent/agent.ts) with: the dataplane adapter (setPeers as one control
 *      message to the engine, stats from the host), discovery (platform/linux/discover.ts,
 *      excluding the TUN and the overlay network), the control-plane client (signed with
 *      core/control/auth.ts), and one onNetMap hook, the Router (platform/linux/router.ts):
 *      the NetMap's gateway routes onto the TUN (`ip route ... proto 87`, with bypass routes,
 *      allowLanAccess and failClosed: agent-gateway.ts `clientRouterHook`), and the gateway role
 *      (agent-gateway.ts `startGatewayRole`: Device filter, firewall, forwarding, watchdog;
 *      removed again on stop);
 *      With `dns`, the DNS service (platform/linux/agent-dns.ts: stub on the virtual address and
 *      loopback, the gateway forwarder, systemd-resolved registration) is another hook, and its
 *      state is part of `waygate status`;
 *      Failover (platform/linux/agent-failover.ts) is the first hook: the Device chooses a gateway
 *      per routed prefix (probes through the tunnel, in the packet Worker) before the Router puts
 *      the prefix on the TUN; the OS routes never follow health (fail closed). Its status is part
 *      of `waygate status`, and DNS forwards to the gateway it chose (`activeGatewayFor`).
 *      With `reportUnhealthySubnets`, the gateway role's unreachable subnets ride on every report
 *      and a change sends one at once (on by default: see the option);
 *   4. stop(): on a gateway, first every subnet is withdrawn in probe replies and the data plane
 *      kept up `stopGraceMs` (500 ms) so clients move away first (SIGTERM; a SIGKILL is found by
 *      the clients' probes); then agent loops, control socket, gateway role, DNS, routes
 *      (router.set(null)), host (the TUN and its addresses vanish with it). Idempotent.
 *
 * `startLinuxStandalone` is the agent half of `waygate serve --standalone`: core/agent/standalone.ts
 * with these Linux adapters.
 */
import { randomFillSync } from "node:crypto";
import { hostname } from "node:os";
import { Agent, type NetMapHook } from "../../core/agent/agent.ts";
import { type AgentSigner, ControlClient, abortableSleep, type FetchFn, makeAgentSigner } from "../../core/agent/client.ts";
import { type StandaloneAdapters, type StandaloneAgent, startStandaloneAgent } from "../../core/agent/standalone.ts";
import { type Enrolment, type Identity, socketPathIn } from "../../core/agent/state.ts";
import type { Store } from "../../core/store/store.ts";
import type { DeviceStats } from "../../core/dataplane/device.ts";
import type { Logger } from "../../core/log.ts";
import { parseAddress, parsePrefix } from "../../core/net/address.ts";
import type { CommandRunner } from "../../core/runner.ts";
import type { Crypto } from "../../core/wire/crypto.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import type { TimerConfig } from "../../core/wire/timers.ts";
import { execRunner } from "../exec.ts";
import { type AgentDns, type AgentDnsConfig, startAgentDns } from "./agent-dns.ts";
import { type ControlServer, listenControl } from "./control.ts";
import { type AgentFailover, startAgentFailover } from "./agent-failover.ts";
import { type FailoverSettings, parseFailoverSettings, parseUpstreamHosts } from "../../core/agent/failover-config.ts";
import { inboundAcls } from "../../core/agent/acl-config.ts";
import { clientRouterHook, type FirewallSetting, type GatewayRole, startGatewayRole } from "./agent-gateway.ts";
import type { DeviceEngineConfig } from "./device-engine.ts";
import { discoverSubnets } from "./discover.ts";
import { type Host, startHost } from "./host.ts";
import { linuxRouter } from "./router.ts";
import { deviceEngineModule } from "./wg-quick.ts";

export const DEFAULT_AGENT_INTERFACE = "wg-waygate";
export const DEFAULT_AGENT_MTU = 1420;

export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  randomFillSync(out);
  return out;
}

/** A uniform float in [0, 1) from the OS CSPRNG. */
export function randomUnit(): number {
  const b = randomBytes(4);
  return new DataView(b.buffer).getUint32(0) / 2 ** 32;
}

/** The signer for agent requests: the agent's key, the server's public key, a fresh nonce each time. */
export function agentSigner(identity: Identity & { enrolment: Pick<Enrolment, "serverPublicKey"> }, deps: { crypto?: Crypto; now?: () => number } = {}): AgentSigner {
  return makeAgentSigner(
    { privateKey: identity.privateKey, serverPublicKey: identity.enrolment.serverPublicKey },
    { crypto: deps.crypto ?? nobleCrypto(), random: randomBytes, now: deps.now ?? (() => Date.now()) },
  );
}

export function osDescription(): string {
  return `${process.platform}-${process.arch}`;
}

export function defaultHostname(): string {
  return hostname().slice(0, 253) || "waygate";
}

export interface LinuxAgentOptions {
  stateDir: string;
  identity: Identity & { enrolment: Enrolment };
  interfaceName: string;
  listenPort: number;
  logger: Logger;
  version: string;
  runner?: CommandRunner;
  fetch?: FetchFn;
  forceNoble?: boolean;
  timers?: Partial<TimerConfig>;
  reportIntervalMs?: number;
  discoverIntervalMs?: number;
  dropLogIntervalMs?: number;
  /** Install the NetMap's gateway routes on the TUN (default true). */
  routes?: boolean;
  hooks?: NetMapHook[];
  /** The gateway role's firewall backend (`--firewall`; default auto); false: no gateway role. */
  firewall?: FirewallSetting | false;
  /** With a default route through a gateway: keep the local LAN direct (default true). */
  allowLanAccess?: boolean;
  /** With a default route through a gateway: blackhole, not leak, when the tunnel goes. */
  failClosed?: boolean;
  /** Run the DNS stub (and, on a gateway, the forwarder); absent: no DNS. */
  dns?: AgentDnsConfig;
  /** Client failover knobs (preempt, probe timing); default: no preempt, 200 ms probes, 3 misses. */
  failover?: FailoverSettings;
  /** Gateway role: hosts to probe per served subnet (default: link state only). */
  upstreamHosts?: Readonly<Record<string, readonly string[]>>;
  /** Gateway role: how long the data plane stays up after withdrawing, on a graceful stop (default 500 ms). */
  stopGraceMs?: number;
  /**
   * Gateway role: also report unreachable subnets to the control plane (AgentReport.unhealthySubnets),
   * default true. Safe to leave on: the compiler keeps an unhealthy subnet in every NetMap as routes
   * marked withdrawn, so clients keep it on the TUN (fail closed) and their failover treats that
   * gateway as withdrawn for it; the admin sees it in `waygate gateways list`. Clients learn a
   * withdrawal in-band anyway (probe replies); false keeps it in-band only.
   */
  reportUnhealthySubnets?: boolean;
}

export const DEFAULT_STOP_GRACE_MS = 500;

export interface RunningAgent {
  readonly agent: Agent;
  readonly host: Host;
  readonly control: ControlServer;
  readonly interfaceName: string;
  readonly listenPort: number;
  /** Settles when the agent stopped (stop() or `waygate`'s control socket `down`). */
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

export async function startLinuxAgent(o: LinuxAgentOptions): Promise<RunningAgent> {
  const { logger, identity } = o;
  const e = identity.enrolment;
  const runner = o.runner ?? execRunner({ logger });
  const network = parsePrefix(e.network, { mask: true });
  const address = parseAddress(e.virtualAddress);
  if (address.family !== network.family) throw new Error(`virtual address ${e.virtualAddress} is not in network ${e.network}`);

  let agent: Agent | null = null;
  let host: Host | null = null;
  let router: ReturnType<typeof linuxRouter> | null = null;
  let gateway: GatewayRole | null = null;
  let dns: AgentDns | null = null;
  let failover: AgentFailover | null = null;
  let stopping: Promise<void> | null = null;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => {
    resolveDone = r;
  });

  const control = await listenControl(
    socketPathIn(o.stateDir),
    {
      show: async () => {
        if (agent === null) throw new Error("the agent is starting");
        const [status, routes] = await Promise.all([agent.status(), failover?.refresh() ?? null]);
        const upstream = gateway?.status().upstream ?? [];
        return {
          ...status,
          ...(dns !== null ? { dns: dns.status() } : {}),
          failover: routes ?? [],
          ...(upstream.length > 0 ? { upstream } : {}),
        };
      },
      down: () => stop(),
    },
    { logger },
  );

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      // U3 (agent-gateway.ts): clients move away while this data plane still answers them.
      const leaving = gateway?.withdrawAll() ?? 0;
      if (leaving > 0 && host !== null) await Bun.sleep(o.stopGraceMs ?? DEFAULT_STOP_GRACE_MS);
      failover?.stop();
      await agent?.stop().catch((err: unknown) => logger.warn(`agent: stop error=${String(err)}`));
      control.close();
      await gateway?.stop().catch((err: unknown) => logger.warn(`gateway: cleanup failed error=${String(err)}`));
      await dns?.stop().catch((err: unknown) => logger.warn(`dns: stop failed error=${String(err)}`));
      if (router !== null) await router.set(null).catch((err: unknown) => logger.warn(`router: cleanup failed error=${String(err)}`));
      await host?.stop();
      logger.info(`agent: down interface=${o.interfaceName}`);
      resolveDone();
    })();
    return stopping;
  };

  try {
    const failoverSettings = parseFailoverSettings(o.failover ?? {});
    const upstreamHosts = parseUpstreamHosts(o.upstreamHosts);
    const engineConfig: DeviceEngineConfig = {
      privateKey: identity.privateKey,
      peers: [],
      mtu: DEFAULT_AGENT_MTU,
      forceNoble: o.forceNoble === true,
      ...(o.timers ? { timers: o.timers } : {}),
      ...(address.family === 4 ? { probeSource: address.text } : {}),
      failover: failoverSettings,
    };
    host = await startHost(
      {
        tunName: o.interfaceName,
        listenPort: o.listenPort,
        engineModule: deviceEngineModule(),
        engineConfig,
        link: { addresses: [`${address.text}/${network.length}`], mtu: DEFAULT_AGENT_MTU, up: true },
      },
      { logger, runner },
    );
    const h = host;
    const hooks = [...(o.hooks ?? [])];
    const fo = startAgentFailover({ engineControl: (m) => h.control(m), engineStats: async () => (await h.stats()).engine, logger });
    failover = fo;
    if (o.routes !== false) {
      const tunnel = { interfaceName: h.tunName, addresses: [`${address.text}/${network.length}`] };
      router = linuxRouter({ runner, logger, tunnel });
      hooks.unshift(
        clientRouterHook({
          router,
          tunnel,
          serverUrl: e.serverUrl,
          logger,
          ...(o.allowLanAccess !== undefined ? { allowLanAccess: o.allowLanAccess } : {}),
          ...(o.failClosed !== undefined ? { failClosed: o.failClosed } : {}),
        }),
      );
    }
    // The Device selects a gateway before the OS routes a prefix to the TUN.
    hooks.unshift(fo.hook);
    // First of all: the Device enforces the NetMap's inbound rules (direct policies) before any
    // route or firewall change lets traffic flow. Sent only when they change.
    let inboundJson = "";
    hooks.unshift(async (netmap) => {
      const rules = inboundAcls(netmap);
      const json = JSON.stringify(rules);
      if (json === inboundJson) return;
      await h.control({ type: "setInboundRules", rules });
      inboundJson = json;
    });
    if (o.firewall !== false) {
      gateway = await startGatewayRole({
        runner,
        logger,
        stateDir: o.stateDir,
        tunnelInterface: h.tunName,
        engineControl: (m) => h.control(m),
        firewall: o.firewall ?? "auto",
        upstreamHosts,
        // U2: the control plane learns at once, not at the next periodic report.
        ...(o.reportUnhealthySubnets !== false ? { onUnhealthyChange: () => void agent?.reportNow(true) } : {}),
      });
      hooks.push(gateway.hook);
    }
    if (o.dns !== undefined) {
      dns = await startAgentDns({
        ...o.dns,
        activeGatewayFor: o.dns.activeGatewayFor ?? fo.activeGatewayFor,
        virtualAddress: address.text,
        interfaceName: h.tunName,
        logger,
        runner,
        now: () => Date.now(),
      });
      hooks.push(dns.hook);
    }
    const client = new ControlClient({ serverUrl: e.serverUrl, fetch: o.fetch ?? ((u, i) => fetch(u, i)), logger, signer: agentSigner(identity) });
    const role = o.reportUnhealthySubnets !== false ? gateway : null;
    agent = new Agent({
      identity,
      stateDir: o.stateDir,
      client: {
        stream: (options) => client.stream(options),
        // Gateways: the subnets they cannot reach (withdrawn until reported healthy again).
        report: (report) => client.report(role !== null ? { ...report, unhealthySubnets: role.unhealthy() } : report),
      },
      dataplane: {
        setPeers: (peers) => h.control({ type: "setPeers", peers }),
        stats: async () => ((await h.stats()).engine as DeviceStats | null) ?? null,
      },
      discoverSubnets: () => discoverSubnets(runner, { excludeInterfaces: [h.tunName], excludePrefixes: [e.network], logger }),
      logger,
      now: () => Date.now(),
      sleep: abortableSleep,
      random: randomUnit,
      interfaceName: h.tunName,
      listenPort: h.listenPort,
      version: o.version,
      os: osDescription(),
      hooks,
      ...(o.reportIntervalMs !== undefined ? { reportIntervalMs: o.reportIntervalMs } : {}),
      ...(o.discoverIntervalMs !== undefined ? { discoverIntervalMs: o.discoverIntervalMs } : {}),
      ...(o.dropLogIntervalMs !== undefined ? { dropLogIntervalMs: o.dropLogIntervalMs } : {}),
    });
    agent.start();
    void h.done.catch((err: unknown) => {
      logger.error(`agent: data plane failed error=${String(err)}`);
      void stop();
    });
  } catch (err) {
    await stop();
    throw err;
  }
  const a = agent!;
  const h = host!;
  return { agent: a, host: h, control, interfaceName: h.tunName, listenPort: h.listenPort, done, stop };
}

export interface LinuxStandaloneOptions {
  /** The control plane's URL (ControlServer.url). */
  serverUrl: string;
  store: Store;
  adminToken?: string;
  /** The agent's state directory (cmd/serve.ts: <server state dir>/agent). */
  stateDir: string;
  /** The server's overlay network. */
  network: string;
  logger: Logger;
  version: string;
  interfaceName?: string;
  listenPort?: number;
  runner?: CommandRunner;
  out?: (text: string) => void;
  forceNoble?: boolean;
  /** `serve --firewall` (default auto). */
  firewall?: FirewallSetting;
  /** The agent's DNS (LinuxAgentOptions.dns). */
  dns?: AgentDnsConfig;
}

/** The adapters core/agent/standalone.ts needs, on Linux. */
export function linuxStandaloneAdapters(o: LinuxStandaloneOptions): StandaloneAdapters {
  const runner = o.runner ?? execRunner({ logger: o.logger });
  const iface = o.interfaceName ?? DEFAULT_AGENT_INTERFACE;
  return {
    discoverSubnets: (network) => discoverSubnets(runner, { excludeInterfaces: [iface], excludePrefixes: [network], logger: o.logger }),
    startAgent: async (identity, stateDir) =>
      startLinuxAgent({
        stateDir,
        identity,
        interfaceName: iface,
        listenPort: o.listenPort ?? 51820,
        logger: o.logger,
        version: o.version,
        runner,
        forceNoble: o.forceNoble === true,
        ...(o.firewall !== undefined ? { firewall: o.firewall } : {}),
        ...(o.dns !== undefined ? { dns: o.dns } : {}),
      }),
    fetch: (u, i) => fetch(u, i),
    crypto: nobleCrypto(),
    random: randomBytes,
    hostname: defaultHostname(),
    os: osDescription(),
    version: o.version,
    out: o.out ?? ((t) => process.stdout.write(t)),
  };
}

/**
 * `waygate serve --standalone`'s agent: call after createControlServer (and after
 * ensureJitWorkaround, which the data plane needs at process start).
 */
export function startLinuxStandalone(o: LinuxStandaloneOptions): Promise<StandaloneAgent> {
  return startStandaloneAgent({
    serverUrl: o.serverUrl,
    store: o.store,
    ...(o.adminToken !== undefined ? { adminToken: o.adminToken } : {}),
    stateDir: o.stateDir,
    logger: o.logger,
    now: () => Date.now(),
    network: o.network,
    adapters: linuxStandaloneAdapters(o),
  });
}
