/**
 * @module core/dataplane/drop-log
 * The Device's record of recent drops: a fixed ring (DROP_LOG_SIZE entries) of what was dropped,
 * why, and from or to whom, so `waygate run -v 5` can log every drop with its reason while the
 * counters in stats() only say how many. Recording is on the packet path (a flood of bad
 * datagrams drops one per datagram), so it writes into typed arrays preallocated at
 * construction: no allocation per drop. Reading (`since`) formats addresses and builds objects;
 * it runs on the stats path, never per packet.
 *
 * Sequence numbers start at 1 and grow by one per drop; the newest entry's is `seq`. A reader
 * remembers the last seq it saw and asks for what came after; entries the ring overwrote before
 * it asked are counted in `lost`, never silently skipped.
 *
 * What an entry says about the packet depends on where the drop happened: an IP packet (the TUN
 * side, or an opened transport message) gives its version, protocol, addresses, the destination
 * port (TCP/UDP, first or only fragment, IPv6 without extension headers) and its length; a
 * datagram dropped before it was opened gives the UDP source it came from and its length.
 */
import { formatAddress } from "../net/address.ts";
import type { Endpoint } from "./ports.ts";

/** Entries kept (the newest overwrite the oldest). */
export const DROP_LOG_SIZE = 256;
/** Entries stats() carries: enough for a reader polling every few seconds to dedupe by seq. */
export const DROP_LOG_STATS_ENTRIES = 64;

export interface DropEntry {
  seq: number;
  /** Wall-clock ms (the Device's now). */
  atMs: number;
  reason: string;
  /** The peer's public key; null for drops no peer can be blamed for. */
  peer: string | null;
  /** 4 or 6 for an IP packet; 0 for a datagram dropped before it was opened (or an unparsable packet). */
  ipVersion: 0 | 4 | 6;
  /** IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6); null without an IP packet. */
  proto: number | null;
  src: string | null;
  dst: string | null;
  /** TCP/UDP destination port when the header was at hand; null otherwise. */
  dstPort: number | null;
  /** Bytes: the IP packet, or the datagram. */
  len: number;
  /** A datagram's UDP source ("192.0.2.1:51820", "[fd00::1]:51820"); null for IP-packet drops. */
  from: string | null;
}

/** What stats() carries: the newest seq and the newest entries (at most DROP_LOG_STATS_ENTRIES), oldest first. */
export interface DropLogSnapshot {
  seq: number;
  entries: DropEntry[];
}

export interface DropLogRead extends DropLogSnapshot {
  /** Drops after `sinceSeq` not in `entries`: overwritten, or beyond `max`. */
  lost: number;
}

const PROTO_TCP = 6;
const PROTO_UDP = 17;

export class DropLog {
  readonly size: number;
  #seq = 0;
  readonly #at: Float64Array;
  readonly #reason: Uint8Array;
  readonly #version: Uint8Array;
  readonly #proto: Int16Array;
  readonly #port: Int32Array;
  readonly #len: Uint32Array;
  readonly #src: Uint8Array;
  readonly #dst: Uint8Array;
  readonly #fromPort: Uint16Array;
  /** References to strings the Device already holds (peer keys, endpoint addresses): storing one allocates nothing. */
  readonly #peer: (string | null)[];
  readonly #fromAddress: (string | null)[];
  /** Reasons seen so far, by code (a code is assigned the first time a reason is dropped: a bounded set). */
  readonly #reasonNames: string[] = [];
  readonly #reasonCodes = new Map<string, number>();

