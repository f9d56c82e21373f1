/**
 * @module core/wire/cookie
 * mac1, mac2 and cookie replies (whitepaper §5.4.4, §5.4.7). mac1 = BLAKE2s-128 keyed with
 * HASH("mac1----" ‖ responder public key) over the message up to mac1: every handshake message
 * carries it, so a responder can drop junk before any Curve25519 work. Under load a responder
 * also demands mac2 = BLAKE2s-128 keyed with a cookie over the message up to mac2, where the
 * cookie = BLAKE2s-128(secret rotated every 2 minutes, source address); it hands the cookie out
 * in a 64-byte reply, XChaCha20-Poly1305-sealed under HASH("cookie--" ‖ responder key) with the
 * message's mac1 as associated data.
 */
import { COOKIE_OFFSET, COOKIE_REPLY_SIZE, LABEL_COOKIE, LABEL_MAC1, MESSAGE_COOKIE_REPLY } from "./constants.ts";
import { type Crypto, type RandomSource, equalBytes } from "./crypto.ts";

export const MAC_SIZE = 16;
/** COOKIE_REFRESH_TIME: how long a cookie secret (responder) or a cookie (initiator) lives. */
export const COOKIE_REFRESH_TIME_MS = 120_000;

const enc = new TextEncoder();
const LABEL_MAC1_BYTES = enc.encode(LABEL_MAC1);
const LABEL_COOKIE_BYTES = enc.encode(LABEL_COOKIE);

export function mac1Key(crypto: Crypto, publicKey: Uint8Array): Uint8Array {
  return crypto.hash(LABEL_MAC1_BYTES, publicKey);
}

export function cookieKey(crypto: Crypto, publicKey: Uint8Array): Uint8Array {
  return crypto.hash(LABEL_COOKIE_BYTES, publicKey);
}

/** The responder side: checks mac1/mac2 of messages sent to us, creates cookie replies. */
export class CookieChecker {
  private readonly mac1Key: Uint8Array;
  private readonly encryptionKey: Uint8Array;
  private secret: Uint8Array = new Uint8Array(32);
  private secretSetMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly crypto: Crypto,
    localPublicKey: Uint8Array,
    private readonly random: RandomSource,
    private readonly now: () => number,
  ) {
    this.mac1Key = mac1Key(crypto, localPublicKey);
    this.encryptionKey = cookieKey(crypto, localPublicKey);
  }

  checkMac1(msg: Uint8Array): boolean {
    const smac1 = msg.length - 2 * MAC_SIZE;
    if (smac1 < 0) return false;
    const mac = this.crypto.mac(this.mac1Key, MAC_SIZE, msg.subarray(0, smac1));
    return equalBytes(mac, 0, msg, smac1, MAC_SIZE);
  }

  /** `src` identifies the sender's address (see sourceBytes). False once the secret is stale. */
  checkMac2(msg: Uint8Array, src: Uint8Array): boolean {
    if (this.now() - this.secretSetMs > COOKIE_REFRESH_TIME_MS) return false;
    const smac2 = msg.length - MAC_SIZE;
    if (smac2 < MAC_SIZE) return false;
    const cookie = this.crypto.mac(this.secret, MAC_SIZE, src);
    const mac = this.crypto.mac(cookie, MAC_SIZE, msg.subarray(0, smac2));
    return equalBytes(mac, 0, msg, smac2, MAC_SIZE);
  }

  /** A 64-byte cookie reply to `msg` (whose sender index is `receiver`), for the source `src`. */
  createReply(msg: Uint8Array, receiver: number, src: Uint8Array): Uint8Array {
    const now = this.now();
    if (now - this.secretSetMs > COOKIE_REFRESH_TIME_MS) {
      this.secret = Uint8Array.from(this.random(32));
      this.secretSetMs = now;
    }
    const cookie = this.crypto.mac(this.secret, MAC_SIZE, src);
    const smac1 = msg.length - 2 * MAC_SIZE;
    const reply = new Uint8Array(COOKIE_REPLY_SIZE);
    const view = new DataView(reply.buffer);
    view.setUint32(0, MESSAGE_COOKIE_REPLY, true);
    view.setUint32(COOKIE_OFFSET.receiver, receiver >>> 0, true);
    const nonce = this.random(24);
    reply.set(nonce, COOKIE_OFFSET.nonce);
    const sealed = this.crypto.xaead.seal(this.encryptionKey, nonce, cookie, msg.subarray(smac1, smac1 + MAC_SIZE));
    reply.set(sealed, COOKIE_OFFSET.cookie);
    return reply;
  }
}

/** The initiator side, one per peer: adds mac1/mac2 to our messages, consumes cookie replies. */
export class CookieGenerator {
  private readonly mac1Key: Uint8Array;
  private readonly encryptionKey: Uint8Array;
  private cookie: Uint8Array = new Uint8Array(MAC_SIZE);
  private cookieSetMs = Number.NEGATIVE_INFINITY;
  private lastMac1: Uint8Array | null = null;

  constructor(
    private readonly crypto: Crypto,
    remotePublicKey: Uint8Array,
    private readonly now: () => number,
  ) {
    this.mac1Key = mac1Key(crypto, remotePublicKey);
    this.encryptionKey = cookieKey(crypto, remotePublicKey);
  }

  /** True while we hold a cookie young enough to put in mac2. */
  hasCookie(): boolean {
    return this.now() - this.cookieSetMs <= COOKIE_REFRESH_TIME_MS;
  }

  /** Fills mac1 (and mac2 when we hold a fresh cookie; zeros otherwise) in place. */
  addMacs(msg: Uint8Array): void {
    const smac2 = msg.length - MAC_SIZE;
    const smac1 = smac2 - MAC_SIZE;
    const mac1 = this.crypto.mac(this.mac1Key, MAC_SIZE, msg.subarray(0, smac1));
    msg.set(mac1, smac1);
    this.lastMac1 = mac1;
    if (this.hasCookie()) {
      msg.set(this.crypto.mac(this.cookie, MAC_SIZE, msg.subarray(0, smac2)), smac2);
    } else {
      msg.fill(0, smac2);
    }
  }

  /** Consumes a cookie reply to the last message we sent; false when it does not open. */
  consumeReply(reply: Uint8Array): boolean {
    if (reply.length !== COOKIE_REPLY_SIZE || this.lastMac1 === null) return false;
    const nonce = reply.subarray(COOKIE_OFFSET.nonce, COOKIE_OFFSET.cookie);
    const cookie = this.crypto.xaead.open(this.encryptionKey, nonce, reply.subarray(COOKIE_OFFSET.cookie), this.lastMac1);
    if (cookie === null) return false;
    this.cookie = cookie;
    this.cookieSetMs = this.now();
    return true;
  }
}

/** The bytes a cookie is bound to: the source address text and port (opaque to the peer). */
export function sourceBytes(address: string, port: number): Uint8Array {
  const text = enc.encode(address);
  const out = new Uint8Array(text.length + 2);
  out.set(text);
  out[text.length] = port & 0xff;
  out[text.length + 1] = port >>> 8;
  return out;
}
