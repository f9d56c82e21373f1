/**
 * @module core/dns/forwarder
 * The gateway's DNS forwarder: resolves what the clients' stubs forward through the tunnel,
 * from the gateway's hosts file first, then its resolv.conf nameservers, and returns only what
 * the querying system may reach through this gateway. Pure over the injected `resolve` (an
 * upstream exchange, platform/linux/dns.ts) and `policy` (`policyFromNetMap`).
 *
 * The querier is identified by the address the query came from: on the tunnel that is the
 * peer's virtual address, which cryptokey routing has already checked (no spoofing).
 *
 * Filtering, in order:
 * 1. No grant through this gateway at all: REFUSED, before anything is looked up.
 * 2. PTR for a full in-addr.arpa/ip6.arpa name of an address the querier may not reach:
 *    NXDOMAIN (a reverse name says the address exists and names it).
 * 3. Every A/AAAA record in every section whose address the querier may not reach is removed.
 *    If that removed anything from the answer, CNAMEs stay only when they lead (possibly through
 *    other CNAMEs) to a record that is left, and DNSSEC records (RRSIG/NSEC/NSEC3) and the AD
 *    bit go, because the answer no longer matches its signatures.
 * 4. An answer section that filtering emptied becomes NXDOMAIN with no records at all.
 * 5. Negative answers (NXDOMAIN, NODATA) lose their authority section, so a filtered name and
 *    a name that does not exist look the same (no SOA to tell them apart).
 *
 * Known limit: a hidden name with only A records still answers NODATA (not NXDOMAIN) to AAAA,
 * as upstream says; telling that apart from NXDOMAIN reveals that the name exists, never an
 * address.
 *
 * Upstreams are tried in order (resolv.conf order); a failure, a timeout, a malformed or
 * mismatching reply, SERVFAIL, REFUSED or NOTIMP moves on to the next; when none answers, SERVFAIL.
 */
import type { Logger } from "../log.ts";
import { addressFromBytes, parseAddress, parsePrefix, type IpAddress } from "../net/address.ts";
import { PrefixTable } from "../net/prefix-table.ts";
import type { NetMap } from "../policy/netmap.ts";
import { parseDestination, rangeToPrefixes } from "../policy/ranges.ts";
import {
  CLASS_IN,
  canonicalName,
  decodeMessage,
  encodeMessage,
  makeResponse,
  RCODE,
  rcodeName,
  sameName,
  TYPE,
  type DnsMessage,
  type DnsRecord,
} from "./codec.ts";
import { hostsLookup, hostsReverse, type Hosts, type HostsEntry } from "./config.ts";
import { DnsFormatError } from "./errors.ts";
import { countInto, serveQuery, type DnsCounters, type QueryFrom } from "./handler.ts";

export interface ForwarderPolicy {
  /** Whether the querier may reach anything through this gateway. */
  hasGrant(querier: string): boolean;
  /** Whether the querier may reach this address (4 or 16 bytes) through this gateway. */
  mayReach(querier: string, address: Uint8Array): boolean;
}

export interface ForwarderOptions {
  /** Nameserver addresses, in order (parseResolvConf(text).nameservers). */
  upstreams: readonly string[];
  hosts: Hosts | readonly HostsEntry[];
  policy: ForwarderPolicy;
  /** One query/reply exchange with an upstream; rejects on failure or timeout. */
  resolve: (query: Uint8Array, upstream: string) => Promise<Uint8Array>;
  logger: Logger;
  /** TTL of answers from the hosts file, seconds (default 60). */
  ttl?: number;
  /** Per-upstream limit on top of whatever `resolve` enforces (default 3000 ms). */
  timeoutMs?: number;
}

const DNSSEC_TYPES: ReadonlySet<number> = new Set([TYPE.RRSIG, TYPE.NSEC, TYPE.NSEC3]);
const RETRY_RCODES: ReadonlySet<number> = new Set([RCODE.SERVFAIL, RCODE.REFUSED, RCODE.NOTIMP]);

