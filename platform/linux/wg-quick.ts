/**
 * @module platform/linux/wg-quick
 * What `waygate up <file.conf>` does on Linux, wg-quick style, with every change to the OS paired
 * with its removal:
 *
 *   1. claim the control socket <runDir>/<iface>.sock (platform/linux/control.ts): refuses when
 *      the interface is already up, removes a stale socket from a crashed run;
 *   2. resolve Endpoint host names (node:dns lookup; IP literals are used as they are);
 *   3. start the data-plane host (platform/linux/host.ts) with the production engine
 *      (platform/linux/device-engine.ts): creates the TUN, binds ListenPort (0: the kernel
 *      picks), then `ip addr replace` each Address, `ip link set mtu MTU up` (default 1420);
 *   4. add a route per AllowedIPs prefix to the interface, as wg-quick's add_route: longest
 *      prefixes first, skipped when a route on the interface already matches (e.g. the
 *      Address's own subnet). `Table = off` adds none; `Table = N` puts them in table N.
 *      **A /0 prefix is not routed** (logged as `route: skip`): wg-quick's default-route trick
 *      (fwmark, a separate table, suppress_prefixlength rules) is not implemented; Waygate's
 *      gateway mode does full-tunnel routing through the agent's Router instead;
 *   5. down(): close the socket, delete the routes it added, stop the host (the TUN and with it
 *      its addresses vanish when the fd closes).
 *
 * Not applied, each logged once as a key=value line: DNS (no resolvconf handling), PreUp /
 * PostUp / PreDown / PostDown (no shell hooks), SaveConfig, FwMark.
 */
import { lookup } from "node:dns/promises";
import type { DropCounts } from "../../core/dataplane/device.ts";
import { WaygateError } from "../../core/errors.ts";
import type { Logger } from "../../core/log.ts";
import type { CommandRunner } from "../../core/runner.ts";
import type { TimerConfig } from "../../core/wire/timers.ts";
import { type WgConfig, WgConfigError, wgEndpointHostnames, wgPeerConfigs } from "../../core/wire/wg-config.ts";
import { listenControl, socketPath } from "./control.ts";
import type { DeviceEngineConfig, DeviceEngineStats } from "./device-engine.ts";
import { type Host, type HostCounters, startHost } from "./host.ts";

export const DEFAULT_MTU = 1420;

/** Where the engine module is: beside this file from source, `/$bunfs/root/device-engine.js` compiled. */
export function deviceEngineModule(): string {
  // A compiled binary puts extra entry points flat at /$bunfs/root (scripts/build.ts,
  // --entry-naming=[name].[ext]) and this code inside the main entry there, so the same
  // relative URL works in both cases; Bun maps the .ts name to the embedded .js.
  return new URL("./device-engine.ts", import.meta.url).href;
}

export class InterfaceNameError extends WaygateError {
  constructor(name: string) {
    super("E_USAGE", `interface name ${JSON.stringify(name)} must be 1-15 characters of [A-Za-z0-9_=+.-]`);
  }
}

export function checkInterfaceName(name: string): string {
  if (!/^[A-Za-z0-9_=+.-]{1,15}$/.test(name) || name === "." || name === "..") throw new InterfaceNameError(name);
  return name;
}

export interface RoutePlan {
  /** Prefixes to route to the interface, longest first. */
  add: string[];
  /** Prefixes left out, with why. */
  skipped: { prefix: string; reason: string }[];
  /** Routing table (`ip route ... table T`), or null for main. */
  table: string | null;
}

/** Which AllowedIPs become routes (pure; wg-quick's add_route order and Table handling). */
export function planRoutes(config: WgConfig): RoutePlan {
  const tableText = config.interface.extra.Table?.[0]?.trim();
  const all = [...new Set(config.peers.flatMap((p) => p.allowedIps))];
  if (tableText !== undefined && tableText.toLowerCase() === "off") {
    return { add: [], skipped: all.map((prefix) => ({ prefix, reason: "table-off" })), table: null };
  }
  const table = tableText === undefined || tableText.toLowerCase() === "auto" || tableText === "" ? null : tableText;
  const skipped: RoutePlan["skipped"] = [];
  const add: string[] = [];
  for (const prefix of all) {
    if (prefix.endsWith("/0") && table === null) skipped.push({ prefix, reason: "default-route-not-supported" });
    else add.push(prefix);
  }
  const len = (p: string) => Number(p.slice(p.indexOf("/") + 1));
  add.sort((a, b) => len(b) - len(a) || a.localeCompare(b));
  return { add, skipped, table };
}

