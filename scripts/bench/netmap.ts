/**
 * @module scripts/bench/netmap
 * NetMap compilation at scale: 10,000 systems, 1,000 policies (800 direct, 200 gateway), 100
 * gateways with 5 subnets each. Two figures, each a ratio against a naive reference measured
 * in the same run, so the ratio holds on any machine:
 *
 * 1. full compile of every NetMap (`compileAll`, one shared index) against the naive way: one
 *    `compile(state, id)` per system, each re-indexing the whole state. The naive run is timed
 *    on a sample of systems and scaled up (printed), because running it whole takes minutes.
 *    Target: under 1 s.
 * 2. one policy change -> new NetMaps of the affected systems (`recompile`: affectedSystems,
 *    index the new state, compile those), against the naive full recompute (`compileAll` of
 *    the new state). Target: under 50 ms.
 *
 * Shape of the generated network (seeded, the same every run): 1,000 tags of 10 systems each,
 * 20% of systems in a second tag; direct policies from one tag to one or two tags; gateway
 * policies from one or two tags to one or two gateways, 30% with a subnet filter, 10% with a
 * time window, 5% deny; gateway subnets 10.g.{0..3}.0/24 plus a 172.16.x.0/24 shared by ten
 * gateways (failover candidates). Every NetMap is checked against the full recompute after
 * the incremental run. Usage: bun scripts/bench/netmap.ts [--seed N] [--systems N] [--sample N]
 */
import { affectedSystems, compile, compileAll, recompile } from "../../core/policy/compile.ts";
import {
  checkIntegrity,
  type DirectAccessPolicy,
  type GatewayAccessPolicy,
  type PolicyState,
  type System,
} from "../../core/policy/model.ts";
import { netMapJson } from "../../core/policy/netmap.ts";

const FULL_TARGET_MS = 1000;
const INCREMENTAL_TARGET_MS = 50;

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** mulberry32: a seeded generator, so every run measures the same network. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function keyFor(i: number): string {
  const bytes = new Uint8Array(32);
  new DataView(bytes.buffer).setUint32(0, i + 1);
  return btoa(String.fromCharCode(...bytes));
}

function idFor(i: number): string {
  return i.toString(36).toUpperCase().padStart(5, "0");
}

