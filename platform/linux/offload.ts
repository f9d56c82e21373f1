/**
 * @module platform/linux/offload
 * Pure TSO/GSO segmentation and GRO coalescing for a TUN opened with IFF_VNET_HDR (no syscalls
 * here; platform/linux/tun.ts and host-worker.ts do the I/O). Every TUN read then starts with a
 * 10-byte struct virtio_net_hdr, and so must every write:
 *
 *   flags u8 | gso_type u8 | hdr_len u16 | gso_size u16 | csum_start u16 | csum_offset u16
 *   (little endian: the TUN's vnet header is native-endian on LE hosts unless TUNSETVNETBE)
 *
 * Read side (TSO/GSO, `splitFrame`): with TUNSETOFFLOAD(CSUM|TSO4|TSO6) the kernel hands over
 * TCP "super-packets" up to 64 KB whose TCP checksum field holds only the pseudo-header sum
 * (VIRTIO_NET_HDR_F_NEEDS_CSUM). They are cut into gso_size payload chunks, each a complete
 * IP packet: IPv4 total length, id (+1 per segment) and header checksum, IPv6 payload length,
 * TCP sequence number (+gso_size per segment), FIN/PSH only on the last, CWR only on the first,
 * and a full TCP checksum. A non-GSO packet marked NEEDS_CSUM gets its checksum completed.
 *
 * Write side (GRO, `TcpCoalescer`): decrypted packets of one loop iteration are collected; TCP
 * segments of one flow (same addresses, ports, ack, IP TOS/TTL/DF, TCP options) that follow each
 * other in sequence are appended into one super-packet written with GSO_TCPV4/6 and NEEDS_CSUM
 * (the TCP checksum field then holds the pseudo-header sum, as the kernel expects for
 * CHECKSUM_PARTIAL). Rules match the kernel's GRO: only ACK or ACK|PSH, PSH ends a packet,
 * all segments gso_size long except a shorter last one, at most 64 KB. Each segment's own
 * checksum is verified before it is merged (the kernel will not look again); a bad one is
 * written alone, where the kernel drops it. Everything else goes out with a zero header.
 *
 * Checksums (RFC 1071) sum little-endian 32-bit words where the data is 4-byte aligned (and
 * swap the folded result: the one's-complement sum is byte-order independent), bytes otherwise.
 */

export const VNET_HDR_LEN = 10;
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_UDP = 3;
export const GSO_TCPV6 = 4;
export const GSO_UDP_L4 = 5;
export const GSO_ECN = 0x80;

const PROTO_TCP = 6;
const PROTO_UDP = 17;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_ACK = 0x10;
const TCP_CWR = 0x80;
/** Largest IP packet (IPv4 total length / IPv6 payload length are 16-bit). */
const MAX_IP = 65535;

// ---------------------------------------------------------------- checksums

let cacheBuf0: ArrayBufferLike | null = null;
let cacheU320: Uint32Array | null = null;
let cacheBuf1: ArrayBufferLike | null = null;
let cacheU321: Uint32Array | null = null;

const u32Views = new WeakMap<ArrayBufferLike, Uint32Array>();

function u32Of(buffer: ArrayBufferLike): Uint32Array {
  if (buffer === cacheBuf0) return cacheU320!;
  if (buffer === cacheBuf1) return cacheU321!;
  let v = u32Views.get(buffer);
  if (v === undefined || v.length !== buffer.byteLength >>> 2) {
    v = new Uint32Array(buffer, 0, buffer.byteLength >>> 2);
    u32Views.set(buffer, v);
  }
  cacheBuf1 = cacheBuf0;
  cacheU321 = cacheU320;
  cacheBuf0 = buffer;
  cacheU320 = v;
  return v;
}

/** Folds a (possibly large, non-negative) one's-complement sum to 16 bits. */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum % 65536) + Math.floor(sum / 65536);
  return sum;
}

/**
 * One's-complement sum of b[off, off+len) as big-endian 16-bit words, added to `initial`;
 * unfolded (fold() it). An odd length pads the last byte with zero.
 */
