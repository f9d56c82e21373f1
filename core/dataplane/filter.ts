/**
 * @module core/dataplane/filter
 * The gateway access filter (DESIGN.md "How a packet travels", step 3): a decrypted packet is
 * forwarded into a LAN only if its source is the sender's own virtual address and some allow
 * rule of that sender covers its destination, protocol and port while no deny rule does.
 *
 * Rules are compiled per sender and address family into a sorted array of disjoint address
 * intervals, each pointing at a verdict (per protocol: all, none, or a sorted list of disjoint
 * port ranges), so one check is a binary search over the interval starts plus a binary search
 * over port ranges: O(log rules) and no allocation, whatever the number of rules. Large IPv4 rule
 * sets also get a bucket index that narrows the search to a few intervals (GatewaySender).
 * Verdicts are deduplicated and packed into two typed arrays shared by all senders. Compiling is a sweep over the rule boundaries; only
 * heavily overlapping rule sets make it quadratic, and it runs on netmap updates, not per packet.
 *
 * Decisions (reasons are the drop counters' names):
 * - `gateway-source-spoofed`: the source is not one of the sender's `virtualAddresses`. (A client
 *   given extra allowed IPs by hand, or a gateway peer with a subnet behind it, still cannot
 *   forward for addresses that are not its own.)
 * - `gateway-local-address`: the destination is one of the gateway's own `localAddresses`
 *   outside the overlay (its LAN side). A subnet grant never reaches them, not even when the
 *   granted subnet contains the gateway's LAN address, and nothing else opens them either.
 * - SELF (not a drop): the destination is one of the gateway's virtual addresses (its local
 *   addresses inside the overlay network). That is the gateway's own inbound traffic, decided by
 *   the Device's inbound ACLs (acl.ts, stage I10) exactly as on a device that is no gateway; a
 *   grant never opens it.
 * - `gateway-no-grant`: no allow rule covers the packet, a deny rule does, the sender has no
 *   entry, or the destination is another overlay address (the gateway does not relay overlay to
 *   overlay; grants are for LAN subnets).
 * - `gateway-fragment`: a later fragment (IPv4 offset > 0, IPv6 fragment offset > 0) carries no
 *   ports, so the filter cannot judge it alone. core/dataplane/gateway.ts lets it through when the
 *   first fragment of the same datagram passed (source, destination, protocol and fragment id
 *   recorded for 30 s); a later fragment arriving before its first is dropped.
 * - `malformed-ip`: headers cut short (the caller's parse).
 *
 * Protocols: "tcp" and "udp" may carry `ports` ("80", "1000-2000": destination ports); "icmp"
 * means ICMP in IPv4 packets and ICMPv6 in IPv6 ones, every type; "any" means every protocol.
 * Ports on "icmp" or "any" are rejected, as the policy model does.
 */
import { WaygateError } from "../errors.ts";
import { type Family, type Prefix, parseAddress, parsePrefix } from "../net/address.ts";
import { decodeKey, encodeKey } from "../wire/keys.ts";
import { FRAG_LATER, type PacketHeaders, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP } from "./headers.ts";

export type GatewayProtocol = "any" | "tcp" | "udp" | "icmp";

/** One subnet-filter entry: a destination ("10.0.0.5", "10.0.0.10-10.0.0.20", "10.0.0.0/24"). */
export interface GatewayRule {
  destination: string;
  protocol: GatewayProtocol;
  /** Destination ports, "80" or "1000-2000"; tcp and udp only; absent means all. */
  ports?: string;
}

export interface GatewaySenderConfig {
  /** The sending peer's public key (base64). */
  peerPublicKey: string;
  /** The sender's own overlay address(es): the only sources it may forward from. */
  virtualAddresses: string[];
  allow: GatewayRule[];
  /** Rules that win over every allow rule (a NetMap's deny gateway rules). */
  deny?: GatewayRule[];
}

export interface GatewayFilterConfig {
  senders: GatewaySenderConfig[];
  /** The gateway's own addresses, virtual and LAN: never reachable through a grant. */
  localAddresses: string[];
  /** The overlay network prefix(es), e.g. "100.96.0.0/12" (and an IPv6 one). */
  overlayNetwork: string | string[];
}

