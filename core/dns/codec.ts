/**
 * @module core/dns/codec
 * DNS messages (RFC 1035, EDNS0 per RFC 6891) to and from bytes. Every malformed input throws
 * DnsFormatError with a short reason; nothing else escapes `decodeMessage` (fuzzed in
 * test/dns/codec.fuzz.test.ts). The caller counts the reason and answers FORMERR when the header
 * was readable (`formErrFor`), else drops.
 *
 * Names are presentation text without the trailing dot (root is "."), in their original case:
 * bytes outside 0x21..0x7e and the characters "." and "\" inside a label are escaped as \DDD,
 * "\." and "\\", so any wire name survives decode -> encode unchanged. Compare with `sameName`
 * (ASCII case-insensitive, RFC 4343).
 *
 * Compression on decode: a pointer must point strictly before the start of the name it appears
 * in and each further pointer strictly before the previous target, so pointer chains are
 * strictly decreasing and loops impossible; on top, at most MAX_POINTER_HOPS hops, labels ≤ 63
 * and the whole name ≤ 255 octets on the wire. Compression on encode: owner names and the names
 * inside NS/CNAME/PTR/SOA/MX (and the obsolete MD/MF/MB/MG/MR) rdata point back at earlier
 * identical suffixes (case-sensitively, so decoding gives back the same case); SRV targets are
 * written in full (RFC 2782) but read with pointers, as some servers send them that way.
 *
 * Record data: A/AAAA (class IN) as addresses, the name types above as names, MX, SOA, SRV and
 * TXT as fields, everything else as opaque bytes. A type whose rdata embeds compressed names but
 * that we keep opaque would be corrupted by re-encoding; the types RFC 3597 section 4 lists as
 * compressible are all decoded as names for that reason.
 *
 * EDNS: the OPT pseudo-record is lifted out of the additional section into `edns` (UDP size,
 * version, DO bit, the other flag bits, options kept opaque), and `rcode` is the full 12-bit
 * code. Encoding puts OPT last.
 *
 * Truncation: `encodeMessage(m, { maxSize })` cuts at a record boundary so the message fits
 * (pointers only point backwards, so a cut never breaks one), keeps the questions and OPT, and
 * sets TC when an answer or authority record had to go (additional records may be dropped
 * silently, RFC 2181 section 9).
 */
import { DnsFormatError } from "./errors.ts";

export const TYPE = {
  A: 1,
  NS: 2,
  MD: 3,
  MF: 4,
  CNAME: 5,
  SOA: 6,
  MB: 7,
  MG: 8,
  MR: 9,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  RRSIG: 46,
  NSEC: 47,
  NSEC3: 50,
  ANY: 255,
} as const;

export const CLASS_IN = 1;

export const RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

export const OPCODE_QUERY = 0;

/** The classic UDP limit without EDNS (RFC 1035 section 4.2.1). */
export const UDP_MIN_SIZE = 512;
export const MAX_POINTER_HOPS = 64;
export const MAX_NAME_WIRE = 255;
export const MAX_LABEL = 63;
const HEADER = 12;

export interface DnsQuestion {
  name: string;
  type: number;
  class: number;
}

export type DnsRData =
  /** A (4 bytes) or AAAA (16 bytes), class IN. */
  | { kind: "address"; address: Uint8Array }
  /** NS, CNAME, PTR, MD, MF, MB, MG, MR. */
  | { kind: "name"; name: string }
  | { kind: "mx"; preference: number; exchange: string }
  | {
      kind: "soa";
      mname: string;
      rname: string;
      serial: number;
      refresh: number;
      retry: number;
      expire: number;
      minimum: number;
    }
  | { kind: "srv"; priority: number; weight: number; port: number; target: string }
  /** Character-strings, each ≤ 255 bytes. */
  | { kind: "txt"; strings: Uint8Array[] }
  | { kind: "opaque"; bytes: Uint8Array };

export interface DnsRecord {
  name: string;
  type: number;
  class: number;
  ttl: number;
  data: DnsRData;
}

