/**
 * @module platform/windows/route
 * The Windows Router, and `parseRoutePrint` for `route print` output (tested on Linux against
 * recorded outputs in test/fixtures/windows/).
 *
 * Commands (all real tools shipped with Windows):
 * - read: `route print` (both tables; the same text `netstat -rn` prints)
 * - IPv4: `route ADD <net> MASK <mask> 0.0.0.0 METRIC <n> IF <idx>` for a route on the tunnel
 *   (shown as "On-link"), `route ADD <net> MASK <mask> <gateway> METRIC <n>` for a bypass route
 *   (route.exe picks the interface that reaches the gateway), `route DELETE <net> MASK <mask>
 *   IF <idx>` / `... <gateway>` to remove them.
 * - IPv6: `netsh interface ipv6 add|delete route prefix=<p> interface=<idx> [nexthop=<gw>]
 *   [metric=<n>] store=active`. route.exe can print IPv6 routes but its ADD takes no prefix
 *   length for IPv6 on every release; netsh's syntax is documented and stable, and
 *   store=active keeps the route out of the registry (nothing survives a reboot behind our back).
 *
 * How `route print` is read, in any display language: the parser keys on the shape of rows and
 * on the order of sections, never on header words ("Active Routes:", "Aktive Routen:",
 * "Itinéraires actifs :" all end in a colon; the IPv4/IPv6 tables are the lines naming "IPv4" /
 * "IPv6"). A gateway that is not an address is "On-link" in that language.
 *
 * Metrics: `route print` shows route metric + interface metric. The interface metric is read off
 * the host route of the interface's own address (system routes carry route metric 256), or off
 * its fe80::/64 route for IPv6, so the metric we compare is the one we set.
 *
 * Ownership: every non-system route on the tunnel interface is ours; bypass routes live on the
 * LAN interface and are recognised only while this process remembers adding them (route.exe
 * keeps no tag). After a crash, set(null) removes the tunnel routes; leftover bypass host routes
 * to the control plane and peers are harmless (they point where the default route would).
 */
import { silentLogger, type Logger } from "../../core/log.ts";
import type { CommandRunner } from "../../core/runner.ts";
import {
  lengthOfMask,
  maskOfLength,
  ReconcilingRouter,
  RouteParseError,
  routeKey,
  trackOwnedBypass,
  toPrefix,
  RouterConfigError,
  type PlatformTraits,
  type Route,
  type RouteChange,
  type RouterBackend,
  type SystemRoute,
  type SystemView,
  type TunnelId,
} from "../../core/router/router.ts";
import { parseAddress, prefixCovers, type Prefix } from "../../core/net/address.ts";

export interface WinInterface {
  index: number;
  /** "00 0c 29 86 1e 1f", or null for interfaces without one (loopback, WireGuard, Tailscale). */
  mac: string | null;
  description: string;
}

export interface WinRoute4 {
  destination: string;
  netmask: string;
  /** destination/length, canonical. */
  prefix: string;
  /** null when the gateway column is "On-link" (in whatever language). */
  gateway: string | null;
  /** The interface's IPv4 address: route print identifies IPv4 interfaces by address. */
  interfaceAddress: string;
  /** Route metric + interface metric. */
  metric: number;
}

export interface WinPersistent4 {
  destination: string;
  netmask: string;
  prefix: string;
  gateway: string | null;
  /** null when the column is a word ("Default", "Standard", "Par défaut"). */
  metric: number | null;
}

export interface WinRoute6 {
  ifIndex: number;
  metric: number;
  prefix: string;
  gateway: string | null;
}

export interface RoutePrint {
  interfaces: WinInterface[];
  ipv4: { active: WinRoute4[]; persistent: WinPersistent4[] };
  ipv6: { active: WinRoute6[]; persistent: WinRoute6[] };
}