/** "::ffff:a.b.c.d" as "a.b.c.d"; null for text that is no address. */
export function querierKey(text: string): string | null {
  try {
    const a = parseAddress(text);
    if (a.family === 6 && a.bytes.slice(0, 10).every((b) => b === 0) && a.bytes[10] === 0xff && a.bytes[11] === 0xff) {
      return addressFromBytes(a.bytes.slice(12)).text;
    }
    return a.text;
  } catch {
    return null;
  }
}

/** The address a full reverse name stands for, or null ("30.0.0.10.in-addr.arpa" -> 10.0.0.30). */
export function reverseNameAddress(name: string): IpAddress | null {
  const n = canonicalName(name);
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.in-addr\.arpa$/.exec(n);
  if (v4) {
    const octets = [v4[4], v4[3], v4[2], v4[1]].map(Number);
    if (octets.some((o) => o > 255)) return null;
    return addressFromBytes(Uint8Array.from(octets));
  }
  const v6 = /^((?:[0-9a-f]\.){32})ip6\.arpa$/.exec(n);
  if (v6) {
    const nibbles = v6[1]!.split(".").filter((s) => s !== "").reverse();
    const bytes = new Uint8Array(16);
    for (let i = 0; i < 16; i++) bytes[i] = parseInt(nibbles[2 * i]! + nibbles[2 * i + 1]!, 16);
    return addressFromBytes(bytes);
  }
  return null;
}

/** The reverse-lookup name of an address (the inverse of reverseNameAddress). */
export function reverseName(a: IpAddress): string {
  if (a.family === 4) return `${[...a.bytes].reverse().join(".")}.in-addr.arpa`;
  const nibbles: string[] = [];
  for (const b of a.bytes) nibbles.push((b >> 4).toString(16), (b & 15).toString(16));
  return `${nibbles.reverse().join(".")}.ip6.arpa`;
}

export interface GatewayForwarder {
  /** `from` may be just the querier's address text (UDP assumed). */
  handle(query: Uint8Array, from: QueryFrom | string): Promise<Uint8Array | null>;
  readonly counters: DnsCounters;
}

