/**
 * @module platform/linux/agent-failover
 * The main thread's half of client-side gateway failover. The controller runs in the packet Worker
 * beside the Device (platform/linux/device-engine.ts: it is asked per routed packet, which must not
 * cross threads); this side only feeds it and reads it:
 *
 *   F1 feed      a NetMap hook: the engine's `netmap` control message (core/agent/failover-config.ts
 *                failoverNetMapMessage), one postMessage per NetMap; the engine ignores a repeat.
 *   F2 read      the engine's stats every `pollMs` (default 500 ms, only once there are routes).
 *                What crosses threads is sized by gateway groups, not prefixes (device-engine.ts):
 *                per-group and per-gateway data every poll; the per-prefix rows only when the
 *                engine's revision moved (a switch, a route or withdrawal change), acknowledged
 *                with a `failoverAck` control message so the engine stops re-sending them. The
 *                per-prefix status (keys mapped to system ids, live health from the latest poll)
 *                is built only when asked (`status()`, every `waygate status`, which also reads
 *                the engine once more), and DNS's `activeGatewayFor` table once per revision.
 *                A switch is logged once, in the Worker, per group as the controller makes it;
 *                nothing here logs per poll.
 *
 * OS routes do not follow any of this: the Router keeps every granted prefix on the TUN (fail
 * closed, agent-gateway.ts clientRouterHook), routes the NetMap marks `withdrawn` included; only the
 * Device's choice of gateway changes. The netmap message carries that flag, and the controller
 * counts such a candidate as withdrawn for the prefix (core/failover/controller.ts).
 */
import type { NetMapHook } from "../../core/agent/agent.ts";
import { type ActiveGatewayFor, lowestMetricGateway } from "../../core/agent/dns-config.ts";
import {
  activeGatewayFrom,
  type FailoverStatusRow,
  failoverNetMapMessage,
  type SubnetFailoverStatus,
  subnetFailoverStatus,
  withLiveHealth,
} from "../../core/agent/failover-config.ts";
import type { Logger } from "../../core/log.ts";
import type { NetMap } from "../../core/policy/netmap.ts";
import type { DeviceEngineControl, DeviceEngineStats, EngineFailoverStats } from "./device-engine.ts";

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
  /** One poll, as the timer does it: reads the engine, builds nothing per prefix. */
  poll(): Promise<void>;
  /** For DNS: the gateway carrying a prefix now; before the first read, the NetMap's preference. */
  readonly activeGatewayFor: ActiveGatewayFor;
  stop(): void;
}

export function startAgentFailover(o: AgentFailoverOptions): AgentFailover {
  let netmap: NetMap | null = null;
  /** Every peer seen in this run: a last switch may name a gateway the NetMap no longer lists. */
  const known = new Map<string, { publicKey: string; id: string; name: string }>();
  let routed = false;
  /** The engine's latest failover stats, and the per-prefix rows of the revision they last came with. */
  let live: EngineFailoverStats | null = null;
  let detail: { revision: number; rows: FailoverStatusRow[] } | null = null;
  /** Built from live + detail only when asked; `empty` after a NetMap without routes. */
  let cached: SubnetFailoverStatus[] | null = null;
  let cachedFrom: EngineFailoverStats | null = null;
  let empty = false;
  let timer: ReturnType<typeof setInterval> | null = null;
  let stopped = false;
  let inFlight: Promise<void> | null = null;

  const read = (): Promise<void> => {
    inFlight ??= (async () => {
      try {
        const stats = (await o.engineStats()) as Partial<DeviceEngineStats> | null;
        const f = stats?.failover;
        if (f === undefined || f.revision === undefined) return;
        if (f.prefixes !== undefined) {
          detail = { revision: f.revision, rows: f.prefixes };
          o.engineControl({ type: "failoverAck", revision: f.revision });
        } else if (detail === null || detail.revision !== f.revision) {
          // The engine thinks we hold rows we do not (another reader took them): ask again.
          o.engineControl({ type: "failoverAck", revision: -1 });
        }
        live = f;
        empty = false;
      } catch (err) {
        o.logger.debug(`failover: status read failed error=${JSON.stringify(String(err))}`);
      } finally {
        inFlight = null;
      }
    })();
    return inFlight;
  };

  const status = (): SubnetFailoverStatus[] | null => {
    if (empty) return [];
    if (live === null || detail === null) return null;
    if (cachedFrom !== live) {
      cached = subnetFailoverStatus(withLiveHealth(detail.rows, live.gateways), { peers: [...known.values()] });
      cachedFrom = live;
    }
    return cached;
  };

  const refresh = async (): Promise<SubnetFailoverStatus[] | null> => {
    await read();
    return status();
  };

  const hook: NetMapHook = (next) => {
    if (stopped) return;
    netmap = next;
    for (const p of next.peers) known.set(p.publicKey, { publicKey: p.publicKey, id: p.id, name: p.name });
    const message = failoverNetMapMessage(next);
    o.engineControl(message);
    if (message.routes.length > 0 && !routed) {
      routed = true;
      timer = setInterval(() => void read(), o.pollMs ?? DEFAULT_FAILOVER_POLL_MS);
      (timer as { unref?: () => void }).unref?.();
    }
    if (message.routes.length === 0 && routed) empty = true;
  };

  const fallback: ActiveGatewayFor = (prefix) => (netmap === null ? null : lowestMetricGateway(netmap)(prefix));
  // DNS asks per query and prefix: one lookup table per revision (the answers change only with it).
  let answerFor: { from: unknown; f: ActiveGatewayFor } | null = null;
  const activeGatewayFor: ActiveGatewayFor = (prefix) => {
    const from = empty ? "empty" : detail;
    if (answerFor === null || answerFor.from !== from) {
      const rows = empty ? [] : detail === null ? null : subnetFailoverStatus(detail.rows, { peers: [...known.values()] });
      answerFor = { from, f: activeGatewayFrom(rows, fallback) };
    }
    return answerFor.f(prefix);
  };

  return {
    hook,
    status,
    refresh,
    poll: read,
    activeGatewayFor,
    stop() {
      stopped = true;
      if (timer !== null) clearInterval(timer);
      timer = null;
    },
  };
}
