/**
 * @module test/dataplane/filter
 * The gateway access filter against a brute-force oracle (every rule scanned, bigint addresses)
 * over random rule sets and packets with fixed seeds, plus the named cases: single IP, range,
 * prefix, port range, protocol, deny over allow, spoofed sources, the gateway's own addresses
 * (LAN side closed; virtual address handed to the Device's inbound ACLs as "self"), grants not
 * leaking into other subnets, later fragments, IPv6, and config errors.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  ALLOW,
  GATEWAY_REASONS,
  GatewayConfigError,
  GatewayFilter,
  type GatewayFilterConfig,
  type GatewayRule,
} from "../../core/dataplane/filter.ts";
import { PARSE_OK, PacketHeaders } from "../../core/dataplane/headers.ts";
import { parseAddress } from "../../core/net/address.ts";
import { type PacketSpec, ipPacket } from "./packets.ts";

const KEY_A = "www5MrbYq4EHZJx50mKMShkucSDfL6B1P/fmcGk+hRs=";
const KEY_B = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

function verdictOf(filter: GatewayFilter, key: string | null, spec: PacketSpec): string {
  const h = new PacketHeaders();
  const p = ipPacket(spec);
  if (h.parse(p, p.length) !== PARSE_OK) return "malformed-ip";
  const sender = key === null ? null : filter.sender(key);
  return GATEWAY_REASONS[filter.check(sender, h, filter.destinationKind(h))]!;
}

// ---------------------------------------------------------------- the oracle

function big(text: string): bigint {
  let n = 0n;
  for (const b of parseAddress(text).bytes) n = (n << 8n) | BigInt(b);
  return n;
}

function rangeOf(text: string): { v6: boolean; lo: bigint; hi: bigint } {
  if (text.includes("-")) {
    const [a, b] = text.split("-") as [string, string];
    return { v6: a.includes(":"), lo: big(a), hi: big(b) };
  }
  const [addr, len] = text.split("/") as [string, string | undefined];
  const v6 = addr.includes(":");
  const bits = v6 ? 128 : 32;
  const l = len === undefined ? bits : Number(len);
  const lo = big(addr);
  return { v6, lo, hi: lo + (1n << BigInt(bits - l)) - 1n };
}

function inPrefixText(prefix: string, addr: string): boolean {
  const r = rangeOf(prefix);
  const v6 = addr.includes(":");
  const a = big(addr);
  return r.v6 === v6 && r.lo <= a && a <= r.hi;
}

function protoNumber(spec: PacketSpec, v6: boolean): number {
  if (spec.proto === "tcp") return 6;
  if (spec.proto === "udp") return 17;
  if (spec.proto === "icmp") return v6 ? 58 : 1;
  return spec.proto;
}

function ruleMatches(rule: GatewayRule, spec: PacketSpec): boolean {
  const v6 = spec.dst.includes(":");
  const r = rangeOf(rule.destination);
  const d = big(spec.dst);
  if (r.v6 !== v6 || d < r.lo || d > r.hi) return false;
  const p = protoNumber(spec, v6);
  const port = spec.dport ?? (p === 6 ? 80 : 53);
  const inPorts = () => {
    if (rule.ports === undefined) return true;
    const [lo, hi] = rule.ports.split("-").map(Number) as [number, number | undefined];
    return lo <= port && port <= (hi ?? lo);
  };
  switch (rule.protocol) {
    case "any":
      return true;
    case "tcp":
      return p === 6 && inPorts();
    case "udp":
      return p === 17 && inPorts();
    case "icmp":
      return p === (v6 ? 58 : 1);
  }
}

/** Every decision in the order filter.ts documents, by scanning every rule. */
function oracle(config: GatewayFilterConfig, key: string | null, spec: PacketSpec): string {
  const overlays = typeof config.overlayNetwork === "string" ? [config.overlayNetwork] : config.overlayNetwork;
  const inOverlay = (a: string) => overlays.some((o) => inPrefixText(o, a));
  const same = (a: string, b: string) => a.includes(":") === b.includes(":") && big(a) === big(b);
  const locals = config.localAddresses;
  const virtual = locals.filter(inOverlay);
  const kind = virtual.some((a) => same(a, spec.dst))
    ? "self-virtual"
    : locals.some((a) => same(a, spec.dst))
      ? "self-other"
      : inOverlay(spec.dst)
        ? "overlay"
        : "forward";
  // The gateway's virtual address: the Device's inbound ACLs decide, never a grant.
  if (kind === "self-virtual") return "self";
  const sender = config.senders.find((s) => s.peerPublicKey === key);
  if (sender === undefined) return kind === "self-other" ? "gateway-local-address" : "gateway-no-grant";
  if (!sender.virtualAddresses.some((a) => same(a, spec.src))) return "gateway-source-spoofed";
  if (kind === "self-other") return "gateway-local-address";
  const later = (spec.fragOffset ?? 0) > 0;
  if (kind === "overlay") return "gateway-no-grant";
  if (later) return "gateway-fragment";
  const allowed = sender.allow.some((r) => ruleMatches(r, spec));
  const denied = (sender.deny ?? []).some((r) => ruleMatches(r, spec));
  return allowed && !denied ? "allow" : "gateway-no-grant";
}