const family = (prefix: string) => (prefix.includes(":") ? "-6" : "-4");

/** Adds the planned routes; returns the ones it added (to remove later). */
export async function addRoutes(runner: CommandRunner, iface: string, plan: RoutePlan, logger: Logger): Promise<string[]> {
  const tableArgs = plan.table === null ? [] : ["table", plan.table];
  for (const s of plan.skipped) logger.warn(`route: skip prefix=${s.prefix} reason=${s.reason}`);
  const added: string[] = [];
  for (const prefix of plan.add) {
    const existing = await runner.run(["ip", family(prefix), "route", "show", "dev", iface, "match", prefix, ...tableArgs], { allowFailure: true });
    if (plan.table === null && existing.exitCode === 0 && existing.stdout.trim() !== "") {
      logger.debug(`route: skip prefix=${prefix} reason=already-routed`);
      continue;
    }
    await runner.run(["ip", family(prefix), "route", "add", prefix, "dev", iface, ...tableArgs]);
    added.push(prefix);
    logger.debug(`route: add prefix=${prefix} dev=${iface}${plan.table ? ` table=${plan.table}` : ""}`);
  }
  return added;
}

export async function removeRoutes(runner: CommandRunner, iface: string, added: readonly string[], table: string | null): Promise<void> {
  const tableArgs = table === null ? [] : ["table", table];
  for (const prefix of [...added].reverse()) {
    // The interface may be gone already (which took its routes with it): not an error.
    await runner.run(["ip", family(prefix), "route", "del", prefix, "dev", iface, ...tableArgs], { allowFailure: true });
  }
}

/** `waygate show --json` for one interface. */
export interface ShowPeer {
  publicKey: string;
  presharedKey: boolean;
  /** "address:port" ("[v6]:port"), or null before the peer was heard from / configured. */
  endpoint: string | null;
  allowedIps: string[];
  /** Unix seconds of the latest handshake; 0 when none. */
  latestHandshake: number;
  latestHandshakeMs: number;
  rxBytes: number;
  txBytes: number;
  handshakes: number;
  handshakeInitiations: number;
  /** Seconds; 0 when off. */
  persistentKeepalive: number;
  drops: DropCounts;
}

export interface ShowData {
  interface: string;
  publicKey: string;
  listeningPort: number;
  crypto: string;
  mtu: number;
  addresses: string[];
  peers: ShowPeer[];
  /** Drops not attributable to one peer (malformed datagrams, unknown receivers, ...). */
  drops: DropCounts;
  cookieRepliesSent: number;
  underLoad: boolean;
  host: HostCounters;
  /** When the answer was made (wall-clock ms), for "N seconds ago". */
  now: number;
}

