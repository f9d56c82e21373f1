/**
 * @module core/wire/noise
 * The Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s handshake as WireGuard specifies it (whitepaper
 * §5.4.2–§5.4.5): building and consuming the 148-byte initiation and the 92-byte response, and
 * deriving the transport keys. mac1/mac2 are added and checked by core/wire/cookie.ts.
 *
 * Consuming a message is two-phase: everything is computed into temporaries and written to the
 * peer's Handshake only once the whole message authenticated, so a rejected message (a flipped
 * bit, a replayed timestamp) leaves no trace. A Handshake holds one peer's in-flight state.
 *
 * Simultaneous initiation: when the peer's initiation arrives while ours is unanswered, consuming
 * it must not forget ours (wireguard-go forgets it, so when both sides initiate at once both
 * responses die as unknown receivers and the two only meet at the REKEY_TIMEOUT retry).
 * consumeInitiation sets ours aside (`pendingInitiation`); deriveSession puts it back, marked
 * `crossed`, once the responder session is derived, so the response to ours still completes;
 * `restorePendingInitiation` puts it back without answering. Which side answers and which
 * session both settle on is the Device's business (`initiationWins`). The wire is unchanged.
 */
import { WaygateError } from "../errors.ts";
import {
  CONSTRUCTION,
  IDENTIFIER,
  INITIATION_OFFSET as IO,
  INITIATION_SIZE,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  RESPONSE_OFFSET as RO,
  RESPONSE_SIZE,
} from "./constants.ts";
import { type Crypto, type RandomSource, aeadOpen, aeadSeal, isZero, kdf1, kdf2, kdf3 } from "./crypto.ts";
import { clampPrivateKey, keysEqual } from "./keys.ts";
import { TIMESTAMP_SIZE, compareTimestamps, tai64n } from "./tai64n.ts";

/** HANDSHAKE_INITIATION_RATE: a responder consumes at most one initiation per peer per 20 ms. */
export const HANDSHAKE_INITIATION_RATE_MS = 20;

export class HandshakeError extends WaygateError {
  constructor(message: string) {
    super("E_HANDSHAKE", message);
  }
}

export type HandshakePhase =
  | "zeroed"
  | "initiation-created"
  | "initiation-consumed"
  | "response-created"
  | "response-consumed";

/** Why a handshake message was rejected: stable strings, used as drop reasons. */
export type HandshakeRejection = "handshake-invalid" | "unknown-peer" | "stale-timestamp" | "handshake-flood";

const ZERO_NONCE = new Uint8Array(12);
const EMPTY = new Uint8Array(0);

/** Our unanswered initiation, set aside while we answer the peer's (see the module comment). */
export interface PendingInitiation {
  hash: Uint8Array;
  chainKey: Uint8Array;
  localEphemeral: Uint8Array;
  localIndex: number;
}

/** One peer's handshake state (wireguard-go's Handshake). */
export class Handshake {
  phase: HandshakePhase = "zeroed";
  hash: Uint8Array = new Uint8Array(32);
  chainKey: Uint8Array = new Uint8Array(32);
  localEphemeral: Uint8Array = new Uint8Array(32);
  remoteEphemeral: Uint8Array = new Uint8Array(32);
  localIndex = 0;
  remoteIndex = 0;
  /** The greatest TAI64N timestamp accepted from this peer: older or equal ones are replays. */
  lastTimestamp: Uint8Array = new Uint8Array(TIMESTAMP_SIZE);
  lastInitiationConsumedMs = Number.NEGATIVE_INFINITY;
  /** Our own initiation, kept while the responder flow uses the fields above; null when none. */
  pendingInitiation: PendingInitiation | null = null;
  /** True while our initiation is one that crossed an initiation from the peer (we answered it). */
  crossed = false;

  constructor(
    readonly remoteStatic: Uint8Array,
    public presharedKey: Uint8Array,
    /** DH(local static, remote static), computed once per peer; zeros when the key is invalid. */
    readonly precomputedStaticStatic: Uint8Array,
  ) {}

  clear(): void {
    this.phase = "zeroed";
    this.hash.fill(0);
    this.chainKey.fill(0);
    this.localEphemeral.fill(0);
    this.remoteEphemeral.fill(0);
    this.localIndex = 0;
    this.crossed = false;
    this.dropPendingInitiation();
  }

