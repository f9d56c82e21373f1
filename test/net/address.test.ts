/**
 * @module test/net/address.test
 * Address and prefix parsing: what is accepted and its canonical text, what is rejected and the
 * exact message (messages are shown to users after a JSON path, so they are part of the API).
 */
import { describe, expect, test } from "bun:test";
import { AddressError, EXIT_STATUS } from "../../core/errors.ts";
import {
  addressFromBytes,
  formatAddress,
  ipv4ToUint32,
  parseAddress,
  parsePrefix,
  prefixContainsAddress,
  prefixCovers,
  prefixesOverlap,
  prefixFromBytes,
  uint32ToIpv4,
  type Family,
  type ParsePrefixOptions,
} from "../../core/net/address.ts";

function thrown(fn: () => unknown): AddressError {
  try {
    fn();
  } catch (err) {
    if (err instanceof AddressError) return err;
    throw new Error(`expected an AddressError, got ${String(err)}`);
  }
  throw new Error("expected an AddressError, nothing was thrown");
}

describe("parseAddress accepts and canonicalises", () => {
  const cases: [string, Family, string, number[]?][] = [
    ["10.0.0.1", 4, "10.0.0.1", [10, 0, 0, 1]],
    ["0.0.0.0", 4, "0.0.0.0", [0, 0, 0, 0]],
    ["255.255.255.255", 4, "255.255.255.255", [255, 255, 255, 255]],
    ["172.26.0.250", 4, "172.26.0.250"],
    ["::", 6, "::", new Array(16).fill(0)],
    ["::1", 6, "::1", [...new Array(15).fill(0), 1]],
    ["1::", 6, "1::"],
    ["2001:DB8::1", 6, "2001:db8::1"],
    ["2001:0db8:0000:0000:0000:0000:0000:0001", 6, "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", 6, "2001:db8::1:0:0:1"], // first of two equal runs
    ["2001:db8:0:1:0:0:0:1", 6, "2001:db8:0:1::1"], // longest run, not the first
    ["2001:db8::0:1", 6, "2001:db8::1"],
    ["1:2:3:4:5:6:7::", 6, "1:2:3:4:5:6:7:0"], // a lone zero group is never "::"
    ["1:0:2:3:4:5:6:7", 6, "1:0:2:3:4:5:6:7"],
    ["0:0:0:0:0:0:0:0", 6, "::"],
    ["FD7A:115C:A1E0::1", 6, "fd7a:115c:a1e0::1"],
    ["::ffff:1.2.3.4", 6, "::ffff:1.2.3.4", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4]],
    ["::FFFF:102:304", 6, "::ffff:1.2.3.4"],
    ["::1.2.3.4", 6, "::102:304"], // deprecated IPv4-compatible form prints as plain IPv6
    ["64:ff9b::192.0.2.33", 6, "64:ff9b::c000:221"],
    ["1:2:3:4:5:6:1.2.3.4", 6, "1:2:3:4:5:6:102:304"],
    ["fe80::0001", 6, "fe80::1"],
  ];
  for (const [text, family, canonical, bytes] of cases) {
    test(`${JSON.stringify(text)} -> ${canonical}`, () => {
      const a = parseAddress(text);
      expect(a.family).toBe(family);
      expect(a.text).toBe(canonical);
      expect(a.bytes.length).toBe(family === 4 ? 4 : 16);
      if (bytes) expect([...a.bytes]).toEqual(bytes);
      // Canonical text is a fixed point.
      expect(parseAddress(canonical).text).toBe(canonical);
      expect(formatAddress(a.bytes)).toBe(canonical);
      const mapped = canonical.startsWith("::ffff:") && canonical.includes(".");
      if (!mapped) expect(parseAddress(text, { family }).text).toBe(canonical);
    });
  }
});

