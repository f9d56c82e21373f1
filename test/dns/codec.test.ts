/**
 * @module test/dns/codec.test
 * core/dns/codec: hand-built wire messages (compression as real servers write it, EDNS), each
 * malformed shape with its reason, encoder compression and truncation, name escapes.
 */
import { describe, expect, test } from "bun:test";
import {
  CLASS_IN,
  decodeHeader,
  decodeMessage,
  encodeMessage,
  formErrFor,
  inZone,
  makeQuery,
  makeResponse,
  nameToLabels,
  RCODE,
  sameName,
  TYPE,
  type DnsMessage,
  type DnsRecord,
} from "../../core/dns/codec.ts";
import { DnsFormatError } from "../../core/dns/errors.ts";

function hex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function reasonOf(bytes: Uint8Array): string {
  try {
    decodeMessage(bytes);
  } catch (err) {
    expect(err).toBeInstanceOf(DnsFormatError);
    return (err as DnsFormatError).reason;
  }
  return "decoded";
}

const HEADER_1Q = "abcd 0100 0001 0000 0000 0000";
// "dbserver1.corp.net" A IN
const QNAME = "09 6462736572766572 31 04 636f7270 03 6e6574 00".replace(/ /g, "");
const Q = `${QNAME} 0001 0001`;

// A response the way dnsmasq writes it: the answer's owner is a pointer to the question (0xc00c).
const RESPONSE = hex(`abcd 8580 0001 0001 0000 0000 ${Q} c00c 0001 0001 00000e10 0004 0a00001e`);

describe("decode", () => {
  test("a compressed response", () => {
    const m = decodeMessage(RESPONSE);
    expect(m.id).toBe(0xabcd);
    expect(m.qr && m.aa && m.rd && m.ra).toBe(true);
    expect(m.rcode).toBe(0);
    expect(m.questions).toEqual([{ name: "dbserver1.corp.net", type: TYPE.A, class: CLASS_IN }]);
    expect(m.answers).toEqual([
      { name: "dbserver1.corp.net", type: TYPE.A, class: CLASS_IN, ttl: 3600, data: { kind: "address", address: Uint8Array.of(10, 0, 0, 30) } },
    ]);
  });

  test("EDNS: OPT lifted out, UDP size, DO, extended rcode, options opaque", () => {
    // OPT: root, type 41, class 1232, ttl = ext rcode 1 | version 0 | DO, rdlen 8, cookie option 10.
    const bytes = hex(`abcd 8183 0001 0000 0000 0001 ${Q} 00 0029 04d0 01008000 0008 000a 0004 deadbeef`);
    const m = decodeMessage(bytes);
    expect(m.additionals).toEqual([]);
    expect(m.edns).toEqual({ udpSize: 1232, version: 0, dnssecOk: true, z: 0, options: [{ code: 10, data: hex("deadbeef") }] });
    expect(m.rcode).toBe((1 << 4) | 3);
    expect(decodeMessage(encodeMessage(m))).toEqual(m);
  });

  test("names: pointer chains into earlier names, case kept, escapes", () => {
    // Question www.corp.net; answer CNAME owner c00c, rdata "db" + pointer to "corp.net" (offset 16).
    const bytes = hex(`0001 8180 0001 0001 0000 0000 03 777777 04 434f5250 03 6e6574 00 0001 0001 c00c 0005 0001 0000003c 0005 02 6462 c010`);
    const m = decodeMessage(bytes);
    expect(m.questions[0]!.name).toBe("www.CORP.net");
    expect(m.answers[0]!.data).toEqual({ kind: "name", name: "db.CORP.net" });
    expect(sameName("www.corp.NET.", m.questions[0]!.name)).toBe(true);
    const odd = hex(`0001 0000 0001 0000 0000 0000 03 612e00 02 5c41 00 0001 0001`);
    expect(decodeMessage(odd).questions[0]!.name).toBe("a\\.\\000.\\\\A");
    expect(nameToLabels("a\\.\\000.\\\\A")).toEqual([Uint8Array.of(0x61, 0x2e, 0), Uint8Array.of(0x5c, 0x41)]);
  });

  test("unknown types stay opaque; MX/SRV/SOA/TXT fields", () => {
    const m: DnsMessage = {
      ...makeResponse(makeQuery(7, "corp.net", TYPE.ANY), RCODE.NOERROR),
      answers: [
        { name: "corp.net", type: TYPE.MX, class: CLASS_IN, ttl: 1, data: { kind: "mx", preference: 10, exchange: "mail.corp.net" } },
        { name: "_ldap._tcp.corp.net", type: TYPE.SRV, class: CLASS_IN, ttl: 1, data: { kind: "srv", priority: 1, weight: 2, port: 389, target: "dc.corp.net" } },
        { name: "corp.net", type: TYPE.SOA, class: CLASS_IN, ttl: 1, data: { kind: "soa", mname: "ns.corp.net", rname: "hostmaster.corp.net", serial: 2024, refresh: 1, retry: 2, expire: 3, minimum: 4 } },
        { name: "corp.net", type: TYPE.TXT, class: CLASS_IN, ttl: 1, data: { kind: "txt", strings: [new TextEncoder().encode("v=spf1 -all"), new Uint8Array(0)] } },
        { name: "corp.net", type: 65400, class: CLASS_IN, ttl: 1, data: { kind: "opaque", bytes: Uint8Array.of(1, 2, 3) } },
      ],
    };
    expect(decodeMessage(encodeMessage(m))).toEqual(m);
  });
});

