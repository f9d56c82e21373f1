/**
 * @module core/dataplane/flow-table
 * The connection table under flow-tracker.ts: the gateway's (which flows the overlay side opened,
 * so that a packet from a LAN is forwarded into the tunnel only when it answers one: DESIGN.md
 * "How a packet travels", step 5) and, with inbound ACLs, the device's own (which flows it opened
 * toward its peers). A fixed-capacity open-addressing hash table in typed arrays: linear probing over a
 * power-of-two slot count at most half full, backward-shift deletion (no tombstones), a keyed
 * hash of the tuple (the seed comes from the Device's random source, so a client cannot pick
 * ports that collide), and no allocation on find, upsert or sweep.
 *
 * A key is ten 32-bit words, filled by the caller into `key` before each call:
 *   [0] meta: protocol | KEY_V6 | KEY_FRAGMENT     [1..4] source address words
 *   [5..8] destination address words               [9] sourcePort << 16 | destinationPort
 * (IPv4 addresses sit in the last word of the four; KEY_FRAGMENT entries hold a fragment id in
 * word 9.) Each entry also keeps an expiry (ms, from the injected clock) and one state byte the
 * caller owns (flow-tracker.ts keeps TCP/UDP flags there).
 *
 * When the table is full, a new flow is refused (the caller drops the packet as
 * `flow-table-full`) rather than evicting a live one: eviction would let one client flush the
 * others' flows. Expired entries are reclaimed by `sweep` (the Device's tick runs a bounded slice
 * of the table each time) and, when an insert finds the table full, by one full sweep at most
 * every `fullSweepIntervalMs` so that a flood of refused flows cannot make every packet O(size).
 * Expired entries still stored are never returned by `find`.
 */

export const KEY_WORDS = 10;
export const KEY_V6 = 0x100;
export const KEY_FRAGMENT = 0x200;
/** Marks a stored slot in the meta word (a real meta never has it). */
const OCCUPIED = 0x80000000;

export interface FlowTableOptions {
  /** Entries held at most (default 65,536). */
  maxEntries?: number;
  /** Hash seed; give a random one in production. */
  seed?: number;
  /** Minimum ms between two full sweeps forced by a full table (default 1000; 0 = every time). */
  fullSweepIntervalMs?: number;
}

export const DEFAULT_MAX_FLOWS = 65_536;

