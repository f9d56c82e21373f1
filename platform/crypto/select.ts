/**
 * @module platform/crypto/select
 * Chooses the Crypto once at start: OpenSSL's AEAD through FFI where libcrypto loads and passes
 * a known-answer self-test, @noble otherwise (or when forced), and logs the decision once as a
 * key=value line: `crypto: aead=openssl reason=...` or `crypto: aead=noble reason=...`.
 */
import type { Logger } from "../../core/log.ts";
import { type Crypto, aeadSeal } from "../../core/wire/crypto.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { LIBCRYPTO_CANDIDATES, probeNativeCrypto } from "./openssl.ts";

export interface SelectCryptoOptions {
  /** Use @noble even where a native library exists (WAYGATE_CRYPTO=noble, tests). */
  forceNoble?: boolean;
  logger: Logger;
  /** Override where libcrypto is looked for (tests). */
  candidates?: readonly string[];
}

/** True when `candidate` seals exactly as the reference does (catches a broken binding early). */
function agreesWithNoble(candidate: Crypto): boolean {
  const reference = nobleCrypto();
  const key = new Uint8Array(32).map((_, i) => i * 7 + 1);
  const nonce = new Uint8Array(12).map((_, i) => (i > 3 ? i : 0));
  const aad = new Uint8Array(32).fill(0x5a);
  for (const size of [0, 1, 15, 16, 17, 1420]) {
    const pt = new Uint8Array(size).map((_, i) => (i * 31) & 255);
    const a = aeadSeal(candidate.aead, key, nonce, pt, size % 2 ? aad : null);
    const b = aeadSeal(reference.aead, key, nonce, pt, size % 2 ? aad : null);
    if (!Buffer.from(a).equals(Buffer.from(b))) return false;
  }
  const sk = new Uint8Array(32).fill(9);
  return Buffer.from(candidate.x25519Base(sk)).equals(Buffer.from(reference.x25519Base(sk)));
}

export function selectCrypto(options: SelectCryptoOptions): Crypto {
  const { logger } = options;
  if (options.forceNoble) {
    logger.info("crypto: aead=noble reason=forced");
    return nobleCrypto();
  }
  const probe = probeNativeCrypto(options.candidates ?? LIBCRYPTO_CANDIDATES);
  if (probe.crypto === null) {
    logger.info(`crypto: aead=noble reason=no-libcrypto detail=${JSON.stringify(probe.detail)}`);
    return nobleCrypto();
  }
  if (!agreesWithNoble(probe.crypto)) {
    logger.warn(`crypto: aead=noble reason=self-test-failed library=${probe.detail}`);
    return nobleCrypto();
  }
  logger.info(`crypto: aead=openssl reason=loaded library=${probe.detail}`);
  return probe.crypto;
}
