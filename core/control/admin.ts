/**
 * @module core/control/admin
 * The admin API under /v1/admin (paths in admin-schemas.ts ADMIN_PATHS). server.ts has checked
 * the admin token before any of these run. Each write is one store transaction that also
 * appends its audit entry (actor "admin"); after it commits the NetMap hub is invalidated so
 * affected agents get new NetMaps within a second. Bodies are validated with admin-schemas.ts
 * (400 naming the field); references are checked inside the transaction (404 for a missing
 * system, tag or policy named in the path, 400 naming the field for one named in the body).
 */
import { explain } from "../policy/evaluate.ts";
import { parsePrefix } from "../net/address.ts";
import { PolicyError } from "../policy/model.ts";
import { StoreError } from "../store/errors.ts";
import type {
  DirectAccessPolicyRecord,
  EnrolmentKeyRecord,
  GatewayAccessPolicyRecord,
  GatewaySubnetRecord,
  StoreWriter,
  SystemRecord,
} from "../store/store.ts";
import {
  ADMIN_PATHS,
  AuditQuerySchema,
  DirectPolicyCreateSchema,
  DirectPolicyPatchSchema,
  ExplainQuerySchema,
  GatewayPolicyCreateSchema,
  GatewayPolicyPatchSchema,
  KeyCreateSchema,
  SubnetAddSchema,
  SubnetPatchSchema,
  SystemPatchSchema,
  TagCreateSchema,
} from "./admin-schemas.ts";
import { secretHash } from "./auth.ts";
import { badRequest, conflict, HttpError, notFound } from "./errors.ts";
import { json, type RequestContext, type Route, type ServerDeps } from "./http.ts";

const ACTOR = "admin";

/** A system as the admin API shows it. */
export interface SystemView {
  id: string;
  name: string;
  description: string;
  publicKey: string | null;
  virtualAddress: string | null;
  tags: string[];
  approved: boolean;
  enabled: boolean;
  allowedAsGateway: boolean;
  source: string;
  endpoint: string | null;
  publicIp: string | null;
  lastSeen: number | null;
  agentVersion: string | null;
  os: string | null;
  /** An agent holds a NetMap stream open right now. */
  connected: boolean;
  enrolled: boolean;
  createdAt: number;
  updatedAt: number;
}

export interface SubnetView {
  prefix: string;
  nat: boolean;
  natAddress: string | null;
  priority: number;
  draining: boolean;
  discovered: boolean;
  healthy: boolean;
  source: string;
}

export interface GatewayView {
  id: string;
  name: string;
  allowedAsGateway: boolean;
  connected: boolean;
  subnets: SubnetView[];
}

export interface KeyView {
  id: string;
  description: string;
  maxUses: number | null;
  uses: number;
  usesRemaining: number | null;
  expiresAt: number | null;
  expired: boolean;
  autoApprove: boolean;
  tags: string[];
  system: string | null;
  createdAt: number;
}

function subnetView(s: GatewaySubnetRecord): SubnetView {
  return {
    prefix: s.prefix,
    nat: s.nat,
    natAddress: s.natAddress,
    priority: s.priority,
    draining: s.draining,
    discovered: s.discovered,
    healthy: s.healthy,
    source: s.source,
  };
}

function policyView(p: GatewayAccessPolicyRecord) {
  return {
    name: p.name,
    description: p.description,
    enabled: p.enabled,
    action: p.action,
    senderTags: [...p.senderTags],
    gateways: p.gateways.map((g) => ({ gateway: g.gateway, subnets: [...g.subnets] })),
    subnetFilter: p.subnetFilter,
    trust: p.trust,
    source: p.source,
    createdAt: p.createdAt,
    updatedAt: p.updatedAt,
  };
}

function directView(p: DirectAccessPolicyRecord) {
  return {
    name: p.name,
    description: p.description,
    enabled: p.enabled,
    action: p.action,
    fromTags: [...p.fromTags],
    toTags: [...p.toTags],
    acls: [...p.acls],
    source: p.source,
    createdAt: p.createdAt,
    updatedAt: p.updatedAt,
  };
}

/** Canonical prefix text, or 400 naming the field. */
function canonicalPrefix(text: string, field: string): string {
  try {
    return parsePrefix(text).text;
  } catch (err) {
    throw badRequest(`${field}: ${err instanceof Error ? err.message : String(err)}`, field);
  }
}