const IP4 = String.raw`\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}`;
const ACTIVE4 = new RegExp(String.raw`^\s*(${IP4})\s+(${IP4})\s+(.+?)\s+(${IP4})\s+(\d+)$`);
const PERSISTENT4 = new RegExp(String.raw`^\s*(${IP4})\s+(${IP4})\s+(\S+)\s+(.+?)$`);
const ROW6 = /^\s*(\d+)\s+(\d+)\s+(\S+)(?:\s+(\S.*?))?$/;
const IFACE = /^\s*(\d+)\.\.\.((?:[0-9a-f]{2} )+)?\.*(.*)$/i;
const LOOKS_LIKE_ROUTE = new RegExp(String.raw`${IP4}|[0-9a-f]*::[0-9a-f]*|/\d+`, "i");

/** Parse `route print` (or Windows `netstat -rn`) text, any display language, CRLF or LF. */
export function parseRoutePrint(text: string): RoutePrint {
  const lines = text.split(/\r?\n/);
  const out: RoutePrint = { interfaces: [], ipv4: { active: [], persistent: [] }, ipv6: { active: [], persistent: [] } };
  let part: "start" | "v4" | "v6" = "start";
  let section: "none" | "active" | "persistent" = "none";
  let i = 0;
  while (i < lines.length && lines[i]!.startsWith("# source:")) i++;
  const fail = (n: number, reason: string): never => {
    throw new RouteParseError("route print", n + 1, lines[n]!, reason);
  };
  for (; i < lines.length; i++) {
    const line = lines[i]!.replace(/\s+$/, "");
    if (line === "" || /^=+$/.test(line.trim())) continue;

    if (part === "start") {
      const m = IFACE.exec(line);
      if (m) {
        out.interfaces.push({ index: Number(m[1]), mac: m[2] ? m[2].trim() : null, description: m[3]!.trim() });
        continue;
      }
    }
    const ipv4Title = /IPv4/i.test(line) && !ACTIVE4.test(line);
    const ipv6Title = /IPv6/i.test(line) && !ROW6.test(line);
    if (ipv4Title || ipv6Title) {
      part = ipv4Title ? "v4" : "v6";
      section = "none";
      continue;
    }
    if (part === "start") continue;
    // Rows first: an IPv6 gateway such as "fe80::" also ends in a colon.
    if (section !== "none" && readRow(i)) continue;
    if (line.trim().endsWith(":")) {
      section = section === "none" ? "active" : "persistent";
      continue;
    }
    // Headers and "None"/"Keine"/"Aucun" have no addresses; a route-looking line we cannot read is an error.
    if (section !== "none" && LOOKS_LIKE_ROUTE.test(line)) fail(i, "unrecognised route row");
  }
  return out;

  function readRow(i0: number): boolean {
    const line = lines[i0]!.replace(/\s+$/, "");
    const n = i0;
    if (part === "v4") {
      const a = ACTIVE4.exec(line);
      if (a && section === "active") {
        out.ipv4.active.push({
          destination: a[1]!,
          netmask: a[2]!,
          prefix: prefix4(a[1]!, a[2]!, n, fail),
          gateway: isIp4(a[3]!) ? a[3]! : null,
          interfaceAddress: a[4]!,
          metric: Number(a[5]),
        });
        return true;
      }
      const p = PERSISTENT4.exec(line);
      if (p && section === "persistent") {
        out.ipv4.persistent.push({
          destination: p[1]!,
          netmask: p[2]!,
          prefix: prefix4(p[1]!, p[2]!, n, fail),
          gateway: isIp4(p[3]!) ? p[3]! : null,
          metric: /^\d+$/.test(p[4]!) ? Number(p[4]) : null,
        });
        return true;
      }
    } else {
      const r = ROW6.exec(line);
      if (r) {
        let gatewayText = r[4];
        if (gatewayText === undefined) {
          // A destination too long for its column pushes the gateway onto the next line.
          const next = lines[n + 1]?.replace(/\s+$/, "") ?? "";
          if (!/^\s{8,}\S/.test(next)) fail(n, "IPv6 row without a gateway");
          gatewayText = next.trim();
          i++;
        }
        let prefix: string;
        try {
          prefix = toPrefix(r[3]!).text;
        } catch {
          return fail(n, "not an IPv6 destination");
        }
        const route: WinRoute6 = { ifIndex: Number(r[1]), metric: Number(r[2]), prefix, gateway: isIp6(gatewayText) ? gatewayText : null };
        (section === "active" ? out.ipv6.active : out.ipv6.persistent).push(route);
        return true;
      }
    }
    return false;
  }
}

