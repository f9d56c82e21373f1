/**
 * @module platform/linux/router
 * The Linux Router: `ip route` in the main table, every route we add tagged `proto 87`
 * (0x57, "W"; unassigned in /etc/iproute2/rt_protos), read back with `ip -j route show`.
 *
 * Why the main table and a protocol tag rather than a table of our own plus `ip rule`:
 * - The kernel's longest-prefix match then works across our routes and everybody else's. A rule
 *   that sends lookups to our table first (tailscale's table 52) makes our 10.0.0.0/8 beat the
 *   user's more specific 10.20.0.0/16 and our subnet beat the LAN's connected route: exactly the
 *   two things the router must never do. `suppress_prefixlength 0` (wg-quick) fixes that only for
 *   the default route and makes a user's less specific route beat our grant instead.
 * - The default route through the tunnel is the two /1 halves (core/router/router.ts): more
 *   specific than the user's default, which stays in place for the bypass host routes to the
 *   control plane and peer endpoints. No fwmark on the data plane's UDP socket is needed.
 * - failClosed is a `blackhole` pair one metric behind the tunnel halves: when the tunnel device
 *   disappears the kernel drops its routes and traffic hits the blackhole, not the old default.
 * - `proto 87` marks ownership, so a restarted agent's set(null) removes what a crashed one left
 *   (the contract suite's crash test), including bypass routes on other interfaces.
 * Bypass routes carry `onlink`: with allowLanAccess=false the LAN halves point into the tunnel, and
 * without `onlink` the kernel would refuse a gateway it can no longer reach through the LAN route.
 */
import { silentLogger, type Logger } from "../../core/log.ts";
import type { CommandRunner } from "../../core/runner.ts";
import {
  ReconcilingRouter,
  RouteParseError,
  toPrefix,
  type PlatformTraits,
  type Route,
  type RouteChange,
  type RouterBackend,
  type SystemRoute,
  type SystemView,
  type TunnelId,
} from "../../core/router/router.ts";

/** The `proto` number on every route we add. */
export const WAYGATE_ROUTE_PROTO = 87;

/** One element of `ip -j route show`, the fields we use. */
export interface IpRouteEntry {
  type?: string;
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  metric?: number;
  flags?: string[];
}

/** Parse `ip -j -4|-6 route show` output; prefixes come back canonical ("default" is /0). */
export function parseIpRouteJson(text: string, family: 4 | 6): (IpRouteEntry & { prefix: string })[] {
  let data: unknown;
  try {
    data = JSON.parse(text.trim() === "" ? "[]" : text);
  } catch {
    throw new RouteParseError("ip -j route", 1, text.slice(0, 200), "not JSON");
  }
  if (!Array.isArray(data)) throw new RouteParseError("ip -j route", 1, text.slice(0, 200), "not a JSON array");
  return data.map((raw, i) => {
    const e = raw as IpRouteEntry;
    if (typeof e !== "object" || e === null || typeof e.dst !== "string") {
      throw new RouteParseError("ip -j route", i + 1, JSON.stringify(raw), "entry without dst");
    }
    const prefix = e.dst === "default" ? (family === 4 ? "0.0.0.0/0" : "::/0") : toPrefix(e.dst).text;
    return { ...e, prefix };
  });
}

export class LinuxRouterBackend implements RouterBackend {
  readonly traits: PlatformTraits = { metrics: true, blackhole: true };

  constructor(
    private readonly runner: CommandRunner,
    private readonly proto: number = WAYGATE_ROUTE_PROTO,
  ) {}

  async read(tunnel: TunnelId | null): Promise<{ ours: Route[]; view: SystemView }> {
    const ours: Route[] = [];
    const routes: SystemRoute[] = [];
    for (const family of [4, 6] as const) {
      const out = await this.runner.run(["ip", "-j", `-${family}`, "route", "show", "table", "main"]);
      for (const e of parseIpRouteJson(out.stdout, family)) {
        const metric = e.metric ?? 0;
        if (e.protocol === String(this.proto)) {
          const target: Route["target"] =
            e.type === "blackhole"
              ? { kind: "blackhole" }
              : e.gateway !== undefined
                ? { kind: "gateway", gateway: e.gateway, device: e.dev ?? "" }
                : e.dev === tunnel?.interfaceName
                  ? { kind: "tunnel" }
                  : { kind: "link", device: e.dev ?? "" };
          ours.push({ prefix: e.prefix, target, metric });
          continue;
        }
        if ((e.type !== undefined && e.type !== "unicast") || e.dev === undefined || e.dev === tunnel?.interfaceName) continue;
        routes.push({
          prefix: e.prefix,
          device: e.dev,
          gateway: e.gateway,
          connected: e.gateway === undefined && (e.protocol === "kernel" || e.scope === "link"),
          metric,
        });
      }
    }
    return { ours, view: { routes } };
  }

  async apply(change: RouteChange, tunnel: TunnelId | null): Promise<void> {
    await this.runner.run(linuxRouteArgv(change, tunnel, this.proto));
  }
}

/** The one `ip route add|del` command for a change. */
export function linuxRouteArgv(change: RouteChange, tunnel: TunnelId | null, proto = WAYGATE_ROUTE_PROTO): string[] {
  const { route } = change;
  const family = route.prefix.includes(":") ? "-6" : "-4";
  const op = change.op === "add" ? "add" : "del";
  const tail = ["proto", String(proto), "metric", String(route.metric)];
  const t = route.target;
  switch (t.kind) {
    case "tunnel":
      if (!tunnel) throw new Error(`linux router: tunnel route ${route.prefix} without a tunnel interface`);
      return ["ip", family, "route", op, route.prefix, "dev", tunnel.interfaceName, ...tail];
    case "gateway":
      return ["ip", family, "route", op, route.prefix, "via", t.gateway, "dev", t.device, ...tail, "onlink"];
    case "link":
      return ["ip", family, "route", op, route.prefix, "dev", t.device, ...tail];
    case "blackhole":
      return ["ip", family, "route", op, "blackhole", route.prefix, ...tail];
  }
}

export interface LinuxRouterOptions {
  runner: CommandRunner;
  logger?: Logger;
  /** The tunnel whose leftovers a fresh set(null) should treat as tunnel routes. */
  tunnel?: TunnelId;
  proto?: number;
}

export function linuxRouter(options: LinuxRouterOptions): ReconcilingRouter {
  return new ReconcilingRouter(new LinuxRouterBackend(options.runner, options.proto), {
    logger: options.logger ?? silentLogger,
    name: "router(linux)",
    tunnel: options.tunnel,
  });
}
