/**
 * @module scripts/rig/office
 * The office rig: a laptop on the "internet", an office gateway, and a printer on the office LAN,
 * in network namespaces of one run (scripts/rig/netns.ts: unique prefix, torn down also on
 * failure, nothing routed out of the rig). Used by test/e2e/gateway-office.test.ts and the demo.
 *
 *   laptop ── 198.18.0.0/24 ("internet") ── gateway ── 172.26.0.0/20 (office LAN) ── printer
 *   .2                                      .1 | 172.26.0.1                         172.26.0.250
 *                                                                                   172.26.0.251 (a second LAN host)
 *
 * Options for the default-route case: `laptopBehindRouter` puts the laptop on a LAN of its own
 * (10.20.0.2/24) whose router is the gateway's internet side (10.20.0.1), with a default route
 * through it, so the control plane and the gateway's endpoint (198.18.0.1) are reached through the
 * laptop's default route, as on a real network; `internetHost` adds 203.0.113.10 in the printer's
 * namespace and a default route in the gateway via the printer, standing in for the internet.
 *
 * The printer namespace holds both LAN hosts' addresses (.250, the printer, and .251, another
 * device); listeners bind to one address each, so they are told apart. It routes the overlay
 * (100.64.0.0/10) back via the gateway, as an office router does for NAT off (`returnRoute`).
 *
 * `startGateway()` runs `waygate serve --standalone --listen 198.18.0.1:7070` in the gateway
 * namespace (control plane + gateway agent in one process; `--firewall` when given) and waits
 * for its first gateway apply. `enrolLaptop(tag)` creates the tag and a self-approving key with
 * the admin CLI, enrols the laptop; `startLaptop()` runs `waygate run` there. `grant(...)` adds a
 * gateway access policy. Waygate runs from source (`bun cmd/main.ts`) unless `waygate` names
 * a binary; every waygate process gets BUN_JSC_useOSREntryToDFG=false so it does not re-exec
 * (platform/linux/jit.ts) and its PID is the agent's own: SIGKILL hits the agent, not a wrapper.
 *
 * Helpers: `listen(ns, address, ports)` starts a tiny HTTP server (this file run as a script)
 * answering every request with the source address it sees; `http(ns, url)` fetches with curl
 * (null on failure); `ping`; `status(which)` (`waygate status --json`); `untilLog`.
 *
 * As a script: `bun scripts/rig/office.ts listen ADDRESS PORT [PORT...]` prints "listening" once
 * every port is bound, then answers each HTTP request with the client's address.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Logger, silentLogger } from "../../core/log.ts";
import { createRig, lineReader, type Rig, type RigProcess } from "./netns.ts";

export const INTERNET = { prefix: "198.18.0.0/24", gateway: "198.18.0.1", laptop: "198.18.0.2" } as const;
export const LAN = { prefix: "172.26.0.0/20", gateway: "172.26.0.1", printer: "172.26.0.250", other: "172.26.0.251" } as const;
export const OVERLAY = "100.64.0.0/10";
/** `laptopBehindRouter`: the laptop's own LAN; the gateway's internet side doubles as its router. */
export const LAPTOP_LAN = { prefix: "10.20.0.0/24", router: "10.20.0.1", laptop: "10.20.0.2" } as const;
/** `internetHost`: a host "on the internet" behind the gateway's default route (in the printer's namespace). */
export const INTERNET_HOST = "203.0.113.10";
export const CONTROL_PORT = 7070;
export const SERVER_URL = `http://${INTERNET.gateway}:${CONTROL_PORT}`;

const MAIN = join(import.meta.dir, "..", "..", "cmd", "main.ts");
const SELF = import.meta.path;

export interface OfficeOptions {
  /** `--firewall` for the gateway (default: none given, i.e. auto). */
  firewall?: "auto" | "iptables" | "nftables" | "iptables-legacy" | "iptables-nft";
  /** How to run waygate: default [bun, cmd/main.ts]; or [path to a compiled binary]. */
  waygate?: readonly string[];
  /** The printer routes the overlay back via the gateway (default true). */
  returnRoute?: boolean;
  /** The laptop on its own LAN (10.20.0.0/24) with a default route via the gateway's internet side. */
  laptopBehindRouter?: boolean;
  /** 203.0.113.10 in the printer's namespace, and the gateway's default route via the printer. */
  internetHost?: boolean;
  /** Extra arguments for `waygate serve` and `waygate run`. */
  serveArgs?: readonly string[];
  runArgs?: readonly string[];
  /** Rig prefix (default random). */
  prefix?: string;
  logger?: Logger;
  /** Added to every waygate process's environment. */
  env?: Record<string, string>;
}

