/**
 * @module test/policy/model.test
 * The building blocks under the compiler and the oracle: state validation (with JSON paths),
 * system ids from public keys, time windows and trust, and the range algebra (against a
 * brute-force enumeration on small IPv4 ranges).
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { parsePrefix } from "../../core/net/address.ts";
import { parsePolicyState, systemIdFromPublicKey, type TimeWindow } from "../../core/policy/model.ts";
import {
  parseDestination,
  parsePorts,
  rangeText,
  rangeToPrefixes,
  subtractRange,
  type AddrRange,
} from "../../core/policy/ranges.ts";
import { checkTrust, describeTimeWindow, nextWindowBoundary, timeWindowContains } from "../../core/policy/trust.ts";
import { keyFor } from "./arbitrary.ts";
import { office, system } from "./fixtures.ts";

function rejects(input: unknown, message: string): void {
  expect(() => parsePolicyState(input)).toThrow(expect.objectContaining({ code: "E_POLICY_INVALID", message }));
}

describe("parsePolicyState", () => {
  test("accepts the office fixture", () => {
    expect(parsePolicyState(office()).systems).toHaveLength(4);
  });

  test("names the JSON path of the first problem", () => {
    const s = office();
    rejects({ ...s, systems: [{ ...s.systems[0]!, id: "g982v" }] }, "systems[0].id: a system id is 5 characters A-Z, 0-9");
    rejects(
      { ...s, systems: [{ ...s.systems[0]!, gatewaySubnets: [{ prefix: "10.0.0.1/24", nat: true, source: "manual" }] }] },
      'systems[0].gatewaySubnets[0].prefix: "10.0.0.1/24" is not a valid IPv4 prefix: host bits are set (did you mean 10.0.0.0/24?)',
    );
    rejects(
      { ...s, directAccessPolicies: [{ ...s.directAccessPolicies[0]!, acls: [{ protocol: "icmp", ports: "22" }] }] },
      "directAccessPolicies[0].acls[0]: ports need protocol tcp or udp",
    );
    rejects({ ...s, directAccessPolicies: [{ ...s.directAccessPolicies[0]!, acls: [] }] }, 'directAccessPolicies[0].acls: acls is never empty; use { protocol: "any" } for everything');
  });

  test("cross-reference checks: duplicates, addresses outside the network, unknown gateways, trust on deny", () => {
    const s = office();
    rejects({ ...s, systems: [...s.systems, { ...s.systems[0]!, publicKey: keyFor(99), virtualAddress: "100.64.0.99" }] }, "systems[4].id: LAPT1 is also systems[0].id");
    rejects({ ...s, systems: [...s.systems, system("NEW01", 1)] }, "systems[4].publicKey: the same key as systems[0]");
    rejects({ ...s, systems: [system("NEW01", 9, { virtualAddress: "10.0.0.1" })] }, "systems[0].virtualAddress: 10.0.0.1 is outside the overlay network 100.64.0.0/10");
    rejects(
      { ...s, gatewayAccessPolicies: [{ ...s.gatewayAccessPolicies[0]!, gateways: [{ systemId: "NONE0", subnets: ["10.0.0.0/8"] }] }] },
      "gatewayAccessPolicies[0].gateways[0].systemId: no system NONE0",
    );
    rejects(
      { ...s, gatewayAccessPolicies: [{ ...s.gatewayAccessPolicies[0]!, action: "deny", trust: { publicIpWithin: ["10.0.0.0/8"] } }] },
      "gatewayAccessPolicies[0].trust: a deny policy cannot carry trust requirements (a deny always applies)",
    );
    rejects({ ...s, directAccessPolicies: [s.directAccessPolicies[0]!, s.directAccessPolicies[0]!] }, 'directAccessPolicies[1].id: policy id "dev-db" is also directAccessPolicies[0]\'s');
  });
});

describe("systemIdFromPublicKey", () => {
  test("5 characters of [A-Z0-9], stable, and a different one when taken", () => {
    const id = systemIdFromPublicKey(keyFor(1));
    expect(id).toMatch(/^[A-Z0-9]{5}$/);
    expect(systemIdFromPublicKey(keyFor(1))).toBe(id);
    const next = systemIdFromPublicKey(keyFor(1), (x) => x === id);
    expect(next).not.toBe(id);
    expect(next).toMatch(/^[A-Z0-9]{5}$/);
    expect(() => systemIdFromPublicKey("short")).toThrow(expect.objectContaining({ code: "E_POLICY_INVALID" }));
  });
});

describe("time windows and trust", () => {
  const office9to6: TimeWindow = { days: ["mon", "tue", "wed", "thu", "fri"], start: "08:00", end: "18:00", utcOffsetMinutes: 60 };
  const night: TimeWindow = { days: ["fri"], start: "22:00", end: "06:00", utcOffsetMinutes: 0 };
  const at = (iso: string) => Date.parse(iso);

  test("offsets, edges and windows past midnight", () => {
    expect(timeWindowContains(office9to6, at("2024-01-01T07:00:00Z"))).toBe(true); // 08:00 local Monday
    expect(timeWindowContains(office9to6, at("2024-01-01T06:59:59Z"))).toBe(false);
    expect(timeWindowContains(office9to6, at("2024-01-01T17:00:00Z"))).toBe(false); // 18:00 local: end is exclusive
    expect(timeWindowContains(office9to6, at("2024-01-06T10:00:00Z"))).toBe(false); // Saturday
    expect(timeWindowContains(night, at("2024-01-05T23:00:00Z"))).toBe(true); // Friday night
    expect(timeWindowContains(night, at("2024-01-06T05:59:00Z"))).toBe(true); // Saturday morning, started Friday
    expect(timeWindowContains(night, at("2024-01-06T23:00:00Z"))).toBe(false); // Saturday night
    expect(timeWindowContains(night, at("2024-01-04T23:00:00Z"))).toBe(false); // Thursday night
  });

  test("nextWindowBoundary is the first instant the verdict flips", () => {
    fc.assert(
      fc.property(fc.integer({ min: Date.UTC(2024, 0, 1), max: Date.UTC(2024, 11, 31) }), fc.constantFrom(office9to6, night), (now, w) => {
        const next = nextWindowBoundary(w, now)!;
        expect(next).toBeGreaterThan(now);
        const before = timeWindowContains(w, now);
        // Constant on (now, next), sampled hourly; flipped at next.
        for (let t = now + 60_000 - (now % 60_000); t < next; t += 3_600_000) expect(timeWindowContains(w, t)).toBe(before);
        expect(timeWindowContains(w, next)).toBe(!timeWindowContains(w, next - 1));
      }),
      { seed: 3, numRuns: 200 },
    );
  });

  test("descriptions and trust verdicts", () => {
    expect(describeTimeWindow(office9to6)).toBe("mon-fri 08:00-18:00 UTC+01:00");
    expect(describeTimeWindow({ ...night, days: ["sat", "sun", "fri"] })).toBe("fri-sun 22:00-06:00");
    const laptop = system("LAPT1", 1, { publicIp: "203.0.113.9" });
    expect(checkTrust({ publicIpWithin: ["203.0.113.0/24"] }, laptop, 0)).toEqual({ ok: true });
    expect(checkTrust({ publicIpWithin: ["198.51.100.0/24"] }, system("NOIP0", 2), 0)).toEqual({
      ok: false,
      reason: "trust requirement: public IP unknown, must be within 198.51.100.0/24",
    });
  });
});

describe("ranges", () => {
  const v4 = (lo: number, hi: number): AddrRange => ({ family: 4, lo: BigInt(lo), hi: BigInt(hi) });
  const members = (r: AddrRange[]) => {
    const out = new Set<bigint>();
    for (const x of r) for (let n = x.lo; n <= x.hi; n++) out.add(n);
    return out;
  };

  test("rangeToPrefixes covers exactly the range with aligned blocks (brute force on small ranges)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 600 }), fc.integer({ min: 0, max: 300 }), (lo, len) => {
        const r = v4(lo, lo + len);
        const prefixes = rangeToPrefixes(r).map((t) => parseDestination(t));
        expect([...members(prefixes)].sort()).toEqual([...members([r])].sort());
        for (const t of rangeToPrefixes(r)) expect(parsePrefix(t).text).toBe(t); // no host bits
      }),
      { seed: 11, numRuns: 200 },
    );
  });

  test("subtractRange is set difference", () => {
    fc.assert(
      fc.property(fc.nat(200), fc.nat(100), fc.nat(200), fc.nat(100), (a, al, b, bl) => {
        const got = members(subtractRange(v4(a, a + al), v4(b, b + bl)));
        const want = new Set([...members([v4(a, a + al)])].filter((n) => !(n >= BigInt(b) && n <= BigInt(b + bl))));
        expect([...got].sort()).toEqual([...want].sort());
      }),
      { seed: 12, numRuns: 200 },
    );
  });

  test("texts: prefixes, ranges, single addresses, ports", () => {
    expect(rangeText(parseDestination("10.0.0.0/24"))).toBe("10.0.0.0/24");
    expect(rangeText(parseDestination("10.0.0.5"))).toBe("10.0.0.5/32");
    expect(rangeText(parseDestination("10.0.0.10-10.0.0.20"))).toBe("10.0.0.10-10.0.0.20");
    expect(rangeText(parseDestination("10.0.0.0-10.0.0.255"))).toBe("10.0.0.0/24");
    expect(rangeText(parseDestination("fd00::1-fd00::ff"))).toBe("fd00::1-fd00::ff");
    expect(() => parseDestination("10.0.0.9-10.0.0.1")).toThrow(RangeError);
    expect(() => parseDestination("10.0.0.1-fd00::1")).toThrow(RangeError);
    expect(parsePorts("1000-2000")).toEqual({ lo: 1000, hi: 2000 });
    expect(() => parsePorts("70000")).toThrow(RangeError);
    expect(() => parsePorts("http")).toThrow(RangeError);
  });
});
