/**
 * @module core/wire/timers
 * WireGuard's per-peer timer state machine (whitepaper §6, wireguard-go timers.go) as plain
 * deadlines over an injected clock. Events (data sent, handshake initiated, ...) arm or disarm
 * deadlines; `takeExpired(now)` reports which fired so the Device performs the actions (send a
 * keepalive, retry a handshake, zero keys). Constants are overridable so tests and e2e runs can
 * shorten them (e.g. rekeyAfterTimeMs = 3000).
 */

export interface TimerConfig {
  /** REKEY_AFTER_TIME: the initiator rekeys a session this old (120 s). */
  rekeyAfterTimeMs: number;
  /** REJECT_AFTER_TIME: a session this old is never used again (180 s). */
  rejectAfterTimeMs: number;
  /** REKEY_ATTEMPT_TIME: how long handshake retries go on (90 s). */
  rekeyAttemptTimeMs: number;
  /** REKEY_TIMEOUT: wait before retrying an unanswered initiation (5 s), plus jitter. */
  rekeyTimeoutMs: number;
  /** Upper bound of the random jitter added to REKEY_TIMEOUT (334 ms). */
  rekeyTimeoutJitterMaxMs: number;
  /** KEEPALIVE_TIMEOUT: send an empty packet if we received data but sent nothing (10 s). */
  keepaliveTimeoutMs: number;
  /** REKEY_AFTER_MESSAGES (2^60). */
  rekeyAfterMessages: number;
  /** The send-counter limit; REJECT_AFTER_MESSAGES is beyond 2^53, so JS sends stop at 2^53 - 1. */
  rejectAfterMessages: number;
}

export const DEFAULT_TIMERS: Readonly<TimerConfig> = Object.freeze({
  rekeyAfterTimeMs: 120_000,
  rejectAfterTimeMs: 180_000,
  rekeyAttemptTimeMs: 90_000,
  rekeyTimeoutMs: 5_000,
  rekeyTimeoutJitterMaxMs: 334,
  keepaliveTimeoutMs: 10_000,
  rekeyAfterMessages: 2 ** 60,
  rejectAfterMessages: 2 ** 53 - 1,
});

export function resolveTimers(override?: Partial<TimerConfig>): TimerConfig {
  const merged = { ...DEFAULT_TIMERS, ...(override ?? {}) };
  for (const [k, v] of Object.entries(merged)) {
    if (typeof v !== "number" || !(v >= 0)) throw new RangeError(`timers.${k} must be a number >= 0, got ${String(v)}`);
  }
  return merged;
}

/** MAX_TIMER_HANDSHAKES: retries before giving up (90 / 5 = 18). */
export function maxTimerHandshakes(config: TimerConfig): number {
  return Math.floor(config.rekeyAttemptTimeMs / Math.max(1, config.rekeyTimeoutMs));
}

/** Bits reported by `takeExpired`. */
export const TIMER_RETRANSMIT_HANDSHAKE = 1;
export const TIMER_SEND_KEEPALIVE = 2;
export const TIMER_NEW_HANDSHAKE = 4;
export const TIMER_ZERO_KEY_MATERIAL = 8;
export const TIMER_PERSISTENT_KEEPALIVE = 16;

const OFF = Number.POSITIVE_INFINITY;

export class PeerTimers {
  retransmitHandshakeAt = OFF;
  sendKeepaliveAt = OFF;
  newHandshakeAt = OFF;
  zeroKeyMaterialAt = OFF;
  persistentKeepaliveAt = OFF;
  handshakeAttempts = 0;
  needAnotherKeepalive = false;
  sentLastMinuteHandshake = false;
  /** 0 disables persistent keepalive. */
  persistentKeepaliveMs = 0;

  constructor(
    readonly config: TimerConfig,
    private readonly now: () => number,
    /** Uniform jitter in [0, max) milliseconds; injected for determinism. */
    private readonly jitter: (maxMs: number) => number,
  ) {}

