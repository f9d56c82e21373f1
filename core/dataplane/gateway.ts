/**
 * @module core/dataplane/gateway
 * The gateway's in-process enforcement, as the Device runs it: the access filter on packets from
 * the overlay (filter.ts, stage I9 in device.ts) and the flow table on packets from a LAN
 * (flow-table.ts, stage O4). Both directions work on one reusable PacketHeaders: no allocation
 * per packet.
 *
 * Flows are recorded in the direction of whoever opened them: an allowed overlay packet into a
 * LAN records (protocol, overlay source, source port, LAN destination, destination port); a LAN
 * packet is forwarded only if its reversed tuple is a live flow, or it is an ICMP error quoting a
 * flow's packet (then it does not refresh the flow). ICMP echo requests open flows keyed by
 * their identifier; other ICMP messages from the overlay pass the filter but open none.
 * With `directTraffic: "filter"`, packets the gateway itself sends from its virtual address open
 * flows too, so that replies to its own connections get back in past `directAllow`.
 *
 * Timeouts (DEFAULT_FLOW_TIMEOUTS), measured from the last packet either way:
 *   TCP opening (no answer from the LAN yet)   30 s     TCP established (answered)  2 h
 *   TCP closing (FIN seen either way)          60 s     TCP reset (RST either way)  10 s
 *   UDP and other protocols, unanswered        30 s     ... answered               180 s
 *   ICMP echo                                  30 s     fragment of a passed datagram 30 s
 * A SYN without ACK on a closing or reset flow starts it over (a reused tuple).
 *
 * Flows opened under one configuration are re-checked when the configuration changes
 * (`revalidate`): a revoked grant stops the LAN's answers too, at once, not at the timeout.
 */
