/**
 * @module platform/linux/host
 * The Linux data-plane host: one PacketEngine driven by one Worker thread that owns a TUN fd
 * and a UDP socket, both through bun:ffi (platform/linux/tun.ts, udp.ts; the loop itself is in
 * host-worker.ts). The main thread only starts, configures, queries and stops it.
 *
 * Why this shape (BUN-NOTES.md, measured on a 2-vCPU box):
 * - TUN: blocking/poll-driven FFI read() moved ~475k pkt/s at ~55% CPU; async fs.read 63k–147k,
 *   createReadStream 52k, and a Worker that postMessage'd each packet 166k. So packets never
 *   cross threads: the engine runs inside the Worker, next to the fds.
 * - UDP: FFI sendmmsg (batch 64) 454k pkt/s vs Bun.udpSocket send 271k–323k; FFI recvmmsg in a
 *   Worker 348k at 43% CPU vs the Bun.udpSocket callback 374k at 96%. So batched FFI syscalls.
 * - A single-threaded Bun.file(fd).stream() + Bun.udpSocket tunnel starved and segfaulted:
 *   the packet loop is a blocking poll(2) loop on its own thread, not event-loop callbacks.
 * - FFI hot loops in Workers stalled or crashed under the default JIT settings in most runs;
 *   `BUN_JSC_useOSREntryToDFG=false` made every run clean. JSC reads it at process start, so
 *   the process must be started with it: the CLI calls ensureJitWorkaround() (platform/linux/
 *   jit.ts), which re-execs itself with the variable set. startHost warns when it is missing.
 * - One Worker for both directions (not the two of DESIGN.md's "Threads"): the engine is one
 *   synchronous object whose state (sessions, timers, endpoints) both directions touch, and a
 *   2-vCPU box leaves the other core to the kernel's softirq work. A split can come later
 *   behind the same startHost API.
 *
 * - With that flag, JSC never OSR-enters optimized code, so a loop that never returns stays
 *   in the baseline tier forever: the worker calls a per-iteration step() instead. Measured
 *   with the forward test engine (scripts/rig/measure-host.ts, 2 vCPUs shared with iperf3):
 *   one big loop 801 Mbit/s TCP / 73k pkt/s; step() per iteration 0.86–1.38 Gbit/s TCP,
 *   77k–126k pkt/s (UDP flood 76k–120k pkt/s per direction; noisy, shared machine).
 *
 * - Offloads (`offloads`, default on; WAYGATE_OFFLOADS=0 turns them off): without them a 1.4 KB
 *   packet cost one TUN read, one sendmmsg slot, one veth traversal, one recvmmsg slot and one
 *   TUN write (which runs the receiving kernel's TCP path inline), and perf put ~54% of the two
 *   threads' cycles in sendmmsg + TUN write at ~57 packets per loop. With them: the TUN carries
 *   a virtio_net_hdr and TCP super-packets (IFF_VNET_HDR + TUNSETOFFLOAD CSUM|TSO4|TSO6), split
 *   in JS (platform/linux/offload.ts); UDP goes out as UDP_SEGMENT messages and comes in as
 *   UDP_GRO buffers (platform/linux/udp.ts); decrypted TCP segments of a flow are coalesced into
 *   one GSO write. Measured (scripts/bench/throughput.ts, 2 vCPUs, iperf3 TCP, shared machine):
 *   ~46 packets per TUN read, ~36 datagrams per UDP message, ~43 packets per TUN write;
 *   on 1.75–3.41 Gbit/s, off 0.60–1.09, wireguard-go 0.38–0.62 in the same runs (ratios to
 *   wireguard-go 4.0–6.0x on, 1.57–1.75x off). The whole box is then CPU-bound: in the Worker threads
 *   ~34% OpenSSL ChaCha20-Poly1305 (plus ~5% of per-packet EVP param lookups: strcmp,
 *   OSSL_PARAM_locate), ~22% kernel, ~19% Bun runtime (FFI calls, copies), ~17% JIT'd JS.
 *
 * Control traffic (engine config, stats, stop) goes over a MessageChannel and an eventfd that
 * wakes the loop's poll(); the Worker pulls messages with receiveMessageOnPort because its loop
 * never returns to the event loop. Nothing crosses threads per packet.
 *
 * The engine is created inside the Worker: `engineModule` (an absolute path or file URL) is
 * imported there and its default export, an EngineFactory, gets `engineConfig` (which must
 * survive structured clone) and { tun, bind, now, logger }. A compiled binary must include the
 * worker and the factory module as extra entry points of `bun build --compile`.
 */
import type { BindWriter, PacketEngine, TunWriter } from "../../core/dataplane/ports.ts";
import { WaygateError } from "../../core/errors.ts";
import { type Logger, silentLogger } from "../../core/log.ts";
import type { Clock, CommandRunner } from "../../core/runner.ts";
import { execRunner } from "../exec.ts";
import { hasJitWorkaround } from "./jit.ts";
import { configureInterface, type InterfaceSettings } from "./link.ts";
import { EFD_CLOEXEC, EFD_NONBLOCK, errno, ffiBuffer, libc, SyscallError } from "./libc.ts";
import type { UdpCounters } from "./udp.ts";