function prefix4(dest: string, mask: string, line: number, fail: (n: number, r: string) => never): string {
  const length = lengthOfMask(mask);
  if (length === null) return fail(line, `netmask ${mask} is not contiguous`);
  return toPrefix(`${dest}/${length}`).text;
}

function isIp4(s: string): boolean {
  return new RegExp(`^${IP4}$`).test(s);
}

function isIp6(s: string): boolean {
  if (!s.includes(":")) return false;
  try {
    parseAddress(s.replace(/%.*$/, ""), { family: 6 });
    return true;
  } catch {
    return false;
  }
}

/** The interface metric: the own-address host route (IPv4) or fe80::/64 (IPv6) carries 256 + it. */
export function interfaceMetric4(rp: RoutePrint, address: string): number {
  const host = rp.ipv4.active.find((r) => r.prefix === `${address}/32` && r.gateway === null && r.interfaceAddress === address);
  return host && host.metric >= 256 ? host.metric - 256 : 0;
}

export function interfaceMetric6(rp: RoutePrint, ifIndex: number): number {
  const ll = rp.ipv6.active.find((r) => r.ifIndex === ifIndex && r.prefix === "fe80::/64");
  return ll && ll.metric >= 256 ? ll.metric - 256 : 0;
}

/** Routes Windows itself keeps for an interface's addresses: never ours, never a LAN to protect. */
function systemPrefixes(addresses: readonly string[]): Prefix[] {
  const out: Prefix[] = [toPrefix("224.0.0.0/4"), toPrefix("255.255.255.255/32"), toPrefix("fe80::/10"), toPrefix("ff00::/8")];
  for (const cidr of addresses) {
    const p = toPrefix(cidr);
    const [addr] = cidr.split("/");
    out.push(p, toPrefix(addr!));
    if (p.family === 4 && p.length < 31) {
      const bytes = p.bytes.slice();
      for (let bit = p.length; bit < 32; bit++) bytes[bit >> 3]! |= 0x80 >> (bit & 7);
      out.push(toPrefix(`${bytes.join(".")}/32`));
    }
  }
  return out;
}

function isSystem(prefix: string, system: Prefix[]): boolean {
  const p = toPrefix(prefix);
  return system.some((s) => (s.length === p.length || s.text === "224.0.0.0/4" || s.text === "fe80::/10" || s.text === "ff00::/8") && prefixCovers(s, p));
}

export class WindowsRouterBackend implements RouterBackend {
  readonly traits: PlatformTraits = { metrics: true, blackhole: false };
  /** Bypass routes this process added, by routeKey (route.exe cannot tag them). */
  private readonly owned = new Set<string>();

  constructor(private readonly runner: CommandRunner) {}

