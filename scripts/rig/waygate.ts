/**
 * @module scripts/rig/waygate
 * `waygate up` as a real subprocess inside a rig namespace, the way a user runs it: a wg-quick
 * style config written to a temp file, `waygate up <file> --interface <if>` (from source, or a
 * compiled binary via `command`), readiness taken from its "interface: ... up" stdout line, and
 * the control socket (platform/linux/control.ts) for `show`. The process is tracked by the rig
 * (stopped by PID on destroy); its config file is removed when it exits.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TimerConfig } from "../../core/wire/timers.ts";
import { controlRequest, DEFAULT_RUN_DIR, socketPath } from "../../platform/linux/control.ts";
import type { ShowData } from "../../platform/linux/wg-quick.ts";
import { lineReader, type Rig, RigError, type RigProcess } from "./netns.ts";

export const WAYGATE_MAIN = join(import.meta.dir, "..", "..", "cmd", "main.ts");

/** The argv prefix that runs waygate from source. */
export function sourceCommand(): string[] {
  return [process.execPath, WAYGATE_MAIN];
}

export interface WaygatePeer {
  publicKey: string;
  presharedKey?: string;
  allowedIps: readonly string[];
  /** "address:port" or "[v6]:port". */
  endpoint?: string;
  persistentKeepalive?: number;
}

export interface WaygateUpOptions {
  /** Interface name; must carry the rig prefix (rig.linkName). */
  ifname: string;
  privateKey: string;
  listenPort?: number;
  addresses: readonly string[];
  mtu?: number;
  peers: readonly WaygatePeer[];
  /** More [Interface] lines, verbatim ("DNS = 10.0.0.53", "Table = off"). */
  interfaceLines?: readonly string[];
  noble?: boolean;
  /** WAYGATE_TEST_TIMERS. */
  timers?: Partial<TimerConfig>;
  /** argv prefix that runs waygate (default: from source). */
  command?: readonly string[];
  /** Extra environment (e.g. an empty BUN_JSC_useOSREntryToDFG to exercise the re-exec). */
  env?: Record<string, string>;
}

export interface WaygateUp {
  readonly ifname: string;
  readonly ns: string;
  readonly process: RigProcess;
  readonly pid: number;
  readonly listenPort: number;
  readonly publicKey: string;
  readonly configFile: string;
  readonly socket: string;
  /** The control socket's `show` answer. */
  show(): Promise<ShowData>;
  /** Runs `waygate <args>` (same command) inside the namespace. */
  cli(args: readonly string[]): Promise<{ exitCode: number; stdout: string; stderr: string }>;
  /** Everything the process wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM (then SIGKILL after the grace), resolves with the exit status. */
  stop(graceMs?: number): Promise<number>;
}

export function wgQuickConfig(options: WaygateUpOptions): string {
  const lines = ["[Interface]", `PrivateKey = ${options.privateKey}`];
  if (options.listenPort !== undefined) lines.push(`ListenPort = ${options.listenPort}`);
  for (const a of options.addresses) lines.push(`Address = ${a}`);
  if (options.mtu !== undefined) lines.push(`MTU = ${options.mtu}`);
  lines.push(...(options.interfaceLines ?? []));
  for (const p of options.peers) {
    lines.push("", "[Peer]", `PublicKey = ${p.publicKey}`);
    if (p.presharedKey) lines.push(`PresharedKey = ${p.presharedKey}`);
    lines.push(`AllowedIPs = ${p.allowedIps.join(", ")}`);
    if (p.endpoint) lines.push(`Endpoint = ${p.endpoint}`);
    if (p.persistentKeepalive !== undefined) lines.push(`PersistentKeepalive = ${p.persistentKeepalive}`);
  }
  return `${lines.join("\n")}\n`;
}

export async function startWaygateUp(rig: Rig, ns: string, options: WaygateUpOptions): Promise<WaygateUp> {
  const { ifname } = options;
  if (!ifname.startsWith(rig.prefix) || ifname.length > 15) throw new RigError(`waygate ifname ${ifname} must carry prefix ${rig.prefix} and be ≤ 15 chars`);
  const dir = mkdtempSync(join(tmpdir(), `${rig.prefix}-`));
  const configFile = join(dir, `${ifname}.conf`);
  writeFileSync(configFile, wgQuickConfig(options), { mode: 0o600 });
  const command = [...(options.command ?? sourceCommand())];
  const env: Record<string, string> = { CONSOLA_LEVEL: "4", NO_COLOR: "1", ...options.env };
  if (options.timers) env.WAYGATE_TEST_TIMERS = JSON.stringify(options.timers);
  const argv = [...command, "up", configFile, "--interface", ifname, ...(options.noble ? ["--noble"] : [])];
  const proc = rig.spawn(ns, argv, { env, stdout: "pipe", stderr: "pipe" });
  void proc.exited.then(() => rmSync(dir, { recursive: true, force: true }));

  let stderrText = "";
  void (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.subprocess.stderr as ReadableStream<Uint8Array>) {
      stderrText += decoder.decode(chunk, { stream: true });
      if (stderrText.length > 4_000_000) stderrText = stderrText.slice(-2_000_000);
    }
  })().catch(() => {});

  const stdout = lineReader(proc.subprocess.stdout as ReadableStream<Uint8Array>);
  let line: string;
  try {
    line = await stdout.next(20_000);
  } catch (err) {
    await proc.stop(500);
    await Bun.sleep(50);
    throw new RigError(`waygate up ${ifname} in ${ns} did not come up: ${stderrText.trim().slice(-3000) || String(err)}`, { cause: err });
  }
  const m = /^interface: (\S+) up, listening port (\d+), public key (\S+)/.exec(line);
  if (!m) {
    await proc.stop(500);
    throw new RigError(`waygate up ${ifname}: unexpected first line ${JSON.stringify(line)}; stderr: ${stderrText.slice(-2000)}`);
  }
  // Keep draining stdout so the final "down" line never blocks the process.
  void (async () => {
    for (;;) await stdout.next(3_600_000);
  })().catch(() => {});

  const runDir = options.env?.WAYGATE_RUN_DIR ?? process.env.WAYGATE_RUN_DIR ?? DEFAULT_RUN_DIR;
  const socket = socketPath(runDir, ifname);
  return {
    ifname,
    ns,
    process: proc,
    pid: proc.pid,
    listenPort: Number(m[2]),
    publicKey: m[3]!,
    configFile,
    socket,
    async show() {
      const [reply] = await controlRequest(socket, { op: "show" }, { iface: ifname });
      return reply!.show as ShowData;
    },
    async cli(args) {
      const r = await rig.exec(ns, [...command, ...args], { allowFailure: true });
      return r;
    },
    stderr: () => stderrText,
    stop: (graceMs) => proc.stop(graceMs ?? 5000),
  };
}

/** Polls `probe` until it returns a value that is not undefined/false, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) throw new RigError(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ""}`);
    await Bun.sleep(everyMs);
  }
}