describe("malformed input: DnsFormatError with a reason, never anything else", () => {
  const cases: [string, string, string][] = [
    ["header-short", "abcd 0100 0001", ""],
    ["name-past-end", `${HEADER_1Q} 01 61`, ""],
    ["label-past-end", `${HEADER_1Q} 05 6162`, ""],
    ["question-past-end", `${HEADER_1Q} ${QNAME} 00`, ""],
    // A pointer to itself (offset 12) and one pointing forward.
    ["pointer-not-backwards", `${HEADER_1Q} c00c 0001 0001`, "self"],
    ["pointer-not-backwards", `${HEADER_1Q} c00e 0001 0001 00`, "forward"],
    ["pointer-past-end", `${HEADER_1Q} c0`, ""],
    ["label-type", `${HEADER_1Q} 40 0001 0001`, "extended label 0x40"],
    ["label-type", `${HEADER_1Q} 80 0001 0001`, "reserved 0x80"],
    ["record-header-past-end", `abcd 8180 0001 0001 0000 0000 ${Q} c00c 0001 0001`, ""],
    ["rdata-past-end", `abcd 8180 0001 0001 0000 0000 ${Q} c00c 0001 0001 00000e10 0010 0a00001e`, ""],
    ["a-rdata-length", `abcd 8180 0001 0001 0000 0000 ${Q} c00c 0001 0001 00000e10 0005 0a00001e00`, ""],
    ["rdata-length-mismatch", `abcd 8180 0001 0001 0000 0000 ${Q} c00c 0005 0001 00000e10 0003 c00c 00`, "CNAME with a trailing byte"],
    ["rdata-name-past-rdlength", `abcd 8180 0001 0001 0000 0000 ${Q} c00c 0005 0001 00000e10 0001 01 61 00`, ""],
    ["txt-string-past-rdlength", `abcd 8180 0001 0001 0000 0000 ${Q} c00c 0010 0001 00000e10 0002 05 61`, ""],
    ["opt-outside-additional", `abcd 8180 0001 0001 0000 0000 ${Q} 00 0029 04d0 00000000 0000`, ""],
    ["multiple-opt", `abcd 8180 0001 0000 0000 0002 ${Q} 00 0029 04d0 00000000 0000 00 0029 04d0 00000000 0000`, ""],
    ["opt-name-not-root", `abcd 8180 0001 0000 0000 0001 ${Q} c00c 0029 04d0 00000000 0000`, ""],
    ["opt-option-past-rdlength", `abcd 8180 0001 0000 0000 0001 ${Q} 00 0029 04d0 00000000 0006 000a 0004 dead`, ""],
  ];
  for (const [reason, bytes, note] of cases) {
    test(`${reason}${note ? ` (${note})` : ""}`, () => {
      expect(reasonOf(hex(bytes))).toBe(reason);
    });
  }

  test("a pointer loop between two names is caught (targets must decrease)", () => {
    // Question 1 at 12: "a" + pointer to 17; question 2 at 17: "b" + pointer to 12.
    const bytes = hex(`abcd 0100 0002 0000 0000 0000 01 61 c011 0001 0001 01 62 c00c 0001 0001`);
    expect(reasonOf(bytes)).toBe("pointer-not-backwards");
  });

  test("too-many-pointers and name-too-long", () => {
    // Answer 1 (opaque type) carries, as rdata, a root label and 70 pointers each to the one
    // before; answer 2's owner points at the last: a legal-looking chain longer than
    // MAX_POINTER_HOPS.
    const rdataAt = 12 + 1 + 10;
    const rdata = [0];
    let prev = rdataAt;
    for (let i = 0; i < 70; i++) {
      const at = rdataAt + rdata.length;
      rdata.push(0xc0 | (prev >> 8), prev & 0xff);
      prev = at;
    }
    const bytes = Uint8Array.from([
      ...[0xab, 0xcd, 0x81, 0x80, 0, 0, 0, 2, 0, 0, 0, 0],
      ...[0, 0xff, 0x78, 0, 1, 0, 0, 0, 1, rdata.length >> 8, rdata.length & 255, ...rdata],
      ...[0xc0 | (prev >> 8), prev & 0xff, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4],
    ]);
    expect(reasonOf(bytes)).toBe("too-many-pointers");

    // 5 labels of 63 bytes = 320 octets > 255.
    const long = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for (let i = 0; i < 5; i++) long.push(63, ...new Array(63).fill(0x61));
    long.push(0, 0, 1, 0, 1);
    expect(reasonOf(Uint8Array.from(long))).toBe("name-too-long");
  });

  test("formErrFor: FORMERR with the id when the header is readable, null otherwise", () => {
    const bad = hex(`abcd 0100 0001 0000 0000 0000 05 6162`);
    const f = formErrFor(bad)!;
    const h = decodeHeader(f)!;
    expect(h).toMatchObject({ id: 0xabcd, qr: true, rd: true, rcode: RCODE.FORMERR, qdcount: 0 });
    expect(formErrFor(hex("abcd 01"))).toBeNull();
    // Never answer a response.
    expect(formErrFor(hex(`abcd 8100 0001 0000 0000 0000 05`))).toBeNull();
  });
});

