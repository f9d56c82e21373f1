/**
 * @module scripts/rig/netns
 * The network-namespace rig used by the e2e tests, the demo and the benches. Everything a rig
 * creates carries its run's unique prefix (`wg` + 6 random hex chars by default): namespaces
 * are `<prefix>-<short>`, links `<prefix><short>` (≤ 15 chars, checked). Traffic stays inside
 * the rig: namespaces are joined only by veth pairs created directly inside them, nothing is
 * moved out of the host's namespace and no route leads out of the rig.
 *
 * Teardown is paired with set-up: `destroy()` stops the processes the rig spawned (by PID),
 * kills whatever else still runs inside its namespaces (`ip netns pids`), deletes the
 * namespaces (which deletes their veths and TUNs) and any link with the prefix left in the
 * host namespace. A marker file /run/waygate-rig/<prefix> holds the owner's PID, so
 * `cleanupDeadRigs()` (run by every createRig) removes what a crashed run left behind without
 * touching rigs of live processes; `cleanupStale(prefix)` removes one run's leftovers.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { WaygateError } from "../../core/errors.ts";
import { type Logger, silentLogger } from "../../core/log.ts";
import type { CommandResult, CommandRunner, RunOptions } from "../../core/runner.ts";
import { execRunner } from "../../platform/exec.ts";

export const MARKER_DIR = "/run/waygate-rig";
const MAX_LINK = 15;

export class RigError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_PLATFORM", message, options);
  }
}

export interface RigOptions {
  /** Unique per run; default `wg` + 6 random hex chars. */
  prefix?: string;
  runner?: CommandRunner;
  logger?: Logger;
}

export interface VethEnd {
  /** Full namespace name (as returned by addNamespace). */
  ns: string;
  /** Link name; default `<prefix><ns short>` + a counter. Must start with the prefix. */
  name?: string;
  /** CIDR addresses, e.g. "10.77.1.1/24". */
  addresses?: readonly string[];
  mtu?: number;
}

export interface SpawnOptions {
  env?: Record<string, string>;
  stdin?: "pipe" | "ignore" | "inherit";
  stdout?: "pipe" | "ignore" | "inherit";
  stderr?: "pipe" | "ignore" | "inherit";
}

export interface RigProcess {
  readonly pid: number;
  readonly ns: string;
  readonly argv: readonly string[];
  readonly subprocess: Subprocess<"pipe" | "ignore" | "inherit", "pipe" | "ignore" | "inherit", "pipe" | "ignore" | "inherit">;
  /** Exit status (128 + signal when killed). */
  readonly exited: Promise<number>;
  /** SIGTERM, then SIGKILL after `graceMs` (default 2 s); resolves with the exit status. */
  stop(graceMs?: number): Promise<number>;
}

export interface Rig {
  readonly prefix: string;
  readonly runner: CommandRunner;
  readonly namespaces: readonly string[];
  /** The full namespace name for a short one. */
  nsName(short: string): string;
  /** A link name carrying the prefix; throws past 15 chars. */
  linkName(short: string): string;
  /** Creates `<prefix>-<short>` with lo up; returns the full name. */
  addNamespace(short: string): Promise<string>;
  /** A veth pair between two namespaces, created inside them, addressed and up. */
  addVeth(a: VethEnd, b: VethEnd): Promise<[string, string]>;
  exec(ns: string, argv: readonly string[], options?: RunOptions): Promise<CommandResult>;
  /** A CommandRunner whose commands run inside `ns`. */
  runnerIn(ns: string): CommandRunner;
  sysctl(ns: string, key: string, value: string | number): Promise<void>;
  /** A background process inside `ns`; tracked and stopped by destroy(). */
  spawn(ns: string, argv: readonly string[], options?: SpawnOptions): RigProcess;
  /** Removes everything with this run's prefix. Safe to call twice. */
  destroy(): Promise<void>;
}

export function randomPrefix(): string {
  return `wg${randomBytes(3).toString("hex")}`;
}

