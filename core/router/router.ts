/**
 * @module core/router/router
 * The client's Router: which OS routes send traffic into the tunnel. One small declarative
 * interface per the house rule: `set(config)` computes the routes we want from the config and
 * from what the OS already has (planRoutes), diffs them against the routes we own now
 * (deltaRoutes) and applies only the difference; `set(null)` removes every route we own.
 *
 * Decisions the planner makes for every platform (so they are tested once, here):
 *
 * - Never fight the user's routing table. A granted subnet equal to a route we do not own is
 *   skipped ("exists"); one that contains a more specific foreign route is installed, and the
 *   foreign route keeps winning by longest-prefix match ("more-specific-kept").
 * - Never blackhole the local LAN. A granted subnet equal to or inside a directly connected
 *   subnet is skipped ("equals-lan", "inside-lan"); one that contains it is installed, and the
 *   connected route, being more specific, keeps the LAN local ("contains-lan"). All of them are
 *   returned and logged once as key=value lines.
 * - A default route through the tunnel is installed as two halves (0.0.0.0/1 + 128.0.0.0/1,
 *   ::/1 + 8000::/1): they beat the user's default route by prefix length without replacing it,
 *   so the pre-existing gateway stays available for the bypass routes (control plane and peer
 *   endpoints, routed via that gateway as host routes) and comes back untouched on set(null).
 *   This is OpenVPN's def1 and needs neither an ip rule nor an fwmark on the data plane's socket.
 * - allowLanAccess=false with a default route: the connected subnets get tunnel halves too.
 * - failClosed: blackhole halves one metric worse than the tunnel halves, where the platform can
 *   express them; if the tunnel interface goes away (and the kernel drops its routes), traffic
 *   hits the blackhole instead of leaking through the old default route.
 *
 * Changes are ordered make-before-break: bypass routes first, then tunnel routes, then
 * blackholes; removals take the tunnel routes first (a failClosed blackhole catches traffic until
 * it goes too) and the bypass routes last. A route whose prefix is re-added with another
 * target or metric is deleted first, because route.exe and BSD route refuse duplicates.
 */
import { parsePrefix, prefixCovers, prefixFromBytes, type Family, type Prefix } from "../net/address.ts";
import { WaygateError } from "../errors.ts";
import type { Logger } from "../log.ts";

/** Metric for tunnel routes when neither the route nor the config names one. */
export const DEFAULT_ROUTE_METRIC = 10;

export interface RouteSpec {
  /** A network in CIDR form; host bits are an error (a typo more often than not). */
  prefix: string;
  metric?: number;
}

/** Which interface is the tunnel: the routes on it are ours. */
export interface TunnelId {
  interfaceName: string;
  /** Windows needs the index for `IF n` and to find the tunnel's rows in `route print`. */
  interfaceIndex?: number;
  /** The tunnel's own addresses in CIDR form (Windows shows IPv4 routes by interface address). */
  addresses?: string[];
}

export interface RouterConfig extends TunnelId {
  /** The subnets this client may reach through its gateways (from the NetMap). */
  routes: RouteSpec[];
  /** Addresses (or prefixes) that must stay outside the tunnel: the control plane, peer endpoints. */
  bypass?: string[];
  /** With a default route through the tunnel: keep the local LAN reachable directly. Default true. */
  allowLanAccess?: boolean;
  /** With a default route through the tunnel: drop, do not leak, when the tunnel goes away. */
  failClosed?: boolean;
  /** Metric for routes that do not name one. */
  metric?: number;
}

export type RouteTarget =
  | { kind: "tunnel" }
  | { kind: "gateway"; gateway: string; device: string }
  | { kind: "link"; device: string }
  | { kind: "blackhole" };

/** One route as we own it. `device` is whatever the platform names interfaces by. */
export interface Route {
  prefix: string;
  target: RouteTarget;
  metric: number;
}

export interface RouteChange {
  op: "add" | "delete";
  route: Route;
}

export type ConflictKind =
  | "equals-lan"
  | "inside-lan"
  | "contains-lan"
  | "exists"
  | "more-specific-kept"
  | "no-gateway"
  | "unsupported";

export interface RouteConflict {
  kind: ConflictKind;
  /** The granted prefix (or bypass address) concerned. */
  prefix: string;
  /** The route it collides with, when there is one. */
  other?: string;
  device?: string;
  action: "skipped" | "installed";
  message: string;
}

