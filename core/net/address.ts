/**
 * @module core/net/address
 * IPv4/IPv6 addresses and CIDR prefixes: strict parsing, canonical text, containment.
 *
 * Parsing is hand-written rather than delegated to `ip-address`: that library accepts zone ids
 * and prefix lengths inside address text, and its messages are HTML fragments. We need a
 * reason that reads naturally after a JSON path ("profile.gateways[0].subnet: "10.0.0.1/33" is
 * not a valid IPv4 prefix: length 33 is out of range 0..32"). `ip-address` stays the reference
 * the tests check our canonical text against (test/net/address.property.test.ts).
 *
 * Canonical text follows RFC 5952 (lowercase, longest zero run compressed, first on a tie,
 * never a lone zero group), with the one exception RFC 5952 section 5 recommends and Go's
 * netip uses: IPv4-mapped addresses print as `::ffff:a.b.c.d`.
 *
 * Byte-length mistakes (a 5-byte "address") are programming errors and throw RangeError;
 * anything that came from text throws AddressError with a code.
 */
import { AddressError } from "../errors.ts";

export type Family = 4 | 6;

export interface IpAddress {
  readonly family: Family;
  readonly bytes: Uint8Array;
  /** Canonical text: dotted quad, or compressed lowercase IPv6. */
  readonly text: string;
}

export interface Prefix {
  readonly family: Family;
  /** The network address: every bit past `length` is zero. */
  readonly bytes: Uint8Array;
  readonly length: number;
  /** Canonical "address/length". */
  readonly text: string;
}

export interface ParseAddressOptions {
  /** Require this family; the other one is rejected, IPv4-mapped IPv6 included. */
  family?: Family;
}

export interface ParsePrefixOptions {
  family?: Family;
  /** Zero host bits instead of rejecting them (for input that is a host address plus mask). */
  mask?: boolean;
  /** Accept a bare address as a host prefix (/32 or /128). */
  allowBareAddress?: boolean;
}

type Noun = "address" | "prefix";

/** A parse failure inside this module: the reason, with the family it was judged as. */
class Rejection {
  constructor(
    readonly reason: string,
    readonly family?: Family,
  ) {}
}

function familyLabel(family: Family | undefined): string {
  return family === 4 ? "IPv4" : family === 6 ? "IPv6" : "IP";
}

/** Which family the text was probably meant as, so an unconstrained error names it. */
function guessFamily(text: string): Family | undefined {
  if (text.includes(":")) return 6;
  if (text.includes(".")) return 4;
  return undefined;
}

function reject(code: "E_ADDRESS_INVALID" | "E_PREFIX_INVALID", input: string, noun: Noun, r: Rejection): never {
  throw new AddressError(code, input, `is not a valid ${familyLabel(r.family)} ${noun}: ${r.reason}`);
}

function isDigits(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

function isHexDigits(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ok = (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
    if (!ok) return false;
  }
  return true;
}

/** Dotted-quad only: no octal, hex, short forms or leading zeros, which inet_aton reads differently. */
function parseIpv4Text(text: string, out: Uint8Array, offset: number): string | null {
  const parts = text.split(".");
  if (parts.length !== 4) return `it has ${parts.length} ${parts.length === 1 ? "octet" : "octets"}, expected 4`;
  for (let i = 0; i < 4; i++) {
    const part = parts[i]!;
    if (part.length === 0) return `octet ${i + 1} is empty`;
    if (!isDigits(part)) return `octet ${JSON.stringify(part)} is not a decimal number`;
    if (part.length > 1 && part.charCodeAt(0) === 48) return `octet ${JSON.stringify(part)} has a leading zero`;
    const n = part.length > 3 ? 256 : Number(part);
    if (n > 255) return `octet ${JSON.stringify(part)} is out of range 0..255`;
    out[offset + i] = n;
  }
  return null;
}

function countOccurrences(text: string, needle: string): number {
  let count = 0;
  for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length)) count++;
  return count;
}

