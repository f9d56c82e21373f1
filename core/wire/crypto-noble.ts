/**
 * @module core/wire/crypto-noble
 * The pure-JS implementation of the crypto interface over @noble/*: the reference every other
 * implementation is cross-checked against, and the fallback where no native library is found.
 */
import { chacha20poly1305, xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { blake2s } from "@noble/hashes/blake2.js";
import type { Aead, Crypto, XAead } from "./crypto.ts";

const ZERO32 = new Uint8Array(32);

export const nobleAead: Aead = {
  seal(key, nonce, aad, src, srcOff, len, dst, dstOff) {
    const cipher = aad ? chacha20poly1305(key, nonce, aad) : chacha20poly1305(key, nonce);
    const input = src.subarray(srcOff, srcOff + len);
    const output = dst.subarray(dstOff, dstOff + len + 16);
    if (src.buffer === dst.buffer && src.byteOffset + srcOff !== dst.byteOffset + dstOff) {
      // noble refuses partial overlaps; copy out first (the handshake path only).
      cipher.encrypt(input.slice(), output);
    } else {
      cipher.encrypt(input, output);
    }
  },
  open(key, nonce, aad, src, srcOff, len, dst, dstOff) {
    if (len < 16) return false;
    const cipher = aad ? chacha20poly1305(key, nonce, aad) : chacha20poly1305(key, nonce);
    const input = src.subarray(srcOff, srcOff + len);
    const output = dst.subarray(dstOff, dstOff + len - 16);
    try {
      if (src.buffer === dst.buffer && src.byteOffset + srcOff !== dst.byteOffset + dstOff) {
        cipher.decrypt(input.slice(), output);
      } else {
        cipher.decrypt(input, output);
      }
      return true;
    } catch {
      return false;
    }
  },
};

export const nobleXAead: XAead = {
  seal(key, nonce, plaintext, aad) {
    return xchacha20poly1305(key, nonce, aad).encrypt(plaintext);
  },
  open(key, nonce, sealed, aad) {
    try {
      return xchacha20poly1305(key, nonce, aad).decrypt(sealed);
    } catch {
      return null;
    }
  },
};

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function nobleHash(...parts: Uint8Array[]): Uint8Array {
  const h = blake2s.create();
  for (const p of parts) h.update(p);
  return h.digest();
}

export function nobleMac(key: Uint8Array, outLen: number, ...parts: Uint8Array[]): Uint8Array {
  return blake2s(concat(parts), { key, dkLen: outLen });
}

export function nobleX25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  try {
    return x25519.getSharedSecret(privateKey, publicKey);
  } catch {
    // noble throws on an all-zero result (low-order point); the protocol layer rejects zeros.
    return ZERO32.slice();
  }
}

/** The reference implementation. */
export function nobleCrypto(): Crypto {
  return {
    name: "noble",
    aead: nobleAead,
    xaead: nobleXAead,
    hash: nobleHash,
    mac: nobleMac,
    x25519Base: (sk) => x25519.getPublicKey(sk),
    x25519: nobleX25519,
  };
}