/** A route in the OS that is not ours, as the planner needs to see it. */
export interface SystemRoute {
  prefix: string;
  device: string;
  gateway?: string;
  /** Directly connected (on-link subnet of a local address): this is what "the LAN" is. */
  connected?: boolean;
  metric?: number;
}

export interface SystemView {
  routes: SystemRoute[];
}

/** What a platform's route tool can express. */
export interface PlatformTraits {
  /** Route metrics exist (not on macOS, where every route is unique per destination). */
  metrics: boolean;
  /** A blackhole route can coexist with a tunnel route for the same prefix (failClosed). */
  blackhole: boolean;
}

export interface Plan {
  want: Route[];
  conflicts: RouteConflict[];
}

export interface SetResult {
  changes: RouteChange[];
  conflicts: RouteConflict[];
}

export interface Router {
  readonly traits: PlatformTraits;
  /** Make our routes match `config`; null removes every route we own. Idempotent. */
  set(config: RouterConfig | null): Promise<SetResult>;
  /** The routes we own as the OS has them now. */
  current(): Promise<Route[]>;
}

/** A router configuration that cannot be applied (not a command failure). */
export class RouterConfigError extends WaygateError {
  constructor(message: string) {
    super("E_CONFIG_INVALID", `router: ${message}`);
  }
}