/** The verdicts of check: 0 allows, SELF hands over to the Device; the rest index GATEWAY_REASONS. */
export const ALLOW = 0;
export const MALFORMED_IP = 1;
export const SOURCE_SPOOFED = 2;
export const NO_GRANT = 3;
export const LOCAL_ADDRESS = 4;
export const FRAGMENT = 5;
export const UNSOLICITED = 6;
export const FLOW_TABLE_FULL = 7;
/** Not forwarded and not dropped: the gateway's own traffic (see the module comment). */
export const SELF = 8;

export const GATEWAY_REASONS = [
  "allow",
  "malformed-ip",
  "gateway-source-spoofed",
  "gateway-no-grant",
  "gateway-local-address",
  "gateway-fragment",
  "gateway-unsolicited",
  "flow-table-full",
  "self",
] as const;
export type GatewayDropReason = Exclude<(typeof GATEWAY_REASONS)[number], "allow" | "self">;

/** Where a packet from the overlay is going, as the gateway sees it. */
export const DEST_FORWARD = 0;
export const DEST_SELF_VIRTUAL = 1;
export const DEST_SELF_OTHER = 2;
export const DEST_OVERLAY = 3;

export class GatewayConfigError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_CONFIG_INVALID", message, options);
  }
}

/** Per-protocol answer for one address interval, while compiling. Port lists are flat [lo, hi, ...]. */
class Verdict {
  constructor(
    readonly tcp: Int32Array,
    readonly udp: Int32Array,
    readonly icmp: boolean,
    readonly other: boolean,
  ) {}

  get key(): string {
    return `${this.tcp.join(",")}|${this.udp.join(",")}|${this.icmp ? 1 : 0}${this.other ? 1 : 0}`;
  }
}

/** Whether `port` lies in one of the pairs [from, to) of the flat list `ranges`. */
function portsIn(ranges: Int32Array, from: number, to: number, port: number): boolean {
  let lo = from;
  let hi = to - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (port < ranges[2 * mid]!) hi = mid - 1;
    else if (port > ranges[2 * mid + 1]!) lo = mid + 1;
    else return true;
  }
  return false;
}

/** A sender's compiled rules; what the Device keeps on each peer (see GatewayFilter.sender). */
export class GatewaySender {
  constructor(
    readonly publicKey: string,
    readonly ownV4: Uint32Array,
    /** Four words per address. */
    readonly ownV6: Uint32Array,
    readonly v4Starts: Uint32Array,
    readonly v4Verdicts: Int32Array,
    readonly v6Starts: Uint32Array,
    readonly v6Verdicts: Int32Array,
  ) {
    this.buildV4Index();
  }

  /**
   * IPv4 bucket index: the span from the first non-zero interval start to the last is cut into
   * about one bucket per interval (power-of-two width), each holding the last interval starting
   * at or before it. A lookup then binary-searches only between two neighbouring buckets' entries,
   * usually zero to two intervals: random destinations over 10,000 rules would otherwise cost
   * fifteen unpredictable branches each. Memory stays proportional to the rules (at most 2^17
   * buckets); small rule sets skip it.
   */
  private v4Base = 0;
  /** 2^-shift: a multiply maps an offset to its bucket (exact for powers of two). */
  private v4Scale = 1;
  private v4Buckets: Int32Array = new Int32Array(0);

  private buildV4Index(): void {
    const starts = this.v4Starts;
    const n = starts.length;
    if (n <= INDEX_MIN_INTERVALS) return;
    const base = starts[1]!;
    const span = starts[n - 1]! - base + 1;
    const target = Math.min(1 << 17, n);
    let shift = 0;
    while (shift < 32 && span / 2 ** shift > target) shift++;
    const buckets = Math.floor((starts[n - 1]! - base) / 2 ** shift) + 1;
    const index = new Int32Array(buckets + 1);
    let i = 0;
    for (let b = 0; b <= buckets; b++) {
      const at = base + b * 2 ** shift;
      while (i + 1 < n && starts[i + 1]! <= at) i++;
      index[b] = i;
    }
    this.v4Base = base;
    this.v4Scale = 2 ** -shift;
    this.v4Buckets = index;
  }

