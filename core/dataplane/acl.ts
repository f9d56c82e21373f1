/**
 * @module core/dataplane/acl
 * Inbound ACLs: what each peer may send to this device itself (core/policy/model.ts rule 3:
 * senders open connections to receivers, limited by protocol and destination port; a NetMap's
 * `inboundRules`). The Device applies them at stage I10 (device.ts) to every decrypted packet
 * that is not forwarded by the gateway filter: on a plain device that is every packet, on a
 * gateway every packet addressed to its virtual address. Answers to connections this device
 * opened itself get in through its own flow table (flow-tracker.ts), not through these rules.
 *
 * Semantics are exactly `rulesPermit` (core/policy/netmap.ts), the NetMap's reference: a packet
 * passes when some allow rule of its sending peer matches and no deny rule of that peer does. A
 * rule matches when the packet's source lies in `source`, its destination in `destination` (an
 * address, a prefix "a/len" or a range "lo-hi", same family), its protocol is the rule's ("icmp"
 * is ICMP in IPv4 packets and ICMPv6 in IPv6 ones; "any" is every protocol) and, when the rule
 * has `ports`, the packet is TCP or UDP with its destination port in them (so "icmp" with ports
 * matches nothing). A peer with no entry may send nothing.
 *
 * Compiled per peer: its rules are grouped by (source, destination), and each group's allow and
 * deny rules are merged into one verdict each (per protocol: a flag, or merged port ranges held as
 * a short list or, past SHORT_PORT_LIST ranges, a 65,536-bit bitmap). A check scans the peer's
 * groups (one per distinct source/destination pair: one or two from a NetMap, whatever the number
 * of rules) and tests a port in constant time. No allocation per packet.
 */
import { WaygateError } from "../errors.ts";
import { decodeKey, encodeKey } from "../wire/keys.ts";
import { type ProtoRule, parseDestination, parsePorts, verdictOf } from "./filter.ts";
import { type PacketHeaders, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP } from "./headers.ts";

export type AclProtocol = "any" | "tcp" | "udp" | "icmp";

/** One rule, as a NetMap inbound rule carries it (without its action, peer and policy). */
export interface AclRule {
  /** The sender's address(es): an address, prefix or range (a NetMap rule's `src`). */
  source: string;
  /** This device's address(es) the rule opens (a NetMap rule's `dst`). */
  destination: string;
  protocol: AclProtocol;
  /** Destination ports, "22" or "1000-2000"; absent means all. */
  ports?: string;
}

/** What one peer may send to this device. */
export interface InboundAcl {
  /** The sending peer's public key (base64). */
  peerPublicKey: string;
  allow: AclRule[];
  /** Rules that win over every allow rule (a NetMap's deny rules). */
  deny?: AclRule[];
}

export class AclConfigError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_CONFIG_INVALID", message, options);
  }
}

/** Merged port ranges at most this long are scanned; longer ones become a bitmap. */
const SHORT_PORT_LIST = 8;

/** A set of ports: a short flat [lo, hi, ...] list, or a bitmap. */
class PortSet {
  readonly ranges: Int32Array;
  readonly bitmap: Uint8Array | null;

  constructor(ranges: [number, number][]) {
    this.ranges = Int32Array.from(ranges.flat());
    if (ranges.length <= SHORT_PORT_LIST) {
      this.bitmap = null;
      return;
    }
    const bits = new Uint8Array(8192);
    for (const [lo, hi] of ranges) for (let p = lo; p <= hi; p++) bits[p >> 3]! |= 1 << (p & 7);
    this.bitmap = bits;
  }

  has(port: number): boolean {
    const bits = this.bitmap;
    if (bits !== null) return (bits[port >> 3]! & (1 << (port & 7))) !== 0;
    const r = this.ranges;
    for (let i = 0; i < r.length; i += 2) if (port >= r[i]! && port <= r[i + 1]!) return true;
    return false;
  }

  get empty(): boolean {
    return this.ranges.length === 0;
  }
}

/** Per protocol, what a set of rules matches. */
class AclVerdict {
  constructor(
    readonly tcp: PortSet,
    readonly udp: PortSet,
    readonly icmp: boolean,
    readonly other: boolean,
  ) {}

  get empty(): boolean {
    return this.tcp.empty && this.udp.empty && !this.icmp && !this.other;
  }

  matches(h: PacketHeaders): boolean {
    const p = h.proto;
    if (p === PROTO_TCP) return this.tcp.has(h.dport);
    if (p === PROTO_UDP) return this.udp.has(h.dport);
    if ((p === PROTO_ICMP && h.family === 4) || (p === PROTO_ICMPV6 && h.family === 6)) return this.icmp;
    return this.other;
  }
}

/** Rules of one peer sharing a source and a destination range. */
class AclGroup {
  constructor(
    readonly family: number,
    /** Source lo (4 words) then hi (4 words), then destination lo, hi; IPv4 in the last word. */
    readonly bounds: Uint32Array,
    readonly allow: AclVerdict | null,
    readonly deny: AclVerdict | null,
  ) {}

  contains(h: PacketHeaders): boolean {
    if (h.family !== this.family) return false;
    const b = this.bounds;
    return (
      between(b, 0, h.s0, h.s1, h.s2, h.s3) &&
      between(b, 8, h.d0, h.d1, h.d2, h.d3)
    );
  }
}

/** Whether lo <= a <= hi, lo at words [o, o+4), hi at [o+4, o+8). */
function between(b: Uint32Array, o: number, a0: number, a1: number, a2: number, a3: number): boolean {
  return cmp(b, o, a0, a1, a2, a3) <= 0 && cmp(b, o + 4, a0, a1, a2, a3) >= 0;
}

