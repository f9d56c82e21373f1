/**
 * @module test/net/prefix-table.test
 * PrefixTable: hand-written cases for the behaviours cryptokey routing leans on, then
 * seeded random operation sequences checked step by step against the linear-scan oracle
 * (the approach of wireguard-go's allowedips_rand_test).
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { AddressError } from "../../core/errors.ts";
import { parseAddress, parsePrefix, prefixFromBytes, type Prefix } from "../../core/net/address.ts";
import { PrefixTable } from "../../core/net/prefix-table.ts";
import { LinearScanTable } from "./linear-scan.ts";

const SEED = 7_2024;
const p = (text: string) => parsePrefix(text);
const a = (text: string) => parseAddress(text).bytes;
const u32 = (text: string) => {
  const b = a(text);
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
};

describe("PrefixTable basics", () => {
  test("longest prefix wins, in both families", () => {
    const t = new PrefixTable<string>();
    t.insert(p("0.0.0.0/0"), "default");
    t.insert(p("172.26.0.0/20"), "gateway");
    t.insert(p("172.26.0.0/24"), "office");
    t.insert(p("172.26.0.250/32"), "printer");
    t.insert(p("::/0"), "default6");
    t.insert(p("fd7a:115c:a1e0::/48"), "overlay");
    t.insert(p("fd7a:115c:a1e0::1/128"), "peer1");

    expect(t.lookup(a("172.26.0.250"))).toBe("printer");
    expect(t.lookup(a("172.26.0.251"))).toBe("office");
    expect(t.lookup(a("172.26.1.1"))).toBe("gateway");
    expect(t.lookup(a("172.26.16.0"))).toBe("default");
    expect(t.lookupV4(u32("172.26.0.250"))).toBe("printer");
    expect(t.lookupV4(u32("172.26.15.255"))).toBe("gateway");
    expect(t.lookupV4(u32("8.8.8.8"))).toBe("default");
    // Signed int32 from bitwise arithmetic is the same address.
    expect(t.lookupV4(u32("172.26.0.250") | 0)).toBe("printer");

    expect(t.lookup(a("fd7a:115c:a1e0::1"))).toBe("peer1");
    expect(t.lookup(a("fd7a:115c:a1e0::2"))).toBe("overlay");
    expect(t.lookup(a("2001:db8::1"))).toBe("default6");
    expect(t.size).toBe(7);
  });

  test("families do not leak: ::/0 does not answer IPv4, an IPv4-mapped address is IPv6", () => {
    const t = new PrefixTable<string>();
    t.insert(p("::/0"), "v6");
    expect(t.lookup(a("10.0.0.1"))).toBeUndefined();
    expect(t.lookupV4(u32("10.0.0.1"))).toBeUndefined();
    t.insert(p("10.0.0.0/8"), "v4");
    expect(t.lookup(a("::ffff:10.0.0.1"))).toBe("v6");
    t.remove(p("::/0"));
    expect(t.lookup(a("::ffff:10.0.0.1"))).toBeUndefined();
  });

  test("/32 and /128 host routes, /0 defaults, all address extremes", () => {
    const t = new PrefixTable<string>();
    expect(t.lookupV4(0)).toBeUndefined();
    t.insert(p("255.255.255.255/32"), "top");
    t.insert(p("0.0.0.0/32"), "bottom");
    t.insert(p("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), "top6");
    t.insert(p("::/128"), "bottom6");
    expect(t.lookupV4(0xffffffff)).toBe("top");
    expect(t.lookupV4(0)).toBe("bottom");
    expect(t.lookupV4(1)).toBeUndefined();
    expect(t.lookup(a("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))).toBe("top6");
    expect(t.lookup(a("::"))).toBe("bottom6");
    expect(t.lookup(a("::1"))).toBeUndefined();
    t.insert(p("0.0.0.0/0"), "all");
    t.insert(p("::/0"), "all6");
    expect(t.lookupV4(1)).toBe("all");
    expect(t.lookup(a("::1"))).toBe("all6");
    expect(t.lookupV4(0xffffffff)).toBe("top");
  });

  test("insert replaces, get is exact, remove reports whether it removed", () => {
    const t = new PrefixTable<number>();
    t.insert(p("10.0.0.0/8"), 1);
    t.insert(p("10.0.0.0/8"), 2);
    expect(t.size).toBe(1);
    expect(t.get(p("10.0.0.0/8"))).toBe(2);
    expect(t.get(p("10.0.0.0/9"))).toBeUndefined();
    expect(t.get(p("10.0.0.0/16"))).toBeUndefined();
    expect(t.lookupV4(u32("10.1.2.3"))).toBe(2);
    expect(t.remove(p("10.0.0.0/16"))).toBe(false);
    expect(t.remove(p("10.0.0.0/8"))).toBe(true);
    expect(t.remove(p("10.0.0.0/8"))).toBe(false);
    expect(t.size).toBe(0);
    expect(t.lookupV4(u32("10.1.2.3"))).toBeUndefined();

    t.insert(p("fd00::/8"), 3);
    t.insert(p("fd00::/8"), 4);
    expect(t.get(p("fd00::/8"))).toBe(4);
    expect(t.size).toBe(1);
    expect(t.remove(p("fd00::/8"))).toBe(true);
    expect(t.remove(p("fd00::/8"))).toBe(false);
  });

  test("removing a more specific prefix uncovers the next shorter one", () => {
    const t = new PrefixTable<string>();
    t.insert(p("10.0.0.0/8"), "8");
    t.insert(p("10.1.0.0/16"), "16");
    t.insert(p("10.1.1.0/24"), "24");
    t.insert(p("10.1.1.1/32"), "32");
    const probe = u32("10.1.1.1");
    expect(t.lookupV4(probe)).toBe("32");
    t.remove(p("10.1.1.1/32"));
    expect(t.lookupV4(probe)).toBe("24");
    t.remove(p("10.1.0.0/16"));
    expect(t.lookupV4(probe)).toBe("24");
    t.remove(p("10.1.1.0/24"));
    expect(t.lookupV4(probe)).toBe("8");
    t.insert(p("10.1.0.0/16"), "16 again");
    expect(t.lookupV4(probe)).toBe("16 again");
  });

  test("a value of undefined-like falsy values is still found", () => {
    const t = new PrefixTable<number | null>();
    t.insert(p("10.0.0.0/8"), 0);
    t.insert(p("11.0.0.0/8"), null);
    expect(t.lookupV4(u32("10.0.0.1"))).toBe(0);
    expect(t.lookupV4(u32("11.0.0.1"))).toBeNull();
    expect(t.lookupPrefix(a("11.0.0.1"))?.prefix.text).toBe("11.0.0.0/8");
  });

  test("lookupPrefix returns the matching prefix and value without allocating per call", () => {
    const t = new PrefixTable<string>();
    t.insert(p("172.26.0.0/20"), "gw");
    t.insert(p("fd00::/8"), "ula");
    const hit = t.lookupPrefix(a("172.26.3.4"));
    expect(hit?.prefix.text).toBe("172.26.0.0/20");
    expect(hit?.value).toBe("gw");
    expect(t.lookupPrefix(a("172.26.3.5"))).toBe(hit!);
    expect(t.lookupPrefix(a("fd12::1"))?.prefix.text).toBe("fd00::/8");
    expect(t.lookupPrefix(a("10.0.0.1"))).toBeUndefined();
  });

  test("entries are sorted: IPv4 first, then by address, then by length", () => {
    const t = new PrefixTable<number>();
    const texts = ["fd00::/8", "10.0.0.0/16", "::/0", "10.0.0.0/8", "0.0.0.0/0", "192.168.0.0/16", "10.0.0.1/32"];
    texts.forEach((text, i) => t.insert(p(text), i));
    expect([...t.entries()].map(([prefix, v]) => `${prefix.text}=${v}`)).toEqual([
      "0.0.0.0/0=4",
      "10.0.0.0/8=3",
      "10.0.0.0/16=1",
      "10.0.0.1/32=6",
      "192.168.0.0/16=5",
      "::/0=2",
      "fd00::/8=0",
    ]);
    expect([...t].length).toBe(7);
  });

  test("the table keeps its own copy of a prefix", () => {
    const bytes = new Uint8Array([10, 0, 0, 0]);
    const t = new PrefixTable<string>();
    t.insert({ family: 4, bytes, length: 8, text: "10.0.0.0/8" }, "ten");
    bytes[0] = 11;
    expect(t.lookupV4(u32("10.1.1.1"))).toBe("ten");
    expect(t.lookupV4(u32("11.1.1.1"))).toBeUndefined();
    expect([...t.entries()][0]![0].text).toBe("10.0.0.0/8");
  });

  test("malformed prefixes and addresses are refused", () => {
    const t = new PrefixTable<string>();
    const hostBits: Prefix = { family: 4, bytes: new Uint8Array([10, 0, 0, 1]), length: 8, text: "10.0.0.1/8" };
    expect(() => t.insert(hostBits, "x")).toThrow(AddressError);
    expect(() => t.insert(hostBits, "x")).toThrow(
      `"10.0.0.1/8" is not a valid IPv4 prefix: host bits are set (did you mean 10.0.0.0/8?)`,
    );
    const wrongFamily: Prefix = { family: 6, bytes: new Uint8Array(4), length: 0, text: "::/0" };
    expect(() => t.insert(wrongFamily, "x")).toThrow(AddressError);
    expect(() => t.lookup(new Uint8Array(5))).toThrow(RangeError);
    expect(t.size).toBe(0);
  });

  test("clear empties both families and the table is usable again", () => {
    const t = new PrefixTable<string>();
    t.insert(p("10.0.0.0/8"), "a");
    t.insert(p("10.1.2.3/32"), "b");
    t.insert(p("fd00::/8"), "c");
    t.clear();
    expect(t.size).toBe(0);
    expect(t.lookupV4(u32("10.1.2.3"))).toBeUndefined();
    expect(t.lookup(a("fd00::1"))).toBeUndefined();
    expect([...t.entries()]).toEqual([]);
    expect(t.memoryStats()).toMatchObject({ v4Nodes: 1, v6Nodes: 0 });
    t.insert(p("10.1.2.3/32"), "d");
    expect(t.lookupV4(u32("10.1.2.3"))).toBe("d");
  });

  test("removal gives trie nodes back", () => {
    const t = new PrefixTable<number>();
    const prefixes = ["10.1.2.3/32", "10.1.2.0/25", "10.200.0.0/16", "10.1.0.0/17", "0.0.0.0/0", "10.1.2.128/26"];
    const four = prefixes.map(p);
    const six = ["fd00::1/128", "fd00::2/128", "fd00::/64", "fd00:1::/48", "::/0", "fd00::/8"].map(p);
    four.forEach((x, i) => t.insert(x, i));
    six.forEach((x, i) => t.insert(x, i));
    expect(t.memoryStats().v4Nodes).toBeGreaterThan(1);
    expect(t.memoryStats().v6Nodes).toBeGreaterThanOrEqual(6);
    for (const x of [...four].reverse()) expect(t.remove(x)).toBe(true);
    for (const x of six) expect(t.remove(x)).toBe(true);
    expect(t.memoryStats()).toMatchObject({ v4Nodes: 1, v6Nodes: 0 });
    // Freed nodes are reused rather than grown into.
    const before = t.memoryStats().v4Bytes;
    for (let round = 0; round < 50; round++) {
      four.forEach((x, i) => t.insert(x, i));
      four.forEach((x) => t.remove(x));
    }
    expect(t.memoryStats().v4Bytes).toBe(before);
  });

  test("many prefixes grow the trie storage without losing answers", () => {
    const t = new PrefixTable<number>();
    const host = (i: number) => new Uint8Array([10, i >> 4, (i & 15) << 4, 1]);
    for (let i = 0; i < 4096; i++) t.insert(prefixFromBytes(host(i), 32), i);
    for (let i = 0; i < 4096; i++) expect(t.lookupV4(u32Of(host(i)))).toBe(i);
    expect(t.size).toBe(4096);
  });
});

// ---- Against the oracle ----

type Op =
  | { kind: "insert"; bytes: Uint8Array; length: number }
  | { kind: "remove"; bytes: Uint8Array; length: number }
  | { kind: "lookup"; bytes: Uint8Array };

function maskBytes(bytes: Uint8Array, length: number): Uint8Array {
  const out = bytes.slice();
  for (let i = 0; i < out.length; i++) {
    const keep = length - 8 * i;
    if (keep < 8) out[i] = keep <= 0 ? 0 : out[i]! & (0xff << (8 - keep));
  }
  return out;
}

/**
 * Addresses near a few fixed points: random bits below a random depth, so generated prefixes
 * nest and overlap often instead of being scattered and disjoint.
 */
