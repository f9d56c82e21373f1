/**
 * @module test/dns/stub.test
 * core/dns/stub: peer names answered locally (case-insensitive, A/AAAA, NODATA, NXDOMAIN),
 * everything else forwarded with the client's id kept, SERVFAIL on failure, timeout or a reply
 * that does not match, re-encoding for the client's UDP size, and counted drops.
 */
import { describe, expect, test } from "bun:test";
import {
  CLASS_IN,
  decodeMessage,
  encodeMessage,
  makeQuery,
  makeResponse,
  RCODE,
  TYPE,
  type DnsMessage,
} from "../../core/dns/codec.ts";
import { createStub, type StubPeer } from "../../core/dns/stub.ts";
import { silentLogger } from "../../core/log.ts";

const peers: StubPeer[] = [
  { id: "sys-7f3a", name: "Laptop Anna", virtualAddress: "100.64.0.2", dnsNames: ["sys-7f3a.id.waygate", "laptop-anna.waygate"] },
  { id: "gw1", name: "Gateway (Berlin)", virtualAddress: "100.64.0.1/32" },
  { id: "v6box", name: "v6", virtualAddress: "fd7a:115c:a1e0::5" },
  { id: "broken", name: "broken", virtualAddress: "not an address" },
];

const FROM = { address: "127.0.0.1", port: 5353 };

function q(name: string, type: number = TYPE.A, id = 0x1234, edns?: { udpSize: number }): Uint8Array {
  return encodeMessage(makeQuery(id, name, type, edns));
}

function stubWith(forward: (query: Uint8Array) => Promise<Uint8Array | null>, timeoutMs = 200) {
  return createStub({ peers: () => peers, forward, logger: silentLogger, timeoutMs });
}

const noForward = async () => {
  throw new Error("must not forward");
};

async function ask(stub: ReturnType<typeof createStub>, bytes: Uint8Array, transport: "udp" | "tcp" = "udp"): Promise<DnsMessage> {
  const res = await stub.handle(bytes, { ...FROM, transport });
  expect(res).not.toBeNull();
  return decodeMessage(res!);
}

const addr = (m: DnsMessage) => m.answers.map((r) => (r.data.kind === "address" ? [...r.data.address].join(r.data.address.length === 4 ? "." : ",") : r.type));

describe("local answers", () => {
  test("<id>.id.<zone>, <name>.<zone> and dnsNames, case-insensitive", async () => {
    const stub = stubWith(noForward);
    for (const name of ["sys-7f3a.id.waygate", "SYS-7F3A.ID.WAYGATE.", "laptop-anna.waygate", "gw1.id.waygate", "gateway-berlin.waygate"]) {
      const m = await ask(stub, q(name));
      expect(m.rcode).toBe(RCODE.NOERROR);
      expect(m.aa).toBe(true);
      expect(m.id).toBe(0x1234);
      expect(addr(m).length).toBe(1);
      expect(m.answers[0]!.name).toBe(m.questions[0]!.name);
    }
    expect(addr(await ask(stub, q("laptop-anna.waygate")))).toEqual(["100.64.0.2"]);
    expect(addr(await ask(stub, q("gateway-berlin.waygate")))).toEqual(["100.64.0.1"]);
    const v6 = await ask(stub, q("v6box.id.waygate", TYPE.AAAA));
    expect(v6.answers[0]!.type).toBe(TYPE.AAAA);
  });

  test("NODATA for other types and empty non-terminals, NXDOMAIN for unknown names, SOA for caching", async () => {
    const stub = stubWith(noForward);
    for (const [name, type] of [["laptop-anna.waygate", TYPE.AAAA], ["laptop-anna.waygate", TYPE.MX], ["id.waygate", TYPE.A], ["waygate", TYPE.A]] as const) {
      const m = await ask(stub, q(name, type));
      expect([name, m.rcode, m.answers.length]).toEqual([name, RCODE.NOERROR, 0]);
      expect(m.authorities[0]!.type).toBe(TYPE.SOA);
    }
    const nx = await ask(stub, q("nobody.waygate"));
    expect(nx.rcode).toBe(RCODE.NXDOMAIN);
    expect(nx.authorities[0]!.type).toBe(TYPE.SOA);
    expect((await ask(stub, q("broken.id.waygate"))).rcode).toBe(RCODE.NXDOMAIN);
    expect(stub.counters["local:nxdomain"]).toBe(2);
  });

  test("a configurable zone", async () => {
    const stub = createStub({ zone: "Corp.Internal", peers: () => peers, forward: noForward, logger: silentLogger });
    expect(addr(await ask(stub, q("gw1.id.corp.internal")))).toEqual(["100.64.0.1"]);
    // NetMap dnsNames outside the zone are not ours; the query goes onwards.
    let forwarded = 0;
    const stub2 = createStub({
      zone: "corp.internal",
      peers: () => peers,
      forward: async () => {
        forwarded++;
        return null;
      },
      logger: silentLogger,
    });
    expect((await ask(stub2, q("laptop-anna.waygate"))).rcode).toBe(RCODE.SERVFAIL);
    expect(forwarded).toBe(1);
  });
});

