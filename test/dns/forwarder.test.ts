/**
 * @module test/dns/forwarder.test
 * core/dns/forwarder against a fake upstream: REFUSED without a grant, hosts first, answers
 * filtered by what the querier may reach (A/AAAA in every section, CNAME chains, PTR), never a
 * hidden address in the reply bytes, upstream failover; and policyFromNetMap over gatewayRules.
 */
import { describe, expect, test } from "bun:test";
import { CLASS_IN, decodeMessage, encodeMessage, makeQuery, makeResponse, RCODE, TYPE, type DnsMessage, type DnsRecord } from "../../core/dns/codec.ts";
import { parseHosts } from "../../core/dns/config.ts";
import { createGatewayForwarder, policyFromNetMap, reverseNameAddress } from "../../core/dns/forwarder.ts";
import { silentLogger } from "../../core/log.ts";
import { parseAddress } from "../../core/net/address.ts";
import type { NetMapGatewayRule } from "../../core/policy/netmap.ts";

const A = "100.64.0.2"; // granted 10.0.0.0/24
const B = "100.64.0.3"; // no grant

function rule(senderAddress: string, dst: string, extra: Partial<NetMapGatewayRule> = {}): NetMapGatewayRule {
  return { action: "allow", sender: `sys-${senderAddress}`, senderAddress, subnet: "10.0.0.0/16", nat: true, dst, protocol: "any", policy: "p1", ...extra };
}

const policy = policyFromNetMap({ gatewayRules: [rule(A, "10.0.0.0/24"), rule(A, "2001:db8:10::/48")] });

const a = (name: string, ip: string, type?: number): DnsRecord => {
  const addr = parseAddress(ip);
  return { name, type: type ?? (addr.family === 4 ? TYPE.A : TYPE.AAAA), class: CLASS_IN, ttl: 300, data: { kind: "address", address: addr.bytes } };
};
const cname = (name: string, target: string): DnsRecord => ({ name, type: TYPE.CNAME, class: CLASS_IN, ttl: 300, data: { kind: "name", name: target } });
const soa: DnsRecord = {
  name: "corp.net",
  type: TYPE.SOA,
  class: CLASS_IN,
  ttl: 300,
  data: { kind: "soa", mname: "ns.corp.net", rname: "hostmaster.corp.net", serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 60 },
};

/** The LAN's DNS: name/type -> sections. */
const ZONE: Record<string, { rcode?: number; answers?: DnsRecord[]; authorities?: DnsRecord[]; additionals?: DnsRecord[]; ad?: boolean }> = {
  "dbserver1.corp.net/1": { answers: [a("dbserver1.corp.net", "10.0.0.30")] },
  "other.corp.net/1": { answers: [a("other.corp.net", "192.168.0.30")] },
  "mixed.corp.net/1": { answers: [a("mixed.corp.net", "192.168.0.31"), a("mixed.corp.net", "10.0.0.31")] },
  "mixed.corp.net/28": { answers: [a("mixed.corp.net", "2001:db8:10::31"), a("mixed.corp.net", "2001:db8:99::31")] },
  "alias.corp.net/1": { answers: [cname("alias.corp.net", "mid.corp.net"), cname("mid.corp.net", "dbserver1.corp.net"), a("dbserver1.corp.net", "10.0.0.30")] },
  "hidden-alias.corp.net/1": { answers: [cname("hidden-alias.corp.net", "other.corp.net"), a("other.corp.net", "192.168.0.30")] },
  "signed.corp.net/1": {
    ad: true,
    answers: [
      a("signed.corp.net", "10.0.0.32"),
      a("signed.corp.net", "192.168.0.32"),
      { name: "signed.corp.net", type: TYPE.RRSIG, class: CLASS_IN, ttl: 300, data: { kind: "opaque", bytes: Uint8Array.of(0, 1, 2, 3) } },
    ],
  },
  "corp.net/2": {
    answers: [
      { name: "corp.net", type: TYPE.NS, class: CLASS_IN, ttl: 300, data: { kind: "name", name: "ns1.corp.net" } },
      { name: "corp.net", type: TYPE.NS, class: CLASS_IN, ttl: 300, data: { kind: "name", name: "ns2.corp.net" } },
    ],
    additionals: [a("ns1.corp.net", "10.0.0.53"), a("ns2.corp.net", "192.168.0.53")],
  },
  "missing.corp.net/1": { rcode: RCODE.NXDOMAIN, authorities: [soa] },
  "dbserver1.corp.net/28": { authorities: [soa] },
  "30.0.0.10.in-addr.arpa/12": { answers: [{ name: "30.0.0.10.in-addr.arpa", type: TYPE.PTR, class: CLASS_IN, ttl: 300, data: { kind: "name", name: "dbserver1.corp.net" } }] },
};

