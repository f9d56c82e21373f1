/**
 * @module cmd/run
 * `waygate run [--state-dir DIR] [--interface wg-waygate] [--listen-port N] [-v LEVEL] [--noble]`:
 * the agent in the foreground (root): reads the enrolment (`waygate enrol` first), re-execs with
 * the data plane's JIT workaround, starts the TUN with the virtual address and the network's
 * prefix length, streams NetMaps from the control plane and applies them (peers, gateway
 * routes), reports discovered subnets and endpoints, answers `waygate status` on
 * <state-dir>/agent.sock, and on SIGINT/SIGTERM removes everything it added.
 *
 * DNS (`--dns`, the default; `--no-dns` turns it off): a stub on the virtual address :53 and
 * 127.0.0.1:53 answers peer names in `--dns-zone` (default waygate) and forwards other names
 * through the tunnel to a gateway; when this system is a gateway, its forwarder answers peers from
 * `--resolv-conf` / `--hosts-file` (default $WAYGATE_RESOLV_CONF / $WAYGATE_HOSTS_FILE, else
 * /etc/resolv.conf and /etc/hosts). See platform/linux/agent-dns.ts.
 *
 * Gateway and routes: `--firewall auto|iptables|nftables` picks the gateway's firewall backend
 * (auto: the detector decides, logged once as `firewall: backend=... reason=...`); with a default
 * route through a gateway, `--fail-closed` blackholes traffic while the tunnel is down instead of
 * leaking it, and `--no-allow-lan-access` sends the local LAN through the tunnel too.
 *
 * -v: 0 errors, 1 warnings, 3 info (default), 4 every decision (peer add/change/remove/keep,
 * discovery skips, routes), 5 also every packet drop with its reason (`[dataplane] drop reason=... peer=... src=... dst=...`) plus per-peer drop counters every 5 s.
 * Log lines carry consola tags per component ([agent], [control], [engine], [router], ...).
 */
