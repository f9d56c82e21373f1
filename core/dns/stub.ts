/**
 * @module core/dns/stub
 * The client's local stub resolver: answers the names of the peers this system may see
 * (`<id>.id.<zone>`, `<name>.<zone>` and the NetMap's `dnsNames` under the zone) and forwards
 * every other query through the injected `forward` (the agent sends it through the tunnel to
 * the active gateway's forwarder). Pure over that injection: sockets live in
 * platform/linux/dns.ts.
 *
 * Answers for the zone are authoritative: A/AAAA from the peer's virtual address, NODATA
 * (with the zone's SOA, for negative caching) for other types and for the zone's empty
 * non-terminals, NXDOMAIN for unknown names. Forwarded queries are rebuilt from the parsed
 * question (the client's EDNS options, e.g. cookies or client-subnet, do not leave the host);
 * the reply keeps the client's id, is checked against the question, and is re-encoded for the
 * client's UDP size (TC when it does not fit). A failed, late or mismatching reply is SERVFAIL.
 *
 * Every query ends in exactly one counter (`counters`): answered, forwarded, or a named
 * drop/error. Nothing a client sends makes `handle` throw.
 */
import type { Logger } from "../log.ts";
import { parseAddress, type IpAddress } from "../net/address.ts";
import {
  CLASS_IN,
  canonicalName,
  decodeMessage,
  encodeMessage,
  inZone,
  makeResponse,
  nameToLabels,
  RCODE,
  rcodeName,
  sameName,
  TYPE,
  type DnsMessage,
  type DnsRecord,
} from "./codec.ts";
import { DnsFormatError } from "./errors.ts";
import { countInto, serveQuery, type DnsCounters, type DnsHandler, type QueryFrom, type Transport } from "./handler.ts";

export { countInto, type DnsCounters, type DnsHandler, type QueryFrom, type Transport } from "./handler.ts";

export const DEFAULT_ZONE = "waygate";

export interface StubPeer {
  id: string;
  name: string;
  /** "100.64.0.2" (a "/len" suffix is ignored). */
  virtualAddress: string;
  /** Full names from the NetMap; those under the zone are answered too. */
  dnsNames?: readonly string[];
}

export interface StubOptions {
  zone?: string;
  peers: () => readonly StubPeer[];
  /** Sends a query onwards; resolves with the reply bytes, or null when there is none. */
  forward: (query: Uint8Array, info: { transport: Transport }) => Promise<Uint8Array | null>;
  logger: Logger;
  /** TTL of local answers, seconds (default 60). */
  ttl?: number;
  /** How long a forwarded query may take (default 4000 ms). */
  timeoutMs?: number;
}

/** The label a peer's display name becomes: lowercase, runs of other characters as "-". */
export function nameSlug(name: string): string {
  return name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
}

interface ZoneIndex {
  names: Map<string, IpAddress[]>;
  /** Every name that exists in the zone: the owners and their ancestors up to the apex. */
  exists: Set<string>;
}

function validName(n: string): boolean {
  try {
    nameToLabels(n);
    return true;
  } catch (err) {
    if (err instanceof DnsFormatError) return false;
    throw err;
  }
}

function buildIndex(peers: readonly StubPeer[], zone: string, logger: Logger): ZoneIndex {
  const names = new Map<string, IpAddress[]>();
  const exists = new Set<string>([zone]);
  const add = (name: string, addr: IpAddress) => {
    const n = canonicalName(name);
    if (!inZone(n, zone) || !validName(n)) return;
    const list = names.get(n) ?? [];
    if (!list.some((a) => a.text === addr.text)) list.push(addr);
    names.set(n, list);
    for (let cut = n; cut !== zone && cut.includes("."); cut = cut.slice(cut.indexOf(".") + 1)) exists.add(cut);
  };
  for (const p of peers) {
    let addr: IpAddress;
    try {
      addr = parseAddress(p.virtualAddress.split("/")[0]!);
    } catch {
      logger.warn(`dns: stub peer=${p.id} skipped reason=bad-virtual-address`);
      continue;
    }
    if (p.id !== "") add(`${p.id}.id.${zone}`, addr);
    const slug = nameSlug(p.name);
    if (slug !== "") add(`${slug}.${zone}`, addr);
    for (const n of p.dnsNames ?? []) add(n, addr);
  }
  return { names, exists };
}