export async function createRig(options: RigOptions = {}): Promise<Rig> {
  const prefix = options.prefix ?? randomPrefix();
  if (!/^[a-z][a-z0-9]{1,9}$/.test(prefix)) throw new RigError(`rig prefix ${JSON.stringify(prefix)} must be 2-10 chars of [a-z0-9]`);
  const logger = options.logger ?? silentLogger;
  const runner = options.runner ?? execRunner({ logger });
  await cleanupDeadRigs({ runner, logger });
  mkdirSync(MARKER_DIR, { recursive: true });
  writeFileSync(`${MARKER_DIR}/${prefix}`, `${process.pid}\n`);

  const namespaces: string[] = [];
  const processes = new Set<RigProcess>();
  let vethCount = 0;
  let destroyed = false;

  const nsArgv = (ns: string, argv: readonly string[]) => ["ip", "netns", "exec", ns, ...argv];
  const own = (ns: string) => {
    if (!namespaces.includes(ns)) throw new RigError(`namespace ${ns} is not part of rig ${prefix}`);
  };

  const rig: Rig = {
    prefix,
    runner,
    namespaces,
    nsName: (short) => `${prefix}-${short}`,
    linkName(short) {
      const name = `${prefix}${short}`;
      if (name.length > MAX_LINK) throw new RigError(`link name ${name} is longer than ${MAX_LINK} chars`);
      return name;
    },
    async addNamespace(short) {
      if (destroyed) throw new RigError(`rig ${prefix} is destroyed`);
      const ns = rig.nsName(short);
      await runner.run(["ip", "netns", "add", ns]);
      namespaces.push(ns);
      await runner.run(["ip", "-n", ns, "link", "set", "dev", "lo", "up"]);
      return ns;
    },
    async addVeth(a, b) {
      own(a.ns);
      own(b.ns);
      const n = vethCount++;
      const nameA = a.name ?? rig.linkName(`v${n}a`);
      const nameB = b.name ?? rig.linkName(`v${n}b`);
      for (const name of [nameA, nameB]) {
        if (!name.startsWith(prefix) || name.length > MAX_LINK) throw new RigError(`link name ${name} must start with ${prefix} and be ≤ ${MAX_LINK} chars`);
      }
      // Created directly inside both namespaces: the pair never exists in the host namespace.
      await runner.run(["ip", "link", "add", nameA, "netns", a.ns, "type", "veth", "peer", "name", nameB, "netns", b.ns]);
      for (const [end, name] of [[a, nameA], [b, nameB]] as const) {
        if (end.mtu !== undefined) await runner.run(["ip", "-n", end.ns, "link", "set", "dev", name, "mtu", String(end.mtu)]);
        for (const addr of end.addresses ?? []) await runner.run(["ip", "-n", end.ns, "addr", "add", addr, "dev", name]);
        await runner.run(["ip", "-n", end.ns, "link", "set", "dev", name, "up"]);
      }
      return [nameA, nameB];
    },
    async exec(ns, argv, runOptions) {
      own(ns);
      return runner.run(nsArgv(ns, argv), runOptions);
    },
    runnerIn(ns) {
      own(ns);
      return { run: (argv, runOptions) => runner.run(nsArgv(ns, argv), runOptions) };
    },
    async sysctl(ns, key, value) {
      own(ns);
      await runner.run(nsArgv(ns, ["sysctl", "-q", "-w", `${key}=${value}`]));
    },
    spawn(ns, argv, spawnOptions = {}) {
      own(ns);
      const full = nsArgv(ns, argv);
      logger.debug(`rig: spawn ns=${ns} argv=${argv.join(" ")}`);
      const subprocess = Bun.spawn(full, {
        env: { ...process.env, LC_ALL: "C", ...spawnOptions.env },
        stdin: spawnOptions.stdin ?? "ignore",
        stdout: spawnOptions.stdout ?? "pipe",
        stderr: spawnOptions.stderr ?? "pipe",
      });
      const exited = subprocess.exited.then(() => exitStatus(subprocess));
      const proc: RigProcess = {
        pid: subprocess.pid,
        ns,
        argv,
        subprocess,
        exited,
        async stop(graceMs = 2000) {
          if (subprocess.exitCode === null && subprocess.signalCode === null) {
            killPid(subprocess.pid, "SIGTERM");
            const t = await Promise.race([exited, Bun.sleep(graceMs).then(() => null)]);
            if (t === null) killPid(subprocess.pid, "SIGKILL");
          }
          const status = await exited;
          processes.delete(proc);
          return status;
        },
      };
      processes.add(proc);
      void exited.then(() => processes.delete(proc));
      return proc;
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      await Promise.all([...processes].map((p) => p.stop(1000).catch(() => 0)));
      await removeRigResources(prefix, runner, logger);
    },
  };
  return rig;
}