export function sumBytes(b: Uint8Array, off: number, len: number, initial: number): number {
  let sum = initial;
  let i = off;
  const end = off + len;
  const abs = b.byteOffset + off;
  if (len >= 16 && (abs & 3) === 0) {
    const u32 = u32Of(b.buffer);
    let k = abs >>> 2;
    const words = len >>> 2;
    const kEnd = k + words;
    let le = 0;
    for (; k + 4 <= kEnd; k += 4) le += u32[k]! + u32[k + 1]! + u32[k + 2]! + u32[k + 3]!;
    for (; k < kEnd; k++) le += u32[k]!;
    // Little-endian words: the folded sum is byte-swapped.
    const f = fold(le);
    sum += ((f & 0xff) << 8) | (f >>> 8);
    i = off + words * 4;
  }
  for (; i + 1 < end; i += 2) sum += (b[i]! << 8) | b[i + 1]!;
  if (i < end) sum += b[i]! << 8;
  return sum;
}

/** The RFC 1071 checksum (complemented) of a byte range. */
export function checksum(b: Uint8Array, off = 0, len = b.byteLength - off, initial = 0): number {
  return ~fold(sumBytes(b, off, len, initial)) & 0xffff;
}

/** Unfolded sum of the IPv4/IPv6 pseudo-header of the packet at `p` for an L4 of `l4Len`. */
export function pseudoHeaderSum(p: Uint8Array, v6: boolean, proto: number, l4Len: number): number {
  return v6 ? sumBytes(p, 8, 32, proto + l4Len) : sumBytes(p, 12, 8, proto + l4Len);
}

function get16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}
function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}
function get32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}
function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

function ipv4HeaderChecksum(p: Uint8Array, ihl: number): void {
  p[10] = 0;
  p[11] = 0;
  put16(p, 10, checksum(p, 0, ihl));
}

// ---------------------------------------------------------------- virtio_net_hdr

export interface VnetHdr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export function readVnetHdr(b: Uint8Array, off = 0): VnetHdr {
  return {
    flags: b[off]!,
    gsoType: b[off + 1]!,
    hdrLen: b[off + 2]! | (b[off + 3]! << 8),
    gsoSize: b[off + 4]! | (b[off + 5]! << 8),
    csumStart: b[off + 6]! | (b[off + 7]! << 8),
    csumOffset: b[off + 8]! | (b[off + 9]! << 8),
  };
}

export function writeVnetHdr(b: Uint8Array, off: number, h: VnetHdr): void {
  b[off] = h.flags;
  b[off + 1] = h.gsoType;
  b[off + 2] = h.hdrLen & 0xff;
  b[off + 3] = h.hdrLen >>> 8;
  b[off + 4] = h.gsoSize & 0xff;
  b[off + 5] = h.gsoSize >>> 8;
  b[off + 6] = h.csumStart & 0xff;
  b[off + 7] = h.csumStart >>> 8;
  b[off + 8] = h.csumOffset & 0xff;
  b[off + 9] = h.csumOffset >>> 8;
}

// ---------------------------------------------------------------- read side: split

/** Why splitFrame refused a frame (it returns the negated index + 1). */
export const SPLIT_ERRORS = ["short-frame", "bad-csum-range", "bad-gso-packet", "unsupported-gso"] as const;
export type SplitError = (typeof SPLIT_ERRORS)[number];
const ERR_SHORT = -1;
const ERR_CSUM = -2;
const ERR_GSO = -3;
const ERR_UNSUPPORTED = -4;

export function splitErrorName(code: number): SplitError {
  return SPLIT_ERRORS[-code - 1] ?? "bad-gso-packet";
}

/**
 * One TUN read (`frame[0, frameLen)`: vnet header + packet) into IP packets handed to `emit`,
 * in order. A segment lives in `scratch` (≥ 64 KB recommended; 4-byte aligned) and is valid only
 * during its emit call. Returns the number of packets emitted, or a negative SPLIT_ERRORS code
 * (nothing emitted). May modify the frame (checksum completion).
 */
