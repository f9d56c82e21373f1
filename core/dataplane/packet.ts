/**
 * @module core/dataplane/packet
 * Reading IPv4/IPv6 header fields straight out of a packet buffer, without copies or
 * allocation: the version, the addresses (IPv4 as uint32, IPv6 copied into a caller's 16-byte
 * scratch) and the length the header claims, which trims the zero padding transport adds.
 */

export const IPV4_HEADER_MIN = 20;
export const IPV6_HEADER_SIZE = 40;

/** 4, 6, or 0 when the packet is too short for its version's header or the version is neither. */
export function ipVersion(packet: Uint8Array, len = packet.length): 0 | 4 | 6 {
  if (len < 1) return 0;
  const v = packet[0]! >> 4;
  if (v === 4) return len >= IPV4_HEADER_MIN ? 4 : 0;
  if (v === 6) return len >= IPV6_HEADER_SIZE ? 6 : 0;
  return 0;
}

/**
 * The packet's length by its own header (IPv4 total length; IPv6 40 + payload length), or -1
 * when the header is malformed or claims more than the `len` bytes present.
 */
export function ipPacketLength(packet: Uint8Array, len = packet.length): number {
  const v = ipVersion(packet, len);
  if (v === 4) {
    const ihl = (packet[0]! & 0x0f) * 4;
    const total = (packet[2]! << 8) | packet[3]!;
    if (ihl < IPV4_HEADER_MIN || total < ihl || total > len) return -1;
    return total;
  }
  if (v === 6) {
    const total = IPV6_HEADER_SIZE + ((packet[4]! << 8) | packet[5]!);
    return total > len ? -1 : total;
  }
  return -1;
}

function u32be(p: Uint8Array, off: number): number {
  return ((p[off]! << 24) | (p[off + 1]! << 16) | (p[off + 2]! << 8) | p[off + 3]!) >>> 0;
}

/** IPv4 source address as a uint32 (caller checked ipVersion === 4). */
export function ipv4Source(packet: Uint8Array): number {
  return u32be(packet, 12);
}

/** IPv4 destination address as a uint32 (caller checked ipVersion === 4). */
export function ipv4Destination(packet: Uint8Array): number {
  return u32be(packet, 16);
}

/** Copies the IPv6 source address into `out` (16 bytes) and returns it. */
export function ipv6Source(packet: Uint8Array, out: Uint8Array): Uint8Array {
  for (let i = 0; i < 16; i++) out[i] = packet[8 + i]!;
  return out;
}

/** Copies the IPv6 destination address into `out` (16 bytes) and returns it. */
export function ipv6Destination(packet: Uint8Array, out: Uint8Array): Uint8Array {
  for (let i = 0; i < 16; i++) out[i] = packet[24 + i]!;
  return out;
}

/** Dotted-quad text of a uint32 address (logs and tests). */
export function ipv4Text(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 255}.${(addr >>> 8) & 255}.${addr & 255}`;
}
