/**
 * @module cmd/genkey
 * `waygate genkey`: prints a new Curve25519 private key in base64, clamped, exactly as
 * `wg genkey` does (the two are interchangeable: `waygate genkey | wg pubkey` works, and so does
 * `wg genkey | waygate pubkey`). Random bytes come from the OS CSPRNG.
 */
import { defineCommand } from "citty";
import { randomFillSync } from "node:crypto";
import { encodeKey, generatePrivateKey } from "../core/wire/keys.ts";

export interface GenkeyCommandData {
  out?: (text: string) => void;
  random?: (n: number) => Uint8Array;
}

export default defineCommand({
  meta: {
    name: "genkey",
    description: "Print a new private key (base64), like wg genkey. Example: waygate genkey > private.key",
  },
  args: {},
  run({ data }) {
    const injected = (data ?? {}) as GenkeyCommandData;
    const random = injected.random ?? ((n: number) => randomFillSync(new Uint8Array(n)));
    const out = injected.out ?? ((t: string) => process.stdout.write(t));
    out(`${encodeKey(generatePrivateKey(random))}\n`);
  },
});
