/**
 * @module test/contract/router.contract
 * The suite every Router runs, the in-memory fake included: Linux for real inside a network
 * namespace, Windows and macOS over their state-modelling fake runners. It checks behaviour
 * through the harness's own view of the system (a text dump of the whole table, a count of
 * mutating commands, and `resolve(dst)`: where the system would send a packet), never through
 * the router's opinion of itself alone.
 *
 * Every harness provides the same topology: a LAN (IPv4, optionally IPv6) with a default gateway,
 * a route someone else owns (userRoute via userGateway), and a tunnel interface.
 */
import { describe, expect, test } from "bun:test";
import { AddressError } from "../../core/errors.ts";
import {
  deltaRoutes,
  routeKey,
  type Route,
  type Router,
  type RouterConfig,
  type TunnelId,
} from "../../core/router/router.ts";

export type Hop =
  | { kind: "tunnel" }
  | { kind: "gateway"; gateway: string }
  | { kind: "link" }
  | { kind: "blackhole" };

export interface RouterEnv {
  tunnel: TunnelId;
  lan4: string;
  gateway4: string;
  /** A host on the LAN. */
  lanHost4: string;
  /** A route the user owns: never touched, always more specific than our 10.0.0.0/8 grant. */
  userRoute: string;
  userGateway: string;
  ipv6?: { lan: string; gateway: string; lanHost: string };
}

export interface RouterHarness {
  router: Router;
  env: RouterEnv;
  /** The whole routing state as text (ours and everybody else's). */
  dump(): Promise<string>;
  /** How many state-changing commands the router has issued so far. */
  mutations(): number;
  /** Where a packet to `dst` would go now. */
  resolve(dst: string): Promise<Hop>;
  /** Take the tunnel interface away the way the OS does (its routes vanish); for failClosed. */
  tunnelDown?(): Promise<void>;
  /** A second router over the same system, as after a crash and restart. */
  newRouter(): Router;
  cleanup(): Promise<void>;
}

export interface RouterContractOptions {
  /** What set(null) of a fresh router removes: everything we own, or only tunnel routes. */
  crashCleanup: "full" | "tunnel-only";
  timeoutMs?: number;
  /** The test function (root-only suites pass a rootTest wrapper). */
  test?: (name: string, fn: () => Promise<void>, timeoutMs?: number) => void;
  /** Seed for the shuffled replay. */
  seed?: number;
}

/** mulberry32: a tiny seeded PRNG, so a failing shuffle can be replayed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The configs the suite applies, built on the harness's topology. */
export function contractConfigs(env: RouterEnv): Record<string, RouterConfig> {
  const t = env.tunnel;
  const v6 = env.ipv6 !== undefined;
  return {
    split: { ...t, routes: [{ prefix: "10.1.0.0/16" }, { prefix: "172.26.0.0/20" }] },
    splitOther: {
      ...t,
      routes: [{ prefix: "10.1.0.0/16", metric: 20 }, { prefix: "100.70.0.0/16" }, ...(v6 ? [{ prefix: "fd10::/48" }] : [])],
    },
    full: {
      ...t,
      routes: [{ prefix: "0.0.0.0/0" }, ...(v6 ? [{ prefix: "::/0" }] : [])],
      bypass: ["203.0.113.7", "198.51.100.9", ...(v6 ? ["2001:db8::7"] : [])],
      allowLanAccess: true,
      failClosed: true,
    },
    conflicts: {
      ...t,
      routes: [
        { prefix: "192.168.0.0/16" },
        { prefix: env.lan4 },
        { prefix: env.userRoute },
        { prefix: "10.0.0.0/8" },
        { prefix: "10.1.0.0/16" },
      ],
    },
    noLan: {
      ...t,
      routes: [{ prefix: "0.0.0.0/0" }, ...(v6 ? [{ prefix: "::/0" }] : [])],
      bypass: ["203.0.113.7", ...(v6 ? ["2001:db8::7"] : [])],
      allowLanAccess: false,
    },
    empty: { ...t, routes: [] },
  };
}

const keys = (routes: readonly Route[]) => routes.map(routeKey);

