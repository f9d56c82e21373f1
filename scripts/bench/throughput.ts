/**
 * @module scripts/bench/throughput
 * Tunnel throughput and latency, Waygate against wireguard-go in the same invocation (root;
 * a benchmark, not a test: nothing here is asserted in `npm test`).
 *
 * Rigs, one after the other, each two namespaces joined by a veth with a tunnel on top:
 *   waygate      `waygate up` on both ends (native AEAD: OpenSSL through FFI; offloads on:
 *                TUN TSO/GRO + UDP GSO/GRO, platform/linux/offload.ts)
 *   waygate-off  the same with WAYGATE_OFFLOADS=0 (plain TUN, plain sendmmsg/recvmmsg)
 *   wgo          wireguard-go on both ends (configured with `wg set`), the reference
 *   noble        `waygate up --noble` on both ends (the pure-JS fallback)
 * For each: ping RTT through the idle tunnel (`ping -c 20 -i 0.05`, avg), then iperf3 TCP for
 * --seconds (default 10) a -> b, with both tunnel processes' CPU from /proc/<pid>/stat
 * (utime + stime over the run, all threads; 100% = one core). Prints one line per figure and
 * the ratios against wireguard-go. Target: Waygate >= 2x wireguard-go. For Waygate rigs it also
 * prints what batching did (packets per TUN read on the sender, datagrams per UDP message both
 * ways, packets per TUN write on the receiver), from the hosts' counters over the run.
 *
 * Usage: bun scripts/bench/throughput.ts [--seconds N] [--only waygate,waygate-off,wgo,noble] [--json]
 */
import { readFileSync } from "node:fs";
import { iperf3 } from "../rig/iperf.ts";
import { createRig, type Rig } from "../rig/netns.ts";
import { startWaygateUp, type WaygateUp } from "../rig/waygate.ts";
import type { HostCounters } from "../../platform/linux/host.ts";
import { startWireguardGo, wgKeyPair } from "../rig/wireguard-go.ts";
import { JIT_ENV } from "../../platform/linux/jit.ts";

const TARGET_RATIO = 2;
type Scenario = "waygate" | "waygate-off" | "wgo" | "noble";

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const seconds = Number(flag("seconds") ?? 10);
const only = (flag("only") ?? "waygate,waygate-off,wgo,noble").split(",") as Scenario[];
const asJson = process.argv.includes("--json");

/** utime + stime of a process (all threads), in clock ticks (100/s on Linux). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "?";
  }
}

export interface ScenarioResult {
  scenario: Scenario;
  mbps: number;
  retransmits: number;
  cpuA: number;
  cpuB: number;
  rttMs: number;
  processes: string[];
  /** Waygate only: batching over the iperf3 run. */
  batching?: string;
}

async function tunnels(rig: Rig, scenario: Scenario): Promise<{ a: string; b: string; pids: [number, number]; ups?: [WaygateUp, WaygateUp] }> {
  const a = await rig.addNamespace("a");
  const b = await rig.addNamespace("b");
  await rig.addVeth({ ns: a, addresses: ["10.77.1.1/24"] }, { ns: b, addresses: ["10.77.1.2/24"] });
  const [ka, kb] = await Promise.all([wgKeyPair(rig.runner), wgKeyPair(rig.runner)]);
  if (scenario === "wgo") {
    const [wa, wb] = await Promise.all([
      startWireguardGo(rig, a, {
        ifname: rig.linkName("ta"),
        privateKey: ka.privateKey,
        listenPort: 51820,
        addresses: ["10.9.0.1/24"],
        peers: [{ publicKey: kb.publicKey, endpoint: "10.77.1.2:51821", allowedIPs: ["10.9.0.2/32"] }],
      }),
      startWireguardGo(rig, b, {
        ifname: rig.linkName("tb"),
        privateKey: kb.privateKey,
        listenPort: 51821,
        addresses: ["10.9.0.2/24"],
        peers: [{ publicKey: ka.publicKey, endpoint: "10.77.1.1:51820", allowedIPs: ["10.9.0.1/32"] }],
      }),
    ]);
    return { a, b, pids: [wa.pid, wb.pid] };
  }
  const noble = scenario === "noble";
  const env: Record<string, string> = { [JIT_ENV]: "false", CONSOLA_LEVEL: "2" };
  if (scenario === "waygate-off") env.WAYGATE_OFFLOADS = "0";
  const [wa, wb] = await Promise.all([
    startWaygateUp(rig, a, {
      ifname: rig.linkName("ta"),
      privateKey: ka.privateKey,
      listenPort: 51820,
      addresses: ["10.9.0.1/24"],
      peers: [{ publicKey: kb.publicKey, endpoint: "10.77.1.2:51821", allowedIps: ["10.9.0.2/32"] }],
      noble,
      env,
    }),
    startWaygateUp(rig, b, {
      ifname: rig.linkName("tb"),
      privateKey: kb.privateKey,
      listenPort: 51821,
      addresses: ["10.9.0.2/24"],
      peers: [{ publicKey: ka.publicKey, endpoint: "10.77.1.1:51820", allowedIps: ["10.9.0.1/32"] }],
      noble,
      env,
    }),
  ]);
  return { a, b, pids: [wa.pid, wb.pid], ups: [wa, wb] };
}