export interface EdnsOption {
  code: number;
  data: Uint8Array;
}

export interface Edns {
  /** The requestor's UDP payload size (the OPT record's class). */
  udpSize: number;
  version: number;
  /** DNSSEC OK. */
  dnssecOk: boolean;
  /** The other 15 flag bits, kept for a faithful round trip (must be zero per RFC 6891). */
  z: number;
  options: EdnsOption[];
}

export interface DnsMessage {
  id: number;
  qr: boolean;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  /** The reserved header bit. */
  z: boolean;
  ad: boolean;
  cd: boolean;
  /** Full response code: the header's 4 bits plus, with EDNS, 8 more from OPT. */
  rcode: number;
  questions: DnsQuestion[];
  answers: DnsRecord[];
  authorities: DnsRecord[];
  /** Without the OPT record, which is `edns`. */
  additionals: DnsRecord[];
  edns?: Edns | undefined;
}

export interface DnsHeader {
  id: number;
  qr: boolean;
  opcode: number;
  rd: boolean;
  rcode: number;
  qdcount: number;
  ancount: number;
  nscount: number;
  arcount: number;
}

const NAME_TYPES: ReadonlySet<number> = new Set([TYPE.NS, TYPE.MD, TYPE.MF, TYPE.CNAME, TYPE.MB, TYPE.MG, TYPE.MR, TYPE.PTR]);

// ---------------------------------------------------------------------------------------------
// Names

function escapeLabel(buf: Uint8Array, start: number, len: number): string {
  let s = "";
  for (let i = start; i < start + len; i++) {
    const b = buf[i]!;
    if (b === 0x2e || b === 0x5c) s += `\\${String.fromCharCode(b)}`;
    else if (b < 0x21 || b > 0x7e) s += `\\${String(b).padStart(3, "0")}`;
    else s += String.fromCharCode(b);
  }
  return s;
}

/** Label bytes -> presentation text (the inverse of nameToLabels; "." for none). */
export function labelsToName(labels: readonly Uint8Array[]): string {
  if (labels.length === 0) return ".";
  return labels.map((l) => escapeLabel(l, 0, l.length)).join(".");
}

/** Presentation text -> label bytes. Throws DnsFormatError for what DNS cannot carry. */
export function nameToLabels(name: string): Uint8Array[] {
  if (name === "." || name === "") return [];
  const labels: Uint8Array[] = [];
  let cur: number[] = [];
  let wire = 1;
  const finish = () => {
    if (cur.length === 0) throw new DnsFormatError(`empty label in name ${JSON.stringify(name)}`);
    if (cur.length > MAX_LABEL) throw new DnsFormatError(`label longer than ${MAX_LABEL} in name ${JSON.stringify(name)}`);
    wire += cur.length + 1;
    labels.push(Uint8Array.from(cur));
    cur = [];
  };
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === 0x2e) {
      // A trailing unescaped dot just marks the name as absolute.
      if (i === name.length - 1 && cur.length > 0) break;
      finish();
      continue;
    }
    if (c === 0x5c) {
      const d = name.slice(i + 1, i + 4);
      if (/^\d{3}$/.test(d)) {
        const n = Number(d);
        if (n > 255) throw new DnsFormatError(`escape \\${d} out of range in name ${JSON.stringify(name)}`);
        cur.push(n);
        i += 3;
        continue;
      }
      if (i + 1 >= name.length) throw new DnsFormatError(`dangling "\\" in name ${JSON.stringify(name)}`);
      const e = name.charCodeAt(++i);
      if (e > 0xff) throw new DnsFormatError(`non-Latin-1 character in name ${JSON.stringify(name)} (use punycode)`);
      cur.push(e);
      continue;
    }
    if (c > 0xff) throw new DnsFormatError(`non-Latin-1 character in name ${JSON.stringify(name)} (use punycode)`);
    cur.push(c);
  }
  finish();
  if (wire > MAX_NAME_WIRE) throw new DnsFormatError(`name longer than ${MAX_NAME_WIRE} octets: ${JSON.stringify(name)}`);
  return labels;
}

