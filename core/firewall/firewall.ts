/**
 * @module core/firewall/firewall
 * The gateway's Firewall: forwarding NAT, the stateful "LAN cannot initiate" rule, the guard on
 * the gateway's own services and MSS clamping, all in Waygate's own chains (iptables) or its own
 * table (nftables). One small declarative interface per the house rule: `set(config)` renders the
 * rules the config calls for, compares them with what the kernel has in OUR chains/table and
 * applies only when they differ (twice the same config: no state-changing command at all);
 * `set(null)` and `cleanup()` remove everything we own, including what a crashed run left.
 *
 * Policy the renderers implement (the same for both backends, so it is decided once, here):
 *
 * 1. NAT, per subnet, for traffic from the overlay (`overlayNetwork`) out of the subnet's
 *    `lanInterface`: SNAT to `snatAddress` (the gateway's address facing that subnet), or
 *    MASQUERADE when none is given and always for a default route (0.0.0.0/0, ::/0: the uplink's
 *    address may change). `nat: false` renders an explicit ACCEPT in the nat chain, so the
 *    client's virtual address is kept even where a broader subnet (or, with iptables, a foreign
 *    rule further down POSTROUTING) would masquerade. Rules are ordered most specific first.
 * 2. Stateful forwarding: a packet going INTO the tunnel is accepted only when it belongs to a
 *    connection the kernel already tracks (ESTABLISHED, RELATED); anything else entering the
 *    tunnel from another interface is dropped (and counted). The Device's flow table does the
 *    same in userspace; this is the defence in depth. Packets from the overlay to a served subnet
 *    are explicitly ACCEPTed, which matters where a foreign FORWARD policy is DROP (Docker).
 * 3. The gateway's own services (`protectGatewayInput`): a subnet grant is not a grant of the
 *    gateway. INPUT from the tunnel interface is dropped except ESTABLISHED/RELATED (answers to
 *    connections the gateway opened, ICMP errors for PMTU), `inputAllow` (what the agent itself
 *    serves; the agent passes DNS 53/udp+tcp for the gateway forwarder) and anything addressed to
 *    `tunnelAddresses`, the gateway's virtual address(es): the Device's inbound ACLs (stage I10)
 *    have already let only what a direct policy allows through to them, so the kernel must not
 *    drop it again. Everything else from the tunnel, the gateway's LAN addresses above all, stays
 *    closed, whatever the Device lets through. The WireGuard UDP port arrives on the uplink, not
 *    the tunnel: unaffected.
 * 4. MSS clamping (`mssClamp`): TCP SYNs forwarded into or out of the tunnel get their MSS
 *    clamped to the route's path MTU, so full-size segments fit the tunnel's smaller MTU.
 *
 * Rules for IPv6 subnets are rendered only when one is served (ip6tables, or `ip6` matches in
 * the inet table); `overlayNetwork6` is then required.
 */
