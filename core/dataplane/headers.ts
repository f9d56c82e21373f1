/**
 * @module core/dataplane/headers
 * One reusable, allocation-free parse of the fields the gateway filter and the flow table need:
 * addresses as four 32-bit words (IPv4 in the last word), the upper-layer protocol (IPv6
 * extension headers walked), ports, TCP flags, ICMP type, fragment position, and for ICMP errors
 * the 5-tuple of the packet they quote. A Device owns one PacketHeaders and re-parses into it
 * per packet; nothing here keeps a reference to the buffer.
 *
 * ICMP echo is given ports so that the flow table can treat it like TCP/UDP: a request carries
 * its identifier as the source port (destination port 0), a reply as the destination port, so the
 * reply's reversed tuple is the request's tuple.
 */

export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_ICMPV6 = 58;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_ACK = 0x10;

/** Not a fragment; the first fragment of several; any later fragment (no transport header). */
export const FRAG_NONE = 0;
export const FRAG_FIRST = 1;
export const FRAG_LATER = 2;

/** What parse returns besides OK: the header, a transport header or an ICMP quote is cut short. */
export const PARSE_OK = 0;
export const PARSE_MALFORMED = 1;

const IPV6_HOP_BY_HOP = 0;
const IPV6_ROUTING = 43;
const IPV6_FRAGMENT = 44;
const IPV6_AH = 51;
const IPV6_DEST_OPTS = 60;
/** Extension headers walked before giving up and calling the packet malformed. */
const MAX_EXTENSION_HEADERS = 8;

function u32(p: Uint8Array, o: number): number {
  return ((p[o]! << 24) | (p[o + 1]! << 16) | (p[o + 2]! << 8) | p[o + 3]!) >>> 0;
}

function u16(p: Uint8Array, o: number): number {
  return (p[o]! << 8) | p[o + 1]!;
}

export function isIcmpEchoRequest(family: 4 | 6, type: number): boolean {
  return family === 4 ? type === 8 : type === 128;
}

export function isIcmpEchoReply(family: 4 | 6, type: number): boolean {
  return family === 4 ? type === 0 : type === 129;
}

/** Destination unreachable, time exceeded, parameter problem (and IPv6 packet too big). */
export function isIcmpError(family: 4 | 6, type: number): boolean {
  return family === 4 ? type === 3 || type === 11 || type === 12 : type >= 1 && type <= 4;
}

/** Where the upper layer starts and which protocol it is, after IPv6 extension headers. */
interface Walk {
  proto: number;
  offset: number;
  fragment: number;
  fragId: number;
}

export class PacketHeaders {
  family: 4 | 6 = 4;
  /** Upper-layer protocol number (after IPv6 extension headers). */
  proto = 0;
  /** Source address words, big-endian; IPv4 lives in s3 with s0..s2 zero. */
  s0 = 0;
  s1 = 0;
  s2 = 0;
  s3 = 0;
  d0 = 0;
  d1 = 0;
  d2 = 0;
  d3 = 0;
  /** TCP/UDP ports; ICMP echo identifiers as described in the module comment; else 0. */
  sport = 0;
  dport = 0;
  tcpFlags = 0;
  /** ICMP/ICMPv6 type and code, -1 when the packet is not ICMP. */
  icmpType = -1;
  icmpCode = -1;
  fragment = FRAG_NONE;
  /** IPv4 identification or IPv6 fragment identification. */
  fragId = 0;
  /** Whether this is an ICMP error whose quoted packet parsed; then the q* fields hold its tuple. */
  quoted = false;
  qProto = 0;
  qs0 = 0;
  qs1 = 0;
  qs2 = 0;
  qs3 = 0;
  qd0 = 0;
  qd1 = 0;
  qd2 = 0;
  qd3 = 0;
  qsport = 0;
  qdport = 0;

  private readonly walk: Walk = { proto: 0, offset: 0, fragment: 0, fragId: 0 };

  /**
   * Parses `packet[0..len)` (already trimmed to the IP header's length). PARSE_MALFORMED when the
   * IP header, the extension-header chain, or a first fragment's transport header is cut short:
   * a first fragment too small to hold its ports could hide them from the filter (RFC 1858).
   */
  parse(packet: Uint8Array, len: number): number {
    this.quoted = false;
    this.tcpFlags = 0;
    this.icmpType = -1;
    this.icmpCode = -1;
    this.sport = 0;
    this.dport = 0;
    if (len < 1) return PARSE_MALFORMED;
    const v = packet[0]! >> 4;
    const w = this.walk;
    if (v === 4) {
      if (len < 20) return PARSE_MALFORMED;
      const ihl = (packet[0]! & 15) * 4;
      if (ihl < 20 || ihl > len) return PARSE_MALFORMED;
      this.family = 4;
      this.s0 = this.s1 = this.s2 = 0;
      this.d0 = this.d1 = this.d2 = 0;
      this.s3 = u32(packet, 12);
      this.d3 = u32(packet, 16);
      if (!walkV4(packet, len, w)) return PARSE_MALFORMED;
    } else if (v === 6) {
      if (len < 40) return PARSE_MALFORMED;
      this.family = 6;
      this.s0 = u32(packet, 8);
      this.s1 = u32(packet, 12);
      this.s2 = u32(packet, 16);
      this.s3 = u32(packet, 20);
      this.d0 = u32(packet, 24);
      this.d1 = u32(packet, 28);
      this.d2 = u32(packet, 32);
      this.d3 = u32(packet, 36);
      if (!walkV6(packet, len, w)) return PARSE_MALFORMED;
    } else {
      return PARSE_MALFORMED;
    }
    this.proto = w.proto;
    this.fragment = w.fragment;
    this.fragId = w.fragId;
    if (w.fragment === FRAG_LATER) return PARSE_OK;
    const o = w.offset;
    const rest = len - o;
    const p = w.proto;
    if (p === PROTO_TCP) {
      if (rest < 20) return PARSE_MALFORMED;
      this.sport = u16(packet, o);
      this.dport = u16(packet, o + 2);
      this.tcpFlags = packet[o + 13]!;
    } else if (p === PROTO_UDP) {
      if (rest < 8) return PARSE_MALFORMED;
      this.sport = u16(packet, o);
      this.dport = u16(packet, o + 2);
    } else if ((p === PROTO_ICMP && this.family === 4) || (p === PROTO_ICMPV6 && this.family === 6)) {
      if (rest < 8) return PARSE_MALFORMED;
      const type = packet[o]!;
      this.icmpType = type;
      this.icmpCode = packet[o + 1]!;
      if (isIcmpEchoRequest(this.family, type)) this.sport = u16(packet, o + 4);
      else if (isIcmpEchoReply(this.family, type)) this.dport = u16(packet, o + 4);
      else if (isIcmpError(this.family, type)) this.parseQuote(packet, o + 8, len);
    }
    return PARSE_OK;
  }

