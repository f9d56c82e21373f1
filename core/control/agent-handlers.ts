/**
 * @module core/control/agent-handlers
 * The agent endpoints of protocol.ts. They run only after server.ts has verified the agent's
 * signature (and, except for enrol, that its key is enrolled); the system they act on is always
 * the caller's own, never one named in the request.
 *
 * Enrolment is one transaction: the key is looked up by its SHA-256, its use is spent with a
 * guarded UPDATE, the system is created (id from the public key, the first free overlay address)
 * with the key's tags, and the audit entry written. Twenty agents racing one single-use key get
 * exactly one success; the others see 403 E_ENROLMENT_KEY. An agent whose key is already enrolled
 * gets its existing system back without spending a use (a retry after a lost answer).
 *
 * Reports record the endpoint as the request's source IP plus the reported listen port, and a
 * gateway's discovered subnets filtered to unicast IPv4 (no loopback, link-local, multicast,
 * broadcast, "this network" or overlay addresses).
 */
import { parsePrefix, prefixesOverlap, type Prefix } from "../net/address.ts";
import { allotSystemId, allotVirtualAddress } from "../store/policy-state.ts";
import type { SystemRecord } from "../store/store.ts";
import { secretHash } from "./auth.ts";
import { HttpError } from "./errors.ts";
import { AgentReportSchema, EnrolRequestSchema, PATHS, type EnrolResponse } from "./protocol.ts";
import { json, type RequestContext, type Route, type ServerDeps } from "./http.ts";

const NOT_UNICAST: readonly Prefix[] = [
  "0.0.0.0/8", // "this network"
  "127.0.0.0/8", // loopback
  "169.254.0.0/16", // link-local
  "224.0.0.0/4", // multicast
  "240.0.0.0/4", // reserved, incl. 255.255.255.255 broadcast
].map((p) => parsePrefix(p));

/**
 * The subnets a gateway may advertise from what it discovered: canonical IPv4 prefixes (host bits
 * cleared) that are not loopback, link-local, multicast or broadcast, do not overlap the overlay
 * network, and are not a single host route. Anything else is dropped (and counted in the log).
 */
export function filterDiscoveredSubnets(reported: readonly string[], network: string): { keep: string[]; dropped: string[] } {
  const overlay = parsePrefix(network);
  const keep = new Set<string>();
  const dropped: string[] = [];
  for (const text of reported) {
    let p: Prefix;
    try {
      p = parsePrefix(text, { family: 4, mask: true });
    } catch {
      dropped.push(text);
      continue;
    }
    if (p.length === 0 || p.length === 32 || NOT_UNICAST.some((n) => prefixesOverlap(n, p)) || prefixesOverlap(overlay, p)) {
      dropped.push(text);
      continue;
    }
    keep.add(p.text);
  }
  return { keep: [...keep].sort(), dropped };
}

