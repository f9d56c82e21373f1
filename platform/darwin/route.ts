/**
 * @module platform/darwin/route
 * The macOS Router, and `parseNetstat` for `netstat -rn` output (tested on Linux against
 * recorded outputs in test/fixtures/darwin/).
 *
 * Commands (as wg-quick uses them on macOS):
 * - read: `netstat -rn` (Internet: and Internet6: sections)
 * - tunnel: `route -n add|delete [-inet6] -net <prefix> -interface <utunN>` (`-host` for /32, /128)
 * - bypass: `route -n add|delete [-inet6] -host <addr> <gateway>`; to a LAN host without a
 *   gateway: `-interface <en0>`.
 * BSD routes have no metric (one route per destination), so RouteSpec.metric is ignored here,
 * and a blackhole cannot sit beside the tunnel route for the same prefix: failClosed is reported
 * as unsupported (the firewall has to do it).
 *
 * Reading netstat: destinations are abbreviated the BSD way (netname() + domask()): trailing zero
 * octets are dropped down to the address's classful network, and "/len" is printed only when the
 * mask differs from the classful one: "10/8" is never printed ("10" is 10.0.0.0/8), "10.9/24"
 * is 10.9.0.0/24, "224.0.0/4", "169.254" (/16), "192.168.1" (/24), "0/1", "128.0/1";
 * a bare 4-octet address is a host. IPv6 link-local destinations carry a scope ("fe80::%utun3/64").
 * Columns are found from the header, which differs by release (Refs/Use before Catalina, Mtu with -l).
 *
 * Ownership: routes on the tunnel interface with the S (static) flag are ours; the kernel's own
 * routes there (the address's UH route, link-local) are not. Bypass routes on the LAN interface
 * are recognised while this process remembers adding them; after a crash set(null) removes the
 * tunnel routes, and a leftover host route to a peer is harmless.
 */
import { silentLogger, type Logger } from "../../core/log.ts";
import type { CommandRunner } from "../../core/runner.ts";
import { parseAddress, type Family } from "../../core/net/address.ts";
import {
  ReconcilingRouter,
  RouteParseError,
  routeKey,
  trackOwnedBypass,
  toPrefix,
  type PlatformTraits,
  type Route,
  type RouteChange,
  type RouterBackend,
  type SystemRoute,
  type SystemView,
  type TunnelId,
} from "../../core/router/router.ts";

export interface NetstatRoute {
  family: Family;
  /** As printed: "10.9/24", "default", "fe80::%utun3/64". */
  destination: string;
  /** Canonical CIDR. */
  prefix: string;
  /** As printed: an address, "link#13", a MAC, or an interface name. */
  gateway: string;
  /** The gateway when it is an IP address (scope kept: "fe80::1%en0"), else null. */
  gatewayAddress: string | null;
  flags: string;
  netif: string;
  expire: string | null;
}

export interface Netstat {
  ipv4: NetstatRoute[];
  ipv6: NetstatRoute[];
}

/** Expand a netstat -rn IPv4 destination into a CIDR. */
export function expandDarwinDestination4(text: string, host: boolean): string {
  if (text === "default") return "0.0.0.0/0";
  const [net, len] = text.split("/");
  const octets = net!.split(".");
  if (octets.length < 1 || octets.length > 4 || octets.some((o) => !/^\d{1,3}$/.test(o) || Number(o) > 255)) {
    throw new Error(`not an IPv4 destination`);
  }
  while (octets.length < 4) octets.push("0");
  const first = Number(octets[0]);
  let length: number;
  if (len !== undefined) length = Number(len);
  else if (host || net!.split(".").length === 4) length = 32;
  else length = first < 128 ? 8 : first < 192 ? 16 : 24;
  return toPrefix(`${octets.join(".")}/${length}`).text;
}

function expandDarwinDestination6(text: string): string {
  if (text === "default") return "::/0";
  const [addr, len] = text.split("/");
  const bare = addr!.replace(/%[^/]*$/, "");
  return toPrefix(len === undefined ? bare : `${bare}/${len}`).text;
}

function gatewayAddress(gateway: string, family: Family): string | null {
  const bare = gateway.replace(/%.*$/, "");
  try {
    parseAddress(bare, { family });
    return gateway;
  } catch {
    return null;
  }
}

