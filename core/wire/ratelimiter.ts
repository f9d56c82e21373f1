/**
 * @module core/wire/ratelimiter
 * Per-source token bucket for handshake messages (wireguard-go ratelimiter): 20 per second with a
 * burst of 5 per source address; entries idle for more than a second are collected. The clock is
 * injected. Consulted only while the device is under load, as in WireGuard.
 */

export interface RateLimiterOptions {
  now: () => number;
  packetsPerSecond?: number;
  burst?: number;
}

interface Entry {
  tokens: number;
  lastMs: number;
}

const GC_AFTER_MS = 1000;

export class RateLimiter {
  private readonly table = new Map<string, Entry>();
  private readonly now: () => number;
  /** Cost of one packet, in milliseconds of refill. */
  private readonly cost: number;
  private readonly maxTokens: number;
  private lastGcMs = Number.NEGATIVE_INFINITY;

  constructor(options: RateLimiterOptions) {
    this.now = options.now;
    this.cost = 1000 / (options.packetsPerSecond ?? 20);
    this.maxTokens = this.cost * (options.burst ?? 5);
  }

  /** Whether one more handshake message from `source` (an address) may be processed now. */
  allow(source: string): boolean {
    const now = this.now();
    if (now - this.lastGcMs > GC_AFTER_MS) this.collect(now);
    const entry = this.table.get(source);
    if (entry === undefined) {
      this.table.set(source, { tokens: this.maxTokens - this.cost, lastMs: now });
      return true;
    }
    entry.tokens = Math.min(this.maxTokens, entry.tokens + Math.max(0, now - entry.lastMs));
    entry.lastMs = now;
    if (entry.tokens >= this.cost) {
      entry.tokens -= this.cost;
      return true;
    }
    return false;
  }

  /** Drops entries idle for more than a second. */
  collect(now = this.now()): void {
    this.lastGcMs = now;
    for (const [key, entry] of this.table) {
      if (now - entry.lastMs > GC_AFTER_MS) this.table.delete(key);
    }
  }

  get size(): number {
    return this.table.size;
  }
}