function nearby(bases: Uint8Array[]): fc.Arbitrary<Uint8Array> {
  const width = bases[0]!.length * 8;
  return fc
    .tuple(
      fc.constantFrom(...bases),
      fc.uint8Array({ minLength: width / 8, maxLength: width / 8 }),
      fc.integer({ min: 0, max: width }),
    )
    .map(([base, noise, depth]) => {
      const out = base.slice();
      // Keep the top `depth` bits of the base, take the rest from the noise.
      const keep = maskBytes(base, depth);
      for (let i = 0; i < out.length; i++) {
        const bitsKept = Math.max(0, Math.min(8, depth - 8 * i));
        const hostMask = bitsKept === 8 ? 0 : 0xff >> bitsKept;
        out[i] = keep[i]! | (noise[i]! & hostMask);
      }
      return out;
    });
}

function opsFor(family: 4 | 6): fc.Arbitrary<Op[]> {
  const bases =
    family === 4
      ? ["10.0.0.0", "10.1.2.3", "172.26.0.250", "0.0.0.0", "255.255.255.255", "192.168.1.1"].map(a)
      : ["::", "fd7a:115c:a1e0::1", "2001:db8::", "::ffff:10.0.0.1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"].map(a);
  const max = family === 4 ? 32 : 128;
  const lengths =
    family === 4
      ? fc.oneof(fc.constantFrom(0, 1, 8, 16, 24, 31, 32), fc.integer({ min: 0, max }))
      : fc.oneof(fc.constantFrom(0, 1, 32, 48, 64, 96, 127, 128), fc.integer({ min: 0, max }));
  const address = nearby(bases);
  const prefix = fc.tuple(address, lengths).map(([bytes, length]) => ({ bytes: maskBytes(bytes, length), length }));
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 4, arbitrary: prefix.map((x) => ({ kind: "insert" as const, ...x })) },
    { weight: 2, arbitrary: prefix.map((x) => ({ kind: "remove" as const, ...x })) },
    { weight: 5, arbitrary: address.map((bytes) => ({ kind: "lookup" as const, bytes })) },
  );
  return fc.array(op, { minLength: 1, maxLength: 150 });
}