/** Without a trailing unescaped dot (an odd run of backslashes before it escapes it). */
function stripDot(name: string): string {
  if (name.length < 2 || !name.endsWith(".")) return name;
  let slashes = 0;
  for (let i = name.length - 2; i >= 0 && name[i] === "\\"; i--) slashes++;
  return slashes % 2 === 0 ? name.slice(0, -1) : name;
}

/** ASCII-lowercased presentation text without a trailing dot ("." for the root). */
export function canonicalName(name: string): string {
  let n = stripDot(name);
  if (n === "") n = ".";
  return n.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/** Names equal under DNS rules (ASCII case-insensitive). */
export function sameName(a: string, b: string): boolean {
  return canonicalName(a) === canonicalName(b);
}

/** Whether `name` is `zone` or below it. */
export function inZone(name: string, zone: string): boolean {
  const n = canonicalName(name);
  const z = canonicalName(zone);
  if (z === ".") return true;
  if (n === z) return true;
  if (!n.endsWith(`.${z}`)) return false;
  // The dot before the zone must be a separator, not an escaped "\.".
  return stripDot(n.slice(0, n.length - z.length)) !== n.slice(0, n.length - z.length);
}

/** Reads a possibly compressed name at `offset`; returns the text and the offset after it. */
function readName(buf: Uint8Array, offset: number): [string, number] {
  let pos = offset;
  let limit = offset;
  let next = -1;
  let hops = 0;
  let wire = 0;
  let text = "";
  for (;;) {
    if (pos >= buf.length) throw new DnsFormatError("name-past-end", pos);
    const len = buf[pos]!;
    if (len === 0) {
      wire += 1;
      if (next < 0) next = pos + 1;
      break;
    }
    const top = len & 0xc0;
    if (top === 0xc0) {
      if (pos + 1 >= buf.length) throw new DnsFormatError("pointer-past-end", pos);
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      // Strictly decreasing targets: no loop can form, whatever the message says.
      if (target >= limit) throw new DnsFormatError("pointer-not-backwards", pos);
      if (++hops > MAX_POINTER_HOPS) throw new DnsFormatError("too-many-pointers", pos);
      if (next < 0) next = pos + 2;
      limit = target;
      pos = target;
      continue;
    }
    if (top !== 0) throw new DnsFormatError("label-type", pos);
    if (pos + 1 + len > buf.length) throw new DnsFormatError("label-past-end", pos);
    wire += len + 1;
    if (wire + 1 > MAX_NAME_WIRE) throw new DnsFormatError("name-too-long", pos);
    text += (text === "" ? "" : ".") + escapeLabel(buf, pos + 1, len);
    pos += len + 1;
  }
  return [text === "" ? "." : text, next];
}

// ---------------------------------------------------------------------------------------------
// Decoding

function u16(buf: Uint8Array, at: number): number {
  return (buf[at]! << 8) | buf[at + 1]!;
}

function u32(buf: Uint8Array, at: number): number {
  return ((buf[at]! << 24) | (buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!) >>> 0;
}

function need(buf: Uint8Array, at: number, n: number, reason: string, end = buf.length): void {
  if (at + n > end) throw new DnsFormatError(reason, at);
}

/** The header, or null when fewer than 12 bytes arrived. Never throws. */
export function decodeHeader(buf: Uint8Array): DnsHeader | null {
  if (buf.length < HEADER) return null;
  const flags = u16(buf, 2);
  return {
    id: u16(buf, 0),
    qr: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 15,
    rd: (flags & 0x0100) !== 0,
    rcode: flags & 15,
    qdcount: u16(buf, 4),
    ancount: u16(buf, 6),
    nscount: u16(buf, 8),
    arcount: u16(buf, 10),
  };
}

function readRData(buf: Uint8Array, type: number, cls: number, start: number, end: number): DnsRData {
  const len = end - start;
  const nameIn = (at: number): [string, number] => {
    const [n, after] = readName(buf, at);
    if (after > end) throw new DnsFormatError("rdata-name-past-rdlength", at);
    return [n, after];
  };
  const exact = (at: number) => {
    if (at !== end) throw new DnsFormatError("rdata-length-mismatch", start);
  };
  if ((type === TYPE.A || type === TYPE.AAAA) && cls === CLASS_IN) {
    if (len !== (type === TYPE.A ? 4 : 16)) throw new DnsFormatError(type === TYPE.A ? "a-rdata-length" : "aaaa-rdata-length", start);
    return { kind: "address", address: buf.slice(start, end) };
  }
  if (NAME_TYPES.has(type)) {
    const [name, after] = nameIn(start);
    exact(after);
    return { kind: "name", name };
  }
  if (type === TYPE.MX) {
    need(buf, start, 2, "mx-rdata-short", end);
    const [exchange, after] = nameIn(start + 2);
    exact(after);
    return { kind: "mx", preference: u16(buf, start), exchange };
  }
  if (type === TYPE.SOA) {
    const [mname, a1] = nameIn(start);
    const [rname, a2] = nameIn(a1);
    need(buf, a2, 20, "soa-rdata-short", end);
    exact(a2 + 20);
    return {
      kind: "soa",
      mname,
      rname,
      serial: u32(buf, a2),
      refresh: u32(buf, a2 + 4),
      retry: u32(buf, a2 + 8),
      expire: u32(buf, a2 + 12),
      minimum: u32(buf, a2 + 16),
    };
  }
  if (type === TYPE.SRV) {
    need(buf, start, 6, "srv-rdata-short", end);
    const [target, after] = nameIn(start + 6);
    exact(after);
    return { kind: "srv", priority: u16(buf, start), weight: u16(buf, start + 2), port: u16(buf, start + 4), target };
  }
  if (type === TYPE.TXT) {
    const strings: Uint8Array[] = [];
    let at = start;
    while (at < end) {
      const n = buf[at]!;
      need(buf, at + 1, n, "txt-string-past-rdlength", end);
      strings.push(buf.slice(at + 1, at + 1 + n));
      at += 1 + n;
    }
    return { kind: "txt", strings };
  }
  return { kind: "opaque", bytes: buf.slice(start, end) };
}

function readEdnsOptions(buf: Uint8Array, start: number, end: number): EdnsOption[] {
  const options: EdnsOption[] = [];
  let at = start;
  while (at < end) {
    need(buf, at, 4, "opt-option-header-past-rdlength", end);
    const code = u16(buf, at);
    const len = u16(buf, at + 2);
    need(buf, at + 4, len, "opt-option-past-rdlength", end);
    options.push({ code, data: buf.slice(at + 4, at + 4 + len) });
    at += 4 + len;
  }
  return options;
}

/**
 * Decodes a whole message. Bytes after the last section are ignored (some middleboxes pad);
 * everything else that does not parse throws DnsFormatError.
 */
export function decodeMessage(buf: Uint8Array): DnsMessage {
  const h = decodeHeader(buf);
  if (h === null) throw new DnsFormatError("header-short", 0);
  const flags = u16(buf, 2);
  let pos = HEADER;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < h.qdcount; i++) {
    const [name, after] = readName(buf, pos);
    need(buf, after, 4, "question-past-end");
    questions.push({ name, type: u16(buf, after), class: u16(buf, after + 2) });
    pos = after + 4;
  }
  let opt: { cls: number; ttl: number; options: EdnsOption[] } | undefined;
  const section = (count: number, which: "answer" | "authority" | "additional"): DnsRecord[] => {
    const out: DnsRecord[] = [];
    for (let i = 0; i < count; i++) {
      const [name, after] = readName(buf, pos);
      need(buf, after, 10, "record-header-past-end");
      const type = u16(buf, after);
      const cls = u16(buf, after + 2);
      const ttl = u32(buf, after + 4);
      const rdlen = u16(buf, after + 8);
      const start = after + 10;
      need(buf, start, rdlen, "rdata-past-end");
      const end = start + rdlen;
      if (type === TYPE.OPT) {
        if (which !== "additional") throw new DnsFormatError("opt-outside-additional", after);
        if (name !== ".") throw new DnsFormatError("opt-name-not-root", after);
        if (opt !== undefined) throw new DnsFormatError("multiple-opt", after);
        opt = { cls, ttl, options: readEdnsOptions(buf, start, end) };
      } else {
        out.push({ name, type, class: cls, ttl, data: readRData(buf, type, cls, start, end) });
      }
      pos = end;
    }
    return out;
  };
  const answers = section(h.ancount, "answer");
  const authorities = section(h.nscount, "authority");
  const additionals = section(h.arcount, "additional");
  const msg: DnsMessage = {
    id: h.id,
    qr: h.qr,
    opcode: h.opcode,
    aa: (flags & 0x0400) !== 0,
    tc: (flags & 0x0200) !== 0,
    rd: h.rd,
    ra: (flags & 0x0080) !== 0,
    z: (flags & 0x0040) !== 0,
    ad: (flags & 0x0020) !== 0,
    cd: (flags & 0x0010) !== 0,
    rcode: h.rcode,
    questions,
    answers,
    authorities,
    additionals,
  };
  if (opt !== undefined) {
    msg.rcode |= (opt.ttl >>> 24) << 4;
    msg.edns = {
      udpSize: opt.cls,
      version: (opt.ttl >>> 16) & 0xff,
      dnssecOk: (opt.ttl & 0x8000) !== 0,
      z: opt.ttl & 0x7fff,
      options: opt.options,
    };
  }
  return msg;
}

// ---------------------------------------------------------------------------------------------
// Encoding

class Writer {
  buf = new Uint8Array(512);
  pos = 0;
  /** Suffix key (length-prefixed label bytes) -> offset, for compression. */
  private names = new Map<string, number>();

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }
  u8(v: number): void {
    this.room(1);
    this.buf[this.pos++] = v & 0xff;
  }
  u16(v: number): void {
    this.room(2);
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = v & 0xff;
  }
  u32(v: number): void {
    this.u16(v >>> 16);
    this.u16(v & 0xffff);
  }
  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  patch16(at: number, v: number): void {
    this.buf[at] = (v >>> 8) & 0xff;
    this.buf[at + 1] = v & 0xff;
  }
  name(text: string, compress: boolean): void {
    const labels = nameToLabels(text);
    const keys: string[] = [];
    let key = "";
    for (let i = labels.length - 1; i >= 0; i--) {
      key = String.fromCharCode(labels[i]!.length, ...labels[i]!) + key;
      keys[i] = key;
    }
    for (let i = 0; i < labels.length; i++) {
      const k = keys[i]!;
      if (compress) {
        const at = this.names.get(k);
        if (at !== undefined) {
          this.u16(0xc000 | at);
          return;
        }
        if (this.pos < 0x4000 && !this.names.has(k)) this.names.set(k, this.pos);
      }
      this.u8(labels[i]!.length);
      this.bytes(labels[i]!);
    }
    this.u8(0);
  }
}

