/**
 * @module scripts/bench/gateway-throughput
 * Throughput and latency through a Waygate gateway, in the office rig (scripts/rig/office.ts;
 * root; a benchmark, not a test):
 *
 *   laptop ── "internet" ── gateway (`waygate serve --standalone`, SNAT on) ── printer 172.26.0.250
 *
 * Paths, measured in one office one after the other (same processes, same JIT state):
 *   direct    laptop → the gateway's virtual address, the reference: tunnel only, no forwarding.
 *             The gateway's INPUT guard (core/firewall/firewall.ts, rule 3) drops connections the
 *             overlay opens to the gateway itself, a direct access policy notwithstanding, so here
 *             the gateway opens them (a direct policy "gateway" -> "staff"): iperf3 -c in the
 *             gateway with -R (the data still flows laptop -> gateway), ping from the gateway
 *   gateway   laptop → gateway → printer, the gateway's SNAT and stateful forward rules in place,
 *             a grant of 172.26.0.0/20 with no subnet filter
 *   filter    the same grant with a subnet filter of --rules (default 10,000) single-address/port
 *             entries spread over 172.26.0.0/20 ("172.26.x.y tcp PORT"), plus the two entries that
 *             let the bench through ("172.26.0.250 tcp 5201", "172.26.0.250 icmp"), set in one
 *             admin request (`waygate policies edit office --filter ... --filter ...`)
 * For each: ping RTT (`ping -c 20 -i 0.05`, avg, after a warm-up), then iperf3 TCP for --seconds
 * (default 10), the iperf3 server in the printer (in the laptop for `direct`), with the gateway's
 * and the laptop's waygate CPU from /proc/<pid>/stat (100% = one core). The gateway and filter
 * runs alternate --rounds times (default 3; the filter is set and cleared between them); the
 * filter / gateway ratio is the median of each round's pair, the others are ratios of medians. Prints one line per figure, then the ratios: filter / gateway (target
 * >= 0.95) and gateway / direct. Also prints how long the 10,000-entry policy took to reach the
 * gateway's Device and the laptop's routes, and checks that the filter is in force (a ping to
 * 172.26.0.251, which no entry allows for ICMP, is dropped and counted as gateway-no-grant).
 *
 * Usage: bun scripts/bench/gateway-throughput.ts [--seconds N] [--rules N] [--rounds N]
 *        [--binary dist/waygate] [--json]
 */
import { readFileSync } from "node:fs";
import { socketPathIn } from "../../core/agent/state.ts";
import { controlRequest } from "../../platform/linux/control.ts";
import { iperf3 } from "../rig/iperf.ts";
import { createOffice, LAN, type Office } from "../rig/office.ts";

const TARGET = 0.95;
const IPERF_PORT = 5201;

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const seconds = Number(flag("seconds") ?? 10);
const ruleCount = Number(flag("rules") ?? 10_000);
const rounds = Number(flag("rounds") ?? 3);
const binary = flag("binary");
const asJson = process.argv.includes("--json");
const log = (line: string) => {
  if (!asJson) console.log(line);
};

type Path = "direct" | "gateway" | "filter";

interface Run {
  path: Path;
  mbps: number;
  retransmits: number;
  rttMs: number;
  cpuGateway: number;
  cpuLaptop: number;
  /** CPU % over 2 s with no traffic, just before the run. */
  idleGateway: number;
  idleLaptop: number;
}

/** utime + stime of a process (all threads), in clock ticks (100/s). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** `count` filter entries: distinct (address, port) pairs over 172.26.0.1-172.26.15.254, tcp. */
export function subnetFilterEntries(count: number): string[] {
  const hosts = 4094; // 172.26.0.0/20 without network and broadcast
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const h = 1 + ((i * 2731) % hosts); // 2731 is prime to 4094: every host before any repeats
    // The same host comes back only in a later pass over the hosts, with another port.
    const port = 1024 + Math.floor(i / hosts) * 10 + (i % 10);
    out.push(`172.26.${h >> 8}.${h & 255} tcp ${port}`);
  }
  if (out.some((e) => e === `${LAN.printer} tcp ${IPERF_PORT}`)) throw new Error("a generated entry would allow the bench's own flow");
  return out;
}