export function createStub(options: StubOptions): DnsHandler {
  const zone = canonicalName(options.zone ?? DEFAULT_ZONE);
  if (!validName(zone) || zone === ".") throw new RangeError(`stub zone ${JSON.stringify(zone)} is not a domain name`);
  const ttl = options.ttl ?? 60;
  const timeoutMs = options.timeoutMs ?? 4000;
  const { logger } = options;
  const counters: DnsCounters = {};
  let cachedPeers: readonly StubPeer[] | undefined;
  let cachedIndex: ZoneIndex | undefined;

  const index = (): ZoneIndex => {
    const peers = options.peers();
    if (peers !== cachedPeers || cachedIndex === undefined) {
      cachedPeers = peers;
      cachedIndex = buildIndex(peers, zone, logger);
    }
    return cachedIndex;
  };

  const soa = (): DnsRecord => ({
    name: zone,
    type: TYPE.SOA,
    class: CLASS_IN,
    ttl,
    data: { kind: "soa", mname: `ns.${zone}`, rname: `hostmaster.${zone}`, serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: ttl },
  });

  const answerLocal = (query: DnsMessage): DnsMessage => {
    const q = query.questions[0]!;
    const name = canonicalName(q.name);
    const idx = index();
    const addrs = idx.names.get(name);
    const res = makeResponse(query, RCODE.NOERROR);
    res.aa = true;
    if (addrs === undefined && !idx.exists.has(name)) {
      res.rcode = RCODE.NXDOMAIN;
      res.authorities.push(soa());
      countInto(counters, "local:nxdomain");
      return res;
    }
    for (const a of addrs ?? []) {
      const type = a.family === 4 ? TYPE.A : TYPE.AAAA;
      if (q.type === type || q.type === TYPE.ANY) {
        res.answers.push({ name: q.name, type, class: CLASS_IN, ttl, data: { kind: "address", address: a.bytes } });
      }
    }
    if (res.answers.length === 0) res.authorities.push(soa());
    countInto(counters, res.answers.length === 0 ? "local:nodata" : "local:answer");
    return res;
  };

  const forward = async (query: DnsMessage, transport: Transport): Promise<DnsMessage> => {
    const q = query.questions[0]!;
    const onward: DnsMessage = {
      ...makeResponse(query, 0),
      qr: false,
      ra: false,
      rd: query.rd,
      edns: { udpSize: 1232, version: 0, dnssecOk: query.edns?.dnssecOk ?? false, z: 0, options: [] },
    };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    let reply: Uint8Array | null | "timeout";
    try {
      reply = await Promise.race([options.forward(encodeMessage(onward), { transport }), late]);
    } catch (err) {
      logger.debug(`dns: stub forward failed name=${q.name} error=${(err as Error).message}`);
      reply = null;
    } finally {
      clearTimeout(timer);
    }
    const fail = (why: string) => {
      countInto(counters, `servfail:${why}`);
      return makeResponse(query, RCODE.SERVFAIL);
    };
    if (reply === "timeout") return fail("forward-timeout");
    if (reply === null) return fail("forward-failed");
    let res: DnsMessage;
    try {
      res = decodeMessage(reply);
    } catch (err) {
      if (!(err instanceof DnsFormatError)) throw err;
      return fail("forward-malformed");
    }
    const rq = res.questions[0];
    if (!res.qr || res.id !== query.id || res.questions.length !== 1 || !sameName(rq!.name, q.name) || rq!.type !== q.type || rq!.class !== q.class) {
      return fail("forward-mismatch");
    }
    countInto(counters, `forwarded:${rcodeName(res.rcode).toLowerCase()}`);
    // Our own OPT toward the client, and only if it sent one.
    res.edns = query.edns ? { udpSize: 1232, version: 0, dnssecOk: query.edns.dnssecOk, z: 0, options: [] } : undefined;
    if (!res.edns && res.rcode > 15) res.rcode = RCODE.SERVFAIL;
    return res;
  };

  const handle = (bytes: Uint8Array, from: QueryFrom): Promise<Uint8Array | null> => {
    const transport = from.transport ?? "udp";
    return serveQuery(
      bytes,
      transport,
      counters,
      (query) =>
        inZone(query.questions[0]!.name, zone) && query.questions[0]!.class === CLASS_IN ? answerLocal(query) : forward(query, transport),
      (reason) => logger.debug(`dns: stub malformed from=${from.address} reason=${reason}`),
    );
  };

  return { handle, counters };
}