function endpointOf(ip: string | null, port: number): string | null {
  if (ip === null || port === 0) return null;
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function enrolResponse(s: SystemRecord, tags: string[], network: string): EnrolResponse {
  return { systemId: s.identity, virtualAddress: s.virtualAddress ?? "", network, approved: s.approved, tags };
}

export function agentRoutes(deps: ServerDeps): Route[] {
  const { store, hub, logger, now } = deps;

  const enrol = async (ctx: RequestContext): Promise<Response> => {
    const body = ctx.body(EnrolRequestSchema);
    const publicKey = ctx.agentKey!;
    const hash = secretHash(body.enrolmentKey);
    const at = now();
    const outcome = await store.transaction(async (tx) => {
      const existing = await tx.getSystemByPublicKey(publicKey);
      if (existing !== null) return { created: false, system: existing, tags: await tx.listSystemTags(existing.identity) };
      const used = await tx.consumeEnrolmentKey(hash, at);
      if (!used.ok) {
        const why = { unknown: "the enrolment key is not known", expired: "the enrolment key has expired", "used-up": "the enrolment key has no uses left" }[used.reason];
        throw new HttpError(403, "E_ENROLMENT_KEY", why, "enrolmentKey");
      }
      const key = used.key;
      const all = await tx.listSystems();
      let identity: string;
      let base: SystemRecord | null = null;
      if (key.systemIdentity !== null) {
        base = all.find((s) => s.identity === key.systemIdentity) ?? null;
        if (base === null || base.publicKey !== null) {
          throw new HttpError(403, "E_ENROLMENT_KEY", `the enrolment key claims system ${key.systemIdentity}, which is ${base === null ? "gone" : "already enrolled"}`, "enrolmentKey");
        }
        identity = base.identity;
      } else {
        identity = allotSystemId(publicKey, new Set(all.map((s) => s.identity)));
      }
      const virtualAddress = base?.virtualAddress ?? allotVirtualAddress(deps.network, all.flatMap((s) => (s.virtualAddress === null ? [] : [s.virtualAddress])));
      await tx.putSystem({
        identity,
        name: base?.name || body.hostname.slice(0, 128),
        description: base?.description ?? "",
        publicKey,
        virtualAddress,
        approved: (base?.approved ?? false) || key.autoApprove,
        enabled: base?.enabled ?? true,
        allowedAsGateway: base?.allowedAsGateway ?? false,
        source: base?.source ?? "manual",
      });
      const tags = [...new Set([...(base === null ? [] : await tx.listSystemTags(identity)), ...key.tags])].sort();
      await tx.setSystemTags(identity, tags);
      await tx.recordAgentInfo(identity, {
        endpoint: null,
        publicIp: ctx.sourceIp,
        listenPort: null,
        lastSeen: at,
        agentVersion: body.agentVersion,
        os: body.os,
      });
      await tx.appendAudit({
        actor: `agent:${identity}`,
        action: "system.enrol",
        subject: identity,
        detail: { key: key.keyId, hostname: body.hostname, approved: (base?.approved ?? false) || key.autoApprove, claimed: base !== null },
      });
      return { created: true, system: (await tx.getSystem(identity))!, tags };
    });
    if (outcome.created) {
      logger.info(`control: enrol system=${outcome.system.identity} address=${outcome.system.virtualAddress} approved=${outcome.system.approved}`);
      hub.invalidate();
    }
    return json(enrolResponse(outcome.system, outcome.tags, deps.network), outcome.created ? 201 : 200);
  };

  /** Just enrolled (the debounced refresh has not run yet): refresh now rather than 503. */
  const current = async (systemId: string) => {
    let env = hub.envelope(systemId);
    if (env === null) {
      await hub.refresh();
      env = hub.envelope(systemId);
    }
    return env;
  };

  const netmap = async (ctx: RequestContext): Promise<Response> => {
    const env = await current(ctx.systemId!);
    if (env === null) throw new HttpError(503, "E_UNAVAILABLE", "this system's NetMap is not ready yet; retry shortly");
    return new Response(env.json, { headers: { "content-type": "application/json" } });
  };

  const stream = async (ctx: RequestContext): Promise<Response> => {
    const systemId = ctx.systemId!;
    await current(systemId);
    const encoder = new TextEncoder();
    let unsubscribe = () => {};
    let ping: ReturnType<typeof setInterval> | undefined;
    let closed = false;
    const finish = () => {
      if (closed) return;
      closed = true;
      unsubscribe();
      if (ping !== undefined) clearInterval(ping);
    };
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        const write = (text: string) => {
          if (closed) return;
          try {
            controller.enqueue(encoder.encode(text));
          } catch {
            finish();
          }
        };
        unsubscribe = hub.subscribe(systemId, {
          send: (envelope) => write(`event: netmap\ndata: ${envelope}\n\n`),
          close: () => {
            finish();
            try {
              controller.close();
            } catch {
              // already closed by the client
            }
          },
        });
        // Subscribe first, then send the current map: a change in between is sent twice at
        // worst (same revision), never lost.
        const env = hub.envelope(systemId);
        write(`retry: 2000\n\n`);
        if (env !== null) write(`event: netmap\ndata: ${env.json}\n\n`);
        ping = setInterval(() => write(`event: ping\ndata: {}\n\n`), deps.pingIntervalMs);
        ctx.req.signal.addEventListener("abort", finish);
        logger.debug(`control: stream=open system=${systemId}`);
      },
      cancel() {
        finish();
        logger.debug(`control: stream=closed system=${systemId}`);
      },
    });
    return new Response(body, {
      headers: { "content-type": "text/event-stream", "cache-control": "no-cache, no-transform", "x-accel-buffering": "no" },
    });
  };

  const report = async (ctx: RequestContext): Promise<Response> => {
    const body = ctx.body(AgentReportSchema);
    const identity = ctx.systemId!;
    const at = now();
    const changed = await store.transaction(async (tx) => {
      const system = (await tx.getSystem(identity))!;
      const endpoint = endpointOf(ctx.sourceIp, body.listenPort);
      let netmapRelevant = system.endpoint !== endpoint || system.publicIp !== ctx.sourceIp || system.agentVersion !== body.agentVersion || system.os !== body.os;
      await tx.recordAgentInfo(identity, {
        endpoint,
        publicIp: ctx.sourceIp,
        listenPort: body.listenPort,
        lastSeen: at,
        agentVersion: body.agentVersion,
        os: body.os,
      });
      if (system.allowedAsGateway) {
        const { keep, dropped } = filterDiscoveredSubnets(body.discoveredSubnets, deps.network);
        if (dropped.length > 0) logger.debug(`control: report system=${identity} dropped-subnets=${dropped.join(",")}`);
        const unhealthy = (body.unhealthySubnets ?? []).flatMap((t) => {
          try {
            return [parsePrefix(t, { mask: true }).text];
          } catch {
            return [];
          }
        });
        if ((await tx.syncDiscoveredSubnets(identity, keep, unhealthy)) !== "unchanged") netmapRelevant = true;
      }
      return netmapRelevant;
    });
    if (changed) hub.invalidate();
    return new Response(null, { status: 204 });
  };

  return [
    { method: "POST", path: PATHS.enrol, handler: enrol },
    { method: "GET", path: PATHS.netmap, handler: netmap },
    { method: "GET", path: PATHS.netmapStream, handler: stream, stream: true },
    { method: "POST", path: PATHS.report, handler: report },
  ];
}
