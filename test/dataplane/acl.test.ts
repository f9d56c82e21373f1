/**
 * @module test/dataplane/acl
 * Inbound ACLs (core/dataplane/acl.ts, Device stage I10): the compiled filter against a
 * brute-force oracle (every rule scanned, bigint addresses) and against the NetMap's own
 * reference `rulesPermit`, over random rules and packets with fixed seeds; the same property
 * through two in-memory Devices; then the named cases: a tcp/22 ACL reaches 22 but not 80,
 * answers to connections the device opened get in (TCP, UDP, ICMP echo, ICMP errors), ICMP echo
 * only with an icmp/any rule, null lets everything through, revocation takes effect at once,
 * fragments, a gateway whose sender has a subnet grant only (LAN yes, the gateway's own services
 * no, until a direct policy opens them), config errors, stats, and no allocation per packet.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { AclConfigError, type AclRule, type InboundAcl, InboundAclFilter } from "../../core/dataplane/acl.ts";
import { Device, type PeerConfig } from "../../core/dataplane/device.ts";
import { FlowTable } from "../../core/dataplane/flow-table.ts";
import { DEFAULT_FLOW_TIMEOUTS, FlowTracker } from "../../core/dataplane/flow-tracker.ts";
import type { GatewayConfig } from "../../core/dataplane/gateway.ts";
import { PARSE_OK, PacketHeaders } from "../../core/dataplane/headers.ts";
import { silentLogger } from "../../core/log.ts";
import { parseAddress } from "../../core/net/address.ts";
import { type NetMapRule, rulesPermit } from "../../core/policy/netmap.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { encodeKey, generatePrivateKey, publicKeyFrom } from "../../core/wire/keys.ts";
import { fakeClock, seededRandom } from "../wire/helpers.ts";
import { MemoryNetwork, MemoryTun, twoDevices } from "./memory.ts";
import { ACK, FIN, SYN, type PacketSpec, icmpError, ipPacket } from "./packets.ts";

const KEY_A = "www5MrbYq4EHZJx50mKMShkucSDfL6B1P/fmcGk+hRs=";
const KEY_B = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

// ---------------------------------------------------------------- the oracle

function big(text: string): bigint {
  let n = 0n;
  for (const b of parseAddress(text).bytes) n = (n << 8n) | BigInt(b);
  return n;
}

function inRange(text: string, addr: string): boolean {
  const v6 = addr.includes(":");
  const a = big(addr);
  if (text.includes("-")) {
    const [lo, hi] = text.split("-") as [string, string];
    return lo.includes(":") === v6 && big(lo) <= a && a <= big(hi);
  }
  const [base, len] = text.split("/") as [string, string | undefined];
  if (base.includes(":") !== v6) return false;
  const bits = v6 ? 128 : 32;
  const lo = big(base);
  const hi = lo + (1n << BigInt(bits - (len === undefined ? bits : Number(len)))) - 1n;
  return lo <= a && a <= hi;
}

function protoNumber(spec: PacketSpec): number {
  const v6 = spec.src.includes(":");
  return spec.proto === "tcp" ? 6 : spec.proto === "udp" ? 17 : spec.proto === "icmp" ? (v6 ? 58 : 1) : spec.proto;
}

function ruleMatches(r: AclRule, spec: PacketSpec): boolean {
  if (!inRange(r.source, spec.src) || !inRange(r.destination, spec.dst)) return false;
  const p = protoNumber(spec);
  const v6 = spec.src.includes(":");
  if (r.protocol === "tcp" && p !== 6) return false;
  if (r.protocol === "udp" && p !== 17) return false;
  if (r.protocol === "icmp" && p !== (v6 ? 58 : 1)) return false;
  if (r.ports === undefined) return true;
  if (p !== 6 && p !== 17) return false;
  const [lo, hi] = r.ports.split("-").map(Number) as [number, number | undefined];
  const port = spec.dport ?? (p === 6 ? 80 : 53);
  return lo <= port && port <= (hi ?? lo);
}

/** Scans every rule: some allow of the sender's entry matches and no deny does. */
function oracle(acls: readonly InboundAcl[], key: string, spec: PacketSpec): boolean {
  const acl = acls.find((a) => a.peerPublicKey === key);
  if (acl === undefined) return false;
  return acl.allow.some((r) => ruleMatches(r, spec)) && !(acl.deny ?? []).some((r) => ruleMatches(r, spec));
}

