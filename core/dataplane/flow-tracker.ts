/**
 * @module core/dataplane/flow-tracker
 * Connection tracking over one FlowTable (flow-table.ts), shared by the two places the Device
 * needs it: the gateway's forwarded flows (gateway.ts: what the overlay opened into a LAN) and
 * the device's own flows (device.ts, with inbound ACLs on: what this device opened toward its
 * peers, so that their answers get in past the ACLs). Every method works on a PacketHeaders the
 * caller has parsed already; nothing allocates.
 *
 * A flow is keyed in the direction of whoever opened it: (protocol, opener's address and port,
 * answerer's address and port). A packet answers a flow when its reversed tuple is a live flow,
 * or when it is an ICMP error quoting a packet of a live flow sent by the error's destination
 * (then it does not refresh the flow). ICMP echo requests open flows keyed by their identifier
 * (headers.ts gives them ports); other ICMP messages open none.
 *
 * `strictTcp` (the own-flow tracker): only a SYN without ACK opens a TCP flow; other segments
 * only refresh one that exists. So our SYN-ACKs and data on a connection a peer opened (admitted
 * by an inbound ACL) never make a flow of their own, and revoking the ACL closes the connection
 * at once instead of at the flow's timeout. Without it (the gateway), any allowed packet opens or
 * refreshes: the gateway checks every overlay packet against its grants anyway.
 *
 * Timeouts (DEFAULT_FLOW_TIMEOUTS), measured from the last packet either way:
 *   TCP opening (no answer yet)                30 s     TCP established (answered)  2 h
 *   TCP closing (FIN seen either way)          60 s     TCP reset (RST either way)  10 s
 *   UDP and other protocols, unanswered        30 s     ... answered               180 s
 *   ICMP echo                                  30 s     fragment of a passed datagram 30 s
 * A SYN without ACK on a closing or reset flow starts it over (a reused tuple).
 */
import { FlowTable, KEY_FRAGMENT, KEY_V6 } from "./flow-table.ts";
import {
  FRAG_NONE,
  type PacketHeaders,
  PROTO_ICMP,
  PROTO_ICMPV6,
  PROTO_TCP,
  PROTO_UDP,
  TCP_ACK,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
  isIcmpEchoReply,
  isIcmpEchoRequest,
  isIcmpError,
} from "./headers.ts";

export interface FlowTimeouts {
  tcpOpeningMs: number;
  tcpEstablishedMs: number;
  tcpClosingMs: number;
  tcpResetMs: number;
  udpMs: number;
  udpRepliedMs: number;
  icmpMs: number;
  fragmentMs: number;
}

export const DEFAULT_FLOW_TIMEOUTS: Readonly<FlowTimeouts> = Object.freeze({
  tcpOpeningMs: 30_000,
  tcpEstablishedMs: 2 * 3600_000,
  tcpClosingMs: 60_000,
  tcpResetMs: 10_000,
  udpMs: 30_000,
  udpRepliedMs: 180_000,
  icmpMs: 30_000,
  fragmentMs: 30_000,
});

/** Flow state bits (the flow table's state byte). */
export const ST_REPLIED = 1;
export const ST_FIN = 2;
export const ST_RST = 4;

/** What open() returns besides true/false-like codes. */
export const OPENED = 0;
/** The table is full of live flows: the packet must be dropped (`flow-table-full`). */
export const TABLE_FULL = 1;
/** strictTcp: a TCP segment other than a SYN with no flow to refresh (opens nothing). */
export const NOT_OPENED = 2;

/** Flow table slots examined per sweep (the Device sweeps once per tick). */
const SWEEP_SLOTS = 4096;

export function resolveFlowTimeouts(partial: Partial<FlowTimeouts> | undefined): FlowTimeouts {
  const t = { ...DEFAULT_FLOW_TIMEOUTS, ...partial };
  for (const [name, ms] of Object.entries(t)) {
    if (!Number.isFinite(ms) || ms <= 0) throw new RangeError(`flowTimeouts.${name} must be a positive number of ms, got ${ms}`);
  }
  return t;
}

export class FlowTracker {
  constructor(
    readonly flows: FlowTable,
    readonly timeouts: FlowTimeouts,
    readonly strictTcp: boolean,
  ) {}

  /** Loads the packet's tuple (reversed: the tuple of the flow it would answer) into the key. */
  keyTuple(h: PacketHeaders, reverse: boolean): void {
    const k = this.flows.key;
    k[0] = h.proto | (h.family === 6 ? KEY_V6 : 0);
    if (!reverse) {
      k[1] = h.s0;
      k[2] = h.s1;
      k[3] = h.s2;
      k[4] = h.s3;
      k[5] = h.d0;
      k[6] = h.d1;
      k[7] = h.d2;
      k[8] = h.d3;
      k[9] = ((h.sport << 16) | h.dport) >>> 0;
    } else {
      k[1] = h.d0;
      k[2] = h.d1;
      k[3] = h.d2;
      k[4] = h.d3;
      k[5] = h.s0;
      k[6] = h.s1;
      k[7] = h.s2;
      k[8] = h.s3;
      k[9] = ((h.dport << 16) | h.sport) >>> 0;
    }
  }

