/**
 * @module cmd/serve
 * `waygate serve`: the control plane (core/control/server.ts) over the embedded SQLite store.
 * The first start creates the server's key pair and an admin token; the token is printed once
 * (stdout) and only its SHA-256 is stored. With `--admin-token-file F` the token comes from F,
 * or, when F does not exist yet, is generated and written there (0600) for scripts.
 * `--standalone` also runs an agent in this process that is a gateway for the subnets this
 * machine is on (platform/linux/agent-adapters.ts, loaded only then), with the agent's DNS (stub,
 * and the gateway forwarder over `--resolv-conf` / `--hosts-file`; `--no-dns` turns it off; see
 * cmd/run.ts).
 *
 * `--firewall auto|iptables|nftables` picks the standalone gateway's firewall backend (cmd/run.ts).
 *
 * Tests run it in-process with `runCommand(cmd, { rawArgs, data: { out, logger, onListening } })`
 * and stop it through the handle passed to `onListening`.
 */
import { defineCommand } from "citty";
import { createConsola } from "consola";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import * as v from "valibot";
import { DNS_ARGS, dnsSettingsFrom } from "../core/agent/dns-config.ts";
import { parseFirewallSetting } from "../core/agent/gateway-config.ts";
import { createControlServer, type ControlServer } from "../core/control/server.ts";
import { WaygateError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import { DEFAULT_NETWORK, PrefixTextSchema } from "../core/policy/model.ts";
import { DB_FILE_NAME, defaultStateDir } from "../core/store/paths.ts";
import { openSqliteStore } from "../core/store/sqlite.ts";
import { waygateVersion } from "./version.ts";

export class ServeUsageError extends WaygateError {
  constructor(message: string) {
    super("E_USAGE", message);
  }
}

export interface ServeCommandData {
  out?: (text: string) => void;
  logger?: Logger;
  env?: Record<string, string | undefined>;
  /** Called once listening; tests stop the server through it. */
  onListening?: (server: ControlServer & { close(): Promise<void> }) => void;
  /** Force the pure-JS crypto (tests). */
  noble?: boolean;
}

/** "host:port", "[v6]:port" or ":port" (all interfaces). */
export function parseListen(text: string): { hostname: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port > 65535) throw new ServeUsageError(`--listen ${JSON.stringify(text)}: expected HOST:PORT, e.g. 0.0.0.0:7070 or [::]:7070`);
  const hostname = m[1] ?? (m[2] === "" ? "0.0.0.0" : m[2]!);
  return { hostname, port };
}

function readTokenFile(path: string): string {
  const token = readFileSync(path, "utf8").trim();
  if (!/^[\x21-\x7e]{16,512}$/.test(token)) {
    throw new ServeUsageError(`--admin-token-file ${path}: the token must be 16-512 printable characters without spaces`);
  }
  return token;
}