/** Parse `netstat -rn` (optionally with -l, any macOS release); `# source:` lines on top are skipped. */
export function parseNetstat(text: string): Netstat {
  const lines = text.split(/\r?\n/);
  const out: Netstat = { ipv4: [], ipv6: [] };
  let family: Family | null = null;
  let columns: string[] | null = null;
  let i = 0;
  while (i < lines.length && lines[i]!.startsWith("# source:")) i++;
  for (; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line === "Routing tables") continue;
    if (line === "Internet:" || line === "Internet6:") {
      family = line === "Internet:" ? 4 : 6;
      columns = null;
      continue;
    }
    if (family === null) throw new RouteParseError("netstat -rn", i + 1, lines[i]!, "text before the Internet: section");
    const tokens = line.split(/\s+/);
    if (columns === null) {
      if (tokens[0] !== "Destination" || !tokens.includes("Netif") || !tokens.includes("Flags")) {
        throw new RouteParseError("netstat -rn", i + 1, lines[i]!, "expected the column header");
      }
      columns = tokens;
      continue;
    }
    const at = (name: string) => {
      const k = columns!.indexOf(name);
      return k < 0 ? undefined : tokens[k];
    };
    const destination = tokens[0]!;
    const gateway = at("Gateway");
    const flags = at("Flags");
    const netif = at("Netif");
    if (gateway === undefined || flags === undefined || netif === undefined || tokens.length > columns.length) {
      throw new RouteParseError("netstat -rn", i + 1, lines[i]!, `expected ${columns.join(" ")}`);
    }
    let prefix: string;
    try {
      prefix = family === 4 ? expandDarwinDestination4(destination, flags.includes("H")) : expandDarwinDestination6(destination);
    } catch {
      throw new RouteParseError("netstat -rn", i + 1, lines[i]!, "destination is not numeric (use netstat -rn)");
    }
    const route: NetstatRoute = {
      family, destination, prefix, gateway, gatewayAddress: gatewayAddress(gateway, family), flags, netif, expire: at("Expire") ?? null,
    };
    (family === 4 ? out.ipv4 : out.ipv6).push(route);
  }
  return out;
}

export class DarwinRouterBackend implements RouterBackend {
  readonly traits: PlatformTraits = { metrics: false, blackhole: false };
  private readonly owned = new Set<string>();

  constructor(private readonly runner: CommandRunner) {}

  async read(tunnel: TunnelId | null): Promise<{ ours: Route[]; view: SystemView }> {
    const ns = parseNetstat((await this.runner.run(["netstat", "-rn"])).stdout);
    const ours: Route[] = [];
    const routes: SystemRoute[] = [];
    for (const r of [...ns.ipv4, ...ns.ipv6]) {
      if (r.netif === tunnel?.interfaceName) {
        if (r.flags.includes("S")) ours.push({ prefix: r.prefix, target: { kind: "tunnel" }, metric: 0 });
        continue;
      }
      // ARP/NDP entries (L: link-layer address) are neighbours, not routes anyone chose.
      if (r.flags.includes("L") || r.flags.includes("m") || r.netif.startsWith("lo")) continue;
      const route: Route = {
        prefix: r.prefix,
        target: r.gatewayAddress !== null ? { kind: "gateway", gateway: r.gatewayAddress, device: r.netif } : { kind: "link", device: r.netif },
        metric: 0,
      };
      if (this.owned.has(routeKey(route))) {
        ours.push(route);
        continue;
      }
      if (!r.flags.includes("U")) continue;
      routes.push({
        prefix: r.prefix,
        device: r.netif,
        gateway: r.gatewayAddress ?? undefined,
        connected: r.gatewayAddress === null && !r.flags.includes("G"),
      });
    }
    return { ours, view: { routes } };
  }

  async apply(change: RouteChange, tunnel: TunnelId | null): Promise<void> {
    await this.runner.run(darwinRouteArgv(change, tunnel));
    trackOwnedBypass(this.owned, change);
  }
}

/** The one `route -n` command for a change. */
export function darwinRouteArgv(change: RouteChange, tunnel: TunnelId | null): string[] {
  const { route } = change;
  const p = toPrefix(route.prefix);
  const host = p.length === (p.family === 4 ? 32 : 128);
  const head = ["route", "-n", change.op === "add" ? "add" : "delete", ...(p.family === 6 ? ["-inet6"] : [])];
  const dest = host ? ["-host", p.text.split("/")[0]!] : ["-net", p.text];
  const t = route.target;
  switch (t.kind) {
    case "tunnel":
      if (!tunnel) throw new Error(`darwin router: tunnel route ${route.prefix} without a tunnel interface`);
      return [...head, ...dest, "-interface", tunnel.interfaceName];
    case "gateway":
      return [...head, ...dest, t.gateway];
    case "link":
      return [...head, ...dest, "-interface", t.device];
    case "blackhole":
      throw new Error("darwin router: no blackhole beside a tunnel route");
  }
}

export interface DarwinRouterOptions {
  runner: CommandRunner;
  logger?: Logger;
  tunnel?: TunnelId;
}

export function darwinRouter(options: DarwinRouterOptions): ReconcilingRouter {
  return new ReconcilingRouter(new DarwinRouterBackend(options.runner), {
    logger: options.logger ?? silentLogger,
    name: "router(darwin)",
    tunnel: options.tunnel,
  });
}