function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finish(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class FlowTable {
  /** Scratch key the caller fills before find/upsert (see the module comment for the layout). */
  readonly key = new Uint32Array(KEY_WORDS);
  readonly maxEntries: number;
  readonly capacity: number;
  private readonly mask: number;
  private readonly seed: number;
  private readonly fullSweepIntervalMs: number;
  private readonly keys: Uint32Array;
  private readonly hashes: Uint32Array;
  private readonly expiry: Float64Array;
  private readonly states: Uint8Array;
  private count = 0;
  private cursor = 0;
  private nextFullSweepMs = Number.NEGATIVE_INFINITY;

  constructor(options: FlowTableOptions = {}) {
    const max = options.maxEntries ?? DEFAULT_MAX_FLOWS;
    if (!Number.isInteger(max) || max < 1 || max > 1 << 24) {
      throw new RangeError(`flow table maxEntries must be an integer 1..16777216, got ${max}`);
    }
    this.maxEntries = max;
    let cap = 16;
    while (cap < max * 2) cap *= 2;
    this.capacity = cap;
    this.mask = cap - 1;
    this.seed = (options.seed ?? 0x9747b28c) | 0;
    this.fullSweepIntervalMs = options.fullSweepIntervalMs ?? 1000;
    this.keys = new Uint32Array(cap * KEY_WORDS);
    this.hashes = new Uint32Array(cap);
    this.expiry = new Float64Array(cap);
    this.states = new Uint8Array(cap);
  }

  /** Entries stored, expired ones not yet swept included. */
  get size(): number {
    return this.count;
  }

  private hashKey(): number {
    const k = this.key;
    let h = this.seed;
    for (let i = 0; i < KEY_WORDS; i++) h = mix(h, k[i]!);
    return finish(h ^ KEY_WORDS);
  }

  private slotMatches(slot: number): boolean {
    const keys = this.keys;
    const k = this.key;
    const base = slot * KEY_WORDS;
    if (keys[base] !== ((k[0]! | OCCUPIED) >>> 0)) return false;
    for (let i = 1; i < KEY_WORDS; i++) if (keys[base + i] !== k[i]) return false;
    return true;
  }

  /** The slot holding `key`, expired or not; -1 when absent. */
  private locate(hash: number): number {
    const keys = this.keys;
    let slot = hash & this.mask;
    for (;;) {
      if (keys[slot * KEY_WORDS] === 0) return -1;
      if (this.hashes[slot] === hash && this.slotMatches(slot)) return slot;
      slot = (slot + 1) & this.mask;
    }
  }

  /** The slot of the live entry for `key`, or -1 when it is absent or expired at `now`. */
  find(now: number): number {
    const slot = this.locate(this.hashKey());
    return slot >= 0 && this.expiry[slot]! > now ? slot : -1;
  }

  /**
   * Refreshes the entry for `key` (live or expired-but-stored) or adds it, with this expiry and
   * state; returns its slot, or -1 when the table is full of live entries.
   */
  upsert(now: number, expiresAt: number, state: number): number {
    const hash = this.hashKey();
    let slot = this.locate(hash);
    if (slot < 0) {
      if (this.count >= this.maxEntries) {
        if (now < this.nextFullSweepMs) return -1;
        this.nextFullSweepMs = now + this.fullSweepIntervalMs;
        this.sweep(now, this.capacity);
        if (this.count >= this.maxEntries) return -1;
      }
      slot = hash & this.mask;
      while (this.keys[slot * KEY_WORDS] !== 0) slot = (slot + 1) & this.mask;
      const base = slot * KEY_WORDS;
      const k = this.key;
      this.keys[base] = (k[0]! | OCCUPIED) >>> 0;
      for (let i = 1; i < KEY_WORDS; i++) this.keys[base + i] = k[i]!;
      this.hashes[slot] = hash;
      this.count++;
    }
    this.expiry[slot] = expiresAt;
    this.states[slot] = state;
    return slot;
  }

  /** Removes the entry for `key`; false when absent. */
  delete(): boolean {
    const slot = this.locate(this.hashKey());
    if (slot < 0) return false;
    this.removeSlot(slot);
    return true;
  }

  state(slot: number): number {
    return this.states[slot]!;
  }

  expiresAt(slot: number): number {
    return this.expiry[slot]!;
  }

  update(slot: number, expiresAt: number, state: number): void {
    this.expiry[slot] = expiresAt;
    this.states[slot] = state;
  }

  /**
   * Examines up to `maxSlots` slots from where the last sweep stopped, removing entries expired at
   * `now`; returns how many it removed.
   */
  sweep(now: number, maxSlots: number): number {
    let removed = 0;
    const n = Math.min(maxSlots, this.capacity);
    let slot = this.cursor;
    for (let i = 0; i < n; i++) {
      // A removal may shift a later entry into this slot: look at it again before moving on.
      while (this.keys[slot * KEY_WORDS] !== 0 && this.expiry[slot]! <= now) {
        this.removeSlot(slot);
        removed++;
      }
      slot = (slot + 1) & this.mask;
    }
    this.cursor = slot;
    return removed;
  }

  /** Empties the table. */
  clear(): void {
    this.keys.fill(0);
    this.count = 0;
    this.cursor = 0;
  }

  /**
   * Visits every stored entry with its key words loaded into `key`, removing those `keep` says
   * no to; returns how many it removed. (An entry shifted by a removal may be visited twice.)
   */
  retain(keep: (slot: number, expiresAt: number, state: number) => boolean): number {
    const keys = this.keys;
    let removed = 0;
    for (let slot = 0; slot < this.capacity; slot++) {
      for (;;) {
        const base = slot * KEY_WORDS;
        if (keys[base] === 0) break;
        this.key[0] = (keys[base]! & ~OCCUPIED) >>> 0;
        for (let i = 1; i < KEY_WORDS; i++) this.key[i] = keys[base + i]!;
        if (keep(slot, this.expiry[slot]!, this.states[slot]!)) break;
        this.removeSlot(slot);
        removed++;
      }
    }
    return removed;
  }

  private removeSlot(slot: number): void {
    const keys = this.keys;
    const mask = this.mask;
    let hole = slot;
    let j = slot;
    for (;;) {
      j = (j + 1) & mask;
      if (keys[j * KEY_WORDS] === 0) break;
      const home = this.hashes[j]! & mask;
      // The entry at j may move into the hole only if its home is not cyclically in (hole, j].
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      keys.copyWithin(hole * KEY_WORDS, j * KEY_WORDS, j * KEY_WORDS + KEY_WORDS);
      this.hashes[hole] = this.hashes[j]!;
      this.expiry[hole] = this.expiry[j]!;
      this.states[hole] = this.states[j]!;
      hole = j;
    }
    keys[hole * KEY_WORDS] = 0;
    this.count--;
  }

  /** Live entries at `now` (O(capacity); tests and stats). */
  countLive(now: number): number {
    let n = 0;
    for (let slot = 0; slot < this.capacity; slot++) {
      if (this.keys[slot * KEY_WORDS] !== 0 && this.expiry[slot]! > now) n++;
    }
    return n;
  }
}
