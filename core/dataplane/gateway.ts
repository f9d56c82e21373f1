/**
 * @module core/dataplane/gateway
 * The gateway's in-process enforcement, as the Device runs it: the access filter on packets from
 * the overlay (filter.ts, stage I9 in device.ts) and the flow table on packets from a LAN
 * (flow-tracker.ts over flow-table.ts, stage O4). Both directions work on one reusable
 * PacketHeaders (the Device's own, handed over at construction): no allocation per packet.
 *
 * Flows are recorded in the direction of whoever opened them: an allowed overlay packet into a
 * LAN records (protocol, overlay source, source port, LAN destination, destination port); a LAN
 * packet is forwarded only if it answers such a flow (flow-tracker.ts: reversed tuple, or an ICMP
 * error quoting one). Timeouts: flow-tracker.ts.
 *
 * Traffic of the gateway itself is not this module's business, in either direction: a packet to
 * the gateway's virtual address answers SELF from inbound() (the Device's inbound ACLs, stage I10,
 * decide on it exactly as on any other device), and a packet the gateway sends from an overlay
 * address answers SELF from outbound() (the Device records it as one of its own flows when inbound
 * ACLs are on). Only the gateway's other local addresses (its LAN side) are closed here, always.
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
  SELF,
  UNSOLICITED,
} from "./filter.ts";
import { FlowTable, KEY_FRAGMENT } from "./flow-table.ts";
import { type FlowTimeouts, FlowTracker, TABLE_FULL, resolveFlowTimeouts } from "./flow-tracker.ts";
import { FRAG_FIRST, FRAG_LATER, PacketHeaders, PARSE_OK } from "./headers.ts";

export { DEFAULT_FLOW_TIMEOUTS, type FlowTimeouts } from "./flow-tracker.ts";

/** What Device.setGateway takes: the filter's configuration plus the flow table's. */
export interface GatewayConfig extends GatewayFilterConfig {
  /** Flow table capacity (default 65,536); drops beyond it count as `flow-table-full`. */
  maxFlows?: number;
  flowTimeouts?: Partial<FlowTimeouts>;
}

export class Gateway {
  readonly filter: GatewayFilter;
  readonly flows: FlowTable;
  readonly timeouts: FlowTimeouts;
  /** Drops by reason over all peers. */
  readonly drops: Partial<Record<GatewayDropReason, number>> = {};
  private readonly h: PacketHeaders;
  private readonly tracker: FlowTracker;

  /**
   * Builds a gateway; `previous` hands over its flow table (when the size matches) for revalidate.
   * `headers`: the PacketHeaders inbound/outbound parse into (the Device passes its own, so that
   * its later stages read the same parse); a private one by default.
   */
  constructor(config: GatewayConfig, options: { seed: number; previous?: Gateway | null; headers?: PacketHeaders }) {
    this.filter = new GatewayFilter(config);
    this.timeouts = resolveFlowTimeouts(config.flowTimeouts);
    const prev = options.previous ?? null;
    const max = config.maxFlows ?? prev?.flows.maxEntries;
    this.flows = prev !== null && prev.flows.maxEntries === max ? prev.flows : new FlowTable({ maxEntries: max, seed: options.seed });
    if (prev !== null) Object.assign(this.drops, prev.drops);
    this.h = options.headers ?? new PacketHeaders();
    this.tracker = new FlowTracker(this.flows, this.timeouts, false);
  }

  /** Counts a drop in the all-peers totals and returns it (the Device counts it per peer). */
  count(reason: number): GatewayDropReason {
    const name = GATEWAY_REASONS[reason] as GatewayDropReason;
    this.drops[name] = (this.drops[name] ?? 0) + 1;
    return name;
  }

  /**
   * I9: a decrypted packet from `sender`'s peer, past cryptokey routing, `len` bytes by its own
   * header. ALLOW (forward it), SELF (addressed to the gateway's virtual address: the Device's
   * inbound stage decides), or the reason to drop it. The parse is left in the headers.
   */
  inbound(sender: GatewaySender | null, packet: Uint8Array, len: number, now: number): number {
    const h = this.h;
    if (h.parse(packet, len) !== PARSE_OK) return MALFORMED_IP;
    const filter = this.filter;
    const kind = filter.destinationKind(h);
    if (kind === DEST_SELF_VIRTUAL) return SELF;
    const verdict = filter.check(sender, h, kind);
    if (verdict === FRAGMENT) return this.tracker.fragmentKnown(h, now) ? ALLOW : FRAGMENT;
    if (verdict !== ALLOW) return verdict;
    if (kind === DEST_FORWARD && this.tracker.open(h, now) === TABLE_FULL) return FLOW_TABLE_FULL;
    if (h.fragment === FRAG_FIRST && !this.tracker.recordFragment(h, now)) return FLOW_TABLE_FULL;
    return ALLOW;
  }

  /**
   * O4: a packet read from the TUN. One whose source is in the overlay is the gateway's own
   * (SELF: not this module's business); one from a LAN must answer a flow (ALLOW), else the reason
   * to drop it. The parse is left in the headers.
   */
  outbound(packet: Uint8Array, len: number, now: number): number {
    const h = this.h;
    if (h.parse(packet, len) !== PARSE_OK) return MALFORMED_IP;
    if (this.filter.inOverlay(h, true)) return SELF;
    const tracker = this.tracker;
    if (h.fragment === FRAG_LATER) return tracker.fragmentKnown(h, now) ? ALLOW : FRAGMENT;
    if (!tracker.answer(h, now)) return UNSOLICITED;
    if (h.fragment === FRAG_FIRST && !tracker.recordFragment(h, now)) return FLOW_TABLE_FULL;
    return ALLOW;
  }

  /** Expires a slice of the flow table. */
  sweep(now: number): void {
    this.tracker.sweep(now);
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
      this.tracker.headersFromKey(h, false);
      return filter.check(filter.senderBySource(h), h, filter.destinationKind(h)) === ALLOW;
    });
  }
}