export function createGatewayForwarder(options: ForwarderOptions): GatewayForwarder {
  const { policy, logger } = options;
  const hosts: Hosts = Array.isArray(options.hosts)
    ? { entries: [...(options.hosts as readonly HostsEntry[])], ignored: [] }
    : (options.hosts as Hosts);
  const ttl = options.ttl ?? 60;
  const timeoutMs = options.timeoutMs ?? 3000;
  const counters: DnsCounters = {};
  logger.info(
    `dns: forwarder upstreams=${options.upstreams.join(",") || "none"} hosts=${hosts.entries.length} hosts_ignored=${hosts.ignored.length}`,
  );

  const isAddressRecord = (r: DnsRecord) => r.class === CLASS_IN && r.data.kind === "address";

  const withTimeout = async (p: Promise<Uint8Array>): Promise<Uint8Array> => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        p,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no reply within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  };

  const askUpstreams = async (query: DnsMessage): Promise<DnsMessage | null> => {
    const q = query.questions[0]!;
    const onward: DnsMessage = {
      ...makeResponse(query, 0),
      id: 0,
      qr: false,
      ra: false,
      rd: true,
      edns: { udpSize: 1232, version: 0, dnssecOk: query.edns?.dnssecOk ?? false, z: 0, options: [] },
    };
    const bytes = encodeMessage(onward);
    let fallback: DnsMessage | null = null;
    for (const upstream of options.upstreams) {
      let res: DnsMessage;
      try {
        res = decodeMessage(await withTimeout(options.resolve(bytes, upstream)));
      } catch (err) {
        const why = err instanceof DnsFormatError ? `malformed:${err.reason}` : "failed";
        countInto(counters, `upstream:${why}`);
        logger.debug(`dns: forwarder upstream=${upstream} name=${q.name} result=${why} error=${(err as Error).message}`);
        continue;
      }
      const rq = res.questions[0];
      if (!res.qr || res.questions.length !== 1 || !sameName(rq!.name, q.name) || rq!.type !== q.type || rq!.class !== q.class) {
        countInto(counters, "upstream:mismatch");
        continue;
      }
      if (RETRY_RCODES.has(res.rcode)) {
        countInto(counters, `upstream:${rcodeName(res.rcode).toLowerCase()}`);
        fallback = res;
        continue;
      }
      return res;
    }
    return fallback;
  };

  /** Applies the policy to an upstream reply, in place (see the module comment). */
  const filter = (res: DnsMessage, querier: string): void => {
    const reachable = (r: DnsRecord) => !isAddressRecord(r) || policy.mayReach(querier, (r.data as { address: Uint8Array }).address);
    const before = res.answers.length;
    const answers = res.answers.filter(reachable);
    let changed = answers.length !== before;
    res.authorities = res.authorities.filter(reachable);
    const additionals = res.additionals.filter(reachable);
    if (additionals.length !== res.additionals.length) changed = true;
    res.additionals = additionals;
    if (answers.length !== before) {
      // Keep CNAMEs on a path to a record that survived.
      const good = new Set(answers.filter((r) => r.type !== TYPE.CNAME && !DNSSEC_TYPES.has(r.type)).map((r) => canonicalName(r.name)));
      const cnames = answers.filter((r) => r.type === TYPE.CNAME && r.data.kind === "name");
      for (let grew = true; grew; ) {
        grew = false;
        for (const c of cnames) {
          const owner = canonicalName(c.name);
          if (!good.has(owner) && good.has(canonicalName((c.data as { name: string }).name))) {
            good.add(owner);
            grew = true;
          }
        }
      }
      res.answers = answers.filter(
        (r) => !DNSSEC_TYPES.has(r.type) && (r.type !== TYPE.CNAME || good.has(canonicalName((r.data as { name: string }).name))),
      );
      if (res.answers.length === 0) {
        res.rcode = RCODE.NXDOMAIN;
        res.authorities = [];
        res.additionals = [];
        countInto(counters, "filtered:nxdomain");
      } else {
        countInto(counters, "filtered:partial");
      }
    }
    if (changed) {
      res.ad = false;
      res.authorities = res.authorities.filter((r) => !DNSSEC_TYPES.has(r.type));
      res.additionals = res.additionals.filter((r) => !DNSSEC_TYPES.has(r.type));
    }
    if (res.answers.length === 0) res.authorities = [];
  };

  const resolveQuery = async (query: DnsMessage, querier: string): Promise<DnsMessage> => {
    const q = query.questions[0]!;
    if (q.class !== CLASS_IN) {
      countInto(counters, "refused:class");
      return makeResponse(query, RCODE.REFUSED);
    }
    if (q.type === TYPE.PTR) {
      const addr = reverseNameAddress(q.name);
      if (addr !== null) {
        if (!policy.mayReach(querier, addr.bytes)) {
          countInto(counters, "filtered:ptr");
          return makeResponse(query, RCODE.NXDOMAIN);
        }
        const name = hostsReverse(hosts, addr);
        if (name !== undefined) {
          countInto(counters, "hosts:answer");
          const res = makeResponse(query, RCODE.NOERROR);
          res.answers.push({ name: q.name, type: TYPE.PTR, class: CLASS_IN, ttl, data: { kind: "name", name } });
          return res;
        }
      }
    }
    if (q.type === TYPE.A || q.type === TYPE.AAAA || q.type === TYPE.ANY) {
      const family = q.type === TYPE.A ? 4 : q.type === TYPE.AAAA ? 6 : undefined;
      const found = hostsLookup(hosts, q.name, family);
      if (found.length > 0) {
        const allowed = found.filter((a) => policy.mayReach(querier, a.bytes));
        if (allowed.length === 0) {
          countInto(counters, "filtered:nxdomain");
          return makeResponse(query, RCODE.NXDOMAIN);
        }
        countInto(counters, "hosts:answer");
        const res = makeResponse(query, RCODE.NOERROR);
        for (const a of allowed) {
          res.answers.push({ name: q.name, type: a.family === 4 ? TYPE.A : TYPE.AAAA, class: CLASS_IN, ttl, data: { kind: "address", address: a.bytes } });
        }
        return res;
      }
    }
    const upstream = await askUpstreams(query);
    if (upstream === null) {
      countInto(counters, "servfail:no-upstream-answer");
      return makeResponse(query, RCODE.SERVFAIL);
    }
    countInto(counters, `upstream:${rcodeName(upstream.rcode).toLowerCase()}`);
    const res: DnsMessage = {
      ...upstream,
      id: query.id,
      rd: query.rd,
      tc: false,
      questions: query.questions.map((x) => ({ ...x })),
      edns: query.edns ? { udpSize: 1232, version: 0, dnssecOk: query.edns.dnssecOk, z: 0, options: [] } : undefined,
    };
    if (!res.edns && res.rcode > 15) res.rcode = RCODE.SERVFAIL;
    filter(res, querier);
    return res;
  };

  const handle = (bytes: Uint8Array, from: QueryFrom | string): Promise<Uint8Array | null> => {
    const src = typeof from === "string" ? { address: from } : from;
    return serveQuery(bytes, src.transport ?? "udp", counters, (query) => {
      const querier = querierKey(src.address);
      if (querier === null || !policy.hasGrant(querier)) {
        countInto(counters, "refused:no-grant");
        logger.debug(`dns: forwarder refused querier=${src.address} reason=no-grant`);
        return makeResponse(query, RCODE.REFUSED);
      }
      return resolveQuery(query, querier);
    });
  };

  return { handle, counters };
}