describe("parseAddress rejects with a specific message", () => {
  const cases: [string, Family | undefined, string][] = [
    ["010.0.0.1", undefined, `"010.0.0.1" is not a valid IPv4 address: octet "010" has a leading zero`],
    ["10.0.0.01", 4, `"10.0.0.01" is not a valid IPv4 address: octet "01" has a leading zero`],
    ["256.0.0.1", undefined, `"256.0.0.1" is not a valid IPv4 address: octet "256" is out of range 0..255`],
    ["1.2.3.1000", undefined, `"1.2.3.1000" is not a valid IPv4 address: octet "1000" is out of range 0..255`],
    ["1.2.3", undefined, `"1.2.3" is not a valid IPv4 address: it has 3 octets, expected 4`],
    ["1.2.3.4.5", undefined, `"1.2.3.4.5" is not a valid IPv4 address: it has 5 octets, expected 4`],
    ["1..2.3", undefined, `"1..2.3" is not a valid IPv4 address: octet 2 is empty`],
    ["1.2.3.", undefined, `"1.2.3." is not a valid IPv4 address: octet 4 is empty`],
    ["0x1.2.3.4", undefined, `"0x1.2.3.4" is not a valid IPv4 address: octet "0x1" is not a decimal number`],
    ["1.2.3.-4", undefined, `"1.2.3.-4" is not a valid IPv4 address: octet "-4" is not a decimal number`],
    ["1.2.3.٤", undefined, `"1.2.3.٤" is not a valid IPv4 address: octet "٤" is not a decimal number`],
    ["167772161", 4, `"167772161" is not a valid IPv4 address: it has 1 octet, expected 4`],
    ["", undefined, `"" is not a valid IP address: it is empty`],
    ["", 4, `"" is not a valid IPv4 address: it is empty`],
    ["", 6, `"" is not a valid IPv6 address: it is empty`],
    [" 10.0.0.1", undefined, `" 10.0.0.1" is not a valid IPv4 address: it contains whitespace`],
    ["10.0.0.1\n", undefined, `"10.0.0.1\\n" is not a valid IPv4 address: it contains whitespace`],
    ["fd00:: 1", undefined, `"fd00:: 1" is not a valid IPv6 address: it contains whitespace`],
    ["hello", undefined, `"hello" is not a valid IP address: expected an IPv4 (a.b.c.d) or IPv6 (x:x::x) address`],
    [
      "fe80::1%eth0",
      undefined,
      `"fe80::1%eth0" is not a valid IPv6 address: it has a zone id ("%eth0"), which is not supported`,
    ],
    [
      "10.0.0.0/8",
      undefined,
      `"10.0.0.0/8" is not a valid IPv4 address: it has a prefix length ("/8"); expected a single address`,
    ],
    ["1:2:3:4:5:6:7:8:9", undefined, `"1:2:3:4:5:6:7:8:9" is not a valid IPv6 address: it has 9 groups, expected 8`],
    ["1:2:3:4:5:6:7", undefined, `"1:2:3:4:5:6:7" is not a valid IPv6 address: it has 7 groups, expected 8`],
    [
      "1:2:3:4:5:6:7:8::",
      undefined,
      `"1:2:3:4:5:6:7:8::" is not a valid IPv6 address: it has 8 groups besides "::", at most 7 fit`,
    ],
    ["1::2::3", undefined, `"1::2::3" is not a valid IPv6 address: it has more than one "::"`],
    ["1:::2", undefined, `"1:::2" is not a valid IPv6 address: it has ":::"`],
    [":1::", undefined, `":1::" is not a valid IPv6 address: it starts with a single ":"`],
    ["1::2:", undefined, `"1::2:" is not a valid IPv6 address: it ends with a single ":"`],
    [":", undefined, `":" is not a valid IPv6 address: it starts with a single ":"`],
    ["12345::", undefined, `"12345::" is not a valid IPv6 address: group "12345" has more than 4 hex digits`],
    ["2001:db8::g", undefined, `"2001:db8::g" is not a valid IPv6 address: group "g" is not hexadecimal`],
    [
      "::ffff:1.2.3",
      undefined,
      `"::ffff:1.2.3" is not a valid IPv6 address: embedded IPv4 part "1.2.3": it has 3 octets, expected 4`,
    ],
    [
      "::ffff:01.2.3.4",
      undefined,
      `"::ffff:01.2.3.4" is not a valid IPv6 address: embedded IPv4 part "01.2.3.4": octet "01" has a leading zero`,
    ],
    [
      "1.2.3.4::",
      undefined,
      `"1.2.3.4::" is not a valid IPv6 address: embedded IPv4 part "1.2.3.4" must come last`,
    ],
    // A required family is never satisfied by the other one, mapped or not.
    ["2001:db8::1", 4, `"2001:db8::1" is not a valid IPv4 address: it is an IPv6 address`],
    ["2001:db8::zz", 4, `"2001:db8::zz" is not a valid IPv4 address: it looks like an IPv6 address`],
    [
      "::ffff:10.0.0.1",
      4,
      `"::ffff:10.0.0.1" is not a valid IPv4 address: it is an IPv4-mapped IPv6 address (did you mean 10.0.0.1?)`,
    ],
    [
      "::ffff:10.0.0.1",
      6,
      `"::ffff:10.0.0.1" is not a valid IPv6 address: it is an IPv4-mapped address (did you mean 10.0.0.1 as IPv4?)`,
    ],
    ["10.0.0.1", 6, `"10.0.0.1" is not a valid IPv6 address: it is an IPv4 address`],
    ["10.0.0", 6, `"10.0.0" is not a valid IPv6 address: it has no ":" separators`],
    // Endpoints where an address belongs.
    [
      "203.0.113.7:51820",
      undefined,
      `"203.0.113.7:51820" is not a valid IPv4 address: it has a port (":51820"); give the address alone`,
    ],
    [
      "[fd00::1]:51820",
      undefined,
      `"[fd00::1]:51820" is not a valid IPv6 address: it has brackets (an endpoint?); give the address alone`,
    ],
  ];
  for (const [text, family, message] of cases) {
    test(`${JSON.stringify(text)}${family ? ` as IPv${family}` : ""}`, () => {
      const err = thrown(() => parseAddress(text, { family }));
      expect(err.message).toBe(message);
      expect(err.code).toBe("E_ADDRESS_INVALID");
      expect(err.input).toBe(text);
      expect(`${JSON.stringify(text)} ${err.reason}`).toBe(message);
      expect(err.exitStatus).toBe(EXIT_STATUS.E_ADDRESS_INVALID);
    });
  }

  test("a non-string (from untyped JSON) is an AddressError, not a TypeError", () => {
    const err = thrown(() => parseAddress(42 as unknown as string));
    expect(err.message).toBe(`"42" is not a valid IP address: it is not a string`);
  });
});

