/**
 * @module cmd/pubkey
 * `waygate pubkey`: reads a base64 private key on stdin and prints its public key, like
 * `wg pubkey` (the private key is clamped first, as wg does). Input that is not exactly one
 * 44-character base64 key (surrounding whitespace allowed) is an E_KEY_INVALID error, exit 12.
 */
import { defineCommand } from "citty";
import { KeyError, decodeKey, encodeKey, publicKeyFrom } from "../core/wire/keys.ts";
import { nobleCrypto } from "../core/wire/crypto-noble.ts";

export interface PubkeyCommandData {
  out?: (text: string) => void;
  /** The whole of stdin. */
  stdin?: () => Promise<string>;
}

/** The public key text for a private key text (wg pubkey's rules). */
export function pubkeyOf(input: string): string {
  const text = input.trim();
  if (text === "") throw new KeyError("private key on stdin", "is empty (pipe a key in: waygate genkey | waygate pubkey)");
  if (/\s/.test(text)) throw new KeyError("private key on stdin", "must be one key, got several words");
  // X25519 of the base point: one operation, so the reference implementation is fast enough
  // and no native library is probed (or logged about) for it.
  return encodeKey(publicKeyFrom(nobleCrypto(), decodeKey(text, "private key on stdin")));
}

export default defineCommand({
  meta: {
    name: "pubkey",
    description: "Read a private key on stdin, print its public key, like wg pubkey. Example: waygate genkey | waygate pubkey",
  },
  args: {},
  async run({ data }) {
    const injected = (data ?? {}) as PubkeyCommandData;
    const input = await (injected.stdin ?? (() => Bun.stdin.text()))();
    const out = injected.out ?? ((t: string) => process.stdout.write(t));
    out(`${pubkeyOf(input)}\n`);
  },
});