interface SenderReach {
  allow: PrefixTable<true>;
  /** Denies with protocol "any" and no ports: the address is unreachable whatever the port. */
  deny: PrefixTable<true>;
}

/**
 * hasGrant/mayReach from a gateway's NetMap `gatewayRules`, port- and protocol-agnostic: an
 * address is reachable when some allow rule for that sender address covers it and no deny rule
 * that blocks every protocol and port does. (A deny for one port leaves the host reachable on
 * others, so its name still resolves.) Ranges ("lo-hi") are split into CIDR blocks.
 */
export function policyFromNetMap(netmap: Pick<NetMap, "gatewayRules">): ForwarderPolicy {
  const bySender = new Map<string, SenderReach>();
  for (const rule of netmap.gatewayRules) {
    const key = querierKey(rule.senderAddress);
    if (key === null) continue;
    let entry = bySender.get(key);
    if (entry === undefined) {
      entry = { allow: new PrefixTable<true>(), deny: new PrefixTable<true>() };
      bySender.set(key, entry);
    }
    const table = rule.action === "allow" ? entry.allow : rule.protocol === "any" && rule.ports === undefined ? entry.deny : null;
    if (table === null) continue;
    for (const p of rangeToPrefixes(parseDestination(rule.dst))) table.insert(parsePrefix(p), true);
  }
  return {
    hasGrant(querier) {
      const key = querierKey(querier);
      return key !== null && (bySender.get(key)?.allow.size ?? 0) > 0;
    },
    mayReach(querier, address) {
      const key = querierKey(querier);
      const entry = key === null ? undefined : bySender.get(key);
      if (entry === undefined || (address.length !== 4 && address.length !== 16)) return false;
      return entry.allow.lookup(address) === true && entry.deny.lookup(address) !== true;
    },
  };
}

