/**
 * @module core/dataplane/probe
 * Data-path health probes between Devices (DESIGN.md "Threads": built and read over the Device's
 * scratch buffers, no allocation except when a health report changes). A probe is an ordinary
 * IPv4 ICMP echo request sent inside the tunnel, from the prober's virtual address (or 0.0.0.0)
 * to the probed peer's (or 0.0.0.0), with identifier PROBE_ID and a 16-byte payload:
 *
 *   0  "WGPROBE" 0x01   magic and version (8 bytes)
 *   8  sequence         u32, big-endian (the prober's per-peer counter)
 *   12 reserved         u32, zero
 *
 * A Waygate Device consumes it before cryptokey routing (device.ts stage I7) and answers with an
 * echo reply: addresses swapped, same identifier, sequence and 16 bytes, then its health report:
 *
 *   16 "WGHR"           magic (4 bytes)
 *   20 version          1
 *   21 flags            bit 0: draining
 *   22 count            u16, big-endian: withdrawn prefixes that follow
 *   24 entries          family (4|6), length, then 4 or 16 address bytes, per prefix
 *
 * Neither message is ever written to a TUN or forwarded. Both checksums are valid, so a plain
 * WireGuard peer whose kernel owns the destination address answers the probe itself (an echo of
 * the 16 bytes and no report): liveness still works against it, withdrawal and drain do not.
 * Authenticity comes from the tunnel (only the peer's session could have sealed it); a reply is
 * accepted only for a sequence the prober sent recently (device.ts keeps that window).
 */
import { type Prefix, formatAddress, parsePrefix } from "../net/address.ts";

/** ICMP echo identifier of probes ("WG"). */
export const PROBE_ID = 0x5747;
export const PROBE_MAGIC = Uint8Array.from([0x57, 0x47, 0x50, 0x52, 0x4f, 0x42, 0x45, 0x01]); // "WGPROBE" 1
const REPORT_MAGIC = [0x57, 0x47, 0x48, 0x52]; // "WGHR"
const REPORT_VERSION = 1;
const FLAG_DRAINING = 1;

const IP = 20;
const ICMP = 8;
export const PROBE_PAYLOAD = 16;
/** A probe request on the wire (inner packet): IPv4 + ICMP + payload. */
export const PROBE_SIZE = IP + ICMP + PROBE_PAYLOAD;
/** Withdrawn prefixes a report may carry: keeps a reply well under any tunnel MTU. */
export const MAX_REPORTED_PREFIXES = 64;

export const NOT_PROBE = 0;
export const PROBE_REQUEST = 1;
export const PROBE_REPLY = 2;

/** What a gateway reports in every probe reply (Device.setHealthReport). */
export interface HealthReport {
  /** Subnets this gateway cannot reach now (canonical prefix texts). */
  readonly withdrawn: readonly string[];
  /** An admin drains it: clients should move new flows away. */
  readonly draining: boolean;
}

