/**
 * @module cmd/up
 * `waygate up <file.conf>`: runs one WireGuard-compatible interface from a wg-quick style config
 * in the foreground until SIGINT/SIGTERM or `waygate down`, then removes everything it added.
 * Parses and validates the config first (errors name file, line and key; exit status from the
 * error code), then re-execs with the JIT workaround the data plane needs (platform/linux/jit.ts),
 * then hands over to platform/linux/wg-quick.ts (TUN, addresses, MTU, routes, control socket).
 *
 * The interface is named after the file (wg0.conf -> wg0) unless --interface says otherwise.
 * Endpoint host names are resolved once at start (numeric endpoints are used as they are).
 * WAYGATE_TEST_TIMERS (JSON of core/wire/timers.ts TimerConfig fields) shortens WireGuard's
 * timers: for tests only, logged as a warning. WAYGATE_RUN_DIR moves the control socket.
 */
import { defineCommand } from "citty";
import { createConsola } from "consola";
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { WaygateError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import { DEFAULT_TIMERS, type TimerConfig } from "../core/wire/timers.ts";
import { parseWgConfig } from "../core/wire/wg-config.ts";
import { execRunner } from "../platform/exec.ts";
import { runDirOf } from "../platform/linux/control.ts";
import { ensureJitWorkaround } from "../platform/linux/jit.ts";
import { checkInterfaceName, upInterface } from "../platform/linux/wg-quick.ts";

export class UpUsageError extends WaygateError {
  constructor(message: string) {
    super("E_USAGE", message);
  }
}

export class ConfigReadError extends WaygateError {
  constructor(file: string, cause: unknown) {
    super("E_CONFIG_INVALID", `${file}: cannot read: ${(cause as Error).message ?? String(cause)}`, { cause });
  }
}

/** The interface name for a config path: wg-quick's rule (basename without .conf). */
export function interfaceNameFor(file: string): string {
  return basename(file).replace(/\.conf$/, "");
}

/** WAYGATE_TEST_TIMERS: a JSON object of TimerConfig fields, numbers >= 0. */
export function parseTestTimers(text: string | undefined): Partial<TimerConfig> | undefined {
  if (text === undefined || text.trim() === "") return undefined;
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    throw new UpUsageError(`WAYGATE_TEST_TIMERS is not JSON: ${JSON.stringify(text)}`);
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) throw new UpUsageError("WAYGATE_TEST_TIMERS must be a JSON object");
  const out: Partial<TimerConfig> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (!(k in DEFAULT_TIMERS)) throw new UpUsageError(`WAYGATE_TEST_TIMERS: unknown timer ${JSON.stringify(k)} (known: ${Object.keys(DEFAULT_TIMERS).join(", ")})`);
    if (typeof v !== "number" || !(v >= 0)) throw new UpUsageError(`WAYGATE_TEST_TIMERS: ${k} must be a number >= 0`);
    out[k as keyof TimerConfig] = v;
  }
  return out;
}

export interface UpCommandData {
  out?: (text: string) => void;
  logger?: Logger;
  env?: Record<string, string | undefined>;
}

export default defineCommand({
  meta: {
    name: "up",
    description:
      "Run a WireGuard-compatible tunnel from a wg-quick style config in the foreground (root). " +
      "Stops on Ctrl-C, SIGTERM or waygate down. Example: waygate up /etc/wireguard/wg0.conf",
  },
  args: {
    config: { type: "positional", description: "wg-quick style config file ([Interface] and [Peer] sections)", valueHint: "FILE.conf", required: true },
    interface: { type: "string", description: "Interface name (default: the file name without .conf)", valueHint: "NAME" },
    noble: { type: "boolean", description: "Use the pure-JS @noble crypto even where OpenSSL is available (slower; for comparison)", default: false },
    foreground: { type: "boolean", description: "Stay in the foreground (the only mode; run it under systemd for a service)", default: true },
  },
  async run({ args, data }) {
    const injected = (data ?? {}) as UpCommandData;
    const env = injected.env ?? process.env;
    if (args.foreground === false) throw new UpUsageError("--no-foreground is not supported: waygate up always runs in the foreground (use systemd or & for a background service)");
    const file = String(args.config);
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (cause) {
      throw new ConfigReadError(file, cause);
    }
    const config = parseWgConfig(text, file);
    const iface = checkInterfaceName(typeof args.interface === "string" && args.interface !== "" ? args.interface : interfaceNameFor(file));
    const timers = parseTestTimers(env.WAYGATE_TEST_TIMERS);

    // Everything above fails fast; from here on the data plane runs, which needs the JIT flag
    // set at process start: this re-execs (same argv) and exits with the child's status.
    await ensureJitWorkaround();

    const level = Number.parseInt(env.CONSOLA_LEVEL ?? "", 10);
    const logger: Logger =
      injected.logger ??
      createConsola({ level: Number.isNaN(level) ? 3 : level, stdout: process.stderr, stderr: process.stderr }).withTag(iface);
    const out = injected.out ?? ((t: string) => process.stdout.write(t));
    const up = await upInterface(
      { iface, config, file, runDir: runDirOf(env), forceNoble: args.noble === true, ...(timers ? { timers } : {}) },
      { logger, runner: execRunner({ logger }), now: () => Date.now() },
    );
    out(`interface: ${iface} up, listening port ${up.listenPort}, public key ${up.publicKey} (stop: waygate down ${iface})\n`);

    const onSignal = (signal: string) => () => {
      logger.info(`up: signal=${signal} stopping`);
      void up.down();
    };
    const handlers = (["SIGINT", "SIGTERM", "SIGHUP"] as const).map((s) => [s, onSignal(s)] as const);
    for (const [s, h] of handlers) process.on(s, h);
    try {
      await up.done;
    } finally {
      for (const [s, h] of handlers) process.off(s, h);
    }
    out(`interface: ${iface} down\n`);
  },
});
