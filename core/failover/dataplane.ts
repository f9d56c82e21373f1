/**
 * @module core/failover/dataplane
 * Wires one FailoverController to one Device (core/dataplane/device.ts) in the same thread: the
 * controller is the Device's RouteSelector, its probes are `device.probe(peer)`, and the Device's
 * probe replies feed it in this order: the gateway's health report first (withdrawn subnets,
 * draining), then the reply itself, so a gateway that answers while missing its LAN is never
 * picked for that LAN, not even for one evaluation. Received bytes (the Device's rx counters,
 * read at each tick) count as "heard from", so a busy gateway whose probe replies are late or
 * lost is not declared down.
 *
 * Gateway ids are peer public keys. `setNetMap` maps the NetMap's `via` (a system id) to the
 * peer's key; a route through a system that is not among the NetMap's peers is left out and
 * logged once per call (`failover-dataplane: route=... via=... reason=unknown-peer`).
 *
 * Where it runs: beside the Device, i.e. inside the packet Worker (platform/linux/host.ts). The
 * Device calls `lookup` per routed packet, which must not cross threads. The host ticks it with
 * the Device: the engine's tick returns min(device.tick(), failover.nextTickInMs()). A Device in
 * another thread than its controller uses SnapshotSelector (core/dataplane/routes.ts) instead.
 */
import type { HealthReport } from "../dataplane/probe.ts";
import type { RouteConfig, RouteSelector } from "../dataplane/routes.ts";
import type { Logger } from "../log.ts";
import type { NetMapRoute } from "../policy/netmap.ts";
import {
  FailoverController,
  type FailoverDecision,
  type FailoverOptions,
  type FailoverRoute,
  routesFromNetMap,
} from "./controller.ts";

/** What this module needs of a Device (core/dataplane/device.ts implements it). */
export interface FailoverDataPlane {
  setRoutes(routes: readonly RouteConfig[] | null): void;
  setRouteSelector(selector: RouteSelector | null): void;
  setProbeListener(listener: ((peerPublicKey: string, rttMs: number, report: HealthReport | null) => void) | null): void;
  probe(peerPublicKey: string): boolean;
  /** Bytes received from the peer so far; -1 when it is not a peer. */
  rxBytesOf(peerPublicKey: string): number;
}

export interface DataPathFailoverOptions extends Omit<FailoverOptions, "sendProbe" | "logger" | "now"> {
  device: FailoverDataPlane;
  now: () => number;
  logger: Logger;
  /** Every switch, as it happens (also logged by the controller). */
  onDecision?: (decision: FailoverDecision) => void;
}

/** The part of a NetMap this module reads. */
export interface FailoverNetMap {
  peers: readonly { id: string; publicKey: string }[];
  routes: readonly NetMapRoute[];
}

export class DataPathFailover {
  readonly controller: FailoverController;
  private readonly device: FailoverDataPlane;
  private readonly log: Logger;
  private readonly onDecision: ((d: FailoverDecision) => void) | null;
  /** Per gateway: the last report object seen (the Device reuses it while unchanged). */
  private readonly reports = new Map<string, HealthReport | null>();
  private readonly rx = new Map<string, number>();
  private gateways: string[] = [];

  constructor(options: DataPathFailoverOptions) {
    const { device, onDecision, ...rest } = options;
    this.device = device;
    this.log = options.logger;
    this.onDecision = onDecision ?? null;
    this.controller = new FailoverController({ ...rest, sendProbe: (id) => void device.probe(id) });
    device.setRouteSelector(this.controller);
    device.setProbeListener((id, rtt, report) => this.onProbeReply(id, rtt, report));
  }

  /** Routes with gateway ids = peer public keys (idempotent). Returns the switches it caused. */
  setRoutes(routes: readonly FailoverRoute[]): FailoverDecision[] {
    // Device first: a prefix the controller resolves must already route to the selector.
    this.device.setRoutes(routes.map((r) => ({ prefix: r.prefix, candidates: r.candidates.map((c) => c.gatewayId) })));
    const decisions = this.controller.setRoutes(routes);
    const ids = new Set<string>();
    for (const r of routes) for (const c of r.candidates) ids.add(c.gatewayId);
    this.gateways = [...ids];
    for (const id of this.rx.keys()) if (!ids.has(id)) this.rx.delete(id);
    for (const id of this.reports.keys()) if (!ids.has(id)) this.reports.delete(id);
    return this.emit(decisions);
  }

  /** The NetMap's routes, `via` mapped to peer keys (see the module comment). */
  setNetMap(netMap: FailoverNetMap): FailoverDecision[] {
    const keyById = new Map(netMap.peers.map((p) => [p.id, p.publicKey]));
    const rows: NetMapRoute[] = [];
    for (const r of netMap.routes) {
      const key = keyById.get(r.via);
      if (key === undefined) {
        this.log.warn(`failover-dataplane: route=${r.prefix} via=${r.via} reason=unknown-peer`);
        continue;
      }
      rows.push({ ...r, via: key });
    }
    return this.setRoutes(routesFromNetMap(rows));
  }

  /** Probes due, silence turned into `down`, one evaluation. Call at `nextTickInMs()`. */
  tick(): FailoverDecision[] {
    for (const id of this.gateways) {
      const bytes = this.device.rxBytesOf(id);
      const before = this.rx.get(id);
      if (before !== undefined && bytes > before) this.controller.onData(id);
      this.rx.set(id, bytes);
    }
    return this.emit(this.controller.tick());
  }

  nextTickInMs(): number {
    return this.controller.nextTickInMs();
  }

  /** Detaches from the Device: routed packets then drop as `no-healthy-gateway`. */
  close(): void {
    this.device.setRouteSelector(null);
    this.device.setProbeListener(null);
  }

  private onProbeReply(id: string, rttMs: number, report: HealthReport | null): void {
    const decisions: FailoverDecision[] = [];
    const first = !this.reports.has(id);
    if (first || this.reports.get(id) !== report) {
      // A plain WireGuard peer (null) reports nothing: nothing withdrawn, not draining.
      const before = this.reports.get(id) ?? null;
      this.reports.set(id, report);
      const withdrawn = report?.withdrawn ?? [];
      const draining = report?.draining ?? false;
      if (first || (before?.withdrawn ?? []).join(",") !== withdrawn.join(",")) {
        decisions.push(...this.controller.setWithdrawn(id, withdrawn));
      }
      if (first || (before?.draining ?? false) !== draining) decisions.push(...this.controller.setDraining(id, draining));
    }
    decisions.push(...this.controller.onProbeReply(id, rttMs));
    this.emit(decisions);
  }

  private emit(decisions: FailoverDecision[]): FailoverDecision[] {
    if (this.onDecision !== null) for (const d of decisions) this.onDecision(d);
    return decisions;
  }
}