function u32Of(bytes: Uint8Array): number {
  return ((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0;
}

/** Lookups the oracle and the table must agree on: every stored network, its last address, and neighbours. */
function probes(oracle: LinearScanTable<number>): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const e of oracle.all()) {
    const last = e.bytes.slice();
    for (let i = 0; i < last.length; i++) {
      const keep = e.length - 8 * i;
      if (keep < 8) last[i] = last[i]! | (keep <= 0 ? 0xff : 0xff >> keep);
    }
    out.push(e.bytes, last);
    // One below the network and one above the last address, borrowing and carrying (Uint8Array wraps).
    const below = e.bytes.slice();
    for (let i = below.length - 1; i >= 0; i--) {
      const was = below[i]!;
      below[i] = was - 1;
      if (was !== 0) break;
    }
    const above = last.slice();
    for (let i = above.length - 1; i >= 0; i--) {
      const was = above[i]!;
      above[i] = was + 1;
      if (was !== 255) break;
    }
    out.push(below, above);
  }
  return out;
}

function runAgainstOracle(family: 4 | 6, ops: Op[]): void {
  const table = new PrefixTable<number>();
  const oracle = new LinearScanTable<number>();
  const check = (bytes: Uint8Array) => {
    const expected = oracle.lookupEntry(bytes);
    expect(table.lookup(bytes)).toBe(expected?.value);
    if (family === 4) expect(table.lookupV4(u32Of(bytes))).toBe(expected?.value);
    const got = table.lookupPrefix(bytes);
    expect(got?.prefix.length).toBe(expected?.length);
    if (expected) expect([...got!.prefix.bytes]).toEqual([...expected.bytes]);
  };

  ops.forEach((op, i) => {
    if (op.kind === "insert") {
      table.insert(prefixFromBytes(op.bytes, op.length), i);
      oracle.insert(op.bytes, op.length, i);
    } else if (op.kind === "remove") {
      expect(table.remove(prefixFromBytes(op.bytes, op.length))).toBe(oracle.remove(op.bytes, op.length));
    } else {
      check(op.bytes);
    }
    expect(table.size).toBe(oracle.size);
  });

  for (const bytes of probes(oracle)) check(bytes);
  for (const e of oracle.all()) expect(table.get(prefixFromBytes(e.bytes, e.length))).toBe(e.value);
  const sorted = [...oracle.all()]
    .map((e) => prefixFromBytes(e.bytes, e.length))
    .sort((x, y) => {
      for (let i = 0; i < x.bytes.length; i++) if (x.bytes[i] !== y.bytes[i]) return x.bytes[i]! - y.bytes[i]!;
      return x.length - y.length;
    })
    .map((x) => x.text);
  expect([...table.entries()].map(([prefix]) => prefix.text)).toEqual(sorted);

  // Emptying the table in a shuffled order must leave nothing behind, not even trie nodes.
  const rest = [...oracle.all()].sort((x, y) => (x.value * 7919) % 101 - (y.value * 7919) % 101);
  for (const e of rest) {
    expect(table.remove(prefixFromBytes(e.bytes, e.length))).toBe(true);
    oracle.remove(e.bytes, e.length);
    for (const bytes of probes(oracle).slice(0, 8)) check(bytes);
  }
  expect(table.size).toBe(0);
  expect(table.memoryStats()).toMatchObject({ v4Nodes: 1, v6Nodes: 0 });
}