export default defineCommand({
  meta: {
    name: "serve",
    description:
      "Run the control plane: admin API, enrolment and NetMap streaming over HTTP(S). " +
      "The first start prints the admin token once. Example: waygate serve --listen 0.0.0.0:7070",
  },
  args: {
    listen: { type: "string", description: "Address and port to listen on", default: "0.0.0.0:7070", valueHint: "HOST:PORT" },
    db: { type: "string", description: "Policy store (SQLite); default <state dir>/waygate.db", valueHint: "PATH" },
    "state-dir": { type: "string", description: "State directory (default /var/lib/waygate as root, else ~/.local/state/waygate)", valueHint: "DIR" },
    "tls-cert": { type: "string", description: "Serve HTTPS with this PEM certificate (needs --tls-key)", valueHint: "FILE" },
    "tls-key": { type: "string", description: "PEM private key for --tls-cert", valueHint: "FILE" },
    "admin-token-file": { type: "string", description: "Read the admin token from FILE, or write the new one there (0600) if FILE is absent", valueHint: "FILE" },
    network: { type: "string", description: `Overlay network for a new database (default ${DEFAULT_NETWORK})`, valueHint: "CIDR" },
    standalone: { type: "boolean", description: "Also run an agent here, a gateway for this machine's subnets (Linux, root)", default: false },
    firewall: { type: "string", description: "--standalone: the gateway's firewall backend, auto (detect), iptables or nftables", valueHint: "auto|iptables|nftables" },
    ...DNS_ARGS,
  },
  async run({ args, data }) {
    const injected = (data ?? {}) as ServeCommandData;
    const env = injected.env ?? process.env;
    const out = injected.out ?? ((t: string) => process.stdout.write(t));
    const level = Number.parseInt(env.CONSOLA_LEVEL ?? "", 10);
    const logger: Logger =
      injected.logger ?? createConsola({ level: Number.isNaN(level) ? 3 : level, stdout: process.stderr, stderr: process.stderr }).withTag("serve");

    const { hostname, port } = parseListen(String(args.listen));
    const certFile = args["tls-cert"];
    const keyFile = args["tls-key"];
    if ((certFile === undefined) !== (keyFile === undefined)) throw new ServeUsageError("--tls-cert and --tls-key go together");
    let tls: { cert: string; key: string } | undefined;
    if (certFile !== undefined && keyFile !== undefined) {
      try {
        tls = { cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8") };
      } catch (err) {
        throw new ServeUsageError(`cannot read the TLS certificate or key: ${(err as Error).message}`);
      }
    }
    if (args.network !== undefined && !v.is(PrefixTextSchema, args.network)) throw new ServeUsageError(`--network ${args.network} is not a prefix`);
    const dns = dnsSettingsFrom(args, env);
    const firewall = parseFirewallSetting(args.firewall);
    const stateDir = args["state-dir"] ?? defaultStateDir(env, process.getuid?.() ?? 0, homedir());
    const dbPath = args.db ?? join(stateDir, DB_FILE_NAME);

    const tokenFile = args["admin-token-file"];
    let provisioned: string | undefined;
    if (tokenFile !== undefined && existsSync(tokenFile)) provisioned = readTokenFile(tokenFile);
    if (tokenFile !== undefined && provisioned === undefined) {
      // Generated here, so that it exists on disk before anything could print it.
      provisioned = `wga_${randomBytes(32).toString("base64url")}`;
      mkdirSync(dirname(tokenFile), { recursive: true, mode: 0o700 });
      writeFileSync(tokenFile, provisioned + "\n", { mode: 0o600, flag: "wx" });
      out(`Admin token written to ${tokenFile} (mode 0600).\n`);
    }

    if (args.standalone) {
      // The data plane needs a JIT flag set at process start: re-exec (same argv) if missing.
      const jit = await import("../platform/linux/jit.ts").catch(() => null);
      if (jit === null) throw new ServeUsageError("standalone mode not available in this build");
      await jit.ensureJitWorkaround();
    }

    const { selectCrypto } = await import("../platform/crypto/select.ts");
    const crypto = selectCrypto({ logger, forceNoble: injected.noble === true || env.WAYGATE_CRYPTO === "noble" });
    const store = await openSqliteStore(dbPath, { now: () => Date.now(), logger });
    let server: ControlServer;
    try {
      server = await createControlServer({
        store,
        now: () => Date.now(),
        logger,
        crypto,
        random: (n) => new Uint8Array(randomBytes(n)),
        port,
        hostname,
        ...(tls === undefined ? {} : { tls }),
        version: waygateVersion(),
        ...(provisioned === undefined ? {} : { adminToken: provisioned }),
        ...(args.network === undefined ? {} : { network: args.network }),
      });
    } catch (err) {
      store.close();
      throw err;
    }
    const info = server.url;
    const lines = [`Waygate control plane listening on ${info} (database ${dbPath}, overlay ${server.network})`];
    if (server.adminToken !== undefined) {
      lines.push(
        "",
        "Admin token (shown once, only its hash is stored — keep it somewhere safe):",
        `  ${server.adminToken}`,
        "",
      );
    }
    const publicUrl = hostname === "0.0.0.0" || hostname === "::" ? info.replace(/\/\/[^/]+:/, "//<this-host>:") : info;
    lines.push(
      "Enrol a device:",
      `  export WAYGATE_SERVER=${publicUrl} WAYGATE_ADMIN_TOKEN=<admin token>`,
      "  waygate keys create --tag staff --auto-approve      # prints a one-time enrolment key",
      `  waygate enrol --server ${publicUrl} --key <enrolment key>   # on the device`,
      "",
    );
    out(lines.join("\n"));

    let standalone: { stop(): Promise<void> } | null = null;
    if (args.standalone) {
      const mod = await import("../platform/linux/agent-adapters.ts").catch(() => null);
      if (mod === null || typeof mod.startLinuxStandalone !== "function") {
        await server.stop();
        store.close();
        throw new ServeUsageError("standalone mode not available in this build");
      }
      standalone = await mod.startLinuxStandalone({
        serverUrl: server.url,
        store,
        ...(server.adminToken === undefined ? {} : { adminToken: server.adminToken }),
        stateDir: join(stateDir, "agent"),
        network: server.network,
        logger,
        version: waygateVersion(),
        out,
        firewall,
        ...(dns !== null ? { dns } : {}),
      });
    }

    let closing: Promise<void> | null = null;
    let resolveDone!: () => void;
    const done = new Promise<void>((r) => (resolveDone = r));
    const close = () =>
      (closing ??= (async () => {
        await standalone?.stop().catch((err) => logger.warn(`serve: standalone stop failed error=${JSON.stringify(String(err))}`));
        await server.stop();
        store.close();
        resolveDone();
      })());
    injected.onListening?.(Object.assign(Object.create(server) as ControlServer, server, { close }));
    const onSignal = (signal: string) => () => {
      logger.info(`serve: signal=${signal} stopping`);
      void close();
    };
    const handlers = (["SIGINT", "SIGTERM"] as const).map((s) => [s, onSignal(s)] as const);
    for (const [s, h] of handlers) process.on(s, h);
    try {
      await done;
    } finally {
      for (const [s, h] of handlers) process.off(s, h);
    }
  },
});