/** RFC 4291 section 2.2 text forms, with an embedded dotted quad allowed only as the last 32 bits. */
function parseIpv6Text(text: string, out: Uint8Array): string | null {
  if (text.includes(":::")) return `it has ":::"`;
  const elisions = countOccurrences(text, "::");
  if (elisions > 1) return `it has more than one "::"`;
  const elided = elisions === 1;
  const cut = text.indexOf("::");
  const head = elided ? text.slice(0, cut) : text;
  const tail = elided ? text.slice(cut + 2) : "";
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === "" ? [] : tail.split(":");
  const all = elided ? [...headGroups, ...tailGroups] : headGroups;
  if (all.length > 0 && all[0] === "") return `it starts with a single ":"`;
  if (all.length > 0 && all[all.length - 1] === "") return `it ends with a single ":"`;

  // Each group as a 16-bit word; an embedded IPv4 tail counts as two.
  const words: number[] = [];
  for (let i = 0; i < all.length; i++) {
    const group = all[i]!;
    if (group.includes(".")) {
      // Only the low 32 bits may be dotted: "1.2.3.4::" would put them at the top.
      if (i !== all.length - 1 || (elided && tailGroups.length === 0)) {
        return `embedded IPv4 part ${JSON.stringify(group)} must come last`;
      }
      const v4 = new Uint8Array(4);
      const why = parseIpv4Text(group, v4, 0);
      if (why !== null) return `embedded IPv4 part ${JSON.stringify(group)}: ${why}`;
      words.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      continue;
    }
    if (group === "") return `it has an empty group`;
    if (!isHexDigits(group)) return `group ${JSON.stringify(group)} is not hexadecimal`;
    if (group.length > 4) return `group ${JSON.stringify(group)} has more than 4 hex digits`;
    words.push(parseInt(group, 16));
  }

  const headWords = elided ? words.length - countWords(tailGroups) : words.length;
  if (elided) {
    // "::" stands for at least one zero group.
    if (words.length > 7) return `it has ${words.length} groups besides "::", at most 7 fit`;
  } else if (words.length !== 8) {
    return `it has ${words.length} ${words.length === 1 ? "group" : "groups"}, expected 8`;
  }
  out.fill(0);
  for (let i = 0; i < headWords; i++) {
    out[2 * i] = words[i]! >> 8;
    out[2 * i + 1] = words[i]! & 255;
  }
  const tailStart = 8 - (words.length - headWords);
  for (let i = headWords; i < words.length; i++) {
    const at = tailStart + (i - headWords);
    out[2 * at] = words[i]! >> 8;
    out[2 * at + 1] = words[i]! & 255;
  }
  return null;
}

function countWords(groups: string[]): number {
  let n = 0;
  for (const g of groups) n += g.includes(".") ? 2 : 1;
  return n;
}

