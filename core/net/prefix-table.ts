/**
 * @module core/net/prefix-table
 * Longest-prefix match over IPv4 and IPv6 prefixes: the routing table cryptokey routing runs
 * once per packet (dst -> peer on the way out, src -> peer check on the way in).
 *
 * IPv4 is the hot path and gets a multibit trie with 8-bit strides over one Int32Array, with
 * leaf pushing: every slot is either a child node or the answer for its whole range, so a
 * lookup is at most four array reads and no branches on prefix lengths. The cost moves to
 * updates, which rewrite every slot a prefix covers; tables change on netmap updates, not per
 * packet, so that is the right trade.
 *
 * IPv6 gets a path-compressed binary trie (the shape of wireguard-go's allowedips): 8-bit
 * strides over 128 bits would spend a 256-slot node per byte of every host route, and IPv6
 * tables here are small (one /128 per peer plus a few subnets).
 *
 * Slot encoding in the IPv4 trie: > 0 is the base index of a child node, < 0 is a leaf holding
 * entry id `-slot - 1`, 0 is "no prefix covers this". The root node is node 0 at base 0, so
 * no child base is ever 0.
 */
import { AddressError } from "../errors.ts";
import { ipv4ToUint32, prefixFromBytes, type Prefix } from "./address.ts";

const SLOTS = 256;
const INITIAL_V4_NODES = 4;
const NO_LENGTH = -1;

/** What lookupPrefix returns; the same frozen object until the prefix is replaced or removed. */
export interface PrefixEntry<T> {
  readonly prefix: Prefix;
  readonly value: T;
}

/** A node of the IPv6 trie: the network (`bits` long) as four big-endian words. */
class Node6 {
  c0: Node6 | null = null;
  c1: Node6 | null = null;
  constructor(
    readonly w0: number,
    readonly w1: number,
    readonly w2: number,
    readonly w3: number,
    readonly bits: number,
    public id: number,
    public parent: Node6 | null,
  ) {}
}

/** The top n bits of a 32-bit word set (n in 0..32). */
function highMask(n: number): number {
  return n === 0 ? 0 : (0xffffffff << (32 - n)) >>> 0;
}

function word(bytes: Uint8Array, k: number): number {
  const o = 4 * k;
  return ((bytes[o]! << 24) | (bytes[o + 1]! << 16) | (bytes[o + 2]! << 8) | bytes[o + 3]!) >>> 0;
}

function bitOf(words: ArrayLike<number>, i: number): number {
  return (words[i >> 5]! >>> (31 - (i & 31))) & 1;
}

function nodeWords(n: Node6): [number, number, number, number] {
  return [n.w0, n.w1, n.w2, n.w3];
}

/** Whether the first n.bits bits of the address words equal the node's network. */
function matches6(n: Node6, a0: number, a1: number, a2: number, a3: number): boolean {
  const b = n.bits;
  if (b < 32) return (a0 & highMask(b)) >>> 0 === n.w0;
  if (a0 !== n.w0) return false;
  if (b < 64) return (a1 & highMask(b - 32)) >>> 0 === n.w1;
  if (a1 !== n.w1) return false;
  if (b < 96) return (a2 & highMask(b - 64)) >>> 0 === n.w2;
  if (a2 !== n.w2) return false;
  if (b < 128) return (a3 & highMask(b - 96)) >>> 0 === n.w3;
  return a3 === n.w3;
}

/** Length of the common leading bits of two keys, at most `limit`. */
function commonBits(a: ArrayLike<number>, b: ArrayLike<number>, limit: number): number {
  for (let k = 0; k < 4; k++) {
    const x = (a[k]! ^ b[k]!) >>> 0;
    if (x !== 0) return Math.min(limit, 32 * k + Math.clz32(x));
  }
  return limit;
}