describe("parsePrefix accepts and canonicalises", () => {
  const cases: [string, ParsePrefixOptions, string, Family][] = [
    ["172.26.0.0/20", {}, "172.26.0.0/20", 4],
    ["0.0.0.0/0", {}, "0.0.0.0/0", 4],
    ["10.1.2.3/32", {}, "10.1.2.3/32", 4],
    ["10.0.0.0/8", { family: 4 }, "10.0.0.0/8", 4],
    ["::/0", {}, "::/0", 6],
    ["FD7A:115C:A1E0::/48", {}, "fd7a:115c:a1e0::/48", 6],
    ["fd00::1/128", { family: 6 }, "fd00::1/128", 6],
    ["2001:db8:0:0::/64", {}, "2001:db8::/64", 6],
    ["172.26.0.1/20", { mask: true }, "172.26.0.0/20", 4],
    ["255.255.255.255/1", { mask: true }, "128.0.0.0/1", 4],
    ["10.9.8.7/0", { mask: true }, "0.0.0.0/0", 4],
    ["2001:db8::1/32", { mask: true }, "2001:db8::/32", 6],
    ["10.0.0.1", { allowBareAddress: true }, "10.0.0.1/32", 4],
    ["fd00::1", { allowBareAddress: true }, "fd00::1/128", 6],
    ["::ffff:10.0.0.0/104", {}, "::ffff:10.0.0.0/104", 6],
  ];
  for (const [text, options, canonical, family] of cases) {
    test(`${JSON.stringify(text)} ${JSON.stringify(options)} -> ${canonical}`, () => {
      const p = parsePrefix(text, options);
      expect(p.text).toBe(canonical);
      expect(p.family).toBe(family);
      expect(p.length).toBe(Number(canonical.split("/")[1]));
      expect(parsePrefix(canonical).text).toBe(canonical);
    });
  }

  test("the network bytes have every host bit zero", () => {
    const p = parsePrefix("10.255.255.255/9", { mask: true });
    expect([...p.bytes]).toEqual([10, 128, 0, 0]);
    const q = parsePrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/65", { mask: true });
    expect([...q.bytes]).toEqual([255, 255, 255, 255, 255, 255, 255, 255, 128, 0, 0, 0, 0, 0, 0, 0]);
  });
});

