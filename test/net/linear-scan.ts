/**
 * @module test/net/linear-scan
 * The reference PrefixTable is checked against (and benched against): a list scanned in full
 * for every lookup, comparing bits one at a time. Deliberately naive so it is obviously right;
 * it shares no code with core/net.
 */

export interface OracleEntry<T> {
  readonly bytes: Uint8Array;
  readonly length: number;
  readonly value: T;
}

function bit(bytes: Uint8Array, i: number): number {
  return (bytes[i >> 3]! >> (7 - (i & 7))) & 1;
}

function sameBits(a: Uint8Array, b: Uint8Array, n: number): boolean {
  for (let i = 0; i < n; i++) if (bit(a, i) !== bit(b, i)) return false;
  return true;
}

export class LinearScanTable<T> {
  private list: OracleEntry<T>[] = [];

  get size(): number {
    return this.list.length;
  }

  insert(bytes: Uint8Array, length: number, value: T): void {
    const i = this.indexOf(bytes, length);
    const entry = { bytes: bytes.slice(), length, value };
    if (i >= 0) this.list[i] = entry;
    else this.list.push(entry);
  }

  remove(bytes: Uint8Array, length: number): boolean {
    const i = this.indexOf(bytes, length);
    if (i < 0) return false;
    this.list.splice(i, 1);
    return true;
  }

  get(bytes: Uint8Array, length: number): T | undefined {
    const i = this.indexOf(bytes, length);
    return i < 0 ? undefined : this.list[i]!.value;
  }

  lookupEntry(address: Uint8Array): OracleEntry<T> | undefined {
    let best: OracleEntry<T> | undefined;
    for (const e of this.list) {
      if (e.bytes.length !== address.length) continue;
      if (best !== undefined && e.length <= best.length) continue;
      if (sameBits(e.bytes, address, e.length)) best = e;
    }
    return best;
  }

  lookup(address: Uint8Array): T | undefined {
    return this.lookupEntry(address)?.value;
  }

  all(): readonly OracleEntry<T>[] {
    return this.list;
  }

  private indexOf(bytes: Uint8Array, length: number): number {
    return this.list.findIndex(
      (e) => e.length === length && e.bytes.length === bytes.length && e.bytes.every((b, i) => b === bytes[i]),
    );
  }
}

/**
 * The same scan over IPv4 uint32s with precomputed masks: the fairest linear scan for the
 * bench, so the ratio measures the data structure and not the bit-by-bit loop above.
 */
export class LinearScanV4<T> {
  private nets: number[] = [];
  private masks: number[] = [];
  private lengths: number[] = [];
  private values: T[] = [];

  insert(net: number, length: number, value: T): void {
    const mask = length === 0 ? 0 : (0xffffffff << (32 - length)) >>> 0;
    this.nets.push((net & mask) >>> 0);
    this.masks.push(mask);
    this.lengths.push(length);
    this.values.push(value);
  }

  lookupV4(addr: number): T | undefined {
    let best = -1;
    let bestLen = -1;
    for (let i = 0; i < this.nets.length; i++) {
      if ((addr & this.masks[i]!) >>> 0 === this.nets[i] && this.lengths[i]! > bestLen) {
        best = i;
        bestLen = this.lengths[i]!;
      }
    }
    return best < 0 ? undefined : this.values[best];
  }
}