import { WaygateError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { parseAddress, parsePrefix, type Family, type Prefix } from "../net/address.ts";

export type FirewallBackendName = "iptables" | "nftables";

export interface FirewallSubnet {
  /** A served subnet in CIDR form (host bits are an error). */
  prefix: string;
  /** Masquerade/SNAT traffic from the overlay to this subnet (the gateway's NAT switch). */
  nat: boolean;
  /** The gateway's interface facing this subnet. */
  lanInterface: string;
  /** The gateway's address on `lanInterface`: SNAT to it; absent → MASQUERADE. */
  snatAddress?: string;
}

export interface InputAllow {
  protocol: "tcp" | "udp";
  port: number;
}

export interface FirewallConfig {
  /** The Waygate TUN (or, in tests, a veth standing in for it). */
  tunnelInterface: string;
  /** The overlay's IPv4 network, e.g. 100.64.0.0/10: the sources we forward and NAT. */
  overlayNetwork: string;
  /** The overlay's IPv6 network; required when an IPv6 subnet is served. */
  overlayNetwork6?: string;
  subnets: FirewallSubnet[];
  mssClamp: boolean;
  protectGatewayInput: boolean;
  /** Services the agent itself offers to the tunnel while protectGatewayInput is on. Default none. */
  inputAllow?: InputAllow[];
  /**
   * The gateway's own overlay address(es): with protectGatewayInput, everything from the tunnel
   * addressed to them is accepted. Only for a Device that enforces inbound ACLs. Default none.
   */
  tunnelAddresses?: string[];
}

/** One thing set()/cleanup() changed in the OS, for logs and tests. */
export interface FirewallChange {
  op: "create" | "replace" | "delete";
  /** e.g. "iptables(v4) nat WAYGATE-POSTROUTING", "nftables inet waygate". */
  target: string;
  detail?: string;
}

export interface Firewall {
  readonly backend: FirewallBackendName;
  /** Make our rules match `config`; null removes everything we own. Idempotent. */
  set(config: FirewallConfig | null): Promise<FirewallChange[]>;
  /** Remove everything ours, including leftovers of a crashed run (run it at start too). */
  cleanup(): Promise<FirewallChange[]>;
  /** Are our rules exactly what the last set() applied? (The watchdog's question.) */
  verify?(): Promise<boolean>;
}

/** A firewall configuration that cannot be applied (not a command failure). */
export class FirewallConfigError extends WaygateError {
  constructor(message: string) {
    super("E_CONFIG_INVALID", `firewall: ${message}`);
  }
}

/** No usable firewall backend, or the kernel kept a different ruleset than we applied. */
export class FirewallPlatformError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_PLATFORM", `firewall: ${message}`, options);
  }
}

/** Interface names go into restore files and nft scripts: only what Linux allows, no quoting games. */
const IFNAME = /^[A-Za-z0-9_.@-][A-Za-z0-9_.:@-]{0,14}$/;

export interface NormalSubnet {
  prefix: Prefix;
  nat: boolean;
  lanInterface: string;
  /** null → MASQUERADE. */
  snatAddress: string | null;
}

/** A validated config with canonical prefixes, subnets most specific first. */
export interface NormalConfig {
  tunnelInterface: string;
  overlay: Partial<Record<Family, Prefix>>;
  subnets: NormalSubnet[];
  mssClamp: boolean;
  protectGatewayInput: boolean;
  inputAllow: InputAllow[];
  /** Canonical, sorted, each once. */
  tunnelAddresses: { family: Family; text: string }[];
  families: Family[];
}

function checkIfname(name: unknown, where: string): string {
  if (typeof name !== "string" || !IFNAME.test(name) || name === "." || name === "..") {
    throw new FirewallConfigError(`${where}: ${JSON.stringify(name)} is not a Linux interface name`);
  }
  return name;
}