/** The NetMap's reference, where it can speak (tcp, udp, icmp). */
function reference(acls: readonly InboundAcl[], key: string, spec: PacketSpec): boolean | null {
  if (typeof spec.proto === "number") return null;
  const rules: NetMapRule[] = acls.flatMap((a) =>
    (["allow", "deny"] as const).flatMap((action) =>
      (action === "allow" ? a.allow : (a.deny ?? [])).map(
        (r): NetMapRule => ({ action, peer: a.peerPublicKey, src: r.source, dst: r.destination, protocol: r.protocol, ...(r.ports ? { ports: r.ports } : {}), policy: "p" }),
      ),
    ),
  );
  const port = spec.proto === "icmp" ? undefined : (spec.dport ?? (spec.proto === "tcp" ? 80 : 53));
  return rulesPermit(rules, { peer: key, src: spec.src, dst: spec.dst, protocol: spec.proto, port });
}

function filterVerdict(filter: InboundAclFilter, key: string, spec: PacketSpec): boolean {
  const h = new PacketHeaders();
  const p = ipPacket(spec);
  if (h.parse(p, p.length) !== PARSE_OK) throw new Error("unparseable test packet");
  return filter.peer(key)?.permits(h) ?? false;
}

// ---------------------------------------------------------------- generators

const SOURCES4 = ["10.0.0.1", "10.0.0.0/30", "10.0.0.8-10.0.0.9", "10.0.0.9/32", "0.0.0.0/0"];
const SOURCES6 = ["fd00::1", "fd00::/120", "fd00::8-fd00::9"];
const DESTS4 = ["10.0.0.2", "10.0.0.2-10.0.0.3", "10.0.0.0/24", "10.0.0.3/32"];
const DESTS6 = ["fd00::2", "fd00::/64", "fd00::3-fd00::7"];

const arbPorts = fc.oneof(
  fc.constant(undefined),
  fc.integer({ min: 0, max: 30 }).map(String),
  fc.tuple(fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 12 })).map(([lo, w]) => `${lo}-${lo + w}`),
  fc.constant("0-65535"),
);

const arbRule: fc.Arbitrary<AclRule> = fc.integer({ min: 0, max: 9 }).chain((f) => {
  const v6 = f >= 8;
  // Now and then a rule whose source and destination are of different families (matches nothing).
  const crossed = f === 7;
  return fc
    .tuple(
      fc.constantFrom(...(v6 ? SOURCES6 : SOURCES4)),
      fc.constantFrom(...(v6 !== crossed ? DESTS6 : DESTS4)),
      fc.constantFrom("any", "tcp", "udp", "icmp" as const),
      arbPorts,
    )
    .map(([source, destination, protocol, ports]) => ({ source, destination, protocol, ...(ports === undefined ? {} : { ports }) }));
});

/** Packets A may send to B: sources B accepts from A, destinations A routes to B. */
const arbSpec: fc.Arbitrary<PacketSpec> = fc.integer({ min: 0, max: 9 }).chain((f) => {
  const v6 = f >= 8;
  return fc.record({
    src: fc.constantFrom(...(v6 ? ["fd00::1", "fd00::9"] : ["10.0.0.1", "10.0.0.9"])),
    dst: fc.constantFrom(...(v6 ? ["fd00::2", "fd00::3"] : ["10.0.0.2", "10.0.0.3"])),
    proto: fc.constantFrom("tcp", "udp", "icmp", 47 as const),
    dport: fc.oneof(fc.integer({ min: 0, max: 44 }), fc.constant(65535)),
    sport: fc.integer({ min: 1024, max: 1030 }),
    flags: fc.constant(SYN),
  }) as fc.Arbitrary<PacketSpec>;
});

const arbAcls = fc
  .tuple(fc.array(arbRule, { maxLength: 12 }), fc.array(arbRule, { maxLength: 3 }), fc.array(arbRule, { maxLength: 4 }))
  .map(([allowA, denyA, allowB]): InboundAcl[] => [
    { peerPublicKey: KEY_A, allow: allowA, deny: denyA },
    { peerPublicKey: KEY_B, allow: allowB },
  ]);

