/**
 * @module scripts/bench/prefix-table
 * PrefixTable.lookupV4 against the linear-scan reference on the same 10,000 random IPv4
 * prefixes (lengths 8..32) in the same run, so the ratio holds on any machine. Target: at
 * least 5,000,000 lookups/s. Usage: bun scripts/bench/prefix-table.ts [--seed N] [--prefixes N]
 */
import { prefixFromBytes } from "../../core/net/address.ts";
import { PrefixTable } from "../../core/net/prefix-table.ts";
import { LinearScanV4 } from "../../test/net/linear-scan.ts";

const TARGET = 5_000_000;

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** mulberry32: a seeded generator, so every run measures the same table and addresses. */
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

/** Runs `fn` over batches until at least `minMs` have passed; returns calls per second. */
function measure(minMs: number, batch: number, fn: (n: number) => number): { perSecond: number; sink: number } {
  let calls = 0;
  let sink = 0;
  const start = Bun.nanoseconds();
  let elapsed = 0;
  do {
    sink += fn(batch);
    calls += batch;
    elapsed = Bun.nanoseconds() - start;
  } while (elapsed < minMs * 1e6);
  return { perSecond: (calls / elapsed) * 1e9, sink };
}

const seed = flag("seed", 1);
const count = flag("prefixes", 10_000);
const next = rng(seed);

const table = new PrefixTable<number>();
const oracle = new LinearScanV4<number>();
const bytes = new Uint8Array(4);
const nets: number[] = [];
while (table.size < count) {
  const length = 8 + (next() % 25);
  const net = (next() & (length === 0 ? 0 : (0xffffffff << (32 - length)))) >>> 0;
  bytes[0] = net >>> 24;
  bytes[1] = net >>> 16;
  bytes[2] = net >>> 8;
  bytes[3] = net;
  const prefix = prefixFromBytes(bytes, length);
  if (table.get(prefix) !== undefined) continue;
  table.insert(prefix, table.size);
  oracle.insert(net, length, table.size - 1);
  nets.push(net);
}

// Half the addresses fall inside a stored prefix (so lookups go deep), half are uniform.
const ADDRS = 1 << 16;
const addrs = new Uint32Array(ADDRS);
for (let i = 0; i < ADDRS; i++) {
  addrs[i] = i & 1 ? next() : (nets[next() % nets.length]! | (next() & 0xff)) >>> 0;
}

// Both must agree before either figure means anything.
for (let i = 0; i < 2000; i++) {
  const a = addrs[i]!;
  if (table.lookupV4(a) !== oracle.lookupV4(a)) throw new Error(`mismatch at ${a}`);
}

let cursor = 0;
const lookupBatch = (n: number) => {
  let hits = 0;
  for (let i = 0; i < n; i++) {
    if (table.lookupV4(addrs[(cursor + i) & (ADDRS - 1)]!) !== undefined) hits++;
  }
  cursor = (cursor + n) & (ADDRS - 1);
  return hits;
};
const scanBatch = (n: number) => {
  let hits = 0;
  for (let i = 0; i < n; i++) {
    if (oracle.lookupV4(addrs[(cursor + i) & (ADDRS - 1)]!) !== undefined) hits++;
  }
  cursor = (cursor + n) & (ADDRS - 1);
  return hits;
};

measure(200, 1 << 16, lookupBatch); // warm-up: let the JIT reach its top tier first
const fast = measure(1000, 1 << 16, lookupBatch);
measure(100, 64, scanBatch);
const slow = measure(1000, 64, scanBatch);

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const stats = table.memoryStats();
console.log(`prefixes: ${fmt(table.size)} (seed ${seed}, lengths 8..32)`);
console.log(`trie nodes: ${fmt(stats.v4Nodes)}, trie memory: ${fmt(stats.v4Bytes / 1024)} KiB`);
console.log(`prefix-table lookups/s: ${fmt(fast.perSecond)}`);
console.log(`linear-scan lookups/s: ${fmt(slow.perSecond)}`);
console.log(`ratio: ${fmt(fast.perSecond / slow.perSecond)}x`);
const met = fast.perSecond >= TARGET;
const margin = (fast.perSecond / TARGET).toFixed(1);
console.log(`target ${fmt(TARGET)}/s: ${met ? "met" : "NOT met"} (${margin}x the target)`);
if (fast.sink + slow.sink < 0) console.log(""); // keeps the loops' results observable