/** A PacketEngine plus the optional hooks the host forwards control traffic to. */
export interface HostedEngine extends PacketEngine {
  /** A control message from the main thread (e.g. `{ type: "config", ... }`). */
  control?(message: unknown): void;
  /** Anything structured-clone-able; returned by Host.stats(). */
  stats?(): unknown;
  close?(): void;
}

export interface EngineDeps {
  tun: TunWriter;
  bind: BindWriter;
  now: Clock;
  logger: Logger;
}

/** The default export of an engine module. */
export type EngineFactory = (config: any, deps: EngineDeps) => HostedEngine | Promise<HostedEngine>;

export interface HostOptions {
  /** TUN device to create (≤ 15 chars); `tun%d` lets the kernel pick. */
  tunName: string;
  /** UDP port; 0 picks an ephemeral one (reported as Host.listenPort). */
  listenPort: number;
  /** Absolute path or file:// URL of a module whose default export is an EngineFactory. */
  engineModule: string;
  /** Passed to the factory; must survive structured clone. */
  engineConfig: unknown;
  /** Packets per TUN read burst and per recvmmsg/sendmmsg (default 64). */
  batchSize?: number;
  /** UDP socket family (default dual-stack). */
  family?: "dual" | "ipv4";
  /** When given, the TUN gets these addresses/MTU and is brought up once the worker is ready. */
  link?: InterfaceSettings;
  /** How long to wait for the worker to open its fds and build the engine (default 10 s). */
  startTimeoutMs?: number;
  /**
   * TUN TSO/GRO (IFF_VNET_HDR + TUNSETOFFLOAD) and UDP GSO/GRO. Default on, unless the
   * environment says WAYGATE_OFFLOADS=0 (benches, bisecting); each part falls back by itself
   * where the kernel refuses, and the worker logs `tun: offloads=on|off reason=...` once.
   */
  offloads?: boolean;
}

export interface HostDeps {
  logger?: Logger;
  runner?: CommandRunner;
}

/** What the offloads did (present when the host was asked for them). */
export interface OffloadCounters {
  /** TUN reads (each may be a super-packet of many `tunRead` packets). */
  tunFrames: number;
  /** TUN writes (each may carry several `tunWritten` packets). */
  tunWrites: number;
  /** Packets that joined another one's TUN write (GRO). */
  merged: number;
  /** TCP segments not coalesced because their checksum was wrong (the kernel drops them). */
  badChecksum: number;
  /** TUN reads refused by the splitter, by reason. */
  splitErrors: Record<string, number>;
}

export interface HostCounters {
  /** IP packets read from the TUN (super-packets count as their segments). */
  tunRead: number;
  /** IP packets written to the TUN (coalesced ones count as their segments). */
  tunWritten: number;
  tunErrors: Record<string, number>;
  engineErrors: number;
  loops: number;
  wakeups: number;
  udp: UdpCounters | null;
  /** "on", or "off reason=..." (TUN offloads). */
  offloads?: string;
  offload?: OffloadCounters;
}

export interface HostStats {
  host: HostCounters;
  engine: unknown;
}

export interface Host {
  readonly tunName: string;
  readonly listenPort: number;
  /** Forwards a message to engine.control (one postMessage, never per packet). */
  control(message: unknown): void;
  stats(): Promise<HostStats>;
  /** Stops the loop, closes the TUN (the device disappears) and the socket. Idempotent. */
  stop(): Promise<HostStats | null>;
  /** Settles when the worker ends: resolves after stop(), rejects when the loop failed. */
  readonly done: Promise<void>;
}

export class HostError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_PLATFORM", message, options);
  }
}

/** @internal Worker protocol. */
export interface WorkerInit {
  tunName: string;
  listenPort: number;
  batchSize: number;
  family: "dual" | "ipv4" | undefined;
  engineModule: string;
  engineConfig: unknown;
  wakeFd: number;
  offloads: boolean;
  port: MessagePort;
}
/** @internal */
export type WorkerRequest = { type: "stop" } | { type: "stats"; id: number } | { type: "control"; message: unknown };
/** @internal */
export type WorkerReply =
  | { type: "ready"; tunName: string; listenPort: number }
  | { type: "error"; message: string; stack?: string }
  | { type: "stats"; id: number; stats: HostStats }
  | { type: "stopped"; stats: HostStats }
  | { type: "log"; level: "debug" | "info" | "warn" | "error"; message: string };

let warnedJit = false;

