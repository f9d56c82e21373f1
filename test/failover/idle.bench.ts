/**
 * @module test/failover/idle.bench
 * What failover costs an idle client as its route count grows (a benchmark, not a test: run it
 * with `bun test/failover/idle.bench.ts`). Two figures, each for 10 and for 4,094 routed prefixes
 * that share one candidate set (what a 10,000-entry subnet filter compiles to), printed with their
 * ratio (4,094 / 10; 1.00 means the cost does not grow with the prefix count):
 *
 *   tick      the FailoverController alone on a fake clock, two gateways that answer every probe
 *             at once: µs per `tick()` (the engine ticks it every 50 ms)
 *   engine    the production engine (platform/linux/device-engine.ts) with a real client Device,
 *             two real gateway Devices over an in-memory network, and the main thread's status
 *             poll (platform/linux/agent-failover.ts, its stats structured-cloned as postMessage
 *             would) every 500 ms: engine + poll CPU per simulated second of idling, as % of one
 *             core (split into the engine's ticks and the poll), and the stats message's size
 */
import { FailoverController, type FailoverRoute } from "../../core/failover/controller.ts";
import { Device } from "../../core/dataplane/device.ts";
import { silentLogger } from "../../core/log.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { encodeKey, generatePrivateKey, publicKeyFrom } from "../../core/wire/keys.ts";
import createDeviceEngine from "../../platform/linux/device-engine.ts";
import { startAgentFailover } from "../../platform/linux/agent-failover.ts";
import { MemoryNetwork, MemoryTun } from "../dataplane/memory.ts";
import { fakeClock, seededRandom } from "../wire/helpers.ts";
import type { HostedEngine } from "../../platform/linux/host.ts";
import type { NetMap } from "../../core/policy/netmap.ts";

/** n host routes inside 172.26.0.0/20 (172.26.0.1 ...), as the compiler emits for a subnet filter. */
function hostPrefixes(n: number): string[] {
  const out: string[] = [];
  for (let i = 1; i <= n; i++) out.push(`172.26.${i >> 8}.${i & 255}/32`);
  return out;
}

function tickBench(n: number): number {
  let t = 0;
  const replies: string[] = [];
  const ctl = new FailoverController({ now: () => t, logger: silentLogger, sendProbe: (g) => void replies.push(g) });
  const routes: FailoverRoute[] = hostPrefixes(n).map((prefix) => ({
    prefix,
    candidates: [
      { gatewayId: "A", priority: 100, draining: false },
      { gatewayId: "B", priority: 100, draining: false },
    ],
  }));
  ctl.setRoutes(routes);
  const step = () => {
    t += 50;
    ctl.tick();
    for (const g of replies.splice(0)) ctl.onProbeReply(g, 1);
    ctl.onData("A");
  };
  for (let i = 0; i < 2000; i++) step(); // warm-up, and both gateways up
  const ticks = 20_000;
  const start = performance.now();
  for (let i = 0; i < ticks; i++) step();
  return ((performance.now() - start) * 1000) / ticks;
}

