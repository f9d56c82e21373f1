/**
 * @module core/dns/config
 * resolv.conf(5) and hosts(5) text, parsed leniently the way glibc reads them: a line that does
 * not parse is skipped and reported in `ignored` (with its 1-based line number and a reason),
 * never thrown, because one odd line must not take the gateway's DNS down. The forwarder gets
 * the texts (or the parsed results) injected; core never opens /etc itself.
 */
import { parseAddress, type IpAddress } from "../net/address.ts";
import { canonicalName, nameToLabels } from "./codec.ts";
import { DnsFormatError } from "./errors.ts";

export interface IgnoredLine {
  line: number;
  reason: string;
}

export interface ResolvConf {
  /** Canonical address texts, in file order, duplicates removed (glibc uses the first 3). */
  nameservers: string[];
  search: string[];
  ignored: IgnoredLine[];
}

/** glibc's MAXNS: later nameserver lines are ignored. */
export const MAX_NAMESERVERS = 3;

function stripComment(line: string): string {
  const hash = line.search(/[#;]/);
  return (hash >= 0 ? line.slice(0, hash) : line).trim();
}

export function parseResolvConf(text: string): ResolvConf {
  const out: ResolvConf = { nameservers: [], search: [], ignored: [] };
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = stripComment(lines[i]!);
    if (line === "") continue;
    const [keyword, ...args] = line.split(/\s+/);
    if (keyword === "nameserver") {
      if (args.length !== 1) {
        out.ignored.push({ line: i + 1, reason: `nameserver takes one address, got ${args.length}` });
        continue;
      }
      let addr: IpAddress;
      try {
        addr = parseAddress(args[0]!);
      } catch (err) {
        out.ignored.push({ line: i + 1, reason: (err as Error).message });
        continue;
      }
      if (out.nameservers.includes(addr.text)) continue;
      if (out.nameservers.length >= MAX_NAMESERVERS) {
        out.ignored.push({ line: i + 1, reason: `more than ${MAX_NAMESERVERS} nameservers` });
        continue;
      }
      out.nameservers.push(addr.text);
    } else if (keyword === "search" || keyword === "domain") {
      out.search = args.map(canonicalName);
    } else if (keyword === "options" || keyword === "sortlist") {
      // Resolver tuning for the local libc; the forwarder has its own timeouts.
    } else {
      out.ignored.push({ line: i + 1, reason: `unknown keyword ${JSON.stringify(keyword)}` });
    }
  }
  return out;
}

export interface HostsEntry {
  address: IpAddress;
  /** Canonical (lowercase, no trailing dot) names: the canonical name first, then aliases. */
  names: string[];
}

export interface Hosts {
  entries: HostsEntry[];
  ignored: IgnoredLine[];
}

export function parseHosts(text: string): Hosts {
  const out: Hosts = { entries: [], ignored: [] };
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const hash = lines[i]!.indexOf("#");
    const line = (hash >= 0 ? lines[i]!.slice(0, hash) : lines[i]!).trim();
    if (line === "") continue;
    const [addrText, ...names] = line.split(/\s+/);
    if (names.length === 0) {
      out.ignored.push({ line: i + 1, reason: "an address without names" });
      continue;
    }
    let address: IpAddress;
    try {
      address = parseAddress(addrText!);
    } catch (err) {
      out.ignored.push({ line: i + 1, reason: (err as Error).message });
      continue;
    }
    const good: string[] = [];
    for (const n of names) {
      try {
        nameToLabels(n);
        good.push(canonicalName(n));
      } catch (err) {
        if (!(err instanceof DnsFormatError)) throw err;
        out.ignored.push({ line: i + 1, reason: `name ${JSON.stringify(n)}: ${err.reason}` });
      }
    }
    if (good.length > 0) out.entries.push({ address, names: good });
  }
  return out;
}

/** Addresses for a name, in file order (what glibc's files backend returns). */
export function hostsLookup(hosts: Hosts, name: string, family?: 4 | 6): IpAddress[] {
  const n = canonicalName(name);
  const out: IpAddress[] = [];
  for (const e of hosts.entries) {
    if ((family === undefined || e.address.family === family) && e.names.includes(n)) {
      if (!out.some((a) => a.text === e.address.text)) out.push(e.address);
    }
  }
  return out;
}

/** The first name for an address (reverse lookup), or undefined. */
export function hostsReverse(hosts: Hosts, address: IpAddress): string | undefined {
  return hosts.entries.find((e) => e.address.text === address.text)?.names[0];
}