export function splitFrame(frame: Uint8Array, frameLen: number, scratch: Uint8Array, emit: (packet: Uint8Array) => void): number {
  if (frameLen < VNET_HDR_LEN + 1) return ERR_SHORT;
  const flags = frame[0]!;
  const gsoType = frame[1]! & ~GSO_ECN;
  const gsoSize = frame[4]! | (frame[5]! << 8);
  const csumStart = frame[6]! | (frame[7]! << 8);
  const csumOffset = frame[8]! | (frame[9]! << 8);
  const pkt = frame.subarray(VNET_HDR_LEN, frameLen);
  const len = frameLen - VNET_HDR_LEN;

  if (gsoType === GSO_NONE) {
    if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
      if (csumStart >= len || csumStart + csumOffset + 2 > len) return ERR_CSUM;
      // The field holds the pseudo-header sum; summing over it completes the checksum.
      let c = ~fold(sumBytes(pkt, csumStart, len - csumStart, 0)) & 0xffff;
      // UDP transmits an all-zero checksum as 0xffff (0 means "none").
      if (c === 0 && csumOffset === 6) c = 0xffff;
      put16(pkt, csumStart + csumOffset, c);
    }
    emit(pkt);
    return 1;
  }
  if (gsoType !== GSO_TCPV4 && gsoType !== GSO_TCPV6 && gsoType !== GSO_UDP_L4) return ERR_UNSUPPORTED;
  const version = pkt[0]! >> 4;
  const v6 = version === 6;
  if (!(version === 4 && gsoType !== GSO_TCPV6) && !(v6 && gsoType !== GSO_TCPV4)) return ERR_GSO;
  // csum_start is where the kernel put the transport header (after any IPv6 extension headers).
  const iphLen = csumStart;
  if (v6 ? iphLen < 40 : iphLen !== (pkt[0]! & 0x0f) * 4 || iphLen < 20) return ERR_GSO;
  const udp = gsoType === GSO_UDP_L4;
  if (!v6 && pkt[9] !== (udp ? PROTO_UDP : PROTO_TCP)) return ERR_GSO;
  if (v6 && iphLen === 40 && pkt[6] !== (udp ? PROTO_UDP : PROTO_TCP)) return ERR_GSO;
  if (iphLen + (udp ? 8 : 20) > len) return ERR_GSO;
  const l4hLen = udp ? 8 : (pkt[iphLen + 12]! >> 4) * 4;
  if (l4hLen < (udp ? 8 : 20)) return ERR_GSO;
  const hdrLen = iphLen + l4hLen;
  if (hdrLen > len || gsoSize === 0) return ERR_GSO;
  const payload = len - hdrLen;
  if (payload <= gsoSize) {
    // One segment: just complete the checksum, as for a GSO_NONE packet.
    let c = ~fold(sumBytes(pkt, iphLen, len - iphLen, 0)) & 0xffff;
    if (udp && c === 0) c = 0xffff;
    if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) put16(pkt, iphLen + (udp ? 6 : 16), c);
    emit(pkt);
    return 1;
  }
  if (hdrLen + gsoSize > scratch.byteLength) return ERR_GSO;

  const id0 = v6 ? 0 : get16(pkt, 4);
  const seq0 = udp ? 0 : get32(pkt, iphLen + 4);
  const tcpFlags = udp ? 0 : pkt[iphLen + 13]!;
  // Pseudo-header over the addresses only; protocol and length are added per segment.
  const addrSum = v6 ? sumBytes(pkt, 8, 32, 0) : sumBytes(pkt, 12, 8, 0);
  const proto = udp ? PROTO_UDP : PROTO_TCP;
  scratch.set(pkt.subarray(0, hdrLen), 0);
  let emitted = 0;
  for (let off = hdrLen, i = 0; off < len; off += gsoSize, i++) {
    const segLen = Math.min(gsoSize, len - off);
    const last = off + segLen >= len;
    if (i > 0) scratch.set(pkt.subarray(0, hdrLen), 0);
    scratch.set(pkt.subarray(off, off + segLen), hdrLen);
    const total = hdrLen + segLen;
    if (v6) {
      put16(scratch, 4, total - 40);
    } else {
      put16(scratch, 2, total);
      put16(scratch, 4, (id0 + i) & 0xffff);
      ipv4HeaderChecksum(scratch, iphLen);
    }
    const l4Len = total - iphLen;
    if (udp) {
      put16(scratch, iphLen + 4, l4Len);
      scratch[iphLen + 6] = 0;
      scratch[iphLen + 7] = 0;
      let c = ~fold(sumBytes(scratch, iphLen, l4Len, addrSum + proto + l4Len)) & 0xffff;
      if (c === 0) c = 0xffff;
      put16(scratch, iphLen + 6, c);
    } else {
      put32(scratch, iphLen + 4, (seq0 + i * gsoSize) >>> 0);
      let f = tcpFlags;
      if (!last) f &= ~(TCP_FIN | TCP_PSH);
      if (i > 0) f &= ~TCP_CWR;
      scratch[iphLen + 13] = f;
      scratch[iphLen + 16] = 0;
      scratch[iphLen + 17] = 0;
      put16(scratch, iphLen + 16, ~fold(sumBytes(scratch, iphLen, l4Len, addrSum + proto + l4Len)) & 0xffff);
    }
    emit(scratch.subarray(0, total));
    emitted++;
  }
  return emitted;
}

