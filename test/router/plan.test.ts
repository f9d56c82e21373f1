/**
 * @module test/router/plan.test
 * The pure planning functions every Router shares: deltaRoutes (make-before-break order),
 * planRoutes (LAN and foreign-route conflicts, split default, bypass, failClosed) and the
 * netmask helpers, checked against hand-worked cases and a brute-force oracle.
 */
import { describe, expect, test } from "bun:test";
import {
  deltaRoutes,
  lengthOfMask,
  maskOfLength,
  planRoutes,
  routeKey,
  splitPrefix,
  toPrefix,
  type Route,
  type SystemView,
} from "../../core/router/router.ts";
import { seededRandom } from "../contract/router.contract.ts";

const tun = (prefix: string, metric = 10): Route => ({ prefix, target: { kind: "tunnel" }, metric });
const view: SystemView = {
  routes: [
    { prefix: "0.0.0.0/0", device: "eth0", gateway: "192.168.7.1", metric: 100 },
    { prefix: "192.168.7.0/24", device: "eth0", connected: true },
    { prefix: "10.20.0.0/16", device: "eth0", gateway: "192.168.7.254" },
    { prefix: "127.0.0.0/8", device: "lo", connected: true },
    { prefix: "fe80::/64", device: "eth0", connected: true },
  ],
};
const linux = { metrics: true, blackhole: true };
const base = { interfaceName: "wg0" };

describe("deltaRoutes", () => {
  test("adds bypass before tunnel before blackhole; removes in reverse; replaced prefixes go first", () => {
    const have = [tun("0.0.0.0/1"), { prefix: "0.0.0.0/1", target: { kind: "blackhole" as const }, metric: 11 }, tun("10.1.0.0/16", 10)];
    const want = [tun("10.1.0.0/16", 20), tun("172.26.0.0/20"), { prefix: "203.0.113.7/32", target: { kind: "gateway" as const, gateway: "192.168.7.1", device: "eth0" }, metric: 10 }];
    expect(deltaRoutes(have, want).map((c) => `${c.op} ${routeKey(c.route)}`)).toEqual([
      "delete 10.1.0.0/16 tunnel metric 10",
      "add 203.0.113.7/32 via 192.168.7.1 dev eth0 metric 10",
      "add 10.1.0.0/16 tunnel metric 20",
      "add 172.26.0.0/20 tunnel metric 10",
      "delete 0.0.0.0/1 tunnel metric 10",
      "delete 0.0.0.0/1 blackhole metric 11",
    ]);
    expect(deltaRoutes(want, want)).toEqual([]);
  });

  test("applying the delta to `have` always yields `want` (seeded random sets)", () => {
    const random = seededRandom(42);
    const pool = ["10.0.0.0/8", "10.1.0.0/16", "172.26.0.0/20", "0.0.0.0/1", "fd10::/48"].flatMap((p) => [tun(p, 10), tun(p, 20)]);
    for (let round = 0; round < 200; round++) {
      const pick = () => pool.filter(() => random() < 0.4);
      const have = pick();
      const want = pick();
      const state = new Map(have.map((r) => [routeKey(r), r]));
      for (const c of deltaRoutes(have, want)) {
        if (c.op === "add") {
          expect(state.has(routeKey(c.route))).toBe(false);
          state.set(routeKey(c.route), c.route);
        } else {
          expect(state.delete(routeKey(c.route))).toBe(true);
        }
      }
      expect([...state.keys()].sort()).toEqual([...new Set(want.map(routeKey))].sort());
    }
  });
});