  ownsSource(h: PacketHeaders): boolean {
    if (h.family === 4) {
      const own = this.ownV4;
      for (let i = 0; i < own.length; i++) if (own[i] === h.s3) return true;
      return false;
    }
    const own = this.ownV6;
    for (let i = 0; i < own.length; i += 4) {
      if (own[i] === h.s0 && own[i + 1] === h.s1 && own[i + 2] === h.s2 && own[i + 3] === h.s3) return true;
    }
    return false;
  }

  /** Index of the verdict for the destination, or -1. */
  verdictFor(h: PacketHeaders): number {
    if (h.family === 4) {
      const starts = this.v4Starts;
      const d = h.d3;
      let lo = 0;
      let hi = starts.length - 1;
      const index = this.v4Buckets;
      if (index.length > 0) {
        if (d < this.v4Base) return this.v4Verdicts[0]!;
        const b = (d - this.v4Base) * this.v4Scale;
        const bucket = b >= index.length - 1 ? index.length - 1 : b | 0;
        lo = index[bucket]!;
        if (bucket + 1 < index.length) hi = index[bucket + 1]!;
      }
      // The last start <= d; starts[0] is 0, so one always exists.
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (starts[mid]! <= d) lo = mid;
        else hi = mid - 1;
      }
      return this.v4Verdicts[lo]!;
    }
    const starts = this.v6Starts;
    let lo = 0;
    let hi = (starts.length >> 2) - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (cmp6(starts, mid, h.d0, h.d1, h.d2, h.d3) <= 0) lo = mid;
      else hi = mid - 1;
    }
    return this.v6Verdicts[lo]!;
  }
}

/** Interval counts above which an IPv4 sender gets a bucket index. */
const INDEX_MIN_INTERVALS = 32;

/** starts[i] compared with the address: negative when it is lower. */
function cmp6(starts: Uint32Array, i: number, a0: number, a1: number, a2: number, a3: number): number {
  const o = 4 * i;
  return starts[o]! - a0 || starts[o + 1]! - a1 || starts[o + 2]! - a2 || starts[o + 3]! - a3;
}

// ---------------------------------------------------------------- compiling

interface ParsedRule {
  family: Family;
  lo: bigint;
  hi: bigint;
  protocol: GatewayProtocol;
  portLo: number;
  portHi: number;
  deny: boolean;
}