async function until(what: string, f: () => Promise<boolean>, timeoutMs = 60_000): Promise<number> {
  const t0 = Date.now();
  while (!(await f())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await Bun.sleep(50);
  }
  return Date.now() - t0;
}

async function measure(office: Office, path: Path): Promise<Run> {
  const { ns } = office;
  // direct: the gateway opens the connections (its INPUT guard drops overlay-initiated ones to
  // itself, direct policy or not), iperf3 -R so the data still flows laptop -> gateway.
  const direct = path === "direct";
  const [serverNs, clientNs, address] = direct ? [ns.laptop, ns.gateway, office.laptop!.virtualAddress] : [ns.printer, ns.laptop, LAN.printer];
  await office.rig.exec(clientNs, ["ping", "-c", "3", "-i", "0.1", "-W", "2", address], { allowFailure: true });
  const ping = await office.rig.exec(clientNs, ["ping", "-n", "-q", "-c", "20", "-i", "0.05", "-W", "2", address], { allowFailure: true });
  const rtt = /= [\d.]+\/([\d.]+)\//.exec(ping.stdout);
  if (!rtt) throw new Error(`ping ${address} (${path}) failed: ${ping.stdout}${ping.stderr}`);
  const pids = [office.gateway!.process.proc.pid, office.laptop!.process!.proc.pid] as const;
  // Idle CPU over 2 s without traffic: what the configuration costs when nothing flows.
  const i0 = [cpuTicks(pids[0]), cpuTicks(pids[1])];
  await Bun.sleep(2000);
  const i1 = [cpuTicks(pids[0]), cpuTicks(pids[1])];
  const t0 = [cpuTicks(pids[0]), cpuTicks(pids[1])];
  const started = performance.now();
  const r = await iperf3(office.rig, { serverNs, clientNs, serverAddress: address, seconds, port: IPERF_PORT, ...(direct ? { clientArgs: ["-R"] } : {}) });
  const wall = (performance.now() - started) / 1000;
  const t1 = [cpuTicks(pids[0]), cpuTicks(pids[1])];
  if (r.exitCode !== 0 || r.bytesReceived === 0) throw new Error(`iperf3 ${path} -> ${address} failed: ${r.stderr}`);
  return {
    path,
    mbps: r.bitsPerSecond / 1e6,
    retransmits: r.retransmits,
    rttMs: Number(rtt[1]),
    cpuGateway: ((t1[0]! - t0[0]!) / 100 / wall) * 100,
    cpuLaptop: ((t1[1]! - t0[1]!) / 100 / wall) * 100,
    idleGateway: (i1[0]! - i0[0]!) / 2,
    idleLaptop: (i1[1]! - i0[1]!) / 2,
  };
}

/**
 * The gateway Device's drop counter for the laptop, from the agent's control socket directly:
 * `waygate status --json` with 10,000 ACLs is megabytes, which the CLI cuts short on a pipe.
 */
async function gatewayDrops(office: Office, reason: string): Promise<number> {
  const [reply] = await controlRequest(socketPathIn(office.dirs.gatewayAgent), { op: "show" }, { timeoutMs: 10_000 });
  const s = reply?.show as { peers: { id: string; drops?: Record<string, number> }[] } | undefined;
  const peer = s?.peers.find((p) => p.id === office.laptop!.id);
  return Number(peer?.drops?.[reason] ?? 0);
}

const LABEL: Record<Path, string> = {
  direct: "direct (laptop ⇄ gateway 100.64.0.1)",
  gateway: "gateway, SNAT, no subnet filter",
  filter: `gateway, SNAT, ${ruleCount.toLocaleString("en")}-rule filter`,
};

function print(r: Run): void {
  log(
    `${LABEL[r.path].padEnd(40)} ${r.mbps.toFixed(0).padStart(6)} Mbit/s  retransmits ${String(r.retransmits).padStart(5)}  ` +
      `cpu gateway ${r.cpuGateway.toFixed(0).padStart(3)}% laptop ${r.cpuLaptop.toFixed(0).padStart(3)}% (gateway ${(r.cpuGateway / (r.mbps / 1000)).toFixed(1)}%/Gbit)  rtt ${r.rttMs.toFixed(3)} ms  ` +
      `idle cpu gateway ${r.idleGateway.toFixed(0)}% laptop ${r.idleLaptop.toFixed(0)}%`,
  );
}

