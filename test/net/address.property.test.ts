/**
 * @module test/net/address.property.test
 * Our parser and formatter against ip-address, an independent implementation, with fixed
 * fast-check seeds so a failure reproduces. The one intended difference: IPv4-mapped
 * addresses print as ::ffff:a.b.c.d (RFC 5952 section 5), ip-address prints hex groups.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { Address4, Address6 } from "ip-address";
import { AddressError } from "../../core/errors.ts";
import {
  formatAddress,
  ipv4ToUint32,
  parseAddress,
  parsePrefix,
  uint32ToIpv4,
} from "../../core/net/address.ts";

const SEED = 20240611;
const RUNS = 2000;

/** 16 bytes built from 16-bit groups, mostly zero so that runs of zeros (and ties) are common. */
const ipv6Bytes = fc
  .array(fc.oneof(fc.constant(0), fc.constant(0), fc.constant(1), fc.integer({ min: 0, max: 0xffff })), {
    minLength: 8,
    maxLength: 8,
  })
  .chain((groups) =>
    fc.oneof(
      { weight: 9, arbitrary: fc.constant(groups) },
      // Sometimes IPv4-mapped, to exercise the one special form.
      { weight: 1, arbitrary: fc.constant([0, 0, 0, 0, 0, 0xffff, groups[6]!, groups[7]!]) },
    ),
  )
  .map((groups) => {
    const bytes = new Uint8Array(16);
    groups.forEach((g, i) => {
      bytes[2 * i] = g >> 8;
      bytes[2 * i + 1] = g & 255;
    });
    return bytes;
  });

function toBigInt(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

function isMapped(bytes: Uint8Array): boolean {
  return bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
}

describe("IPv6 text against ip-address", () => {
  test("canonical text is RFC 5952 (ip-address's correctForm) and parses back to the same bytes", () => {
    fc.assert(
      fc.property(ipv6Bytes, (bytes) => {
        const text = formatAddress(bytes);
        const reference = Address6.fromBigInt(toBigInt(bytes));
        if (isMapped(bytes)) {
          expect(text).toBe(`::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`);
        } else {
          expect(text).toBe(reference.correctForm());
        }
        expect([...parseAddress(text).bytes]).toEqual([...bytes]);
        // Every other spelling of the same address lands on the same canonical text.
        expect(parseAddress(reference.canonicalForm()).text).toBe(text);
        expect(parseAddress(reference.canonicalForm().toUpperCase()).text).toBe(text);
        expect(parseAddress(reference.correctForm()).text).toBe(text);
        expect(parseAddress(reference.to4in6()).text).toBe(text);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  test("prefixes with mask: the network matches ip-address's networkForm", () => {
    fc.assert(
      fc.property(ipv6Bytes, fc.integer({ min: 0, max: 128 }), (bytes, length) => {
        const text = `${Address6.fromBigInt(toBigInt(bytes)).correctForm()}/${length}`;
        const ours = parsePrefix(text, { mask: true });
        const theirs = new Address6(text).networkForm();
        const network = ours.bytes;
        if (isMapped(network)) {
          expect([...parseAddress(theirs.split("/")[0]!).bytes]).toEqual([...network]);
        } else {
          expect(ours.text).toBe(theirs);
        }
        // Without mask, the same text is accepted exactly when it had no host bits.
        const strict = (() => {
          try {
            return parsePrefix(text).text;
          } catch (err) {
            expect(err).toBeInstanceOf(AddressError);
            return null;
          }
        })();
        expect(strict === null).toBe(toBigInt(bytes) !== toBigInt(network));
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });
});

describe("IPv4 text", () => {
  test("uint32 -> text -> bytes -> uint32 round-trips and agrees with ip-address", () => {
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), (n) => {
        const text = uint32ToIpv4(n);
        expect(text).toBe(Address4.fromBigInt(BigInt(n)).correctForm());
        const a = parseAddress(text);
        expect(a.text).toBe(text);
        expect(ipv4ToUint32(a.bytes)).toBe(n);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });
});

describe("arbitrary text", () => {
  // Strings over the characters addresses are made of, so many are near misses.
  const nearMiss = fc.string({
    unit: fc.constantFrom(..."0123456789abcdefABCDEFg:./% ".split(""), "::", "ffff:", "1.2.3.4", "255", "00"),
    maxLength: 14,
  });

  test("only AddressError escapes, and whatever we accept ip-address accepts with the same bytes", () => {
    let accepted = 0;
    fc.assert(
      fc.property(nearMiss, (text) => {
        let bytes: Uint8Array;
        try {
          bytes = parseAddress(text).bytes;
        } catch (err) {
          expect(err).toBeInstanceOf(AddressError);
          expect((err as AddressError).message.startsWith(`${JSON.stringify(text)} is not a valid IP`)).toBe(true);
          return;
        }
        accepted++;
        if (bytes.length === 4) {
          expect(Address4.isValid(text)).toBe(true);
          expect(ipv4ToUint32(bytes)).toBe(Number(new Address4(text).bigInt()));
        } else {
          expect(Address6.isValid(text)).toBe(true);
          expect(toBigInt(bytes)).toBe(new Address6(text).bigInt());
        }
      }),
      { seed: SEED, numRuns: 20000 },
    );
    // The generator must reach the accepting side too, or the comparison proves nothing.
    expect(accepted).toBeGreaterThan(100);
  });

  test("prefix parsing only throws AddressError with E_PREFIX_INVALID", () => {
    const prefixText = fc.tuple(
      fc.string({ unit: fc.constantFrom(..."0123456789abcdef:./".split(""), "::", "10.0.0.0"), maxLength: 10 }),
      fc.string({ unit: fc.constantFrom(..."0123456789/ x".split("")), maxLength: 4 }),
    );
    fc.assert(
      fc.property(prefixText, fc.boolean(), fc.boolean(), ([a, len], mask, allowBareAddress) => {
        const text = `${a}/${len}`;
        try {
          const p = parsePrefix(text, { mask, allowBareAddress });
          expect(parsePrefix(p.text).text).toBe(p.text);
        } catch (err) {
          expect(err).toBeInstanceOf(AddressError);
          expect((err as AddressError).code).toBe("E_PREFIX_INVALID");
        }
      }),
      { seed: SEED, numRuns: 5000 },
    );
  });
});
