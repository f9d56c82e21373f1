/**
 * @module core/store/policy-state
 * Store rows -> core/policy's PolicyState, validated with parsePolicyState, plus the two things
 * enrolment allots from it: a free virtual address and a system id.
 *
 * Only enrolled systems (a public key and a virtual address) take part: a system that
 * migrate-profile created but no agent has claimed yet is left out, and so are policy gateway
 * entries naming it. A gateway entry without subnet rows means "all of that gateway's subnets"
 * (the store's convention) and is expanded here. Subnets the gateway reports unhealthy stay in
 * (with `healthy: false`): the compiler keeps their routes, marked withdrawn, so clients keep the
 * OS route on the TUN and fail closed instead of leaking to their default route. Rows the policy model cannot accept (a tag or endpoint that fails its schema) are
 * dropped with one warning line each, so one bad row never takes the whole control plane down.
 * `lastSeen` is left out on purpose: it changes on every agent report, no NetMap depends on it,
 * and leaving it out keeps a routine report from marking the system changed.
 */
import * as v from "valibot";
import type { Logger } from "../log.ts";
import { parseAddress, parsePrefix, uint32ToIpv4, ipv4ToUint32 } from "../net/address.ts";
import {
  DEFAULT_NETWORK,
  DirectAccessPolicySchema,
  EndpointSchema,
  GatewayAccessPolicySchema,
  SystemSchema,
  TagInfoSchema,
  parsePolicyState,
  systemIdFromPublicKey,
  type DirectAccessPolicy,
  type GatewayAccessPolicy,
  type PolicyState,
  type System,
  type TagInfo,
} from "../policy/model.ts";
import { StoreError } from "./errors.ts";
import type { StoreReader } from "./store.ts";

/** server_settings names. */
export const SETTING_NETWORK = "network";
export const SETTING_SERVER_PRIVATE_KEY = "server_private_key";
export const SETTING_ADMIN_TOKEN_HASH = "admin_token_hash";

export async function overlayNetwork(store: StoreReader): Promise<string> {
  return (await store.getSetting(SETTING_NETWORK)) ?? DEFAULT_NETWORK;
}

export interface LoadPolicyStateOptions {
  logger?: Logger;
}

export async function loadPolicyState(store: StoreReader, options: LoadPolicyStateOptions = {}): Promise<PolicyState> {
  const warn = (what: string, reason: string) => options.logger?.warn(`policy-state: dropped=${what} reason=${JSON.stringify(reason)}`);
  const keep = <S extends v.GenericSchema>(schema: S, value: unknown, what: string): v.InferOutput<S> | null => {
    const r = v.safeParse(schema, value);
    if (r.success) return r.output;
    warn(what, r.issues[0].message);
    return null;
  };
  const network = await overlayNetwork(store);
  const tagRows = await store.listTags();
  const tags: TagInfo[] = [];
  for (const t of tagRows) {
    const info = keep(TagInfoSchema, t.description === "" ? { name: t.name } : { name: t.name, description: t.description }, `tag:${t.name}`);
    if (info !== null) tags.push(info);
  }
  const validTags = new Set(tags.map((t) => t.name));
  const onlyValid = (list: readonly string[]) => list.filter((t) => validTags.has(t));

  const subnets = await store.listGatewaySubnets();
  const systems: System[] = [];
  for (const s of await store.listSystems()) {
    if (s.publicKey === null || s.virtualAddress === null) continue;
    const candidate: System = {
      id: s.identity,
      name: s.name === "" ? s.identity : s.name,
      ...(s.description === "" ? {} : { description: s.description }),
      publicKey: s.publicKey,
      virtualAddress: s.virtualAddress,
      tags: onlyValid(await store.listSystemTags(s.identity)),
      approved: s.approved,
      enabled: s.enabled,
      ...(s.endpoint !== null && v.is(EndpointSchema, s.endpoint) ? { endpoint: s.endpoint } : {}),
      ...(s.publicIp === null ? {} : { publicIp: s.publicIp }),
      ...(s.agentVersion === null ? {} : { agentVersion: s.agentVersion }),
      ...(s.os === null ? {} : { os: s.os }),
      allowedAsGateway: s.allowedAsGateway,
      gatewaySubnets: subnets
        .filter((g) => g.gateway === s.identity)
        .map((g) => ({ prefix: g.prefix, nat: g.nat, source: g.source, draining: g.draining, priority: g.priority, healthy: g.healthy })),
    };
    const ok = keep(SystemSchema, candidate, `system:${s.identity}`);
    if (ok !== null) systems.push(ok);
  }
  const present = new Map(systems.map((s) => [s.id, s]));

  const direct: DirectAccessPolicy[] = [];
  for (const p of await store.listDirectAccessPolicies()) {
    const ok = keep(
      DirectAccessPolicySchema,
      { id: p.name, name: p.name, enabled: p.enabled, action: p.action, fromTags: onlyValid(p.fromTags), toTags: onlyValid(p.toTags), acls: p.acls },
      `direct-policy:${p.name}`,
    );
    if (ok !== null) direct.push(ok);
  }

  const gateway: GatewayAccessPolicy[] = [];
  for (const p of await store.listGatewayAccessPolicies()) {
    const targets = p.gateways
      .filter((g) => present.has(g.gateway))
      .map((g) => ({
        systemId: g.gateway,
        subnets: g.subnets.length > 0 ? [...g.subnets] : present.get(g.gateway)!.gatewaySubnets.map((x) => x.prefix),
      }))
      .filter((g) => g.subnets.length > 0);
    const candidate = {
      id: p.name,
      name: p.name,
      enabled: p.enabled,
      action: p.action,
      senderTags: onlyValid(p.senderTags),
      gateways: targets,
      ...(p.subnetFilter === null ? {} : { subnetFilter: p.subnetFilter }),
      ...(p.trust === null || p.action === "deny" ? {} : { trust: p.trust }),
    };
    const ok = keep(GatewayAccessPolicySchema, candidate, `gateway-policy:${p.name}`);
    if (ok !== null) gateway.push(ok);
  }

  try {
    return parsePolicyState({ network, tags, systems, directAccessPolicies: direct, gatewayAccessPolicies: gateway });
  } catch (err) {
    throw new StoreError("policy store", `the stored policy does not validate: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/**
 * The first free IPv4 address of the overlay network, from its bottom: never the network or
 * broadcast address, never one in `taken`.
 */
export function allotVirtualAddress(network: string, taken: Iterable<string>): string {
  const prefix = parsePrefix(network, { family: 4 });
  const used = new Set<number>();
  for (const t of taken) {
    try {
      const a = parseAddress(t);
      if (a.family === 4) used.add(ipv4ToUint32(a.bytes));
    } catch {
      // not an address: cannot collide
    }
  }
  const base = ipv4ToUint32(prefix.bytes);
  const size = 2 ** (32 - prefix.length);
  // A /31 or /32 has no network/broadcast to skip (RFC 3021); anything wider does.
  const first = size <= 2 ? 0 : 1;
  const last = size <= 2 ? size - 1 : size - 2;
  for (let i = first; i <= last; i++) {
    const n = (base + i) >>> 0;
    if (!used.has(n)) return uint32ToIpv4(n);
  }
  throw new StoreError("store", `the overlay network ${prefix.text} has no free address left`);
}

/** The system id for an enrolling key, avoiding every id in use. */
export function allotSystemId(publicKey: string, taken: ReadonlySet<string>): string {
  return systemIdFromPublicKey(publicKey, (id) => taken.has(id));
}