function wrap<T>(where: string, f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (err instanceof FirewallConfigError) throw err;
    throw new FirewallConfigError(`${where}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** Validate and canonicalise; throws FirewallConfigError naming the field. */
export function normaliseConfig(config: FirewallConfig): NormalConfig {
  if (typeof config !== "object" || config === null) throw new FirewallConfigError("config must be an object");
  const tunnelInterface = checkIfname(config.tunnelInterface, "tunnelInterface");
  const overlay: Partial<Record<Family, Prefix>> = {
    4: wrap("overlayNetwork", () => parsePrefix(config.overlayNetwork, { family: 4 })),
  };
  if (config.overlayNetwork6 !== undefined) {
    overlay[6] = wrap("overlayNetwork6", () => parsePrefix(config.overlayNetwork6!, { family: 6 }));
  }
  if (!Array.isArray(config.subnets)) throw new FirewallConfigError("subnets must be an array");
  const seen = new Map<string, NormalSubnet>();
  config.subnets.forEach((s, i) => {
    const where = `subnets[${i}]`;
    const prefix = wrap(`${where}.prefix`, () => parsePrefix(s.prefix));
    if (!overlay[prefix.family]) throw new FirewallConfigError(`${where}: IPv6 subnet ${prefix.text} needs overlayNetwork6`);
    const lanInterface = checkIfname(s.lanInterface, `${where}.lanInterface`);
    if (lanInterface === tunnelInterface) throw new FirewallConfigError(`${where}.lanInterface is the tunnel interface`);
    if (typeof s.nat !== "boolean") throw new FirewallConfigError(`${where}.nat must be a boolean`);
    const snatAddress =
      s.snatAddress === undefined || prefix.length === 0
        ? null
        : wrap(`${where}.snatAddress`, () => parseAddress(s.snatAddress!, { family: prefix.family }).text);
    const key = `${prefix.text} ${lanInterface}`;
    const prev = seen.get(key);
    if (prev && (prev.nat !== s.nat || prev.snatAddress !== snatAddress)) {
      throw new FirewallConfigError(`${where}: ${prefix.text} on ${lanInterface} is listed twice with different NAT settings`);
    }
    seen.set(key, { prefix, nat: s.nat, lanInterface, snatAddress });
  });
  const subnets = [...seen.values()].sort(
    (a, b) => a.prefix.family - b.prefix.family || b.prefix.length - a.prefix.length || cmp(a.prefix.text, b.prefix.text) || cmp(a.lanInterface, b.lanInterface),
  );
  const inputAllow = (config.inputAllow ?? []).map((a, i) => {
    if (a.protocol !== "tcp" && a.protocol !== "udp") throw new FirewallConfigError(`inputAllow[${i}].protocol must be tcp or udp`);
    if (!Number.isInteger(a.port) || a.port < 1 || a.port > 65535) throw new FirewallConfigError(`inputAllow[${i}].port must be 1..65535`);
    return { protocol: a.protocol, port: a.port };
  });
  const uniqueAllow = [...new Map(inputAllow.map((a) => [`${a.protocol}/${a.port}`, a])).values()];
  if (config.tunnelAddresses !== undefined && !Array.isArray(config.tunnelAddresses)) throw new FirewallConfigError("tunnelAddresses must be an array");
  const tunnelAddresses = [
    ...new Map(
      (config.tunnelAddresses ?? []).map((text, i) => {
        const a = wrap(`tunnelAddresses[${i}]`, () => parseAddress(text));
        return [a.text, { family: a.family, text: a.text }] as const;
      }),
    ).values(),
  ].sort((a, b) => a.family - b.family || cmp(a.text, b.text));
  const families: Family[] = subnets.some((s) => s.prefix.family === 6) ? [4, 6] : [4];
  return {
    tunnelInterface,
    overlay,
    subnets,
    mssClamp: config.mssClamp === true,
    protectGatewayInput: config.protectGatewayInput === true,
    inputAllow: uniqueAllow,
    tunnelAddresses,
    families,
  };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Does `subnet` get an explicit SNAT address, MASQUERADE, or no NAT at all? */
export function natAction(s: NormalSubnet): { kind: "snat"; to: string } | { kind: "masquerade" } | { kind: "none" } {
  if (!s.nat) return { kind: "none" };
  if (s.snatAddress !== null) return { kind: "snat", to: s.snatAddress };
  return { kind: "masquerade" };
}

// ---------------------------------------------------------------------------------------------
// the watchdog

export interface WatchdogOptions {
  /** How often to check; the issue asks for hand-deleted rules back within 5 s. Default 2000. */
  intervalMs?: number;
  logger: Logger;
  /** Scheduling is injected (core reads no clock): returns a function that stops the repetition. */
  every(ms: number, fn: () => void): () => void;
}

/**
 * Re-applies `config()` whenever `firewall.verify()` says our rules are not intact (deleted by
 * hand, flushed by another tool). Checks never overlap; a failing check is logged and retried.
 */
export function watchFirewall(firewall: Firewall, config: () => FirewallConfig | null, options: WatchdogOptions): () => void {
  if (!firewall.verify) return () => {};
  let busy = false;
  let stopped = false;
  const check = async () => {
    if (busy || stopped) return;
    busy = true;
    try {
      const want = config();
      if (want !== null && !(await firewall.verify!())) {
        if (stopped) return;
        const changes = await firewall.set(want);
        options.logger.warn(`firewall: restored=true backend=${firewall.backend} changes=${changes.length}`);
      }
    } catch (err) {
      options.logger.error(`firewall: watchdog error=${JSON.stringify(err instanceof Error ? err.message : String(err))}`);
    } finally {
      busy = false;
    }
  };
  const stop = options.every(options.intervalMs ?? 2000, () => void check());
  return () => {
    stopped = true;
    stop();
  };
}