function u16Field(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new DnsFormatError(`${what} ${v} is not a 16-bit value`);
  return v;
}

function u32Field(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new DnsFormatError(`${what} ${v} is not a 32-bit value`);
  return v;
}

function writeRData(w: Writer, r: DnsRecord): void {
  const d = r.data;
  switch (d.kind) {
    case "address":
      if (d.address.length !== (r.type === TYPE.A ? 4 : r.type === TYPE.AAAA ? 16 : -1)) {
        throw new DnsFormatError(`address of ${d.address.length} bytes in a type ${r.type} record`);
      }
      w.bytes(d.address);
      return;
    case "name":
      w.name(d.name, true);
      return;
    case "mx":
      w.u16(u16Field(d.preference, "MX preference"));
      w.name(d.exchange, true);
      return;
    case "soa":
      w.name(d.mname, true);
      w.name(d.rname, true);
      for (const [v, what] of [
        [d.serial, "SOA serial"],
        [d.refresh, "SOA refresh"],
        [d.retry, "SOA retry"],
        [d.expire, "SOA expire"],
        [d.minimum, "SOA minimum"],
      ] as const) {
        w.u32(u32Field(v, what));
      }
      return;
    case "srv":
      w.u16(u16Field(d.priority, "SRV priority"));
      w.u16(u16Field(d.weight, "SRV weight"));
      w.u16(u16Field(d.port, "SRV port"));
      w.name(d.target, false);
      return;
    case "txt":
      for (const s of d.strings) {
        if (s.length > 255) throw new DnsFormatError(`TXT string of ${s.length} bytes (at most 255)`);
        w.u8(s.length);
        w.bytes(s);
      }
      return;
    case "opaque":
      w.bytes(d.bytes);
      return;
  }
}