describe("parsePrefix rejects with a specific message", () => {
  const cases: [string, ParsePrefixOptions, string][] = [
    ["172.26.0.0/33", {}, `"172.26.0.0/33" is not a valid IPv4 prefix: length 33 is out of range 0..32`],
    ["fd00::/129", {}, `"fd00::/129" is not a valid IPv6 prefix: length 129 is out of range 0..128`],
    [
      "10.0.0.0/99999999999999999999",
      {},
      `"10.0.0.0/99999999999999999999" is not a valid IPv4 prefix: length 99999999999999999999 is out of range 0..32`,
    ],
    [
      "172.26.0.1/20",
      {},
      `"172.26.0.1/20" is not a valid IPv4 prefix: host bits are set (did you mean 172.26.0.0/20?)`,
    ],
    [
      "2001:db8::1/64",
      {},
      `"2001:db8::1/64" is not a valid IPv6 prefix: host bits are set (did you mean 2001:db8::/64?)`,
    ],
    ["10.0.0.0/0", {}, `"10.0.0.0/0" is not a valid IPv4 prefix: host bits are set (did you mean 0.0.0.0/0?)`],
    [
      "010.0.0.0/8",
      {},
      `"010.0.0.0/8" is not a valid IPv4 prefix: octet "010" has a leading zero`,
    ],
    ["10.0.0.0/08", {}, `"10.0.0.0/08" is not a valid IPv4 prefix: length "08" has a leading zero`],
    ["10.0.0.0/-1", {}, `"10.0.0.0/-1" is not a valid IPv4 prefix: length "-1" is not a decimal number`],
    ["10.0.0.0/8.0", {}, `"10.0.0.0/8.0" is not a valid IPv4 prefix: length "8.0" is not a decimal number`],
    ["10.0.0.0/", {}, `"10.0.0.0/" is not a valid IPv4 prefix: the prefix length is empty`],
    ["/8", {}, `"/8" is not a valid IP prefix: the address before "/" is empty`],
    ["1.2.3.0/24/1", {}, `"1.2.3.0/24/1" is not a valid IPv4 prefix: it has more than one "/"`],
    ["", {}, `"" is not a valid IP prefix: it is empty`],
    ["", { family: 6 }, `"" is not a valid IPv6 prefix: it is empty`],
    ["10.0.0.0/ 8", {}, `"10.0.0.0/ 8" is not a valid IPv4 prefix: it contains whitespace`],
    [
      "fe80::%eth0/64",
      {},
      `"fe80::%eth0/64" is not a valid IPv6 prefix: it has a zone id ("%eth0"), which is not supported`,
    ],
    [
      "10.0.0.1",
      {},
      `"10.0.0.1" is not a valid IPv4 prefix: the prefix length is missing (did you mean 10.0.0.1/32?)`,
    ],
    ["fd00::1", {}, `"fd00::1" is not a valid IPv6 prefix: the prefix length is missing (did you mean fd00::1/128?)`],
    ["fd00::/8", { family: 4 }, `"fd00::/8" is not a valid IPv4 prefix: it is an IPv6 prefix`],
    ["10.0.0.0/8", { family: 6 }, `"10.0.0.0/8" is not a valid IPv6 prefix: it is an IPv4 prefix`],
    [
      "::ffff:10.0.0.0/104",
      { family: 4 },
      `"::ffff:10.0.0.0/104" is not a valid IPv4 prefix: it is an IPv4-mapped IPv6 prefix (did you mean 10.0.0.0/8?)`,
    ],
    [
      "::ffff:10.0.0.1",
      { family: 4, allowBareAddress: true },
      `"::ffff:10.0.0.1" is not a valid IPv4 prefix: it is an IPv4-mapped IPv6 prefix (did you mean 10.0.0.1/32?)`,
    ],
    [
      "::ffff:10.0.0.0/104",
      { family: 6 },
      `"::ffff:10.0.0.0/104" is not a valid IPv6 prefix: ` +
        `it is an IPv4-mapped prefix (did you mean 10.0.0.0/8 as IPv4?)`,
    ],
    ["nope/8", {}, `"nope/8" is not a valid IP prefix: expected an IPv4 (a.b.c.d) or IPv6 (x:x::x) prefix`],
  ];
  for (const [text, options, message] of cases) {
    test(`${JSON.stringify(text)} ${JSON.stringify(options)}`, () => {
      const err = thrown(() => parsePrefix(text, options));
      expect(err.message).toBe(message);
      expect(err.code).toBe("E_PREFIX_INVALID");
      expect(err.input).toBe(text);
    });
  }

  test("a /96 or shorter is not IPv4-mapped even when it starts with ::ffff", () => {
    expect(parsePrefix("::ffff:0:0/95", { family: 6, mask: true }).text).toBe("::fffe:0:0/95");
    expect(parsePrefix("::/80", { family: 6 }).text).toBe("::/80");
  });
});