import { defineCommand } from "citty";
import { createConsola } from "consola";
import { homedir } from "node:os";
import { taggedLogger, verbosityLevel } from "../core/agent/log.ts";
import { DNS_ARGS, dnsSettingsFrom } from "../core/agent/dns-config.ts";
import { agentStateDir, readIdentity, requireEnrolment } from "../core/agent/state.ts";
import { WaygateError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import { DEFAULT_AGENT_INTERFACE, startLinuxAgent } from "../platform/linux/agent-adapters.ts";
import { parseFirewallSetting } from "../core/agent/gateway-config.ts";
import { FailoverSettingsError, parseFailoverSettings, parseUpstreamHosts } from "../core/agent/failover-config.ts";
import { ensureJitWorkaround } from "../platform/linux/jit.ts";
import { checkInterfaceName } from "../platform/linux/wg-quick.ts";
import { waygateVersion } from "./version.ts";

export const DEFAULT_LISTEN_PORT = 51820;

export class RunUsageError extends WaygateError {
  constructor(message: string) {
    super("E_USAGE", message);
  }
}

export interface RunCommandData {
  out?: (text: string) => void;
  logger?: Logger;
  env?: Record<string, string | undefined>;
}

export function parseListenPort(text: unknown): number {
  if (text === undefined || text === "") return DEFAULT_LISTEN_PORT;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new RunUsageError(`--listen-port must be 0..65535 (0: any free port), got ${JSON.stringify(text)}`);
  return n;
}

export default defineCommand({
  meta: {
    name: "run",
    description: "Run the agent in the foreground (root): stream the NetMap from the control plane and apply it. Example: waygate run -v 4",
  },
  args: {
    "state-dir": { type: "string", description: "Agent state directory (default: <WAYGATE_STATE_DIR or /var/lib/waygate>/agent)", valueHint: "DIR" },
    interface: { type: "string", description: `TUN interface name (default ${DEFAULT_AGENT_INTERFACE})`, valueHint: "NAME" },
    "listen-port": { type: "string", description: `UDP port (default ${DEFAULT_LISTEN_PORT}; 0 picks a free one)`, valueHint: "N" },
    verbose: { type: "string", alias: "v", description: "Log level 0-5 (3 info; 4 every decision; 5 also packet drops with reasons)", valueHint: "LEVEL" },
    noble: { type: "boolean", description: "Use the pure-JS @noble crypto even where OpenSSL is available", default: false },
    firewall: { type: "string", description: "Gateway firewall backend: auto (detect), iptables or nftables (default auto)", valueHint: "auto|iptables|nftables" },
    "fail-closed": { type: "boolean", description: "With a default route through a gateway: block, never leak, while the tunnel is down", default: false },
    "allow-lan-access": { type: "boolean", description: "With a default route through a gateway: keep the local LAN direct (--no-allow-lan-access: through the tunnel)", default: true },
    preempt: { type: "boolean", description: "Failover: move back to a better-priority gateway once it has been healthy for 10 s (default: stay while the active one is healthy)", default: false },
    "upstream-host": { type: "string", description: "Gateway: hosts whose reachability keeps a subnet served, SUBNET=HOST[:PORT], comma-separated (default: link state only)", valueHint: "SUBNET=HOST[:PORT],..." },
    "report-unhealthy": { type: "boolean", description: "Gateway: also report subnets it cannot reach to the control plane, so `waygate gateways list` shows them unhealthy (--no-report-unhealthy: clients learn it from probes only)", default: true },
    ...DNS_ARGS,
  },
  async run({ args, data }) {
    const injected = (data ?? {}) as RunCommandData;
    const env = injected.env ?? process.env;
    const out = injected.out ?? ((t: string) => process.stdout.write(t));
    const stateDir = agentStateDir(typeof args["state-dir"] === "string" ? args["state-dir"] : undefined, env, process.getuid?.() ?? 0, homedir());
    const iface = checkInterfaceName(typeof args.interface === "string" && args.interface !== "" ? args.interface : DEFAULT_AGENT_INTERFACE);
    const listenPort = parseListenPort(args["listen-port"]);
    const level = verbosityLevel(typeof args.verbose === "string" ? args.verbose : env.CONSOLA_LEVEL);
    if (Number.isNaN(level)) throw new RunUsageError(`-v must be 0..5, got ${JSON.stringify(args.verbose)}`);
    const dns = dnsSettingsFrom(args, env);
    const firewall = parseFirewallSetting(args.firewall);
    const identity = requireEnrolment(stateDir, readIdentity(stateDir));

    // From here on the data plane runs: it needs the JIT flag set at process start (re-exec).
    await ensureJitWorkaround();

    const logger = injected.logger ?? taggedLogger(createConsola({ level, stdout: process.stderr, stderr: process.stderr }));
    const running = await startLinuxAgent({
      stateDir,
      identity,
      interfaceName: iface,
      listenPort,
      logger,
      version: waygateVersion(),
      forceNoble: args.noble === true,
      firewall,
      failClosed: args["fail-closed"] === true,
      allowLanAccess: args["allow-lan-access"] !== false,
      failover: parseFailoverSettings({ preempt: args.preempt === true }),
      upstreamHosts: upstreamHostsFrom(args["upstream-host"]),
      reportUnhealthySubnets: args["report-unhealthy"] !== false,
      ...(dns !== null ? { dns } : {}),
      ...(level >= 5 ? { dropLogIntervalMs: 5000 } : {}),
    });
    const e = identity.enrolment;
    out(`agent: ${e.systemId} up on ${running.interfaceName} (${e.virtualAddress}, network ${e.network}), listening port ${running.listenPort}, control plane ${e.serverUrl} (status: waygate status${args["state-dir"] ? ` --state-dir ${stateDir}` : ""})\n`);
    const onSignal = (signal: string) => () => {
      logger.info(`agent: signal=${signal} stopping`);
      void running.stop();
    };
    const handlers = (["SIGINT", "SIGTERM", "SIGHUP"] as const).map((s) => [s, onSignal(s)] as const);
    for (const [s, h] of handlers) process.on(s, h);
    try {
      await running.done;
    } finally {
      for (const [s, h] of handlers) process.off(s, h);
    }
    out(`agent: ${running.interfaceName} down\n`);
  },
});

/** `--upstream-host 172.26.0.0/20=172.26.0.10,172.26.0.0/20=172.26.0.11:443` -> per-subnet host lists (validated). */
export function upstreamHostsFrom(flag: string | undefined): Record<string, string[]> {
  const bySubnet: Record<string, string[]> = {};
  for (const item of (flag ?? "").split(",").map((x) => x.trim()).filter(Boolean)) {
    const eq = item.indexOf("=");
    if (eq <= 0 || eq === item.length - 1) throw new FailoverSettingsError(`--upstream-host ${JSON.stringify(item)}: expected SUBNET=HOST[:PORT]`);
    (bySubnet[item.slice(0, eq)] ??= []).push(item.slice(eq + 1));
  }
  return parseUpstreamHosts(bySubnet);
}