function writeRecord(w: Writer, r: DnsRecord): void {
  w.name(r.name, true);
  w.u16(u16Field(r.type, "record type"));
  w.u16(u16Field(r.class, "record class"));
  w.u32(u32Field(r.ttl, "TTL"));
  const lenAt = w.pos;
  w.u16(0);
  writeRData(w, r);
  const len = w.pos - lenAt - 2;
  if (len > 0xffff) throw new DnsFormatError(`rdata of ${len} bytes`);
  w.patch16(lenAt, len);
}

function ednsBytes(edns: Edns, rcode: number): Uint8Array {
  const w = new Writer();
  w.u8(0);
  w.u16(TYPE.OPT);
  w.u16(u16Field(edns.udpSize, "EDNS UDP size"));
  if (edns.version < 0 || edns.version > 255) throw new DnsFormatError(`EDNS version ${edns.version}`);
  w.u8(rcode >>> 4);
  w.u8(edns.version);
  w.u16((edns.dnssecOk ? 0x8000 : 0) | (edns.z & 0x7fff));
  const lenAt = w.pos;
  w.u16(0);
  for (const o of edns.options) {
    w.u16(u16Field(o.code, "EDNS option code"));
    w.u16(u16Field(o.data.length, "EDNS option length"));
    w.bytes(o.data);
  }
  const len = w.pos - lenAt - 2;
  if (len > 0xffff) throw new DnsFormatError(`OPT rdata of ${len} bytes`);
  w.patch16(lenAt, len);
  return w.buf.slice(0, w.pos);
}