export interface LoggedProcess {
  readonly proc: RigProcess;
  /** Every stderr and stdout line with its arrival time (ms). */
  readonly lines: { at: number; text: string; stream: "stdout" | "stderr" }[];
}

export interface Office {
  readonly rig: Rig;
  readonly ns: { laptop: string; gateway: string; printer: string };
  readonly links: { laptopInternet: string; gatewayInternet: string; gatewayLan: string; printerLan: string; laptopTun: string; gatewayTun: string };
  readonly dirs: { root: string; server: string; gatewayAgent: string; laptop: string; tokenFile: string };
  readonly gateway: { id: string; virtualAddress: string; process: LoggedProcess } | null;
  readonly laptop: { id: string; virtualAddress: string; process: LoggedProcess | null } | null;
  /** Runs waygate in a namespace; throws with its output on a non-zero exit. */
  cli(ns: string, args: readonly string[]): Promise<string>;
  /** The admin CLI against the gateway's control plane (runs in the gateway namespace). */
  admin(args: readonly string[]): Promise<string>;
  /** Starts `waygate serve --standalone` in the gateway; resolves after its first gateway apply. */
  startGateway(): Promise<{ id: string; virtualAddress: string; process: LoggedProcess }>;
  /** SIGKILL (or SIGTERM with `graceful`) the gateway process; resolves with its exit status. */
  stopGateway(options?: { graceful?: boolean }): Promise<number>;
  /** Tag, key (auto-approve) and `waygate enrol` on the laptop. */
  enrolLaptop(tag?: string): Promise<{ id: string; virtualAddress: string }>;
  /** `waygate run` on the laptop; resolves once it is up. */
  startLaptop(extraArgs?: readonly string[]): Promise<LoggedProcess>;
  stopLaptop(options?: { graceful?: boolean }): Promise<number>;
  /** `waygate policies add NAME --tag TAG --gateway ID=SUBNETS [--filter F ...]`. */
  grant(name: string, options?: { tag?: string; subnets?: readonly string[]; filters?: readonly string[] }): Promise<void>;
  /** `waygate status --json` of the laptop or the gateway agent. */
  status(which: "laptop" | "gateway"): Promise<any>;
  /** Polls status until `pred` holds. */
  waitStatus(which: "laptop" | "gateway", pred: (s: any) => boolean, timeoutMs?: number): Promise<any>;
  /** The first line matching `re` that arrived at or after `since` (default: any time). */
  untilLog(p: LoggedProcess, re: RegExp, options?: { since?: number; timeoutMs?: number }): Promise<RegExpExecArray>;
  /** A tiny HTTP server in `ns` on `address` answering with the client's address. */
  listen(ns: string, address: string, ports: readonly number[]): Promise<RigProcess>;
  /** curl in `ns`: the body, or null when the connection failed or timed out. */
  http(ns: string, url: string, timeoutMs?: number): Promise<string | null>;
  ping(ns: string, host: string, options?: { source?: string; count?: number; timeoutS?: number }): Promise<boolean>;
  destroy(): Promise<void>;
}