export function adminRoutes(deps: ServerDeps): Route[] {
  const { store, hub, now } = deps;

  const keyView = (k: EnrolmentKeyRecord): KeyView => ({
    id: k.keyId,
    description: k.description,
    maxUses: k.maxUses,
    uses: k.uses,
    usesRemaining: k.maxUses === null ? null : k.maxUses - k.uses,
    expiresAt: k.expiresAt,
    expired: k.expiresAt !== null && k.expiresAt <= now(),
    autoApprove: k.autoApprove,
    tags: [...k.tags],
    system: k.systemIdentity,
    createdAt: k.createdAt,
  });

  const systemView = async (tx: StoreWriter | typeof store, s: SystemRecord): Promise<SystemView> => ({
    id: s.identity,
    name: s.name,
    description: s.description,
    publicKey: s.publicKey,
    virtualAddress: s.virtualAddress,
    tags: await tx.listSystemTags(s.identity),
    approved: s.approved,
    enabled: s.enabled,
    allowedAsGateway: s.allowedAsGateway,
    source: s.source,
    endpoint: s.endpoint,
    publicIp: s.publicIp,
    lastSeen: s.lastSeen,
    agentVersion: s.agentVersion,
    os: s.os,
    connected: hub.isConnected(s.identity),
    enrolled: s.publicKey !== null,
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
  });

  /**
   * One admin write: the callback runs in a transaction and returns the response body; store
   * errors that are the caller's fault (a constraint, a missing reference) become 409/400.
   */
  async function write<T>(fn: (tx: StoreWriter) => Promise<T>, status = 200): Promise<Response> {
    let result: T;
    try {
      result = await store.transaction(fn);
    } catch (err) {
      if (err instanceof HttpError) throw err;
      if (err instanceof StoreError) {
        const m = err.message;
        if (/FOREIGN KEY constraint failed/.test(m)) throw conflict("still referenced (remove the policies that name it first)");
        if (/UNIQUE constraint failed/.test(m)) throw conflict("already exists");
        if (/does not exist/.test(m)) throw badRequest(m.replace(/^[^:]*: /, ""));
        if (/CHECK constraint failed/.test(m)) throw badRequest(m.replace(/^[^:]*: /, ""));
      }
      throw err;
    }
    hub.invalidate();
    return json(result, status);
  }

  const audit = (tx: StoreWriter, action: string, subject: string, detail: Record<string, unknown> = {}) =>
    tx.appendAudit({ actor: ACTOR, action, subject, detail });

  async function requireSystem(tx: StoreWriter | typeof store, id: string): Promise<SystemRecord> {
    const s = await tx.getSystem(id);
    if (s === null) throw notFound(`no system ${id}`);
    return s;
  }

  async function requireTags(tx: StoreWriter, tags: readonly string[], field: string): Promise<void> {
    for (const [i, t] of tags.entries()) {
      if ((await tx.getTag(t)) === null) throw badRequest(`${field}.${i}: no tag ${t} (create it with waygate tags add ${t})`, `${field}.${i}`);
    }
  }

  // ---- systems ----

  const systemRoutes: Route[] = [
    {
      method: "GET",
      path: ADMIN_PATHS.systems,
      handler: async () => json(await Promise.all((await store.listSystems()).map((s) => systemView(store, s)))),
    },
    {
      method: "GET",
      path: ADMIN_PATHS.system,
      handler: async ({ params }) => {
        const s = await requireSystem(store, params.id!);
        const view = await systemView(store, s);
        return json({ ...view, subnets: (await store.listGatewaySubnets(s.identity)).map(subnetView), netmapRevision: hub.envelope(s.identity)?.revision ?? null });
      },
    },
    {
      method: "PATCH",
      path: ADMIN_PATHS.system,
      handler: async (ctx) => {
        const patch = ctx.body(SystemPatchSchema);
        return write(async (tx) => {
          const s = await requireSystem(tx, ctx.params.id!);
          const next = {
            identity: s.identity,
            name: patch.name ?? s.name,
            description: patch.description ?? s.description,
            publicKey: s.publicKey,
            virtualAddress: s.virtualAddress,
            approved: patch.approved ?? s.approved,
            enabled: patch.enabled ?? s.enabled,
            allowedAsGateway: patch.allowedAsGateway ?? s.allowedAsGateway,
            source: s.source,
          };
          const changed = (await tx.putSystem(next)) !== "unchanged";
          let tagsChanged = false;
          if (patch.tags !== undefined) {
            await requireTags(tx, patch.tags, "tags");
            tagsChanged = (await tx.setSystemTags(s.identity, patch.tags)) !== "unchanged";
          }
          if (changed || tagsChanged) await audit(tx, "system.update", s.identity, { ...patch });
          return systemView(tx, (await tx.getSystem(s.identity))!);
        });
      },
    },
    {
      method: "DELETE",
      path: ADMIN_PATHS.system,
      handler: async ({ params }) =>
        write(async (tx) => {
          const s = await requireSystem(tx, params.id!);
          await tx.removeSystem(s.identity);
          await audit(tx, "system.delete", s.identity, { name: s.name });
          return { removed: s.identity };
        }),
    },
  ];

  // ---- enrolment keys ----

  const keyRoutes: Route[] = [
    { method: "GET", path: ADMIN_PATHS.keys, handler: async () => json((await store.listEnrolmentKeys()).map(keyView)) },
    {
      method: "POST",
      path: ADMIN_PATHS.keys,
      handler: async (ctx) => {
        const body = ctx.body(KeyCreateSchema);
        if (body.system !== undefined && body.maxUses !== 1) throw badRequest("maxUses: a key that claims a system is single-use (maxUses 1)", "maxUses");
        const keyId = Buffer.from(deps.random(5)).toString("hex");
        const secret = Buffer.from(deps.random(24)).toString("base64url");
        const plain = `wgk_${keyId}_${secret}`;
        return write(async (tx) => {
          await requireTags(tx, body.tags, "tags");
          if (body.system !== undefined) {
            const s = await tx.getSystem(body.system);
            if (s === null) throw badRequest(`system: no system ${body.system}`, "system");
            if (s.publicKey !== null) throw badRequest(`system: ${body.system} is already enrolled`, "system");
          }
          await tx.createEnrolmentKey({
            keyId,
            secretHash: secretHash(plain),
            description: body.description ?? "",
            maxUses: body.maxUses,
            expiresAt: body.expiresInSeconds === undefined ? null : now() + body.expiresInSeconds * 1000,
            autoApprove: body.autoApprove,
            tags: body.tags,
            systemIdentity: body.system ?? null,
          });
          await audit(tx, "enrolment_key.create", keyId, {
            maxUses: body.maxUses,
            expiresInSeconds: body.expiresInSeconds ?? null,
            autoApprove: body.autoApprove,
            tags: body.tags,
            system: body.system ?? null,
          });
          // The only time the plain key exists outside the caller: it is not stored.
          return { ...keyView((await tx.getEnrolmentKey(keyId))!), key: plain };
        }, 201);
      },
    },
    {
      method: "DELETE",
      path: ADMIN_PATHS.key,
      handler: async ({ params }) =>
        write(async (tx) => {
          if (!(await tx.removeEnrolmentKey(params.id!))) throw notFound(`no enrolment key ${params.id}`);
          await audit(tx, "enrolment_key.delete", params.id!);
          return { removed: params.id };
        }),
    },
  ];

  // ---- tags ----

  const tagRoutes: Route[] = [
    {
      method: "GET",
      path: ADMIN_PATHS.tags,
      handler: async () => {
        const systems = await store.listSystems();
        const counts = new Map<string, number>();
        for (const s of systems) for (const t of await store.listSystemTags(s.identity)) counts.set(t, (counts.get(t) ?? 0) + 1);
        return json((await store.listTags()).map((t) => ({ name: t.name, description: t.description, systems: counts.get(t.name) ?? 0, source: t.source })));
      },
    },
    {
      method: "POST",
      path: ADMIN_PATHS.tags,
      handler: async (ctx) => {
        const body = ctx.body(TagCreateSchema);
        return write(async (tx) => {
          const change = await tx.putTag({ name: body.name, description: body.description, source: "manual" });
          if (change !== "unchanged") await audit(tx, `tag.${change === "created" ? "create" : "update"}`, body.name, { description: body.description });
          return { name: body.name, description: body.description, change };
        }, 201);
      },
    },
    {
      method: "DELETE",
      path: ADMIN_PATHS.tag,
      handler: async ({ params }) =>
        write(async (tx) => {
          if ((await tx.getTag(params.name!)) === null) throw notFound(`no tag ${params.name}`);
          const users = [
            ...(await tx.listGatewayAccessPolicies()).filter((p) => p.senderTags.includes(params.name!)).map((p) => p.name),
            ...(await tx.listDirectAccessPolicies()).filter((p) => p.fromTags.includes(params.name!) || p.toTags.includes(params.name!)).map((p) => p.name),
          ];
          if (users.length > 0) throw conflict(`tag ${params.name} is used by polic${users.length === 1 ? "y" : "ies"} ${users.join(", ")}`);
          await tx.removeTag(params.name!);
          await audit(tx, "tag.delete", params.name!);
          return { removed: params.name };
        }),
    },
  ];

  // ---- gateways ----

  const gatewayView = async (s: SystemRecord): Promise<GatewayView> => ({
    id: s.identity,
    name: s.name,
    allowedAsGateway: s.allowedAsGateway,
    connected: hub.isConnected(s.identity),
    subnets: (await store.listGatewaySubnets(s.identity)).map(subnetView),
  });

  const setGateway = (allowed: boolean) => async (ctx: RequestContext) =>
    write(async (tx) => {
      const s = await requireSystem(tx, ctx.params.id!);
      if ((await tx.putSystem({ ...s, allowedAsGateway: allowed })) !== "unchanged") {
        await audit(tx, allowed ? "gateway.enable" : "gateway.disable", s.identity);
      }
      return { id: s.identity, allowedAsGateway: allowed };
    });

  const gatewayRoutes: Route[] = [
    {
      method: "GET",
      path: ADMIN_PATHS.gateways,
      handler: async () => {
        const subnets = await store.listGatewaySubnets();
        const ids = new Set(subnets.map((s) => s.gateway));
        const systems = (await store.listSystems()).filter((s) => s.allowedAsGateway || ids.has(s.identity));
        return json(await Promise.all(systems.map(gatewayView)));
      },
    },
    { method: "POST", path: ADMIN_PATHS.gatewayEnable, handler: setGateway(true) },
    { method: "POST", path: ADMIN_PATHS.gatewayDisable, handler: setGateway(false) },
    {
      method: "POST",
      path: ADMIN_PATHS.gatewaySubnets,
      handler: async (ctx) => {
        const body = ctx.body(SubnetAddSchema);
        const prefix = canonicalPrefix(body.prefix, "prefix");
        return write(async (tx) => {
          const s = await requireSystem(tx, ctx.params.id!);
          const existing = (await tx.listGatewaySubnets(s.identity)).find((x) => x.prefix === prefix);
          if (existing !== undefined) throw conflict(`${s.identity} already has subnet ${prefix}`, "prefix");
          await tx.putGatewaySubnet({ gateway: s.identity, prefix, nat: body.nat, natAddress: null, source: "manual", priority: body.priority, draining: body.draining });
          await audit(tx, "gateway_subnet.create", `${s.identity} ${prefix}`, { nat: body.nat, priority: body.priority ?? 100 });
          return subnetView((await tx.listGatewaySubnets(s.identity)).find((x) => x.prefix === prefix)!);
        }, 201);
      },
    },
    {
      method: "PATCH",
      path: ADMIN_PATHS.gatewaySubnets,
      handler: async (ctx) => {
        const body = ctx.body(SubnetPatchSchema);
        const prefix = canonicalPrefix(body.prefix, "prefix");
        return write(async (tx) => {
          const s = await requireSystem(tx, ctx.params.id!);
          const existing = (await tx.listGatewaySubnets(s.identity)).find((x) => x.prefix === prefix);
          if (existing === undefined) throw notFound(`${s.identity} has no subnet ${prefix}`);
          const change = await tx.putGatewaySubnet({
            gateway: s.identity,
            prefix,
            nat: body.nat ?? existing.nat,
            natAddress: existing.natAddress,
            source: existing.source,
            priority: body.priority ?? existing.priority,
            draining: body.draining ?? existing.draining,
          });
          if (change !== "unchanged") {
            const { prefix: _p, ...detail } = body;
            await audit(tx, "gateway_subnet.update", `${s.identity} ${prefix}`, detail);
          }
          return subnetView((await tx.listGatewaySubnets(s.identity)).find((x) => x.prefix === prefix)!);
        });
      },
    },
    {
      method: "DELETE",
      path: ADMIN_PATHS.gatewaySubnets,
      handler: async (ctx) => {
        const raw = ctx.url.searchParams.get("prefix");
        if (raw === null) throw badRequest("prefix: the query parameter prefix is required (?prefix=10.0.0.0/24)", "prefix");
        const prefix = canonicalPrefix(raw, "prefix");
        return write(async (tx) => {
          const s = await requireSystem(tx, ctx.params.id!);
          if (!(await tx.removeGatewaySubnet(s.identity, prefix))) throw notFound(`${s.identity} has no subnet ${prefix}`);
          await audit(tx, "gateway_subnet.delete", `${s.identity} ${prefix}`);
          return { removed: prefix, gateway: s.identity };
        });
      },
    },
  ];

  // ---- gateway access policies ----

  async function checkGatewayPolicy(tx: StoreWriter, p: { senderTags: readonly string[]; gateways: readonly { gateway: string; subnets: readonly string[] }[]; action: string; trust?: unknown }) {
    await requireTags(tx, p.senderTags, "senderTags");
    for (const [i, g] of p.gateways.entries()) {
      if ((await tx.getSystem(g.gateway)) === null) throw badRequest(`gateways.${i}.gateway: no system ${g.gateway}`, `gateways.${i}.gateway`);
    }
    if (p.action === "deny" && p.trust !== undefined && p.trust !== null) {
      throw badRequest("trust: a deny policy cannot carry trust requirements (a deny always applies)", "trust");
    }
  }

  const normaliseGateways = (gateways: readonly { gateway: string; subnets?: readonly string[] | undefined }[]) =>
    gateways.map((g, i) => ({ gateway: g.gateway, subnets: (g.subnets ?? []).map((s, j) => canonicalPrefix(s, `gateways.${i}.subnets.${j}`)) }));

  const nameTaken = async (tx: StoreWriter, name: string) =>
    (await tx.getGatewayAccessPolicy(name)) !== null || (await tx.getDirectAccessPolicy(name)) !== null;

  const gatewayPolicyRoutes: Route[] = [
    { method: "GET", path: ADMIN_PATHS.policies, handler: async () => json((await store.listGatewayAccessPolicies()).map(policyView)) },
    {
      method: "GET",
      path: ADMIN_PATHS.policy,
      handler: async ({ params }) => {
        const p = await store.getGatewayAccessPolicy(params.name!);
        if (p === null) throw notFound(`no gateway access policy ${params.name}`);
        return json(policyView(p));
      },
    },
    {
      method: "POST",
      path: ADMIN_PATHS.policies,
      handler: async (ctx) => {
        const body = ctx.body(GatewayPolicyCreateSchema);
        const gateways = normaliseGateways(body.gateways);
        return write(async (tx) => {
          if (await nameTaken(tx, body.name)) throw conflict(`a policy named ${body.name} exists`, "name");
          const input = {
            name: body.name,
            description: body.description ?? "",
            enabled: body.enabled ?? true,
            source: "manual" as const,
            action: body.action ?? "allow",
            senderTags: body.senderTags,
            gateways,
            subnetFilter: body.subnetFilter ?? null,
            trust: body.trust ?? null,
          };
          await checkGatewayPolicy(tx, input);
          await tx.putGatewayAccessPolicy(input);
          await audit(tx, "gateway_access_policy.create", body.name, { ...body });
          return policyView((await tx.getGatewayAccessPolicy(body.name))!);
        }, 201);
      },
    },
    {
      method: "PATCH",
      path: ADMIN_PATHS.policy,
      handler: async (ctx) => {
        const patch = ctx.body(GatewayPolicyPatchSchema);
        const gateways = patch.gateways === undefined ? undefined : normaliseGateways(patch.gateways);
        return write(async (tx) => {
          const p = await tx.getGatewayAccessPolicy(ctx.params.name!);
          if (p === null) throw notFound(`no gateway access policy ${ctx.params.name}`);
          const input = {
            name: p.name,
            description: patch.description ?? p.description,
            enabled: patch.enabled ?? p.enabled,
            source: p.source,
            action: patch.action ?? p.action,
            senderTags: patch.senderTags ?? p.senderTags,
            gateways: gateways ?? p.gateways,
            subnetFilter: patch.subnetFilter === undefined ? p.subnetFilter : patch.subnetFilter,
            trust: patch.trust === undefined ? p.trust : patch.trust,
          };
          await checkGatewayPolicy(tx, input);
          if ((await tx.putGatewayAccessPolicy(input)) !== "unchanged") await audit(tx, "gateway_access_policy.update", p.name, { ...patch });
          return policyView((await tx.getGatewayAccessPolicy(p.name))!);
        });
      },
    },
    {
      method: "DELETE",
      path: ADMIN_PATHS.policy,
      handler: async ({ params }) =>
        write(async (tx) => {
          if (!(await tx.removeGatewayAccessPolicy(params.name!))) throw notFound(`no gateway access policy ${params.name}`);
          await audit(tx, "gateway_access_policy.delete", params.name!);
          return { removed: params.name };
        }),
    },
  ];

  // ---- direct access policies ----

  const directPolicyRoutes: Route[] = [
    { method: "GET", path: ADMIN_PATHS.directPolicies, handler: async () => json((await store.listDirectAccessPolicies()).map(directView)) },
    {
      method: "GET",
      path: ADMIN_PATHS.directPolicy,
      handler: async ({ params }) => {
        const p = await store.getDirectAccessPolicy(params.name!);
        if (p === null) throw notFound(`no direct access policy ${params.name}`);
        return json(directView(p));
      },
    },
    {
      method: "POST",
      path: ADMIN_PATHS.directPolicies,
      handler: async (ctx) => {
        const body = ctx.body(DirectPolicyCreateSchema);
        return write(async (tx) => {
          if (await nameTaken(tx, body.name)) throw conflict(`a policy named ${body.name} exists`, "name");
          await requireTags(tx, body.fromTags, "fromTags");
          await requireTags(tx, body.toTags, "toTags");
          await tx.putDirectAccessPolicy({
            name: body.name,
            description: body.description ?? "",
            enabled: body.enabled ?? true,
            action: body.action ?? "allow",
            source: "manual",
            fromTags: body.fromTags,
            toTags: body.toTags,
            acls: body.acls ?? [{ protocol: "any" }],
          });
          await audit(tx, "direct_access_policy.create", body.name, { ...body });
          return directView((await tx.getDirectAccessPolicy(body.name))!);
        }, 201);
      },
    },
    {
      method: "PATCH",
      path: ADMIN_PATHS.directPolicy,
      handler: async (ctx) => {
        const patch = ctx.body(DirectPolicyPatchSchema);
        return write(async (tx) => {
          const p = await tx.getDirectAccessPolicy(ctx.params.name!);
          if (p === null) throw notFound(`no direct access policy ${ctx.params.name}`);
          if (patch.fromTags !== undefined) await requireTags(tx, patch.fromTags, "fromTags");
          if (patch.toTags !== undefined) await requireTags(tx, patch.toTags, "toTags");
          const change = await tx.putDirectAccessPolicy({
            name: p.name,
            description: patch.description ?? p.description,
            enabled: patch.enabled ?? p.enabled,
            action: patch.action ?? p.action,
            source: p.source,
            fromTags: patch.fromTags ?? p.fromTags,
            toTags: patch.toTags ?? p.toTags,
            acls: patch.acls ?? p.acls,
          });
          if (change !== "unchanged") await audit(tx, "direct_access_policy.update", p.name, { ...patch });
          return directView((await tx.getDirectAccessPolicy(p.name))!);
        });
      },
    },
    {
      method: "DELETE",
      path: ADMIN_PATHS.directPolicy,
      handler: async ({ params }) =>
        write(async (tx) => {
          if (!(await tx.removeDirectAccessPolicy(params.name!))) throw notFound(`no direct access policy ${params.name}`);
          await audit(tx, "direct_access_policy.delete", params.name!);
          return { removed: params.name };
        }),
    },
  ];

  // ---- explain, audit ----

  const readRoutes: Route[] = [
    {
      method: "GET",
      path: ADMIN_PATHS.explain,
      handler: async (ctx) => {
        const q = ctx.query(ExplainQuerySchema);
        await hub.refresh();
        try {
          const e = explain(hub.state, q.system, q.destination, q.port, q.protocol, now());
          return json({ allowed: e.allowed, text: e.text, decision: e.decision });
        } catch (err) {
          if (err instanceof PolicyError && err.code === "E_POLICY_UNKNOWN_SYSTEM") {
            throw notFound(`system ${q.system} is not in the policy (not enrolled, or no such system)`);
          }
          if (err instanceof Error && "code" in err && (err as { code: string }).code === "E_ADDRESS_INVALID") {
            throw badRequest(`destination: ${err.message}`, "destination");
          }
          throw err;
        }
      },
    },
    {
      method: "GET",
      path: ADMIN_PATHS.audit,
      handler: async (ctx) => {
        const q = ctx.query(AuditQuerySchema);
        return json(await store.listAudit({ afterId: q.after, limit: q.limit ?? 1000 }));
      },
    },
  ];

  return [...systemRoutes, ...keyRoutes, ...tagRoutes, ...gatewayRoutes, ...gatewayPolicyRoutes, ...directPolicyRoutes, ...readRoutes];
}
