/**
 * @module core/wire/crypto
 * The small crypto interface the WireGuard protocol needs, and the constructions built on it
 * (HMAC-BLAKE2s, the Noise KDF1/2/3). Two implementations exist: core/wire/crypto-noble.ts
 * (pure JS, the reference and the fallback) and platform/crypto/openssl.ts (a native AEAD for
 * the hot path). The interface is shaped for the data path: AEAD calls take offsets into
 * caller-owned buffers so a packet is sealed or opened without allocating.
 */

/** ChaCha20-Poly1305 (RFC 8439), 32-byte key, 12-byte nonce, 16-byte tag. */
export interface Aead {
  /**
   * Seals `src[srcOff, srcOff+len)` into `dst` at `dstOff`, writing `len + 16` bytes (ciphertext,
   * then tag). `src` and `dst` may be the same region exactly (in place), never a partial overlap.
   */
  seal(
    key: Uint8Array,
    nonce: Uint8Array,
    aad: Uint8Array | null,
    src: Uint8Array,
    srcOff: number,
    len: number,
    dst: Uint8Array,
    dstOff: number,
  ): void;
  /**
   * Opens `src[srcOff, srcOff+len)` (ciphertext and 16-byte tag) into `dst` at `dstOff`, writing
   * `len - 16` bytes. Returns false, and guarantees nothing about `dst`, when authentication fails.
   */
  open(
    key: Uint8Array,
    nonce: Uint8Array,
    aad: Uint8Array | null,
    src: Uint8Array,
    srcOff: number,
    len: number,
    dst: Uint8Array,
    dstOff: number,
  ): boolean;
}

/** XChaCha20-Poly1305, 24-byte nonce: only cookie replies use it, so a simple shape suffices. */
export interface XAead {
  seal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array;
  /** Null when authentication fails. */
  open(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null;
}

export interface Crypto {
  /** Short name logged at start ("noble", "openssl"). */
  readonly name: string;
  readonly aead: Aead;
  readonly xaead: XAead;
  /** BLAKE2s-256 of the concatenation of `parts`. */
  hash(...parts: Uint8Array[]): Uint8Array;
  /** Keyed BLAKE2s with a `outLen`-byte digest (mac1/mac2 use 16). Not HMAC. */
  mac(key: Uint8Array, outLen: number, ...parts: Uint8Array[]): Uint8Array;
  /** X25519 public key of a (clamped by X25519 itself) private key. */
  x25519Base(privateKey: Uint8Array): Uint8Array;
  /** X25519 shared secret; all zeros for a low-order public key (callers reject that). */
  x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array;
}

/** Where random bytes come from: injected so tests are deterministic. */
export type RandomSource = (length: number) => Uint8Array;

const BLOCK = 64;

/** HMAC-BLAKE2s (RFC 2104 over BLAKE2s-256), as WireGuard's KDF uses it. */
export function hmac(crypto: Crypto, key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  let k = key;
  if (k.length > BLOCK) k = crypto.hash(k);
  const ipad = new Uint8Array(BLOCK);
  const opad = new Uint8Array(BLOCK);
  ipad.set(k);
  opad.set(k);
  for (let i = 0; i < BLOCK; i++) {
    ipad[i]! ^= 0x36;
    opad[i]! ^= 0x5c;
  }
  const inner = crypto.hash(ipad, ...parts);
  return crypto.hash(opad, inner);
}

const ONE = Uint8Array.of(1);
const TWO = Uint8Array.of(2);
const THREE = Uint8Array.of(3);

/** Noise KDF with one output: HKDF-extract then one expand block. */
export function kdf1(crypto: Crypto, key: Uint8Array, input: Uint8Array): Uint8Array {
  const prk = hmac(crypto, key, input);
  const t0 = hmac(crypto, prk, ONE);
  prk.fill(0);
  return t0;
}

export function kdf2(crypto: Crypto, key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const prk = hmac(crypto, key, input);
  const t0 = hmac(crypto, prk, ONE);
  const t1 = hmac(crypto, prk, t0, TWO);
  prk.fill(0);
  return [t0, t1];
}

export function kdf3(
  crypto: Crypto,
  key: Uint8Array,
  input: Uint8Array,
): [Uint8Array, Uint8Array, Uint8Array] {
  const prk = hmac(crypto, key, input);
  const t0 = hmac(crypto, prk, ONE);
  const t1 = hmac(crypto, prk, t0, TWO);
  const t2 = hmac(crypto, prk, t1, THREE);
  prk.fill(0);
  return [t0, t1, t2];
}

/** Convenience (allocating) seal for the handshake: returns ciphertext ‖ tag. */
export function aeadSeal(
  aead: Aead,
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array | null,
): Uint8Array {
  const out = new Uint8Array(plaintext.length + 16);
  aead.seal(key, nonce, aad, plaintext, 0, plaintext.length, out, 0);
  return out;
}

/** Convenience (allocating) open for the handshake: plaintext, or null when authentication fails. */
export function aeadOpen(
  aead: Aead,
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array | null,
): Uint8Array | null {
  if (sealed.length < 16) return null;
  const out = new Uint8Array(sealed.length - 16);
  return aead.open(key, nonce, aad, sealed, 0, sealed.length, out, 0) ? out : null;
}

/** Constant-time comparison of two byte ranges of equal length. */
export function equalBytes(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number, len: number): boolean {
  let acc = 0;
  for (let i = 0; i < len; i++) acc |= a[aOff + i]! ^ b[bOff + i]!;
  return acc === 0;
}

export function isZero(a: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc |= a[i]!;
  return acc === 0;
}