function checksum(b: Uint8Array, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i += 2) sum += (b[off + i]! << 8) | (i + 1 < len ? b[off + i + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 255;
  b[o + 2] = (v >>> 8) & 255;
  b[o + 3] = v & 255;
}

function ipHeader(out: Uint8Array, total: number, src: number, dst: number): void {
  out.fill(0, 0, IP);
  out[0] = 0x45;
  out[2] = total >> 8;
  out[3] = total & 255;
  out[8] = 64;
  out[9] = 1;
  put32(out, 12, src);
  put32(out, 16, dst);
  const c = checksum(out, 0, IP);
  out[10] = c >> 8;
  out[11] = c & 255;
}

function icmpChecksum(out: Uint8Array, total: number): void {
  out[22] = 0;
  out[23] = 0;
  const c = checksum(out, IP, total - IP);
  out[22] = c >> 8;
  out[23] = c & 255;
}

/** Writes a probe request into `out` (>= PROBE_SIZE bytes); returns its length. */
export function buildProbe(out: Uint8Array, src: number, dst: number, seq: number): number {
  ipHeader(out, PROBE_SIZE, src, dst);
  out[IP] = 8;
  out[IP + 1] = 0;
  out[IP + 4] = PROBE_ID >> 8;
  out[IP + 5] = PROBE_ID & 255;
  out[IP + 6] = (seq >>> 8) & 255;
  out[IP + 7] = seq & 255;
  out.set(PROBE_MAGIC, IP + ICMP);
  put32(out, IP + ICMP + 8, seq >>> 0);
  put32(out, IP + ICMP + 12, 0);
  icmpChecksum(out, PROBE_SIZE);
  return PROBE_SIZE;
}

/**
 * NOT_PROBE, PROBE_REQUEST or PROBE_REPLY for a decrypted packet of `len` bytes (its own IP
 * length). Cheap for ordinary traffic: the protocol byte and the identifier fail first.
 */
export function classifyProbe(p: Uint8Array, len: number): number {
  if (len < PROBE_SIZE || p[9] !== 1 || p[0] !== 0x45) return NOT_PROBE;
  if (p[IP + 4] !== PROBE_ID >> 8 || p[IP + 5] !== (PROBE_ID & 255) || p[IP + 1] !== 0) return NOT_PROBE;
  if ((p[6]! & 0x3f) !== 0 || p[7] !== 0) return NOT_PROBE; // a fragment is never ours
  const type = p[IP];
  if (type !== 8 && type !== 0) return NOT_PROBE;
  for (let i = 0; i < 8; i++) if (p[IP + ICMP + i] !== PROBE_MAGIC[i]) return NOT_PROBE;
  return type === 8 ? PROBE_REQUEST : PROBE_REPLY;
}

/** The sequence number in a probe or probe reply's payload. */
export function probeSequence(p: Uint8Array): number {
  const o = IP + ICMP + 8;
  return ((p[o]! << 24) | (p[o + 1]! << 16) | (p[o + 2]! << 8) | p[o + 3]!) >>> 0;
}

/** Encodes a report into its wire block (done once per setHealthReport, not per reply). */
export function encodeReport(report: HealthReport): Uint8Array {
  const prefixes: Prefix[] = report.withdrawn.map((t) => parsePrefix(t, { mask: true }));
  if (prefixes.length > MAX_REPORTED_PREFIXES) {
    throw new RangeError(`a health report carries at most ${MAX_REPORTED_PREFIXES} withdrawn prefixes, got ${prefixes.length}`);
  }
  const size = 8 + prefixes.reduce((n, p) => n + 2 + p.bytes.length, 0);
  const out = new Uint8Array(size);
  out.set(REPORT_MAGIC, 0);
  out[4] = REPORT_VERSION;
  out[5] = report.draining ? FLAG_DRAINING : 0;
  out[6] = prefixes.length >> 8;
  out[7] = prefixes.length & 255;
  let o = 8;
  for (const p of prefixes) {
    out[o] = p.family;
    out[o + 1] = p.length;
    out.set(p.bytes, o + 2);
    o += 2 + p.bytes.length;
  }
  return out;
}

/**
 * Turns a probe request (`req`, `len` bytes) into its reply in `out` carrying `report` (an
 * encoded block, possibly empty); returns the reply's length. `out` must not alias `req`.
 */
export function buildProbeReply(req: Uint8Array, out: Uint8Array, report: Uint8Array): number {
  const total = PROBE_SIZE + report.length;
  const src = ((req[16]! << 24) | (req[17]! << 16) | (req[18]! << 8) | req[19]!) >>> 0;
  const dst = ((req[12]! << 24) | (req[13]! << 16) | (req[14]! << 8) | req[15]!) >>> 0;
  ipHeader(out, total, src, dst);
  for (let i = IP; i < PROBE_SIZE; i++) out[i] = req[i]!;
  out[IP] = 0;
  out.set(report, PROBE_SIZE);
  icmpChecksum(out, total);
  return total;
}

/** The report bytes of a reply (`len` bytes): a view into `p`, empty when the peer sent none. */
export function replyReportBytes(p: Uint8Array, len: number): Uint8Array {
  return p.subarray(PROBE_SIZE, len);
}

/** Decodes a report block; null when empty or not a report (a plain kernel's echo). */
export function decodeReport(block: Uint8Array): HealthReport | null {
  if (block.length < 8) return null;
  for (let i = 0; i < 4; i++) if (block[i] !== REPORT_MAGIC[i]) return null;
  if (block[4] !== REPORT_VERSION) return null;
  const count = (block[6]! << 8) | block[7]!;
  const withdrawn: string[] = [];
  let o = 8;
  for (let i = 0; i < count; i++) {
    const family = block[o];
    const size = family === 4 ? 4 : family === 6 ? 16 : -1;
    if (size < 0 || o + 2 + size > block.length) return null;
    const length = block[o + 1]!;
    if (length > size * 8) return null;
    const text = `${formatAddress(block.subarray(o + 2, o + 2 + size))}/${length}`;
    try {
      withdrawn.push(parsePrefix(text, { mask: true }).text);
    } catch {
      return null;
    }
    o += 2 + size;
  }
  return Object.freeze({ withdrawn: Object.freeze(withdrawn), draining: (block[5]! & FLAG_DRAINING) !== 0 });
}