describe("planRoutes", () => {
  test("a bypass address not covered by any tunnel route gets no route", () => {
    const plan = planRoutes({ ...base, routes: [{ prefix: "10.1.0.0/16" }], bypass: ["203.0.113.7"] }, view, linux);
    expect(plan.want.map(routeKey)).toEqual(["10.1.0.0/16 tunnel metric 10"]);
  });

  test("a granted subnet inside the LAN is skipped, one containing it installed; both reported", () => {
    const plan = planRoutes({ ...base, routes: [{ prefix: "192.168.7.0/28" }, { prefix: "192.168.0.0/16", metric: 5 }] }, view, linux);
    expect(plan.want.map(routeKey)).toEqual(["192.168.0.0/16 tunnel metric 5"]);
    expect(plan.conflicts.map((c) => `${c.kind} ${c.prefix} ${c.other} ${c.action}`)).toEqual([
      "inside-lan 192.168.7.0/28 192.168.7.0/24 skipped",
      "contains-lan 192.168.0.0/16 192.168.7.0/24 installed",
    ]);
  });

  test("full tunnel: split halves, failClosed blackholes one metric behind, loopback never tunneled", () => {
    const plan = planRoutes({ ...base, routes: [{ prefix: "0.0.0.0/0" }], failClosed: true, allowLanAccess: false, bypass: ["203.0.113.7"] }, view, linux);
    expect(plan.want.map(routeKey)).toEqual([
      "0.0.0.0/1 blackhole metric 11",
      "0.0.0.0/1 tunnel metric 10",
      "128.0.0.0/1 blackhole metric 11",
      "128.0.0.0/1 tunnel metric 10",
      "192.168.7.0/25 tunnel metric 10",
      "192.168.7.128/25 tunnel metric 10",
      "203.0.113.7/32 via 192.168.7.1 dev eth0 metric 10",
    ]);
  });

  test("a bypass with no route outside the tunnel is reported, not looped", () => {
    const plan = planRoutes({ ...base, routes: [{ prefix: "::/0" }], bypass: ["2001:db8::7"] }, view, linux);
    expect(plan.conflicts.map((c) => `${c.kind} ${c.prefix} ${c.action}`)).toEqual(["no-gateway 2001:db8::7/128 skipped"]);
    expect(plan.want.map((r) => r.prefix)).toEqual(["::/1", "8000::/1"]);
  });

  test("duplicate grants keep the lowest metric; platforms without metrics get 0", () => {
    const cfg = { ...base, routes: [{ prefix: "10.1.0.0/16", metric: 30 }, { prefix: "10.1.0.0/16", metric: 7 }] };
    expect(planRoutes(cfg, view, linux).want.map(routeKey)).toEqual(["10.1.0.0/16 tunnel metric 7"]);
    expect(planRoutes(cfg, view, { metrics: false, blackhole: false }).want.map(routeKey)).toEqual(["10.1.0.0/16 tunnel metric 0"]);
  });

  test("bad input is a named error", () => {
    expect(() => planRoutes({ ...base, routes: [{ prefix: "10.1.0.0/16", metric: -1 }] }, view, linux)).toThrow(/E_CONFIG_INVALID|metric -1/);
    expect(() => planRoutes({ interfaceName: "", routes: [] }, view, linux)).toThrow(/interfaceName is required/);
    expect(() => planRoutes({ ...base, routes: [{ prefix: "10.1.0.1/16" }] }, view, linux)).toThrow(/host bits are set/);
  });
});

describe("prefix helpers", () => {
  test("netmask <-> length for every length; non-contiguous masks rejected", () => {
    for (let n = 0; n <= 32; n++) expect(lengthOfMask(maskOfLength(n))).toBe(n);
    expect(lengthOfMask("255.0.255.0")).toBeNull();
    expect(lengthOfMask("255.255.255")).toBeNull();
  });

  test("splitPrefix halves cover exactly the parent", () => {
    expect(splitPrefix(toPrefix("192.168.7.0/24"))!.map((p) => p.text)).toEqual(["192.168.7.0/25", "192.168.7.128/25"]);
    expect(splitPrefix(toPrefix("::/0"))!.map((p) => p.text)).toEqual(["::/1", "8000::/1"]);
    expect(splitPrefix(toPrefix("10.0.0.1/32"))).toBeNull();
  });
});
