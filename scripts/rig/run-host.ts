/**
 * @module scripts/rig/run-host
 * Runs one data-plane host (platform/linux/host.ts) in this process, for rigs that start it
 * inside a network namespace (`ip netns exec <ns> bun scripts/rig/run-host.ts '<json>'`).
 * argv[2] is HostOptions as JSON. Prints one JSON line `{"ready":true,tunName,listenPort}`,
 * then answers stdin lines: `stats` → one JSON line of HostStats; `control <json>` → forwarded
 * to the engine. Stops cleanly on stdin EOF, `stop`, SIGTERM or SIGINT.
 */
import { ensureJitWorkaround } from "../../platform/linux/jit.ts";
import { startHost, type HostOptions } from "../../platform/linux/host.ts";

await ensureJitWorkaround();

const options = JSON.parse(process.argv[2] ?? "{}") as HostOptions;
const logger = {
  debug() {},
  info: (m: string) => process.stderr.write(`${m}\n`),
  warn: (m: string) => process.stderr.write(`${m}\n`),
  error: (m: string) => process.stderr.write(`${m}\n`),
};
const host = await startHost(options, { logger });
// Engine stats may hold bigints (byte counters); JSON has no such type.
const out = (v: unknown) => process.stdout.write(`${JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? Number(x) : x))}\n`);
out({ ready: true, tunName: host.tunName, listenPort: host.listenPort });

let stopping = false;
const stop = async (status: number) => {
  if (stopping) return;
  stopping = true;
  await host.stop();
  process.exit(status);
};
process.on("SIGTERM", () => void stop(0));
process.on("SIGINT", () => void stop(0));
host.done.catch((err: unknown) => {
  process.stderr.write(`run-host: ${String(err)}\n`);
  void stop(1);
});

let pending = "";
for await (const chunk of Bun.stdin.stream()) {
  pending += new TextDecoder().decode(chunk);
  let nl: number;
  while ((nl = pending.indexOf("\n")) >= 0) {
    const line = pending.slice(0, nl).trim();
    pending = pending.slice(nl + 1);
    if (line === "stats") out(await host.stats());
    else if (line === "stop") await stop(0);
    else if (line.startsWith("control ")) host.control(JSON.parse(line.slice(8)));
  }
}
await stop(0);
