/**
 * @module test/wire/crypto
 * Known answers for the crypto constructions (wireguard-go kdf_test.go vectors, RFC 8439 §2.8.2)
 * and for keys (pairs printed by `wg genkey | wg pubkey`).
 */
import { describe, expect, test } from "bun:test";
import { aeadOpen, aeadSeal, kdf1, kdf2, kdf3 } from "../../core/wire/crypto.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { KeyError, decodeKey, encodeKey, generatePrivateKey, publicKeyFrom } from "../../core/wire/keys.ts";
import { seededRandom } from "./helpers.ts";

const crypto = nobleCrypto();
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const unhex = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));

describe("KDF (wireguard-go kdf_test.go)", () => {
  const vectors = [
    {
      key: "746573742d6b6579",
      input: "746573742d696e707574",
      t0: "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
      t1: "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
      t2: "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24",
    },
    {
      key: "776972656775617264",
      input: "776972656775617264",
      t0: "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
      t1: "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
      t2: "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160",
    },
    {
      key: "",
      input: "",
      t0: "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
      t1: "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
      t2: "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e",
    },
  ];
  for (const v of vectors) {
    test(`key=${v.key || "(empty)"}`, () => {
      const [t0, t1, t2] = kdf3(crypto, unhex(v.key), unhex(v.input));
      expect([hex(t0), hex(t1), hex(t2)]).toEqual([v.t0, v.t1, v.t2]);
      const [u0, u1] = kdf2(crypto, unhex(v.key), unhex(v.input));
      expect([hex(u0), hex(u1)]).toEqual([v.t0, v.t1]);
      expect(hex(kdf1(crypto, unhex(v.key), unhex(v.input)))).toBe(v.t0);
    });
  }
});

describe("ChaCha20-Poly1305 (RFC 8439 §2.8.2)", () => {
  const key = unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
  const nonce = unhex("070000004041424344454647");
  const aad = unhex("50515253c0c1c2c3c4c5c6c7");
  const pt = new TextEncoder().encode(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  );
  const tag = "1ae10b594f09e26a7e902ecbd0600691";
  test("seal gives the RFC ciphertext and tag; open inverts; a flipped bit fails", () => {
    const sealed = aeadSeal(crypto.aead, key, nonce, pt, aad);
    expect(hex(sealed.subarray(0, 16))).toBe("d31a8d34648e60db7b86afbc53ef7ec2");
    expect(hex(sealed.subarray(sealed.length - 16))).toBe(tag);
    expect(aeadOpen(crypto.aead, key, nonce, sealed, aad)).toEqual(pt);
    sealed[3]! ^= 1;
    expect(aeadOpen(crypto.aead, key, nonce, sealed, aad)).toBeNull();
  });
  test("in place seal and open over one buffer", () => {
    const buf = new Uint8Array(pt.length + 16 + 8);
    buf.set(pt, 8);
    crypto.aead.seal(key, nonce, aad, buf, 8, pt.length, buf, 8);
    expect(hex(buf.subarray(8 + pt.length, 8 + pt.length + 16))).toBe(tag);
    expect(crypto.aead.open(key, nonce, aad, buf, 8, pt.length + 16, buf, 8)).toBe(true);
    expect(buf.subarray(8, 8 + pt.length)).toEqual(pt);
  });
});

describe("keys, as wg prints them", () => {
  // Each line: `wg genkey` output and `wg pubkey` of it (wireguard-tools on this machine).
  const pairs = [
    ["oB5vK/0Pvo2SPRrc65ZIjN+ap30pxILdKAwQeI+VzFk=", "www5MrbYq4EHZJx50mKMShkucSDfL6B1P/fmcGk+hRs="],
    ["cJAyCgAZkblbY/10GnIpUJgE5l/eAxqcbOSb4NR+CU4=", "Han7QCMy8sK2EPbTYhKEcYc/wistNRA2/GTGnnCpLxk="],
    ["GIRt695H56tXVrC5vdHd3wYpTYtpVy7uNRBZQYJ6ZHs=", "Th9piIFf9FKi5bmkgRKmzHLHy1LTSsRwn2u23D/wwWc="],
    // Unclamped inputs: wg pubkey clamps before multiplying.
    ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "L+V9o0fNYkMVKNqsX7spBzD/9oSvxM/C7ZCZX1jLO3Q="],
    ["//////////////////////////////////////////8=", "hHwNLDdSNPNl5mCVUYejc1oPdhPRYJ06ak2MU66qWiI="],
  ] as const;
  for (const [priv, pub] of pairs) {
    test(`pubkey of ${priv.slice(0, 8)}…`, () => {
      const sk = decodeKey(priv);
      expect(encodeKey(publicKeyFrom(crypto, sk))).toBe(pub);
      expect(encodeKey(sk)).toBe(priv);
    });
  }

  test("generatePrivateKey clamps and is deterministic under a seeded source", () => {
    const a = generatePrivateKey(seededRandom(1));
    const b = generatePrivateKey(seededRandom(1));
    expect(a).toEqual(b);
    expect(a[0]! & 7).toBe(0);
    expect(a[31]! & 0x80).toBe(0);
    expect(a[31]! & 0x40).toBe(0x40);
  });

  test("bad keys raise KeyError naming the key", () => {
    const bad = [
      "",
      "abc",
      "oB5vK/0Pvo2SPRrc65ZIjN+ap30pxILdKAwQeI+VzFk", // no padding
      "oB5vK/0Pvo2SPRrc65ZIjN+ap30pxILdKAwQeI+VzFl=", // non-canonical last character
      "oB5vK/0Pvo2SPRrc65ZIjN+ap30pxILdKAwQeI+Vz!k=", // not base64
      "oB5vK/0Pvo2SPRrc65ZIjN+ap30pxILdKAwQeI+VzFkAAAA=", // too long
    ];
    for (const text of bad) {
      let err: unknown;
      try {
        decodeKey(text, "PublicKey");
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KeyError);
      expect((err as KeyError).code).toBe("E_KEY_INVALID");
      expect((err as KeyError).message).toStartWith("PublicKey: ");
    }
    expect(() => encodeKey(new Uint8Array(31))).toThrow(KeyError);
    expect(() => publicKeyFrom(crypto, new Uint8Array(33))).toThrow(KeyError);
  });
});
