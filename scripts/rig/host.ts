/**
 * @module scripts/rig/host
 * Starts a data-plane host (scripts/rig/run-host.ts) as its own Bun process inside a rig
 * namespace, so the host's TUN and UDP socket live there and the process starts with the JIT
 * workaround in effect (BUN-NOTES.md). Talks to it over stdin/stdout JSON lines.
 */
import type { HostOptions, HostStats } from "../../platform/linux/host.ts";
import { JIT_ENV } from "../../platform/linux/jit.ts";
import { lineReader, type Rig, RigError, type RigProcess } from "./netns.ts";

export const RUN_HOST = `${import.meta.dir}/run-host.ts`;

export interface RigHost {
  readonly process: RigProcess;
  readonly tunName: string;
  readonly listenPort: number;
  stats(): Promise<HostStats>;
  control(message: unknown): void;
  /** Asks the host to stop (stdin `stop`), then makes sure by PID; resolves with its status. */
  stop(): Promise<number>;
}

export async function spawnHost(rig: Rig, ns: string, options: HostOptions, spawn: { stderr?: "pipe" | "inherit" | "ignore" } = {}): Promise<RigHost> {
  const proc = rig.spawn(ns, [process.execPath, RUN_HOST, JSON.stringify(options)], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: spawn.stderr ?? "pipe",
    env: { [JIT_ENV]: "false" },
  });
  const stdout = lineReader(proc.subprocess.stdout as ReadableStream<Uint8Array>);
  const stdin = proc.subprocess.stdin as import("bun").FileSink;
  const send = (line: string) => {
    stdin.write(`${line}\n`);
    stdin.flush();
  };
  let ready: { ready: boolean; tunName: string; listenPort: number };
  try {
    ready = JSON.parse(await stdout.next(15_000));
  } catch (err) {
    await proc.stop(500);
    const stderr = proc.subprocess.stderr instanceof ReadableStream ? (await new Response(proc.subprocess.stderr).text()).trim() : "";
    throw new RigError(`host ${options.tunName} in ${ns} did not start: ${stderr || String(err)}`, { cause: err });
  }
  let queue = Promise.resolve<unknown>(undefined);
  return {
    process: proc,
    tunName: ready.tunName,
    listenPort: ready.listenPort,
    stats() {
      // One request at a time: answers come back in order on stdout.
      const p = queue.then(async () => {
        send("stats");
        return JSON.parse(await stdout.next(5000)) as HostStats;
      });
      queue = p.catch(() => undefined);
      return p;
    },
    control(message) {
      send(`control ${JSON.stringify(message)}`);
    },
    async stop() {
      if (proc.subprocess.exitCode === null) {
        try {
          send("stop");
        } catch {
          // stdin already closed
        }
      }
      const t = await Promise.race([proc.exited, Bun.sleep(3000).then(() => null)]);
      return t ?? proc.stop(1000);
    },
  };
}
