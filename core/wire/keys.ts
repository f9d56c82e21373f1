/**
 * @module core/wire/keys
 * Curve25519 keys as WireGuard writes them: 32 bytes, base64 with padding (44 characters), the
 * same text `wg genkey` / `wg pubkey` print and accept. Private keys are clamped the way `wg`
 * clamps them; decoding is strict (canonical base64 only), like wg's key_from_base64.
 */
import { WaygateError } from "../errors.ts";
import type { Crypto, RandomSource } from "./crypto.ts";

export const KEY_LENGTH = 32;

/** A key that is not 32 bytes of canonical base64. `what` names the key ("PrivateKey", "peer 2 public key"). */
export class KeyError extends WaygateError {
  constructor(
    readonly what: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super("E_KEY_INVALID", `${what}: ${reason}`, options);
  }
}

/** Clamps a Curve25519 scalar in place (RFC 7748) and returns it. */
export function clampPrivateKey(key: Uint8Array): Uint8Array {
  key[0]! &= 248;
  key[31] = (key[31]! & 127) | 64;
  return key;
}

/** A fresh private key from `random` (clamped, as `wg genkey`). */
export function generatePrivateKey(random: RandomSource): Uint8Array {
  const key = random(KEY_LENGTH);
  if (key.length !== KEY_LENGTH) throw new KeyError("generated private key", `random source gave ${key.length} bytes`);
  return clampPrivateKey(Uint8Array.from(key));
}

/** The public key of a private key (the private key is clamped first, as `wg pubkey` does). */
export function publicKeyFrom(crypto: Crypto, privateKey: Uint8Array): Uint8Array {
  if (privateKey.length !== KEY_LENGTH) {
    throw new KeyError("private key", `must be ${KEY_LENGTH} bytes, got ${privateKey.length}`);
  }
  return crypto.x25519Base(clampPrivateKey(Uint8Array.from(privateKey)));
}

export function encodeKey(key: Uint8Array): string {
  if (key.length !== KEY_LENGTH) throw new KeyError("key", `must be ${KEY_LENGTH} bytes, got ${key.length}`);
  return Buffer.from(key.buffer, key.byteOffset, key.length).toString("base64");
}

const BASE64_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/** Decodes a base64 key; `what` names it in the error ("PrivateKey in wg0.conf line 2"). */
export function decodeKey(text: string, what = "key"): Uint8Array {
  if (typeof text !== "string") throw new KeyError(what, "is not a string");
  const trimmed = text.trim();
  if (trimmed.length !== 44) {
    throw new KeyError(what, `must be 44 characters of base64 (32 bytes), got ${trimmed.length} characters`);
  }
  if (!BASE64_KEY.test(trimmed)) throw new KeyError(what, "is not canonical base64 of 32 bytes");
  const bytes = new Uint8Array(Buffer.from(trimmed, "base64"));
  if (bytes.length !== KEY_LENGTH) throw new KeyError(what, `decodes to ${bytes.length} bytes, not ${KEY_LENGTH}`);
  return bytes;
}

/** Equality of two keys (constant time). */
export function keysEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc |= a[i]! ^ b[i]!;
  return acc === 0;
}
