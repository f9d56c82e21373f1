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
 * Two gateways (`secondGateway`, the failover rig: test/e2e/failover.test.ts, scripts/bench/failover.ts):
 *
 *   laptop .2 ──┐                  ┌── gateway A .1 (serve --standalone) ──┐
 *               ├─ "internet" br ──┤                                       ├─ office LAN br ── printer .250/.251
 *               │  198.18.0.0/24   └── gateway B .3 (waygate run) ─────────┘   172.26.0.0/20
 *                                      LAN: A 172.26.0.1, B 172.26.0.2
 *
 * Both segments are bridges in a switch namespace of their own ("sw"), so either gateway can be
 * killed or cut off (`ip link set <gatewayLan|gateway2Lan> down`) without touching the other.
 * `enrolGateway2()` enrols B with a key, allows it as a gateway and adds 172.26.0.0/20 to it by hand
 * (so clients list it before it first reports); `startGateway2()` runs `waygate run` there;
 * `grant(name, { gateways: [A, B] })` grants the subnet through both. `pingMonitor(ns, host)` runs
 * `ping -D -O -i 0.1` and turns its lines into lost replies and the longest gap per time window;
 * `countLeaks(prefix)` counts packets to a prefix leaving the laptop's physical link (an
 * iptables rule in the laptop's namespace: what would have left by its default route).
 *
 * As a script: `bun scripts/rig/office.ts listen ADDRESS PORT [PORT...]` prints "listening" once
 * every port is bound, then answers each HTTP request with the client's address.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Logger, silentLogger } from "../../core/log.ts";
import { createRig, lineReader, type Rig, type RigProcess } from "./netns.ts";

export const INTERNET = { prefix: "198.18.0.0/24", gateway: "198.18.0.1", laptop: "198.18.0.2", gateway2: "198.18.0.3" } as const;
export const LAN = { prefix: "172.26.0.0/20", gateway: "172.26.0.1", gateway2: "172.26.0.2", printer: "172.26.0.250", other: "172.26.0.251" } as const;
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
  /** A second gateway B (`waygate run`) on the same LAN; both segments become bridges (see the module comment). */
  secondGateway?: boolean;
}

/** One reply of `pingMonitor`. */
export interface PingReply {
  seq: number;
  /** When it arrived (ms, ping's -D timestamp). */
  at: number;
}

/** Replies in a time window of a `pingMonitor`. */
export interface PingWindow {
  /** Replies that arrived in the window. */
  received: number;
  /** Sequence numbers between the window's first and last reply that never got one. */
  lost: number;
  /** Longest time between two consecutive replies (by sequence). */
  longestGapMs: number;
  /** The longest gap minus the ping interval: how long nothing got through (0 without loss). */
  outageMs: number;
}

export interface PingMonitor {
  readonly replies: readonly PingReply[];
  readonly intervalMs: number;
  /** The replies that arrived in [from, to] (ms). */
  window(from: number, to?: number): PingWindow;
  stop(): Promise<void>;
}

export interface LoggedProcess {
  readonly proc: RigProcess;
  /** Every stderr and stdout line with its arrival time (ms). */
  readonly lines: { at: number; text: string; stream: "stdout" | "stderr" }[];
}