describe("PrefixTable against a linear scan (seeded)", () => {
  test("IPv4: random inserts, removes and lookups", () => {
    fc.assert(
      fc.property(opsFor(4), (ops) => runAgainstOracle(4, ops)),
      { seed: SEED, numRuns: 300 },
    );
  });

  test("IPv6: random inserts, removes and lookups", () => {
    fc.assert(
      fc.property(opsFor(6), (ops) => runAgainstOracle(6, ops)),
      { seed: SEED, numRuns: 300 },
    );
  });

  test("both families in one table do not interfere", () => {
    fc.assert(
      fc.property(opsFor(4), opsFor(6), (ops4, ops6) => {
        const table = new PrefixTable<string>();
        const o4 = new LinearScanTable<string>();
        const o6 = new LinearScanTable<string>();
        const all = ops4.map((op) => [op, o4] as const);
        ops6.forEach((op, i) => all.splice((i * 2) % (all.length + 1), 0, [op, o6] as const));
        all.forEach(([op, oracle], i) => {
          if (op.kind === "insert") {
            table.insert(prefixFromBytes(op.bytes, op.length), `v${i}`);
            oracle.insert(op.bytes, op.length, `v${i}`);
          } else if (op.kind === "remove") {
            expect(table.remove(prefixFromBytes(op.bytes, op.length))).toBe(oracle.remove(op.bytes, op.length));
          } else {
            expect(table.lookup(op.bytes)).toBe(oracle.lookup(op.bytes));
          }
        });
        expect(table.size).toBe(o4.size + o6.size);
      }),
      { seed: SEED, numRuns: 100 },
    );
  });

  test("IPv4: 3,000 random prefixes of length 8..32, the bench's shape, 30,000 lookups", () => {
    let state = 0x2545f491;
    const next = () => {
      // xorshift32: deterministic and independent of fast-check's generator.
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return state >>> 0;
    };
    const table = new PrefixTable<number>();
    const oracle = new LinearScanTable<number>();
    const nets: number[] = [];
    for (let i = 0; i < 3000; i++) {
      const length = 8 + (next() % 25);
      const net = (next() & (0xffffffff << (32 - length))) >>> 0;
      const bytes = new Uint8Array([net >>> 24, net >>> 16, net >>> 8, net]);
      table.insert(prefixFromBytes(bytes, length), i);
      oracle.insert(bytes, length, i);
      nets.push(net);
    }
    expect(table.size).toBe(oracle.size);
    let hits = 0;
    for (let i = 0; i < 30000; i++) {
      const addr = (i & 1 ? next() : nets[next() % nets.length]! | (next() & 0xff)) >>> 0;
      const bytes = new Uint8Array([addr >>> 24, addr >>> 16, addr >>> 8, addr]);
      const expected = oracle.lookup(bytes);
      if (expected !== undefined) hits++;
      expect(table.lookupV4(addr)).toBe(expected);
    }
    // Enough of the lookups must land inside prefixes for the agreement to mean something.
    expect(hits).toBeGreaterThan(10000);
  });
});