/** An OS route listing that does not have the shape its parser knows. */
export class RouteParseError extends WaygateError {
  constructor(
    readonly tool: string,
    readonly line: number,
    readonly text: string,
    reason: string,
  ) {
    super("E_ROUTE_PARSE", `${tool} output line ${line}: ${reason}: ${JSON.stringify(text)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// prefixes

/** Lenient parse for OS output and bypass lists: bare addresses are host prefixes, host bits masked. */
export function toPrefix(text: string): Prefix {
  return parsePrefix(text, { mask: true, allowBareAddress: true });
}

const LINK_LOCAL_6 = parsePrefix("fe80::/10");
const MULTICAST_6 = parsePrefix("ff00::/8");
const MULTICAST_4 = parsePrefix("224.0.0.0/4");
const LINK_LOCAL_4 = parsePrefix("169.254.0.0/16");
const LOOPBACK_4 = parsePrefix("127.0.0.0/8");
const LOOPBACK_6 = parsePrefix("::1/128");

/** Link-local, multicast and loopback: never a LAN to protect or to tunnel. */
function isSpecial(p: Prefix): boolean {
  const s = p.family === 4 ? [MULTICAST_4, LINK_LOCAL_4, LOOPBACK_4] : [LINK_LOCAL_6, MULTICAST_6, LOOPBACK_6];
  return s.some((x) => prefixCovers(x, p));
}

/** The two halves of a prefix one bit longer; null for a host prefix. */
export function splitPrefix(p: Prefix): [Prefix, Prefix] | null {
  const max = p.family === 4 ? 32 : 128;
  if (p.length >= max) return null;
  const lo = prefixFromBytes(p.bytes, p.length + 1);
  const hiBytes = p.bytes.slice();
  hiBytes[p.length >> 3]! |= 0x80 >> (p.length & 7);
  const hi = prefixFromBytes(hiBytes, p.length + 1);
  return [lo, hi];
}

/** Dotted netmask of a prefix length (Windows `MASK`). */
export function maskOfLength(length: number): string {
  const m = length === 0 ? 0 : (0xffffffff << (32 - length)) >>> 0;
  return [m >>> 24, (m >>> 16) & 255, (m >>> 8) & 255, m & 255].join(".");
}

/** Prefix length of a dotted netmask, or null when it is not a contiguous mask. */
export function lengthOfMask(mask: string): number | null {
  const parts = mask.split(".");
  if (parts.length !== 4 || parts.some((x) => !/^\d{1,3}$/.test(x) || Number(x) > 255)) return null;
  const text = parts.map(Number).join(".");
  for (let length = 0; length <= 32; length++) if (maskOfLength(length) === text) return length;
  return null;
}

// ---------------------------------------------------------------------------------------------
// route identity and delta

export function targetText(t: RouteTarget): string {
  switch (t.kind) {
    case "tunnel":
      return "tunnel";
    case "blackhole":
      return "blackhole";
    case "gateway":
      return `via ${t.gateway} dev ${t.device}`;
    case "link":
      return `dev ${t.device}`;
  }
}

/** Canonical one-line text of a route: its identity for deltas and dumps. */
/**
 * Remembers which bypass routes (via a gateway or a link, not the tunnel) we added: route tools
 * without route tagging (route.exe, BSD route) cannot tell ours from the user's otherwise.
 */
export function trackOwnedBypass(owned: Set<string>, change: RouteChange): void {
  if (change.route.target.kind !== "gateway" && change.route.target.kind !== "link") return;
  if (change.op === "add") owned.add(routeKey(change.route));
  else owned.delete(routeKey(change.route));
}

export function routeKey(r: Route): string {
  return `${r.prefix} ${targetText(r.target)} metric ${r.metric}`;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return a.length - b.length;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** Deterministic order: family, network, length, then the rest of the key. */
export function sortRoutes<T extends Route>(routes: readonly T[]): T[] {
  return [...routes].sort((x, y) => {
    const px = toPrefix(x.prefix);
    const py = toPrefix(y.prefix);
    return compareBytes(px.bytes, py.bytes) || px.length - py.length || (routeKey(x) < routeKey(y) ? -1 : routeKey(x) > routeKey(y) ? 1 : 0);
  });
}

const ADD_ORDER: Record<RouteTarget["kind"], number> = { gateway: 0, link: 1, tunnel: 2, blackhole: 3 };
/** Tunnel routes go first, so a failClosed blackhole catches traffic until it goes too; bypass last. */
const DELETE_ORDER: Record<RouteTarget["kind"], number> = { tunnel: 0, blackhole: 1, link: 2, gateway: 3 };

/**
 * The changes that turn `have` into `want`, ordered make-before-break (see the module comment).
 * Routes are compared by routeKey; duplicates on either side count once.
 */
export function deltaRoutes(have: readonly Route[], want: readonly Route[]): RouteChange[] {
  const haveMap = new Map(have.map((r) => [routeKey(r), r]));
  const wantMap = new Map(want.map((r) => [routeKey(r), r]));
  const adds = sortRoutes([...wantMap].filter(([k]) => !haveMap.has(k)).map(([, r]) => r));
  const deletes = sortRoutes([...haveMap].filter(([k]) => !wantMap.has(k)).map(([, r]) => r));
  const addedPrefixes = new Set(adds.map((r) => r.prefix));
  const early = deletes.filter((r) => addedPrefixes.has(r.prefix));
  const late = deletes.filter((r) => !addedPrefixes.has(r.prefix));
  const by = (order: Record<RouteTarget["kind"], number>) => (a: Route, b: Route) => order[a.target.kind] - order[b.target.kind];
  return [
    ...early.map((route) => ({ op: "delete" as const, route })),
    ...adds.sort(by(ADD_ORDER)).map((route) => ({ op: "add" as const, route })),
    ...late.sort(by(DELETE_ORDER)).map((route) => ({ op: "delete" as const, route })),
  ];
}

// ---------------------------------------------------------------------------------------------
// planning

interface ViewRoute extends SystemRoute {
  p: Prefix;
}

function checkMetric(m: number, where: string): number {
  if (!Number.isInteger(m) || m < 0 || m > 0xffff) throw new RouterConfigError(`${where}: metric ${m} is not an integer in 0..65535`);
  return m;
}

/**
 * The routes `config` calls for on a system that looks like `view`, and every conflict found.
 * Pure: the same inputs give the same plan.
 */
export function planRoutes(config: RouterConfig, view: SystemView, traits: PlatformTraits): Plan {
  if (typeof config.interfaceName !== "string" || config.interfaceName === "") {
    throw new RouterConfigError("interfaceName is required");
  }
  if (!Array.isArray(config.routes)) throw new RouterConfigError("routes must be an array");
  const base = checkMetric(config.metric ?? DEFAULT_ROUTE_METRIC, "metric");
  const metricOf = (m: number | undefined, where: string) => (traits.metrics ? checkMetric(m ?? base, where) : 0);

  const foreign: ViewRoute[] = view.routes.map((r) => ({ ...r, p: toPrefix(r.prefix) }));
  const lan = foreign.filter((r) => r.connected && !isSpecial(r.p) && r.p.length < r.p.bytes.length * 8);
  const others = foreign.filter((r) => !r.connected && r.p.length > 0 && !isSpecial(r.p));

  const conflicts: RouteConflict[] = [];
  const want = new Map<string, Route>();
  const add = (p: Prefix, target: RouteTarget, metric: number) => {
    const r: Route = { prefix: p.text, target, metric };
    // One route per prefix and target: the better (lower) metric wins.
    const same = [...want.values()].find((w) => w.prefix === r.prefix && targetText(w.target) === targetText(target));
    if (same && same.metric <= metric) return;
    if (same) want.delete(routeKey(same));
    want.set(routeKey(r), r);
  };

  // Granted subnets, deduplicated by network (the lowest metric wins).
  const granted = new Map<string, { p: Prefix; metric: number }>();
  config.routes.forEach((spec, i) => {
    const p = parsePrefix(spec.prefix);
    const metric = metricOf(spec.metric, `routes[${i}]`);
    const prev = granted.get(p.text);
    if (!prev || metric < prev.metric) granted.set(p.text, { p, metric });
  });

  const fullTunnel = new Map<Family, number>();
  for (const { p, metric } of granted.values()) {
    if (p.length === 0) {
      fullTunnel.set(p.family, Math.min(metric, fullTunnel.get(p.family) ?? Infinity));
      continue;
    }
    const sameFamily = (r: ViewRoute) => r.p.family === p.family;
    const equalLan = lan.find((l) => sameFamily(l) && l.p.text === p.text);
    if (equalLan) {
      conflicts.push({
        kind: "equals-lan", prefix: p.text, other: equalLan.p.text, device: equalLan.device, action: "skipped",
        message: `granted ${p.text} is the local LAN on ${equalLan.device}; not routed into the tunnel so the LAN stays reachable`,
      });
      continue;
    }
    const outerLan = lan.find((l) => sameFamily(l) && prefixCovers(l.p, p));
    if (outerLan) {
      conflicts.push({
        kind: "inside-lan", prefix: p.text, other: outerLan.p.text, device: outerLan.device, action: "skipped",
        message: `granted ${p.text} lies inside the local LAN ${outerLan.p.text} on ${outerLan.device}; routing it would blackhole those LAN hosts`,
      });
      continue;
    }
    const existing = others.find((o) => sameFamily(o) && o.p.text === p.text);
    if (existing) {
      conflicts.push({
        kind: "exists", prefix: p.text, other: existing.p.text, device: existing.device, action: "skipped",
        message: `granted ${p.text} already has a route we do not own (dev ${existing.device}${existing.gateway ? ` via ${existing.gateway}` : ""}); left alone`,
      });
      continue;
    }
    add(p, { kind: "tunnel" }, metric);
    for (const l of lan) {
      if (sameFamily(l) && prefixCovers(p, l.p)) {
        conflicts.push({
          kind: "contains-lan", prefix: p.text, other: l.p.text, device: l.device, action: "installed",
          message: `granted ${p.text} contains the local LAN ${l.p.text} on ${l.device}; the LAN's own route is more specific and keeps it local`,
        });
      }
    }
    for (const o of others) {
      if (sameFamily(o) && o.p.length > p.length && prefixCovers(p, o.p)) {
        conflicts.push({
          kind: "more-specific-kept", prefix: p.text, other: o.p.text, device: o.device, action: "installed",
          message: `granted ${p.text} contains ${o.p.text} (dev ${o.device}), which is more specific and keeps winning`,
        });
      }
    }
  }

  for (const [family, metric] of fullTunnel) {
    const zero = parsePrefix(family === 4 ? "0.0.0.0/0" : "::/0");
    for (const half of splitPrefix(zero)!) add(half, { kind: "tunnel" }, metric);
    if (config.failClosed) {
      if (traits.blackhole) {
        for (const half of splitPrefix(zero)!) add(half, { kind: "blackhole" }, metric + 1);
      } else {
        conflicts.push({
          kind: "unsupported", prefix: zero.text, action: "skipped",
          message: "failClosed needs a blackhole route beside the tunnel route, which this platform's route tool cannot express; enforce it with the firewall",
        });
      }
    }
    if (config.allowLanAccess === false) {
      for (const l of lan) {
        if (l.p.family !== family) continue;
        for (const half of splitPrefix(l.p)!) add(half, { kind: "tunnel" }, metric);
      }
    }
  }

  // Bypass: needed only where a tunnel route we want would otherwise capture the address.
  const wantTunnel = () => [...want.values()].filter((r) => r.target.kind === "tunnel").map((r) => toPrefix(r.prefix));
  for (const text of config.bypass ?? []) {
    const b = toPrefix(text);
    const tunnels = wantTunnel().filter((t) => prefixCovers(t, b));
    if (tunnels.length === 0) continue;
    const bestTunnel = Math.max(...tunnels.map((t) => t.length));
    // The best foreign route for b (the default route included): if it beats every tunnel route
    // covering b, nothing is needed; otherwise b gets a host route through it.
    const via = foreign
      .filter((f) => prefixCovers(f.p, b) && (f.gateway !== undefined || f.connected === true))
      .sort((x, y) => y.p.length - x.p.length || (x.metric ?? 0) - (y.metric ?? 0))[0];
    if (via && via.p.length > bestTunnel) continue;
    if (!via) {
      conflicts.push({
        kind: "no-gateway", prefix: b.text, action: "skipped",
        message: `bypass ${b.text} is covered by a tunnel route but no route outside the tunnel reaches it; it would loop`,
      });
      continue;
    }
    const target: RouteTarget =
      via.gateway !== undefined ? { kind: "gateway", gateway: via.gateway, device: via.device } : { kind: "link", device: via.device };
    add(b, target, traits.metrics ? base : 0);
  }

  return { want: sortRoutes([...want.values()]), conflicts };
}

