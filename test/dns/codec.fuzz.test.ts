/**
 * @module test/dns/codec.fuzz.test
 * Property and fuzz tests for core/dns/codec with fixed seeds:
 * - encode -> decode gives the message back (and truncation keeps a prefix of the records);
 * - random bytes and mutated valid messages (bit flips, cut, spliced bytes, forged pointers and
 *   lengths) never make decodeMessage throw anything but DnsFormatError;
 * - whatever decodes re-encodes, and decoding that gives the same message (idempotence).
 * - the stub and the forwarder answer random and mutated queries with null (a counted drop) or
 *   a reply that decodes, and never reject.
 * Each fuzz test prints how many inputs decoded and the most common rejection reasons.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { CLASS_IN, decodeMessage, encodeMessage, makeResponse, TYPE, type DnsMessage } from "../../core/dns/codec.ts";
import { DnsFormatError } from "../../core/dns/errors.ts";
import { createGatewayForwarder, policyFromNetMap } from "../../core/dns/forwarder.ts";
import { createStub } from "../../core/dns/stub.ts";
import { silentLogger } from "../../core/log.ts";
import { message } from "./arbitrary.ts";

const SEED = 20240917;
const RUNS = Number(process.env.DNS_FUZZ_RUNS ?? 4000);

interface Stats {
  total: number;
  decoded: number;
  reasons: Map<string, number>;
}

function newStats(): Stats {
  return { total: 0, decoded: 0, reasons: new Map() };
}

/** Decodes; only DnsFormatError may escape (rethrown as a property failure otherwise). */
function tryDecode(bytes: Uint8Array, stats: Stats): DnsMessage | null {
  stats.total++;
  try {
    const m = decodeMessage(bytes);
    stats.decoded++;
    return m;
  } catch (err) {
    if (!(err instanceof DnsFormatError)) throw new Error(`decode threw ${String(err)} for ${Buffer.from(bytes).toString("hex")}`);
    stats.reasons.set(err.reason, (stats.reasons.get(err.reason) ?? 0) + 1);
    return null;
  }
}

function report(name: string, s: Stats): void {
  const top = [...s.reasons.entries()].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([r, n]) => `${r}=${n}`);
  console.log(`dns fuzz: ${name} inputs=${s.total} decoded=${s.decoded} rejected=${s.total - s.decoded} top=${top.join(",")}`);
}

/** Whatever decoded must re-encode and decode to the same message. */
function checkIdempotent(m: DnsMessage): void {
  const again = decodeMessage(encodeMessage(m));
  expect(again).toEqual(m);
}

type Mutation =
  | { op: "flip"; at: number; bit: number }
  | { op: "set"; at: number; value: number }
  | { op: "cut"; at: number }
  | { op: "insert"; at: number; bytes: Uint8Array }
  | { op: "pointer"; at: number; target: number }
  | { op: "count"; which: number; value: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant("set" as const), at: fc.nat(), value: fc.constantFrom(0, 0x3f, 0x40, 0x80, 0xc0, 0xff, 1, 63, 64) }),
  fc.record({ op: fc.constant("cut" as const), at: fc.nat() }),
  fc.record({ op: fc.constant("insert" as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }) }),
  fc.record({ op: fc.constant("pointer" as const), at: fc.nat(), target: fc.nat({ max: 0x3fff }) }),
  fc.record({ op: fc.constant("count" as const), which: fc.integer({ min: 0, max: 3 }), value: fc.constantFrom(0, 1, 2, 255, 0xffff) }),
);

function mutate(src: Uint8Array, ms: readonly Mutation[]): Uint8Array {
  let b = new Uint8Array(src);
  for (const m of ms) {
    if (b.length === 0) break;
    const at = "at" in m ? m.at % b.length : 0;
    switch (m.op) {
      case "flip":
        b[at] = b[at]! ^ (1 << m.bit);
        break;
      case "set":
        b[at] = m.value;
        break;
      case "cut":
        b = b.slice(0, at);
        break;
      case "insert": {
        const next = new Uint8Array(b.length + m.bytes.length);
        next.set(b.subarray(0, at));
        next.set(m.bytes, at);
        next.set(b.subarray(at), at + m.bytes.length);
        b = next;
        break;
      }
      case "pointer":
        if (at + 1 < b.length) {
          b[at] = 0xc0 | (m.target >> 8);
          b[at + 1] = m.target & 0xff;
        }
        break;
      case "count":
        if (b.length >= 12) {
          b[4 + 2 * m.which] = m.value >> 8;
          b[5 + 2 * m.which] = m.value & 0xff;
        }
        break;
    }
  }
  return b;
}