describe("forwarding", () => {
  const upstreamAnswer = (query: Uint8Array, mutate?: (m: DnsMessage) => void): Uint8Array => {
    const qm = decodeMessage(query);
    const res = makeResponse(qm, RCODE.NOERROR);
    res.answers.push({ name: qm.questions[0]!.name, type: TYPE.A, class: CLASS_IN, ttl: 30, data: { kind: "address", address: Uint8Array.of(10, 0, 0, 30) } });
    mutate?.(res);
    return encodeMessage(res);
  };

  test("the rest is forwarded with the client's id; the client's EDNS options do not leave", async () => {
    const seen: DnsMessage[] = [];
    const stub = stubWith(async (query) => {
      seen.push(decodeMessage(query));
      return upstreamAnswer(query);
    });
    const query = makeQuery(0xbeef, "dbserver1.corp.net", TYPE.A, { udpSize: 4096, options: [{ code: 8, data: Uint8Array.of(0, 1, 24, 0, 10, 0, 0) }] });
    const m = await ask(stub, encodeMessage(query));
    expect(m.id).toBe(0xbeef);
    expect(addr(m)).toEqual(["10.0.0.30"]);
    expect(seen[0]!.id).toBe(0xbeef);
    expect(seen[0]!.edns!.options).toEqual([]);
    expect(m.edns).toBeDefined();
    expect(stub.counters["forwarded:noerror"]).toBe(1);
  });

  test("SERVFAIL on failure, null, timeout, garbage or a mismatching reply", async () => {
    const cases: [string, (query: Uint8Array) => Promise<Uint8Array | null>][] = [
      ["forward-failed", async () => Promise.reject(new Error("tunnel down"))],
      ["forward-failed", async () => null],
      ["forward-timeout", () => new Promise(() => {})],
      ["forward-malformed", async () => Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)],
      ["forward-mismatch", async (query) => upstreamAnswer(query, (m) => (m.id ^= 1))],
      ["forward-mismatch", async (query) => upstreamAnswer(query, (m) => (m.questions[0]!.name = "evil.example"))],
      ["forward-mismatch", async (query) => upstreamAnswer(query, (m) => (m.qr = false))],
    ];
    for (const [counter, forward] of cases) {
      const stub = stubWith(forward, 50);
      const m = await ask(stub, q("dbserver1.corp.net"));
      expect([counter, m.rcode]).toEqual([counter, RCODE.SERVFAIL]);
      expect(m.id).toBe(0x1234);
      expect(stub.counters[`servfail:${counter}`]).toBe(1);
    }
  });

  test("a big reply is truncated for a plain UDP client (TC) and whole over TCP", async () => {
    const stub = stubWith(async (query) =>
      upstreamAnswer(query, (m) => {
        for (let i = 0; i < 80; i++) m.answers.push({ ...m.answers[0]!, data: { kind: "address", address: Uint8Array.of(10, 0, 1, i) } });
      }),
    );
    const udp = await ask(stub, q("big.corp.net"));
    expect(udp.tc).toBe(true);
    expect(encodeMessage(udp).length).toBeLessThanOrEqual(512);
    const tcp = await ask(stub, q("big.corp.net"), "tcp");
    expect(tcp.tc).toBe(false);
    expect(tcp.answers.length).toBe(81);
  });
});

describe("bad input is a counted drop or a clear error response", () => {
  test("unreadable -> dropped; malformed with header -> FORMERR; responses dropped; odd opcodes NOTIMP", async () => {
    const stub = stubWith(noForward);
    expect(await stub.handle(Uint8Array.of(1, 2, 3), FROM)).toBeNull();
    expect(stub.counters["drop:unreadable"]).toBe(1);
    const bad = q("x.waygate");
    const formErr = decodeMessage((await stub.handle(bad.slice(0, bad.length - 2), FROM))!);
    expect(formErr.rcode).toBe(RCODE.FORMERR);
    expect(stub.counters["formerr:question-past-end"]).toBe(1);
    const asResponse = makeQuery(1, "x.waygate", TYPE.A);
    asResponse.qr = true;
    expect(await stub.handle(encodeMessage(asResponse), FROM)).toBeNull();
    expect(stub.counters["drop:response-as-query"]).toBe(1);
    const notify = { ...makeQuery(1, "x.waygate", TYPE.A), opcode: 4 };
    expect((await ask(stub, encodeMessage(notify))).rcode).toBe(RCODE.NOTIMP);
    const two = makeQuery(1, "x.waygate", TYPE.A);
    two.questions.push({ ...two.questions[0]! });
    expect((await ask(stub, encodeMessage(two))).rcode).toBe(RCODE.FORMERR);
    const v1 = makeQuery(1, "x.waygate", TYPE.A, { version: 1 });
    expect((await ask(stub, encodeMessage(v1))).rcode).toBe(16);
  });
});