function maskWords(words: ArrayLike<number>, bits: number): [number, number, number, number] {
  const out: [number, number, number, number] = [0, 0, 0, 0];
  for (let k = 0; k < 4; k++) out[k] = (words[k]! & highMask(Math.max(0, Math.min(32, bits - 32 * k)))) >>> 0;
  return out;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return a.length - b.length;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

export class PrefixTable<T> {
  // Entries by id; ids are what the tries store. Freed ids are reused so arrays stay dense.
  private values: (T | undefined)[] = [];
  private entryById: (PrefixEntry<T> | undefined)[] = [];
  private freeIds: number[] = [];

  // IPv4 multibit trie (see the module comment for the slot encoding).
  private v4Slots = new Int32Array(INITIAL_V4_NODES * SLOTS);
  /** For each leaf slot, the length of the prefix it holds (NO_LENGTH for none). */
  private v4Lens = new Int8Array(INITIAL_V4_NODES * SLOTS).fill(NO_LENGTH);
  /** Per node: prefixes ending in it plus child nodes; a non-root node at 0 is freed. */
  private v4Counts = new Int32Array(INITIAL_V4_NODES);
  private v4NodeTop = 1;
  private v4FreeNodes: number[] = [];
  private v4Ids = new Map<number, number>();
  /** Prefixes per length, so a removal only probes lengths that exist. */
  private v4LengthCounts = new Int32Array(33);

  // IPv6 path-compressed trie.
  private v6Root: Node6 | null = null;
  private v6Ids = new Map<string, number>();
  private v6NodeCount = 0;

  get size(): number {
    return this.v4Ids.size + this.v6Ids.size;
  }

  /** Adds the prefix, or replaces its value when it is already present. */
  insert(prefix: Prefix, value: T): void {
    const p = normalize(prefix);
    if (p.family === 4) {
      const net = ipv4ToUint32(p.bytes);
      const key = v4Key(net, p.length);
      const existing = this.v4Ids.get(key);
      if (existing !== undefined) {
        this.setEntry(existing, this.entryById[existing]!.prefix, value);
        return;
      }
      const id = this.allocId(p, value);
      this.v4Ids.set(key, id);
      this.v4LengthCounts[p.length]!++;
      this.v4Insert(net, p.length, id);
    } else {
      const key = v6Key(p);
      const existing = this.v6Ids.get(key);
      if (existing !== undefined) {
        this.setEntry(existing, this.entryById[existing]!.prefix, value);
        return;
      }
      const id = this.allocId(p, value);
      this.v6Ids.set(key, id);
      this.v6Insert([word(p.bytes, 0), word(p.bytes, 1), word(p.bytes, 2), word(p.bytes, 3)], p.length, id);
    }
  }

  /** Removes the exact prefix; false when it was not present. */
  remove(prefix: Prefix): boolean {
    const p = normalize(prefix);
    if (p.family === 4) {
      const net = ipv4ToUint32(p.bytes);
      const key = v4Key(net, p.length);
      const id = this.v4Ids.get(key);
      if (id === undefined) return false;
      this.v4Ids.delete(key);
      this.v4LengthCounts[p.length]!--;
      this.v4Remove(net, p.length);
      this.freeId(id);
      return true;
    }
    const key = v6Key(p);
    const id = this.v6Ids.get(key);
    if (id === undefined) return false;
    this.v6Ids.delete(key);
    this.v6Remove([word(p.bytes, 0), word(p.bytes, 1), word(p.bytes, 2), word(p.bytes, 3)], p.length);
    this.freeId(id);
    return true;
  }

  /** The value stored for exactly this prefix (no longest-prefix matching). */
  get(prefix: Prefix): T | undefined {
    const p = normalize(prefix);
    const id = p.family === 4 ? this.v4Ids.get(v4Key(ipv4ToUint32(p.bytes), p.length)) : this.v6Ids.get(v6Key(p));
    return id === undefined ? undefined : this.values[id];
  }

  /** Longest-prefix match for a 4- or 16-byte address. IPv4-mapped IPv6 is not unmapped. */
  lookup(address: Uint8Array): T | undefined {
    const id = this.findId(address);
    return id < 0 ? undefined : this.values[id];
  }

  /** Like lookup, with the matching prefix. */
  lookupPrefix(address: Uint8Array): PrefixEntry<T> | undefined {
    const id = this.findId(address);
    return id < 0 ? undefined : this.entryById[id];
  }

  /**
   * Longest-prefix match for an IPv4 address as a uint32 (a negative int32 from bitwise
   * arithmetic is read as its unsigned value). The per-packet path: no allocation.
   */
  lookupV4(addr: number): T | undefined {
    const slots = this.v4Slots;
    let s = slots[addr >>> 24]!;
    if (s > 0) {
      s = slots[s + ((addr >>> 16) & 255)]!;
      if (s > 0) {
        s = slots[s + ((addr >>> 8) & 255)]!;
        if (s > 0) s = slots[s + (addr & 255)]!;
      }
    }
    // A leaf is -(id + 1) and "no match" is 0, so -s - 1 is the id or -1.
    return s < 0 ? this.values[-s - 1] : undefined;
  }

  /** Every entry, IPv4 before IPv6, then by network address, then by length. */
  *entries(): IterableIterator<[Prefix, T]> {
    const live: PrefixEntry<T>[] = [];
    for (const e of this.entryById) if (e !== undefined) live.push(e);
    live.sort((a, b) => compareBytes(a.prefix.bytes, b.prefix.bytes) || a.prefix.length - b.prefix.length);
    for (const e of live) yield [e.prefix, e.value];
  }

  [Symbol.iterator](): IterableIterator<[Prefix, T]> {
    return this.entries();
  }

  clear(): void {
    this.values = [];
    this.entryById = [];
    this.freeIds = [];
    this.v4Slots = new Int32Array(INITIAL_V4_NODES * SLOTS);
    this.v4Lens = new Int8Array(INITIAL_V4_NODES * SLOTS).fill(NO_LENGTH);
    this.v4Counts = new Int32Array(INITIAL_V4_NODES);
    this.v4NodeTop = 1;
    this.v4FreeNodes = [];
    this.v4Ids.clear();
    this.v4LengthCounts.fill(0);
    this.v6Root = null;
    this.v6Ids.clear();
    this.v6NodeCount = 0;
  }

  /** Trie sizes, for tests (nodes are given back on removal) and benches (memory per table). */
  memoryStats(): { v4Nodes: number; v6Nodes: number; v4Bytes: number } {
    return {
      v4Nodes: this.v4NodeTop - this.v4FreeNodes.length,
      v6Nodes: this.v6NodeCount,
      v4Bytes: this.v4Slots.byteLength + this.v4Lens.byteLength + this.v4Counts.byteLength,
    };
  }

  private findId(address: Uint8Array): number {
    if (address.length === 4) {
      const addr = ipv4ToUint32(address);
      const slots = this.v4Slots;
      let s = slots[addr >>> 24]!;
      if (s > 0) {
        s = slots[s + ((addr >>> 16) & 255)]!;
        if (s > 0) {
          s = slots[s + ((addr >>> 8) & 255)]!;
          if (s > 0) s = slots[s + (addr & 255)]!;
        }
      }
      return s < 0 ? -s - 1 : -1;
    }
    if (address.length === 16) return this.v6Find(address);
    throw new RangeError(`an IP address is 4 or 16 bytes, got ${address.length}`);
  }

  private allocId(prefix: Prefix, value: T): number {
    const id = this.freeIds.pop() ?? this.values.length;
    this.setEntry(id, prefix, value);
    return id;
  }

  private setEntry(id: number, prefix: Prefix, value: T): void {
    this.values[id] = value;
    this.entryById[id] = Object.freeze({ prefix, value });
  }

  private freeId(id: number): void {
    this.values[id] = undefined;
    this.entryById[id] = undefined;
    this.freeIds.push(id);
  }

  // ---- IPv4 ----

  /** A node whose every slot holds `leaf`/`len`: what the parent slot answered before it split. */
  private v4AllocNode(leaf: number, len: number): number {
    let node = this.v4FreeNodes.pop();
    if (node === undefined) {
      node = this.v4NodeTop++;
      if (node >= this.v4Counts.length) this.v4Grow();
    }
    const base = node * SLOTS;
    this.v4Slots.fill(leaf, base, base + SLOTS);
    this.v4Lens.fill(len, base, base + SLOTS);
    this.v4Counts[node] = 0;
    return node;
  }

  private v4Grow(): void {
    const nodes = this.v4Counts.length * 2;
    const slots = new Int32Array(nodes * SLOTS);
    slots.set(this.v4Slots);
    const lens = new Int8Array(nodes * SLOTS).fill(NO_LENGTH);
    lens.set(this.v4Lens);
    const counts = new Int32Array(nodes);
    counts.set(this.v4Counts);
    this.v4Slots = slots;
    this.v4Lens = lens;
    this.v4Counts = counts;
  }

  /** The node a prefix of this length ends in: level 0 holds /0../8, level k holds /(8k+1)../(8k+8). */
  private static v4Level(len: number): number {
    return len === 0 ? 0 : (len - 1) >> 3;
  }

  private v4Insert(net: number, len: number, id: number): void {
    const level = PrefixTable.v4Level(len);
    let node = 0;
    for (let k = 0; k < level; k++) {
      const i = node * SLOTS + ((net >>> (24 - 8 * k)) & 255);
      let s = this.v4Slots[i]!;
      if (s <= 0) {
        const child = this.v4AllocNode(s, this.v4Lens[i]!);
        s = child * SLOTS;
        this.v4Slots[i] = s;
        this.v4Lens[i] = NO_LENGTH;
        this.v4Counts[node]!++;
      }
      node = s / SLOTS;
    }
    this.v4Counts[node]!++;
    const leaf = -(id + 1);
    const [start, end] = v4Range(node, net, len, level);
    for (let i = start; i < end; i++) this.v4Push(i, leaf, len);
  }

  /** Give the slot (and everything below it) to a prefix of length `len` where nothing longer holds it. */
  private v4Push(i: number, leaf: number, len: number): void {
    const s = this.v4Slots[i]!;
    if (s > 0) {
      for (let j = s; j < s + SLOTS; j++) this.v4Push(j, leaf, len);
    } else if (this.v4Lens[i]! < len) {
      this.v4Slots[i] = leaf;
      this.v4Lens[i] = len;
    }
  }

  private v4Remove(net: number, len: number): void {
    const level = PrefixTable.v4Level(len);
    // Slot in the parent that points at the node of each level, for freeing on the way up.
    const parentSlot = [-1, -1, -1, -1];
    let node = 0;
    for (let k = 0; k < level; k++) {
      const i = node * SLOTS + ((net >>> (24 - 8 * k)) & 255);
      parentSlot[k + 1] = i;
      node = this.v4Slots[i]! / SLOTS;
    }

    // Every address that matched the removed prefix now matches the longest shorter prefix
    // covering it, and that one prefix covers them all.
    let leaf = 0;
    let leafLen = NO_LENGTH;
    for (let l = len - 1; l >= 0; l--) {
      if (this.v4LengthCounts[l] === 0) continue;
      const id = this.v4Ids.get(v4Key((net & highMask(l)) >>> 0, l));
      if (id !== undefined) {
        leaf = -(id + 1);
        leafLen = l;
        break;
      }
    }
    const [start, end] = v4Range(node, net, len, level);
    for (let i = start; i < end; i++) this.v4Replace(i, len, leaf, leafLen);

    this.v4Counts[node]!--;
    for (let k = level; k > 0 && this.v4Counts[node] === 0; k--) {
      // No prefixes and no children left: every slot holds the same inherited answer.
      const up = parentSlot[k]!;
      this.v4Slots[up] = this.v4Slots[node * SLOTS]!;
      this.v4Lens[up] = this.v4Lens[node * SLOTS]!;
      this.v4FreeNodes.push(node);
      node = Math.floor(up / SLOTS);
      this.v4Counts[node]!--;
    }
  }

  private v4Replace(i: number, len: number, leaf: number, leafLen: number): void {
    const s = this.v4Slots[i]!;
    if (s > 0) {
      for (let j = s; j < s + SLOTS; j++) this.v4Replace(j, len, leaf, leafLen);
    } else if (this.v4Lens[i] === len) {
      this.v4Slots[i] = leaf;
      this.v4Lens[i] = leafLen;
    }
  }

  // ---- IPv6 ----

  private v6Find(a: Uint8Array): number {
    const a0 = word(a, 0);
    const a1 = word(a, 1);
    const a2 = word(a, 2);
    const a3 = word(a, 3);
    let best = -1;
    let n = this.v6Root;
    while (n !== null && matches6(n, a0, a1, a2, a3)) {
      if (n.id >= 0) best = n.id;
      const b = n.bits;
      if (b === 128) break;
      const w = b < 32 ? a0 : b < 64 ? a1 : b < 96 ? a2 : a3;
      n = (w >>> (31 - (b & 31))) & 1 ? n.c1 : n.c0;
    }
    return best;
  }

  private v6NewNode(key: ArrayLike<number>, bits: number, id: number, parent: Node6 | null): Node6 {
    const m = maskWords(key, bits);
    this.v6NodeCount++;
    return new Node6(m[0], m[1], m[2], m[3], bits, id, parent);
  }

  /** Points whatever pointed at `old` (its parent's child link, or the root) at `next`. */
  private v6Relink(old: Node6, next: Node6 | null): void {
    const parent = old.parent;
    if (next !== null) next.parent = parent;
    if (parent === null) this.v6Root = next;
    else if (parent.c0 === old) parent.c0 = next;
    else parent.c1 = next;
  }

  private v6Insert(key: number[], bits: number, id: number): void {
    if (this.v6Root === null) {
      this.v6Root = this.v6NewNode(key, bits, id, null);
      return;
    }
    let n = this.v6Root;
    for (;;) {
      const nk = nodeWords(n);
      const common = commonBits(nk, key, Math.min(n.bits, bits));
      if (common === n.bits) {
        if (n.bits === bits) {
          n.id = id;
          return;
        }
        const child = bitOf(key, n.bits) ? n.c1 : n.c0;
        if (child === null) {
          const leaf = this.v6NewNode(key, bits, id, n);
          if (bitOf(key, n.bits)) n.c1 = leaf;
          else n.c0 = leaf;
          return;
        }
        n = child;
        continue;
      }
      // The new prefix and n part ways at bit `common` (or the new one ends there).
      const top =
        common === bits ? this.v6NewNode(key, bits, id, null) : this.v6NewNode(key, common, -1, null);
      this.v6Relink(n, top);
      n.parent = top;
      if (bitOf(nk, common)) top.c1 = n;
      else top.c0 = n;
      if (common !== bits) {
        const leaf = this.v6NewNode(key, bits, id, top);
        if (bitOf(key, common)) top.c1 = leaf;
        else top.c0 = leaf;
      }
      return;
    }
  }

  private v6Remove(key: number[], bits: number): void {
    let n = this.v6Root;
    while (n !== null && n.bits < bits) n = bitOf(key, n.bits) ? n.c1 : n.c0;
    // The id map said it is there, so n is the node for exactly this prefix.
    if (n === null || n.bits !== bits) throw new Error("PrefixTable: IPv6 trie out of step with its index");
    n.id = -1;
    // Keep the invariant that a node without a value has two children.
    let cur: Node6 | null = n;
    while (cur !== null && cur.id < 0 && (cur.c0 === null || cur.c1 === null)) {
      const child: Node6 | null = cur.c0 ?? cur.c1;
      const parent: Node6 | null = cur.parent;
      this.v6Relink(cur, child);
      this.v6NodeCount--;
      // A spliced node leaves its parent with two children still; only a dropped leaf may not.
      cur = child === null ? parent : null;
    }
  }
}

/** A validated copy the table can keep: callers' Uint8Arrays may be reused after insert. */
function normalize(prefix: Prefix): Prefix {
  const p = prefixFromBytes(prefix.bytes, prefix.length);
  if (p.family !== prefix.family) {
    throw new AddressError(
      "E_PREFIX_INVALID",
      p.text,
      `is not a valid IPv${prefix.family} prefix: it has ${prefix.bytes.length} bytes, which is IPv${p.family}`,
    );
  }
  return p;
}

function v4Key(net: number, len: number): number {
  return net * 64 + len;
}

function v6Key(p: Prefix): string {
  return p.text;
}

/** Slot range [start, end) in `node` covered by the prefix: 2^(8 - bits used in this node) slots. */
function v4Range(node: number, net: number, len: number, level: number): [number, number] {
  const used = len - 8 * level;
  const span = 1 << (8 - used);
  const start = node * SLOTS + (((net >>> (24 - 8 * level)) & 255) & ~(span - 1) & 255);
  return [start, start + span];
}