  /**
   * Puts an initiation set aside back in flight (the consumed initiation, if any, is discarded);
   * false when there is none.
   */
  restorePendingInitiation(): boolean {
    const p = this.pendingInitiation;
    if (p === null) return false;
    this.pendingInitiation = null;
    this.hash.fill(0);
    this.chainKey.fill(0);
    this.localEphemeral.fill(0);
    this.remoteEphemeral.fill(0);
    this.hash = p.hash;
    this.chainKey = p.chainKey;
    this.localEphemeral = p.localEphemeral;
    this.localIndex = p.localIndex;
    this.phase = "initiation-created";
    return true;
  }

  /** Forgets (and zeroes) an initiation set aside. */
  dropPendingInitiation(): void {
    const p = this.pendingInitiation;
    if (p === null) return;
    p.hash.fill(0);
    p.chainKey.fill(0);
    p.localEphemeral.fill(0);
    this.pendingInitiation = null;
  }
}

/** The keys one completed handshake yields. */
export interface SessionKeys {
  sendKey: Uint8Array;
  recvKey: Uint8Array;
  isInitiator: boolean;
  localIndex: number;
  remoteIndex: number;
}

export type ConsumeInitiationResult =
  | { ok: true; handshake: Handshake; sender: number }
  | { ok: false; reason: HandshakeRejection };

export interface NoiseOptions {
  crypto: Crypto;
  privateKey: Uint8Array;
  random: RandomSource;
  now: () => number;
}

export class Noise {
  readonly crypto: Crypto;
  readonly publicKey: Uint8Array;
  private readonly privateKey: Uint8Array;
  private readonly random: RandomSource;
  private readonly now: () => number;
  private readonly initialChainKey: Uint8Array;
  private readonly initialHash: Uint8Array;
  /** HASH(initialHash ‖ our public key): where every initiation sent to us starts. */
  private readonly responderHash: Uint8Array;

  constructor(options: NoiseOptions) {
    this.crypto = options.crypto;
    this.privateKey = clampPrivateKey(Uint8Array.from(options.privateKey));
    this.publicKey = this.crypto.x25519Base(this.privateKey);
    this.random = options.random;
    this.now = options.now;
    const enc = new TextEncoder();
    this.initialChainKey = this.crypto.hash(enc.encode(CONSTRUCTION));
    this.initialHash = this.crypto.hash(this.initialChainKey, enc.encode(IDENTIFIER));
    this.responderHash = this.crypto.hash(this.initialHash, this.publicKey);
  }

  /** DH(our static, their static); zeros for a low-order key (such a peer can never handshake). */
  precompute(remoteStatic: Uint8Array): Uint8Array {
    return this.crypto.x25519(this.privateKey, remoteStatic);
  }

  newHandshake(remoteStatic: Uint8Array, presharedKey?: Uint8Array): Handshake {
    return new Handshake(
      Uint8Array.from(remoteStatic),
      presharedKey ? Uint8Array.from(presharedKey) : new Uint8Array(32),
      this.precompute(remoteStatic),
    );
  }

  private newEphemeral(): Uint8Array {
    return clampPrivateKey(Uint8Array.from(this.random(32)));
  }

  /** Builds an initiation (mac1/mac2 left zero) and moves `hs` to initiation-created. */
  createInitiation(hs: Handshake, senderIndex: number): Uint8Array {
    if (isZero(hs.precomputedStaticStatic)) throw new HandshakeError("peer public key is invalid (low-order point)");
    const c = this.crypto;
    const msg = new Uint8Array(INITIATION_SIZE);
    const view = new DataView(msg.buffer);
    view.setUint32(0, MESSAGE_INITIATION, true);
    view.setUint32(IO.sender, senderIndex >>> 0, true);

    let hash = c.hash(this.initialHash, hs.remoteStatic);
    let chainKey = this.initialChainKey;
    const ephemeral = this.newEphemeral();
    const ephemeralPublic = c.x25519Base(ephemeral);
    msg.set(ephemeralPublic, IO.ephemeral);
    chainKey = kdf1(c, chainKey, ephemeralPublic);
    hash = c.hash(hash, ephemeralPublic);

    const ss = c.x25519(ephemeral, hs.remoteStatic);
    if (isZero(ss)) throw new HandshakeError("peer public key is invalid (low-order point)");
    let key: Uint8Array;
    [chainKey, key] = kdf2(c, chainKey, ss);
    const encStatic = aeadSeal(c.aead, key, ZERO_NONCE, this.publicKey, hash);
    msg.set(encStatic, IO.static);
    hash = c.hash(hash, encStatic);

    [chainKey, key] = kdf2(c, chainKey, hs.precomputedStaticStatic);
    const encTimestamp = aeadSeal(c.aead, key, ZERO_NONCE, tai64n(this.now()), hash);
    msg.set(encTimestamp, IO.timestamp);
    hash = c.hash(hash, encTimestamp);

    hs.dropPendingInitiation();
    hs.crossed = false;
    hs.hash = hash;
    hs.chainKey = chainKey;
    hs.localEphemeral = ephemeral;
    hs.localIndex = senderIndex >>> 0;
    hs.phase = "initiation-created";
    return msg;
  }