export interface Office {
  readonly rig: Rig;
  /** `gateway2` (and the switch namespace `sw`) with `secondGateway` only. */
  readonly ns: { laptop: string; gateway: string; printer: string; gateway2?: string; sw?: string };
  readonly links: {
    laptopInternet: string;
    gatewayInternet: string;
    gatewayLan: string;
    printerLan: string;
    laptopTun: string;
    gatewayTun: string;
    gateway2Internet: string;
    gateway2Lan: string;
    gateway2Tun: string;
  };
  readonly dirs: { root: string; server: string; gatewayAgent: string; laptop: string; tokenFile: string; gateway2: string };
  readonly gateway: { id: string; virtualAddress: string; process: LoggedProcess } | null;
  /** Gateway B (`secondGateway`): enrolled by enrolGateway2, process set by startGateway2. */
  readonly gateway2: { id: string; virtualAddress: string; process: LoggedProcess | null } | null;
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
  /** Records an enrolment done by hand (`waygate enrol` in the laptop namespace with dirs.laptop), so startLaptop() can run it. */
  adoptLaptop(enrolment: { id: string; virtualAddress: string }): { id: string; virtualAddress: string };
  /** `waygate run` on the laptop; resolves once it is up. */
  startLaptop(extraArgs?: readonly string[]): Promise<LoggedProcess>;
  stopLaptop(options?: { graceful?: boolean }): Promise<number>;
  /** `waygate policies add NAME --tag TAG --gateway ID=SUBNETS [--filter F ...]` (one --gateway per id in `gateways`, default gateway A). */
  grant(name: string, options?: { tag?: string; subnets?: readonly string[]; filters?: readonly string[]; gateways?: readonly string[] }): Promise<void>;
  /** Gateway B: tag, key, `waygate enrol`, `gateways enable`, `gateways subnet-add` of the LAN. */
  enrolGateway2(): Promise<{ id: string; virtualAddress: string }>;
  /** `waygate run` on gateway B; resolves after its first gateway apply. */
  startGateway2(extraArgs?: readonly string[]): Promise<LoggedProcess>;
  /** SIGKILL (or SIGTERM with `graceful`) gateway B; resolves with its exit status. */
  stopGateway2(options?: { graceful?: boolean }): Promise<number>;
  /** `waygate status --json` of the laptop or a gateway agent. */
  status(which: "laptop" | "gateway" | "gateway2"): Promise<any>;
  /** `waygate status` (text). */
  statusText(which: "laptop" | "gateway" | "gateway2"): Promise<string>;
  /** Polls status until `pred` holds. */
  waitStatus(which: "laptop" | "gateway" | "gateway2", pred: (s: any) => boolean, timeoutMs?: number): Promise<any>;
  /** `ping -n -D -O -i <interval>` in `ns` (default 0.1 s: 10 Hz), parsed as it runs. */
  pingMonitor(ns: string, host: string, options?: { intervalS?: number }): Promise<PingMonitor>;
  /** Counts packets to `prefix` leaving the laptop's physical link; returns a reader of the count. */
  countLeaks(prefix: string): Promise<() => Promise<number>>;
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
  const dirs = {
    root,
    server: join(root, "server"),
    gatewayAgent: join(root, "server", "agent"),
    laptop: join(root, "laptop"),
    tokenFile: join(root, "server", "admin-token"),
    gateway2: join(root, "gateway2"),
  };
  const links = {
    laptopInternet: rig.linkName("li"),
    gatewayInternet: rig.linkName("gi"),
    gatewayLan: rig.linkName("gl"),
    printerLan: rig.linkName("pl"),
    laptopTun: rig.linkName("tl"),
    /** `serve --standalone` names its TUN wg-waygate (inside the gateway's namespace). */
    gatewayTun: "wg-waygate",
    gateway2Internet: rig.linkName("g2i"),
    gateway2Lan: rig.linkName("g2l"),
    gateway2Tun: rig.linkName("t2"),
  };
  let gateway: Office["gateway"] = null;
  let gateway2: { id: string; virtualAddress: string; process: LoggedProcess | null } | null = null;
  let laptop: { id: string; virtualAddress: string; process: LoggedProcess | null } | null = null;
  try {
    const [laptopNs, gatewayNs, printerNs] = [await rig.addNamespace("lap"), await rig.addNamespace("gw"), await rig.addNamespace("prn")];
    const behind = options.laptopBehindRouter === true;
    const two = options.secondGateway === true;
    if (two && (behind || options.internetHost === true)) throw new Error("office: secondGateway does not combine with laptopBehindRouter or internetHost");
    let gateway2Ns: string | undefined;
    let swNs: string | undefined;
    if (!two) {
      await rig.addVeth(
        { ns: laptopNs, name: links.laptopInternet, addresses: [behind ? `${LAPTOP_LAN.laptop}/24` : `${INTERNET.laptop}/24`] },
        { ns: gatewayNs, name: links.gatewayInternet, addresses: [`${INTERNET.gateway}/24`, ...(behind ? [`${LAPTOP_LAN.router}/24`] : [])] },
      );
      if (behind) await rig.exec(laptopNs, ["ip", "route", "add", "default", "via", LAPTOP_LAN.router]);
      await rig.addVeth(
        { ns: gatewayNs, name: links.gatewayLan, addresses: [`${LAN.gateway}/20`] },
        { ns: printerNs, name: links.printerLan, addresses: [`${LAN.printer}/20`, `${LAN.other}/20`] },
      );
    } else {
      gateway2Ns = await rig.addNamespace("gw2");
      swNs = await rig.addNamespace("sw");
      const sw = swNs;
      const bridges = { internet: rig.linkName("bi"), lan: rig.linkName("bl") };
      for (const br of Object.values(bridges)) {
        await rig.exec(sw, ["ip", "link", "add", br, "type", "bridge"]);
        await rig.exec(sw, ["ip", "link", "set", br, "up"]);
      }
      const port = async (end: { ns: string; name: string; addresses: string[] }, short: string, bridge: string) => {
        const [, swEnd] = await rig.addVeth(end, { ns: sw, name: rig.linkName(short) });
        await rig.exec(sw, ["ip", "link", "set", swEnd, "master", bridge]);
      };
      await port({ ns: laptopNs, name: links.laptopInternet, addresses: [`${INTERNET.laptop}/24`] }, "sli", bridges.internet);
      await port({ ns: gatewayNs, name: links.gatewayInternet, addresses: [`${INTERNET.gateway}/24`] }, "sgi", bridges.internet);
      await port({ ns: gateway2Ns, name: links.gateway2Internet, addresses: [`${INTERNET.gateway2}/24`] }, "sg2i", bridges.internet);
      await port({ ns: gatewayNs, name: links.gatewayLan, addresses: [`${LAN.gateway}/20`] }, "sgl", bridges.lan);
      await port({ ns: gateway2Ns, name: links.gateway2Lan, addresses: [`${LAN.gateway2}/20`] }, "sg2l", bridges.lan);
      await port({ ns: printerNs, name: links.printerLan, addresses: [`${LAN.printer}/20`, `${LAN.other}/20`] }, "spl", bridges.lan);
    }
    if (options.returnRoute !== false) await rig.exec(printerNs, ["ip", "route", "add", OVERLAY, "via", LAN.gateway]);
    if (options.internetHost === true) {
      await rig.exec(printerNs, ["ip", "addr", "add", `${INTERNET_HOST}/32`, "dev", links.printerLan]);
      await rig.exec(gatewayNs, ["ip", "route", "add", "default", "via", LAN.printer]);
    }
    const ns = { laptop: laptopNs, gateway: gatewayNs, printer: printerNs, ...(gateway2Ns !== undefined ? { gateway2: gateway2Ns, sw: swNs } : {}) };

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
    type Which = "laptop" | "gateway" | "gateway2";
    const statusDir = (which: Which) => (which === "laptop" ? dirs.laptop : which === "gateway" ? dirs.gatewayAgent : dirs.gateway2);
    const statusNs = (which: Which) => {
      const where = which === "laptop" ? ns.laptop : which === "gateway" ? ns.gateway : ns.gateway2;
      if (where === undefined) throw new Error("office: no second gateway (secondGateway: true)");
      return where;
    };
    const status: Office["status"] = async (which) => JSON.parse(await cli(statusNs(which), ["status", "--state-dir", statusDir(which), "--json"]));
    const requireTwo = (): string => {
      if (ns.gateway2 === undefined) throw new Error("office: no second gateway (secondGateway: true)");
      return ns.gateway2;
    };

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
      get gateway2() {
        return gateway2;
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
      adoptLaptop(e) {
        laptop = { id: e.id, virtualAddress: e.virtualAddress, process: null };
        return { id: e.id, virtualAddress: e.virtualAddress };
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
        const ids = o.gateways ?? [gateway.id];
        await admin([
          "policies",
          "add",
          name,
          "--tag",
          o.tag ?? "staff",
          ...ids.flatMap((id) => ["--gateway", `${id}=${subnets.join(",")}`]),
          ...(o.filters ?? []).flatMap((f) => ["--filter", f]),
        ]);
      },
      async enrolGateway2() {
        const where = requireTwo();
        await admin(["tags", "add", "gateways"]);
        const key = JSON.parse(await admin(["keys", "create", "--tag", "gateways", "--auto-approve", "--json"])).key as string;
        const out = JSON.parse(await cli(where, ["enrol", "--server", SERVER_URL, "--key", key, "--state-dir", dirs.gateway2, "--hostname", "gateway-b", "--json"]));
        await admin(["gateways", "enable", out.systemId]);
        await admin(["gateways", "subnet-add", out.systemId, LAN.prefix]);
        gateway2 = { id: out.systemId, virtualAddress: out.virtualAddress, process: null };
        return { id: out.systemId, virtualAddress: out.virtualAddress };
      },
      async startGateway2(extraArgs = []) {
        const where = requireTwo();
        if (gateway2 === null) throw new Error("enrolGateway2() first");
        const since = Date.now();
        const p = spawnLogged(where, [
          "run",
          "--state-dir",
          dirs.gateway2,
          "--interface",
          links.gateway2Tun,
          ...(options.firewall ? ["--firewall", options.firewall] : []),
          ...(options.runArgs ?? []),
          ...extraArgs,
        ]);
        await untilLog(p, /^agent: \S+ up on /, { since, timeoutMs: 20_000 });
        // `run` logs through consola's tags: "[gateway] ℹ applied revision=...".
        await untilLog(p, /(gateway: |\[gateway\] .*)applied revision=/, { since, timeoutMs: 15_000 });
        gateway2.process = p;
        return p;
      },
      async stopGateway2(o = {}) {
        const p = gateway2?.process?.proc;
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
      status,
      async statusText(which) {
        return cli(statusNs(which), ["status", "--state-dir", statusDir(which)]);
      },
      async pingMonitor(where, host, o = {}) {
        const intervalS = o.intervalS ?? 0.1;
        const p = rig.spawn(where, ["ping", "-n", "-D", "-O", "-i", String(intervalS), host], { stdout: "pipe", stderr: "pipe" });
        const replies: PingReply[] = [];
        const reading = (async () => {
          const decoder = new TextDecoder();
          let buf = "";
          for await (const chunk of p.subprocess.stdout as ReadableStream<Uint8Array>) {
            buf += decoder.decode(chunk, { stream: true });
            let nl: number;
            while ((nl = buf.indexOf("\n")) >= 0) {
              const line = buf.slice(0, nl);
              buf = buf.slice(nl + 1);
              const m = /^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)/.exec(line);
              if (m) replies.push({ seq: Number(m[2]), at: Math.round(Number(m[1]) * 1000) });
            }
          }
        })().catch(() => {});
        const intervalMs = intervalS * 1000;
        return {
          replies,
          intervalMs,
          window(from, to = Number.POSITIVE_INFINITY) {
            const rs = replies.filter((r) => r.at >= from && r.at <= to).sort((a, b) => a.seq - b.seq);
            let lost = 0;
            let gap = 0;
            for (let i = 1; i < rs.length; i++) {
              lost += Math.max(0, rs[i]!.seq - rs[i - 1]!.seq - 1);
              gap = Math.max(gap, rs[i]!.at - rs[i - 1]!.at);
            }
            return { received: rs.length, lost, longestGapMs: gap, outageMs: Math.max(0, gap - intervalMs) };
          },
          async stop() {
            await p.stop(1000);
            await reading;
          },
        };
      },
      async countLeaks(prefix) {
        const comment = `waygate-leak-${prefix.replace(/[^0-9]/g, "-")}`;
        await rig.exec(ns.laptop, ["iptables", "-w", "-t", "mangle", "-I", "POSTROUTING", "-o", links.laptopInternet, "-d", prefix, "-m", "comment", "--comment", comment]);
        return async () => {
          const text = (await rig.exec(ns.laptop, ["iptables", "-w", "-t", "mangle", "-L", "POSTROUTING", "-v", "-x", "-n"])).stdout;
          const line = text.split("\n").find((l) => l.includes(comment));
          if (line === undefined) throw new Error(`leak counter ${comment} is gone:\n${text}`);
          return Number(line.trim().split(/\s+/)[0]);
        };
      },
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

/** The laptop's failover block for `prefix` in a `waygate status --json` answer (undefined when absent). */
export function subnetOf(status: any, prefix: string = LAN.prefix): any {
  return (status?.failover ?? []).find((f: { prefix: string }) => f.prefix === prefix);
}

/** Whether gateway `id` is a healthy candidate of `prefix` in a status answer. */
export function healthyIn(status: any, id: string, prefix: string = LAN.prefix): boolean {
  return subnetOf(status, prefix)?.candidates?.some((c: { id: string; healthy: boolean }) => c.id === id && c.healthy) === true;
}

/**
 * The failover office brought up (an office made with `secondGateway`): gateway A (serve), B
 * enrolled, allowed and given the LAN by hand, the laptop enrolled and granted the LAN through
 * both; the laptop starts while only A runs, so A is its first working session (the active one);
 * then B runs and becomes a healthy standby. Returns the two gateway ids.
 */
export async function startFailoverOffice(office: Office, log: (m: string) => void = () => {}): Promise<{ a: string; b: string }> {
  const gw = await office.startGateway();
  log("gateway A up");
  const b = await office.enrolGateway2();
  await office.enrolLaptop("staff");
  await office.grant("office", { subnets: [LAN.prefix], gateways: [gw.id, b.id] });
  await office.waitStatus("gateway", (s) => s.peers?.some((p: any) => p.id === office.laptop!.id), 15_000);
  await office.startLaptop();
  log("laptop up");
  await office.waitStatus("laptop", (s) => subnetOf(s)?.active === gw.id, 15_000);
  log("laptop active on A");
  await office.startGateway2();
  log("gateway B up");
  await office.waitStatus("laptop", (s) => healthyIn(s, b.id) && subnetOf(s)?.active === gw.id, 20_000);
  log("B healthy standby");
  return { a: gw.id, b: b.id };
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
