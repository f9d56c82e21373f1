/**
 * @module core/dataplane/routes
 * Gateway routes as the Device sees them (stage O3 in device.ts): a prefix several gateways serve,
 * and the selector that answers, per destination, which gateway peer carries it now. The Device
 * never chooses among candidates itself: the selector does (core/failover's FailoverController
 * implements RouteSelector directly; a Device in a Worker uses a SnapshotSelector built from the
 * controller's `snapshot()`, re-sent whenever it changes, never per packet).
 *
 * Gateway ids here are peer public keys (base64, as wg prints them): the agent maps the NetMap's
 * `via` system ids to keys before it hands routes to the controller (core/failover/dataplane.ts).
 */
import { type Prefix, parsePrefix } from "../net/address.ts";
import { PrefixTable } from "../net/prefix-table.ts";

/** One routed prefix and the gateway peers that may carry it. */
export interface RouteConfig {
  prefix: string;
  /** Peer public keys. */
  candidates: string[];
}

/** The answer for one destination: a gateway peer's public key, or null (drop, fail closed). */
export interface RouteAnswer {
  readonly gatewayId: string | null;
}

/**
 * Per-destination gateway choice. `destination` is 4 or 16 bytes and only valid during the call.
 * Both methods run per packet: they must not allocate (return answers resolved in advance).
 */
export interface RouteSelector {
  lookup(destination: Uint8Array): RouteAnswer;
  /**
   * For a flow already carried by `pinned`: keep it there while that gateway may still carry the
   * destination (draining included), else the normal answer. Optional: without it nothing is pinned.
   */
  lookupPinned?(destination: Uint8Array, pinned: string): RouteAnswer;
}

/** One row of a route snapshot: the resolved answer for a prefix and who may keep pinned flows. */
export interface RouteSnapshotRow {
  prefix: string;
  /** The gateway for new flows to destinations matching this prefix; null: fail closed. */
  gatewayId: string | null;
  /** Candidates healthy for this prefix now (pinned flows may stay on these). */
  healthy: string[];
}

const NONE: RouteAnswer = Object.freeze({ gatewayId: null });

interface Row {
  resolved: RouteAnswer;
  pinned: Map<string, RouteAnswer>;
}

/**
 * A RouteSelector over a snapshot (longest prefix over its rows). Answers are frozen objects built
 * here, so lookups allocate nothing. Gives the same answers as the controller that produced it.
 */
export class SnapshotSelector implements RouteSelector {
  private readonly table = new PrefixTable<Row>();

  constructor(rows: readonly RouteSnapshotRow[]) {
    for (const r of rows) {
      const prefix: Prefix = parsePrefix(r.prefix, { mask: true });
      const pinned = new Map<string, RouteAnswer>();
      for (const id of r.healthy) pinned.set(id, Object.freeze({ gatewayId: id }));
      const resolved = r.gatewayId === null ? NONE : (pinned.get(r.gatewayId) ?? Object.freeze({ gatewayId: r.gatewayId }));
      this.table.insert(prefix, { resolved, pinned });
    }
  }

  lookup(destination: Uint8Array): RouteAnswer {
    return this.table.lookup(destination)?.resolved ?? NONE;
  }

  lookupPinned(destination: Uint8Array, pinned: string): RouteAnswer {
    const row = this.table.lookup(destination);
    if (row === undefined) return NONE;
    return row.pinned.get(pinned) ?? row.resolved;
  }
}

/** Whether two snapshots give the same answers (the agent re-sends only on a difference). */
export function sameSnapshot(a: readonly RouteSnapshotRow[], b: readonly RouteSnapshotRow[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x.prefix !== y.prefix || x.gatewayId !== y.gatewayId || x.healthy.length !== y.healthy.length) return false;
    for (let j = 0; j < x.healthy.length; j++) if (x.healthy[j] !== y.healthy[j]) return false;
  }
  return true;
}