  /**
   * Consumes an initiation (mac1 already checked). `lookup` finds the Handshake of the peer with
   * the decrypted static key. On success the peer's state becomes initiation-consumed.
   */
  consumeInitiation(msg: Uint8Array, lookup: (remoteStatic: Uint8Array) => Handshake | null): ConsumeInitiationResult {
    if (msg.length !== INITIATION_SIZE || msg[0] !== MESSAGE_INITIATION || msg[1] !== 0 || msg[2] !== 0 || msg[3] !== 0) {
      return { ok: false, reason: "handshake-invalid" };
    }
    const c = this.crypto;
    const ephemeralPublic = msg.slice(IO.ephemeral, IO.static);
    let hash = c.hash(this.responderHash, ephemeralPublic);
    let chainKey = kdf1(c, this.initialChainKey, ephemeralPublic);

    const ss = c.x25519(this.privateKey, ephemeralPublic);
    if (isZero(ss)) return { ok: false, reason: "handshake-invalid" };
    let key: Uint8Array;
    [chainKey, key] = kdf2(c, chainKey, ss);
    const encStatic = msg.subarray(IO.static, IO.timestamp);
    const remoteStatic = aeadOpen(c.aead, key, ZERO_NONCE, encStatic, hash);
    if (remoteStatic === null) return { ok: false, reason: "handshake-invalid" };
    hash = c.hash(hash, encStatic);

    const hs = lookup(remoteStatic);
    if (hs === null) return { ok: false, reason: "unknown-peer" };
    if (isZero(hs.precomputedStaticStatic)) return { ok: false, reason: "handshake-invalid" };

    [chainKey, key] = kdf2(c, chainKey, hs.precomputedStaticStatic);
    const encTimestamp = msg.subarray(IO.timestamp, IO.mac1);
    const timestamp = aeadOpen(c.aead, key, ZERO_NONCE, encTimestamp, hash);
    if (timestamp === null) return { ok: false, reason: "handshake-invalid" };
    hash = c.hash(hash, encTimestamp);

    if (compareTimestamps(timestamp, hs.lastTimestamp) <= 0) return { ok: false, reason: "stale-timestamp" };
    const now = this.now();
    if (now - hs.lastInitiationConsumedMs <= HANDSHAKE_INITIATION_RATE_MS) return { ok: false, reason: "handshake-flood" };

    if (hs.phase === "initiation-created") {
      // Ours is still unanswered: set it aside rather than overwrite it (a later one replaces it).
      hs.dropPendingInitiation();
      hs.pendingInitiation = { hash: hs.hash, chainKey: hs.chainKey, localEphemeral: hs.localEphemeral, localIndex: hs.localIndex };
      hs.localEphemeral = new Uint8Array(32);
    }
    hs.hash = hash;
    hs.chainKey = chainKey;
    hs.remoteIndex = new DataView(msg.buffer, msg.byteOffset).getUint32(IO.sender, true);
    hs.remoteEphemeral = ephemeralPublic;
    hs.lastTimestamp = timestamp;
    if (now > hs.lastInitiationConsumedMs) hs.lastInitiationConsumedMs = now;
    hs.phase = "initiation-consumed";
    return { ok: true, handshake: hs, sender: hs.remoteIndex };
  }