export async function startHost(options: HostOptions, deps: HostDeps = {}): Promise<Host> {
  const logger = deps.logger ?? silentLogger;
  if (!hasJitWorkaround() && !warnedJit) {
    warnedJit = true;
    logger.warn("host: jit_workaround=missing reason=BUN_JSC_useOSREntryToDFG!=false (start through ensureJitWorkaround)");
  }
  const engineModule = options.engineModule.startsWith("file:") ? options.engineModule : absolute(options.engineModule);

  const wakeFd = libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakeFd < 0) throw new HostError("eventfd for the host worker", { cause: new SyscallError("eventfd", errno(), "") });
  const one = ffiBuffer(8);
  new DataView(one.buffer).setBigUint64(0, 1n, true);
  const wake = () => void libc.write(wakeFd, one, 8);

  const worker = new Worker(new URL("./host-worker.ts", import.meta.url).href);
  const channel = new MessageChannel();
  const init: WorkerInit = {
    tunName: options.tunName,
    listenPort: options.listenPort,
    batchSize: options.batchSize ?? 64,
    family: options.family,
    engineModule,
    engineConfig: options.engineConfig,
    wakeFd,
    offloads: options.offloads ?? process.env.WAYGATE_OFFLOADS !== "0",
    port: channel.port2,
  };

  let resolveReady!: (r: { tunName: string; listenPort: number }) => void;
  let rejectReady!: (e: unknown) => void;
  const ready = new Promise<{ tunName: string; listenPort: number }>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  let resolveDone!: () => void;
  let rejectDone!: (e: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  done.catch(() => {}); // observed through Host.done; not an unhandled rejection by itself
  const pendingStats = new Map<number, (s: HostStats) => void>();
  let nextId = 1;
  let finalStats: HostStats | null = null;
  let failure: HostError | null = null;
  let finished = false;

  const finish = () => {
    if (finished) return;
    finished = true;
    channel.port1.close();
    worker.terminate();
    libc.close(wakeFd);
    for (const resolve of pendingStats.values()) resolve(finalStats ?? emptyStats());
    pendingStats.clear();
    if (failure) rejectDone(failure);
    else resolveDone();
  };

  channel.port1.onmessage = (event) => {
    const msg = event.data as WorkerReply;
    switch (msg.type) {
      case "ready":
        resolveReady(msg);
        break;
      case "log":
        logger[msg.level](msg.message);
        break;
      case "stats":
        pendingStats.get(msg.id)?.(msg.stats);
        pendingStats.delete(msg.id);
        break;
      case "error":
        failure = new HostError(`host ${options.tunName}: ${msg.message}`);
        logger.error(`host: failed tun=${options.tunName} error=${msg.message}`);
        rejectReady(failure);
        break;
      case "stopped":
        finalStats = msg.stats;
        finish();
        break;
    }
  };
  worker.addEventListener("error", (event: Event) => {
    failure ??= new HostError(`host ${options.tunName}: worker error: ${(event as ErrorEvent).message}`);
    rejectReady(failure);
    finish();
  });
  worker.postMessage(init, [channel.port2]);

  const timeoutMs = options.startTimeoutMs ?? 10_000;
  let timer: Timer | undefined;
  const started = await Promise.race([
    ready,
    new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new HostError(`host ${options.tunName}: worker not ready after ${timeoutMs} ms`)), timeoutMs);
    }),
  ])
    .catch(async (err: unknown) => {
      stopWorker();
      await Promise.race([done.catch(() => {}), Bun.sleep(2000)]);
      finish();
      throw err;
    })
    .finally(() => clearTimeout(timer));

  function send(request: WorkerRequest): void {
    if (finished) return;
    channel.port1.postMessage(request);
    wake();
  }
  function stopWorker(): void {
    send({ type: "stop" });
  }

  const host: Host = {
    tunName: started.tunName,
    listenPort: started.listenPort,
    done,
    control(message: unknown): void {
      if (finished) throw new HostError(`host ${started.tunName}: stopped`);
      send({ type: "control", message });
    },
    stats(): Promise<HostStats> {
      if (finished) return Promise.resolve(finalStats ?? emptyStats());
      const id = nextId++;
      const p = new Promise<HostStats>((resolve) => pendingStats.set(id, resolve));
      send({ type: "stats", id });
      return p;
    },
    async stop(): Promise<HostStats | null> {
      if (!finished) {
        stopWorker();
        // The loop sees the wakeup within one poll; a wedged engine gets terminated anyway.
        await Promise.race([done.catch(() => {}), Bun.sleep(3000)]);
        finish();
      }
      return finalStats;
    },
  };

  if (options.link) {
    try {
      await configureInterface(deps.runner ?? execRunner({ logger }), started.tunName, options.link);
    } catch (err) {
      await host.stop();
      throw err;
    }
  }
  return host;
}

function emptyStats(): HostStats {
  return { host: { tunRead: 0, tunWritten: 0, tunErrors: {}, engineErrors: 0, loops: 0, wakeups: 0, udp: null }, engine: null };
}

function absolute(path: string): string {
  if (!path.startsWith("/")) throw new HostError(`engineModule must be an absolute path or file URL, got ${JSON.stringify(path)}`);
  return path;
}