const asked: { upstream: string; name: string }[] = [];

function fakeUpstream(behaviour: Record<string, "fail" | "servfail" | "garbage" | "mismatch" | "ok"> = {}) {
  return async (query: Uint8Array, upstream: string): Promise<Uint8Array> => {
    const qm = decodeMessage(query);
    const q = qm.questions[0]!;
    asked.push({ upstream, name: q.name });
    const mode = behaviour[upstream] ?? "ok";
    if (mode === "fail") throw new Error("connection refused");
    if (mode === "garbage") return Uint8Array.of(0, 0, 0x81);
    const res = makeResponse(qm, RCODE.NOERROR);
    if (mode === "servfail") return encodeMessage({ ...res, rcode: RCODE.SERVFAIL });
    if (mode === "mismatch") return encodeMessage({ ...res, questions: [{ ...q, name: "elsewhere.example" }] });
    const z = ZONE[`${q.name.toLowerCase()}/${q.type}`];
    if (z === undefined) return encodeMessage({ ...res, rcode: RCODE.NXDOMAIN, authorities: [soa] });
    return encodeMessage({ ...res, aa: true, ad: z.ad ?? false, rcode: z.rcode ?? 0, answers: z.answers ?? [], authorities: z.authorities ?? [], additionals: z.additionals ?? [] });
  };
}

const hosts = parseHosts("10.0.0.40 printer.corp.net printer\n192.168.0.40 secret.corp.net\n");

function forwarder(behaviour?: Parameters<typeof fakeUpstream>[0], upstreams = ["10.0.0.53"]) {
  return createGatewayForwarder({ upstreams, hosts, policy, resolve: fakeUpstream(behaviour), logger: silentLogger, timeoutMs: 100 });
}

async function ask(fwd: ReturnType<typeof forwarder>, name: string, type: number = TYPE.A, from = A): Promise<{ m: DnsMessage; bytes: Uint8Array }> {
  const bytes = (await fwd.handle(encodeMessage(makeQuery(0x4242, name, type, { udpSize: 1232 })), from))!;
  expect(bytes).not.toBeNull();
  const m = decodeMessage(bytes);
  expect(m.id).toBe(0x4242);
  return { m, bytes };
}

function ips(records: DnsRecord[]): string[] {
  return records.filter((r) => r.data.kind === "address").map((r) => parseAddress(addressText((r.data as { address: Uint8Array }).address)).text);
}

function addressText(b: Uint8Array): string {
  if (b.length === 4) return [...b].join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  return groups.join(":");
}

/** The hidden address must not appear anywhere in the reply, in any section. */
function expectNoBytes(bytes: Uint8Array, hidden: number[]): void {
  const hex = Buffer.from(bytes).toString("hex");
  expect(hex.includes(Buffer.from(hidden).toString("hex"))).toBe(false);
}