describe("prefix relations", () => {
  const p = (t: string) => parsePrefix(t);
  const a = (t: string) => parseAddress(t).bytes;

  test("prefixContainsAddress", () => {
    expect(prefixContainsAddress(p("172.26.0.0/20"), a("172.26.0.250"))).toBe(true);
    expect(prefixContainsAddress(p("172.26.0.0/20"), a("172.26.15.255"))).toBe(true);
    expect(prefixContainsAddress(p("172.26.0.0/20"), a("172.26.16.0"))).toBe(false);
    expect(prefixContainsAddress(p("0.0.0.0/0"), a("203.0.113.9"))).toBe(true);
    expect(prefixContainsAddress(p("10.0.0.1/32"), a("10.0.0.1"))).toBe(true);
    expect(prefixContainsAddress(p("10.0.0.1/32"), a("10.0.0.0"))).toBe(false);
    expect(prefixContainsAddress(p("fd00::/8"), a("fd12::1"))).toBe(true);
    expect(prefixContainsAddress(p("fd00::/9"), a("fd80::1"))).toBe(false);
    expect(prefixContainsAddress(p("::/0"), a("2001:db8::1"))).toBe(true);
    // Families never mix: ::/0 does not hold IPv4, nor does a mapped prefix.
    expect(prefixContainsAddress(p("::/0"), a("10.0.0.1"))).toBe(false);
    expect(prefixContainsAddress(p("0.0.0.0/0"), a("::ffff:10.0.0.1"))).toBe(false);
  });

  test("prefixCovers is inner ⊆ outer", () => {
    expect(prefixCovers(p("10.0.0.0/8"), p("10.1.0.0/16"))).toBe(true);
    expect(prefixCovers(p("10.1.0.0/16"), p("10.0.0.0/8"))).toBe(false);
    expect(prefixCovers(p("10.0.0.0/8"), p("10.0.0.0/8"))).toBe(true);
    expect(prefixCovers(p("10.0.0.0/8"), p("11.0.0.0/16"))).toBe(false);
    expect(prefixCovers(p("0.0.0.0/0"), p("255.255.255.255/32"))).toBe(true);
    expect(prefixCovers(p("2001:db8::/32"), p("2001:db8:1::/48"))).toBe(true);
    expect(prefixCovers(p("2001:db8::/33"), p("2001:db8:8000::/48"))).toBe(false);
    expect(prefixCovers(p("::/0"), p("0.0.0.0/0"))).toBe(false);
  });

  test("prefixesOverlap is symmetric and means one covers the other", () => {
    const pairs: [string, string, boolean][] = [
      ["10.0.0.0/8", "10.1.0.0/16", true],
      ["10.0.0.0/16", "10.1.0.0/16", false],
      ["172.26.0.0/20", "172.26.15.0/24", true],
      ["172.26.0.0/20", "172.26.16.0/24", false],
      ["0.0.0.0/0", "192.0.2.0/24", true],
      ["fd00::/8", "fd00:1::/32", true],
      ["fd00::/16", "fd01::/16", false],
      ["::/0", "0.0.0.0/0", false],
    ];
    for (const [x, y, expected] of pairs) {
      expect(prefixesOverlap(p(x), p(y))).toBe(expected);
      expect(prefixesOverlap(p(y), p(x))).toBe(expected);
    }
  });
});

