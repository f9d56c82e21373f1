/**
 * @module cmd/cleanup
 * `waygate cleanup [--state-dir DIR] [--interface NAME] [--json]` (root): removes everything a
 * Waygate agent may have left in the OS after a crash (SIGKILL, power loss), so the machine is as
 * it was before Waygate started:
 *
 *   1. Waygate's firewall rules on every backend whose tools exist (`cleanupAllBackends`: the
 *      WAYGATE-* chains and their jumps under iptables-legacy and iptables-nft, `table inet waygate`);
 *   2. Waygate's routes (`proto 87` in the main table: tunnel routes, bypass host routes, the
 *      fail-closed blackholes that outlive the TUN);
 *   3. the agent's TUN when one is still there (a TUN only outlives its process when made
 *      persistent, so normally nothing);
 *   4. IP forwarding back to the value from before the gateway's first start, as recorded in
 *      <state-dir>/forwarding.json (also looked for in <state-dir>/agent, the agent directory of
 *      `waygate serve --standalone`), and that file.
 *
 * Refuses while an agent answers on the state directory's control socket: a running agent
 * removes all of this itself on SIGTERM, and pulling its rules from under it would only make its
 * watchdog put them back. Idempotent: a second run prints "nothing to clean up". Each removal is
 * one printed line (or a JSON list with --json).
 */
import { defineCommand } from "citty";
import { createConsola } from "consola";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { agentStateDir, socketPathIn } from "../core/agent/state.ts";
import { WaygateError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import type { CommandRunner } from "../core/runner.ts";
import { routeKey } from "../core/router/router.ts";
import { execRunner } from "../platform/exec.ts";
import { DEFAULT_AGENT_INTERFACE } from "../platform/linux/agent-adapters.ts";
import { forwardingPath, readForwardingState, removeForwardingState } from "../platform/linux/agent-gateway.ts";
import { probeSocket } from "../platform/linux/control.ts";
import { cleanupAllBackends } from "../platform/linux/firewall/index.ts";
import { linuxRouter } from "../platform/linux/router.ts";
import { readSysctl, writeSysctl } from "../platform/linux/sysctl.ts";
import { checkInterfaceName } from "../platform/linux/wg-quick.ts";

export class CleanupRefusedError extends WaygateError {
  constructor(message: string) {
    super("E_USAGE", message);
  }
}

export interface CleanupCommandData {
  out?: (text: string) => void;
  env?: Record<string, string | undefined>;
  runner?: CommandRunner;
  logger?: Logger;
}

export interface CleanupItem {
  kind: "firewall" | "route" | "interface" | "sysctl" | "state";
  detail: string;
}

export interface CleanupOptions {
  stateDir: string;
  interfaceName: string;
  runner: CommandRunner;
  logger: Logger;
}

/** Everything `waygate cleanup` does, returning what it removed or restored. */
export async function cleanupWaygate(o: CleanupOptions): Promise<CleanupItem[]> {
  const { runner, logger } = o;
  const dirs = [o.stateDir, join(o.stateDir, "agent")];
  for (const dir of dirs) {
    if ((await probeSocket(socketPathIn(dir))) === "live") {
      throw new CleanupRefusedError(`an agent is running on ${dir} (${socketPathIn(dir)} answers): stop it instead (SIGTERM, or Ctrl-C); it removes its own rules, routes and TUN`);
    }
  }
  const items: CleanupItem[] = [];
  for (const c of await cleanupAllBackends({ runner, logger })) {
    items.push({ kind: "firewall", detail: `${c.op} ${c.target}${c.detail ? ` (${c.detail})` : ""}` });
  }
  const router = linuxRouter({ runner, logger, tunnel: { interfaceName: o.interfaceName } });
  for (const c of (await router.set(null)).changes) items.push({ kind: "route", detail: `${c.op} ${routeKey(c.route)}` });
  const link = await runner.run(["ip", "-j", "-d", "link", "show", "dev", o.interfaceName], { allowFailure: true });
  if (link.exitCode === 0) {
    let kind = "";
    try {
      kind = String((JSON.parse(link.stdout) as { linkinfo?: { info_kind?: string } }[])[0]?.linkinfo?.info_kind ?? "");
    } catch {
      kind = "";
    }
    if (kind === "tun") {
      await runner.run(["ip", "link", "del", "dev", o.interfaceName]);
      items.push({ kind: "interface", detail: `delete ${o.interfaceName}` });
    } else {
      logger.warn(`cleanup: interface ${o.interfaceName} exists but is not a TUN (kind=${kind || "unknown"}); left alone`);
    }
  }
  for (const dir of dirs) {
    if (!existsSync(forwardingPath(dir))) continue;
    const state = readForwardingState(dir);
    for (const [key, value] of Object.entries(state?.previous ?? {})) {
      if (value === undefined) continue;
      const now = await readSysctl(key, { runner });
      if (now !== value) {
        await writeSysctl(key, value, { runner });
        items.push({ kind: "sysctl", detail: `${key} ${now} -> ${value}` });
      }
    }
    removeForwardingState(dir);
    items.push({ kind: "state", detail: `removed ${forwardingPath(dir)}` });
  }
  return items;
}

export default defineCommand({
  meta: {
    name: "cleanup",
    description:
      "Remove everything a crashed Waygate agent left: firewall rules (every backend), routes (proto 87), its TUN, and restore IP forwarding. Example: waygate cleanup",
  },
  args: {
    "state-dir": { type: "string", description: "Agent state directory (default: <WAYGATE_STATE_DIR or /var/lib/waygate>/agent)", valueHint: "DIR" },
    interface: { type: "string", description: `The agent's TUN name (default ${DEFAULT_AGENT_INTERFACE})`, valueHint: "NAME" },
    json: { type: "boolean", description: "Print what was removed as JSON", default: false },
  },
  async run({ args, data }) {
    const injected = (data ?? {}) as CleanupCommandData;
    const env = injected.env ?? process.env;
    const out = injected.out ?? ((t: string) => process.stdout.write(t));
    const stateDir = agentStateDir(typeof args["state-dir"] === "string" ? args["state-dir"] : undefined, env, process.getuid?.() ?? 0, homedir());
    const interfaceName = checkInterfaceName(typeof args.interface === "string" && args.interface !== "" ? args.interface : DEFAULT_AGENT_INTERFACE);
    const level = Number.parseInt(env.CONSOLA_LEVEL ?? "", 10);
    const logger = injected.logger ?? createConsola({ level: Number.isNaN(level) ? 1 : level, stdout: process.stderr, stderr: process.stderr }).withTag("cleanup");
    const runner = injected.runner ?? execRunner({ logger });
    const items = await cleanupWaygate({ stateDir, interfaceName, runner, logger });
    if (args.json) {
      out(`${JSON.stringify({ removed: items }, null, 2)}\n`);
      return;
    }
    if (items.length === 0) {
      out("cleanup: nothing to clean up\n");
      return;
    }
    for (const i of items) out(`cleanup: ${i.kind} ${i.detail}\n`);
  },
});