  /** After an authenticated data packet is sent. */
  dataSent(): void {
    if (this.newHandshakeAt === OFF) {
      this.newHandshakeAt =
        this.now() + this.config.keepaliveTimeoutMs + this.config.rekeyTimeoutMs + this.jitter(this.config.rekeyTimeoutJitterMaxMs);
    }
  }

  /** After an authenticated data packet is received. */
  dataReceived(): void {
    if (this.sendKeepaliveAt === OFF) this.sendKeepaliveAt = this.now() + this.config.keepaliveTimeoutMs;
    else this.needAnotherKeepalive = true;
  }

  /** After any authenticated packet (keepalive, data, handshake) is sent. */
  anyAuthenticatedPacketSent(): void {
    this.sendKeepaliveAt = OFF;
  }

  /** After any authenticated packet is received. */
  anyAuthenticatedPacketReceived(): void {
    this.newHandshakeAt = OFF;
  }

  /** Before any authenticated packet is sent, or after one is received. */
  anyAuthenticatedPacketTraversal(): void {
    if (this.persistentKeepaliveMs > 0) this.persistentKeepaliveAt = this.now() + this.persistentKeepaliveMs;
  }

  /** After an initiation is sent. */
  handshakeInitiated(): void {
    this.retransmitHandshakeAt = this.now() + this.config.rekeyTimeoutMs + this.jitter(this.config.rekeyTimeoutJitterMaxMs);
  }

  /** After a response is consumed, or the first data on a responder's new session arrives. */
  handshakeComplete(): void {
    this.retransmitHandshakeAt = OFF;
    this.handshakeAttempts = 0;
    this.sentLastMinuteHandshake = false;
  }

  /** After keys are derived (sending a response, or consuming one). */
  sessionDerived(): void {
    this.zeroKeyMaterialAt = this.now() + 3 * this.config.rejectAfterTimeMs;
  }

  /** Arms zeroing of all key material unless it is already armed (after giving up on retries). */
  armZeroKeyMaterialIfIdle(): void {
    if (this.zeroKeyMaterialAt === OFF) this.zeroKeyMaterialAt = this.now() + 3 * this.config.rejectAfterTimeMs;
  }

  /** Re-arms the keepalive timer (when another keepalive was requested while one was pending). */
  rearmKeepalive(): void {
    this.sendKeepaliveAt = this.now() + this.config.keepaliveTimeoutMs;
  }

  cancelKeepalive(): void {
    this.sendKeepaliveAt = OFF;
  }

  stopAll(): void {
    this.retransmitHandshakeAt = OFF;
    this.sendKeepaliveAt = OFF;
    this.newHandshakeAt = OFF;
    this.zeroKeyMaterialAt = OFF;
    this.persistentKeepaliveAt = OFF;
  }

  /** The earliest armed deadline, or +Infinity. */
  nextDeadline(): number {
    return Math.min(
      this.retransmitHandshakeAt,
      this.sendKeepaliveAt,
      this.newHandshakeAt,
      this.zeroKeyMaterialAt,
      this.persistentKeepaliveAt,
    );
  }

  /** Disarms and reports (as TIMER_* bits) every deadline at or before `now`. */
  takeExpired(now: number): number {
    let bits = 0;
    if (this.retransmitHandshakeAt <= now) {
      this.retransmitHandshakeAt = OFF;
      bits |= TIMER_RETRANSMIT_HANDSHAKE;
    }
    if (this.sendKeepaliveAt <= now) {
      this.sendKeepaliveAt = OFF;
      bits |= TIMER_SEND_KEEPALIVE;
    }
    if (this.newHandshakeAt <= now) {
      this.newHandshakeAt = OFF;
      bits |= TIMER_NEW_HANDSHAKE;
    }
    if (this.zeroKeyMaterialAt <= now) {
      this.zeroKeyMaterialAt = OFF;
      bits |= TIMER_ZERO_KEY_MATERIAL;
    }
    if (this.persistentKeepaliveAt <= now) {
      this.persistentKeepaliveAt = OFF;
      bits |= TIMER_PERSISTENT_KEEPALIVE;
    }
    return bits;
  }
}