describe("byte helpers", () => {
  test("ipv4ToUint32 reads big-endian at an offset (an IPv4 header's destination is at 16)", () => {
    const header = new Uint8Array(20);
    header.set([172, 26, 0, 250], 16);
    expect(ipv4ToUint32(header, 16)).toBe(0xac1a00fa);
    expect(ipv4ToUint32(new Uint8Array([255, 255, 255, 255]))).toBe(0xffffffff);
    expect(ipv4ToUint32(new Uint8Array([0, 0, 0, 0]))).toBe(0);
    expect(() => ipv4ToUint32(header, 17)).toThrow(RangeError);
  });

  test("uint32ToIpv4 takes unsigned and signed 32-bit values", () => {
    expect(uint32ToIpv4(0xac1a00fa)).toBe("172.26.0.250");
    expect(uint32ToIpv4(0)).toBe("0.0.0.0");
    expect(uint32ToIpv4(0xffffffff)).toBe("255.255.255.255");
    expect(uint32ToIpv4(-1)).toBe("255.255.255.255");
    expect(uint32ToIpv4(0xc0000000 | 0)).toBe("192.0.0.0");
    expect(() => uint32ToIpv4(2 ** 32)).toThrow(RangeError);
    expect(() => uint32ToIpv4(1.5)).toThrow(RangeError);
  });

  test("addressFromBytes copies, so reusing the buffer does not change the address", () => {
    const buf = new Uint8Array([10, 0, 0, 1]);
    const a = addressFromBytes(buf);
    buf[3] = 2;
    expect(a.text).toBe("10.0.0.1");
    expect(a.family).toBe(4);
    expect([...a.bytes]).toEqual([10, 0, 0, 1]);
    const six = addressFromBytes(parseAddress("fd00::1").bytes);
    expect(six.family).toBe(6);
    expect(six.text).toBe("fd00::1");
    expect(() => addressFromBytes(new Uint8Array(5))).toThrow(RangeError);
    expect(() => formatAddress(new Uint8Array(0))).toThrow(RangeError);
  });

  test("parsed values are frozen", () => {
    expect(Object.isFrozen(parseAddress("10.0.0.1"))).toBe(true);
    expect(Object.isFrozen(parsePrefix("10.0.0.0/8"))).toBe(true);
  });

  test("prefixFromBytes validates like parsePrefix", () => {
    expect(prefixFromBytes(new Uint8Array([10, 1, 0, 0]), 16).text).toBe("10.1.0.0/16");
    expect(prefixFromBytes(new Uint8Array([10, 1, 2, 3]), 16, { mask: true }).text).toBe("10.1.0.0/16");
    expect(thrown(() => prefixFromBytes(new Uint8Array([10, 1, 2, 3]), 16)).message).toBe(
      `"10.1.2.3/16" is not a valid IPv4 prefix: host bits are set (did you mean 10.1.0.0/16?)`,
    );
    expect(thrown(() => prefixFromBytes(new Uint8Array(4), 33)).message).toBe(
      `"0.0.0.0/33" is not a valid IPv4 prefix: length 33 is out of range 0..32`,
    );
  });
});