async function engineBench(n: number): Promise<{ cpuPct: number; tickPct: number; pollPct: number; statsBytes: number }> {
  const crypto = nobleCrypto();
  const clock = fakeClock();
  const random = seededRandom(7);
  const net = new MemoryNetwork();
  const keys = () => {
    const privateKey = generatePrivateKey(random);
    return { privateKey, publicKey: encodeKey(publicKeyFrom(crypto, privateKey)) };
  };
  const client = keys();
  const clientEp = { address: "192.0.2.10", port: 51820 };
  const gws = [
    { id: "GA", virt: "100.64.0.1", ep: { address: "192.0.2.1", port: 51820 }, ...keys() },
    { id: "GB", virt: "100.64.0.3", ep: { address: "192.0.2.2", port: 51820 }, ...keys() },
  ];
  const gwDevices = gws.map((g) => {
    const d = new Device({ privateKey: g.privateKey, crypto, now: clock.now, random, logger: silentLogger, tun: new MemoryTun(), bind: net.bind(g.ep), probeSource: g.virt });
    d.setPeers([{ publicKey: client.publicKey, allowedIps: ["100.64.0.2/32"] }]);
    net.attach(g.ep, d);
    return d;
  });
  const engine = (await createDeviceEngine(
    { privateKey: client.privateKey, peers: [], forceNoble: true, probeSource: "100.64.0.2" },
    { tun: new MemoryTun(), bind: net.bind(clientEp), now: clock.now, logger: silentLogger },
  )) as HostedEngine;
  net.attach(clientEp, engine);
  engine.control!({
    type: "setPeers",
    peers: gws.map((g) => ({ publicKey: g.publicKey, allowedIps: [`${g.virt}/32`, "172.26.0.0/20"], endpoint: g.ep })),
  });
  const prefixes = hostPrefixes(n);
  const netmap = {
    self: { active: true, network: "100.64.0.0/10" },
    peers: gws.map((g) => ({ id: g.id, name: g.id.toLowerCase(), publicKey: g.publicKey })),
    routes: prefixes.flatMap((prefix) => gws.map((g) => ({ prefix, via: g.id, priority: 100, draining: false, metricHint: 100 }))),
  } as unknown as NetMap;
  let statsBytes = 0;
  const fo = startAgentFailover({
    engineControl: (m) => engine.control!(m),
    engineStats: async () => {
      const s = structuredClone(engine.stats!());
      statsBytes = JSON.stringify(s).length;
      return s;
    },
    logger: silentLogger,
    pollMs: 3_600_000, // polled by hand below, on the fake clock
  });
  fo.hook(netmap, { revision: 1, source: "server", previous: null });

  let engineMs = 0;
  let pollMs = 0;
  let nextEngineTick = clock.now();
  let nextPoll = clock.now();
  const run = async (ms: number, measure: boolean) => {
    const end = clock.now() + ms;
    while (clock.now() < end) {
      for (const d of gwDevices) d.tick();
      net.deliver();
      if (clock.now() >= nextEngineTick) {
        const s = performance.now();
        nextEngineTick = clock.now() + engine.tick();
        if (measure) engineMs += performance.now() - s;
      }
      net.deliver();
      if (clock.now() >= nextPoll) {
        const s = performance.now();
        await fo.poll();
        if (measure) pollMs += performance.now() - s;
        nextPoll += 500;
      }
      clock.advance(5);
    }
  };
  await run(5_000, false);
  const st = await fo.refresh();
  if (st === null || st.length !== n || st.some((r) => r.active === null)) throw new Error(`bench: failover did not settle (${st?.length} rows)`);
  const seconds = 60;
  await run(seconds * 1000, true);
  fo.stop();
  engine.close?.();
  return { cpuPct: (engineMs + pollMs) / (seconds * 10), tickPct: engineMs / (seconds * 10), pollPct: pollMs / (seconds * 10), statsBytes };
}

const small = 10;
const large = 4094;
const t10 = tickBench(small);
const t4094 = tickBench(large);
console.log(`failover-idle: case=tick prefixes=${small} us_per_tick=${t10.toFixed(2)}`);
console.log(`failover-idle: case=tick prefixes=${large} us_per_tick=${t4094.toFixed(2)}`);
console.log(`failover-idle: case=tick ratio_${large}_to_${small}=${(t4094 / t10).toFixed(2)}`);
const e10 = await engineBench(small);
const e4094 = await engineBench(large);
for (const [n, e] of [[small, e10], [large, e4094]] as const) {
  console.log(
    `failover-idle: case=engine prefixes=${n} cpu_pct=${e.cpuPct.toFixed(3)} tick_pct=${e.tickPct.toFixed(3)} poll_pct=${e.pollPct.toFixed(3)} stats_bytes=${e.statsBytes}`,
  );
}
console.log(`failover-idle: case=engine ratio_${large}_to_${small}=${(e4094.cpuPct / e10.cpuPct).toFixed(2)} stats_bytes_ratio=${(e4094.statsBytes / e10.statsBytes).toFixed(2)}`);