  /** The packet an ICMP error quotes; an unparseable quote just leaves `quoted` false. */
  private parseQuote(packet: Uint8Array, o: number, len: number): void {
    const rest = len - o;
    if (rest < 1) return;
    const v = packet[o]! >> 4;
    let l4: number;
    if (this.family === 4) {
      if (v !== 4 || rest < 20) return;
      const ihl = (packet[o]! & 15) * 4;
      if (ihl < 20 || ((packet[o + 6]! & 0x1f) | packet[o + 7]!) !== 0) return; // a later fragment quotes no ports
      this.qProto = packet[o + 9]!;
      this.qs0 = this.qs1 = this.qs2 = 0;
      this.qd0 = this.qd1 = this.qd2 = 0;
      this.qs3 = u32(packet, o + 12);
      this.qd3 = u32(packet, o + 16);
      l4 = o + ihl;
    } else {
      if (v !== 6 || rest < 40) return;
      // Quoted IPv6 with extension headers is rare enough to leave unmatched.
      this.qProto = packet[o + 6]!;
      this.qs0 = u32(packet, o + 8);
      this.qs1 = u32(packet, o + 12);
      this.qs2 = u32(packet, o + 16);
      this.qs3 = u32(packet, o + 20);
      this.qd0 = u32(packet, o + 24);
      this.qd1 = u32(packet, o + 28);
      this.qd2 = u32(packet, o + 32);
      this.qd3 = u32(packet, o + 36);
      l4 = o + 40;
    }
    const q = this.qProto;
    this.qsport = 0;
    this.qdport = 0;
    if (q === PROTO_TCP || q === PROTO_UDP) {
      if (len - l4 < 4) return;
      this.qsport = u16(packet, l4);
      this.qdport = u16(packet, l4 + 2);
    } else if ((q === PROTO_ICMP && this.family === 4) || (q === PROTO_ICMPV6 && this.family === 6)) {
      // Only a quoted echo request belongs to a flow; its identifier is the flow's source port.
      if (len - l4 < 8 || !isIcmpEchoRequest(this.family, packet[l4]!)) return;
      this.qsport = u16(packet, l4 + 4);
    }
    this.quoted = true;
  }
}

function walkV4(packet: Uint8Array, len: number, w: Walk): boolean {
  const ihl = (packet[0]! & 15) * 4;
  const flagsFrag = u16(packet, 6);
  const offset = flagsFrag & 0x1fff;
  const more = (flagsFrag & 0x2000) !== 0;
  w.proto = packet[9]!;
  w.offset = ihl;
  w.fragId = u16(packet, 4);
  w.fragment = offset !== 0 ? FRAG_LATER : more ? FRAG_FIRST : FRAG_NONE;
  return ihl <= len;
}

function walkV6(packet: Uint8Array, len: number, w: Walk): boolean {
  let next = packet[6]!;
  let o = 40;
  w.fragment = FRAG_NONE;
  w.fragId = 0;
  for (let i = 0; i <= MAX_EXTENSION_HEADERS; i++) {
    if (next === IPV6_HOP_BY_HOP || next === IPV6_ROUTING || next === IPV6_DEST_OPTS) {
      if (len - o < 8) return false;
      const size = (packet[o + 1]! + 1) * 8;
      next = packet[o]!;
      o += size;
      if (o > len) return false;
    } else if (next === IPV6_AH) {
      if (len - o < 8) return false;
      const size = (packet[o + 1]! + 2) * 4;
      next = packet[o]!;
      o += size;
      if (o > len) return false;
    } else if (next === IPV6_FRAGMENT) {
      if (len - o < 8) return false;
      const offMore = u16(packet, o + 2);
      const offset = offMore >>> 3;
      w.fragId = u32(packet, o + 4);
      w.fragment = offset !== 0 ? FRAG_LATER : offMore & 1 ? FRAG_FIRST : FRAG_NONE;
      next = packet[o]!;
      o += 8;
      if (w.fragment === FRAG_LATER) break;
    } else {
      w.proto = next;
      w.offset = o;
      return true;
    }
  }
  if (w.fragment === FRAG_LATER) {
    w.proto = next;
    w.offset = o;
    return true;
  }
  return false;
}