async function hostCounters(ups: [WaygateUp, WaygateUp] | undefined): Promise<[HostCounters, HostCounters] | null> {
  if (!ups) return null;
  try {
    const [sa, sb] = await Promise.all([ups[0].show(), ups[1].show()]);
    return [sa.host, sb.host];
  } catch {
    return null;
  }
}

/** Ratios over the run: a's TUN packets per read and datagrams per message, b's the reverse. */
function batching(before: [HostCounters, HostCounters] | null, after: [HostCounters, HostCounters] | null): string | undefined {
  if (!before || !after) return undefined;
  const d = (get: (h: HostCounters) => number | undefined, i: 0 | 1) => (get(after[i]) ?? 0) - (get(before[i]) ?? 0);
  const per = (n: number, calls: number) => (calls > 0 ? (n / calls).toFixed(1) : "-");
  const aFrames = d((h) => h.offload?.tunFrames, 0);
  const bWrites = d((h) => h.offload?.tunWrites, 1);
  return (
    `a: offloads ${after[0].offloads ?? "?"}, tun pkts/read ${aFrames > 0 ? per(d((h) => h.tunRead, 0), aFrames) : "1.0"}, ` +
    `udp dgrams/msg out ${per(d((h) => h.udp?.sent, 0), d((h) => h.udp?.sendMessages, 0))}; ` +
    `b: udp dgrams/msg in ${per(d((h) => h.udp?.received, 1), d((h) => h.udp?.receiveMessages, 1))}, ` +
    `tun pkts/write ${bWrites > 0 ? per(d((h) => h.tunWritten, 1), bWrites) : "1.0"}`
  );
}

async function run(scenario: Scenario): Promise<ScenarioResult> {
  const rig = await createRig();
  try {
    const { a, b, pids, ups } = await tunnels(rig, scenario);
    // Warm up: handshake, JIT tiers.
    await rig.exec(a, ["ping", "-c", "3", "-i", "0.1", "-W", "2", "10.9.0.2"], { allowFailure: true });
    const ping = await rig.exec(a, ["ping", "-c", "20", "-i", "0.05", "-W", "2", "10.9.0.2"], { allowFailure: true });
    const rtt = /= [\d.]+\/([\d.]+)\//.exec(ping.stdout);
    const c0 = await hostCounters(ups);
    const t0 = [cpuTicks(pids[0]), cpuTicks(pids[1])];
    const started = performance.now();
    const r = await iperf3(rig, { serverNs: b, clientNs: a, serverAddress: "10.9.0.2", seconds });
    const wall = (performance.now() - started) / 1000;
    const t1 = [cpuTicks(pids[0]), cpuTicks(pids[1])];
    const c1 = await hostCounters(ups);
    if (r.exitCode !== 0) throw new Error(`iperf3 through ${scenario} failed: ${r.stderr}`);
    return {
      scenario,
      mbps: r.bitsPerSecond / 1e6,
      retransmits: r.retransmits,
      cpuA: ((t1[0]! - t0[0]!) / 100 / wall) * 100,
      cpuB: ((t1[1]! - t0[1]!) / 100 / wall) * 100,
      rttMs: rtt ? Number(rtt[1]) : Number.NaN,
      processes: pids.map((p) => `${comm(p)}[${p}]`),
      batching: batching(c0, c1),
    };
  } finally {
    await rig.destroy();
  }
}

const LABEL: Record<Scenario, string> = {
  waygate: "waygate (native AEAD)",
  "waygate-off": "waygate offloads off",
  wgo: "wireguard-go",
  noble: "waygate --noble",
};

const results: ScenarioResult[] = [];
for (const s of only) {
  const r = await run(s);
  results.push(r);
  if (!asJson) {
    console.log(
      `${LABEL[s].padEnd(22)} ${r.mbps.toFixed(0).padStart(6)} Mbit/s  retransmits ${String(r.retransmits).padStart(5)}  ` +
        `cpu a ${r.cpuA.toFixed(0).padStart(3)}% b ${r.cpuB.toFixed(0).padStart(3)}%  rtt ${r.rttMs.toFixed(3)} ms  (${r.processes.join(", ")})`,
    );
    if (r.batching) console.log(`${"".padEnd(22)} ${r.batching}`);
  }
}
const ref = results.find((r) => r.scenario === "wgo");
const ratios: Record<string, { throughput: number; rtt: number; cpuPerGbit: number }> = {};
if (ref) {
  const cpuPerGbit = (r: ScenarioResult) => (r.cpuA + r.cpuB) / (r.mbps / 1000);
  for (const r of results) {
    if (r === ref) continue;
    ratios[r.scenario] = { throughput: r.mbps / ref.mbps, rtt: r.rttMs / ref.rttMs, cpuPerGbit: cpuPerGbit(r) / cpuPerGbit(ref) };
    if (!asJson) {
      const x = ratios[r.scenario]!;
      console.log(
        `${LABEL[r.scenario]} / wireguard-go: throughput ${x.throughput.toFixed(2)}x (target ${TARGET_RATIO}x: ${x.throughput >= TARGET_RATIO ? "met" : "not met"}), ` +
          `rtt ${x.rtt.toFixed(2)}x, cpu per Gbit/s ${x.cpuPerGbit.toFixed(2)}x`,
      );
    }
  }
}
if (asJson) console.log(JSON.stringify({ seconds, results, ratios }, null, 2));