function vaddr(i: number): string {
  const n = i + 1;
  return `100.${64 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
}

const ms = (ns: number) => ns / 1e6;
const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));

export function generate(seed: number, systemCount: number): PolicyState {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const tagCount = Math.max(1, Math.floor(systemCount / 10));
  const tag = (i: number) => `group-${i}`;
  const gatewayCount = Math.min(100, systemCount);
  const systems: System[] = [];
  for (let i = 0; i < systemCount; i++) {
    const tags = [tag(i % tagCount)];
    if (r() < 0.2) tags.push(tag(Math.floor(r() * tagCount)));
    const isGateway = i < gatewayCount;
    systems.push({
      id: idFor(i),
      name: `system-${i}`,
      publicKey: keyFor(i),
      virtualAddress: vaddr(i),
      tags: isGateway ? [...tags, `site-${i % 20}`] : tags,
      approved: r() > 0.01,
      enabled: r() > 0.01,
      endpoint: `198.51.${(i >> 8) & 255}.${i & 255}:51820`,
      publicIp: r() < 0.5 ? "203.0.113.9" : "192.0.2.44",
      allowedAsGateway: isGateway,
      gatewaySubnets: isGateway
        ? [
            ...[0, 1, 2, 3].map((k) => ({ prefix: `10.${i}.${k}.0/24`, nat: true, source: "discovered" as const })),
            { prefix: `172.16.${i % 10}.0/24`, nat: false, source: "manual" as const, priority: 100 + (i % 3) * 10 },
          ]
        : [],
    });
  }
  const acls = [
    [{ protocol: "any" as const }],
    [{ protocol: "tcp" as const, ports: "22" }, { protocol: "tcp" as const, ports: "443" }],
    [{ protocol: "udp" as const, ports: "5000-6000" }],
    [{ protocol: "icmp" as const }, { protocol: "tcp" as const, ports: "3389" }],
  ];
  const direct: DirectAccessPolicy[] = [];
  for (let i = 0; i < 800; i++) {
    const to = [tag(Math.floor(r() * tagCount))];
    if (r() < 0.5) to.push(tag(Math.floor(r() * tagCount)));
    direct.push({
      id: `direct-${i}`,
      name: `direct ${i}`,
      enabled: r() > 0.02,
      action: r() < 0.03 ? "deny" : "allow",
      fromTags: [tag(Math.floor(r() * tagCount))],
      toTags: to,
      acls: pick(acls),
    });
  }
  const gateways: GatewayAccessPolicy[] = [];
  for (let i = 0; i < 200; i++) {
    const entries = Array.from({ length: r() < 0.5 ? 1 : 2 }, () => {
      const g = Math.floor(r() * gatewayCount);
      const all = systems[g]!.gatewaySubnets.map((s) => s.prefix);
      return { systemId: idFor(g), subnets: all.filter(() => r() < 0.5).concat(all[4]!) };
    });
    const senders = [tag(Math.floor(r() * tagCount))];
    if (r() < 0.5) senders.push(tag(Math.floor(r() * tagCount)));
    const deny = r() < 0.05;
    const p: GatewayAccessPolicy = { id: `gateway-${i}`, name: `gateway ${i}`, enabled: true, senderTags: senders, gateways: entries };
    if (deny) p.action = "deny";
    if (r() < 0.3) {
      const base = entries[0]!.subnets[0]!.replace(/\.0\/24$/, "");
      p.subnetFilter = [
        { destination: `${base}.10`, protocol: "tcp", ports: "22" },
        { destination: `${base}.100-${base}.150`, protocol: "any" },
      ];
    }
    if (!deny && r() < 0.1) {
      p.trust = { timeWindows: [{ days: ["mon", "tue", "wed", "thu", "fri"], start: "08:00", end: "18:00", utcOffsetMinutes: 60 }] };
    }
    gateways.push(p);
  }
  return { network: "100.64.0.0/10", systems, directAccessPolicies: direct, gatewayAccessPolicies: gateways };
}

/** One policy change, alternating kinds: tags on a direct policy, subnets or senders on a gateway policy. */
function change(state: PolicyState, k: number, r: () => number): PolicyState {
  const tagCount = Math.floor(state.systems.length / 10);
  if (k % 3 === 0) {
    const i = Math.floor(r() * state.directAccessPolicies.length);
    const list = state.directAccessPolicies.slice();
    const p = list[i]!;
    list[i] = { ...p, toTags: [...p.toTags, `group-${Math.floor(r() * tagCount)}`] };
    return { ...state, directAccessPolicies: list };
  }
  const i = Math.floor(r() * state.gatewayAccessPolicies.length);
  const list = state.gatewayAccessPolicies.slice();
  const p = list[i]!;
  if (k % 3 === 1) {
    list[i] = { ...p, gateways: p.gateways.map((g, j) => (j === 0 ? { ...g, subnets: g.subnets.slice(0, 1) } : g)) };
  } else {
    list[i] = { ...p, senderTags: [...p.senderTags, `group-${Math.floor(r() * tagCount)}`] };
  }
  return { ...state, gatewayAccessPolicies: list };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function main(): void {
  const seed = flag("seed", 1);
  const systemCount = flag("systems", 10_000);
  const sample = flag("sample", 100);
  const now = Date.UTC(2024, 0, 1, 10, 0);
  const state = generate(seed, systemCount);
  checkIntegrity(state);
  const gatewaySubnets = state.systems.reduce((n, s) => n + (s.allowedAsGateway ? s.gatewaySubnets.length : 0), 0);
  const policies = state.directAccessPolicies.length + state.gatewayAccessPolicies.length;

  // Warm up the JIT and the parse memo, then take the best of three full compiles.
  let maps = compileAll(state, { now });
  const fullRuns: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t = Bun.nanoseconds();
    maps = compileAll(state, { now });
    fullRuns.push(ms(Bun.nanoseconds() - t));
  }
  const full = Math.min(...fullRuns);
  let peers = 0;
  let rules = 0;
  for (const m of maps.values()) {
    peers += m.peers.length;
    rules += m.inboundRules.length + m.outboundRules.length + m.gatewayRules.length;
  }

  // Naive: compile() per system, each building its own index; timed on an even sample.
  const step = Math.max(1, Math.floor(state.systems.length / sample));
  const ids = state.systems.filter((_, i) => i % step === 0).map((s) => s.id);
  compile(state, ids[0]!, { now });
  const t0 = Bun.nanoseconds();
  for (const id of ids) compile(state, id, { now });
  const naive = (ms(Bun.nanoseconds() - t0) / ids.length) * state.systems.length;

  console.log(
    `netmap full compile: ${state.systems.length} systems, ${policies} policies, ${gatewaySubnets} gateway subnets ` +
      `(${peers} peer entries, ${rules} rules): ${fmt(full)} ms (target < ${FULL_TARGET_MS} ms, ${full < FULL_TARGET_MS ? "met" : "MISSED"}); ` +
      `naive per-system compile ${fmt(naive)} ms (scaled from ${ids.length} systems) = ${fmt(naive / full)}x faster`,
  );

  // Incremental: a series of single-policy changes, each timed from new state to new NetMaps.
  const r = rng(seed + 1);
  const incRuns: number[] = [];
  const affectedCounts: number[] = [];
  let current = state;
  for (let k = 0; k < 15; k++) {
    const next = change(current, k, r);
    const t = Bun.nanoseconds();
    const result = recompile(maps, current, next, { now });
    incRuns.push(ms(Bun.nanoseconds() - t));
    affectedCounts.push(result.recompiled.length);
    maps = result.netmaps;
    current = next;
  }
  // The naive reference on the final state; it doubles as the correctness check.
  const t1 = Bun.nanoseconds();
  const reference = compileAll(current, { now });
  const naiveFull = ms(Bun.nanoseconds() - t1);
  for (const [id, m] of reference) {
    if (netMapJson(m) !== netMapJson(maps.get(id)!)) throw new Error(`incremental NetMap of ${id} differs from a full recompute`);
  }
  const inc = median(incRuns);
  const worst = Math.max(...incRuns);
  const probe = affectedSystems(state, change(state, 0, rng(seed + 2))).size;
  console.log(
    `netmap incremental: one policy change -> new NetMaps of the affected systems (median ${median(affectedCounts)}, ` +
      `e.g. ${probe}): median ${fmt(inc)} ms, worst ${fmt(worst)} ms over ${incRuns.length} changes ` +
      `(target < ${INCREMENTAL_TARGET_MS} ms, ${worst < INCREMENTAL_TARGET_MS ? "met" : "MISSED"}); ` +
      `naive full recompute ${fmt(naiveFull)} ms = ${fmt(naiveFull / inc)}x faster`,
  );
}

if (import.meta.main) main();