function isIpv4Mapped(bytes: Uint8Array): boolean {
  if (bytes.length !== 16) return false;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

/**
 * The shared core of parseAddress and the address half of parsePrefix: bytes of the address
 * or a Rejection naming the family the text was judged as.
 */
function parseAddressBytes(text: string, family: Family | undefined, noun: Noun): Uint8Array | Rejection {
  const judged = family ?? guessFamily(text);
  if (text.length === 0) return new Rejection("it is empty", judged);
  if (/\s/.test(text)) return new Rejection("it contains whitespace", judged);
  const zone = text.indexOf("%");
  if (zone >= 0) {
    return new Rejection(`it has a zone id (${JSON.stringify(text.slice(zone))}), which is not supported`, judged);
  }
  // Endpoints pasted where an address belongs: say so rather than report a bad group.
  if (text.startsWith("[")) return new Rejection("it has brackets (an endpoint?); give the address alone", family ?? 6);
  const port = /^\d+\.\d+\.\d+\.\d+(:\d*)$/.exec(text);
  if (port) return new Rejection(`it has a port (${JSON.stringify(port[1])}); give the address alone`, family ?? 4);
  if (text.includes(":")) {
    const bytes = new Uint8Array(16);
    const why = parseIpv6Text(text, bytes);
    if (family === 4) {
      if (why !== null) return new Rejection(`it looks like an IPv6 ${noun}`, 4);
      if (isIpv4Mapped(bytes) && noun === "address") {
        return new Rejection(`it is an IPv4-mapped IPv6 address (did you mean ${formatIpv4(bytes, 12)}?)`, 4);
      }
      return new Rejection(`it is an IPv6 ${noun}`, 4);
    }
    if (why !== null) return new Rejection(why, 6);
    if (family === 6 && isIpv4Mapped(bytes) && noun === "address") {
      return new Rejection(`it is an IPv4-mapped address (did you mean ${formatIpv4(bytes, 12)} as IPv4?)`, 6);
    }
    return bytes;
  }
  if (family === undefined && judged === undefined) {
    return new Rejection(`expected an IPv4 (a.b.c.d) or IPv6 (x:x::x) ${noun}`, undefined);
  }
  const bytes = new Uint8Array(4);
  const why = parseIpv4Text(text, bytes, 0);
  if (family === 6) {
    return new Rejection(why === null ? `it is an IPv4 ${noun}` : `it has no ":" separators`, 6);
  }
  if (why !== null) return new Rejection(why, 4);
  return bytes;
}

function freezeAddress(family: Family, bytes: Uint8Array): IpAddress {
  return Object.freeze({ family, bytes, text: formatAddress(bytes) });
}

/** Parse one address; throws AddressError E_ADDRESS_INVALID. A "/n" suffix is an error, not ignored. */
export function parseAddress(text: string, options: ParseAddressOptions = {}): IpAddress {
  if (typeof text !== "string") {
    reject("E_ADDRESS_INVALID", String(text), "address", new Rejection("it is not a string", options.family));
  }
  if (text.includes("/")) {
    const r = new Rejection(
      `it has a prefix length (${JSON.stringify(text.slice(text.indexOf("/")))}); expected a single address`,
      options.family ?? guessFamily(text),
    );
    reject("E_ADDRESS_INVALID", text, "address", r);
  }
  const bytes = parseAddressBytes(text, options.family, "address");
  if (bytes instanceof Rejection) reject("E_ADDRESS_INVALID", text, "address", bytes);
  return freezeAddress(bytes.length === 4 ? 4 : 6, bytes);
}

/** Zeroes every bit past `length`, in place. */
function maskInPlace(bytes: Uint8Array, length: number): void {
  for (let i = 0; i < bytes.length; i++) {
    const keep = length - 8 * i;
    if (keep >= 8) continue;
    bytes[i] = keep <= 0 ? 0 : bytes[i]! & (0xff << (8 - keep));
  }
}

function hasHostBits(bytes: Uint8Array, length: number): boolean {
  for (let i = 0; i < bytes.length; i++) {
    const keep = length - 8 * i;
    if (keep >= 8) continue;
    const hostMask = keep <= 0 ? 0xff : 0xff >> keep;
    if ((bytes[i]! & hostMask) !== 0) return true;
  }
  return false;
}

function makePrefix(bytes: Uint8Array, length: number): Prefix {
  const family: Family = bytes.length === 4 ? 4 : 6;
  return Object.freeze({ family, bytes, length, text: `${formatAddress(bytes)}/${length}` });
}

/**
 * Parse "address/length"; throws AddressError E_PREFIX_INVALID. Host bits are an error unless
 * `mask` is set, because "10.0.0.1/24" in a profile is usually a typo for a network.
 */
export function parsePrefix(text: string, options: ParsePrefixOptions = {}): Prefix {
  const { family } = options;
  if (typeof text !== "string") {
    reject("E_PREFIX_INVALID", String(text), "prefix", new Rejection("it is not a string", family));
  }
  const slash = text.indexOf("/");
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const judged = family ?? guessFamily(addressText);
  const fail = (reason: string, as: Family | undefined = judged): never =>
    reject("E_PREFIX_INVALID", text, "prefix", new Rejection(reason, as));

  if (text.length === 0) fail("it is empty");
  if (/\s/.test(text)) fail("it contains whitespace");
  if (slash >= 0 && text.indexOf("/", slash + 1) >= 0) fail(`it has more than one "/"`);
  if (slash === 0) fail(`the address before "/" is empty`);

  const parsed = parseAddressBytes(addressText, family, "prefix");
  if (parsed instanceof Rejection) {
    // A mapped network given where IPv4 is required: point at the IPv4 prefix it stands for.
    if (family === 4 && (slash >= 0 || options.allowBareAddress)) {
      const hint = mappedHint(addressText, slash >= 0 ? text.slice(slash + 1) : "128");
      if (hint !== null) fail(`it is an IPv4-mapped IPv6 prefix (did you mean ${hint}?)`, 4);
    }
    return reject("E_PREFIX_INVALID", text, "prefix", parsed);
  }
  const bytes = parsed;
  const as: Family = bytes.length === 4 ? 4 : 6;
  const max = bytes.length * 8;

  let length = max;
  if (slash < 0) {
    if (!options.allowBareAddress) {
      fail(`the prefix length is missing (did you mean ${formatAddress(bytes)}/${max}?)`, as);
    }
  } else {
    const lengthText = text.slice(slash + 1);
    if (lengthText.length === 0) fail("the prefix length is empty", as);
    if (!isDigits(lengthText)) fail(`length ${JSON.stringify(lengthText)} is not a decimal number`, as);
    if (lengthText.length > 1 && lengthText.charCodeAt(0) === 48) {
      fail(`length ${JSON.stringify(lengthText)} has a leading zero`, as);
    }
    length = lengthText.length > 3 ? Infinity : Number(lengthText);
    if (length > max) fail(`length ${lengthText} is out of range 0..${max}`, as);
  }

  if (family === 6 && length >= 96 && isIpv4Mapped(bytes)) {
    const v4 = bytes.slice(12);
    maskInPlace(v4, length - 96);
    fail(`it is an IPv4-mapped prefix (did you mean ${formatIpv4(v4, 0)}/${length - 96} as IPv4?)`, 6);
  }
  if (hasHostBits(bytes, length)) {
    if (!options.mask) {
      const network = bytes.slice();
      maskInPlace(network, length);
      fail(`host bits are set (did you mean ${formatAddress(network)}/${length}?)`, as);
    }
    maskInPlace(bytes, length);
  }
  return makePrefix(bytes, length);
}

/** "::ffff:10.0.0.0/104" -> "10.0.0.0/8", or null when the text is not a mapped prefix. */
function mappedHint(addressText: string, lengthText: string): string | null {
  if (!isDigits(lengthText) || (lengthText.length > 1 && lengthText.charCodeAt(0) === 48)) return null;
  const length = Number(lengthText);
  const bytes = parseAddressBytes(addressText, 6, "prefix");
  if (bytes instanceof Rejection || length < 96 || length > 128 || !isIpv4Mapped(bytes)) return null;
  const v4 = bytes.slice(12);
  maskInPlace(v4, length - 96);
  return `${formatIpv4(v4, 0)}/${length - 96}`;
}

function formatIpv4(bytes: Uint8Array, offset: number): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

function formatIpv6(bytes: Uint8Array): string {
  if (isIpv4Mapped(bytes)) return `::ffff:${formatIpv4(bytes, 12)}`;
  // Longest run of two or more zero groups; the first wins a tie (RFC 5952 section 4.2.3).
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (bytes[2 * i] === 0 && bytes[2 * i + 1] === 0) {
      let j = i;
      while (j < 8 && bytes[2 * j] === 0 && bytes[2 * j + 1] === 0) j++;
      if (j - i > bestLen) {
        bestStart = i;
        bestLen = j - i;
      }
      i = j;
    } else {
      i++;
    }
  }
  const group = (i: number) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16);
  if (bestStart < 0) {
    const parts: string[] = [];
    for (let i = 0; i < 8; i++) parts.push(group(i));
    return parts.join(":");
  }
  const head: string[] = [];
  const tail: string[] = [];
  for (let i = 0; i < bestStart; i++) head.push(group(i));
  for (let i = bestStart + bestLen; i < 8; i++) tail.push(group(i));
  return `${head.join(":")}::${tail.join(":")}`;
}

