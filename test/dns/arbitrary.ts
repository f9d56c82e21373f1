/**
 * @module test/dns/arbitrary
 * fast-check arbitraries for DNS messages: names drawn mostly from a small label pool (so
 * compression has suffixes to share) with some random-byte labels (escapes), record data that
 * matches its type the way the decoder reads it, and optional EDNS.
 */
import fc from "fast-check";
import { CLASS_IN, labelsToName, TYPE, type DnsMessage, type DnsRData, type DnsRecord, type Edns } from "../../core/dns/codec.ts";

const enc = new TextEncoder();
const POOL = ["www", "corp", "net", "example", "com", "a", "Mail", "_tcp", "xn--bcher-kva"].map((s) => enc.encode(s));

export const label = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...POOL) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 12 }) },
);

export const name = fc.array(label, { minLength: 0, maxLength: 5 }).map(labelsToName);

const NAME_TYPES = [TYPE.NS, TYPE.MD, TYPE.MF, TYPE.CNAME, TYPE.MB, TYPE.MG, TYPE.MR, TYPE.PTR];
const KNOWN: ReadonlySet<number> = new Set([...NAME_TYPES, TYPE.A, TYPE.AAAA, TYPE.MX, TYPE.SOA, TYPE.SRV, TYPE.TXT, TYPE.OPT]);

const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const cls = fc.oneof({ weight: 5, arbitrary: fc.constant(CLASS_IN) }, { weight: 1, arbitrary: u16 });

function rec(type: fc.Arbitrary<number>, klass: fc.Arbitrary<number>, data: fc.Arbitrary<DnsRData>): fc.Arbitrary<DnsRecord> {
  return fc.record({ name, type, class: klass, ttl: u32, data });
}

export const record: fc.Arbitrary<DnsRecord> = fc.oneof(
  rec(fc.constant(TYPE.A), fc.constant(CLASS_IN), fc.uint8Array({ minLength: 4, maxLength: 4 }).map((address) => ({ kind: "address" as const, address }))),
  rec(fc.constant(TYPE.AAAA), fc.constant(CLASS_IN), fc.uint8Array({ minLength: 16, maxLength: 16 }).map((address) => ({ kind: "address" as const, address }))),
  rec(fc.constantFrom(...NAME_TYPES), cls, name.map((n) => ({ kind: "name" as const, name: n }))),
  rec(fc.constant(TYPE.MX), cls, fc.record({ kind: fc.constant("mx" as const), preference: u16, exchange: name })),
  rec(
    fc.constant(TYPE.SOA),
    cls,
    fc.record({ kind: fc.constant("soa" as const), mname: name, rname: name, serial: u32, refresh: u32, retry: u32, expire: u32, minimum: u32 }),
  ),
  rec(fc.constant(TYPE.SRV), cls, fc.record({ kind: fc.constant("srv" as const), priority: u16, weight: u16, port: u16, target: name })),
  rec(fc.constant(TYPE.TXT), cls, fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 4 }).map((strings) => ({ kind: "txt" as const, strings }))),
  rec(
    u16.filter((t) => !KNOWN.has(t)),
    cls,
    fc.uint8Array({ maxLength: 30 }).map((bytes) => ({ kind: "opaque" as const, bytes })),
  ),
  // A/AAAA outside class IN are opaque.
  rec(
    fc.constantFrom(TYPE.A, TYPE.AAAA),
    u16.filter((c) => c !== CLASS_IN),
    fc.uint8Array({ maxLength: 20 }).map((bytes) => ({ kind: "opaque" as const, bytes })),
  ),
);

export const edns: fc.Arbitrary<Edns> = fc.record({
  udpSize: u16,
  version: fc.integer({ min: 0, max: 255 }),
  dnssecOk: fc.boolean(),
  z: fc.integer({ min: 0, max: 0x7fff }),
  options: fc.array(fc.record({ code: u16, data: fc.uint8Array({ maxLength: 20 }) }), { maxLength: 3 }),
});

export const message: fc.Arbitrary<DnsMessage> = fc
  .record({
    id: u16,
    qr: fc.boolean(),
    opcode: fc.integer({ min: 0, max: 15 }),
    aa: fc.boolean(),
    tc: fc.boolean(),
    rd: fc.boolean(),
    ra: fc.boolean(),
    z: fc.boolean(),
    ad: fc.boolean(),
    cd: fc.boolean(),
    questions: fc.array(fc.record({ name, type: u16, class: cls }), { maxLength: 2 }),
    answers: fc.array(record, { maxLength: 6 }),
    authorities: fc.array(record, { maxLength: 3 }),
    additionals: fc.array(record, { maxLength: 3 }),
    edns: fc.option(edns, { nil: undefined }),
  })
  .chain((m) =>
    fc.integer({ min: 0, max: m.edns ? 0xfff : 15 }).map((rcode): DnsMessage => {
      const out: DnsMessage = { ...m, rcode };
      if (out.edns === undefined) delete out.edns;
      return out;
    }),
  );