// ---------------------------------------------------------------- the property

const v4 = (n: number) => `172.26.0.${n}`;
const v6 = (n: number) => `fd10::${n.toString(16)}`;
const arbAddrIndex = fc.integer({ min: 0, max: 40 });

const arbDestination = (fam: 4 | 6) =>
  fc.oneof(
    arbAddrIndex.map((n) => (fam === 4 ? v4(n) : v6(n))),
    fc.tuple(arbAddrIndex, fc.integer({ min: 0, max: 12 })).map(([a, w]) =>
      fam === 4 ? `${v4(a)}-${v4(Math.min(255, a + w))}` : `${v6(a)}-${v6(a + w)}`,
    ),
    fc.integer({ min: 28, max: 31 }).chain((len) =>
      fc.integer({ min: 0, max: 40 }).map((a) => {
        const size = 1 << (32 - len);
        const net = a - (a % size);
        return fam === 4 ? `${v4(net)}/${len}` : `${v6(net)}/${len + 96}`;
      }),
    ),
  );

const arbPorts = fc.oneof(
  fc.constant(undefined),
  fc.integer({ min: 0, max: 30 }).map(String),
  fc.tuple(fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 20 })).map(([lo, w]) => `${lo}-${lo + w}`),
  fc.constant("0-65535"),
);

const arbRule = fc.integer({ min: 0, max: 9 }).chain((f) => {
  const fam: 4 | 6 = f < 8 ? 4 : 6;
  return fc
    .tuple(arbDestination(fam), fc.constantFrom("any", "tcp", "udp", "icmp" as const), arbPorts)
    .map(([destination, protocol, ports]): GatewayRule =>
      protocol === "tcp" || protocol === "udp" ? { destination, protocol, ...(ports === undefined ? {} : { ports }) } : { destination, protocol },
    );
});

const arbSpec = fc.integer({ min: 0, max: 9 }).chain((f) => {
  const fam: 4 | 6 = f < 8 ? 4 : 6;
  const addr = arbAddrIndex.map((n) => (fam === 4 ? v4(n) : v6(n)));
  const src = fc.constantFrom(...(fam === 4 ? ["100.64.0.2", "100.64.0.3", "172.26.0.7"] : ["fd7a::2", "fd7a::3"]));
  const dst = fc.oneof(addr, addr, addr, fc.constantFrom(...(fam === 4 ? ["100.64.0.1", "100.64.0.9", "10.9.0.1"] : ["fd7a::1", "fd7a::9"])));
  return fc.record({
    src,
    dst,
    proto: fc.constantFrom("tcp", "udp", "icmp", 47 as const),
    dport: fc.oneof(fc.integer({ min: 0, max: 52 }), fc.constant(65535)),
    fragOffset: fc.oneof(fc.constant(0), fc.constant(0), fc.constant(0), fc.constant(3)),
  }) as fc.Arbitrary<PacketSpec>;
});

const baseConfig = (allow: GatewayRule[], deny: GatewayRule[]): GatewayFilterConfig => ({
  senders: [
    { peerPublicKey: KEY_A, virtualAddresses: ["100.64.0.2", "fd7a::2"], allow, deny },
    { peerPublicKey: KEY_B, virtualAddresses: ["100.64.0.3", "fd7a::3"], allow: deny, deny: [] },
  ],
  localAddresses: ["100.64.0.1", "fd7a::1", "172.26.0.1", "fd10::1"],
  overlayNetwork: ["100.64.0.0/10", "fd7a::/64"],
});