// ---------------------------------------------------------------------------------------------
// the reconciling router every platform shares

/** What a platform adapter provides: read the OS, apply one change. */
export interface RouterBackend {
  readonly traits: PlatformTraits;
  /** Our routes and the foreign ones; `tunnel` is null when no tunnel was ever named. */
  read(tunnel: TunnelId | null): Promise<{ ours: Route[]; view: SystemView }>;
  /** Apply one change with exactly one command. */
  apply(change: RouteChange, tunnel: TunnelId | null): Promise<void>;
}

export interface ReconcilingRouterOptions {
  logger: Logger;
  /** Log prefix, e.g. "router(linux)". */
  name: string;
  /** The tunnel to clean up after a crash before any config was applied. */
  tunnel?: TunnelId;
}

/** Router over a backend: plan, diff, apply; logs each conflict once as key=value. */
export class ReconcilingRouter implements Router {
  private last: TunnelId | null;
  private readonly logged = new Set<string>();

  constructor(
    private readonly backend: RouterBackend,
    private readonly options: ReconcilingRouterOptions,
  ) {
    this.last = options.tunnel ?? null;
  }

  get traits(): PlatformTraits {
    return this.backend.traits;
  }

  async current(): Promise<Route[]> {
    return sortRoutes((await this.backend.read(this.last)).ours);
  }

