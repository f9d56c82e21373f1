/**
 * @module core/wire/tai64n
 * TAI64N timestamps as WireGuard puts them in an initiation: 8 bytes big-endian seconds
 * (2^62 + 10 + Unix seconds) then 4 bytes big-endian nanoseconds, the low 24 bits of the
 * nanoseconds cleared (wireguard-go's whitener, so a timestamp does not leak a fine clock).
 * A responder accepts an initiation only when its timestamp is strictly greater than the last.
 */
export const TIMESTAMP_SIZE = 12;
const WHITENER_MASK = 0x1000000 - 1;
const TWO32 = 2 ** 32;

/** The TAI64N label for a wall-clock time in milliseconds since the Unix epoch. */
export function tai64n(nowMs: number, out = new Uint8Array(TIMESTAMP_SIZE)): Uint8Array {
  const secs = Math.floor(nowMs / 1000);
  const nanos = ((nowMs - secs * 1000) * 1_000_000) & ~WHITENER_MASK;
  const total = 10 + secs; // the low 64-bit word part beyond 2^62
  const hi = 0x40000000 + Math.floor(total / TWO32);
  const lo = total % TWO32;
  const view = new DataView(out.buffer, out.byteOffset, TIMESTAMP_SIZE);
  view.setUint32(0, hi);
  view.setUint32(4, lo);
  view.setUint32(8, nanos >>> 0);
  return out;
}

/** Negative, zero or positive as `a` is before, equal to or after `b` (bytewise big-endian). */
export function compareTimestamps(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < TIMESTAMP_SIZE; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/** Milliseconds since the Unix epoch for a TAI64N label (for logs and tests). */
export function tai64nToMs(t: Uint8Array): number {
  const view = new DataView(t.buffer, t.byteOffset, TIMESTAMP_SIZE);
  const secs = (view.getUint32(0) - 0x40000000) * TWO32 + view.getUint32(4) - 10;
  return secs * 1000 + Math.floor(view.getUint32(8) / 1_000_000);
}