import {
  ALLOW,
  DEST_FORWARD,
  DEST_SELF_VIRTUAL,
  FLOW_TABLE_FULL,
  FRAGMENT,
  GATEWAY_REASONS,
  type GatewayDropReason,
  GatewayFilter,
  type GatewayFilterConfig,
  type GatewaySender,
  MALFORMED_IP,
  UNSOLICITED,
} from "./filter.ts";
import { FlowTable, KEY_FRAGMENT, KEY_V6 } from "./flow-table.ts";
import {
  FRAG_FIRST,
  FRAG_LATER,
  FRAG_NONE,
  PacketHeaders,
  PARSE_OK,
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

/** What Device.setGateway takes: the filter's configuration plus the flow table's. */
export interface GatewayConfig extends GatewayFilterConfig {
  /** Flow table capacity (default 65,536); drops beyond it count as `flow-table-full`. */
  maxFlows?: number;
  flowTimeouts?: Partial<FlowTimeouts>;
}

/** Flow state bits (the flow table's state byte). */
const ST_REPLIED = 1;
const ST_FIN = 2;
const ST_RST = 4;

/** Flow table slots examined per sweep (the Device sweeps once per tick). */
const SWEEP_SLOTS = 4096;

export class Gateway {
  readonly filter: GatewayFilter;
  readonly flows: FlowTable;
  readonly timeouts: FlowTimeouts;
  /** Drops by reason over all peers. */
  readonly drops: Partial<Record<GatewayDropReason, number>> = {};
  private readonly h = new PacketHeaders();

  /** Builds a gateway; `previous` hands over its flow table (when the size matches) for revalidate. */
  constructor(config: GatewayConfig, options: { seed: number; previous?: Gateway | null }) {
    this.filter = new GatewayFilter(config);
    this.timeouts = { ...DEFAULT_FLOW_TIMEOUTS, ...config.flowTimeouts };
    for (const [name, ms] of Object.entries(this.timeouts)) {
      if (!Number.isFinite(ms) || ms <= 0) throw new RangeError(`flowTimeouts.${name} must be a positive number of ms, got ${ms}`);
    }
    const prev = options.previous ?? null;
    const max = config.maxFlows ?? prev?.flows.maxEntries;
    this.flows = prev !== null && prev.flows.maxEntries === max ? prev.flows : new FlowTable({ maxEntries: max, seed: options.seed });
    if (prev !== null) Object.assign(this.drops, prev.drops);
  }

  /** Counts a drop in the all-peers totals and returns it (the Device counts it per peer). */
  count(reason: number): GatewayDropReason {
    const name = GATEWAY_REASONS[reason] as GatewayDropReason;
    this.drops[name] = (this.drops[name] ?? 0) + 1;
    return name;
  }

  /**
   * I9: a decrypted packet from `sender`'s peer, past cryptokey routing, `len` bytes by its own
   * header. ALLOW, or the reason to drop it.
   */
  inbound(sender: GatewaySender | null, packet: Uint8Array, len: number, now: number): number {
    const h = this.h;
    if (h.parse(packet, len) !== PARSE_OK) return MALFORMED_IP;
    const filter = this.filter;
    const kind = filter.destinationKind(h);
    if (kind === DEST_SELF_VIRTUAL) {
      if (filter.directPass) return ALLOW;
      // An answer to a connection the gateway opened itself.
      if (h.fragment !== FRAG_LATER && this.answer(now) === ALLOW) return ALLOW;
    }
    const verdict = filter.check(sender, h, kind);
    if (verdict === FRAGMENT) return this.fragmentKnown(now) ? ALLOW : FRAGMENT;
    if (verdict !== ALLOW) return verdict;
    if (kind === DEST_FORWARD && !this.open(now)) return FLOW_TABLE_FULL;
    if (h.fragment === FRAG_FIRST && !this.recordFragment(now)) return FLOW_TABLE_FULL;
    return ALLOW;
  }

  /**
   * O4: a packet read from the TUN. One whose source is in the overlay passes (the gateway's own,
   * recorded as a flow under `directTraffic: "filter"`); one from a LAN must answer a flow.
   */
  outbound(packet: Uint8Array, len: number, now: number): number {
    const h = this.h;
    if (h.parse(packet, len) !== PARSE_OK) return MALFORMED_IP;
    const filter = this.filter;
    if (filter.inOverlay(h, true)) {
      if (filter.directPass || !filter.fromSelfVirtual(h)) return ALLOW;
      if (h.fragment === FRAG_LATER) return ALLOW;
      if (!this.open(now)) return FLOW_TABLE_FULL;
      if (h.fragment === FRAG_FIRST && !this.recordFragment(now)) return FLOW_TABLE_FULL;
      return ALLOW;
    }
    if (h.fragment === FRAG_LATER) return this.fragmentKnown(now) ? ALLOW : FRAGMENT;
    const verdict = this.answer(now);
    if (verdict === ALLOW && h.fragment === FRAG_FIRST && !this.recordFragment(now)) return FLOW_TABLE_FULL;
    return verdict;
  }

  /** Expires a slice of the flow table. */
  sweep(now: number): void {
    this.flows.sweep(now, SWEEP_SLOTS);
  }

  /**
   * Re-checks every stored flow against this gateway's filter (after a configuration change):
   * removes expired ones and those the overlay side could no longer open. Returns how many went.
   */
  revalidate(now: number): number {
    const h = this.h;
    const k = this.flows.key;
    const filter = this.filter;
    return this.flows.retain((_slot, expiresAt) => {
      if (expiresAt <= now) return false;
      if ((k[0]! & KEY_FRAGMENT) !== 0) return true; // short-lived; its first fragment passed
      h.family = (k[0]! & KEY_V6) !== 0 ? 6 : 4;
      h.proto = k[0]! & 0xff;
      h.s0 = k[1]!;
      h.s1 = k[2]!;
      h.s2 = k[3]!;
      h.s3 = k[4]!;
      h.d0 = k[5]!;
      h.d1 = k[6]!;
      h.d2 = k[7]!;
      h.d3 = k[8]!;
      h.sport = k[9]! >>> 16;
      h.dport = k[9]! & 0xffff;
      h.fragment = FRAG_NONE;
      if (filter.fromSelfVirtual(h)) return !filter.directPass; // the gateway's own connections
      return filter.check(filter.senderBySource(h), h, filter.destinationKind(h)) === ALLOW;
    });
  }

  // ---------------------------------------------------------------- flows

  private keyTuple(reverse: boolean): void {
    const h = this.h;
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

  private isIcmp(): boolean {
    const h = this.h;
    return (h.proto === PROTO_ICMP && h.family === 4) || (h.proto === PROTO_ICMPV6 && h.family === 6);
  }

  private timeout(state: number): number {
    const t = this.timeouts;
    const p = this.h.proto;
    if (p === PROTO_TCP) {
      if (state & ST_RST) return t.tcpResetMs;
      if (state & ST_FIN) return t.tcpClosingMs;
      return state & ST_REPLIED ? t.tcpEstablishedMs : t.tcpOpeningMs;
    }
    if (this.isIcmp()) return t.icmpMs;
    return state & ST_REPLIED ? t.udpRepliedMs : t.udpMs;
  }

  private tcpState(state: number): number {
    const f = this.h.tcpFlags;
    if ((f & (TCP_SYN | TCP_ACK)) === TCP_SYN && (state & (ST_FIN | ST_RST)) !== 0) state = 0;
    if (f & TCP_FIN) state |= ST_FIN;
    if (f & TCP_RST) state |= ST_RST;
    return state;
  }

  /** Records or refreshes the flow this packet opens; false when the table is full. */
  private open(now: number): boolean {
    const h = this.h;
    if (this.isIcmp() && !isIcmpEchoRequest(h.family, h.icmpType)) return true; // opens nothing
    this.keyTuple(false);
    const flows = this.flows;
    const slot = flows.find(now);
    let state = slot >= 0 ? flows.state(slot) : 0;
    if (h.proto === PROTO_TCP) state = this.tcpState(state);
    return flows.upsert(now, now + this.timeout(state), state) >= 0;
  }

  /** ALLOW when the packet answers a live flow (refreshing it), else UNSOLICITED. */
  private answer(now: number): number {
    const h = this.h;
    const flows = this.flows;
    if (this.isIcmp()) {
      if (isIcmpError(h.family, h.icmpType)) return this.quotesFlow(now) ? ALLOW : UNSOLICITED;
      if (!isIcmpEchoReply(h.family, h.icmpType)) return UNSOLICITED;
    }
    this.keyTuple(true);
    const slot = flows.find(now);
    if (slot < 0) return UNSOLICITED;
    let state = flows.state(slot) | ST_REPLIED;
    if (h.proto === PROTO_TCP) state = this.tcpState(state);
    flows.update(slot, now + this.timeout(state), state);
    return ALLOW;
  }

  /** Whether an ICMP error quotes a packet of a live flow, sent by the error's destination. */
  private quotesFlow(now: number): boolean {
    const h = this.h;
    if (!h.quoted || h.qs0 !== h.d0 || h.qs1 !== h.d1 || h.qs2 !== h.d2 || h.qs3 !== h.d3) return false;
    const q = h.qProto;
    if (q !== PROTO_TCP && q !== PROTO_UDP && q !== (h.family === 4 ? PROTO_ICMP : PROTO_ICMPV6)) {
      // Other protocols' flows have no ports: the quote's tuple is (proto, src, 0, dst, 0).
      h.qsport = 0;
      h.qdport = 0;
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
    k[9] = ((h.qsport << 16) | h.qdport) >>> 0;
    return this.flows.find(now) >= 0;
  }

  private fragmentKey(): void {
    const h = this.h;
    this.keyTuple(false);
    const k = this.flows.key;
    k[0] = h.proto | KEY_FRAGMENT | (h.family === 6 ? KEY_V6 : 0);
    k[9] = h.fragId >>> 0;
  }

  private recordFragment(now: number): boolean {
    this.fragmentKey();
    return this.flows.upsert(now, now + this.timeouts.fragmentMs, 0) >= 0;
  }

  private fragmentKnown(now: number): boolean {
    this.fragmentKey();
    return this.flows.find(now) >= 0;
  }
}