function checkAddressBytes(bytes: Uint8Array): void {
  if (!(bytes instanceof Uint8Array) || (bytes.length !== 4 && bytes.length !== 16)) {
    throw new RangeError(`an IP address is 4 or 16 bytes, got ${bytes?.length}`);
  }
}

/** Canonical text for 4 or 16 bytes. */
export function formatAddress(bytes: Uint8Array): string {
  checkAddressBytes(bytes);
  return bytes.length === 4 ? formatIpv4(bytes, 0) : formatIpv6(bytes);
}

/** An IpAddress over a copy of `bytes`, so later writes to the caller's buffer cannot change it. */
export function addressFromBytes(bytes: Uint8Array): IpAddress {
  checkAddressBytes(bytes);
  return freezeAddress(bytes.length === 4 ? 4 : 6, bytes.slice());
}

/**
 * A Prefix over a copy of `bytes`; throws AddressError E_PREFIX_INVALID when the length is out of
 * range or host bits are set (unless `mask`). For code that builds prefixes from numbers.
 */
export function prefixFromBytes(bytes: Uint8Array, length: number, options: { mask?: boolean } = {}): Prefix {
  checkAddressBytes(bytes);
  const max = bytes.length * 8;
  const copy = bytes.slice();
  const text = `${formatAddress(copy)}/${length}`;
  const as: Family = max === 32 ? 4 : 6;
  if (!Number.isInteger(length) || length < 0 || length > max) {
    reject("E_PREFIX_INVALID", text, "prefix", new Rejection(`length ${length} is out of range 0..${max}`, as));
  }
  if (hasHostBits(copy, length)) {
    if (!options.mask) {
      const network = copy.slice();
      maskInPlace(network, length);
      const r = new Rejection(`host bits are set (did you mean ${formatAddress(network)}/${length}?)`, as);
      reject("E_PREFIX_INVALID", text, "prefix", r);
    }
    maskInPlace(copy, length);
  }
  return makePrefix(copy, length);
}