  /** Builds the response to a consumed initiation (macs left zero); state becomes response-created. */
  createResponse(hs: Handshake, senderIndex: number): Uint8Array {
    if (hs.phase !== "initiation-consumed") throw new HandshakeError("handshake initiation must be consumed first");
    const c = this.crypto;
    const msg = new Uint8Array(RESPONSE_SIZE);
    const view = new DataView(msg.buffer);
    view.setUint32(0, MESSAGE_RESPONSE, true);
    view.setUint32(RO.sender, senderIndex >>> 0, true);
    view.setUint32(RO.receiver, hs.remoteIndex >>> 0, true);

    const ephemeral = this.newEphemeral();
    const ephemeralPublic = c.x25519Base(ephemeral);
    msg.set(ephemeralPublic, RO.ephemeral);
    let hash = c.hash(hs.hash, ephemeralPublic);
    let chainKey = kdf1(c, hs.chainKey, ephemeralPublic);
    chainKey = kdf1(c, chainKey, c.x25519(ephemeral, hs.remoteEphemeral));
    chainKey = kdf1(c, chainKey, c.x25519(ephemeral, hs.remoteStatic));

    let tau: Uint8Array;
    let key: Uint8Array;
    [chainKey, tau, key] = kdf3(c, chainKey, hs.presharedKey);
    hash = c.hash(hash, tau);
    const empty = aeadSeal(c.aead, key, ZERO_NONCE, EMPTY, hash);
    msg.set(empty, RO.empty);
    hash = c.hash(hash, empty);

    hs.hash = hash;
    hs.chainKey = chainKey;
    hs.localEphemeral = ephemeral;
    hs.localIndex = senderIndex >>> 0;
    hs.phase = "response-created";
    return msg;
  }

  /**
   * Consumes a response addressed (by receiver index) to `hs` (mac1 already checked). On success
   * the state becomes response-consumed; on failure `hs` is untouched.
   */
  consumeResponse(hs: Handshake, msg: Uint8Array): HandshakeRejection | null {
    if (msg.length !== RESPONSE_SIZE || msg[0] !== MESSAGE_RESPONSE || msg[1] !== 0 || msg[2] !== 0 || msg[3] !== 0) {
      return "handshake-invalid";
    }
    if (hs.phase !== "initiation-created") return "handshake-invalid";
    const c = this.crypto;
    const ephemeralPublic = msg.subarray(RO.ephemeral, RO.empty);
    let hash = c.hash(hs.hash, ephemeralPublic);
    let chainKey = kdf1(c, hs.chainKey, ephemeralPublic);
    const ee = c.x25519(hs.localEphemeral, ephemeralPublic);
    if (isZero(ee)) return "handshake-invalid";
    chainKey = kdf1(c, chainKey, ee);
    const se = c.x25519(this.privateKey, ephemeralPublic);
    if (isZero(se)) return "handshake-invalid";
    chainKey = kdf1(c, chainKey, se);

    let tau: Uint8Array;
    let key: Uint8Array;
    [chainKey, tau, key] = kdf3(c, chainKey, hs.presharedKey);
    hash = c.hash(hash, tau);
    const empty = msg.subarray(RO.empty, RO.mac1);
    if (aeadOpen(c.aead, key, ZERO_NONCE, empty, hash) === null) return "handshake-invalid";
    hash = c.hash(hash, empty);

    hs.hash = hash;
    hs.chainKey = chainKey;
    hs.remoteIndex = new DataView(msg.buffer, msg.byteOffset).getUint32(RO.sender, true);
    hs.phase = "response-consumed";
    return null;
  }

  /** Derives the transport keys from a finished handshake and zeroes the handshake. */
  deriveSession(hs: Handshake): SessionKeys {
    let sendKey: Uint8Array;
    let recvKey: Uint8Array;
    let isInitiator: boolean;
    if (hs.phase === "response-consumed") {
      [sendKey, recvKey] = kdf2(this.crypto, hs.chainKey, EMPTY);
      isInitiator = true;
    } else if (hs.phase === "response-created") {
      [recvKey, sendKey] = kdf2(this.crypto, hs.chainKey, EMPTY);
      isInitiator = false;
    } else {
      throw new HandshakeError(`invalid state for key derivation: ${hs.phase}`);
    }
    const keys = { sendKey, recvKey, isInitiator, localIndex: hs.localIndex, remoteIndex: hs.remoteIndex };
    // We answered the peer's initiation while ours was in flight: ours can still complete.
    if (hs.restorePendingInitiation()) hs.crossed = true;
    else hs.clear();
    return keys;
  }

  /**
   * Tie-break for crossed initiations, the same answer on both sides: ours wins when our static
   * public key is the greater (bytewise).
   */
  initiationWins(remoteStatic: Uint8Array): boolean {
    const a = this.publicKey;
    for (let i = 0; i < 32; i++) if (a[i] !== remoteStatic[i]) return a[i]! > remoteStatic[i]!;
    return false;
  }

  /** True when `key` is our own public key (a peer must not be ourselves). */
  isOwnKey(key: Uint8Array): boolean {
    return keysEqual(key, this.publicKey);
  }
}