describe("encode", () => {
  const rec = (name: string, a: number[]): DnsRecord => ({ name, type: TYPE.A, class: CLASS_IN, ttl: 60, data: { kind: "address", address: Uint8Array.from(a) } });

  test("compression: repeated suffixes become pointers, case-sensitive", () => {
    const m: DnsMessage = { ...makeResponse(makeQuery(1, "dbserver1.corp.net", TYPE.A), 0), answers: [rec("dbserver1.corp.net", [10, 0, 0, 30]), rec("x.corp.net", [10, 0, 0, 31])] };
    const bytes = encodeMessage(m);
    // header 12 + question 20+4 + answer 2(ptr)+10+4 + answer 2("x")+2(ptr)+10+4
    expect(bytes.length).toBe(12 + 24 + 16 + 18);
    expect(decodeMessage(bytes)).toEqual(m);
    const upper = { ...m, answers: [rec("DBSERVER1.CORP.NET", [10, 0, 0, 30])] };
    expect(decodeMessage(encodeMessage(upper)).answers[0]!.name).toBe("DBSERVER1.CORP.NET");
  });

  test("names DNS cannot carry are DnsFormatErrors", () => {
    for (const bad of ["a..b", ".a", `${"x".repeat(64)}.net`, `${"abcdefghi.".repeat(26)}net`, "caf\u00e9\u4e2d.net", "a\\"]) {
      expect(() => nameToLabels(bad)).toThrow(DnsFormatError);
    }
    expect(nameToLabels("corp.net.")).toEqual(nameToLabels("corp.net"));
    expect(() => encodeMessage({ ...makeQuery(1, "a", TYPE.A), rcode: 16 })).toThrow(/EDNS/);
  });

  test("truncation: answers cut at a record boundary, TC set, OPT and question kept", () => {
    const q = makeQuery(9, "many.corp.net", TYPE.A, { udpSize: 512 });
    const m: DnsMessage = { ...makeResponse(q, 0), answers: [] };
    for (let i = 0; i < 60; i++) m.answers.push(rec("many.corp.net", [10, 0, i >> 8, i & 255]));
    const full = encodeMessage(m);
    expect(full.length).toBeGreaterThan(512);
    const cut = encodeMessage(m, { maxSize: 512 });
    expect(cut.length).toBeLessThanOrEqual(512);
    const d = decodeMessage(cut);
    expect(d.tc).toBe(true);
    expect(d.edns).toBeDefined();
    expect(d.questions).toEqual(m.questions);
    expect(d.answers.length).toBe(Math.floor((512 - 12 - 19 - 11) / 16));
    expect(d.answers).toEqual(m.answers.slice(0, d.answers.length));
  });

  test("truncation: only additional records dropped -> no TC", () => {
    const m: DnsMessage = { ...makeResponse(makeQuery(9, "a.corp.net", TYPE.NS), 0) };
    m.answers = [{ name: "a.corp.net", type: TYPE.NS, class: CLASS_IN, ttl: 1, data: { kind: "name", name: "ns.corp.net" } }];
    for (let i = 0; i < 40; i++) m.additionals.push(rec("ns.corp.net", [10, 0, 0, i]));
    const d = decodeMessage(encodeMessage(m, { maxSize: 512 }));
    expect(d.tc).toBe(false);
    expect(d.answers.length).toBe(1);
    expect(d.additionals.length).toBeLessThan(40);
  });
});

test("inZone / sameName", () => {
  expect(inZone("Laptop.WAYGATE.", "waygate")).toBe(true);
  expect(inZone("waygate", "waygate")).toBe(true);
  expect(inZone("notwaygate", "waygate")).toBe(false);
  expect(inZone("a\\.waygate", "waygate")).toBe(false);
  expect(inZone("x.a\\\\.waygate", "waygate")).toBe(true);
  expect(sameName("A.b", "a.B.")).toBe(true);
});