function bytesToBig(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

/** A destination (or source) as an inclusive range: an address, a prefix "a/len" or a range "lo-hi". */
export function parseDestination(text: string, where: string): { family: Family; lo: bigint; hi: bigint } {
  try {
    const dash = text.indexOf("-");
    if (dash >= 0) {
      const a = parseAddress(text.slice(0, dash));
      const b = parseAddress(text.slice(dash + 1));
      if (a.family !== b.family) throw new GatewayConfigError(`${where}: ${JSON.stringify(text)} mixes IPv4 and IPv6`);
      const lo = bytesToBig(a.bytes);
      const hi = bytesToBig(b.bytes);
      if (lo > hi) throw new GatewayConfigError(`${where}: ${JSON.stringify(text)} starts after it ends`);
      return { family: a.family, lo, hi };
    }
    const p = parsePrefix(text, { allowBareAddress: true });
    const lo = bytesToBig(p.bytes);
    const hostBits = BigInt(p.bytes.length * 8 - p.length);
    return { family: p.family, lo, hi: lo + (1n << hostBits) - 1n };
  } catch (cause) {
    if (cause instanceof GatewayConfigError) throw cause;
    throw new GatewayConfigError(`${where}: destination ${JSON.stringify(text)} is invalid: ${(cause as Error).message}`, { cause });
  }
}

/** The rule's destination ports as [lo, hi] ([0, 65535] when absent); ports need tcp or udp. */
export function parsePorts(rule: { protocol: GatewayProtocol; ports?: string }, where: string): [number, number] {
  const { protocol, ports } = rule;
  if (protocol !== "any" && protocol !== "tcp" && protocol !== "udp" && protocol !== "icmp") {
    throw new GatewayConfigError(`${where}: protocol ${JSON.stringify(protocol)} is not any, tcp, udp or icmp`);
  }
  if (ports === undefined) return [0, 65535];
  if (protocol !== "tcp" && protocol !== "udp") {
    throw new GatewayConfigError(`${where}: ports ${JSON.stringify(ports)} need protocol tcp or udp, not ${protocol}`);
  }
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(ports);
  const lo = m ? Number(m[1]) : NaN;
  const hi = m ? (m[2] === undefined ? lo : Number(m[2])) : NaN;
  if (!m || lo > 65535 || hi > 65535 || lo > hi) {
    throw new GatewayConfigError(`${where}: ports ${JSON.stringify(ports)} is not a port or a range like 1000-2000 within 0..65535`);
  }
  return [lo, hi];
}

/** Sorted, merged union of [lo, hi] pairs. */
export function unionRanges(ranges: [number, number][]): [number, number][] {
  ranges.sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [lo, hi] of ranges) {
    const last = out[out.length - 1];
    if (last !== undefined && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

/** a minus b, both sorted and merged. */
export function subtractRanges(a: [number, number][], b: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  for (const [lo0, hi] of a) {
    let lo = lo0;
    for (const [blo, bhi] of b) {
      if (bhi < lo || blo > hi) continue;
      if (blo > lo) out.push([lo, blo - 1]);
      lo = bhi + 1;
      if (lo > hi) break;
    }
    if (lo <= hi) out.push([lo, hi]);
  }
  return out;
}

export type ProtoRule = Pick<ParsedRule, "protocol" | "portLo" | "portHi" | "deny">;

/** Per protocol, what `rules` let through: allow rules minus deny rules (ports merged). */
export function verdictOf(rules: readonly ProtoRule[]): { tcp: [number, number][]; udp: [number, number][]; icmp: boolean; other: boolean } {
  const ports = (proto: "tcp" | "udp", deny: boolean) =>
    unionRanges(
      rules
        .filter((r) => r.deny === deny && (r.protocol === proto || r.protocol === "any"))
        .map((r): [number, number] => [r.portLo, r.portHi]),
    );
  const has = (protos: GatewayProtocol[], deny: boolean) => rules.some((r) => r.deny === deny && protos.includes(r.protocol));
  return {
    tcp: subtractRanges(ports("tcp", false), ports("tcp", true)),
    udp: subtractRanges(ports("udp", false), ports("udp", true)),
    icmp: has(["icmp", "any"], false) && !has(["icmp", "any"], true),
    other: has(["any"], false) && !has(["any"], true),
  };
}

function flat(ranges: [number, number][]): Int32Array {
  const out = new Int32Array(ranges.length * 2);
  ranges.forEach(([lo, hi], i) => {
    out[2 * i] = lo;
    out[2 * i + 1] = hi;
  });
  return out;
}

function bigToWords(n: bigint, out: Uint32Array, at: number): void {
  for (let k = 3; k >= 0; k--) {
    out[at + k] = Number(n & 0xffffffffn);
    n >>= 32n;
  }
}

function addressWords(bytes: Uint8Array): [number, number, number, number] {
  const w = (o: number) => ((bytes[o]! << 24) | (bytes[o + 1]! << 16) | (bytes[o + 2]! << 8) | bytes[o + 3]!) >>> 0;
  return bytes.length === 4 ? [0, 0, 0, w(0)] : [w(0), w(4), w(8), w(12)];
}

export class GatewayFilter {
  private readonly senders = new Map<string, GatewaySender>();
  /** Senders by "family:w0:w1:w2:w3" of each virtual address (re-checking flows; not per packet). */
  private readonly bySource = new Map<string, GatewaySender>();
  /** Compile-time verdicts, deduplicated; packed into vMeta/vPorts for the per-packet path. */
  private readonly verdicts: Verdict[] = [];
  private vMeta = new Int32Array(0);
  private vPorts = new Int32Array(0);
  private readonly verdictIds = new Map<string, number>();
  /** Local and virtual addresses, four words each. */
  private readonly local: Uint32Array;
  private readonly virtual: Uint32Array;
  /** Overlay prefixes as [w0, w1, w2, w3, m0, m1, m2, m3, family] groups of nine. */
  private readonly overlay: Float64Array;
  private readonly overlayPrefixes: Prefix[];
  readonly ruleCount: number;

  constructor(config: GatewayFilterConfig) {
    const where = "gateway";
    const overlayTexts = typeof config.overlayNetwork === "string" ? [config.overlayNetwork] : config.overlayNetwork;
    this.overlayPrefixes = overlayTexts.map((t, i) => {
      try {
        return parsePrefix(t);
      } catch (cause) {
        throw new GatewayConfigError(`${where}.overlayNetwork[${i}]: ${(cause as Error).message}`, { cause });
      }
    });
    this.overlay = new Float64Array(this.overlayPrefixes.length * 9);
    this.overlayPrefixes.forEach((p, i) => {
      const w = addressWords(p.bytes);
      const offset = p.family === 4 ? 96 : 0;
      for (let k = 0; k < 4; k++) {
        const bits = Math.max(0, Math.min(32, p.length + offset - 32 * k));
        this.overlay[9 * i + k] = w[k]!;
        this.overlay[9 * i + 4 + k] = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
      }
      this.overlay[9 * i + 8] = p.family;
    });
    const locals: number[] = [];
    const virtuals: number[] = [];
    config.localAddresses.forEach((text, i) => {
      let a;
      try {
        a = parseAddress(text);
      } catch (cause) {
        throw new GatewayConfigError(`${where}.localAddresses[${i}]: ${(cause as Error).message}`, { cause });
      }
      const w = addressWords(a.bytes);
      locals.push(...w, a.family);
      if (this.overlayPrefixes.some((p) => p.family === a.family && inPrefix(p, a.bytes))) virtuals.push(...w, a.family);
    });
    this.local = Uint32Array.from(locals);
    this.virtual = Uint32Array.from(virtuals);

    let ruleCount = 0;
    config.senders.forEach((s, i) => {
      const at = `${where}.senders[${i}]`;
      let keyText: string;
      try {
        keyText = encodeKey(decodeKey(s.peerPublicKey, `${at}.peerPublicKey`));
      } catch (cause) {
        throw new GatewayConfigError((cause as Error).message, { cause });
      }
      if (this.senders.has(keyText)) throw new GatewayConfigError(`${at}: peer ${keyText} appears twice`);
      const ownV4: number[] = [];
      const ownV6: number[] = [];
      s.virtualAddresses.forEach((text, j) => {
        let a;
        try {
          a = parseAddress(text);
        } catch (cause) {
          throw new GatewayConfigError(`${at}.virtualAddresses[${j}]: ${(cause as Error).message}`, { cause });
        }
        if (a.family === 4) ownV4.push(addressWords(a.bytes)[3]);
        else ownV6.push(...addressWords(a.bytes));
      });
      const rules: ParsedRule[] = [];
      const parseRule = (r: GatewayRule, path: string, deny: boolean) => {
        const [portLo, portHi] = parsePorts(r, path);
        const d = parseDestination(r.destination, `${path}.destination`);
        rules.push({ ...d, protocol: r.protocol, portLo, portHi, deny });
      };
      s.allow.forEach((r, j) => parseRule(r, `${at}.allow[${j}]`, false));
      (s.deny ?? []).forEach((r, j) => parseRule(r, `${at}.deny[${j}]`, true));
      ruleCount += rules.length;
      const [v4Starts, v4Verdicts] = this.compileFamily(rules.filter((r) => r.family === 4), 4);
      const [v6Starts, v6Verdicts] = this.compileFamily(rules.filter((r) => r.family === 6), 6);
      const sender = new GatewaySender(
        keyText,
        Uint32Array.from(ownV4),
        Uint32Array.from(ownV6),
        v4Starts,
        v4Verdicts,
        v6Starts,
        v6Verdicts,
      );
      this.senders.set(keyText, sender);
      for (const w of ownV4) this.bySource.set(`4:0:0:0:${w}`, sender);
      for (let j = 0; j < ownV6.length; j += 4) this.bySource.set(`6:${ownV6.slice(j, j + 4).join(":")}`, sender);
    });
    this.ruleCount = ruleCount;
    this.packVerdicts();
  }

  /** The compiled sender for a peer's public key (base64), or null when it has no entry. */
  sender(publicKey: string): GatewaySender | null {
    return this.senders.get(publicKey) ?? null;
  }

  /** The sender whose virtual address this is (re-checking flows after a config change). */
  senderBySource(h: PacketHeaders): GatewaySender | null {
    return this.bySource.get(`${h.family}:${h.s0}:${h.s1}:${h.s2}:${h.s3}`) ?? null;
  }

  get senderCount(): number {
    return this.senders.size;
  }

  private internVerdict(rules: readonly ProtoRule[]): number {
    const v = verdictOf(rules);
    const verdict = new Verdict(flat(v.tcp), flat(v.udp), v.icmp, v.other);
    if (verdict.tcp.length === 0 && verdict.udp.length === 0 && !verdict.icmp && !verdict.other) return -1;
    const key = verdict.key;
    let id = this.verdictIds.get(key);
    if (id === undefined) {
      id = this.verdicts.length;
      this.verdicts.push(verdict);
      this.verdictIds.set(key, id);
    }
    return id;
  }

  /** Disjoint intervals (their starts) with a verdict index each (-1: nothing allowed). */
  private compileFamily(rules: ParsedRule[], family: Family): [Uint32Array, Int32Array] {
    const max = family === 4 ? 0xffffffffn : (1n << 128n) - 1n;
    const points = new Set<bigint>([0n]);
    for (const r of rules) {
      points.add(r.lo);
      if (r.hi < max) points.add(r.hi + 1n);
    }
    const bounds = [...points].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const byStart = rules.slice().sort((a, b) => (a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : 0));
    const byEnd = rules.slice().sort((a, b) => (a.hi < b.hi ? -1 : a.hi > b.hi ? 1 : 0));
    const active = new Set<ParsedRule>();
    const starts: bigint[] = [];
    const ids: number[] = [];
    let si = 0;
    let ei = 0;
    for (const b of bounds) {
      while (si < byStart.length && byStart[si]!.lo === b) active.add(byStart[si++]!);
      while (ei < byEnd.length && byEnd[ei]!.hi + 1n === b) active.delete(byEnd[ei++]!);
      const id = active.size === 0 ? -1 : this.internVerdict([...active]);
      if (ids.length > 0 && ids[ids.length - 1] === id) continue; // merge equal neighbours
      starts.push(b);
      ids.push(id);
    }
    if (family === 4) return [Uint32Array.from(starts.map(Number)), Int32Array.from(ids)];
    const words = new Uint32Array(starts.length * 4);
    starts.forEach((s, i) => bigToWords(s, words, 4 * i));
    return [words, Int32Array.from(ids)];
  }

  /** Where an overlay packet is going: DEST_FORWARD, DEST_SELF_VIRTUAL, DEST_SELF_OTHER, DEST_OVERLAY. */
  destinationKind(h: PacketHeaders): number {
    if (matchAddress(this.virtual, h, false)) return DEST_SELF_VIRTUAL;
    if (matchAddress(this.local, h, false)) return DEST_SELF_OTHER;
    if (this.inOverlay(h, false)) return DEST_OVERLAY;
    return DEST_FORWARD;
  }

  /** Whether the packet's source (or destination) lies in the overlay network. */
  inOverlay(h: PacketHeaders, source: boolean): boolean {
    const o = this.overlay;
    const fam = h.family;
    const a0 = source ? h.s0 : h.d0;
    const a1 = source ? h.s1 : h.d1;
    const a2 = source ? h.s2 : h.d2;
    const a3 = source ? h.s3 : h.d3;
    for (let i = 0; i < o.length; i += 9) {
      if (o[i + 8] !== fam) continue;
      if (
        (a0 & o[i + 4]!) >>> 0 === o[i] &&
        (a1 & o[i + 5]!) >>> 0 === o[i + 1] &&
        (a2 & o[i + 6]!) >>> 0 === o[i + 2] &&
        (a3 & o[i + 7]!) >>> 0 === o[i + 3]
      ) {
        return true;
      }
    }
    return false;
  }

  /**
   * ALLOW, SELF or a reason for a packet from the overlay, decrypted and past cryptokey routing.
   * `sender` is the sending peer's compiled entry (null when it has none); `kind` is
   * destinationKind(h). No allocation.
   */
  check(sender: GatewaySender | null, h: PacketHeaders, kind: number): number {
    if (kind === DEST_SELF_VIRTUAL) return SELF;
    if (sender === null) return kind === DEST_SELF_OTHER ? LOCAL_ADDRESS : NO_GRANT;
    if (!sender.ownsSource(h)) return SOURCE_SPOOFED;
    if (kind === DEST_SELF_OTHER) return LOCAL_ADDRESS;
    if (kind === DEST_OVERLAY) return NO_GRANT;
    if (h.fragment === FRAG_LATER) return FRAGMENT;
    const id = sender.verdictFor(h);
    return id >= 0 && this.permits(id, h) ? ALLOW : NO_GRANT;
  }

  /** Whether verdict `id` lets the packet's protocol and destination port through. */
  private permits(id: number, h: PacketHeaders): boolean {
    const meta = this.vMeta;
    const o = 5 * id;
    const p = h.proto;
    if (p === PROTO_TCP) return portsIn(this.vPorts, meta[o + 1]!, meta[o + 2]!, h.dport);
    if (p === PROTO_UDP) return portsIn(this.vPorts, meta[o + 3]!, meta[o + 4]!, h.dport);
    if ((p === PROTO_ICMP && h.family === 4) || (p === PROTO_ICMPV6 && h.family === 6)) return (meta[o]! & 1) !== 0;
    return (meta[o]! & 2) !== 0;
  }

  /** Packs the verdicts into typed arrays: per id [flags, tcp from, tcp to, udp from, udp to]. */
  private packVerdicts(): void {
    const meta = new Int32Array(5 * this.verdicts.length);
    const ports: number[] = [];
    this.verdicts.forEach((v, id) => {
      meta[5 * id] = (v.icmp ? 1 : 0) | (v.other ? 2 : 0);
      meta[5 * id + 1] = ports.length >> 1;
      ports.push(...v.tcp);
      meta[5 * id + 2] = ports.length >> 1;
      meta[5 * id + 3] = ports.length >> 1;
      ports.push(...v.udp);
      meta[5 * id + 4] = ports.length >> 1;
    });
    this.vMeta = meta;
    this.vPorts = Int32Array.from(ports);
  }

  /** Figures for stats and benches. */
  describe(): { senders: number; rules: number; verdicts: number; intervals: number } {
    let intervals = 0;
    for (const s of this.senders.values()) intervals += s.v4Verdicts.length + s.v6Verdicts.length;
    return { senders: this.senders.size, rules: this.ruleCount, verdicts: this.verdicts.length, intervals };
  }
}

function inPrefix(p: Prefix, bytes: Uint8Array): boolean {
  const whole = p.length >> 3;
  for (let i = 0; i < whole; i++) if (p.bytes[i] !== bytes[i]) return false;
  const rest = p.length & 7;
  if (rest === 0) return true;
  const m = (0xff << (8 - rest)) & 0xff;
  return ((p.bytes[whole]! ^ bytes[whole]!) & m) === 0;
}

/** Whether the source/destination equals one of the addresses (groups of 4 words + family). */
function matchAddress(list: Uint32Array, h: PacketHeaders, source: boolean): boolean {
  const fam = h.family;
  const a0 = source ? h.s0 : h.d0;
  const a1 = source ? h.s1 : h.d1;
  const a2 = source ? h.s2 : h.d2;
  const a3 = source ? h.s3 : h.d3;
  for (let i = 0; i < list.length; i += 5) {
    if (list[i + 4] === fam && list[i + 3] === a3 && list[i] === a0 && list[i + 1] === a1 && list[i + 2] === a2) return true;
  }
  return false;
}