describe("InboundAclFilter against a brute-force oracle", () => {
  test("random rules (addresses, prefixes, ranges, protocols, ports, deny) and packets agree, and agree with rulesPermit", () => {
    let referenced = 0;
    let allowed = 0;
    fc.assert(
      fc.property(arbAcls, fc.array(fc.tuple(fc.constantFrom(KEY_A, KEY_B, KEY_B.replace("H", "J")), arbSpec), { minLength: 40, maxLength: 40 }), (acls, packets) => {
        const filter = new InboundAclFilter(acls);
        for (const [key, spec] of packets) {
          const got = filterVerdict(filter, key, spec);
          const want = oracle(acls, key, spec);
          if (want) allowed++;
          if (got !== want) throw new Error(`${JSON.stringify({ acls, key, spec })}: got ${got}, oracle ${want}`);
          const ref = reference(acls, key, spec);
          if (ref !== null) {
            referenced++;
            if (ref !== want) throw new Error(`oracle and rulesPermit disagree: ${JSON.stringify({ acls, key, spec })}`);
          }
        }
      }),
      { numRuns: 500, seed: 4242 },
    );
    expect(referenced).toBeGreaterThan(10_000);
    expect(allowed).toBeGreaterThan(1_000); // of 20,000: allowed and denied both well represented
  });

  test("port lists long enough for a bitmap answer like short ones", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 400 }), fc.integer({ min: 0, max: 5 })), { minLength: 1, maxLength: 40 }), (ranges) => {
        const allow: AclRule[] = ranges.map(([lo, w]) => ({ source: "10.0.0.1", destination: "10.0.0.2", protocol: "udp", ports: `${lo}-${lo + w}` }));
        const acls = [{ peerPublicKey: KEY_A, allow, deny: [{ source: "10.0.0.1", destination: "10.0.0.2", protocol: "udp" as const, ports: "100-110" }] }];
        const filter = new InboundAclFilter(acls);
        for (let port = 0; port <= 420; port++) {
          const spec: PacketSpec = { src: "10.0.0.1", dst: "10.0.0.2", proto: "udp", dport: port };
          if (filterVerdict(filter, KEY_A, spec) !== oracle(acls, KEY_A, spec)) throw new Error(`port ${port}: ${JSON.stringify(ranges)}`);
        }
      }),
      { numRuns: 80, seed: 99 },
    );
  });
});

// ---------------------------------------------------------------- two Devices

function pair(options: { seed?: number } = {}) {
  const rig = twoDevices({ seed: options.seed ?? 3, bKnowsA: true });
  const { a, b, net } = rig;
  /** A sends `p` into the tunnel; what reached B's TUN. */
  const aToB = (p: Uint8Array) => {
    a.device.handleTunPacket(p);
    net.deliver();
    return b.tun.take();
  };
  const bToA = (p: Uint8Array) => {
    b.device.handleTunPacket(p);
    net.deliver();
    return a.tun.take();
  };
  const bDrops = () => b.device.stats().peers[0]!.drops;
  return { ...rig, aToB, bToA, bDrops };
}

const A = "10.0.0.1";
const B = "10.0.0.2";
const tcp = (src: string, dst: string, sport: number, dport: number, flags = SYN) => ipPacket({ src, dst, proto: "tcp", sport, dport, flags });
const udp = (src: string, dst: string, sport: number, dport: number) => ipPacket({ src, dst, proto: "udp", sport, dport });
const allowFromA = (r: Partial<AclRule> & Pick<AclRule, "protocol">): AclRule => ({ source: A, destination: B, ...r });

describe("Device inbound ACL against the oracle (two in-memory Devices)", () => {
  test("what reaches B's TUN is exactly what the oracle allows", () => {
    let delivered = 0;
    let dropped = 0;
    fc.assert(
      fc.property(arbAcls, fc.array(arbSpec, { minLength: 25, maxLength: 25 }), (acls, specs) => {
        const r = twoDevices({ seed: 11 });
        // A may send from .1/.9 and routes .2/.3 to B: sources and destinations beyond the hosts.
        r.a.device.setPeers([{ publicKey: r.b.publicKey, allowedIps: ["10.0.0.2/32", "10.0.0.3/32", "fd00::2/128", "fd00::3/128"], endpoint: r.b.endpoint }]);
        r.b.device.setPeers([{ publicKey: r.a.publicKey, allowedIps: ["10.0.0.1/32", "10.0.0.9/32", "fd00::1/128", "fd00::9/128"] }]);
        const keyed = acls.map((acl, i) => ({ ...acl, peerPublicKey: i === 0 ? r.a.publicKey : acl.peerPublicKey }));
        r.b.device.setInboundRules(keyed);
        let denied = 0;
        for (const spec of specs) {
          const p = ipPacket(spec);
          r.a.device.handleTunPacket(p);
          r.net.deliver();
          const got = r.b.tun.take();
          const want = oracle(keyed, r.a.publicKey, spec);
          if (!want) denied++;
          if (want) delivered++;
          else dropped++;
          if (got.length !== (want ? 1 : 0)) throw new Error(`${JSON.stringify({ acls: keyed, spec })}: delivered ${got.length}, oracle ${want}`);
        }
        expect(r.b.device.stats().peers[0]!.drops["acl-denied"] ?? 0).toBe(denied);
      }),
      { numRuns: 40, seed: 2024 },
    );
    expect(delivered).toBeGreaterThan(100);
    expect(dropped).toBeGreaterThan(100);
  });
});

