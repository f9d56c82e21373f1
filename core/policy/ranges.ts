/**
 * @module core/policy/ranges
 * Address ranges and port ranges: the set algebra the policy compiler needs and prefixes alone
 * cannot express. A subnet filter "10.0.0.10-10.0.0.20" intersected with a granted subnet, or a
 * granted 0.0.0.0/0 minus the overlay network, is a range, not a prefix; routes need prefixes
 * again, so ranges decompose back into CIDR blocks (rangeToPrefixes).
 *
 * Addresses are bigints so IPv4 and IPv6 share one code path; a range never mixes families.
 * Texts come back canonical: a range that is exactly one prefix prints as "a/len", a single
 * address as "a/32" or "a/128", anything else as "lo-hi".
 */
import { formatAddress, parseAddress, parsePrefix, type Family, type Prefix } from "../net/address.ts";

export interface AddrRange {
  readonly family: Family;
  readonly lo: bigint;
  readonly hi: bigint;
}

export interface PortRange {
  readonly lo: number;
  readonly hi: number;
}

export const ALL_PORTS: PortRange = { lo: 0, hi: 65535 };

export function familyBits(family: Family): number {
  return family === 4 ? 32 : 128;
}

export function bytesToBigint(bytes: Uint8Array): bigint {
  if (bytes.length === 4) {
    return BigInt(((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0);
  }
  let n = 0n;
  for (let i = 0; i < bytes.length; i++) n = (n << 8n) | BigInt(bytes[i]!);
  return n;
}

export function bigintToBytes(n: bigint, family: Family): Uint8Array {
  const len = family === 4 ? 4 : 16;
  const out = new Uint8Array(len);
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(n & 255n);
    n >>= 8n;
  }
  return out;
}

export function prefixToRange(prefix: Prefix): AddrRange {
  const bits = BigInt(familyBits(prefix.family) - prefix.length);
  const lo = bytesToBigint(prefix.bytes);
  return { family: prefix.family, lo, hi: lo + (1n << bits) - 1n };
}

/** A parsed address as a one-address range. */
export function addressRange(text: string): AddrRange {
  const a = parseAddress(text);
  const n = bytesToBigint(a.bytes);
  return { family: a.family, lo: n, hi: n };
}

/**
 * A destination as written in a subnet filter: one address, "lo-hi", or a prefix. Throws
 * AddressError on bad text and RangeError when lo > hi or the families differ (callers turn
 * both into PolicyError with a path).
 */
export function parseDestination(text: string): AddrRange {
  const dash = text.indexOf("-");
  if (dash >= 0) {
    const lo = addressRange(text.slice(0, dash));
    const hi = addressRange(text.slice(dash + 1));
    if (lo.family !== hi.family) throw new RangeError(`${JSON.stringify(text)} mixes IPv4 and IPv6`);
    if (lo.lo > hi.lo) throw new RangeError(`${JSON.stringify(text)} starts after it ends`);
    return { family: lo.family, lo: lo.lo, hi: hi.lo };
  }
  if (text.includes("/")) return prefixToRange(parsePrefix(text));
  return addressRange(text);
}

export function rangeContains(r: AddrRange, family: Family, n: bigint): boolean {
  return r.family === family && r.lo <= n && n <= r.hi;
}

export function rangeCovers(outer: AddrRange, inner: AddrRange): boolean {
  return outer.family === inner.family && outer.lo <= inner.lo && inner.hi <= outer.hi;
}

export function intersectRanges(a: AddrRange, b: AddrRange): AddrRange | null {
  if (a.family !== b.family) return null;
  const lo = a.lo > b.lo ? a.lo : b.lo;
  const hi = a.hi < b.hi ? a.hi : b.hi;
  return lo <= hi ? { family: a.family, lo, hi } : null;
}

/** a minus b: zero, one or two ranges. */
export function subtractRange(a: AddrRange, b: AddrRange): AddrRange[] {
  if (a.family !== b.family || b.hi < a.lo || b.lo > a.hi) return [a];
  const out: AddrRange[] = [];
  if (b.lo > a.lo) out.push({ family: a.family, lo: a.lo, hi: b.lo - 1n });
  if (b.hi < a.hi) out.push({ family: a.family, lo: b.hi + 1n, hi: a.hi });
  return out;
}

/** Every range of `from` minus every range of `minus`. */
export function subtractAll(from: readonly AddrRange[], minus: readonly AddrRange[]): AddrRange[] {
  let current = from.slice();
  for (const m of minus) {
    const next: AddrRange[] = [];
    for (const r of current) for (const piece of subtractRange(r, m)) next.push(piece);
    current = next;
  }
  return current;
}

/** The CIDR blocks that exactly cover a range, as "a/len" texts, from the low end. */
export function rangeToPrefixes(r: AddrRange): string[] {
  return rangeToBlocks(r).map(rangeText);
}

/** Canonical text: "a/len" when the range is one prefix, "lo-hi" otherwise. */
export function rangeText(r: AddrRange): string {
  const size = r.hi - r.lo + 1n;
  if ((size & (size - 1n)) === 0n && (r.lo & (size - 1n)) === 0n) {
    let hostBits = 0;
    while (1n << BigInt(hostBits) < size) hostBits++;
    return `${formatAddress(bigintToBytes(r.lo, r.family))}/${familyBits(r.family) - hostBits}`;
  }
  return `${formatAddress(bigintToBytes(r.lo, r.family))}-${formatAddress(bigintToBytes(r.hi, r.family))}`;
}

/** "80" or "1000-2000" -> a PortRange; RangeError on anything else. */
export function parsePorts(text: string): PortRange {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  if (!m) throw new RangeError(`${JSON.stringify(text)} is not a port or a port range like 1000-2000`);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo > 65535 || hi > 65535) throw new RangeError(`${JSON.stringify(text)} is out of range 0..65535`);
  if (lo > hi) throw new RangeError(`${JSON.stringify(text)} starts after it ends`);
  return { lo, hi };
}

export function portsText(p: PortRange): string {
  return p.lo === p.hi ? String(p.lo) : `${p.lo}-${p.hi}`;
}

/** The CIDR blocks that exactly cover a range, as ranges (each prints as a prefix via rangeText). */
export function rangeToBlocks(r: AddrRange): AddrRange[] {
  const bits = familyBits(r.family);
  const out: AddrRange[] = [];
  let lo = r.lo;
  while (lo <= r.hi) {
    let size = 0;
    while (size < bits) {
      const block = 1n << BigInt(size + 1);
      if ((lo & (block - 1n)) !== 0n || lo + block - 1n > r.hi) break;
      size++;
    }
    const hi = lo + (1n << BigInt(size)) - 1n;
    out.push({ family: r.family, lo, hi });
    lo = hi + 1n;
  }
  return out;
}