/** Builds the office's namespaces and links (no Waygate process yet). */
export async function createOffice(options: OfficeOptions = {}): Promise<Office> {
  const logger = options.logger ?? silentLogger;
  const rig = await createRig({ ...(options.prefix ? { prefix: options.prefix } : {}), logger });
  const root = mkdtempSync(join(tmpdir(), `waygate-office-${rig.prefix}-`));
  const waygate = options.waygate ?? [process.execPath, MAIN];
  const env = { NO_COLOR: "1", CONSOLA_LEVEL: "3", BUN_JSC_useOSREntryToDFG: "false", ...options.env };
  const dirs = { root, server: join(root, "server"), gatewayAgent: join(root, "server", "agent"), laptop: join(root, "laptop"), tokenFile: join(root, "server", "admin-token") };
  const links = {
    laptopInternet: rig.linkName("li"),
    gatewayInternet: rig.linkName("gi"),
    gatewayLan: rig.linkName("gl"),
    printerLan: rig.linkName("pl"),
    laptopTun: rig.linkName("tl"),
    /** `serve --standalone` names its TUN wg-waygate (inside the gateway's namespace). */
    gatewayTun: "wg-waygate",
  };
  let gateway: Office["gateway"] = null;
  let laptop: { id: string; virtualAddress: string; process: LoggedProcess | null } | null = null;
  try {
    const [laptopNs, gatewayNs, printerNs] = [await rig.addNamespace("lap"), await rig.addNamespace("gw"), await rig.addNamespace("prn")];
    const behind = options.laptopBehindRouter === true;
    await rig.addVeth(
      { ns: laptopNs, name: links.laptopInternet, addresses: [behind ? `${LAPTOP_LAN.laptop}/24` : `${INTERNET.laptop}/24`] },
      { ns: gatewayNs, name: links.gatewayInternet, addresses: [`${INTERNET.gateway}/24`, ...(behind ? [`${LAPTOP_LAN.router}/24`] : [])] },
    );
    if (behind) await rig.exec(laptopNs, ["ip", "route", "add", "default", "via", LAPTOP_LAN.router]);
    await rig.addVeth(
      { ns: gatewayNs, name: links.gatewayLan, addresses: [`${LAN.gateway}/20`] },
      { ns: printerNs, name: links.printerLan, addresses: [`${LAN.printer}/20`, `${LAN.other}/20`] },
    );
    if (options.returnRoute !== false) await rig.exec(printerNs, ["ip", "route", "add", OVERLAY, "via", LAN.gateway]);
    if (options.internetHost === true) {
      await rig.exec(printerNs, ["ip", "addr", "add", `${INTERNET_HOST}/32`, "dev", links.printerLan]);
      await rig.exec(gatewayNs, ["ip", "route", "add", "default", "via", LAN.printer]);
    }
    const ns = { laptop: laptopNs, gateway: gatewayNs, printer: printerNs };

    const spawnLogged = (where: string, args: readonly string[]): LoggedProcess => {
      const proc = rig.spawn(where, [...waygate, ...args], { env, stdout: "pipe", stderr: "pipe" });
      const lines: LoggedProcess["lines"] = [];
      for (const stream of ["stdout", "stderr"] as const) {
        void (async () => {
          const decoder = new TextDecoder();
          let buf = "";
          for await (const chunk of proc.subprocess[stream] as ReadableStream<Uint8Array>) {
            buf += decoder.decode(chunk, { stream: true });
            let nl: number;
            while ((nl = buf.indexOf("\n")) >= 0) {
              const text = buf.slice(0, nl);
              lines.push({ at: Date.now(), text, stream });
              logger.debug(`office: ${where} ${stream}: ${text}`);
              buf = buf.slice(nl + 1);
            }
          }
        })().catch(() => {});
      }
      return { proc, lines };
    };

    const untilLog: Office["untilLog"] = async (p, re, o = {}) => {
      const deadline = Date.now() + (o.timeoutMs ?? 15_000);
      const since = o.since ?? 0;
      for (;;) {
        for (const l of p.lines) {
          if (l.at < since) continue;
          const m = re.exec(l.text);
          if (m) return m;
        }
        if (p.proc.subprocess.exitCode !== null || p.proc.subprocess.signalCode !== null) {
          await Bun.sleep(50);
          const late = p.lines.filter((l) => l.at >= since).map((l) => re.exec(l.text)).find((m) => m !== null);
          if (late) return late;
          throw new Error(`waygate ${p.proc.argv.slice(waygate.length).join(" ")} exited before logging ${re}:\n${tail(p)}`);
        }
        if (Date.now() > deadline) throw new Error(`no line matching ${re} within ${o.timeoutMs ?? 15_000} ms; last lines:\n${tail(p)}`);
        await Bun.sleep(20);
      }
    };

    const cli: Office["cli"] = async (where, args) => {
      const r = await rig.exec(where, ["env", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...waygate, ...args], { allowFailure: true });
      if (r.exitCode !== 0) throw new Error(`waygate ${args.join(" ")} in ${where} exited ${r.exitCode}: ${r.stderr}${r.stdout}`);
      return r.stdout;
    };
    const conn = ["--server", SERVER_URL, "--token-file", dirs.tokenFile];
    const admin: Office["admin"] = (args) => cli(ns.gateway, [...args, ...conn]);
    const statusDir = (which: "laptop" | "gateway") => (which === "laptop" ? dirs.laptop : dirs.gatewayAgent);
    const status: Office["status"] = async (which) => JSON.parse(await cli(which === "laptop" ? ns.laptop : ns.gateway, ["status", "--state-dir", statusDir(which), "--json"]));

    const office: Office = {
      rig,
      ns,
      links,
      dirs,
      get gateway() {
        return gateway;
      },
      get laptop() {
        return laptop;
      },
      cli,
      admin,
      async startGateway() {
        const since = Date.now();
        const p = spawnLogged(ns.gateway, [
          "serve",
          "--standalone",
          "--listen",
          `${INTERNET.gateway}:${CONTROL_PORT}`,
          "--state-dir",
          dirs.server,
          "--admin-token-file",
          dirs.tokenFile,
          ...(options.firewall ? ["--firewall", options.firewall] : []),
          ...(options.serveArgs ?? []),
        ]);
        const m = await untilLog(p, /^standalone: this machine is ([A-Z0-9]{5}) \(([0-9.]+)\), gateway for/, { since, timeoutMs: 25_000 });
        await untilLog(p, /gateway: applied revision=/, { since, timeoutMs: 15_000 });
        gateway = { id: m[1]!, virtualAddress: m[2]!, process: p };
        return gateway;
      },
      async stopGateway(o = {}) {
        if (gateway === null) return 0;
        const p = gateway.process.proc;
        if (!o.graceful) {
          try {
            process.kill(p.pid, "SIGKILL");
          } catch {
            // already gone
          }
        }
        return o.graceful ? p.stop(5000) : p.exited;
      },
      async enrolLaptop(tag = "staff") {
        await admin(["tags", "add", tag]);
        const key = JSON.parse(await admin(["keys", "create", "--tag", tag, "--auto-approve", "--json"])).key as string;
        const out = JSON.parse(await cli(ns.laptop, ["enrol", "--server", SERVER_URL, "--key", key, "--state-dir", dirs.laptop, "--hostname", "laptop", "--json"]));
        laptop = { id: out.systemId, virtualAddress: out.virtualAddress, process: null };
        return { id: out.systemId, virtualAddress: out.virtualAddress };
      },
      async startLaptop(extraArgs = []) {
        if (laptop === null) throw new Error("enrolLaptop() first");
        const since = Date.now();
        const p = spawnLogged(ns.laptop, ["run", "--state-dir", dirs.laptop, "--interface", links.laptopTun, ...(options.runArgs ?? []), ...extraArgs]);
        await untilLog(p, /^agent: \S+ up on /, { since, timeoutMs: 20_000 });
        laptop.process = p;
        return p;
      },
      async stopLaptop(o = {}) {
        const p = laptop?.process?.proc;
        if (!p) return 0;
        if (!o.graceful) {
          try {
            process.kill(p.pid, "SIGKILL");
          } catch {
            // already gone
          }
          return p.exited;
        }
        return p.stop(5000);
      },
      async grant(name, o = {}) {
        if (gateway === null) throw new Error("startGateway() first");
        const subnets = o.subnets ?? [LAN.prefix];
        await admin(["policies", "add", name, "--tag", o.tag ?? "staff", "--gateway", `${gateway.id}=${subnets.join(",")}`, ...(o.filters ?? []).flatMap((f) => ["--filter", f])]);
      },
      status,
      async waitStatus(which, pred, timeoutMs = 10_000) {
        const deadline = Date.now() + timeoutMs;
        let last: any = null;
        for (;;) {
          last = await status(which).catch((err: unknown) => ({ error: String(err) }));
          if (pred(last)) return last;
          if (Date.now() > deadline) throw new Error(`${which} status did not reach the expected state within ${timeoutMs} ms: ${JSON.stringify(last)?.slice(0, 3000)}`);
          await Bun.sleep(150);
        }
      },
      untilLog,
      async listen(where, address, ports) {
        const p = rig.spawn(where, [process.execPath, SELF, "listen", address, ...ports.map(String)]);
        const line = await lineReader(p.subprocess.stdout as ReadableStream<Uint8Array>).next(5000);
        if (line !== "listening") throw new Error(`listener in ${where} said ${JSON.stringify(line)}`);
        return p;
      },
      async http(where, url, timeoutMs = 1500) {
        const r = await rig.exec(where, ["curl", "-sS", "--max-time", String(timeoutMs / 1000), url], { allowFailure: true });
        return r.exitCode === 0 ? r.stdout.trim() : null;
      },
      async ping(where, host, o = {}) {
        const argv = ["ping", "-n", "-q", "-c", String(o.count ?? 1), "-W", String(o.timeoutS ?? 1), ...(o.source ? ["-I", o.source] : []), host];
        return (await rig.exec(where, argv, { allowFailure: true })).exitCode === 0;
      },
      async destroy() {
        await rig.destroy();
        rmSync(root, { recursive: true, force: true });
      },
    };
    return office;
  } catch (err) {
    await rig.destroy();
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
}

function tail(p: LoggedProcess, n = 40): string {
  return p.lines
    .slice(-n)
    .map((l) => l.text)
    .join("\n");
}

/** Runs `body` with a fresh office, destroyed afterwards also when it throws. */
export async function withOffice<T>(options: OfficeOptions, body: (office: Office) => Promise<T>): Promise<T> {
  const office = await createOffice(options);
  try {
    return await body(office);
  } finally {
    await office.destroy();
  }
}

if (import.meta.main) {
  const [mode, address, ...ports] = process.argv.slice(2);
  if (mode !== "listen" || !address || ports.length === 0) {
    console.error("usage: office.ts listen ADDRESS PORT [PORT...]");
    process.exit(64);
  }
  for (const port of ports) {
    Bun.serve({
      hostname: address,
      port: Number(port),
      fetch(req, server) {
        return new Response(`${server.requestIP(req)?.address ?? "?"}\n`);
      },
    });
  }
  console.log("listening");
}