/** Whether the first `length` bits of a and b agree (both at least `length` bits long). */
function samePrefixBits(a: Uint8Array, b: Uint8Array, length: number): boolean {
  const whole = length >> 3;
  for (let i = 0; i < whole; i++) if (a[i] !== b[i]) return false;
  const rest = length & 7;
  if (rest === 0) return true;
  const m = (0xff << (8 - rest)) & 0xff;
  return ((a[whole]! ^ b[whole]!) & m) === 0;
}

/** False across families: an IPv4-mapped IPv6 address is not inside an IPv4 prefix. */
export function prefixContainsAddress(prefix: Prefix, address: Uint8Array): boolean {
  if (address.length !== prefix.bytes.length) return false;
  return samePrefixBits(prefix.bytes, address, prefix.length);
}

/** inner ⊆ outer. */
export function prefixCovers(outer: Prefix, inner: Prefix): boolean {
  if (outer.family !== inner.family || outer.length > inner.length) return false;
  return samePrefixBits(outer.bytes, inner.bytes, outer.length);
}

/** Two prefixes overlap exactly when one covers the other. */
export function prefixesOverlap(a: Prefix, b: Prefix): boolean {
  if (a.family !== b.family) return false;
  return samePrefixBits(a.bytes, b.bytes, Math.min(a.length, b.length));
}

/** Big-endian uint32 of 4 bytes at `offset` (the layout of an IPv4 header's addresses). */
export function ipv4ToUint32(bytes: Uint8Array, offset = 0): number {
  if (offset < 0 || offset + 4 > bytes.length) {
    throw new RangeError(`need 4 bytes at offset ${offset}, buffer has ${bytes.length}`);
  }
  return ((bytes[offset]! << 24) | (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!) >>> 0;
}

/** Dotted quad of a uint32; a negative int32 from bitwise arithmetic is read as its unsigned value. */
export function uint32ToIpv4(n: number): string {
  if (!Number.isInteger(n) || n < -0x80000000 || n > 0xffffffff) {
    throw new RangeError(`${n} is not a 32-bit integer`);
  }
  const u = n >>> 0;
  return `${u >>> 24}.${(u >>> 16) & 255}.${(u >>> 8) & 255}.${u & 255}`;
}
