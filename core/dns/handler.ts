/**
 * @module core/dns/handler
 * What the stub and the gateway forwarder share: the handler shape the DNS server sockets
 * (platform/linux/dns.ts) call, where a query came from, the drop/answer counters, and the frame
 * (serveQuery) that both run a query through.
 */

import { decodeMessage, encodeMessage, formErrFor, makeResponse, OPCODE_QUERY, RCODE, udpLimit, type DnsMessage } from "./codec.ts";
import { DnsFormatError } from "./errors.ts";

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

/**
 * The frame every DNS service here runs a query through: decode (FORMERR when the header is
 * readable, else a counted drop), drop responses sent as queries, NOTIMP for other opcodes,
 * FORMERR unless exactly one question, BADVERS for EDNS versions other than 0, then `answer`,
 * then encode within the transport's size limit (SERVFAIL if the answer cannot be encoded).
 * `onMalformed` lets a caller log what it counts.
 */
export async function serveQuery(
  bytes: Uint8Array,
  transport: Transport,
  counters: DnsCounters,
  answer: (query: DnsMessage) => Promise<DnsMessage> | DnsMessage,
  onMalformed?: (reason: string) => void,
): Promise<Uint8Array | null> {
  let query: DnsMessage;
  try {
    query = decodeMessage(bytes);
  } catch (err) {
    if (!(err instanceof DnsFormatError)) throw err;
    const formErr = formErrFor(bytes);
    countInto(counters, formErr === null ? "drop:unreadable" : `formerr:${err.reason}`);
    onMalformed?.(err.reason);
    return formErr;
  }
  if (query.qr) {
    countInto(counters, "drop:response-as-query");
    return null;
  }
  let res: DnsMessage;
  if (query.opcode !== OPCODE_QUERY) {
    countInto(counters, "notimp:opcode");
    res = makeResponse(query, RCODE.NOTIMP);
  } else if (query.questions.length !== 1) {
    countInto(counters, "formerr:question-count");
    res = makeResponse(query, RCODE.FORMERR);
  } else if (query.edns !== undefined && query.edns.version !== 0) {
    countInto(counters, "badvers");
    res = makeResponse(query, RCODE_BADVERS);
  } else {
    res = await answer(query);
  }
  try {
    return encodeMessage(res, { maxSize: transport === "tcp" ? 65535 : udpLimit(query) });
  } catch (err) {
    if (!(err instanceof DnsFormatError)) throw err;
    countInto(counters, `servfail:encode-${err.reason}`);
    return encodeMessage(makeResponse(query, RCODE.SERVFAIL));
  }
}

/** Extended RCODE 16 (RFC 6891): the querier's EDNS version is not supported. */
const RCODE_BADVERS = 16;
