/**
 * @module test/wire/crypto-native
 * The native crypto (OpenSSL EVP through bun:ffi, node:crypto X25519, Bun BLAKE2s) cross-checked
 * against the @noble reference on random inputs, in place and at offsets; the selection logged
 * once; the fallback when no library loads; and two Devices talking across implementations.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { recordingLogger } from "../../core/log.ts";
import { aeadOpen, aeadSeal } from "../../core/wire/crypto.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { loadNativeCrypto, probeNativeCrypto } from "../../platform/crypto/openssl.ts";
import { selectCrypto } from "../../platform/crypto/select.ts";
import { icmpEcho, twoDevices } from "../dataplane/memory.ts";

const noble = nobleCrypto();
const native = loadNativeCrypto();
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("selectCrypto", () => {
  test("falls back to noble, logged once, when no library loads", () => {
    const log = recordingLogger();
    const c = selectCrypto({ logger: log, candidates: ["/nonexistent/libcrypto.so.3"] });
    expect(c.name).toBe("noble");
    expect(log.lines.length).toBe(1);
    expect(log.lines[0]!.message).toStartWith("crypto: aead=noble reason=no-libcrypto detail=");
    expect(probeNativeCrypto(["/nonexistent/x.so"]).crypto).toBeNull();
  });

  test("forceNoble", () => {
    const log = recordingLogger();
    expect(selectCrypto({ logger: log, forceNoble: true }).name).toBe("noble");
    expect(log.lines.map((l) => l.message)).toEqual(["crypto: aead=noble reason=forced"]);
  });

  test.skipIf(native === null)("picks openssl where libcrypto is present", () => {
    const log = recordingLogger();
    expect(selectCrypto({ logger: log }).name).toBe("openssl");
    expect(log.lines.length).toBe(1);
    expect(log.lines[0]!.message).toMatch(/^crypto: aead=openssl reason=loaded library=\S*libcrypto/);
  });
});

describe.skipIf(native === null)("openssl against noble", () => {
  const n = native!;
  const bytes = (len: number) => fc.uint8Array({ minLength: len, maxLength: len });

  test("identical ciphertext and tags for random keys, nonces, AAD and sizes", () => {
    fc.assert(
      fc.property(bytes(32), bytes(12), fc.option(fc.uint8Array({ maxLength: 64 })), fc.uint8Array({ maxLength: 2000 }), (key, nonce, aad, pt) => {
        const a = aeadSeal(n.aead, key, nonce, pt, aad);
        const b = aeadSeal(noble.aead, key, nonce, pt, aad);
        if (hex(a) !== hex(b)) return false;
        const back = aeadOpen(n.aead, key, nonce, b, aad);
        return back !== null && hex(back) === hex(pt);
      }),
      { numRuns: 300, seed: 42 },
    );
  });

  test("open rejects any single flipped bit, like noble", () => {
    const key = new Uint8Array(32).fill(3);
    const nonce = new Uint8Array(12).fill(1);
    const sealed = aeadSeal(noble.aead, key, nonce, new Uint8Array(40).fill(9), null);
    for (let bit = 0; bit < sealed.length * 8; bit += 3) {
      const m = sealed.slice();
      m[bit >> 3]! ^= 1 << (bit & 7);
      expect(aeadOpen(n.aead, key, nonce, m, null)).toBeNull();
    }
  });

  test("in place and at offsets inside larger buffers (and subarrays)", () => {
    const key = new Uint8Array(32).map((_, i) => i);
    const nonce = new Uint8Array(12).map((_, i) => 100 + i);
    const pt = new Uint8Array(1400).map((_, i) => i * 13);
    const expected = aeadSeal(noble.aead, key, nonce, pt, null);
    const big = new Uint8Array(new ArrayBuffer(2000));
    big.set(pt, 16);
    n.aead.seal(key, nonce, null, big, 16, pt.length, big, 16);
    expect(hex(big.subarray(16, 16 + pt.length + 16))).toBe(hex(expected));
    const view = big.subarray(8); // a view with its own byteOffset
    const out = new Uint8Array(1500);
    expect(n.aead.open(key, nonce, null, view, 8, pt.length + 16, out, 3)).toBe(true);
    expect(hex(out.subarray(3, 3 + pt.length))).toBe(hex(pt));
  });

  test("X25519 and BLAKE2s agree with noble", () => {
    fc.assert(
      fc.property(bytes(32), bytes(32), fc.uint8Array({ maxLength: 200 }), (a, b, data) => {
        const pa = n.x25519Base(a);
        return (
          hex(pa) === hex(noble.x25519Base(a)) &&
          hex(n.x25519(b, pa)) === hex(noble.x25519(b, pa)) &&
          hex(n.hash(data, a)) === hex(noble.hash(data, a))
        );
      }),
      { numRuns: 50, seed: 8 },
    );
    expect(hex(n.x25519(new Uint8Array(32).fill(5), new Uint8Array(32)))).toBe("0".repeat(64));
  });

  test("an openssl Device and a noble Device ping each other, both ways round", () => {
    for (const rig of [twoDevices({ crypto: n, cryptoB: noble }), twoDevices({ crypto: noble, cryptoB: n, seed: 9 })]) {
      const { a, b, net } = rig;
      const p = icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2" });
      a.device.handleTunPacket(p);
      net.deliver();
      expect(b.tun.take()).toEqual([p]);
      const r = icmpEcho({ src: "10.0.0.2", dst: "10.0.0.1", reply: true });
      b.device.handleTunPacket(r);
      net.deliver();
      expect(a.tun.take()).toEqual([r]);
    }
  });
});
