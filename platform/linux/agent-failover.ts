/**
 * @module platform/linux/agent-failover
 * The main thread's half of client-side gateway failover. The controller runs in the packet Worker
 * beside the Device (platform/linux/device-engine.ts: it is asked per routed packet, which must not
 * cross threads); this side only feeds it and reads it:
 *
 *   F1 feed      a NetMap hook: the engine's `netmap` control message (core/agent/failover-config.ts
 *                failoverNetMapMessage), one postMessage per NetMap; the engine ignores a repeat.
 *   F2 read      the engine's stats every `pollMs` (default 500 ms, only once there are routes):
 *                the per-prefix status with keys mapped to system ids, cached for DNS's
 *                `activeGatewayFor` (synchronous) and refreshed once more for every `waygate status`.
 *                A switch is logged once, in the Worker, as the controller makes it; nothing here
 *                logs per poll.
 *
 * OS routes do not follow any of this: the Router keeps every granted prefix on the TUN (fail
 * closed, agent-gateway.ts clientRouterHook); only the Device's choice of gateway changes.
 */
import type { NetMapHook } from "../../core/agent/agent.ts";
import { type ActiveGatewayFor, lowestMetricGateway } from "../../core/agent/dns-config.ts";
import { activeGatewayFrom, failoverNetMapMessage, type SubnetFailoverStatus, subnetFailoverStatus } from "../../core/agent/failover-config.ts";
import type { Logger } from "../../core/log.ts";
import type { NetMap } from "../../core/policy/netmap.ts";
import type { DeviceEngineControl, DeviceEngineStats } from "./device-engine.ts";

export const DEFAULT_FAILOVER_POLL_MS = 500;

export interface AgentFailoverOptions {
  engineControl(message: DeviceEngineControl): void;
  /** The engine's stats (Host.stats().engine). */
  engineStats(): Promise<unknown>;
  logger: Logger;
  pollMs?: number;
}

export interface AgentFailover {
  readonly hook: NetMapHook;
  /** The last status read (null before failover has routes). */
  status(): SubnetFailoverStatus[] | null;
  /** Reads the engine's status now (`waygate status`). */
  refresh(): Promise<SubnetFailoverStatus[] | null>;
  /** For DNS: the gateway carrying a prefix now; before the first read, the NetMap's preference. */
  readonly activeGatewayFor: ActiveGatewayFor;
  stop(): void;
}

export function startAgentFailover(o: AgentFailoverOptions): AgentFailover {
  let netmap: NetMap | null = null;
  /** Every peer seen in this run: a last switch may name a gateway the NetMap no longer lists. */
  const known = new Map<string, { publicKey: string; id: string; name: string }>();
  let routed = false;
  let cached: SubnetFailoverStatus[] | null = null;
  let timer: ReturnType<typeof setInterval> | null = null;
  let stopped = false;
  let inFlight: Promise<SubnetFailoverStatus[] | null> | null = null;

  const refresh = (): Promise<SubnetFailoverStatus[] | null> => {
    inFlight ??= (async () => {
      try {
        const stats = (await o.engineStats()) as Partial<DeviceEngineStats> | null;
        const rows = stats?.failover?.prefixes;
        cached = rows === undefined ? (routed ? cached : null) : subnetFailoverStatus(rows, { peers: [...known.values()] });
      } catch (err) {
        o.logger.debug(`failover: status read failed error=${JSON.stringify(String(err))}`);
      } finally {
        inFlight = null;
      }
      return cached;
    })();
    return inFlight;
  };

  const hook: NetMapHook = (next) => {
    if (stopped) return;
    netmap = next;
    for (const p of next.peers) known.set(p.publicKey, { publicKey: p.publicKey, id: p.id, name: p.name });
    const message = failoverNetMapMessage(next);
    o.engineControl(message);
    if (message.routes.length > 0 && !routed) {
      routed = true;
      timer = setInterval(() => void refresh(), o.pollMs ?? DEFAULT_FAILOVER_POLL_MS);
      (timer as { unref?: () => void }).unref?.();
    }
    if (message.routes.length === 0) cached = routed ? [] : null;
  };

  const fallback: ActiveGatewayFor = (prefix) => (netmap === null ? null : lowestMetricGateway(netmap)(prefix));
  // DNS asks per query and prefix: one lookup table per status read, not per call.
  let answerFor: { from: SubnetFailoverStatus[] | null; f: ActiveGatewayFor } | null = null;
  const activeGatewayFor: ActiveGatewayFor = (prefix) => {
    if (answerFor === null || answerFor.from !== cached) answerFor = { from: cached, f: activeGatewayFrom(cached, fallback) };
    return answerFor.f(prefix);
  };

  return {
    hook,
    status: () => cached,
    refresh,
    activeGatewayFor,
    stop() {
      stopped = true;
      if (timer !== null) clearInterval(timer);
      timer = null;
    },
  };
}
