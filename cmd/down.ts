/**
 * @module cmd/down
 * `waygate down <iface|file.conf>`: asks the `waygate up` running that interface to stop over its
 * control socket and waits until it has removed its routes, TUN and socket. A config path names
 * the interface the way `up` does (wg0.conf -> wg0). A stale socket (the `up` process died) is
 * removed and reported as "not up" (E_PLATFORM).
 */
import { defineCommand } from "citty";
import { existsSync } from "node:fs";
import { WaygateError } from "../core/errors.ts";
import { controlRequest, runDirOf, socketPath } from "../platform/linux/control.ts";
import { checkInterfaceName } from "../platform/linux/wg-quick.ts";
import { interfaceNameFor } from "./up.ts";

export interface DownCommandData {
  out?: (text: string) => void;
  env?: Record<string, string | undefined>;
}

export default defineCommand({
  meta: {
    name: "down",
    description: "Stop an interface started by waygate up and wait until it is gone. Example: waygate down wg0",
  },
  args: {
    target: { type: "positional", description: "Interface name, or the config file it was started from", valueHint: "IFACE|FILE.conf", required: true },
    timeout: { type: "string", description: "Seconds to wait for the interface to go (default 15)", valueHint: "SECONDS" },
  },
  async run({ args, data }) {
    const injected = (data ?? {}) as DownCommandData;
    const out = injected.out ?? ((t: string) => process.stdout.write(t));
    const runDir = runDirOf(injected.env ?? process.env);
    const target = String(args.target);
    const iface = checkInterfaceName(target.endsWith(".conf") || target.includes("/") ? interfaceNameFor(target) : target);
    const timeoutS = args.timeout === undefined ? 15 : Number(args.timeout);
    if (!Number.isFinite(timeoutS) || timeoutS <= 0) throw new WaygateError("E_USAGE", `--timeout must be a number of seconds > 0, got ${JSON.stringify(args.timeout)}`);
    const path = socketPath(runDir, iface);
    const replies = await controlRequest(path, { op: "down" }, { iface, timeoutMs: timeoutS * 1000, done: (r) => r.stopped === true });
    const stopped = replies.some((r) => r.stopped === true) || !existsSync(path);
    if (!stopped) throw new WaygateError("E_PLATFORM", `interface ${iface}: waygate up hung up before confirming it stopped`);
    out(`interface: ${iface} down\n`);
  },
});