// ---------------------------------------------------------------- write side: coalesce

/** Room before each packet in a slot: 2 bytes of padding keep the IP header 4-byte aligned. */
const SLOT_PAD = 2;
const SLOT_HEAD = SLOT_PAD + VNET_HDR_LEN; // 12

export interface CoalescerStats {
  /** Packets added. */
  packets: number;
  /** Frames written (one write(2) each). */
  frames: number;
  /** Packets that joined another one's frame. */
  merged: number;
  /** TCP segments not merged because their checksum was wrong. */
  badChecksum: number;
}

/**
 * Collects the IP packets of one batch and writes them as vnet frames: consecutive TCP segments
 * of a flow become one GSO super-packet, everything else one frame each (zero vnet header).
 * `add` copies; `flush` writes (in arrival order of each frame's first packet) and resets.
 */
export class TcpCoalescer {
  readonly stats: CoalescerStats = { packets: 0, frames: 0, merged: 0, badChecksum: 0 };
  private readonly arena: Uint8Array;
  private readonly slotSize: number;
  private readonly capacity: number;
  private count = 0;
  /** Per slot: bytes of IP packet in it (grows when segments are merged). */
  private readonly len: Int32Array;
  /** Per slot: 0 not coalescable, else IP header length. */
  private readonly iph: Int32Array;
  private readonly tcph: Int32Array;
  private readonly gso: Int32Array;
  private readonly merged: Int32Array;
  /** Per slot: IP packets in the frame. */
  private readonly pkts: Int32Array;
  /** Per slot: the next sequence number expected by the slot's (last) segment. */
  private readonly nextSeq: Float64Array;
  /** Per slot: 1 when the head's checksum is known good. */
  private readonly verified: Uint8Array;
  /** Per slot: 1 when no more segments may join (PSH seen, short segment, full). */
  private readonly closed: Uint8Array;
  /** Flow hash -> newest slot of that flow. */
  private readonly flows = new Map<number, number>();

  constructor(
    private readonly write: (frame: Uint8Array, packets: number) => void,
    options: { slots?: number; maxPacket?: number } = {},
  ) {
    this.capacity = options.slots ?? 64;
    // A slot holds a whole super-packet: 64 KB plus its header room, rounded to 8.
    this.slotSize = (SLOT_HEAD + MAX_IP + 7) & ~7;
    this.arena = new Uint8Array(new ArrayBuffer(this.capacity * this.slotSize));
    const n = this.capacity;
    this.len = new Int32Array(n);
    this.iph = new Int32Array(n);
    this.tcph = new Int32Array(n);
    this.gso = new Int32Array(n);
    this.merged = new Int32Array(n);
    this.nextSeq = new Float64Array(n);
    this.verified = new Uint8Array(n);
    this.closed = new Uint8Array(n);
    this.pkts = new Int32Array(n);
  }

  get pending(): number {
    return this.count;
  }