export interface EncodeOptions {
  /** Cut records so the message fits (a UDP payload size); TC is set when answers were cut. */
  maxSize?: number;
}

export function encodeMessage(m: DnsMessage, options: EncodeOptions = {}): Uint8Array {
  const rcode = m.rcode;
  if (!Number.isInteger(rcode) || rcode < 0 || rcode > (m.edns ? 0xfff : 15)) {
    throw new DnsFormatError(`rcode ${rcode} needs ${m.edns ? "to be below 4096" : "EDNS"}`);
  }
  if (m.opcode < 0 || m.opcode > 15) throw new DnsFormatError(`opcode ${m.opcode}`);
  const w = new Writer();
  w.u16(u16Field(m.id, "id"));
  w.u16(0); // flags, set last: TC depends on truncation
  w.u16(u16Field(m.questions.length, "question count"));
  for (let i = 0; i < 3; i++) w.u16(0);
  for (const q of m.questions) {
    w.name(q.name, true);
    w.u16(u16Field(q.type, "question type"));
    w.u16(u16Field(q.class, "question class"));
  }
  const sections = [m.answers, m.authorities, m.additionals];
  const ends: number[] = [w.pos];
  for (const s of sections) {
    if (s.length > 0xffff) throw new DnsFormatError(`${s.length} records in one section`);
    for (const r of s) {
      writeRecord(w, r);
      ends.push(w.pos);
    }
  }
  const opt = m.edns ? ednsBytes(m.edns, rcode) : new Uint8Array(0);
  const total = m.answers.length + m.authorities.length + m.additionals.length;
  let kept = total;
  if (options.maxSize !== undefined) {
    while (kept > 0 && ends[kept]! + opt.length > options.maxSize) kept--;
  }
  let tc = m.tc;
  if (kept < m.answers.length + m.authorities.length) tc = true;
  const out = new Uint8Array(ends[kept]! + opt.length);
  out.set(w.buf.subarray(0, ends[kept]!));
  out.set(opt, ends[kept]!);
  const an = Math.min(kept, m.answers.length);
  const ns = Math.min(kept - an, m.authorities.length);
  const ar = kept - an - ns + (m.edns ? 1 : 0);
  const flags =
    (m.qr ? 0x8000 : 0) |
    ((m.opcode & 15) << 11) |
    (m.aa ? 0x0400 : 0) |
    (tc ? 0x0200 : 0) |
    (m.rd ? 0x0100 : 0) |
    (m.ra ? 0x0080 : 0) |
    (m.z ? 0x0040 : 0) |
    (m.ad ? 0x0020 : 0) |
    (m.cd ? 0x0010 : 0) |
    (rcode & 15);
  const put16 = (at: number, v: number) => {
    out[at] = v >>> 8;
    out[at + 1] = v & 0xff;
  };
  put16(2, flags);
  put16(6, an);
  put16(8, ns);
  put16(10, ar);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Helpers for servers

/** A query with one question, RD set, optionally with EDNS. */
export function makeQuery(id: number, name: string, type: number, edns?: Partial<Edns>): DnsMessage {
  return {
    id,
    qr: false,
    opcode: OPCODE_QUERY,
    aa: false,
    tc: false,
    rd: true,
    ra: false,
    z: false,
    ad: false,
    cd: false,
    rcode: 0,
    questions: [{ name, type, class: CLASS_IN }],
    answers: [],
    authorities: [],
    additionals: [],
    edns: edns === undefined ? undefined : { udpSize: 1232, version: 0, dnssecOk: false, z: 0, options: [], ...edns },
  };
}

/**
 * An empty response to `query` with `rcode`: same id, opcode, question and RD/CD bits, and an
 * OPT record (our own, without the query's options) when the query had one.
 */
export function makeResponse(query: DnsMessage, rcode: number, ednsUdpSize = 1232): DnsMessage {
  return {
    id: query.id,
    qr: true,
    opcode: query.opcode,
    aa: false,
    tc: false,
    rd: query.rd,
    ra: true,
    z: false,
    ad: false,
    cd: query.cd,
    rcode,
    questions: query.questions.map((q) => ({ ...q })),
    answers: [],
    authorities: [],
    additionals: [],
    edns: query.edns ? { udpSize: ednsUdpSize, version: 0, dnssecOk: query.edns.dnssecOk, z: 0, options: [] } : undefined,
  };
}

/** FORMERR for bytes that did not decode, or null when not even the header is readable. */
export function formErrFor(bytes: Uint8Array): Uint8Array | null {
  const h = decodeHeader(bytes);
  if (h === null || h.qr) return null;
  const out = new Uint8Array(HEADER);
  out[0] = h.id >>> 8;
  out[1] = h.id & 0xff;
  out[2] = 0x80 | (h.opcode << 3) | (h.rd ? 1 : 0);
  out[3] = 0x80 | RCODE.FORMERR;
  return out;
}

/** The largest response a UDP querier accepts: its EDNS size clamped to [512, 4096], else 512. */
export function udpLimit(query: DnsMessage): number {
  const size = query.edns?.udpSize ?? UDP_MIN_SIZE;
  return Math.min(4096, Math.max(UDP_MIN_SIZE, size));
}

export function rcodeName(rcode: number): string {
  for (const [k, v] of Object.entries(RCODE)) if (v === rcode) return k;
  return `RCODE${rcode}`;
}