describe("grants and filtering", () => {
  test("no grant through this gateway: REFUSED, nothing looked up", async () => {
    const fwd = forwarder();
    const before = asked.length;
    const { m } = await ask(fwd, "dbserver1.corp.net", TYPE.A, B);
    expect(m.rcode).toBe(RCODE.REFUSED);
    expect(asked.length).toBe(before);
    expect((await ask(fwd, "printer.corp.net", TYPE.A, B)).m.rcode).toBe(RCODE.REFUSED);
    expect((await ask(fwd, "dbserver1.corp.net", TYPE.A, "not-an-address")).m.rcode).toBe(RCODE.REFUSED);
    expect(fwd.counters["refused:no-grant"]).toBe(3);
  });

  test("allowed address answered; hidden one is NXDOMAIN and never in the bytes", async () => {
    const fwd = forwarder();
    expect(ips((await ask(fwd, "dbserver1.corp.net")).m.answers)).toEqual(["10.0.0.30"]);
    const { m, bytes } = await ask(fwd, "other.corp.net");
    expect(m.rcode).toBe(RCODE.NXDOMAIN);
    expect(m.answers.length + m.authorities.length + m.additionals.length).toBe(0);
    expectNoBytes(bytes, [192, 168, 0, 30]);
    // The same over a v4-mapped source (a dual-stack socket).
    expect(ips((await ask(fwd, "dbserver1.corp.net", TYPE.A, `::ffff:${A}`)).m.answers)).toEqual(["10.0.0.30"]);
  });

  test("mixed answers keep only reachable addresses (A and AAAA)", async () => {
    const fwd = forwarder();
    const v4 = await ask(fwd, "mixed.corp.net");
    expect(ips(v4.m.answers)).toEqual(["10.0.0.31"]);
    expectNoBytes(v4.bytes, [192, 168, 0, 31]);
    expect(ips((await ask(fwd, "mixed.corp.net", TYPE.AAAA)).m.answers)).toEqual(["2001:db8:10::31"]);
  });

  test("CNAME chains: kept when they lead to an allowed address, dropped when they lead nowhere", async () => {
    const fwd = forwarder();
    const ok = await ask(fwd, "alias.corp.net");
    expect(ok.m.answers.map((r) => r.type)).toEqual([TYPE.CNAME, TYPE.CNAME, TYPE.A]);
    const hidden = await ask(fwd, "hidden-alias.corp.net");
    expect(hidden.m.rcode).toBe(RCODE.NXDOMAIN);
    expect(hidden.m.answers).toEqual([]);
    expectNoBytes(hidden.bytes, [192, 168, 0, 30]);
  });

  test("additional glue filtered; DNSSEC records and AD dropped once an answer was changed", async () => {
    const fwd = forwarder();
    const ns = await ask(fwd, "corp.net", TYPE.NS);
    expect(ns.m.answers.length).toBe(2);
    expect(ips(ns.m.additionals)).toEqual(["10.0.0.53"]);
    expectNoBytes(ns.bytes, [192, 168, 0, 53]);
    const signed = await ask(fwd, "signed.corp.net");
    expect(ips(signed.m.answers)).toEqual(["10.0.0.32"]);
    expect(signed.m.answers.some((r) => r.type === TYPE.RRSIG)).toBe(false);
    expect(signed.m.ad).toBe(false);
  });

  test("negative answers lose their authority section (filtered and missing names look alike)", async () => {
    const fwd = forwarder();
    const missing = await ask(fwd, "missing.corp.net");
    const filtered = await ask(fwd, "other.corp.net");
    expect(missing.m.rcode).toBe(RCODE.NXDOMAIN);
    expect(missing.m.authorities).toEqual([]);
    expect({ ...missing.m, questions: [] }).toEqual({ ...filtered.m, questions: [] });
    const nodata = await ask(fwd, "dbserver1.corp.net", TYPE.AAAA);
    expect([nodata.m.rcode, nodata.m.answers.length, nodata.m.authorities.length]).toEqual([RCODE.NOERROR, 0, 0]);
  });

  test("hosts first; hidden hosts entries NXDOMAIN; a family hosts lacks goes upstream", async () => {
    const fwd = forwarder();
    const before = asked.length;
    expect(ips((await ask(fwd, "PRINTER.corp.net")).m.answers)).toEqual(["10.0.0.40"]);
    expect(ips((await ask(fwd, "printer")).m.answers)).toEqual(["10.0.0.40"]);
    const secret = await ask(fwd, "secret.corp.net");
    expect(secret.m.rcode).toBe(RCODE.NXDOMAIN);
    expectNoBytes(secret.bytes, [192, 168, 0, 40]);
    expect(asked.length).toBe(before);
    await ask(fwd, "printer.corp.net", TYPE.AAAA);
    expect(asked.length).toBe(before + 1);
  });

  test("PTR: hidden addresses NXDOMAIN without asking; hosts reverse; the rest upstream", async () => {
    const fwd = forwarder();
    const before = asked.length;
    expect((await ask(fwd, "30.0.168.192.in-addr.arpa", TYPE.PTR)).m.rcode).toBe(RCODE.NXDOMAIN);
    expect(asked.length).toBe(before);
    const printer = await ask(fwd, "40.0.0.10.in-addr.arpa", TYPE.PTR);
    expect(printer.m.answers[0]!.data).toEqual({ kind: "name", name: "printer.corp.net" });
    const db = await ask(fwd, "30.0.0.10.in-addr.arpa", TYPE.PTR);
    expect(db.m.answers[0]!.data).toEqual({ kind: "name", name: "dbserver1.corp.net" });
    expect(reverseNameAddress("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa")!.text).toBe("2001:db8:10::1");
    expect(reverseNameAddress("0.10.in-addr.arpa")).toBeNull();
    expect(reverseNameAddress("300.0.0.10.in-addr.arpa")).toBeNull();
  });
});

