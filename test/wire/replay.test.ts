/**
 * @module test/wire/replay
 * The replay filter: the kernel / wireguard-go replay cases ported as vectors, and a property test
 * against a set-based oracle (including counters across the 2^32 and 2^53 boundaries).
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { REJECT_AFTER_MESSAGES } from "../../core/wire/constants.ts";
import { REPLAY_WINDOW_SIZE, ReplayFilter } from "../../core/wire/replay.ts";

const W = BigInt(REPLAY_WINDOW_SIZE);
const LIMIT = REJECT_AFTER_MESSAGES;

describe("ReplayFilter: wireguard-go replay_test.go cases", () => {
  test("window size is 8128", () => {
    expect(REPLAY_WINDOW_SIZE).toBe(8128);
  });

  test("the 34 numbered cases", () => {
    const f = new ReplayFilter();
    const T_LIM = W + 1n;
    const cases: [bigint, boolean][] = [
      [0n, true], [1n, true], [1n, false], [9n, true], [8n, true], [7n, true], [7n, false],
      [T_LIM, true], [T_LIM - 1n, true], [T_LIM - 1n, false], [T_LIM - 2n, true], [2n, true],
      [2n, false], [T_LIM + 16n, true], [3n, false], [T_LIM + 16n, false], [T_LIM * 4n, true],
      [T_LIM * 4n - (T_LIM - 1n), true], [10n, false], [T_LIM * 4n - T_LIM, false],
      [T_LIM * 4n - (T_LIM + 1n), false], [T_LIM * 4n - (T_LIM - 2n), true],
      [T_LIM * 4n + 1n - T_LIM, false], [0n, false], [LIMIT, false], [LIMIT - 1n, true],
      [LIMIT, false], [LIMIT - 1n, false], [LIMIT - 2n, true], [LIMIT + 1n, false],
      [LIMIT + 2n, false], [LIMIT - 2n, false], [LIMIT - 3n, true], [0n, false],
    ];
    cases.forEach(([n, expected], i) => {
      expect({ case: i + 1, n, ok: f.checkBig(n) }).toEqual({ case: i + 1, n, ok: expected });
    });
  });

  test("bulk 1: 1..W then 0", () => {
    const f = new ReplayFilter();
    for (let i = 1; i <= REPLAY_WINDOW_SIZE; i++) expect(f.checkNumber(i)).toBe(true);
    expect(f.checkNumber(0)).toBe(true);
    expect(f.checkNumber(0)).toBe(false);
  });

  test("bulk 2: 2..W+1 then 1, 0 fall out", () => {
    const f = new ReplayFilter();
    for (let i = 2; i <= REPLAY_WINDOW_SIZE + 1; i++) expect(f.checkNumber(i)).toBe(true);
    expect(f.checkNumber(1)).toBe(true);
    expect(f.checkNumber(0)).toBe(false);
  });

  test("bulk 3: W+1 down to 1", () => {
    const f = new ReplayFilter();
    for (let i = REPLAY_WINDOW_SIZE + 1; i > 0; i--) expect(f.checkNumber(i)).toBe(true);
  });

  test("bulk 4: W+2 down to 2, then 0 is too old", () => {
    const f = new ReplayFilter();
    for (let i = REPLAY_WINDOW_SIZE + 2; i > 1; i--) expect(f.checkNumber(i)).toBe(true);
    expect(f.checkNumber(0)).toBe(false);
  });

  test("bulk 5: W down to 1, W+1, then 0 is too old", () => {
    const f = new ReplayFilter();
    for (let i = REPLAY_WINDOW_SIZE; i > 0; i--) expect(f.checkNumber(i)).toBe(true);
    expect(f.checkNumber(REPLAY_WINDOW_SIZE + 1)).toBe(true);
    expect(f.checkNumber(0)).toBe(false);
  });

  test("bulk 6: W down to 1, 0, then W+1", () => {
    const f = new ReplayFilter();
    for (let i = REPLAY_WINDOW_SIZE; i > 0; i--) expect(f.checkNumber(i)).toBe(true);
    expect(f.checkNumber(0)).toBe(true);
    expect(f.checkNumber(REPLAY_WINDOW_SIZE + 1)).toBe(true);
  });

  test("reset forgets everything", () => {
    const f = new ReplayFilter();
    expect(f.checkNumber(5)).toBe(true);
    expect(f.checkNumber(100000)).toBe(true);
    f.reset();
    expect(f.checkNumber(5)).toBe(true);
    expect(f.checkNumber(5)).toBe(false);
  });

  test("counters across the 2^32 boundary", () => {
    const f = new ReplayFilter();
    const base = 1n << 32n;
    expect(f.checkBig(base - 5n)).toBe(true);
    expect(f.checkBig(base + 3n)).toBe(true);
    expect(f.checkBig(base - 5n)).toBe(false);
    expect(f.checkBig(base - 4n)).toBe(true);
    expect(f.checkBig(base + 3n - W)).toBe(true);
    expect(f.checkBig(base + 3n - W - 1n)).toBe(false);
  });
});

/** The oracle: accepted iff below the limit, not seen, and not more than W behind the highest seen. */
class SetOracle {
  private seen = new Set<bigint>();
  private last = 0n;
  check(c: bigint): boolean {
    if (c >= LIMIT) return false;
    if (c <= this.last && this.last - c > W) return false;
    if (this.seen.has(c)) return false;
    this.seen.add(c);
    if (c > this.last) this.last = c;
    return true;
  }
}

describe("ReplayFilter against a set oracle", () => {
  const bases = [0n, (1n << 32n) - 3000n, (1n << 53n) - 5000n, LIMIT - 20000n];
  test("random walks agree with the oracle", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...bases),
        fc.array(
          fc.oneof(
            fc.bigInt({ min: -200n, max: 200n }),
            fc.bigInt({ min: -(W + 70n), max: W + 70n }),
            fc.bigInt({ min: -100000n, max: 100000n }),
          ),
          { minLength: 1, maxLength: 300 },
        ),
        (base, steps) => {
          const filter = new ReplayFilter();
          const oracle = new SetOracle();
          let pos = base;
          for (const step of steps) {
            pos += step;
            if (pos < 0n) pos = -pos;
            const counter = pos;
            if (filter.checkBig(counter) !== oracle.check(counter)) return false;
          }
          return true;
        },
      ),
      { numRuns: 300, seed: 0x5eed },
    );
  });

  test("re-offering every accepted counter is always rejected", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 40000 }), { minLength: 1, maxLength: 500 }), (counters) => {
        const f = new ReplayFilter();
        const accepted = counters.filter((c) => f.checkNumber(c));
        return accepted.every((c) => !f.checkNumber(c));
      }),
      { numRuns: 200, seed: 7 },
    );
  });
});
