/**
 * @module test/router/windows.test
 * parseRoutePrint against recorded `route print` outputs (Windows 7, 8.1 German, 10, 11,
 * Server 2016; IPv4 and IPv6, persistent routes) and the WindowsRouter running the Router
 * contract over the state-modelling fake in fake-windows-runner.ts.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { isWaygateError } from "../../core/errors.ts";
import { interfaceMetric4, parseRoutePrint, windowsRouteArgv, windowsRouter } from "../../platform/windows/route.ts";
import { routerContract, type RouterEnv } from "../contract/router.contract.ts";
import { windowsFakeSystem } from "./fake-windows-runner.ts";

const fixture = (name: string) => readFileSync(new URL(`../fixtures/windows/${name}`, import.meta.url), "utf8");

describe("parseRoutePrint on recorded outputs", () => {
  test("every fixture names its source on the first line", () => {
    for (const f of ["windows-7-en", "windows-8.1-de", "windows-10-en", "windows-11-en", "windows-2016-en"]) {
      expect(fixture(`${f}-route-print.txt`).split("\n")[0]).toMatch(/^# source: \S+/);
    }
  });

  test("Windows 10 (Tailscale up): persistent IPv4 and IPv6 routes, metrics net of the interface metric", () => {
    const rp = parseRoutePrint(fixture("windows-10-en-route-print.txt"));
    expect(rp.interfaces).toEqual([
      { index: 28, mac: null, description: "Tailscale Tunnel" },
      { index: 12, mac: "00 1c 42 da 01 6a", description: "Parallels VirtIO Ethernet Adapter" },
      { index: 1, mac: null, description: "Software Loopback Interface 1" },
    ]);
    expect(rp.ipv4.active).toHaveLength(18);
    expect(rp.ipv4.active[1]).toEqual({
      destination: "10.0.0.0", netmask: "255.0.0.0", prefix: "10.0.0.0/8", gateway: "192.168.22.1", interfaceAddress: "10.211.55.3", metric: 16,
    });
    expect(rp.ipv4.active.find((r) => r.prefix === "10.211.55.0/24")!.gateway).toBeNull();
    expect(rp.ipv4.persistent.map((r) => `${r.prefix} ${r.gateway} ${r.metric}`)).toEqual([
      "10.0.1.0/24 192.168.22.1 1", "10.0.3.0/24 192.168.22.1 1", "10.0.4.0/24 192.168.22.1 1", "10.0.0.0/8 192.168.22.1 1",
    ]);
    // 271 on the interface's own host route = 256 + 15; the persistent metric 1 shows as 16.
    expect(interfaceMetric4(rp, "10.211.55.3")).toBe(15);
    expect(rp.ipv4.active[1]!.metric - interfaceMetric4(rp, "10.211.55.3")).toBe(rp.ipv4.persistent[3]!.metric!);
    expect(rp.ipv6.active.map((r) => `${r.ifIndex} ${r.metric} ${r.prefix} ${r.gateway}`)).toEqual([
      "1 331 ::1/128 null",
      "12 271 2001:db8::/64 fe80::1",
      "12 271 fdb2:2c26:f4e4::/64 null",
      "12 271 fdb2:2c26:f4e4:0:670f:fec7:75b7:eb83/128 null",
      "12 271 fdb2:2c26:f4e4:0:b4d5:8083:6ce6:37d/128 null",
      "12 271 fe80::/64 null",
      "12 271 fe80::4abd:fa70:3d36:83fd/128 null",
      "1 331 ff00::/8 null",
      "12 271 ff00::/8 null",
    ]);
    expect(rp.ipv6.persistent).toEqual([{ ifIndex: 0, metric: 4294967295, prefix: "2001:db8::/64", gateway: "fe80::1" }]);
  });

  test("Windows 7: 8-byte ISATAP addresses in the interface list, a wrapped IPv6 row", () => {
    const rp = parseRoutePrint(fixture("windows-7-en-route-print.txt"));
    expect(rp.interfaces.map((i) => [i.index, i.mac])).toEqual([[10, "00 0c 29 86 1e 1f"], [1, null], [11, "00 00 00 00 00 00 00 e0"]]);
    expect(rp.ipv4.active).toHaveLength(11);
    expect(rp.ipv4.persistent).toEqual([]);
    expect(rp.ipv6.active.find((r) => r.prefix === "fe80::c447:d1ef:c29f:c48c/128")).toEqual({
      ifIndex: 10, metric: 266, prefix: "fe80::c447:d1ef:c29f:c48c/128", gateway: null,
    });
  });

  test("Windows 8.1 German: 'Auf Verbindung', 'Ständige Routen', 'Keine', misaligned rows", () => {
    const rp = parseRoutePrint(fixture("windows-8.1-de-route-print.txt"));
    expect(rp.interfaces).toHaveLength(10);
    expect(rp.interfaces[1]).toEqual({ index: 41, mac: "28 b2 bd a7 67 00", description: "Virtueller Microsoft-Adapter für direktes WiFi" });
    expect(rp.ipv4.active).toHaveLength(26);
    expect(rp.ipv4.active.filter((r) => r.gateway !== null).map((r) => `${r.prefix} ${r.gateway}`)).toEqual(["0.0.0.0/0 192.168.2.1"]);
    expect(interfaceMetric4(rp, "192.168.2.111")).toBe(20);
    expect(rp.ipv4.persistent).toEqual([]);
    expect(rp.ipv6.active).toEqual([
      { ifIndex: 1, metric: 306, prefix: "::1/128", gateway: null },
      { ifIndex: 1, metric: 306, prefix: "ff00::/8", gateway: null },
    ]);
  });

  test("Windows 11 and Server 2016: gateway IPv6 routes, a persistent route whose metric is a word", () => {
    const w11 = parseRoutePrint(fixture("windows-11-en-route-print.txt"));
    expect(w11.interfaces).toHaveLength(11);
    expect(w11.ipv4.active).toHaveLength(21);
    expect(w11.ipv6.active).toHaveLength(16);
    expect(w11.ipv6.active[1]).toEqual({ ifIndex: 11, metric: 291, prefix: "fd18:4310:ad04:1::/64", gateway: "fe80::4600:49ff:fee1:c6ee" });
    const s16 = parseRoutePrint(fixture("windows-2016-en-route-print.txt"));
    expect(s16.ipv4.persistent).toEqual([{ destination: "0.0.0.0", netmask: "0.0.0.0", prefix: "0.0.0.0/0", gateway: "192.168.22.1", metric: null }]);
  });

  test("CRLF line ends parse the same as LF", () => {
    const text = fixture("windows-11-en-route-print.txt");
    expect(parseRoutePrint(text.replace(/\n/g, "\r\n"))).toEqual(parseRoutePrint(text));
  });

  test("a route row it cannot read is an E_ROUTE_PARSE error naming the line", () => {
    const text = fixture("windows-7-en-route-print.txt").replace("255.255.255.0         On-link     192.168.22.33    266", "255.255.0.255         On-link     192.168.22.33    266");
    const err = (() => { try { parseRoutePrint(text); } catch (e) { return e; } })();
    expect(isWaygateError(err) && err.code).toBe("E_ROUTE_PARSE");
    expect(String((err as Error).message)).toMatch(/line 17: netmask 255\.255\.0\.255 is not contiguous/);
    const garbled = fixture("windows-7-en-route-print.txt").replace("        127.0.0.0        255.0.0.0", "        127.0.0.0 x");
    expect(() => parseRoutePrint(garbled)).toThrow(/unrecognised route row/);
  });
});

describe("windows commands", () => {
  const tunnel = { interfaceName: "Waygate Tunnel", interfaceIndex: 23, addresses: ["100.64.0.2/32"] };
  test("route.exe for IPv4, netsh for IPv6, one command per change", () => {
    expect(windowsRouteArgv({ op: "add", route: { prefix: "10.1.0.0/16", target: { kind: "tunnel" }, metric: 10 } }, tunnel)).toEqual(
      ["route", "ADD", "10.1.0.0", "MASK", "255.255.0.0", "0.0.0.0", "METRIC", "10", "IF", "23"],
    );
    expect(windowsRouteArgv({ op: "delete", route: { prefix: "203.0.113.7/32", target: { kind: "gateway", gateway: "192.168.7.1", device: "192.168.7.2" }, metric: 10 } }, tunnel)).toEqual(
      ["route", "DELETE", "203.0.113.7", "MASK", "255.255.255.255", "192.168.7.1"],
    );
    expect(windowsRouteArgv({ op: "add", route: { prefix: "fd10::/48", target: { kind: "tunnel" }, metric: 10 } }, tunnel)).toEqual(
      ["netsh", "interface", "ipv6", "add", "route", "prefix=fd10::/48", "interface=23", "metric=10", "store=active"],
    );
  });

  test("a tunnel route without an interface index is a config error before any command", async () => {
    const fake = windowsFakeSystem();
    const router = windowsRouter({ runner: fake });
    const err = await router.set({ interfaceName: "Waygate Tunnel", routes: [{ prefix: "10.1.0.0/16" }] }).catch((e) => e);
    expect(isWaygateError(err) && err.code).toBe("E_CONFIG_INVALID");
    expect(fake.mutations).toBe(0);
  });

  test("the fake renders route print that parseRoutePrint reads back", () => {
    const fake = windowsFakeSystem();
    const rp = parseRoutePrint(fake.routePrint());
    expect(rp.interfaces.map((i) => i.index)).toEqual([12, 23, 1]);
    expect(rp.ipv4.active.find((r) => r.prefix === "10.20.0.0/16")).toMatchObject({ gateway: "192.168.7.254", metric: 36 });
    expect(rp.ipv4.persistent).toEqual([{ destination: "10.20.0.0", netmask: "255.255.0.0", prefix: "10.20.0.0/16", gateway: "192.168.7.254", metric: 1 }]);
    expect(rp.ipv6.active.find((r) => r.prefix === "::/0")).toEqual({ ifIndex: 12, metric: 35, prefix: "::/0", gateway: "fe80::1" });
  });
});

const WINDOWS_ENV: RouterEnv = {
  tunnel: { interfaceName: "Waygate Tunnel", interfaceIndex: 23, addresses: ["100.64.0.2/32"] },
  lan4: "192.168.7.0/24",
  gateway4: "192.168.7.1",
  lanHost4: "192.168.7.9",
  userRoute: "10.20.0.0/16",
  userGateway: "192.168.7.254",
  ipv6: { lan: "fd07::/64", gateway: "fe80::1", lanHost: "fd07::9" },
};

routerContract(
  "windows (route.exe + netsh over the fake)",
  async () => {
    const fake = windowsFakeSystem();
    const make = () => windowsRouter({ runner: fake, tunnel: WINDOWS_ENV.tunnel });
    return {
      router: make(),
      env: WINDOWS_ENV,
      dump: async () => fake.routePrint(),
      mutations: () => fake.mutations,
      resolve: async (dst) => fake.resolve(dst, 23),
      newRouter: make,
      cleanup: async () => {},
    };
  },
  { crashCleanup: "tunnel-only" },
);