  constructor(size = DROP_LOG_SIZE) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`drop log size must be a positive integer, got ${size}`);
    this.size = size;
    this.#at = new Float64Array(size);
    this.#reason = new Uint8Array(size);
    this.#version = new Uint8Array(size);
    this.#proto = new Int16Array(size);
    this.#port = new Int32Array(size);
    this.#len = new Uint32Array(size);
    this.#src = new Uint8Array(size * 16);
    this.#dst = new Uint8Array(size * 16);
    this.#fromPort = new Uint16Array(size);
    this.#peer = new Array<string | null>(size).fill(null);
    this.#fromAddress = new Array<string | null>(size).fill(null);
  }

  /** The newest entry's sequence number (0 before the first drop): the number of drops recorded. */
  get seq(): number {
    return this.#seq;
  }

  /**
   * Records one drop. `packet[0..len)` is the IP packet or the datagram; `from` is set for a
   * datagram not yet opened (then nothing is read from `packet` but its length).
   */
  record(atMs: number, reason: string, peer: string | null, packet: Uint8Array | null, len: number, from: Endpoint | null): void {
    const i = this.#seq % this.size;
    this.#seq++;
    let code = this.#reasonCodes.get(reason);
    if (code === undefined) {
      code = this.#reasonNames.length;
      if (code > 255) code = 255; // more distinct reasons than a byte holds: never, DropReason has ~40
      else {
        this.#reasonNames.push(reason);
        this.#reasonCodes.set(reason, code);
      }
    }
    this.#at[i] = atMs;
    this.#reason[i] = code;
    this.#peer[i] = peer;
    this.#len[i] = len;
    this.#version[i] = 0;
    this.#proto[i] = -1;
    this.#port[i] = -1;
    if (from !== null) {
      this.#fromAddress[i] = from.address;
      this.#fromPort[i] = from.port;
      return;
    }
    this.#fromAddress[i] = null;
    if (packet === null || len < 1) return;
    const v = packet[0]! >> 4;
    const o = i * 16;
    if (v === 4 && len >= 20) {
      this.#version[i] = 4;
      const proto = packet[9]!;
      this.#proto[i] = proto;
      for (let k = 0; k < 4; k++) {
        this.#src[o + k] = packet[12 + k]!;
        this.#dst[o + k] = packet[16 + k]!;
      }
      const ihl = (packet[0]! & 0x0f) * 4;
      const fragOffset = ((packet[6]! & 0x1f) << 8) | packet[7]!;
      if ((proto === PROTO_TCP || proto === PROTO_UDP) && fragOffset === 0 && ihl >= 20 && len >= ihl + 4) {
        this.#port[i] = (packet[ihl + 2]! << 8) | packet[ihl + 3]!;
      }
    } else if (v === 6 && len >= 40) {
      this.#version[i] = 6;
      const next = packet[6]!;
      this.#proto[i] = next;
      for (let k = 0; k < 16; k++) {
        this.#src[o + k] = packet[8 + k]!;
        this.#dst[o + k] = packet[24 + k]!;
      }
      if ((next === PROTO_TCP || next === PROTO_UDP) && len >= 44) this.#port[i] = (packet[42]! << 8) | packet[43]!;
    }
  }

  /**
   * Entries after `sinceSeq`, oldest first, at most `max` (the newest ones); `lost` counts those
   * after `sinceSeq` that are not returned. A `sinceSeq` ahead of `seq` (a reader that saw an
   * older Device) reads as 0.
   */
  since(sinceSeq: number, max = this.size): DropLogRead {
    const seq = this.#seq;
    const after = sinceSeq > seq || !(sinceSeq >= 0) ? 0 : Math.floor(sinceSeq);
    const oldestKept = Math.max(1, seq - this.size + 1, seq - Math.max(0, Math.floor(max)) + 1);
    const first = Math.max(after + 1, oldestKept);
    const entries: DropEntry[] = [];
    for (let s = first; s <= seq; s++) entries.push(this.#entry(s));
    return { seq, lost: first - (after + 1), entries };
  }

  /** The newest DROP_LOG_STATS_ENTRIES entries (stats()). */
  snapshot(max = DROP_LOG_STATS_ENTRIES): DropLogSnapshot {
    const { seq, entries } = this.since(0, max);
    return { seq, entries };
  }

  #entry(s: number): DropEntry {
    const i = (s - 1) % this.size;
    const version = this.#version[i]! as 0 | 4 | 6;
    const fromAddress = this.#fromAddress[i]!;
    const o = i * 16;
    const proto = this.#proto[i]!;
    const port = this.#port[i]!;
    return {
      seq: s,
      atMs: this.#at[i]!,
      reason: this.#reasonNames[this.#reason[i]!] ?? "unknown",
      peer: this.#peer[i]!,
      ipVersion: version,
      proto: proto < 0 ? null : proto,
      src: version === 0 ? null : addressText(this.#src, o, version),
      dst: version === 0 ? null : addressText(this.#dst, o, version),
      dstPort: port < 0 ? null : port,
      len: this.#len[i]!,
      from: fromAddress === null ? null : fromAddress.includes(":") ? `[${fromAddress}]:${this.#fromPort[i]}` : `${fromAddress}:${this.#fromPort[i]}`,
    };
  }
}

function addressText(b: Uint8Array, o: number, version: 4 | 6): string {
  if (version === 4) return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
  return formatAddress(b.slice(o, o + 16));
}

/** "tcp", "udp", "icmp", "icmpv6", or the number. */
export function protoName(proto: number | null): string {
  if (proto === null) return "-";
  switch (proto) {
    case 1:
      return "icmp";
    case 6:
      return "tcp";
    case 17:
      return "udp";
    case 58:
      return "icmpv6";
    default:
      return String(proto);
  }
}