describe("Device inbound ACL cases", () => {
  test("a peer with tcp/22 reaches 22, not 80; denials are counted per peer as acl-denied", () => {
    const r = pair();
    r.b.device.setInboundRules([{ peerPublicKey: r.a.publicKey, allow: [allowFromA({ protocol: "tcp", ports: "22" })] }]);
    expect(r.aToB(tcp(A, B, 40000, 22))).toHaveLength(1);
    expect(r.aToB(tcp(A, B, 40001, 80))).toEqual([]);
    expect(r.aToB(udp(A, B, 40002, 22))).toEqual([]);
    expect(r.bDrops()).toEqual({ "acl-denied": 2 });
    expect(r.b.device.stats().acl).toEqual({ peers: 1, rules: 1, flows: 0, maxFlows: 65_536 });
    expect(r.a.device.stats().acl).toBeNull();
  });

  test("answers to connections B opened get in (TCP, UDP, ICMP echo, ICMP errors); nothing else does", () => {
    const r = pair();
    r.b.device.setInboundRules([]);
    expect(r.bToA(tcp(B, A, 50000, 80))).toHaveLength(1);
    expect(r.aToB(tcp(A, B, 80, 50000, SYN | ACK))).toHaveLength(1);
    expect(r.aToB(tcp(A, B, 80, 50000, ACK))).toHaveLength(1);
    // Same ports, the other way round: A cannot open a connection of its own.
    expect(r.aToB(tcp(A, B, 50000, 80))).toEqual([]);
    expect(r.aToB(tcp(A, B, 81, 50000, SYN | ACK))).toEqual([]);

    const query = udp(B, A, 5353, 53);
    expect(r.bToA(query)).toHaveLength(1);
    expect(r.aToB(udp(A, B, 53, 5353))).toHaveLength(1);
    expect(r.aToB(udp(A, B, 53, 5354))).toEqual([]);
    const unreachable = icmpError(A, B, query);
    expect(r.aToB(unreachable)).toEqual([unreachable]);
    expect(r.aToB(icmpError(A, B, udp(B, A, 5999, 53)))).toEqual([]);

    expect(r.bToA(ipPacket({ src: B, dst: A, proto: "icmp", icmpId: 7 }))).toHaveLength(1);
    expect(r.aToB(ipPacket({ src: A, dst: B, proto: "icmp", icmpType: 0, icmpId: 7 }))).toHaveLength(1);
    expect(r.aToB(ipPacket({ src: A, dst: B, proto: "icmp", icmpType: 0, icmpId: 8 }))).toEqual([]);
    expect(r.aToB(ipPacket({ src: A, dst: B, proto: "icmp", icmpId: 7 }))).toEqual([]); // A's own echo request
    expect(r.bDrops()).toEqual({ "acl-denied": 6 });
    expect(r.b.device.stats().acl!.flows).toBe(3);
    // Flows time out (an unanswered UDP flow after 30 s; the tick sweeps them).
    const late = udp(B, A, 6000, 53);
    r.bToA(late);
    r.clock.advance(DEFAULT_FLOW_TIMEOUTS.udpMs);
    r.b.device.tick();
    expect(r.aToB(udp(A, B, 53, 6000))).toEqual([]);
  });

  test("ICMP echo from a peer only with an icmp or any rule", () => {
    const echo = ipPacket({ src: A, dst: B, proto: "icmp", icmpId: 1 });
    for (const [rules, passes] of [
      [[allowFromA({ protocol: "icmp" })], true],
      [[allowFromA({ protocol: "any" })], true],
      [[allowFromA({ protocol: "tcp" }), allowFromA({ protocol: "udp" })], false],
      [[allowFromA({ protocol: "any", ports: "0-65535" })], false],
      [[allowFromA({ protocol: "icmp" }), { ...allowFromA({ protocol: "icmp" }), source: "10.0.0.9" }], true],
      [[{ ...allowFromA({ protocol: "icmp" }), destination: "10.0.0.3" }], false],
    ] as const) {
      const r = pair();
      r.b.device.setInboundRules([{ peerPublicKey: r.a.publicKey, allow: [...rules] }]);
      expect(r.aToB(echo)).toHaveLength(passes ? 1 : 0);
    }
  });

  test("null (the default) lets everything through; [] lets only answers through; null again turns it off", () => {
    const r = pair();
    const probe = () => r.aToB(tcp(A, B, 40000, 8080)).length;
    expect(probe()).toBe(1);
    r.b.device.setInboundRules(null);
    expect(probe()).toBe(1);
    r.b.device.setInboundRules([]);
    expect(probe()).toBe(0);
    r.b.device.setInboundRules(null);
    expect(probe()).toBe(1);
    expect(r.b.device.stats().acl).toBeNull();
    expect(r.bDrops()).toEqual({ "acl-denied": 1 });
  });

  test("a deny wins over an allow; the source must be what the rule names", () => {
    const r = pair();
    r.b.device.setPeers([{ publicKey: r.a.publicKey, allowedIps: ["10.0.0.1/32", "10.0.0.9/32", "fd00::1/128"] }]);
    r.a.device.setPeers([{ publicKey: r.b.publicKey, allowedIps: ["10.0.0.2/32"], endpoint: r.b.endpoint }]);
    r.b.device.setInboundRules([
      { peerPublicKey: r.a.publicKey, allow: [allowFromA({ protocol: "tcp" })], deny: [allowFromA({ protocol: "tcp", ports: "23" })] },
    ]);
    expect(r.aToB(tcp(A, B, 40000, 22))).toHaveLength(1);
    expect(r.aToB(tcp(A, B, 40000, 23))).toEqual([]);
    expect(r.aToB(tcp("10.0.0.9", B, 40000, 22))).toEqual([]); // allowed by cryptokey routing, not by the ACL
    expect(r.bDrops()).toEqual({ "acl-denied": 2 });
  });

  test("revoking an ACL stops the peer's side of its connections at once (TCP and UDP); B's own flows stay", () => {
    const r = pair();
    const acl = (ports: string): InboundAcl[] => [
      { peerPublicKey: r.a.publicKey, allow: [allowFromA({ protocol: "tcp", ports }), allowFromA({ protocol: "udp", ports })] },
    ];
    r.b.device.setInboundRules(acl("22"));
    // A opens tcp/22 and udp/22 to B; B answers both (its answers record no TCP flow).
    expect(r.aToB(tcp(A, B, 40000, 22))).toHaveLength(1);
    expect(r.bToA(tcp(B, A, 22, 40000, SYN | ACK))).toHaveLength(1);
    expect(r.aToB(tcp(A, B, 40000, 22, ACK))).toHaveLength(1);
    expect(r.aToB(udp(A, B, 41000, 22))).toHaveLength(1);
    expect(r.bToA(udp(B, A, 22, 41000))).toHaveLength(1);
    // B's own UDP flow to A's port 22 and TCP connection to A's port 80.
    expect(r.bToA(udp(B, A, 42000, 22))).toHaveLength(1);
    expect(r.bToA(tcp(B, A, 43000, 80))).toHaveLength(1);
    expect(r.b.device.stats().acl!.flows).toBe(3); // B's UDP answer, its own UDP flow, its own TCP connection
    r.b.device.setInboundRules(acl("2222"));
    expect(r.b.device.stats().acl!.flows).toBe(2); // the answer's flow was revoked
    expect(r.aToB(tcp(A, B, 40000, 22, ACK))).toEqual([]);
    expect(r.aToB(udp(A, B, 41000, 22))).toEqual([]);
    // B's answers keep going out but open nothing; its own flows still get their answers.
    expect(r.bToA(tcp(B, A, 22, 40000, ACK))).toHaveLength(1);
    expect(r.aToB(tcp(A, B, 40000, 22, ACK))).toEqual([]);
    expect(r.aToB(udp(A, B, 22, 42000))).toHaveLength(1);
    expect(r.aToB(tcp(A, B, 80, 43000, SYN | ACK))).toHaveLength(1);
    expect(r.bDrops()).toEqual({ "acl-denied": 3 });
  });

  test("a TCP flow closes: after a FIN the answers stop at the closing timeout", () => {
    const r = pair();
    r.b.device.setInboundRules([]);
    r.bToA(tcp(B, A, 50000, 80));
    r.aToB(tcp(A, B, 80, 50000, SYN | ACK));
    r.bToA(tcp(B, A, 50000, 80, FIN | ACK));
    r.clock.advance(DEFAULT_FLOW_TIMEOUTS.tcpClosingMs + 1);
    expect(r.aToB(tcp(A, B, 80, 50000, FIN | ACK))).toEqual([]);
  });

  test("fragments: later ones follow a first fragment that passed; strays are dropped", () => {
    const r = pair();
    r.b.device.setInboundRules([{ peerPublicKey: r.a.publicKey, allow: [allowFromA({ protocol: "udp", ports: "53" })] }]);
    const first = ipPacket({ src: A, dst: B, proto: "udp", dport: 53, moreFragments: true, fragId: 77, payload: new Uint8Array(64) });
    const later = ipPacket({ src: A, dst: B, proto: "udp", fragOffset: 9, fragId: 77, payload: new Uint8Array(32) });
    const stray = ipPacket({ src: A, dst: B, proto: "udp", fragOffset: 9, fragId: 78, payload: new Uint8Array(32) });
    const deniedFirst = ipPacket({ src: A, dst: B, proto: "udp", dport: 54, moreFragments: true, fragId: 79, payload: new Uint8Array(64) });
    const deniedLater = ipPacket({ src: A, dst: B, proto: "udp", fragOffset: 9, fragId: 79, payload: new Uint8Array(32) });
    expect(r.aToB(first)).toHaveLength(1);
    expect(r.aToB(later)).toEqual([later]);
    expect(r.aToB(stray)).toEqual([]);
    expect(r.aToB(deniedFirst)).toEqual([]);
    expect(r.aToB(deniedLater)).toEqual([]);
    expect(r.bDrops()).toEqual({ "acl-denied": 3 });
  });

  test("the own-flow table's cap: B's new flows beyond it are dropped and counted", () => {
    const r = twoDevices({ seed: 5, bKnowsA: true });
    const b = new Device({
      privateKey: r.b.privateKey,
      crypto: r.crypto,
      now: r.clock.now,
      random: seededRandom(8),
      logger: silentLogger,
      tun: r.b.tun,
      bind: r.net.bind(r.b.endpoint),
      maxOwnFlows: 2,
    });
    r.net.attach(r.b.endpoint, b);
    b.setPeers([{ publicKey: r.a.publicKey, allowedIps: ["10.0.0.1/32"], endpoint: r.a.endpoint }]);
    b.setInboundRules([]);
    for (const port of [1, 2, 3]) b.handleTunPacket(udp(B, A, port, 53));
    r.net.deliver();
    expect(r.a.tun.take()).toHaveLength(2);
    expect(b.stats().peers[0]!.drops).toEqual({ "flow-table-full": 1 });
    expect(() => new Device({ ...{ privateKey: r.b.privateKey, crypto: r.crypto, now: r.clock.now, random: seededRandom(1), logger: silentLogger, tun: r.b.tun, bind: r.net.bind(r.b.endpoint) }, maxOwnFlows: 0 })).toThrow(/maxOwnFlows/);
  });

  test("bad ACLs are rejected with E_CONFIG_INVALID and a path; the old ACL stays", () => {
    const bad = (acls: InboundAcl[]) => () => new InboundAclFilter(acls);
    const ok: AclRule = { source: A, destination: B, protocol: "tcp" };
    expect(bad([{ peerPublicKey: "nope", allow: [ok] }])).toThrow(AclConfigError);
    expect(bad([{ peerPublicKey: KEY_A, allow: [ok] }, { peerPublicKey: KEY_A, allow: [] }])).toThrow(/inbound\[1\].*twice/);
    expect(bad([{ peerPublicKey: KEY_A, allow: [{ ...ok, ports: "70000" }] }])).toThrow(/inbound\[0\]\.allow\[0\]/);
    expect(bad([{ peerPublicKey: KEY_A, allow: [ok], deny: [{ ...ok, source: "10.0.0.300" }] }])).toThrow(/inbound\[0\]\.deny\[0\]\.source/);
    expect(bad([{ peerPublicKey: KEY_A, allow: [{ ...ok, protocol: "sctp" as "any" }] }])).toThrow(/protocol "sctp"/);
    try {
      bad([{ peerPublicKey: KEY_A, allow: [{ ...ok, destination: "10.0.0.0/33" }] }])();
    } catch (e) {
      expect((e as AclConfigError).code).toBe("E_CONFIG_INVALID");
      expect((e as Error).message).toContain("inbound[0].allow[0].destination");
    }
    const r = pair();
    r.b.device.setInboundRules([{ peerPublicKey: r.a.publicKey, allow: [allowFromA({ protocol: "tcp", ports: "22" })] }]);
    expect(() => r.b.device.setInboundRules([{ peerPublicKey: r.a.publicKey, allow: [allowFromA({ protocol: "tcp", ports: "x" })] }])).toThrow(AclConfigError);
    expect(r.aToB(tcp(A, B, 40000, 22))).toHaveLength(1);
    expect(r.aToB(tcp(A, B, 40000, 80))).toEqual([]);
  });

  test("a peer added after setInboundRules gets its entry; one removed loses it", () => {
    const r = pair();
    r.b.device.setPeers([]);
    r.b.device.setInboundRules([{ peerPublicKey: r.a.publicKey, allow: [allowFromA({ protocol: "tcp", ports: "22" })] }]);
    r.b.device.setPeers([{ publicKey: r.a.publicKey, allowedIps: ["10.0.0.1/32"], endpoint: r.a.endpoint }]);
    expect(r.aToB(tcp(A, B, 40000, 22))).toHaveLength(1);
    expect(r.aToB(tcp(A, B, 40000, 23))).toEqual([]);
  });

  test("the ACL check and the own-flow table allocate nothing per packet (heap stays flat)", () => {
    const acls: InboundAcl[] = [
      {
        peerPublicKey: KEY_A,
        allow: [
          ...Array.from({ length: 20 }, (_, i): AclRule => ({ source: A, destination: B, protocol: "tcp", ports: String(1000 + 2 * i) })),
          { source: A, destination: B, protocol: "icmp" },
        ],
        deny: [{ source: A, destination: B, protocol: "tcp", ports: "1010" }],
      },
    ];
    const peer = new InboundAclFilter(acls).peer(KEY_A)!;
    const own = new FlowTracker(new FlowTable({ maxEntries: 4096, seed: 1 }), DEFAULT_FLOW_TIMEOUTS, true);
    const packets = Array.from({ length: 256 }, (_, i) => {
      const h = new PacketHeaders();
      const p = tcp(A, B, 2000 + i, 990 + (i % 60), i % 3 === 0 ? SYN : ACK);
      h.parse(p, p.length);
      return h;
    });
    const run = (n: number) => {
      let ok = 0;
      for (let i = 0; i < n; i++) {
        const h = packets[i & 255]!;
        if (peer.permits(h)) ok++;
        own.open(h, i);
        if (own.answer(h, i)) ok++;
      }
      return ok;
    };
    run(100_000);
    Bun.gc(true);
    const before = process.memoryUsage().heapUsed;
    expect(run(1_000_000)).toBeGreaterThan(0);
    Bun.gc(true);
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(1_000_000);
  });
});

