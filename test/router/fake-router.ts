/**
 * @module test/router/fake-router
 * A pure in-memory system routing table and a Router over it: the reference the contract suite
 * is checked against without any OS. The table behaves like a kernel FIB: longest-prefix match,
 * lowest metric on a tie, duplicates refused, routes on an interface vanish when it goes down.
 */
import { prefixContainsAddress } from "../../core/net/address.ts";
import { parseAddress } from "../../core/net/address.ts";
import { silentLogger, type Logger } from "../../core/log.ts";
import {
  ReconcilingRouter,
  routeKey,
  sortRoutes,
  toPrefix,
  type PlatformTraits,
  type Route,
  type RouteChange,
  type RouterBackend,
  type SystemRoute,
  type TunnelId,
} from "../../core/router/router.ts";
import type { Hop, RouterEnv, RouterHarness } from "../contract/router.contract.ts";

export interface FibEntry {
  prefix: string;
  device?: string;
  gateway?: string;
  connected?: boolean;
  blackhole?: boolean;
  metric: number;
  owner: "ours" | "system";
}

export class FakeFib {
  entries: FibEntry[] = [];
  mutations = 0;

  text(): string {
    return sortRoutes(this.entries.map((e) => ({ ...toRoute(e), owner: e.owner })))
      .map((r) => `${routeKey(r)} ${r.owner}`)
      .join("\n");
  }

  add(e: FibEntry): void {
    if (this.entries.some((x) => same(x, e))) throw new Error(`fake fib: route exists: ${JSON.stringify(e)}`);
    this.entries.push(e);
  }

  remove(e: FibEntry): void {
    const i = this.entries.findIndex((x) => same(x, e));
    if (i < 0) throw new Error(`fake fib: no such route: ${JSON.stringify(e)}`);
    this.entries.splice(i, 1);
  }

  resolve(dst: string, tunnelDevice: string): Hop {
    const a = parseAddress(dst);
    const best = this.entries
      .filter((e) => prefixContainsAddress(toPrefix(e.prefix), a.bytes))
      .sort((x, y) => toPrefix(y.prefix).length - toPrefix(x.prefix).length || x.metric - y.metric)[0];
    if (!best || best.blackhole) return { kind: "blackhole" };
    if (best.device === tunnelDevice) return { kind: "tunnel" };
    if (best.gateway) return { kind: "gateway", gateway: best.gateway };
    return { kind: "link" };
  }
}

function same(a: FibEntry, b: FibEntry): boolean {
  return routeKey(toRoute(a)) === routeKey(toRoute(b));
}

function toRoute(e: FibEntry): Route {
  const target: Route["target"] = e.blackhole
    ? { kind: "blackhole" }
    : e.gateway
      ? { kind: "gateway", gateway: e.gateway, device: e.device! }
      : { kind: "link", device: e.device! };
  return { prefix: toPrefix(e.prefix).text, target, metric: e.metric };
}

/** The backend: ours are the entries marked "ours", everything else is the view. */
export class FakeRouterBackend implements RouterBackend {
  constructor(
    readonly fib: FakeFib,
    readonly traits: PlatformTraits = { metrics: true, blackhole: true },
  ) {}

  async read(tunnel: TunnelId | null): Promise<{ ours: Route[]; view: { routes: SystemRoute[] } }> {
    const ours = this.fib.entries
      .filter((e) => e.owner === "ours")
      .map((e) => {
        const r = toRoute(e);
        return tunnel && r.target.kind === "link" && r.target.device === tunnel.interfaceName
          ? { ...r, target: { kind: "tunnel" as const } }
          : r;
      });
    const routes = this.fib.entries
      .filter((e) => e.owner === "system" && !e.blackhole && e.device !== tunnel?.interfaceName)
      .map((e) => ({ prefix: e.prefix, device: e.device!, gateway: e.gateway, connected: e.connected, metric: e.metric }));
    return { ours, view: { routes } };
  }

  async apply(change: RouteChange, tunnel: TunnelId | null): Promise<void> {
    const r = change.route;
    const t = r.target;
    const entry: FibEntry = {
      prefix: r.prefix,
      metric: r.metric,
      owner: "ours",
      ...(t.kind === "blackhole" ? { blackhole: true } : {}),
      ...(t.kind === "tunnel" ? { device: tunnel!.interfaceName } : {}),
      ...(t.kind === "link" ? { device: t.device } : {}),
      ...(t.kind === "gateway" ? { device: t.device, gateway: t.gateway } : {}),
    };
    this.fib.mutations++;
    if (change.op === "add") this.fib.add(entry);
    else this.fib.remove(entry);
  }
}

export const FAKE_ENV: RouterEnv = {
  tunnel: { interfaceName: "wg0" },
  lan4: "192.168.7.0/24",
  gateway4: "192.168.7.1",
  lanHost4: "192.168.7.9",
  userRoute: "10.20.0.0/16",
  userGateway: "192.168.7.254",
  ipv6: { lan: "fd07::/64", gateway: "fe80::1", lanHost: "fd07::9" },
};

export function fakeSystem(): FakeFib {
  const fib = new FakeFib();
  const sys = (e: Omit<FibEntry, "owner">) => fib.entries.push({ ...e, owner: "system" });
  sys({ prefix: "0.0.0.0/0", device: "eth0", gateway: "192.168.7.1", metric: 100 });
  sys({ prefix: "192.168.7.0/24", device: "eth0", connected: true, metric: 100 });
  sys({ prefix: "10.20.0.0/16", device: "eth0", gateway: "192.168.7.254", metric: 0 });
  sys({ prefix: "100.64.0.0/10", device: "wg0", connected: true, metric: 0 });
  sys({ prefix: "::/0", device: "eth0", gateway: "fe80::1", metric: 100 });
  sys({ prefix: "fd07::/64", device: "eth0", connected: true, metric: 100 });
  sys({ prefix: "fe80::/64", device: "eth0", connected: true, metric: 256 });
  return fib;
}

export function fakeRouterHarness(logger: Logger = silentLogger): RouterHarness {
  const fib = fakeSystem();
  const make = () => new ReconcilingRouter(new FakeRouterBackend(fib), { logger, name: "router(fake)", tunnel: FAKE_ENV.tunnel });
  return {
    router: make(),
    env: FAKE_ENV,
    dump: async () => fib.text(),
    mutations: () => fib.mutations,
    resolve: async (dst) => fib.resolve(dst, FAKE_ENV.tunnel.interfaceName),
    tunnelDown: async () => {
      fib.entries = fib.entries.filter((e) => e.device !== FAKE_ENV.tunnel.interfaceName);
    },
    newRouter: make,
    cleanup: async () => {},
  };
}