function cmp(b: Uint32Array, o: number, a0: number, a1: number, a2: number, a3: number): number {
  return b[o]! - a0 || b[o + 1]! - a1 || b[o + 2]! - a2 || b[o + 3]! - a3;
}

/** One peer's compiled rules; what the Device keeps on each peer. */
export class AclPeer {
  constructor(
    readonly publicKey: string,
    readonly groups: readonly AclGroup[],
    readonly ruleCount: number,
  ) {}

  /** Whether the ACL lets this packet (parsed; not a later fragment) in. */
  permits(h: PacketHeaders): boolean {
    const groups = this.groups;
    let allowed = false;
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i]!;
      if (!g.contains(h)) continue;
      if (g.deny !== null && g.deny.matches(h)) return false;
      if (!allowed && g.allow !== null && g.allow.matches(h)) allowed = true;
    }
    return allowed;
  }
}

function words(n: bigint, out: Uint32Array, at: number): void {
  for (let k = 3; k >= 0; k--) {
    out[at + k] = Number(n & 0xffffffffn);
    n >>= 32n;
  }
}

function compileVerdict(rules: ProtoRule[]): AclVerdict | null {
  if (rules.length === 0) return null;
  const v = verdictOf(rules);
  const verdict = new AclVerdict(new PortSet(v.tcp), new PortSet(v.udp), v.icmp, v.other);
  return verdict.empty ? null : verdict;
}

/** A rule as verdictOf takes it: "any" with ports is TCP and UDP on them; "icmp" with ports, nothing. */
function protoRules(rule: AclRule, where: string): ProtoRule[] {
  const { protocol, ports } = rule;
  if (protocol !== "any" && protocol !== "tcp" && protocol !== "udp" && protocol !== "icmp") {
    throw new AclConfigError(`${where}: protocol ${JSON.stringify(protocol)} is not any, tcp, udp or icmp`);
  }
  if (ports === undefined) return [{ protocol, portLo: 0, portHi: 65535, deny: false }];
  const [portLo, portHi] = parsePorts({ protocol: "tcp", ports }, where);
  if (protocol === "icmp") return [];
  if (protocol === "any") {
    return [
      { protocol: "tcp", portLo, portHi, deny: false },
      { protocol: "udp", portLo, portHi, deny: false },
    ];
  }
  return [{ protocol, portLo, portHi, deny: false }];
}

/** Every peer's compiled inbound ACL (Device.setInboundRules builds one; it validates everything first). */
export class InboundAclFilter {
  private readonly peers = new Map<string, AclPeer>();
  readonly ruleCount: number;

  constructor(acls: readonly InboundAcl[]) {
    let ruleCount = 0;
    acls.forEach((acl, i) => {
      const at = `inbound[${i}]`;
      let keyText: string;
      try {
        keyText = encodeKey(decodeKey(acl.peerPublicKey, `${at}.peerPublicKey`));
      } catch (cause) {
        throw new AclConfigError((cause as Error).message, { cause });
      }
      if (this.peers.has(keyText)) throw new AclConfigError(`${at}: peer ${keyText} appears twice`);
      const groups = new Map<string, { family: number; bounds: Uint32Array; allow: ProtoRule[]; deny: ProtoRule[] }>();
      const add = (rule: AclRule, path: string, deny: boolean) => {
        try {
          const s = parseDestination(rule.source, `${path}.source`);
          const d = parseDestination(rule.destination, `${path}.destination`);
          const rules = protoRules(rule, path);
          if (s.family !== d.family) return; // no packet has both: the rule matches nothing
          const key = `${s.family} ${s.lo} ${s.hi} ${d.lo} ${d.hi}`;
          let g = groups.get(key);
          if (g === undefined) {
            const bounds = new Uint32Array(16);
            words(s.lo, bounds, 0);
            words(s.hi, bounds, 4);
            words(d.lo, bounds, 8);
            words(d.hi, bounds, 12);
            g = { family: s.family, bounds, allow: [], deny: [] };
            groups.set(key, g);
          }
          (deny ? g.deny : g.allow).push(...rules);
        } catch (cause) {
          if (cause instanceof AclConfigError) throw cause;
          throw new AclConfigError((cause as Error).message, { cause });
        }
      };
      if (!Array.isArray(acl.allow)) throw new AclConfigError(`${at}.allow must be an array`);
      acl.allow.forEach((r, j) => add(r, `${at}.allow[${j}]`, false));
      (acl.deny ?? []).forEach((r, j) => add(r, `${at}.deny[${j}]`, true));
      const count = acl.allow.length + (acl.deny?.length ?? 0);
      ruleCount += count;
      const compiled: AclGroup[] = [];
      for (const g of groups.values()) {
        // A group with only deny rules opens nothing, but still wins over another group's allow.
        const allow = compileVerdict(g.allow);
        const deny = compileVerdict(g.deny);
        if (allow !== null || deny !== null) compiled.push(new AclGroup(g.family, g.bounds, allow, deny));
      }
      this.peers.set(keyText, new AclPeer(keyText, compiled, count));
    });
    this.ruleCount = ruleCount;
  }

  /** The compiled ACL of a peer (base64 key), or null when it may send nothing. */
  peer(publicKey: string): AclPeer | null {
    return this.peers.get(publicKey) ?? null;
  }

  get peerCount(): number {
    return this.peers.size;
  }

  /** Figures for stats and logs. */
  describe(): { peers: number; rules: number; groups: number } {
    let groups = 0;
    for (const p of this.peers.values()) groups += p.groups.length;
    return { peers: this.peers.size, rules: this.ruleCount, groups };
  }
}