  /**
   * The inverse of keyTuple: loads the table's current key (as a retain() callback sees it) into
   * the headers, reversed for the tuple of a packet answering the stored flow. The result is an
   * unfragmented packet with no TCP flags or ICMP type: enough for the filters to re-check it.
   */
  headersFromKey(h: PacketHeaders, reverse: boolean): void {
    const k = this.flows.key;
    h.family = (k[0]! & KEY_V6) !== 0 ? 6 : 4;
    h.proto = k[0]! & 0xff;
    const src = reverse ? 5 : 1;
    const dst = reverse ? 1 : 5;
    h.s0 = k[src]!;
    h.s1 = k[src + 1]!;
    h.s2 = k[src + 2]!;
    h.s3 = k[src + 3]!;
    h.d0 = k[dst]!;
    h.d1 = k[dst + 1]!;
    h.d2 = k[dst + 2]!;
    h.d3 = k[dst + 3]!;
    const ports = k[9]!;
    h.sport = reverse ? ports & 0xffff : ports >>> 16;
    h.dport = reverse ? ports >>> 16 : ports & 0xffff;
    h.fragment = FRAG_NONE;
    h.icmpType = -1;
  }

  private timeout(h: PacketHeaders, state: number): number {
    const t = this.timeouts;
    const p = h.proto;
    if (p === PROTO_TCP) {
      if (state & ST_RST) return t.tcpResetMs;
      if (state & ST_FIN) return t.tcpClosingMs;
      return state & ST_REPLIED ? t.tcpEstablishedMs : t.tcpOpeningMs;
    }
    if (isIcmp(h)) return t.icmpMs;
    return state & ST_REPLIED ? t.udpRepliedMs : t.udpMs;
  }

  private tcpState(h: PacketHeaders, state: number): number {
    const f = h.tcpFlags;
    if ((f & (TCP_SYN | TCP_ACK)) === TCP_SYN && (state & (ST_FIN | ST_RST)) !== 0) state = 0;
    if (f & TCP_FIN) state |= ST_FIN;
    if (f & TCP_RST) state |= ST_RST;
    return state;
  }

  /** Records or refreshes the flow this packet opens: OPENED (also "nothing to open"), TABLE_FULL or NOT_OPENED. */
  open(h: PacketHeaders, now: number): number {
    if (isIcmp(h) && !isIcmpEchoRequest(h.family, h.icmpType)) return OPENED; // opens nothing
    this.keyTuple(h, false);
    const flows = this.flows;
    const slot = flows.find(now);
    let state = slot >= 0 ? flows.state(slot) : 0;
    if (h.proto === PROTO_TCP) {
      if (slot < 0 && this.strictTcp && (h.tcpFlags & (TCP_SYN | TCP_ACK)) !== TCP_SYN) return NOT_OPENED;
      state = this.tcpState(h, state);
    }
    if (slot >= 0) {
      flows.update(slot, now + this.timeout(h, state), state);
      return OPENED;
    }
    return flows.upsert(now, now + this.timeout(h, state), state) >= 0 ? OPENED : TABLE_FULL;
  }

  /** Whether the packet answers a live flow (refreshing it; an ICMP error quoting one refreshes nothing). */
  answer(h: PacketHeaders, now: number): boolean {
    const flows = this.flows;
    if (isIcmp(h)) {
      if (isIcmpError(h.family, h.icmpType)) return this.quotesFlow(h, now);
      if (!isIcmpEchoReply(h.family, h.icmpType)) return false;
    }
    this.keyTuple(h, true);
    const slot = flows.find(now);
    if (slot < 0) return false;
    let state = flows.state(slot) | ST_REPLIED;
    if (h.proto === PROTO_TCP) state = this.tcpState(h, state);
    flows.update(slot, now + this.timeout(h, state), state);
    return true;
  }

  /** Whether an ICMP error quotes a packet of a live flow, sent by the error's destination. */
  private quotesFlow(h: PacketHeaders, now: number): boolean {
    if (!h.quoted || h.qs0 !== h.d0 || h.qs1 !== h.d1 || h.qs2 !== h.d2 || h.qs3 !== h.d3) return false;
    const q = h.qProto;
    let sport = h.qsport;
    let dport = h.qdport;
    if (q !== PROTO_TCP && q !== PROTO_UDP && q !== (h.family === 4 ? PROTO_ICMP : PROTO_ICMPV6)) {
      // Other protocols' flows have no ports: the quote's tuple is (proto, src, 0, dst, 0).
      sport = 0;
      dport = 0;
    }
    const k = this.flows.key;
    k[0] = q | (h.family === 6 ? KEY_V6 : 0);
    k[1] = h.qs0;
    k[2] = h.qs1;
    k[3] = h.qs2;
    k[4] = h.qs3;
    k[5] = h.qd0;
    k[6] = h.qd1;
    k[7] = h.qd2;
    k[8] = h.qd3;
    k[9] = ((sport << 16) | dport) >>> 0;
    return this.flows.find(now) >= 0;
  }

  private fragmentKey(h: PacketHeaders): void {
    this.keyTuple(h, false);
    const k = this.flows.key;
    k[0] = h.proto | KEY_FRAGMENT | (h.family === 6 ? KEY_V6 : 0);
    k[9] = h.fragId >>> 0;
  }

  /** Remembers a first fragment that passed, so that its later fragments may follow (false: table full). */
  recordFragment(h: PacketHeaders, now: number): boolean {
    this.fragmentKey(h);
    return this.flows.upsert(now, now + this.timeouts.fragmentMs, 0) >= 0;
  }

  /** Whether a later fragment belongs to a datagram whose first fragment passed. */
  fragmentKnown(h: PacketHeaders, now: number): boolean {
    this.fragmentKey(h);
    return this.flows.find(now) >= 0;
  }

  /** Expires a slice of the table. */
  sweep(now: number): void {
    this.flows.sweep(now, SWEEP_SLOTS);
  }
}

export function isIcmp(h: PacketHeaders): boolean {
  return (h.proto === PROTO_ICMP && h.family === 4) || (h.proto === PROTO_ICMPV6 && h.family === 6);
}