describe("GatewayFilter against a brute-force oracle", () => {
  test("random rules (single IPs, ranges, prefixes, ports, deny) and packets agree", () => {
    fc.assert(
      fc.property(
        fc.array(arbRule, { minLength: 0, maxLength: 25 }),
        fc.array(arbRule, { maxLength: 4 }),
        fc.array(fc.tuple(fc.constantFrom(KEY_A, KEY_B, null), arbSpec), { minLength: 30, maxLength: 30 }),
        (allow, deny, packets) => {
          const config = baseConfig(allow, deny);
          const filter = new GatewayFilter(config);
          for (const [key, spec] of packets) {
            const got = verdictOf(filter, key, spec);
            const want = oracle(config, key, spec);
            if (got !== want) throw new Error(`${JSON.stringify({ key, spec })}: got ${got}, oracle ${want}`);
          }
        },
      ),
      { numRuns: 400, seed: 42 },
    );
  });

  test("every address of a dense rule set agrees with the oracle (exhaustive over the space)", () => {
    fc.assert(
      fc.property(fc.array(arbRule, { minLength: 1, maxLength: 40 }), (allow) => {
        const config = baseConfig(allow, []);
        const filter = new GatewayFilter(config);
        for (let n = 0; n <= 60; n++) {
          for (const spec of [
            { src: "100.64.0.2", dst: v4(n), proto: "tcp" as const, dport: n % 31 },
            { src: "100.64.0.2", dst: v4(n), proto: "icmp" as const },
            { src: "fd7a::2", dst: v6(n), proto: "udp" as const, dport: n % 29 },
          ]) {
            expect(verdictOf(filter, KEY_A, spec)).toBe(oracle(config, KEY_A, spec));
          }
        }
      }),
      { numRuns: 60, seed: 7 },
    );
  });
});