  /** Queues one IP packet (copied). Flushes first when every slot is taken. */
  add(packet: Uint8Array): void {
    const plen = packet.byteLength;
    if (plen > MAX_IP) return;
    this.stats.packets++;
    if (this.tryMerge(packet, plen)) return;
    if (this.count === this.capacity) this.flush();
    const s = this.count++;
    const base = s * this.slotSize + SLOT_HEAD;
    this.arena.set(packet, base);
    this.len[s] = plen;
    this.merged[s] = 0;
    this.pkts[s] = 1;
    this.verified[s] = 0;
    this.closed[s] = 0;
    this.iph[s] = 0;
    const p = this.arena.subarray(base, base + plen);
    const h = tcpCandidate(p, plen);
    if (h === 0) return;
    const iphLen = h & 0xff;
    const tcphLen = h >>> 8;
    this.iph[s] = iphLen;
    this.tcph[s] = tcphLen;
    const payload = plen - iphLen - tcphLen;
    this.gso[s] = payload;
    this.nextSeq[s] = (get32(p, iphLen + 4) + payload) >>> 0;
    if ((p[iphLen + 13]! & TCP_PSH) !== 0) this.closed[s] = 1;
    this.flows.set(flowHash(p, iphLen), s);
  }

  private tryMerge(packet: Uint8Array, plen: number): boolean {
    if (this.count === 0) return false;
    const h = tcpCandidate(packet, plen);
    if (h === 0) return false;
    const iphLen = h & 0xff;
    const tcphLen = h >>> 8;
    const s = this.flows.get(flowHash(packet, iphLen));
    if (s === undefined || this.closed[s] === 1 || this.iph[s] !== iphLen || this.tcph[s] !== tcphLen) return false;
    const payload = plen - iphLen - tcphLen;
    if (payload > this.gso[s]!) return false;
    if (this.len[s]! + payload > MAX_IP) return false;
    if (get32(packet, iphLen + 4) !== this.nextSeq[s]) return false;
    const base = s * this.slotSize + SLOT_HEAD;
    const head = this.arena.subarray(base, base + this.len[s]!);
    if (!sameFlowHeaders(head, packet, iphLen, tcphLen)) return false;
    const v6 = iphLen === 40;
    if (this.verified[s] === 0) {
      if (!tcpChecksumOk(head, this.len[s]!, iphLen, v6)) {
        this.stats.badChecksum++;
        this.closed[s] = 1;
        return false;
      }
      this.verified[s] = 1;
    }
    if (!tcpChecksumOk(packet, plen, iphLen, v6)) {
      this.stats.badChecksum++;
      return false;
    }
    this.arena.set(packet.subarray(iphLen + tcphLen, plen), base + this.len[s]!);
    this.len[s] = this.len[s]! + payload;
    this.merged[s] = this.merged[s]! + 1;
    this.pkts[s] = this.pkts[s]! + 1;
    this.nextSeq[s] = (this.nextSeq[s]! + payload) >>> 0;
    this.stats.merged++;
    if ((packet[iphLen + 13]! & TCP_PSH) !== 0) {
      head[iphLen + 13] = head[iphLen + 13]! | TCP_PSH;
      this.closed[s] = 1;
    }
    if (payload < this.gso[s]! || this.len[s]! + this.gso[s]! > MAX_IP) this.closed[s] = 1;
    return true;
  }

  /** Writes every queued frame and resets. */
  flush(): void {
    const n = this.count;
    if (n === 0) return;
    const arena = this.arena;
    for (let s = 0; s < n; s++) {
      const start = s * this.slotSize + SLOT_PAD;
      const base = start + VNET_HDR_LEN;
      const plen = this.len[s]!;
      if (this.merged[s] === 0) {
        arena.fill(0, start, base);
      } else {
        const iphLen = this.iph[s]!;
        const p = arena.subarray(base, base + plen);
        const v6 = iphLen === 40;
        if (v6) {
          put16(p, 4, plen - 40);
        } else {
          put16(p, 2, plen);
          ipv4HeaderChecksum(p, iphLen);
        }
        const l4Len = plen - iphLen;
        put16(p, iphLen + 16, fold(pseudoHeaderSum(p, v6, PROTO_TCP, l4Len)));
        arena[start] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        arena[start + 1] = v6 ? GSO_TCPV6 : GSO_TCPV4;
        const hdrLen = iphLen + this.tcph[s]!;
        arena[start + 2] = hdrLen & 0xff;
        arena[start + 3] = hdrLen >>> 8;
        arena[start + 4] = this.gso[s]! & 0xff;
        arena[start + 5] = this.gso[s]! >>> 8;
        arena[start + 6] = iphLen & 0xff;
        arena[start + 7] = iphLen >>> 8;
        arena[start + 8] = 16;
        arena[start + 9] = 0;
      }
      this.stats.frames++;
      this.write(arena.subarray(start, base + plen), this.pkts[s]!);
    }
    this.count = 0;
    this.flows.clear();
  }
}