describe("round trip", () => {
  test("decode(encode(m)) equals m", () => {
    fc.assert(
      fc.property(message, (m) => {
        expect(decodeMessage(encodeMessage(m))).toEqual(m);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  test("truncated encoding fits, keeps a prefix of the records, sets TC when answers were cut", () => {
    fc.assert(
      fc.property(message, fc.integer({ min: 12, max: 700 }), (m, maxSize) => {
        const bytes = encodeMessage(m, { maxSize });
        const d = decodeMessage(bytes);
        const floor = encodeMessage({ ...m, answers: [], authorities: [], additionals: [] }).length;
        expect(bytes.length).toBeLessThanOrEqual(Math.max(maxSize, floor));
        expect(d.questions).toEqual(m.questions);
        expect(d.edns).toEqual(m.edns);
        expect(d.answers).toEqual(m.answers.slice(0, d.answers.length));
        const answersCut = d.answers.length < m.answers.length || d.authorities.length < m.authorities.length;
        if (answersCut) expect(d.tc).toBe(true);
        else expect(d.tc).toBe(m.tc);
        if (d.authorities.length > 0) expect(d.answers.length).toBe(m.answers.length);
      }),
      { seed: SEED + 1, numRuns: RUNS },
    );
  });
});

describe("fuzz", () => {
  test("random bytes: only DnsFormatError; whatever decodes is idempotent", () => {
    const stats = newStats();
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 600 }),
          // A plausible header in front of random bytes reaches the section parsers more often.
          fc.tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 4, maxLength: 4 }), fc.uint8Array({ maxLength: 300 })).map(
            ([head, counts, rest]) => Uint8Array.from([...head, ...counts.flatMap((c) => [0, c]), ...rest]),
          ),
        ),
        (bytes) => {
          const m = tryDecode(bytes, stats);
          if (m !== null) checkIdempotent(m);
        },
      ),
      { seed: SEED + 2, numRuns: RUNS * 5 },
    );
    report("random", stats);
    expect(stats.total).toBe(RUNS * 5);
  });

  test("mutated valid messages: only DnsFormatError; whatever decodes is idempotent", () => {
    const stats = newStats();
    fc.assert(
      fc.property(message, fc.array(mutation, { minLength: 1, maxLength: 4 }), (m, ms) => {
        const bytes = mutate(encodeMessage(m), ms);
        const d = tryDecode(bytes, stats);
        if (d !== null) checkIdempotent(d);
      }),
      { seed: SEED + 3, numRuns: RUNS * 5 },
    );
    report("mutated", stats);
    // Mutations must leave a fair share decodable, or the fuzz only exercises the first checks.
    expect(stats.decoded).toBeGreaterThan(stats.total / 10);
  });
});

describe("handlers never crash on bad queries", () => {
  // An upstream/gateway that echoes a valid reply (so the filtering paths run too).
  const echo = async (query: Uint8Array): Promise<Uint8Array> => {
    const q = decodeMessage(query);
    const res = makeResponse(q, 0);
    for (const x of q.questions) {
      res.answers.push({ name: x.name, type: TYPE.A, class: CLASS_IN, ttl: 1, data: { kind: "address", address: Uint8Array.of(10, 0, 0, 1) } });
      res.answers.push({ name: x.name, type: TYPE.A, class: CLASS_IN, ttl: 1, data: { kind: "address", address: Uint8Array.of(192, 168, 0, 1) } });
    }
    return encodeMessage(res);
  };
  const stub = createStub({ peers: () => [{ id: "a", name: "A", virtualAddress: "100.64.0.2" }], forward: echo, logger: silentLogger });
  const forwarder = createGatewayForwarder({
    upstreams: ["10.0.0.53"],
    hosts: [],
    policy: policyFromNetMap({
      gatewayRules: [{ action: "allow", sender: "a", senderAddress: "100.64.0.2", subnet: "10.0.0.0/24", nat: true, dst: "10.0.0.0/24", protocol: "any", policy: "p" }],
    }),
    resolve: echo,
    logger: silentLogger,
  });

  test("stub and forwarder: null or a decodable reply, for random and mutated queries", async () => {
    let replies = 0;
    let drops = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }),
          fc.tuple(message, fc.array(mutation, { maxLength: 3 })).map(([m, ms]) => mutate(encodeMessage({ ...m, qr: false }), ms)),
        ),
        fc.constantFrom("udp" as const, "tcp" as const),
        async (bytes, transport) => {
          for (const h of [stub, forwarder]) {
            const res = await h.handle(bytes, { address: "100.64.0.2", transport });
            if (res === null) {
              drops++;
              continue;
            }
            replies++;
            const d = decodeMessage(res);
            expect(d.qr).toBe(true);
            // Never a hidden address, whatever the question was.
            if (h === forwarder) expect(Buffer.from(res).toString("hex").includes("c0a80001")).toBe(false);
          }
        },
      ),
      { seed: SEED + 4, numRuns: Math.max(500, RUNS / 2) },
    );
    console.log(`dns fuzz: handlers replies=${replies} drops=${drops} stub=${JSON.stringify(stub.counters).slice(0, 300)}`);
    expect(replies).toBeGreaterThan(0);
  });
});
