/**
 * @module scripts/bench/filter
 * The gateway filter's per-packet cost with 10 rules against 10,000 rules in the same run, so the
 * ratio holds on any machine: GatewayFilter.check on parsed headers, and Gateway.inbound (parse,
 * filter, flow record) on whole packets. The compiled interval search should make 10,000 rules
 * cost about what 10 do. Usage: bun scripts/bench/filter.ts [--seed N] [--rules N]
 */
import { GatewayFilter, type GatewayRule } from "../../core/dataplane/filter.ts";
import { Gateway } from "../../core/dataplane/gateway.ts";
import { PacketHeaders } from "../../core/dataplane/headers.ts";

const KEY = "www5MrbYq4EHZJx50mKMShkucSDfL6B1P/fmcGk+hRs=";
const SRC = [100, 64, 0, 2];

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

const text = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

/** `count` rules inside 10.0.0.0/8: single IPs, small ranges and /28s, TCP with ports or any. */
function rules(count: number, next: () => number): { allow: GatewayRule[]; hosts: number[] } {
  const allow: GatewayRule[] = [];
  const hosts: number[] = [];
  for (let i = 0; i < count; i++) {
    const base = (0x0a000000 | (next() & 0xfffff0)) >>> 0;
    hosts.push(base);
    const shape = i % 3;
    const destination = shape === 0 ? text(base) : shape === 1 ? `${text(base)}-${text(base + 5)}` : `${text(base)}/28`;
    allow.push(i % 2 === 0 ? { destination, protocol: "tcp", ports: String(1 + (next() % 1000)) } : { destination, protocol: "any" });
  }
  return { allow, hosts };
}

const PACKETS = 4096;

/** TCP SYNs from the sender: half to a rule's base address, half anywhere in 10/8. */
function packets(hosts: number[], next: () => number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < PACKETS; i++) {
    const dst = i & 1 ? (0x0a000000 | (next() & 0xffffff)) >>> 0 : hosts[next() % hosts.length]!;
    const p = new Uint8Array(40);
    p[0] = 0x45;
    p[3] = 40;
    p[8] = 64;
    p[9] = 6;
    p.set(SRC, 12);
    p[16] = dst >>> 24;
    p[17] = (dst >>> 16) & 255;
    p[18] = (dst >>> 8) & 255;
    p[19] = dst & 255;
    const sport = 1024 + (next() % 60000);
    const dport = 1 + (next() % 1000);
    p[20] = sport >> 8;
    p[21] = sport & 255;
    p[22] = dport >> 8;
    p[23] = dport & 255;
    p[32] = 5 << 4;
    p[33] = 0x02;
    out.push(p);
  }
  return out;
}

function measure(minMs: number, fn: () => number): { nsPerPacket: number; sink: number } {
  let n = 0;
  let sink = 0;
  const start = Bun.nanoseconds();
  let elapsed = 0;
  do {
    sink += fn();
    n += PACKETS;
    elapsed = Bun.nanoseconds() - start;
  } while (elapsed < minMs * 1e6);
  return { nsPerPacket: elapsed / n, sink };
}

function setup(count: number, seed: number) {
  const next = rng(seed);
  const { allow, hosts } = rules(count, next);
  const config = {
    senders: [{ peerPublicKey: KEY, virtualAddresses: ["100.64.0.2"], allow }],
    localAddresses: ["100.64.0.1", "10.0.0.1"],
    overlayNetwork: "100.64.0.0/10",
  };
  const t0 = performance.now();
  const filter = new GatewayFilter(config);
  const compileMs = performance.now() - t0;
  const gateway = new Gateway({ ...config, maxFlows: 65_536 }, { seed });
  const pkts = packets(hosts, next);
  const parsed = pkts.map((p) => {
    const h = new PacketHeaders();
    h.parse(p, p.length);
    return h;
  });
  const sender = filter.sender(KEY);
  const gwSender = gateway.filter.sender(KEY);
  const kinds = parsed.map((h) => filter.destinationKind(h));
  const check = () => {
    let allowed = 0;
    for (let i = 0; i < PACKETS; i++) if (filter.check(sender, parsed[i]!, kinds[i]!) === 0) allowed++;
    return allowed;
  };
  let now = 0;
  const inbound = () => {
    let allowed = 0;
    now++;
    for (let i = 0; i < PACKETS; i++) {
      const p = pkts[i]!;
      if (gateway.inbound(gwSender, p, p.length, now) === 0) allowed++;
    }
    return allowed;
  };
  return { filter, compileMs, check, inbound };
}

const seed = flag("seed", 1);
const many = flag("rules", 10_000);
const small = setup(10, seed);
const big = setup(many, seed + 1);

// Warm both up so the JIT has reached its top tier, then alternate short runs and keep each
// side's best, so a busy machine skews neither side more than the other.
measure(200, small.check);
measure(200, big.check);
measure(200, small.inbound);
measure(200, big.inbound);
const best = { checkSmall: Infinity, checkBig: Infinity, inSmall: Infinity, inBig: Infinity };
let sink = 0;
for (let round = 0; round < 7; round++) {
  for (const [name, fn] of [
    ["checkSmall", small.check],
    ["checkBig", big.check],
    ["inSmall", small.inbound],
    ["inBig", big.inbound],
  ] as const) {
    const m = measure(150, fn);
    sink += m.sink;
    best[name] = Math.min(best[name], m.nsPerPacket);
  }
}
const checkSmall = { nsPerPacket: best.checkSmall };
const checkBig = { nsPerPacket: best.checkBig };
const inSmall = { nsPerPacket: best.inSmall };
const inBig = { nsPerPacket: best.inBig };

const f = (n: number) => n.toFixed(1);
const d = big.filter.describe();
console.log(`rules: 10 vs ${many.toLocaleString("en-US")} (seed ${seed}); ${many} rules compile to ${d.intervals} intervals, ${d.verdicts} verdicts in ${f(big.compileMs)} ms`);
console.log(`filter.check     10 rules: ${f(checkSmall.nsPerPacket)} ns/packet   ${many} rules: ${f(checkBig.nsPerPacket)} ns/packet   ratio ${(checkBig.nsPerPacket / checkSmall.nsPerPacket).toFixed(2)}`);
console.log(`gateway.inbound  10 rules: ${f(inSmall.nsPerPacket)} ns/packet   ${many} rules: ${f(inBig.nsPerPacket)} ns/packet   ratio ${(inBig.nsPerPacket / inSmall.nsPerPacket).toFixed(2)}`);
console.log(`throughput ratio (inbound, ${many} rules vs 10): ${(inSmall.nsPerPacket / inBig.nsPerPacket).toFixed(3)}`);
if (sink < 0) console.log("");