describe("upstreams", () => {
  test("tried in order: failure, garbage, mismatch and SERVFAIL move on", async () => {
    for (const bad of ["fail", "garbage", "mismatch", "servfail"] as const) {
      const fwd = forwarder({ "10.0.0.53": bad }, ["10.0.0.53", "10.0.0.54"]);
      const { m } = await ask(fwd, "dbserver1.corp.net");
      expect([bad, ips(m.answers)]).toEqual([bad, ["10.0.0.30"]]);
    }
  });

  test("none answers: SERVFAIL (the last SERVFAIL, or our own)", async () => {
    expect((await ask(forwarder({ "10.0.0.53": "fail" }), "dbserver1.corp.net")).m.rcode).toBe(RCODE.SERVFAIL);
    expect((await ask(forwarder({ "10.0.0.53": "servfail" }), "dbserver1.corp.net")).m.rcode).toBe(RCODE.SERVFAIL);
    const slow = createGatewayForwarder({ upstreams: ["10.0.0.53"], hosts: [], policy, resolve: () => new Promise(() => {}), logger: silentLogger, timeoutMs: 30 });
    expect((await ask(slow, "dbserver1.corp.net")).m.rcode).toBe(RCODE.SERVFAIL);
    expect(slow.counters["upstream:failed"]).toBe(1);
  });

  test("malformed queries: FORMERR or counted drop", async () => {
    const fwd = forwarder();
    expect(await fwd.handle(Uint8Array.of(0, 1), A)).toBeNull();
    const q = encodeMessage(makeQuery(7, "x.corp.net", TYPE.A));
    expect(decodeMessage((await fwd.handle(q.slice(0, -1), A))!).rcode).toBe(RCODE.FORMERR);
    expect(fwd.counters["drop:unreadable"]).toBe(1);
  });
});

describe("policyFromNetMap", () => {
  const p = policyFromNetMap({
    gatewayRules: [
      rule(A, "10.0.0.0/24"),
      rule(A, "10.1.0.10-10.1.0.20", { protocol: "tcp", ports: "5432" }),
      rule(A, "10.0.0.128/25", { action: "deny", protocol: "tcp", ports: "22" }),
      rule(A, "10.0.0.200/29", { action: "deny" }),
      rule("fd00::2", "2001:db8::/32"),
      rule(B, "10.9.0.0/16", { action: "deny" }),
    ],
  });
  const ip = (t: string) => parseAddress(t).bytes;

  test("hasGrant: any allow rule for the sender address", () => {
    expect(p.hasGrant(A)).toBe(true);
    expect(p.hasGrant("fd00:0::2")).toBe(true);
    expect(p.hasGrant(B)).toBe(false);
    expect(p.hasGrant("100.64.0.99")).toBe(false);
  });

  test("mayReach: port/protocol-agnostic allows, total denies win, ranges split into prefixes", () => {
    expect(p.mayReach(A, ip("10.0.0.30"))).toBe(true);
    expect(p.mayReach(A, ip("10.0.0.130"))).toBe(true); // only port 22 denied there
    expect(p.mayReach(A, ip("10.0.0.203"))).toBe(false);
    expect(p.mayReach(A, ip("10.1.0.15"))).toBe(true);
    expect(p.mayReach(A, ip("10.1.0.21"))).toBe(false);
    expect(p.mayReach(A, ip("192.168.0.30"))).toBe(false);
    expect(p.mayReach("fd00::2", ip("2001:db8::1"))).toBe(true);
    expect(p.mayReach("fd00::2", ip("10.0.0.30"))).toBe(false);
    expect(p.mayReach(B, ip("10.9.0.1"))).toBe(false);
    expect(p.mayReach(A, Uint8Array.of(1, 2, 3))).toBe(false);
  });
});