// ---------------------------------------------------------------- a gateway

const CLIENT = "100.64.0.2";
const GW = "100.64.0.1";
const PRINTER = "172.26.0.250";

function gatewayRig() {
  const crypto = nobleCrypto();
  const clock = fakeClock();
  const random = seededRandom(23);
  const net = new MemoryNetwork();
  const make = (address: string) => {
    const privateKey = generatePrivateKey(random);
    const endpoint = { address, port: 51820 };
    const tun = new MemoryTun();
    const device = new Device({ privateKey, crypto, now: clock.now, random, logger: silentLogger, tun, bind: net.bind(endpoint) });
    net.attach(endpoint, device);
    return { device, tun, endpoint, publicKey: encodeKey(publicKeyFrom(crypto, privateKey)) };
  };
  const client = make("192.0.2.10");
  const gateway = make("192.0.2.1");
  const clientPeers: PeerConfig[] = [{ publicKey: gateway.publicKey, allowedIps: [`${GW}/32`, "172.26.0.0/20"], endpoint: gateway.endpoint }];
  client.device.setPeers(clientPeers);
  gateway.device.setPeers([{ publicKey: client.publicKey, allowedIps: [`${CLIENT}/32`], endpoint: client.endpoint }]);
  // A subnet-only grant that covers everything outside the overlay, the gateway's LAN address included.
  const config: GatewayConfig = {
    senders: [{ peerPublicKey: client.publicKey, virtualAddresses: [CLIENT], allow: [{ destination: "0.0.0.0/0", protocol: "any" }] }],
    localAddresses: [GW, "172.26.0.1"],
    overlayNetwork: "100.64.0.0/10",
  };
  gateway.device.setGateway(config);
  gateway.device.setInboundRules([]);
  const fromClient = (p: Uint8Array) => {
    client.device.handleTunPacket(p);
    net.deliver();
    return gateway.tun.take();
  };
  const fromGateway = (p: Uint8Array) => {
    gateway.device.handleTunPacket(p);
    net.deliver();
    return client.tun.take();
  };
  const drops = () => gateway.device.stats().peers[0]!.drops;
  return { client, gateway, fromClient, fromGateway, drops };
}