const office = await createOffice(binary ? { waygate: [binary] } : {});
const onSignal = (signal: string) => {
  console.error(`${signal}: tearing the office down`);
  void office.destroy().finally(() => process.exit(130));
};
process.on("SIGINT", () => onSignal("SIGINT"));
process.on("SIGTERM", () => onSignal("SIGTERM"));
let exitCode = 0;
try {
  const { ns } = office;
  const gw = await office.startGateway();
  const laptop = await office.enrolLaptop("staff");
  await office.grant("office", { subnets: [LAN.prefix] });
  // The direct reference: the gateway may open connections to the laptop (see measure()).
  await office.admin(["tags", "add", "gateway"]);
  await office.admin(["systems", "edit", gw.id, "--add-tag", "gateway"]);
  await office.admin(["policies", "add", "gateway-to-staff", "--direct", "--from", "gateway", "--to", "staff"]);
  await office.waitStatus("gateway", (s) => s.peers?.some((p: any) => p.id === laptop.id));
  await office.startLaptop();
  await office.waitStatus("laptop", (s) => s.peers?.some((p: any) => p.gatewayFor.includes(LAN.prefix)));
  await until("laptop route to the LAN", async () => (await office.rig.exec(ns.laptop, ["ip", "-4", "route", "show", LAN.prefix])).stdout.includes(office.links.laptopTun), 10_000);
  const firewall = /backend=(\S+)/.exec(gw.process.lines.find((l) => /firewall: backend=/.test(l.text))?.text ?? "")?.[1] ?? "?";
  const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  log(`office ${office.rig.prefix}: waygate ${binary ?? "from source"}, firewall ${firewall}, iperf3 TCP ${seconds} s per run, ${rounds} round(s); load average ${load}`);

  const entries = [...subnetFilterEntries(ruleCount), `${LAN.printer} tcp ${IPERF_PORT}`, `${LAN.printer} icmp`];
  const setFilter = async () => {
    const since = Date.now();
    await office.admin(["policies", "edit", "office", ...entries.flatMap((e) => ["--filter", e])]);
    const requestMs = Date.now() - since;
    const m = await office.untilLog(gw.process, /device: gateway on senders=1 rules=(\d+) intervals=(\d+)/, { since, timeoutMs: 60_000 });
    const gatewayMs = Date.now() - since;
    if (Number(m[1]) < ruleCount) throw new Error(`the gateway applied ${m[1]} rules, expected ${entries.length}: ${m[0]}`);
    // The laptop now routes only the filter's destinations (host routes) to the tunnel.
    await office.untilLog(office.laptop!.process!, /netmap applied revision=\d+ .*routes=(\d{3,})/, { since, timeoutMs: 120_000 });
    const laptopMs = Date.now() - since;
    const routes = (await office.rig.exec(ns.laptop, ["ip", "-4", "route", "show", "dev", office.links.laptopTun])).stdout.trim().split("\n").length;
    await Bun.sleep(300); // the engines apply their control messages asynchronously
    return { requestMs, gatewayMs, laptopMs, rules: Number(m[1]), intervals: Number(m[2]), routes };
  };
  const clearFilter = async () => {
    const since = Date.now();
    await office.admin(["policies", "edit", "office", "--clear-filter"]);
    await office.untilLog(gw.process, /device: gateway on senders=1 rules=1 /, { since, timeoutMs: 60_000 });
    await office.untilLog(office.laptop!.process!, /netmap applied revision=\d+ .*routes=1 /, { since, timeoutMs: 120_000 });
    await Bun.sleep(300);
  };

  const runs: Run[] = [];
  const record = (r: Run) => {
    runs.push(r);
    print(r);
  };
  let applied: Awaited<ReturnType<typeof setFilter>> | null = null;
  let inForce: { pingDropped: boolean; noGrant: [number, number] } | null = null;
  record(await measure(office, "direct"));
  for (let round = 0; round < rounds; round++) {
    record(await measure(office, "gateway"));
    const a = await setFilter();
    if (applied === null) {
      applied = a;
      log(
        `${entries.length.toLocaleString("en")} filter entries in one admin request: accepted in ${a.requestMs} ms, on the gateway's Device in ${a.gatewayMs} ms ` +
          `(rules=${a.rules} intervals=${a.intervals}), laptop routes in ${a.laptopMs} ms (${a.routes} routes on its TUN)`,
      );
      const before = await gatewayDrops(office, "gateway-no-grant");
      const pingDropped = !(await office.ping(ns.laptop, LAN.other, { count: 1, timeoutS: 1 }));
      await Bun.sleep(200);
      const after = await gatewayDrops(office, "gateway-no-grant");
      inForce = { pingDropped, noGrant: [before, after] };
      log(`filter in force: ping ${LAN.other} ${pingDropped ? "dropped" : "ANSWERED"}, gateway-no-grant ${before} -> ${after}`);
      if (!pingDropped || after <= before) throw new Error("the subnet filter is not in force");
    }
    record(await measure(office, "filter"));
    if (round < rounds - 1) await clearFilter();
  }

  const median = (xs: number[]) => {
    const v = [...xs].sort((a, b) => a - b);
    return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
  };
  const of = (p: Path, f: (r: Run) => number) => runs.filter((r) => r.path === p).map(f);
  // Each round's filter run against the gateway run just before it (same conditions, seconds
  // apart), then the median over the rounds: a neighbour's load burst spoils one pair, not the figure.
  const gatewayRuns = runs.filter((r) => r.path === "gateway");
  const filterRuns = runs.filter((r) => r.path === "filter");
  const pairs = filterRuns.map((f, i) => f.mbps / gatewayRuns[i]!.mbps);
  // CPU the gateway's waygate spent per Gbit/s forwarded: what a filter costs per packet shows
  // here even when a busy machine, not the gateway, limits the throughput.
  const gwCpuPerGbit = (r: Run) => r.cpuGateway / (r.mbps / 1000);
  const cpuPairs = filterRuns.map((f, i) => gwCpuPerGbit(f) / gwCpuPerGbit(gatewayRuns[i]!));
  // The laptop carries the filter too: one host route per filtered address (its route table and
  // the failover selector), so its cost is shown beside the gateway's.
  const lapCpuPerGbit = (r: Run) => r.cpuLaptop / (r.mbps / 1000);
  const lapPairs = filterRuns.map((f, i) => lapCpuPerGbit(f) / lapCpuPerGbit(gatewayRuns[i]!));
  const ratio = {
    gatewayCpuPerGbitFilterOverGateway: median(cpuPairs),
    laptopCpuPerGbitFilterOverGateway: median(lapPairs),
    filterOverGateway: median(pairs),
    filterOverGatewayPerRound: pairs,
    gatewayOverDirect: median(of("gateway", (r) => r.mbps)) / median(of("direct", (r) => r.mbps)),
    rttFilterOverGateway: median(of("filter", (r) => r.rttMs)) / median(of("gateway", (r) => r.rttMs)),
    rttGatewayOverDirect: median(of("gateway", (r) => r.rttMs)) / median(of("direct", (r) => r.rttMs)),
  };
  log(
    `filter / gateway: throughput ${ratio.filterOverGateway.toFixed(3)}x, median of ${pairs.length} paired rounds (${pairs.map((x) => x.toFixed(3)).join(", ")}) ` +
      `(target ${TARGET}: ${ratio.filterOverGateway >= TARGET ? "met" : "not met"}), rtt ${ratio.rttFilterOverGateway.toFixed(2)}x`,
  );
  log(
    `filter / gateway: the gateway's cpu per Gbit/s ${ratio.gatewayCpuPerGbitFilterOverGateway.toFixed(3)}x, median of (${cpuPairs.map((x) => x.toFixed(3)).join(", ")}) ` +
      `(${(1 / TARGET).toFixed(3)}x or less is the same target seen as cost); ` +
      `the laptop's ${ratio.laptopCpuPerGbitFilterOverGateway.toFixed(3)}x, median of (${lapPairs.map((x) => x.toFixed(3)).join(", ")})`,
  );
  log(`gateway / direct: throughput ${ratio.gatewayOverDirect.toFixed(3)}x, rtt ${ratio.rttGatewayOverDirect.toFixed(2)}x (medians)`);
  if (asJson) console.log(JSON.stringify({ seconds, rules: entries.length, rounds, firewall, runs, applied, inForce, ratio, target: TARGET }, null, 2));
} catch (err) {
  console.error(`gateway-throughput: ${err instanceof Error ? err.message : String(err)}`);
  exitCode = 1;
} finally {
  await office.destroy();
}
process.exit(exitCode);
