/**
 * @module core/agent/acl-config
 * NetMap -> the Device's inbound ACLs (core/dataplane/acl.ts, stage I10), pure, so the decision is
 * made and tested once here. `inboundAcls` turns the NetMap's `inboundRules` (direct policies in
 * which this system is the receiver) into one InboundAcl per sending peer, keyed by its public key
 * (NetMap peers by id), each rule's source, destination, protocol and ports kept exactly (the
 * Device's semantics are `rulesPermit`'s). Rules naming a peer that is not among the NetMap's
 * peers are left out: there is no key to admit it by, and nobody can send as it.
 *
 * On an active gateway, every peer named by an allow gateway rule also gets `gatewayServices` on
 * the gateway's virtual address (default GATEWAY_INPUT_ALLOW: DNS 53 udp+tcp for the gateway's
 * forwarder, which answers only within the querier's grants). That is the one thing a gateway
 * grant opens on the gateway itself; everything else there needs a direct policy. Deny rules of
 * the NetMap still win over these, as over any allow.
 *
 * Order is stable (peers by public key, rules as the NetMap sorts them, duplicates once), so equal
 * NetMaps give equal lists and the agent can compare before it calls setInboundRules.
 */
import type { AclRule, InboundAcl } from "../dataplane/acl.ts";
import type { InputAllow } from "../firewall/firewall.ts";
import type { NetMap, NetMapRule } from "../policy/netmap.ts";
import { GATEWAY_INPUT_ALLOW, isGateway } from "./gateway-config.ts";

export interface InboundAclOptions {
  /** What an active gateway serves every gateway sender on its virtual address (default DNS). */
  gatewayServices?: readonly InputAllow[];
}

function aclRule(r: Pick<NetMapRule, "src" | "dst" | "protocol" | "ports">): AclRule {
  return r.ports === undefined
    ? { source: r.src, destination: r.dst, protocol: r.protocol }
    : { source: r.src, destination: r.dst, protocol: r.protocol, ports: r.ports };
}

const ruleKey = (r: AclRule) => `${r.source} ${r.destination} ${r.protocol} ${r.ports ?? ""}`;

function unique(rules: AclRule[]): AclRule[] {
  const seen = new Map<string, AclRule>();
  for (const r of rules) if (!seen.has(ruleKey(r))) seen.set(ruleKey(r), r);
  return [...seen.values()];
}

/** The Device's inbound ACLs for this NetMap (see the module comment); [] for an inactive system. */
export function inboundAcls(netmap: NetMap, options: InboundAclOptions = {}): InboundAcl[] {
  if (!netmap.self.active) return [];
  const keyOf = new Map(netmap.peers.map((p) => [p.id, p.publicKey]));
  const byKey = new Map<string, { allow: AclRule[]; deny: AclRule[] }>();
  const entry = (key: string) => {
    let e = byKey.get(key);
    if (e === undefined) byKey.set(key, (e = { allow: [], deny: [] }));
    return e;
  };
  for (const r of netmap.inboundRules) {
    const key = keyOf.get(r.peer);
    if (key === undefined) continue;
    (r.action === "allow" ? entry(key).allow : entry(key).deny).push(aclRule(r));
  }
  if (isGateway(netmap)) {
    const services = options.gatewayServices ?? GATEWAY_INPUT_ALLOW;
    for (const g of netmap.gatewayRules) {
      if (g.action !== "allow") continue;
      const key = keyOf.get(g.sender);
      if (key === undefined) continue;
      for (const s of services) {
        entry(key).allow.push({ source: g.senderAddress, destination: netmap.self.virtualAddress, protocol: s.protocol, ports: String(s.port) });
      }
    }
  }
  return [...byKey.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([peerPublicKey, e]) => {
      const deny = unique(e.deny);
      return deny.length > 0 ? { peerPublicKey, allow: unique(e.allow), deny } : { peerPublicKey, allow: unique(e.allow) };
    });
}
