/**
 * @module platform/crypto/openssl
 * The native crypto for the hot path: ChaCha20-Poly1305 from OpenSSL's libcrypto (EVP) through
 * bun:ffi, X25519 from node:crypto (OpenSSL inside Bun) and BLAKE2s from Bun.CryptoHasher.
 * Keyed BLAKE2s (mac1/mac2) and XChaCha20-Poly1305 (cookies) are rare and stay on @noble.
 * `loadNativeCrypto` returns null where libcrypto cannot be loaded; callers fall back to noble
 * (platform/crypto/select.ts). Every FFI buffer is allocated over its own ArrayBuffer (BUN-NOTES:
 * the pointer of a small inline Uint8Array can move), and the data path allocates nothing.
 */
import { createPrivateKey, createPublicKey, diffieHellman } from "node:crypto";
import { FFIType, type Pointer, dlopen, ptr } from "bun:ffi";
import type { Aead, Crypto } from "../../core/wire/crypto.ts";
import { nobleMac, nobleXAead } from "../../core/wire/crypto-noble.ts";

/** Where libcrypto is looked for, in order. */
export const LIBCRYPTO_CANDIDATES = [
  "libcrypto.so.3",
  "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
  "/usr/lib/aarch64-linux-gnu/libcrypto.so.3",
  "/usr/lib64/libcrypto.so.3",
  "/lib/libcrypto.so.3",
  "libcrypto.3.dylib",
  "/opt/homebrew/opt/openssl@3/lib/libcrypto.3.dylib",
  "/usr/local/opt/openssl@3/lib/libcrypto.3.dylib",
];

const EVP_CTRL_AEAD_GET_TAG = 0x10;
const EVP_CTRL_AEAD_SET_TAG = 0x11;

