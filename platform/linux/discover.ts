/**
 * @module platform/linux/discover
 * Which IPv4 subnets this machine is directly connected to: the candidates a gateway reports
 * and offers (`ip -j addr show` through the injected CommandRunner). `parseIpAddrJson` is pure
 * and tested against recorded output; `discoverSubnets` runs it.
 *
 * Kept: unicast IPv4 addresses of scope global on interfaces that are UP, with the subnet they
 * sit in (address masked to its prefix length). Left out, each with a reason (logged at debug
 * as `discover: skip ...`): loopback interfaces and 127/8, interfaces that are not UP, the
 * Waygate TUN itself and any `excludeInterfaces`, link-local 169.254/16, multicast 224/4,
 * 0/8, the broadcast address, /31-/32 host addresses (nothing behind them to route to), and
 * anything overlapping the overlay network (or other `excludePrefixes`). IPv6 is not
 * discovered yet: gateways serve IPv4 subnets.
 */
import * as v from "valibot";
import { WaygateError } from "../../core/errors.ts";
import type { Logger } from "../../core/log.ts";
import { parsePrefix, prefixesOverlap, type Prefix } from "../../core/net/address.ts";
import type { CommandRunner } from "../../core/runner.ts";
import type { DiscoveredAddress } from "../../core/agent/agent.ts";

/** `ip -j addr show` did not have the shape we know. */
export class DiscoverParseError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_ROUTE_PARSE", `ip -j addr show: ${message}`, options);
  }
}

const AddrInfoSchema = v.looseObject({
  family: v.string(),
  local: v.optional(v.string()),
  prefixlen: v.optional(v.number()),
  scope: v.optional(v.string()),
});
const LinkSchema = v.looseObject({
  ifname: v.string(),
  flags: v.optional(v.array(v.string()), []),
  operstate: v.optional(v.string()),
  link_type: v.optional(v.string()),
  addr_info: v.optional(v.array(AddrInfoSchema), []),
});
const IpAddrSchema = v.array(v.union([LinkSchema, v.looseObject({})]));

export interface DiscoverOptions {
  /** Interfaces never reported (the Waygate TUN). */
  excludeInterfaces?: readonly string[];
  /** Prefixes whose overlapping subnets are never reported (the overlay network). */
  excludePrefixes?: readonly string[];
}

export interface Skipped {
  interface: string;
  address: string | null;
  reason: string;
}

const SPECIAL: [string, string][] = [
  ["127.0.0.0/8", "loopback"],
  ["169.254.0.0/16", "link-local"],
  ["224.0.0.0/4", "multicast"],
  ["0.0.0.0/8", "this-network"],
  ["255.255.255.255/32", "broadcast"],
];

export function parseIpAddrJson(text: string, options: DiscoverOptions = {}): { found: DiscoveredAddress[]; skipped: Skipped[] } {
  let raw: unknown;
  try {
    raw = text.trim() === "" ? [] : JSON.parse(text);
  } catch (cause) {
    throw new DiscoverParseError(`output is not JSON: ${(cause as Error).message}`, { cause });
  }
  const parsed = v.safeParse(IpAddrSchema, raw);
  if (!parsed.success) throw new DiscoverParseError(`unexpected shape at ${v.getDotPath(parsed.issues[0]) ?? "(top level)"}: ${parsed.issues[0].message}`);
  const excludeIf = new Set(options.excludeInterfaces ?? []);
  const special = SPECIAL.map(([p, reason]) => [parsePrefix(p), reason] as const);
  const excluded: Prefix[] = [];
  for (const p of options.excludePrefixes ?? []) {
    try {
      excluded.push(parsePrefix(p, { mask: true }));
    } catch {
      // an unparsable exclusion excludes nothing
    }
  }
  const found: DiscoveredAddress[] = [];
  const skipped: Skipped[] = [];
  for (const entry of parsed.output) {
    if (!("ifname" in entry) || typeof entry.ifname !== "string") continue;
    const link = entry as v.InferOutput<typeof LinkSchema>;
    const name = link.ifname;
    const v4 = link.addr_info.filter((a) => a.family === "inet");
    const skipAll = (reason: string) => {
      for (const a of v4) skipped.push({ interface: name, address: a.local ?? null, reason });
      if (v4.length === 0) skipped.push({ interface: name, address: null, reason });
    };
    if (excludeIf.has(name)) {
      skipAll("excluded-interface");
      continue;
    }
    if (link.flags.includes("LOOPBACK") || link.link_type === "loopback") {
      skipAll("loopback-interface");
      continue;
    }
    if (!link.flags.includes("UP")) {
      skipAll("interface-down");
      continue;
    }
    if (v4.length === 0) continue;
    for (const a of v4) {
      if (a.local === undefined || a.prefixlen === undefined) {
        skipped.push({ interface: name, address: a.local ?? null, reason: "incomplete" });
        continue;
      }
      let prefix: Prefix;
      try {
        prefix = parsePrefix(`${a.local}/${a.prefixlen}`, { family: 4, mask: true });
      } catch {
        skipped.push({ interface: name, address: a.local, reason: "unparsable" });
        continue;
      }
      const host = parsePrefix(`${a.local}/32`, { family: 4 });
      const sp = special.find(([p]) => prefixesOverlap(p, host));
      if (sp) {
        skipped.push({ interface: name, address: a.local, reason: sp[1] });
        continue;
      }
      if (a.scope !== undefined && a.scope !== "global") {
        skipped.push({ interface: name, address: a.local, reason: `scope-${a.scope}` });
        continue;
      }
      if (a.prefixlen >= 31) {
        skipped.push({ interface: name, address: a.local, reason: "host-address" });
        continue;
      }
      if (excluded.some((x) => x.family === 4 && prefixesOverlap(x, prefix))) {
        skipped.push({ interface: name, address: a.local, reason: "overlay-network" });
        continue;
      }
      found.push({ interface: name, address: host.text.slice(0, -3), subnet: prefix.text });
    }
  }
  found.sort((a, b) => a.subnet.localeCompare(b.subnet) || a.interface.localeCompare(b.interface) || a.address.localeCompare(b.address));
  return { found, skipped };
}

/** Runs `ip -j addr show` and parses it; each skip is logged once at debug. */
export async function discoverSubnets(runner: CommandRunner, options: DiscoverOptions & { logger?: Logger } = {}): Promise<DiscoveredAddress[]> {
  const r = await runner.run(["ip", "-j", "-4", "addr", "show"]);
  const { found, skipped } = parseIpAddrJson(r.stdout, options);
  for (const s of skipped) options.logger?.debug(`discover: skip interface=${s.interface} address=${s.address ?? "-"} reason=${s.reason}`);
  for (const f of found) options.logger?.debug(`discover: found interface=${f.interface} address=${f.address} subnet=${f.subnet}`);
  return found;
}