export function formatEndpoint(ep: { address: string; port: number } | null): string | null {
  if (ep === null) return null;
  return ep.address.includes(":") ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`;
}

export interface UpOptions {
  iface: string;
  config: WgConfig;
  /** The config file's name, for messages. */
  file: string;
  runDir: string;
  forceNoble?: boolean;
  timers?: Partial<TimerConfig>;
}

export interface UpDeps {
  logger: Logger;
  runner: CommandRunner;
  now: () => number;
  /** Host name -> address; default node:dns lookup. */
  resolve?: (host: string) => Promise<string>;
}

export interface UpInterface {
  readonly iface: string;
  readonly listenPort: number;
  readonly publicKey: string;
  readonly socket: string;
  show(): Promise<ShowData>;
  /** Removes everything `up` added; idempotent, resolves when done. */
  down(): Promise<void>;
  /** Resolves after down(); rejects when the data plane failed (after tearing down). */
  readonly done: Promise<void>;
}

export class UpError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_PLATFORM", message, options);
  }
}

async function defaultResolve(host: string): Promise<string> {
  return (await lookup(host)).address;
}

export async function upInterface(options: UpOptions, deps: UpDeps): Promise<UpInterface> {
  const { config, file, logger, runner } = { ...options, ...deps };
  const iface = checkInterfaceName(options.iface);

  const resolved = new Map<string, string>();
  for (const host of wgEndpointHostnames(config)) {
    const peer = config.peers.find((p) => p.endpoint?.host === host)!;
    try {
      const address = await (deps.resolve ?? defaultResolve)(host);
      resolved.set(host, address);
      logger.info(`endpoint: resolved host=${host} address=${address}`);
    } catch (cause) {
      throw new WgConfigError(file, peer.line, "Endpoint", `cannot resolve ${JSON.stringify(host)}: ${(cause as Error).message}`, { cause });
    }
  }
  const peers = wgPeerConfigs(config, resolved, file);
  const psk = new Set(config.peers.filter((p) => p.presharedKey !== undefined).map((p) => p.publicKey));
  const extra = config.interface.extra;
  if (config.interface.dns.length > 0) logger.warn(`wg-quick: dns=not-applied servers=${config.interface.dns.join(",")} reason=no-resolvconf-support`);
  for (const key of ["PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig", "FwMark"]) {
    if (extra[key]) logger.warn(`wg-quick: key=${key} applied=no reason=not-supported`);
  }
  const mtu = config.interface.mtu ?? DEFAULT_MTU;
  const plan = planRoutes(config);

  let host: Host | null = null;
  let added: string[] = [];
  let downPromise: Promise<void> | null = null;
  let signalDown!: () => void;
  const downRequested = new Promise<void>((resolve) => {
    signalDown = resolve;
  });
  const path = socketPath(options.runDir, iface);

  const show = async (): Promise<ShowData> => {
    if (host === null) throw new UpError(`${iface} is starting`);
    const stats = await host.stats();
    const engine = stats.engine as DeviceEngineStats | null;
    if (engine === null) throw new UpError(`${iface}: data plane is not running`);
    return {
      interface: iface,
      publicKey: engine.publicKey,
      listeningPort: host.listenPort,
      crypto: engine.crypto,
      mtu,
      addresses: [...config.interface.addresses],
      peers: engine.peers.map((p) => ({
        publicKey: p.publicKey,
        presharedKey: psk.has(p.publicKey),
        endpoint: formatEndpoint(p.endpoint),
        allowedIps: p.allowedIps,
        latestHandshake: Math.floor(p.latestHandshakeMs / 1000),
        latestHandshakeMs: p.latestHandshakeMs,
        rxBytes: p.rxBytes,
        txBytes: p.txBytes,
        handshakes: p.handshakes,
        handshakeInitiations: p.handshakeInitiations,
        persistentKeepalive: p.persistentKeepalive,
        drops: p.drops,
      })),
      drops: engine.drops,
      cookieRepliesSent: engine.cookieRepliesSent,
      underLoad: engine.underLoad,
      host: stats.host,
      now: deps.now(),
    };
  };

  const control = await listenControl(path, { show, down: () => down() }, { logger });
  const down = (): Promise<void> => {
    downPromise ??= (async () => {
      control.close();
      if (host !== null) {
        await removeRoutes(runner, iface, added, plan.table).catch((err: unknown) => logger.warn(`route: remove failed error=${String(err)}`));
        await host.stop();
      }
      logger.info(`up: down iface=${iface}`);
    })();
    signalDown();
    return downPromise;
  };

  const engineConfig: DeviceEngineConfig = {
    privateKey: config.interface.privateKey,
    peers,
    mtu,
    forceNoble: options.forceNoble === true,
    ...(options.timers ? { timers: options.timers } : {}),
  };
  try {
    host = await startHost(
      {
        tunName: iface,
        listenPort: config.interface.listenPort ?? 0,
        engineModule: deviceEngineModule(),
        engineConfig,
        link: { addresses: config.interface.addresses, mtu, up: true },
      },
      { logger, runner },
    );
    added = await addRoutes(runner, iface, plan, logger);
  } catch (err) {
    await down();
    throw err;
  }
  const started = host;
  const first = await show();
  const done = (async () => {
    let failure: unknown = null;
    await Promise.race([
      started.done.catch((err: unknown) => {
        failure = err;
      }),
      downRequested,
    ]);
    await down();
    if (failure !== null) throw failure;
  })();
  done.catch(() => {});
  logger.info(`up: iface=${iface} port=${started.listenPort} public_key=${first.publicKey} peers=${peers.length} routes=${added.length} crypto=${first.crypto}`);
  return {
    iface,
    listenPort: started.listenPort,
    publicKey: first.publicKey,
    socket: path,
    show,
    down,
    done,
  };
}
