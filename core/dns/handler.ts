/**
 * @module core/dns/handler
 * What the stub and the gateway forwarder share: the handler shape the DNS server sockets
 * (platform/linux/dns.ts) call, where a query came from, and the drop/answer counters.
 */

export type Transport = "udp" | "tcp";

export interface QueryFrom {
  address: string;
  port?: number;
  /** How the query arrived: decides the reply size limit (UDP: the querier's EDNS size). */
  transport?: Transport;
}

/** Counter name -> count ("local:answer", "formerr:label-past-end", "refused:no-grant", ...). */
export type DnsCounters = Record<string, number>;

export interface DnsHandler {
  /** The reply bytes, or null when the query is dropped (counted). Never throws for bad input. */
  handle(query: Uint8Array, from: QueryFrom): Promise<Uint8Array | null>;
  readonly counters: DnsCounters;
}

export function countInto(counters: DnsCounters, key: string): void {
  counters[key] = (counters[key] ?? 0) + 1;
}