/**
 * For a TCP packet that may be coalesced: (tcpHeaderLen << 8) | ipHeaderLen; else 0.
 * IPv4 without options or fragments, IPv6 without extension headers, flags ACK or ACK|PSH,
 * a non-empty payload, lengths that agree with the buffer.
 */
function tcpCandidate(p: Uint8Array, plen: number): number {
  if (plen < 40) return 0;
  const b0 = p[0]!;
  let iphLen: number;
  if (b0 === 0x45) {
    if (p[9] !== PROTO_TCP || get16(p, 2) !== plen) return 0;
    if ((p[6]! & 0x3f) !== 0 || p[7] !== 0) return 0; // MF or a fragment offset
    iphLen = 20;
  } else if (b0 >> 4 === 6) {
    if (plen < 60 || p[6] !== PROTO_TCP || get16(p, 4) !== plen - 40) return 0;
    iphLen = 40;
  } else {
    return 0;
  }
  const tcphLen = (p[iphLen + 12]! >> 4) * 4;
  if (tcphLen < 20 || iphLen + tcphLen >= plen) return 0;
  const f = p[iphLen + 13]!;
  if (f !== TCP_ACK && f !== (TCP_ACK | TCP_PSH)) return 0;
  return (tcphLen << 8) | iphLen;
}

/** Hash of addresses, ports and ack number (packets with different acks are different flows). */
function flowHash(p: Uint8Array, iphLen: number): number {
  let h = 0x811c9dc5;
  const a = iphLen === 40 ? 8 : 12;
  const aEnd = iphLen === 40 ? 40 : 20;
  for (let i = a; i < aEnd; i++) h = Math.imul(h ^ p[i]!, 0x01000193);
  for (let i = iphLen; i < iphLen + 4; i++) h = Math.imul(h ^ p[i]!, 0x01000193);
  for (let i = iphLen + 8; i < iphLen + 12; i++) h = Math.imul(h ^ p[i]!, 0x01000193);
  return h >>> 0;
}

/** Same flow and mergeable IP/TCP headers (the hash may collide: compare everything). */
function sameFlowHeaders(head: Uint8Array, p: Uint8Array, iphLen: number, tcphLen: number): boolean {
  if (iphLen === 40) {
    if (head[0] !== p[0] || head[1]! >> 4 !== p[1]! >> 4 || head[7] !== p[7]) return false; // traffic class, hop limit
    for (let i = 8; i < 40; i++) if (head[i] !== p[i]) return false;
  } else {
    if (head[1] !== p[1] || head[6]! >> 5 !== p[6]! >> 5 || head[8] !== p[8]) return false; // TOS, DF, TTL
    for (let i = 12; i < 20; i++) if (head[i] !== p[i]) return false;
  }
  // ports, ack, window, urgent pointer? ports and ack must match; window may differ only
  // with a window update, which the kernel's GRO also refuses.
  for (let i = iphLen; i < iphLen + 4; i++) if (head[i] !== p[i]) return false;
  for (let i = iphLen + 8; i < iphLen + 12; i++) if (head[i] !== p[i]) return false;
  if (head[iphLen + 14] !== p[iphLen + 14] || head[iphLen + 15] !== p[iphLen + 15]) return false;
  for (let i = iphLen + 20; i < iphLen + tcphLen; i++) if (head[i] !== p[i]) return false;
  return true;
}

function tcpChecksumOk(p: Uint8Array, plen: number, iphLen: number, v6: boolean): boolean {
  const l4Len = plen - iphLen;
  return fold(sumBytes(p, iphLen, l4Len, pseudoHeaderSum(p, v6, PROTO_TCP, l4Len))) === 0xffff;
}
