/**
 * @module test/router/darwin.test
 * parseNetstat against recorded `netstat -rn` outputs (macOS 10.14 with -l, macOS 14, wg-quick's
 * own routes) and the DarwinRouter running the Router contract over the state-modelling fake in
 * fake-darwin-runner.ts.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { isWaygateError } from "../../core/errors.ts";
import { toPrefix } from "../../core/router/router.ts";
import { darwinRouteArgv, darwinRouter, expandDarwinDestination4, parseNetstat } from "../../platform/darwin/route.ts";
import { routerContract, type RouterEnv } from "../contract/router.contract.ts";
import { darwinDestination4, darwinFakeSystem } from "./fake-darwin-runner.ts";

const fixture = (name: string) => readFileSync(new URL(`../fixtures/darwin/${name}`, import.meta.url), "utf8");

describe("parseNetstat on recorded outputs", () => {
  test("every fixture names its source on the first line", () => {
    for (const f of ["macos-10.14-netstat-rnl.txt", "macos-14.0-netstat-rn.txt", "macos-wg-quick-netstat-rn-inet.txt"]) {
      expect(fixture(f).split("\n")[0]).toMatch(/^# source: \S+/);
    }
  });

  test("macOS 14: abbreviated destinations, link#N gateways, scoped IPv6, Expire column", () => {
    const ns = parseNetstat(fixture("macos-14.0-netstat-rn.txt"));
    expect(ns.ipv4).toHaveLength(14);
    expect(ns.ipv6).toHaveLength(43);
    expect(ns.ipv4.map((r) => `${r.destination}=${r.prefix}`)).toEqual([
      "default=0.0.0.0/0", "10.110.1/24=10.110.1.0/24", "10.110.1.1/32=10.110.1.1/32", "10.110.1.1=10.110.1.1/32",
      "10.110.1.106/32=10.110.1.106/32", "10.110.1.255=10.110.1.255/32", "127=127.0.0.0/8", "127.0.0.1=127.0.0.1/32",
      "169.254=169.254.0.0/16", "169.254.169.254=169.254.169.254/32", "224.0.0/4=224.0.0.0/4", "224.0.0.251=224.0.0.251/32",
      "239.255.255.250=239.255.255.250/32", "255.255.255.255/32=255.255.255.255/32",
    ]);
    expect(ns.ipv4[0]).toEqual({
      family: 4, destination: "default", prefix: "0.0.0.0/0", gateway: "10.110.1.1", gatewayAddress: "10.110.1.1", flags: "UGScg", netif: "en0", expire: null,
    });
    expect(ns.ipv4[1]).toMatchObject({ gateway: "link#13", gatewayAddress: null, flags: "UCS", netif: "en0", expire: "!" });
    expect(ns.ipv4[3]).toMatchObject({ gateway: "58:ef:68:58:68:20", gatewayAddress: null, flags: "UHLWIir", expire: "1199" });
    expect(ns.ipv6[0]).toMatchObject({ prefix: "::/0", gateway: "fe80::%utun0", gatewayAddress: "fe80::%utun0", netif: "utun0" });
    expect(ns.ipv6.find((r) => r.destination === "fe80::%utun3/64")).toMatchObject({ prefix: "fe80::/64", netif: "utun3", flags: "UcI" });
    expect(ns.ipv6.find((r) => r.destination === "ff01::%en0/32")!.prefix).toBe("ff01::/32");
  });

  test("macOS 10.14 with -l: Refs, Use and Mtu columns before Netif", () => {
    const ns = parseNetstat(fixture("macos-10.14-netstat-rnl.txt"));
    expect(ns.ipv4[0]).toMatchObject({ prefix: "0.0.0.0/0", gateway: "192.168.1.254", flags: "UGSc", netif: "en0" });
    expect(ns.ipv4.find((r) => r.destination === "192.168.71")).toMatchObject({ prefix: "192.168.71.0/24", netif: "vmnet8", expire: "!" });
    expect(ns.ipv4.find((r) => r.destination === "192.168.1.255")).toMatchObject({ flags: "UHLWbI", netif: "en0" });
    expect(ns.ipv6.find((r) => r.destination === "default" && r.netif === "en0")!.gatewayAddress).toBe("fe80::feae:34ff:fea1:3a80%en0");
    expect([ns.ipv4.length, ns.ipv6.length]).toEqual([30, 59]);
  });

  test("wg-quick's -interface routes: 0/1 is 0.0.0.0/1 with the interface as gateway", () => {
    const ns = parseNetstat(fixture("macos-wg-quick-netstat-rn-inet.txt"));
    expect(ns.ipv4.map((r) => [r.prefix, r.gateway, r.gatewayAddress, r.flags, r.netif])).toEqual([
      ["0.0.0.0/1", "utun0", null, "UScg", "utun0"],
      ["0.0.0.0/0", "link#25", null, "UCSIg", "utun0"],
    ]);
  });

  test("BSD destination abbreviation round-trips for every prefix length", () => {
    for (const cidr of ["0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/8", "10.9.0.0/24", "10.110.1.0/24", "172.26.0.0/20", "169.254.0.0/16",
      "192.168.7.0/24", "192.168.7.0/25", "192.168.7.128/25", "224.0.0.0/4", "255.255.255.255/32", "100.70.0.0/16", "10.1.0.0/16"]) {
      const p = toPrefix(cidr);
      const shown = darwinDestination4(p, false);
      expect(expandDarwinDestination4(shown, false)).toBe(cidr);
    }
    expect(darwinDestination4(toPrefix("10.9.0.0/24"), false)).toBe("10.9/24");
    expect(darwinDestination4(toPrefix("224.0.0.0/4"), false)).toBe("224.0.0/4");
    expect(darwinDestination4(toPrefix("127.0.0.0/8"), false)).toBe("127");
    expect(darwinDestination4(toPrefix("128.0.0.0/1"), false)).toBe("128.0/1");
  });

  test("hostnames (netstat -r without -n) and shapeless lines are E_ROUTE_PARSE errors", () => {
    const named = "Routing tables\n\nInternet:\nDestination        Gateway            Flags        Netif Expire\nlocalhost          localhost          UH             lo0\n";
    const err = (() => { try { parseNetstat(named); } catch (e) { return e; } })();
    expect(isWaygateError(err) && err.code).toBe("E_ROUTE_PARSE");
    expect(String((err as Error).message)).toMatch(/line 5: destination is not numeric/);
    expect(() => parseNetstat("Internet:\nfoo bar\n")).toThrow(/column header/);
  });
});

describe("darwin commands", () => {
  const t = { interfaceName: "utun3" };
  test("route -n with -net/-host, -inet6 and -interface", () => {
    expect(darwinRouteArgv({ op: "add", route: { prefix: "10.1.0.0/16", target: { kind: "tunnel" }, metric: 0 } }, t)).toEqual(
      ["route", "-n", "add", "-net", "10.1.0.0/16", "-interface", "utun3"]);
    expect(darwinRouteArgv({ op: "delete", route: { prefix: "2001:db8::7/128", target: { kind: "gateway", gateway: "fe80::1%en0", device: "en0" }, metric: 0 } }, t)).toEqual(
      ["route", "-n", "delete", "-inet6", "-host", "2001:db8::7", "fe80::1%en0"]);
  });

  test("the fake's netstat -rn reads back through parseNetstat", () => {
    const fake = darwinFakeSystem();
    const ns = parseNetstat(fake.netstat());
    expect(ns.ipv4.find((r) => r.prefix === "10.20.0.0/16")).toMatchObject({ destination: "10.20/16", gatewayAddress: "192.168.7.254", netif: "en0" });
    expect(ns.ipv6.find((r) => r.prefix === "::/0")).toMatchObject({ gatewayAddress: "fe80::1%en0", netif: "en0" });
  });

  test("a failing route command surfaces as E_COMMAND_FAILED with route's message", async () => {
    const fake = darwinFakeSystem();
    await fake.run(["route", "-n", "add", "-net", "10.1.0.0/16", "-interface", "utun3"]);
    const err = await fake.run(["route", "-n", "add", "-net", "10.1.0.0/16", "-interface", "utun3"]).catch((e) => e);
    expect(isWaygateError(err) && err.code).toBe("E_COMMAND_FAILED");
    expect(String(err.message)).toMatch(/File exists/);
    expect(() => fake.run(["route", "add", "10.1.0.0/16"])).toThrow(/unexpected command/);
  });
});

const DARWIN_ENV: RouterEnv = {
  tunnel: { interfaceName: "utun3" },
  lan4: "192.168.7.0/24",
  gateway4: "192.168.7.1",
  lanHost4: "192.168.7.9",
  userRoute: "10.20.0.0/16",
  userGateway: "192.168.7.254",
  ipv6: { lan: "fd07::/64", gateway: "fe80::1", lanHost: "fd07::9" },
};

routerContract(
  "darwin (route -n over the fake)",
  async () => {
    const fake = darwinFakeSystem();
    const make = () => darwinRouter({ runner: fake, tunnel: DARWIN_ENV.tunnel });
    return {
      router: make(),
      env: DARWIN_ENV,
      dump: async () => fake.netstat(),
      mutations: () => fake.mutations,
      resolve: async (dst) => fake.resolve(dst, "utun3"),
      newRouter: make,
      cleanup: async () => {},
    };
  },
  { crashCleanup: "tunnel-only" },
);
