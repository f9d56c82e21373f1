/**
 * @module core/wire/replay
 * The anti-replay sliding window of RFC 6479 as WireGuard uses it: a ring of 128 64-bit blocks,
 * a window of (128 - 1) × 64 = 8128 counters. Counters are 64-bit; JS numbers are exact only
 * to 2^53, so the filter works on the (hi, lo) 32-bit halves read straight from the packet and
 * never allocates. Blocks are stored as pairs of 32-bit words.
 */
import { REJECT_AFTER_MESSAGES_HI, REJECT_AFTER_MESSAGES_LO } from "./constants.ts";

const BLOCK_BITS_LOG = 6;
const BLOCK_BITS = 1 << BLOCK_BITS_LOG;
const RING_BLOCKS = 1 << 7;
export const REPLAY_WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS;
const BLOCK_MASK = RING_BLOCKS - 1;
const TWO32 = 2 ** 32;

export class ReplayFilter {
  private lastHi = 0;
  private lastLo = 0;
  /** ring[2*i] holds bits 0..31 of block i, ring[2*i+1] bits 32..63. */
  private readonly ring = new Uint32Array(RING_BLOCKS * 2);

  reset(): void {
    this.lastHi = 0;
    this.lastLo = 0;
    this.ring.fill(0);
  }

  /**
   * Checks a counter and marks it seen. Returns false for a replay, for a counter behind the
   * window, and for any counter at or above REJECT_AFTER_MESSAGES. Call it only after the
   * packet authenticated, so forged counters cannot move the window.
   */
  check(hi: number, lo: number): boolean {
    hi >>>= 0;
    lo >>>= 0;
    if (hi > REJECT_AFTER_MESSAGES_HI || (hi === REJECT_AFTER_MESSAGES_HI && lo >= REJECT_AFTER_MESSAGES_LO)) {
      return false;
    }
    const ring = this.ring;
    const lastHi = this.lastHi;
    const lastLo = this.lastLo;
    if (hi > lastHi || (hi === lastHi && lo > lastLo)) {
      // Move the window forward, clearing the blocks we pass (at most the whole ring).
      let diffBlocks: number;
      if (hi - lastHi > 1) {
        diffBlocks = RING_BLOCKS;
      } else {
        // counter - last fits in 33 bits here: exact in a double.
        const diff = (hi - lastHi) * TWO32 + lo - lastLo;
        diffBlocks = (diff - (lo & (BLOCK_BITS - 1)) + (lastLo & (BLOCK_BITS - 1))) / BLOCK_BITS;
        if (diffBlocks > RING_BLOCKS) diffBlocks = RING_BLOCKS;
      }
      const current = (lastLo >>> BLOCK_BITS_LOG) & BLOCK_MASK;
      for (let i = 1; i <= diffBlocks; i++) {
        const b = (current + i) & BLOCK_MASK;
        ring[2 * b] = 0;
        ring[2 * b + 1] = 0;
      }
      this.lastHi = hi;
      this.lastLo = lo;
    } else {
      // Behind or equal to last: reject when further back than the window.
      const behindHi = lastHi - hi;
      if (behindHi > 1) return false;
      const behind = behindHi * TWO32 + lastLo - lo;
      if (behind > REPLAY_WINDOW_SIZE) return false;
    }
    const block = (lo >>> BLOCK_BITS_LOG) & BLOCK_MASK;
    const bit = lo & (BLOCK_BITS - 1);
    const word = 2 * block + (bit >>> 5);
    const mask = (1 << (bit & 31)) >>> 0;
    const old = ring[word]!;
    if ((old & mask) !== 0) return false;
    ring[word] = (old | mask) >>> 0;
    return true;
  }

  /** The same check for a counter given as a bigint (tests, tools). */
  checkBig(counter: bigint): boolean {
    if (counter < 0n || counter >= 1n << 64n) return false;
    return this.check(Number(counter >> 32n), Number(counter & 0xffffffffn));
  }

  /** The same check for a counter given as a number below 2^53. */
  checkNumber(counter: number): boolean {
    return this.check(Math.floor(counter / TWO32), counter >>> 0);
  }
}