function exitStatus(p: Subprocess): number {
  if (p.exitCode !== null) return p.exitCode;
  return 128 + (p.signalCode ? (SIGNALS[p.signalCode] ?? 0) : 0);
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGABRT: 6, SIGKILL: 9, SIGSEGV: 11, SIGTERM: 15 };

function killPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/** Everything carrying `prefix`: processes in its namespaces, the namespaces, host-side links. */
async function removeRigResources(prefix: string, runner: CommandRunner, logger: Logger): Promise<void> {
  const list = await runner.run(["ip", "netns", "list"], { allowFailure: true });
  const names = list.stdout
    .split("\n")
    .map((l) => l.trim().split(/\s+/)[0] ?? "")
    .filter((n) => n.startsWith(`${prefix}-`));
  for (const ns of names) {
    // Only processes inside this run's own namespace: started (directly or not) by this rig.
    const pids = await runner.run(["ip", "netns", "pids", ns], { allowFailure: true });
    const alive = pids.stdout.split(/\s+/).filter((p) => /^\d+$/.test(p)).map(Number);
    for (const pid of alive) killPid(pid, "SIGKILL");
    if (alive.length > 0) {
      logger.debug(`rig: killed pids=${alive.join(",")} ns=${ns}`);
      await Bun.sleep(50);
    }
    await runner.run(["ip", "netns", "del", ns], { allowFailure: true });
  }
  const links = await runner.run(["ip", "-o", "link", "show"], { allowFailure: true });
  for (const line of links.stdout.split("\n")) {
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m?.[1]?.startsWith(prefix)) await runner.run(["ip", "link", "del", "dev", m[1]], { allowFailure: true });
  }
  rmSync(`${MARKER_DIR}/${prefix}`, { force: true });
}

/** Removes one run's leftovers (namespaces, their processes, host-side links, marker). */
export async function cleanupStale(prefix: string, deps: { runner?: CommandRunner; logger?: Logger } = {}): Promise<void> {
  if (!/^[a-z][a-z0-9]{1,9}$/.test(prefix)) throw new RigError(`refusing to clean up with prefix ${JSON.stringify(prefix)}`);
  await removeRigResources(prefix, deps.runner ?? execRunner(), deps.logger ?? silentLogger);
}

/** Cleans up the rigs whose owning process (per its marker file) is no longer alive. */
export async function cleanupDeadRigs(deps: { runner?: CommandRunner; logger?: Logger } = {}): Promise<string[]> {
  let entries: string[];
  try {
    entries = readdirSync(MARKER_DIR);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const prefix of entries) {
    let owner = 0;
    try {
      owner = Number.parseInt(readFileSync(`${MARKER_DIR}/${prefix}`, "utf8"), 10);
    } catch {
      continue;
    }
    if (owner > 0 && isAlive(owner)) continue;
    (deps.logger ?? silentLogger).info(`rig: cleanup stale prefix=${prefix} owner=${owner}`);
    await cleanupStale(prefix, deps);
    removed.push(prefix);
  }
  return removed;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Reads lines from a spawned process's piped stdout (or stderr) stream. */
export function lineReader(stream: ReadableStream<Uint8Array>): { next(timeoutMs?: number): Promise<string> } {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let ended = false;
  let pendingRead: Promise<{ done: boolean; value?: Uint8Array }> | undefined;
  return {
    async next(timeoutMs = 10_000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const nl = buffer.indexOf("\n");
        if (nl >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          return line;
        }
        if (ended) throw new RigError(`stream ended before a full line (got ${JSON.stringify(buffer)})`);
        const left = deadline - Date.now();
        if (left <= 0) throw new RigError(`no line within ${timeoutMs} ms (got ${JSON.stringify(buffer)})`);
        let timer: Timer | undefined;
        // A read that loses the race stays pending and is awaited next time: no chunk is lost.
        pendingRead ??= reader.read();
        const r = await Promise.race([
          pendingRead,
          new Promise<null>((res) => {
            timer = setTimeout(() => res(null), left);
          }),
        ]).finally(() => clearTimeout(timer));
        if (r === null) continue;
        pendingRead = undefined;
        if (r.done) ended = true;
        else buffer += decoder.decode(r.value, { stream: true });
      }
    },
  };
}