const SYMBOLS = {
  EVP_CIPHER_CTX_new: { args: [], returns: FFIType.ptr },
  EVP_CIPHER_CTX_free: { args: [FFIType.ptr], returns: FFIType.void },
  EVP_chacha20_poly1305: { args: [], returns: FFIType.ptr },
  EVP_EncryptInit_ex: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  EVP_EncryptUpdate: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  EVP_EncryptFinal_ex: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  EVP_DecryptInit_ex: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  EVP_DecryptUpdate: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  EVP_DecryptFinal_ex: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  EVP_CIPHER_CTX_ctrl: { args: [FFIType.ptr, FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
} as const;

type Lib = ReturnType<typeof dlopen<typeof SYMBOLS>>;

function ffiBuffer(n: number): Uint8Array {
  return new Uint8Array(new ArrayBuffer(n));
}

/** ChaCha20-Poly1305 over two long-lived EVP contexts (one sealing, one opening). */
class OpenSslAead implements Aead {
  private readonly f: Lib["symbols"];
  private readonly enc: NonNullable<ReturnType<Lib["symbols"]["EVP_CIPHER_CTX_new"]>>;
  private readonly dec: NonNullable<ReturnType<Lib["symbols"]["EVP_CIPHER_CTX_new"]>>;
  private readonly key = ffiBuffer(32);
  private readonly nonce = ffiBuffer(12);
  private readonly tag = ffiBuffer(16);
  private readonly outl = ffiBuffer(4);
  /** A non-null pointer for zero-length inputs. */
  private readonly dummy = ffiBuffer(16);
  private readonly keyPtr: Pointer;
  private readonly noncePtr: Pointer;
  private readonly tagPtr: Pointer;
  private readonly outlPtr: Pointer;
  private readonly dummyPtr: Pointer;

  constructor(lib: Lib) {
    this.f = lib.symbols;
    const enc = this.f.EVP_CIPHER_CTX_new();
    const dec = this.f.EVP_CIPHER_CTX_new();
    const cipher = this.f.EVP_chacha20_poly1305();
    if (!enc || !dec || !cipher) throw new Error("EVP_CIPHER_CTX_new or EVP_chacha20_poly1305 returned NULL");
    if (this.f.EVP_EncryptInit_ex(enc, cipher, null, null, null) !== 1) throw new Error("EVP_EncryptInit_ex failed");
    if (this.f.EVP_DecryptInit_ex(dec, cipher, null, null, null) !== 1) throw new Error("EVP_DecryptInit_ex failed");
    this.enc = enc;
    this.dec = dec;
    this.keyPtr = ptr(this.key);
    this.noncePtr = ptr(this.nonce);
    this.tagPtr = ptr(this.tag);
    this.outlPtr = ptr(this.outl);
    this.dummyPtr = ptr(this.dummy);
  }

  private at(buf: Uint8Array, off: number, len: number): Pointer {
    return len === 0 ? this.dummyPtr : ptr(buf, off);
  }

  seal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array | null, src: Uint8Array, srcOff: number, len: number, dst: Uint8Array, dstOff: number): void {
    const f = this.f;
    this.key.set(key);
    this.nonce.set(nonce);
    let ok = f.EVP_EncryptInit_ex(this.enc, null, null, this.keyPtr, this.noncePtr);
    if (aad !== null && aad.length > 0) ok &= f.EVP_EncryptUpdate(this.enc, null, this.outlPtr, aad, aad.length);
    if (len > 0) ok &= f.EVP_EncryptUpdate(this.enc, ptr(dst, dstOff), this.outlPtr, ptr(src, srcOff), len);
    ok &= f.EVP_EncryptFinal_ex(this.enc, this.dummyPtr, this.outlPtr);
    ok &= f.EVP_CIPHER_CTX_ctrl(this.enc, EVP_CTRL_AEAD_GET_TAG, 16, this.at(dst, dstOff + len, 16));
    if (ok !== 1) throw new Error("OpenSSL ChaCha20-Poly1305 seal failed");
  }

  open(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array | null, src: Uint8Array, srcOff: number, len: number, dst: Uint8Array, dstOff: number): boolean {
    if (len < 16) return false;
    const f = this.f;
    const ctLen = len - 16;
    this.key.set(key);
    this.nonce.set(nonce);
    // The tag is copied out first: in-place opening overwrites nothing past the ciphertext, but
    // the source may be any caller buffer, so OpenSSL gets our own copy.
    for (let i = 0; i < 16; i++) this.tag[i] = src[srcOff + ctLen + i]!;
    let ok = f.EVP_DecryptInit_ex(this.dec, null, null, this.keyPtr, this.noncePtr);
    if (aad !== null && aad.length > 0) ok &= f.EVP_DecryptUpdate(this.dec, null, this.outlPtr, aad, aad.length);
    if (ctLen > 0) ok &= f.EVP_DecryptUpdate(this.dec, ptr(dst, dstOff), this.outlPtr, ptr(src, srcOff), ctLen);
    ok &= f.EVP_CIPHER_CTX_ctrl(this.dec, EVP_CTRL_AEAD_SET_TAG, 16, this.tagPtr);
    if (ok !== 1) return false;
    return f.EVP_DecryptFinal_ex(this.dec, this.dummyPtr, this.outlPtr) === 1;
  }
}

const PKCS8_X25519 = Buffer.from("302e020100300506032b656e04220420", "hex");
const SPKI_X25519 = Buffer.from("302a300506032b656e032100", "hex");

function privateKeyObject(sk: Uint8Array) {
  return createPrivateKey({ key: Buffer.concat([PKCS8_X25519, sk]), format: "der", type: "pkcs8" });
}

export function nodeX25519(sk: Uint8Array, pk: Uint8Array): Uint8Array {
  try {
    const publicKey = createPublicKey({ key: Buffer.concat([SPKI_X25519, pk]), format: "der", type: "spki" });
    return new Uint8Array(diffieHellman({ privateKey: privateKeyObject(sk), publicKey }));
  } catch {
    // OpenSSL refuses an all-zero result (a low-order point); the protocol layer rejects zeros.
    return new Uint8Array(32);
  }
}

export function nodeX25519Base(sk: Uint8Array): Uint8Array {
  const spki = createPublicKey(privateKeyObject(sk)).export({ format: "der", type: "spki" });
  return new Uint8Array(spki.subarray(spki.length - 32));
}

/** BLAKE2s-256 over one reused Bun.CryptoHasher (digest resets it). */
function bunBlake2s(): (...parts: Uint8Array[]) => Uint8Array {
  const hasher = new Bun.CryptoHasher("blake2s256");
  return (...parts) => {
    for (const p of parts) hasher.update(p);
    return new Uint8Array(hasher.digest());
  };
}

export interface NativeLoadResult {
  crypto: Crypto | null;
  /** The library path that loaded, or why none did. */
  detail: string;
}

/** Tries each candidate libcrypto; the Crypto and the path, or null and the reasons. */
export function probeNativeCrypto(candidates: readonly string[] = LIBCRYPTO_CANDIDATES): NativeLoadResult {
  const failures: string[] = [];
  for (const path of candidates) {
    let lib: Lib;
    try {
      lib = dlopen(path, SYMBOLS);
    } catch (err) {
      failures.push(`${path}: ${err instanceof Error ? err.message.split("\n")[0] : String(err)}`);
      continue;
    }
    try {
      const aead = new OpenSslAead(lib);
      const crypto: Crypto = {
        name: "openssl",
        aead,
        xaead: nobleXAead,
        hash: bunBlake2s(),
        mac: nobleMac,
        x25519Base: nodeX25519Base,
        x25519: nodeX25519,
      };
      return { crypto, detail: path };
    } catch (err) {
      failures.push(`${path}: ${err instanceof Error ? err.message : String(err)}`);
      lib.close();
    }
  }
  return { crypto: null, detail: failures.join("; ") || "no candidates" };
}

/** The native Crypto, or null when no usable libcrypto is found. */
export function loadNativeCrypto(candidates?: readonly string[]): Crypto | null {
  return probeNativeCrypto(candidates).crypto;
}