export function routerContract(
  name: string,
  makeHarness: () => Promise<RouterHarness>,
  options: RouterContractOptions,
): void {
  const timeout = options.timeoutMs ?? 20_000;
  const it = options.test ?? ((n: string, fn: () => Promise<void>, ms?: number) => test(n, fn, ms));
  const withHarness = (fn: (h: RouterHarness) => Promise<void>) => async () => {
    const h = await makeHarness();
    try {
      await fn(h);
    } finally {
      await h.cleanup();
    }
  };

  describe(`Router contract: ${name}`, () => {
    it(
      "set(config) installs the granted subnets through the tunnel and nothing else",
      withHarness(async (h) => {
        const c = contractConfigs(h.env);
        const result = await h.router.set(c.split!);
        expect(result.changes.map((x) => x.op)).toEqual(["add", "add"]);
        const now = await h.router.current();
        expect(now.map((r) => `${r.prefix} ${r.target.kind}`)).toEqual(["10.1.0.0/16 tunnel", "172.26.0.0/20 tunnel"]);
        expect(await h.resolve("10.1.2.3")).toEqual({ kind: "tunnel" });
        expect(await h.resolve("172.26.0.250")).toEqual({ kind: "tunnel" });
        expect(await h.resolve("8.8.8.8")).toEqual({ kind: "gateway", gateway: h.env.gateway4 });
        expect(await h.resolve(h.env.lanHost4)).toEqual({ kind: "link" });
      }),
      timeout,
    );

    it(
      "set(same config) again issues no command and changes nothing",
      withHarness(async (h) => {
        const c = contractConfigs(h.env);
        for (const cfg of [c.split!, c.full!, c.conflicts!]) {
          await h.router.set(cfg);
          const dump = await h.dump();
          const before = h.mutations();
          const again = await h.router.set(structuredClone(cfg));
          expect(again.changes).toEqual([]);
          expect(h.mutations()).toBe(before);
          expect(await h.dump()).toBe(dump);
        }
      }),
      timeout,
    );

    it(
      "set(other config) applies exactly the delta, one command per change",
      withHarness(async (h) => {
        const c = contractConfigs(h.env);
        await h.router.set(c.split!);
        const have = await h.router.current();
        const before = h.mutations();
        const result = await h.router.set(c.splitOther!);
        const after = await h.router.current();
        expect(keys(result.changes.map((x) => x.route))).toEqual(keys(deltaRoutes(have, after).map((x) => x.route)));
        expect(h.mutations() - before).toBe(result.changes.length);
        // 172.26.0.0/20 went away, 100.70.0.0/16 came; 10.1.0.0/16 stayed (re-added only if metrics exist)
        expect(result.changes.filter((x) => x.op === "delete").map((x) => x.route.prefix)).toContain("172.26.0.0/20");
        expect(result.changes.filter((x) => x.op === "add").map((x) => x.route.prefix)).toContain("100.70.0.0/16");
        const tenOne = result.changes.filter((x) => x.route.prefix === "10.1.0.0/16");
        expect(tenOne.length).toBe(h.router.traits.metrics ? 2 : 0);
        expect(await h.resolve("172.26.0.250")).toEqual({ kind: "gateway", gateway: h.env.gateway4 });
        expect(await h.resolve("100.70.1.1")).toEqual({ kind: "tunnel" });
        if (h.env.ipv6) expect(await h.resolve("fd10::1")).toEqual({ kind: "tunnel" });
      }),
      timeout,
    );

    it(
      "set(null) removes everything we own: the dump equals the initial one",
      withHarness(async (h) => {
        const c = contractConfigs(h.env);
        const initial = await h.dump();
        for (const cfg of [c.split!, c.full!, c.noLan!, c.conflicts!]) {
          await h.router.set(cfg);
          expect(await h.dump()).not.toBe(initial);
          const result = await h.router.set(null);
          expect(result.changes.every((x) => x.op === "delete")).toBe(true);
          expect(await h.router.current()).toEqual([]);
          expect(await h.dump()).toBe(initial);
        }
        const before = h.mutations();
        expect((await h.router.set(null)).changes).toEqual([]);
        expect(h.mutations()).toBe(before);
      }),
      timeout,
    );

    it(
      "others' routes and the LAN are never replaced; every conflict is reported",
      withHarness(async (h) => {
        const c = contractConfigs(h.env);
        const { conflicts } = await h.router.set(c.conflicts!);
        const byKind = (k: string) => conflicts.filter((x) => x.kind === k).map((x) => x.prefix);
        expect(byKind("equals-lan")).toEqual([h.env.lan4]);
        expect(byKind("contains-lan")).toEqual(["192.168.0.0/16"]);
        expect(byKind("exists")).toEqual([h.env.userRoute]);
        expect(byKind("more-specific-kept")).toEqual(["10.0.0.0/8"]);
        expect(conflicts.find((x) => x.kind === "equals-lan")!.action).toBe("skipped");
        const ours = (await h.router.current()).map((r) => r.prefix);
        expect(ours).toEqual(["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16"]);
        // The LAN stays local, the user's route keeps its gateway, the rest goes to the tunnel.
        expect(await h.resolve(h.env.lanHost4)).toEqual({ kind: "link" });
        const userHost = h.env.userRoute.replace(/\.0\/\d+$/, ".1");
        expect(await h.resolve(userHost)).toEqual({ kind: "gateway", gateway: h.env.userGateway });
        expect(await h.resolve("10.30.0.1")).toEqual({ kind: "tunnel" });
        expect(await h.resolve("192.168.200.1")).toEqual({ kind: "tunnel" });
      }),
      timeout,
    );

    it(
      "default route through the tunnel keeps bypass addresses and the LAN outside it",
      withHarness(async (h) => {
        const c = contractConfigs(h.env);
        const { conflicts } = await h.router.set(c.full!);
        expect(await h.resolve("8.8.8.8")).toEqual({ kind: "tunnel" });
        expect(await h.resolve("203.0.113.7")).toEqual({ kind: "gateway", gateway: h.env.gateway4 });
        expect(await h.resolve("198.51.100.9")).toEqual({ kind: "gateway", gateway: h.env.gateway4 });
        expect(await h.resolve("203.0.113.8")).toEqual({ kind: "tunnel" });
        expect(await h.resolve(h.env.lanHost4)).toEqual({ kind: "link" });
        const userHost = h.env.userRoute.replace(/\.0\/\d+$/, ".1");
        expect(await h.resolve(userHost)).toEqual({ kind: "gateway", gateway: h.env.userGateway });
        if (h.env.ipv6) {
          expect(await h.resolve("2606:4700::1111")).toEqual({ kind: "tunnel" });
          expect(await h.resolve("2001:db8::7")).toEqual({ kind: "gateway", gateway: h.env.ipv6.gateway });
          expect(await h.resolve(h.env.ipv6.lanHost)).toEqual({ kind: "link" });
        }
        if (h.router.traits.blackhole) {
          expect(conflicts.filter((x) => x.kind === "unsupported")).toEqual([]);
          if (h.tunnelDown) {
            await h.tunnelDown();
            expect(await h.resolve("8.8.8.8")).toEqual({ kind: "blackhole" });
            expect(await h.resolve("203.0.113.7")).toEqual({ kind: "gateway", gateway: h.env.gateway4 });
          }
        } else {
          // Not expressible with this route tool: reported, never silently ignored.
          expect(conflicts.filter((x) => x.kind === "unsupported").map((x) => x.action)).not.toEqual([]);
        }
      }),
      timeout,
    );

    it(
      "allowLanAccess=false sends the LAN into the tunnel but keeps the bypass outside",
      withHarness(async (h) => {
        const c = contractConfigs(h.env);
        await h.router.set(c.noLan!);
        expect(await h.resolve(h.env.lanHost4)).toEqual({ kind: "tunnel" });
        expect(await h.resolve("203.0.113.7")).toEqual({ kind: "gateway", gateway: h.env.gateway4 });
        expect(await h.resolve("8.8.8.8")).toEqual({ kind: "tunnel" });
        if (h.env.ipv6) {
          expect(await h.resolve(h.env.ipv6.lanHost)).toEqual({ kind: "tunnel" });
          expect(await h.resolve("2001:db8::7")).toEqual({ kind: "gateway", gateway: h.env.ipv6.gateway });
        }
      }),
      timeout,
    );

    it(
      "replaying configs in a seeded shuffled order gives the state of a fresh apply each time",
      withHarness(async (h) => {
        const c = contractConfigs(h.env);
        const names = Object.keys(c);
        const random = seededRandom(options.seed ?? 0x5eed);
        const initial = await h.dump();
        const order = Array.from({ length: 10 }, () => names[Math.floor(random() * names.length)]!);
        const seen: string[] = [];
        for (const n of order) {
          await h.router.set(c[n]!);
          seen.push(n);
          const replayed = await h.dump();
          const replayedRoutes = keys(await h.router.current());
          await h.router.set(null);
          expect(await h.dump()).toBe(initial);
          await h.router.set(c[n]!);
          expect({ after: seen.join(" > "), dump: await h.dump() }).toEqual({ after: seen.join(" > "), dump: replayed });
          expect(keys(await h.router.current())).toEqual(replayedRoutes);
        }
        await h.router.set(null);
        expect(await h.dump()).toBe(initial);
      }),
      timeout,
    );

    it(
      "a new router (after a crash) cleans up what the old one left",
      withHarness(async (h) => {
        const c = contractConfigs(h.env);
        const initial = await h.dump();
        await h.router.set(c.full!);
        const fresh = h.newRouter();
        await fresh.set(null);
        expect(await h.resolve("8.8.8.8")).toEqual({ kind: "gateway", gateway: h.env.gateway4 });
        expect(await h.resolve("10.1.2.3")).not.toEqual({ kind: "tunnel" });
        if (options.crashCleanup === "full") expect(await h.dump()).toBe(initial);
      }),
      timeout,
    );

    it(
      "an invalid config throws a named error and changes nothing",
      withHarness(async (h) => {
        const initial = await h.dump();
        const before = h.mutations();
        const bad = { ...h.env.tunnel, routes: [{ prefix: "10.1.0.0/16" }, { prefix: "10.0.0.1/8" }] };
        const err = await h.router.set(bad).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(AddressError);
        expect((err as AddressError).code).toBe("E_PREFIX_INVALID");
        expect(h.mutations()).toBe(before);
        expect(await h.dump()).toBe(initial);
      }),
      timeout,
    );
  });
}