describe("GatewayFilter cases", () => {
  const filterWith = (allow: GatewayRule[], extra: Partial<GatewayFilterConfig> = {}) =>
    new GatewayFilter({
      senders: [{ peerPublicKey: KEY_A, virtualAddresses: ["100.64.0.2"], allow }],
      localAddresses: ["100.64.0.1", "172.26.0.1"],
      overlayNetwork: "100.64.0.0/10",
      ...extra,
    });
  const tcp = (dst: string, dport = 80, src = "100.64.0.2"): PacketSpec => ({ src, dst, proto: "tcp", dport });

  test("a single IP, a range and a prefix", () => {
    const f = filterWith([
      { destination: "172.26.0.250", protocol: "any" },
      { destination: "172.26.1.10-172.26.1.20", protocol: "any" },
      { destination: "172.26.2.0/24", protocol: "any" },
    ]);
    expect(verdictOf(f, KEY_A, tcp("172.26.0.250"))).toBe("allow");
    expect(verdictOf(f, KEY_A, tcp("172.26.0.251"))).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_A, tcp("172.26.0.249"))).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_A, tcp("172.26.1.10"))).toBe("allow");
    expect(verdictOf(f, KEY_A, tcp("172.26.1.20"))).toBe("allow");
    expect(verdictOf(f, KEY_A, tcp("172.26.1.21"))).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_A, tcp("172.26.1.9"))).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_A, tcp("172.26.2.0"))).toBe("allow");
    expect(verdictOf(f, KEY_A, tcp("172.26.2.255"))).toBe("allow");
    expect(verdictOf(f, KEY_A, tcp("172.26.3.0"))).toBe("gateway-no-grant");
  });

  test("ports and protocols: tcp 80 only, udp 1000-2000, icmp", () => {
    const f = filterWith([
      { destination: "172.26.0.250", protocol: "tcp", ports: "80" },
      { destination: "172.26.0.0/24", protocol: "udp", ports: "1000-2000" },
      { destination: "172.26.0.9", protocol: "icmp" },
    ]);
    expect(verdictOf(f, KEY_A, tcp("172.26.0.250", 80))).toBe("allow");
    expect(verdictOf(f, KEY_A, tcp("172.26.0.250", 22))).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_A, tcp("172.26.0.251", 80))).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_A, { src: "100.64.0.2", dst: "172.26.0.250", proto: "udp", dport: 80 })).toBe("gateway-no-grant");
    for (const [port, want] of [
      [999, "gateway-no-grant"],
      [1000, "allow"],
      [2000, "allow"],
      [2001, "gateway-no-grant"],
    ] as const) {
      expect(verdictOf(f, KEY_A, { src: "100.64.0.2", dst: "172.26.0.77", proto: "udp", dport: port })).toBe(want);
    }
    expect(verdictOf(f, KEY_A, { src: "100.64.0.2", dst: "172.26.0.9", proto: "icmp" })).toBe("allow");
    expect(verdictOf(f, KEY_A, { src: "100.64.0.2", dst: "172.26.0.250", proto: "icmp" })).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_A, { src: "100.64.0.2", dst: "172.26.0.9", proto: 47 })).toBe("gateway-no-grant");
  });

  test("deny wins over allow", () => {
    const f = new GatewayFilter({
      senders: [
        {
          peerPublicKey: KEY_A,
          virtualAddresses: ["100.64.0.2"],
          allow: [{ destination: "172.26.0.0/20", protocol: "any" }],
          deny: [{ destination: "172.26.0.250", protocol: "tcp", ports: "22" }],
        },
      ],
      localAddresses: [],
      overlayNetwork: "100.64.0.0/10",
    });
    expect(verdictOf(f, KEY_A, tcp("172.26.0.250", 22))).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_A, tcp("172.26.0.250", 23))).toBe("allow");
    expect(verdictOf(f, KEY_A, tcp("172.26.0.251", 22))).toBe("allow");
  });

  test("a source other than the sender's own virtual address is spoofed, even inside a grant", () => {
    const f = filterWith([{ destination: "172.26.0.0/20", protocol: "any" }]);
    expect(verdictOf(f, KEY_A, tcp("172.26.0.250", 80, "100.64.0.3"))).toBe("gateway-source-spoofed");
    expect(verdictOf(f, KEY_A, tcp("172.26.0.250", 80, "172.26.0.5"))).toBe("gateway-source-spoofed");
    expect(verdictOf(f, KEY_B, tcp("172.26.0.250", 80, "100.64.0.3"))).toBe("gateway-no-grant"); // no entry at all
  });

  test("the gateway's own LAN address is never reached through a subnet grant that covers it", () => {
    const f = filterWith([{ destination: "172.26.0.0/20", protocol: "any" }]);
    expect(verdictOf(f, KEY_A, tcp("172.26.0.1", 22))).toBe("gateway-local-address");
    expect(verdictOf(f, KEY_A, { src: "100.64.0.2", dst: "172.26.0.1", proto: "icmp" })).toBe("gateway-local-address");
    expect(verdictOf(f, KEY_A, tcp("172.26.0.2", 22))).toBe("allow");
  });

  test("the gateway's virtual address is handed to the Device's inbound ACLs, whatever the grants", () => {
    const allow = [{ destination: "0.0.0.0/0", protocol: "any" as const }];
    const f = filterWith(allow);
    expect(verdictOf(f, KEY_A, tcp("100.64.0.1", 22))).toBe("self");
    expect(verdictOf(f, KEY_B, tcp("100.64.0.1", 22, "100.64.0.3"))).toBe("self");
    expect(verdictOf(f, KEY_A, tcp("100.64.0.1", 22, "100.64.0.9"))).toBe("self"); // the ACL checks the source
    // A 0.0.0.0/0 grant does not relay to other overlay addresses either.
    expect(verdictOf(f, KEY_A, tcp("100.64.0.7", 80))).toBe("gateway-no-grant");
  });

  test("a grant on one subnet does not leak into another subnet the gateway serves", () => {
    const f = new GatewayFilter({
      senders: [
        { peerPublicKey: KEY_A, virtualAddresses: ["100.64.0.2"], allow: [{ destination: "172.26.0.0/20", protocol: "any" }] },
        { peerPublicKey: KEY_B, virtualAddresses: ["100.64.0.3"], allow: [{ destination: "10.20.0.0/16", protocol: "any" }] },
      ],
      localAddresses: ["100.64.0.1", "172.26.0.1", "10.20.0.1"],
      overlayNetwork: "100.64.0.0/10",
    });
    expect(verdictOf(f, KEY_A, tcp("172.26.15.255"))).toBe("allow");
    expect(verdictOf(f, KEY_A, tcp("172.26.16.0"))).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_A, tcp("10.20.0.5"))).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_B, tcp("10.20.0.5", 80, "100.64.0.3"))).toBe("allow");
    expect(verdictOf(f, KEY_B, tcp("172.26.0.5", 80, "100.64.0.3"))).toBe("gateway-no-grant");
    // B's source with A's key (or the reverse) is spoofing.
    expect(verdictOf(f, KEY_A, tcp("10.20.0.5", 80, "100.64.0.3"))).toBe("gateway-source-spoofed");
  });

  test("later fragments are not judged alone; first fragments need their ports", () => {
    const f = filterWith([{ destination: "172.26.0.0/20", protocol: "udp", ports: "53" }]);
    const first = { src: "100.64.0.2", dst: "172.26.0.5", proto: "udp" as const, dport: 53, moreFragments: true };
    expect(verdictOf(f, KEY_A, first)).toBe("allow");
    expect(verdictOf(f, KEY_A, { ...first, fragOffset: 185, moreFragments: false })).toBe("gateway-fragment");
    // A first fragment too short for a UDP header is malformed (RFC 1858 tiny fragments).
    const h = new PacketHeaders();
    const tiny = ipPacket({ src: "100.64.0.2", dst: "172.26.0.5", proto: 17, moreFragments: true, payload: new Uint8Array(4) });
    expect(h.parse(tiny, tiny.length)).not.toBe(PARSE_OK);
  });

  test("IPv6: prefixes, ranges, extension headers, fragments", () => {
    const f = new GatewayFilter({
      senders: [
        {
          peerPublicKey: KEY_A,
          virtualAddresses: ["fd7a::2"],
          allow: [
            { destination: "fd10::/64", protocol: "tcp", ports: "443" },
            { destination: "fd20::10-fd20::20", protocol: "icmp" },
          ],
        },
      ],
      localAddresses: ["fd7a::1", "fd10::1"],
      overlayNetwork: "fd7a::/64",
    });
    expect(verdictOf(f, KEY_A, { src: "fd7a::2", dst: "fd10::abcd", proto: "tcp", dport: 443 })).toBe("allow");
    expect(verdictOf(f, KEY_A, { src: "fd7a::2", dst: "fd10:0:0:1::1", proto: "tcp", dport: 443 })).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_A, { src: "fd7a::2", dst: "fd10::1", proto: "tcp", dport: 443 })).toBe("gateway-local-address");
    expect(verdictOf(f, KEY_A, { src: "fd7a::2", dst: "fd20::15", proto: "icmp" })).toBe("allow");
    expect(verdictOf(f, KEY_A, { src: "fd7a::2", dst: "fd20::21", proto: "icmp" })).toBe("gateway-no-grant");
    expect(verdictOf(f, KEY_A, { src: "fd7a::2", dst: "fd10::5", proto: "tcp", dport: 443, moreFragments: true })).toBe("allow");
    expect(verdictOf(f, KEY_A, { src: "fd7a::2", dst: "fd10::5", proto: "tcp", fragOffset: 100 })).toBe("gateway-fragment");
    // A hop-by-hop options header before TCP is walked.
    const p = ipPacket({ src: "fd7a::2", dst: "fd10::5", proto: "tcp", dport: 443 });
    const withHbh = new Uint8Array(p.length + 8);
    withHbh.set(p.subarray(0, 40));
    withHbh[6] = 0;
    withHbh[40] = 6; // next header TCP, length 0 (8 bytes)
    withHbh.set(p.subarray(40), 48);
    withHbh[5] = p[5]! + 8;
    const h = new PacketHeaders();
    expect(h.parse(withHbh, withHbh.length)).toBe(PARSE_OK);
    expect([h.proto, h.dport]).toEqual([6, 443]);
    expect(f.check(f.sender(KEY_A), h, f.destinationKind(h))).toBe(ALLOW);
  });

  test("bad configuration is rejected with E_CONFIG_INVALID and a path", () => {
    const bad = (allow: GatewayRule[]) => () => filterWith(allow);
    expect(bad([{ destination: "172.26.0.0/33", protocol: "any" }])).toThrow(GatewayConfigError);
    expect(bad([{ destination: "172.26.0.9-172.26.0.1", protocol: "any" }])).toThrow(/starts after it ends/);
    expect(bad([{ destination: "172.26.0.1", protocol: "icmp", ports: "80" }])).toThrow(/need protocol tcp or udp/);
    expect(bad([{ destination: "172.26.0.1", protocol: "tcp", ports: "70000" }])).toThrow(/senders\[0\]\.allow\[0\]/);
    expect(bad([{ destination: "172.26.0.1", protocol: "sctp" as "any" }])).toThrow(/protocol "sctp"/);
    try {
      bad([{ destination: "nope", protocol: "any" }])();
    } catch (e) {
      expect((e as GatewayConfigError).code).toBe("E_CONFIG_INVALID");
    }
  });

  test("10,000 single-IP rules compile to intervals and still answer exactly", () => {
    const allow: GatewayRule[] = [];
    for (let i = 0; i < 10_000; i++) allow.push({ destination: `10.${(i >> 8) & 255}.${i & 255}.${(i * 7) & 255}`, protocol: "tcp", ports: String(1000 + (i % 50)) });
    const f = filterWith(allow);
    expect(f.describe().rules).toBe(10_000);
    for (let i = 0; i < 10_000; i += 97) {
      const dst = `10.${(i >> 8) & 255}.${i & 255}.${(i * 7) & 255}`;
      expect(verdictOf(f, KEY_A, tcp(dst, 1000 + (i % 50)))).toBe("allow");
      expect(verdictOf(f, KEY_A, tcp(dst, 999))).toBe("gateway-no-grant");
    }
  });
});
