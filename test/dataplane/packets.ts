/**
 * @module test/dataplane/packets
 * Hand-built IPv4/IPv6 packets for the gateway tests: TCP (with flags), UDP, ICMP/ICMPv6 echo and
 * errors quoting another packet, other protocols, and fragments (IPv4 offset/MF, IPv6 fragment
 * header). The IPv4 header checksum is valid; transport checksums are left zero (nothing on the
 * data path verifies them).
 */
import { parseAddress } from "../../core/net/address.ts";

export interface PacketSpec {
  src: string;
  dst: string;
  /** "tcp" | "udp" | "icmp" (ICMPv6 for IPv6 addresses) or a protocol number. */
  proto: "tcp" | "udp" | "icmp" | number;
  sport?: number;
  dport?: number;
  /** TCP flags byte (default SYN). */
  flags?: number;
  /** ICMP type (default echo request) and code. */
  icmpType?: number;
  icmpCode?: number;
  /** ICMP echo identifier. */
  icmpId?: number;
  /** For ICMP errors: the packet quoted after the ICMP header. */
  quote?: Uint8Array;
  payload?: Uint8Array;
  /** Fragment: offset in 8-byte units and more-fragments flag, with this identification. */
  fragOffset?: number;
  moreFragments?: boolean;
  fragId?: number;
}

export const SYN = 0x02;
export const ACK = 0x10;
export const FIN = 0x01;
export const RST = 0x04;

function checksum(b: Uint8Array, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i += 2) sum += (b[off + i]! << 8) | (i + 1 < len ? b[off + i + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function transport(spec: PacketSpec, v6: boolean): { proto: number; bytes: Uint8Array } {
  const payload = spec.payload ?? new Uint8Array(0);
  const later = (spec.fragOffset ?? 0) > 0;
  if (spec.proto === "tcp") {
    const t = new Uint8Array(later ? 0 : 20);
    if (!later) {
      t[0] = (spec.sport ?? 40000) >> 8;
      t[1] = (spec.sport ?? 40000) & 255;
      t[2] = (spec.dport ?? 80) >> 8;
      t[3] = (spec.dport ?? 80) & 255;
      t[12] = 5 << 4;
      t[13] = spec.flags ?? SYN;
      t[14] = 0xff;
    }
    return { proto: 6, bytes: concat(t, payload) };
  }
  if (spec.proto === "udp") {
    const t = new Uint8Array(later ? 0 : 8);
    if (!later) {
      t[0] = (spec.sport ?? 40000) >> 8;
      t[1] = (spec.sport ?? 40000) & 255;
      t[2] = (spec.dport ?? 53) >> 8;
      t[3] = (spec.dport ?? 53) & 255;
      const l = 8 + payload.length;
      t[4] = l >> 8;
      t[5] = l & 255;
    }
    return { proto: 17, bytes: concat(t, payload) };
  }
  if (spec.proto === "icmp") {
    const t = new Uint8Array(later ? 0 : 8);
    if (!later) {
      t[0] = spec.icmpType ?? (v6 ? 128 : 8);
      t[1] = spec.icmpCode ?? 0;
      const id = spec.icmpId ?? 0x4242;
      t[4] = id >> 8;
      t[5] = id & 255;
      t[7] = 1;
    }
    return { proto: v6 ? 58 : 1, bytes: concat(t, spec.quote ?? new Uint8Array(0), payload) };
  }
  return { proto: spec.proto, bytes: payload.length > 0 ? payload : new Uint8Array(8) };
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function ipPacket(spec: PacketSpec): Uint8Array {
  const src = parseAddress(spec.src);
  const dst = parseAddress(spec.dst);
  const v6 = src.family === 6;
  const { proto, bytes } = transport(spec, v6);
  const offset = spec.fragOffset ?? 0;
  const more = spec.moreFragments ?? false;
  const fragmented = offset > 0 || more;
  if (!v6) {
    const total = 20 + bytes.length;
    const p = new Uint8Array(total);
    p[0] = 0x45;
    p[2] = total >> 8;
    p[3] = total & 255;
    const id = spec.fragId ?? 0x1234;
    p[4] = id >> 8;
    p[5] = id & 255;
    const ff = (more ? 0x2000 : 0) | (offset & 0x1fff);
    p[6] = ff >> 8;
    p[7] = ff & 255;
    p[8] = 64;
    p[9] = proto;
    p.set(src.bytes, 12);
    p.set(dst.bytes, 16);
    const c = checksum(p, 0, 20);
    p[10] = c >> 8;
    p[11] = c & 255;
    p.set(bytes, 20);
    return p;
  }
  const fragHeader = fragmented ? 8 : 0;
  const p = new Uint8Array(40 + fragHeader + bytes.length);
  p[0] = 0x60;
  const plen = fragHeader + bytes.length;
  p[4] = plen >> 8;
  p[5] = plen & 255;
  p[6] = fragmented ? 44 : proto;
  p[7] = 64;
  p.set(src.bytes, 8);
  p.set(dst.bytes, 24);
  if (fragmented) {
    p[40] = proto;
    const om = ((offset << 3) | (more ? 1 : 0)) & 0xffff;
    p[42] = om >> 8;
    p[43] = om & 255;
    const id = spec.fragId ?? 0x12345678;
    p[44] = id >>> 24;
    p[45] = (id >>> 16) & 255;
    p[46] = (id >>> 8) & 255;
    p[47] = id & 255;
  }
  p.set(bytes, 40 + fragHeader);
  return p;
}

/** An ICMP error (IPv4 type 3 code 3 port unreachable; IPv6 type 1 code 4) quoting `original`. */
export function icmpError(src: string, dst: string, original: Uint8Array, type?: number, code?: number): Uint8Array {
  const v6 = src.includes(":");
  return ipPacket({
    src,
    dst,
    proto: "icmp",
    icmpType: type ?? (v6 ? 1 : 3),
    icmpCode: code ?? (v6 ? 4 : 3),
    icmpId: 0,
    quote: original.subarray(0, Math.min(original.length, v6 ? 48 : 28)),
  });
}
