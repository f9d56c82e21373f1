/**
 * @module test/wire/helpers
 * Deterministic sources for wire and dataplane tests: a seeded byte source and a fake clock.
 */
import type { RandomSource } from "../../core/wire/crypto.ts";

/** A seeded deterministic byte source (xorshift32); never for real keys. */
export function seededRandom(seed: number): RandomSource {
  let s = seed >>> 0 || 0x9e3779b9;
  return (length: number) => {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      out[i] = s & 0xff;
    }
    return out;
  };
}

/** A clock that only moves when told. Starts at a fixed wall-clock time (ms since the epoch). */
export function fakeClock(startMs = 1_700_000_000_000) {
  let t = startMs;
  return {
    now: () => t,
    advance(ms: number) {
      t += ms;
    },
    set(ms: number) {
      t = ms;
    },
  };
}