  async set(config: RouterConfig | null): Promise<SetResult> {
    const tunnel: TunnelId | null = config
      ? { interfaceName: config.interfaceName, interfaceIndex: config.interfaceIndex, addresses: config.addresses }
      : this.last;
    const { ours, view } = await this.backend.read(tunnel);
    const plan = config ? planRoutes(config, view, this.backend.traits) : { want: [], conflicts: [] };
    const changes = deltaRoutes(ours, plan.want);
    const { logger, name } = this.options;
    for (const c of plan.conflicts) {
      const line = `${name}: conflict=${c.kind} prefix=${c.prefix}${c.other ? ` other=${c.other}` : ""}${c.device ? ` dev=${c.device}` : ""} action=${c.action}`;
      if (!this.logged.has(line)) {
        this.logged.add(line);
        (c.action === "skipped" ? logger.warn : logger.info)(`${line} reason=${JSON.stringify(c.message)}`);
      }
    }
    for (const change of changes) {
      logger.debug(`${name}: ${change.op} ${routeKey(change.route)}`);
      await this.backend.apply(change, tunnel);
    }
    if (changes.length > 0) {
      // Read back: route.exe can print a failure and still exit 0, and a kernel can refuse quietly.
      const after = new Set((await this.backend.read(tunnel)).ours.map(routeKey));
      const want = new Set(plan.want.map(routeKey));
      const missing = [...want].filter((k) => !after.has(k));
      const extra = [...after].filter((k) => !want.has(k));
      if (missing.length > 0 || extra.length > 0) {
        throw new WaygateError(
          "E_PLATFORM",
          `${name}: after applying ${changes.length} change(s) the routes differ from the plan: missing [${missing.join("; ")}] unexpected [${extra.join("; ")}]`,
        );
      }
    }
    if (config) this.last = tunnel;
    return { changes, conflicts: plan.conflicts };
  }
}
