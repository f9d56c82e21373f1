/**
 * @module test/wire/wg-config
 * wg-quick config parsing: a full file, case-insensitive keys, comments, repeated and
 * comma-separated lists, endpoints in every form, and errors naming file, line and key.
 */
import { describe, expect, test } from "bun:test";
import { WgConfigError, parseWgConfig } from "../../core/wire/wg-config.ts";

const SK = "oB5vK/0Pvo2SPRrc65ZIjN+ap30pxILdKAwQeI+VzFk=";
const PK1 = "www5MrbYq4EHZJx50mKMShkucSDfL6B1P/fmcGk+hRs=";
const PK2 = "Han7QCMy8sK2EPbTYhKEcYc/wistNRA2/GTGnnCpLxk=";
const PSK = "GIRt695H56tXVrC5vdHd3wYpTYtpVy7uNRBZQYJ6ZHs=";

function errorOf(text: string): WgConfigError {
  try {
    parseWgConfig(text, "wg0.conf");
  } catch (e) {
    expect(e).toBeInstanceOf(WgConfigError);
    expect((e as WgConfigError).code).toBe("E_CONFIG_INVALID");
    return e as WgConfigError;
  }
  throw new Error("expected a WgConfigError");
}

describe("parseWgConfig", () => {
  test("a full wg-quick file", () => {
    const cfg = parseWgConfig(
      `# client config
[Interface]
PrivateKey = ${SK}
Address = 10.0.0.2/24, fd00::2/64
address = 10.0.1.2        # repeated, bare address
ListenPort = 51820
MTU = 1380
DNS = 1.1.1.1, 2606:4700:4700::1111, corp.example
PostUp = iptables -A FORWARD -i %i -j ACCEPT
PostUp = echo up

[Peer]
PublicKey = ${PK1}
PresharedKey = ${PSK}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25

[peer]
publickey=${PK2}
allowedips = 10.0.0.3/32
ALLOWEDIPS = 192.168.7.1/24
endpoint = [2001:DB8::1]:51821
persistentkeepalive = off
`,
      "client.conf",
    );
    expect(cfg).toEqual({
      interface: {
        privateKey: SK,
        addresses: ["10.0.0.2/24", "fd00::2/64", "10.0.1.2/32"],
        listenPort: 51820,
        mtu: 1380,
        dns: ["1.1.1.1", "2606:4700:4700::1111", "corp.example"],
        extra: { PostUp: ["iptables -A FORWARD -i %i -j ACCEPT", "echo up"] },
      },
      peers: [
        {
          publicKey: PK1,
          presharedKey: PSK,
          allowedIps: ["0.0.0.0/0", "::/0"],
          endpoint: { host: "vpn.example.com", port: 51820 },
          persistentKeepalive: 25,
          line: 12,
        },
        {
          publicKey: PK2,
          allowedIps: ["10.0.0.3/32", "192.168.7.0/24"],
          endpoint: { host: "2001:db8::1", port: 51821 },
          line: 19,
        },
      ],
    });
  });

  test("an IPv4 endpoint and a minimal file", () => {
    const cfg = parseWgConfig(`[Interface]\nPrivateKey=${SK}\n[Peer]\nPublicKey=${PK1}\nEndpoint=192.0.2.1:51820\n`);
    expect(cfg.peers[0]!.endpoint).toEqual({ host: "192.0.2.1", port: 51820 });
    expect(cfg.peers[0]!.allowedIps).toEqual([]);
    expect(cfg.interface.listenPort).toBeUndefined();
  });

  const I = `[Interface]\nPrivateKey = ${SK}\n`;
  const cases: [string, string, number, string | null, RegExp][] = [
    ["bad key", `[Interface]\nPrivateKey = abc\n`, 2, "PrivateKey", /44 characters/],
    ["missing private key", `[Interface]\nListenPort = 1\n`, 1, "PrivateKey", /missing/],
    ["unknown key", `${I}Colour = blue\n`, 3, "Colour", /not a key of \[Interface\]/],
    ["unknown section", `${I}[Peers]\n`, 3, null, /unknown section/],
    ["no equals", `${I}ListenPort\n`, 3, null, /Key = Value/],
    ["key before section", `ListenPort = 1\n${I}`, 1, "ListenPort", /before any/],
    ["port out of range", `${I}ListenPort = 70000\n`, 3, "ListenPort", /0\.\.65535/],
    ["mtu too small", `${I}MTU = 100\n`, 3, "MTU", /576/],
    ["duplicate single key", `${I}ListenPort = 1\nListenPort = 2\n`, 4, "ListenPort", /twice \(first on line 3\)/],
    ["bad address", `${I}Address = 10.0.0.300/24\n`, 3, "Address", /not an address/],
    ["bad address length", `${I}Address = 10.0.0.1/33\n`, 3, "Address", /0\.\.32/],
    ["bad allowed ip", `${I}[Peer]\nPublicKey = ${PK1}\nAllowedIPs = 10.0.0.0/8, nope\n`, 5, "AllowedIPs", /"nope"/],
    ["unbracketed v6 endpoint", `${I}[Peer]\nPublicKey = ${PK1}\nEndpoint = 2001:db8::1:51820\n`, 5, "Endpoint", /bracketed/],
    ["endpoint without port", `${I}[Peer]\nPublicKey = ${PK1}\nEndpoint = host.example\n`, 5, "Endpoint", /host:port/],
    ["endpoint port 0", `${I}[Peer]\nPublicKey = ${PK1}\nEndpoint = 192.0.2.1:0\n`, 5, "Endpoint", /1\.\.65535/],
    ["bad keepalive", `${I}[Peer]\nPublicKey = ${PK1}\nPersistentKeepalive = soon\n`, 5, "PersistentKeepalive", /off/],
    ["peer without key", `${I}[Peer]\nAllowedIPs = 10.0.0.1/32\n`, 3, "PublicKey", /missing/],
    ["duplicate peer", `${I}[Peer]\nPublicKey = ${PK1}\n[Peer]\nPublicKey = ${PK1}\n`, 6, "PublicKey", /line 3/],
    ["non-canonical key", `${I}[Peer]\nPublicKey = ${PK1.slice(0, 42)}x=\n`, 4, "PublicKey", /base64/],
    ["second interface", `${I}[Interface]\n`, 3, null, /second \[Interface\]/],
  ];
  for (const [name, text, line, key, why] of cases) {
    test(`error: ${name}`, () => {
      const e = errorOf(text);
      expect({ file: e.file, line: e.line, key: e.key }).toEqual({ file: "wg0.conf", line, key });
      expect(e.message).toStartWith(`wg0.conf:${line}: ${key === null ? "" : `${key}: `}`);
      expect(e.message).toMatch(why);
    });
  }
});