describe("a gateway with inbound ACLs", () => {
  test("a subnet-only grant reaches the LAN, never the gateway's own services, until a direct policy opens them", () => {
    const r = gatewayRig();
    const syn = (dst: string, dport: number) => tcp(CLIENT, dst, 40000, dport);
    expect(r.fromClient(syn(PRINTER, 80))).toHaveLength(1);
    expect(r.fromGateway(tcp(PRINTER, CLIENT, 80, 40000, SYN | ACK))).toHaveLength(1);
    expect(r.fromClient(syn(GW, 22))).toEqual([]);
    expect(r.fromClient(syn(GW, 53))).toEqual([]);
    expect(r.fromClient(ipPacket({ src: CLIENT, dst: GW, proto: "icmp" }))).toEqual([]);
    expect(r.fromClient(syn("172.26.0.1", 22))).toEqual([]);
    expect(r.drops()).toEqual({ "acl-denied": 3, "gateway-local-address": 1 });

    // A direct policy client -> gateway, tcp/22.
    r.gateway.device.setInboundRules([{ peerPublicKey: r.client.publicKey, allow: [{ source: CLIENT, destination: GW, protocol: "tcp", ports: "22" }] }]);
    expect(r.fromClient(syn(GW, 22))).toHaveLength(1);
    expect(r.fromClient(syn(GW, 80))).toEqual([]);
    // ... which opens nothing on the LAN side of the gateway, nor anything else.
    expect(r.fromClient(syn("172.26.0.1", 22))).toEqual([]);
    expect(r.drops()).toEqual({ "acl-denied": 4, "gateway-local-address": 2 });
    // The LAN keeps working.
    expect(r.fromClient(syn(PRINTER, 443))).toHaveLength(1);
  });

  test("the gateway's own connections to the overlay get their answers; a LAN answer is not its own flow", () => {
    const r = gatewayRig();
    const own = tcp(GW, CLIENT, 50000, 8080);
    expect(r.fromGateway(own)).toEqual([own]);
    const answer = tcp(CLIENT, GW, 8080, 50000, SYN | ACK);
    expect(r.fromClient(answer)).toEqual([answer]);
    expect(r.gateway.device.stats().acl!.flows).toBe(1);
    // The client's flow into the LAN is the gateway filter's (its flow table), not an own flow.
    r.fromClient(tcp(CLIENT, PRINTER, 40000, 80));
    r.fromGateway(tcp(PRINTER, CLIENT, 80, 40000, SYN | ACK));
    expect(r.gateway.device.stats().acl!.flows).toBe(1);
    expect(r.gateway.device.stats().gateway!.flows).toBe(1);
    // With the ACLs off, the virtual address is open again (as before ACLs existed).
    r.gateway.device.setInboundRules(null);
    expect(r.fromClient(tcp(CLIENT, GW, 40000, 22))).toHaveLength(1);
    expect(r.fromClient(tcp(CLIENT, "172.26.0.1", 40000, 22))).toEqual([]);
  });
});