  async read(tunnel: TunnelId | null): Promise<{ ours: Route[]; view: SystemView }> {
    const rp = parseRoutePrint((await this.runner.run(["route", "print"])).stdout);
    const tunnelAddresses = tunnel?.addresses ?? [];
    const tunnel4 = tunnelAddresses.map((a) => a.split("/")[0]!).find((a) => !a.includes(":"));
    const tunnelIndex = tunnel?.interfaceIndex;
    const system = systemPrefixes(tunnelAddresses);
    const ours: Route[] = [];
    const routes: SystemRoute[] = [];

    for (const r of rp.ipv4.active) {
      const metric = r.metric - interfaceMetric4(rp, r.interfaceAddress);
      if (tunnel4 !== undefined && r.interfaceAddress === tunnel4) {
        if (isSystem(r.prefix, system)) continue;
        ours.push({
          prefix: r.prefix,
          target: r.gateway === null ? { kind: "tunnel" } : { kind: "gateway", gateway: r.gateway, device: r.interfaceAddress },
          metric,
        });
        continue;
      }
      const route: Route = {
        prefix: r.prefix,
        target: r.gateway === null ? { kind: "link", device: r.interfaceAddress } : { kind: "gateway", gateway: r.gateway, device: r.interfaceAddress },
        metric,
      };
      if (this.owned.has(routeKey(route))) {
        ours.push(route);
        continue;
      }
      routes.push({ prefix: r.prefix, device: r.interfaceAddress, gateway: r.gateway ?? undefined, connected: r.gateway === null, metric: r.metric });
    }
    for (const r of rp.ipv6.active) {
      const metric = r.metric - interfaceMetric6(rp, r.ifIndex);
      const device = String(r.ifIndex);
      if (tunnelIndex !== undefined && r.ifIndex === tunnelIndex) {
        if (isSystem(r.prefix, system)) continue;
        ours.push({ prefix: r.prefix, target: r.gateway === null ? { kind: "tunnel" } : { kind: "gateway", gateway: r.gateway, device }, metric });
        continue;
      }
      const route: Route = {
        prefix: r.prefix,
        target: r.gateway === null ? { kind: "link", device } : { kind: "gateway", gateway: r.gateway, device },
        metric,
      };
      if (this.owned.has(routeKey(route))) {
        ours.push(route);
        continue;
      }
      routes.push({ prefix: r.prefix, device, gateway: r.gateway ?? undefined, connected: r.gateway === null, metric: r.metric });
    }
    return { ours, view: { routes } };
  }

  async apply(change: RouteChange, tunnel: TunnelId | null): Promise<void> {
    await this.runner.run(windowsRouteArgv(change, tunnel));
    trackOwnedBypass(this.owned, change);
  }
}

/** The one command for a change. */
export function windowsRouteArgv(change: RouteChange, tunnel: TunnelId | null): string[] {
  const { route } = change;
  const p = toPrefix(route.prefix);
  const t = route.target;
  const add = change.op === "add";
  const needIndex = (): string => {
    if (tunnel?.interfaceIndex === undefined) throw new RouterConfigError(`windows: interfaceIndex is required for tunnel route ${route.prefix}`);
    return String(tunnel.interfaceIndex);
  };
  if (t.kind === "blackhole") throw new RouterConfigError("windows: route.exe has no blackhole route");
  if (p.family === 4) {
    const [net] = p.text.split("/");
    const head = ["route", add ? "ADD" : "DELETE", net!, "MASK", maskOfLength(p.length)];
    const metric = add ? ["METRIC", String(route.metric)] : [];
    if (t.kind === "tunnel") {
      if (!tunnel?.addresses?.some((a) => !a.includes(":"))) {
        throw new RouterConfigError(`windows: the tunnel's IPv4 address (addresses) is required for ${route.prefix}`);
      }
      return add ? [...head, "0.0.0.0", ...metric, "IF", needIndex()] : [...head, "IF", needIndex()];
    }
    const gateway = t.kind === "gateway" ? t.gateway : t.device;
    return [...head, gateway, ...metric];
  }
  const iface = t.kind === "tunnel" ? needIndex() : t.device;
  return [
    "netsh", "interface", "ipv6", add ? "add" : "delete", "route",
    `prefix=${p.text}`,
    `interface=${iface}`,
    ...(t.kind === "gateway" ? [`nexthop=${t.gateway}`] : []),
    ...(add ? [`metric=${route.metric}`] : []),
    "store=active",
  ];
}

export interface WindowsRouterOptions {
  runner: CommandRunner;
  logger?: Logger;
  /** The tunnel (index and addresses) a fresh set(null) cleans up after a crash. */
  tunnel?: TunnelId;
}

export function windowsRouter(options: WindowsRouterOptions): ReconcilingRouter {
  return new ReconcilingRouter(new WindowsRouterBackend(options.runner), {
    logger: options.logger ?? silentLogger,
    name: "router(windows)",
    tunnel: options.tunnel,
  });
}
