/**
 * @module core/policy/evaluate
 * The brute-force reference: is this one packet allowed? `decide` reads the policy state
 * directly (every policy, every system, no index, no precomputed regions) and is the oracle the
 * compiler is tested against (test/policy/compile.property.test.ts). `explain` is the same
 * walk, told as sentences for an operator: which policy, gateway and rule allowed the packet,
 * or why nothing did.
 *
 * A subnet's `healthy: false` is ignored on purpose: health is not policy. An unhealthy subnet
 * still grants (its routes stay, marked withdrawn, so clients fail closed); which gateway carries
 * the packet right now is failover's business, not the verdict's.
 *
 * Keep this file obviously correct rather than fast; it states model.ts's rules one by one.
 */
import { parseAddress, parsePrefix, prefixContainsAddress, prefixCovers } from "../net/address.ts";
import {
  actionOf,
  isActive,
  PolicyError,
  type Acl,
  type PacketProtocol,
  type PolicyAction,
  type PolicyState,
  type SubnetFilterEntry,
  type System,
} from "./model.ts";
import { bytesToBigint, parseDestination, parsePorts } from "./ranges.ts";
import { checkTrust } from "./trust.ts";

export interface Finding {
  policy: string;
  policyName: string;
  kind: "direct" | "gateway";
  action: PolicyAction;
  gateway?: string;
  subnet?: string;
  /** The ACL or subnet-filter entry that matched, as text ("tcp/22", "tcp/22 to 10.0.0.5"). */
  rule?: string;
  matched: boolean;
  reason: string;
}

export interface Decision {
  allowed: boolean;
  path: "direct" | "gateway" | "none";
  /** The gateway failover would prefer, when allowed through a gateway. */
  via?: string;
  /** Every gateway that would carry the packet (sorted). */
  gateways: string[];
  /** The policy that decided: the matching allow, or the deny that won. */
  policy?: string;
  rule?: string;
  reason: string;
  findings: Finding[];
}

export interface Explanation {
  allowed: boolean;
  /** One line per finding after a headline; what the CLI prints. */
  text: string;
  decision: Decision;
}

function matchesTags(system: System, tags: readonly string[]): boolean {
  return system.tags.some((t) => tags.includes(t));
}

function portsMatch(ports: string | undefined, port: number | undefined): boolean {
  if (ports === undefined) return true;
  if (port === undefined) return false;
  const p = parsePorts(ports);
  return p.lo <= port && port <= p.hi;
}

function protocolMatches(ruleProtocol: string, protocol: PacketProtocol): boolean {
  return ruleProtocol === "any" || ruleProtocol === protocol;
}

function aclText(a: { protocol: string; ports?: string | undefined }): string {
  return a.ports === undefined ? a.protocol : `${a.protocol}/${a.ports}`;
}

function packetText(protocol: PacketProtocol, port: number | undefined): string {
  return port === undefined || protocol === "icmp" ? protocol : `${protocol}/${port}`;
}

function aclMatches(a: Acl, protocol: PacketProtocol, port: number | undefined): boolean {
  return protocolMatches(a.protocol, protocol) && portsMatch(a.ports, port);
}

function filterMatches(f: SubnetFilterEntry, dst: Uint8Array, protocol: PacketProtocol, port: number | undefined): boolean {
  const r = parseDestination(f.destination);
  const n = bytesToBigint(dst);
  const family = dst.length === 4 ? 4 : 6;
  return r.family === family && r.lo <= n && n <= r.hi && protocolMatches(f.protocol, protocol) && portsMatch(f.ports, port);
}

function inactiveReason(s: System): string | null {
  if (!s.enabled) return `system ${s.id} is disabled`;
  if (!s.approved) return `system ${s.id} is not approved`;
  return null;
}

function tagList(tags: readonly string[]): string {
  return tags.length === 0 ? "(no tags)" : tags.join(", ");
}

/**
 * May `senderId` originate a packet to `destination` (protocol, destination port) at `now`?
 * Throws PolicyError E_POLICY_UNKNOWN_SYSTEM when the sender does not exist.
 */
export function decide(
  state: PolicyState,
  senderId: string,
  destination: string,
  protocol: PacketProtocol,
  port: number | undefined,
  now: number,
): Decision {
  const sender = state.systems.find((s) => s.id === senderId);
  if (sender === undefined) {
    throw new PolicyError("E_POLICY_UNKNOWN_SYSTEM", "", `no system ${JSON.stringify(senderId)} in the policy state`);
  }
  const none = (reason: string, findings: Finding[] = []): Decision => ({
    allowed: false,
    path: "none",
    gateways: [],
    reason,
    findings,
  });
  const senderInactive = inactiveReason(sender);
  if (senderInactive !== null) return none(senderInactive);
  const dst = parseAddress(destination);
  const network = parsePrefix(state.network);
  if (prefixContainsAddress(network, dst.bytes)) return decideDirect(state, sender, dst.text, protocol, port, none);
  return decideGateway(state, sender, dst.bytes, dst.text, protocol, port, now, none);
}

function decideDirect(
  state: PolicyState,
  sender: System,
  dst: string,
  protocol: PacketProtocol,
  port: number | undefined,
  none: (reason: string, findings?: Finding[]) => Decision,
): Decision {
  const target = state.systems.find((s) => parseAddress(s.virtualAddress).text === dst);
  if (target === undefined) return none(`no system has virtual address ${dst}`);
  if (target.id === sender.id) return none(`${dst} is the sender's own address`);
  const targetInactive = inactiveReason(target);
  if (targetInactive !== null) return none(targetInactive);

  const findings: Finding[] = [];
  let allow: Finding | undefined;
  let deny: Finding | undefined;
  for (const p of state.directAccessPolicies) {
    if (!matchesTags(sender, p.fromTags) || !matchesTags(target, p.toTags)) continue;
    const action = actionOf(p);
    const base = { policy: p.id, policyName: p.name, kind: "direct" as const, action };
    if (!p.enabled) {
      findings.push({ ...base, matched: false, reason: `policy ${p.id} is disabled` });
      continue;
    }
    const acl = p.acls.find((a) => aclMatches(a, protocol, port));
    if (acl === undefined) {
      const list = p.acls.map(aclText).join(", ");
      findings.push({ ...base, matched: false, reason: `policy ${p.id} ${action === "deny" ? "denies" : "allows"} only ${list}, not ${packetText(protocol, port)}` });
      continue;
    }
    const f: Finding = {
      ...base,
      rule: aclText(acl),
      matched: true,
      reason: `policy ${p.id} ${action === "deny" ? "denies" : "allows"} ${aclText(acl)} from ${sender.id} to ${target.id}`,
    };
    findings.push(f);
    if (action === "deny") deny ??= f;
    else allow ??= f;
  }
  if (deny !== undefined && allow !== undefined) {
    return { allowed: false, path: "none", gateways: [], policy: deny.policy, rule: deny.rule, reason: `denied by policy ${deny.policy} (${deny.rule})`, findings };
  }
  if (allow !== undefined) {
    return { allowed: true, path: "direct", gateways: [], policy: allow.policy, rule: allow.rule, reason: allow.reason, findings };
  }
  const reverse = state.directAccessPolicies.some(
    (p) => p.enabled && actionOf(p) === "allow" && matchesTags(target, p.fromTags) && matchesTags(sender, p.toTags),
  );
  const unmatched = findings.find((f) => f.action === "allow");
  const reason =
    unmatched !== undefined
      ? unmatched.reason
      : `no direct access policy lets tags ${tagList(sender.tags)} reach ${target.id} (tags ${tagList(target.tags)})` +
        (reverse ? `; ${target.id} may only originate traffic to ${sender.id}, not receive it` : "");
  return none(reason, findings);
}

interface GatewayVerdict {
  gateway: string;
  carries: boolean;
  metric: number;
  allow?: Finding;
  deny?: Finding;
}

function decideGateway(
  state: PolicyState,
  sender: System,
  dst: Uint8Array,
  dstText: string,
  protocol: PacketProtocol,
  port: number | undefined,
  now: number,
  none: (reason: string, findings?: Finding[]) => Decision,
): Decision {
  const findings: Finding[] = [];
  const verdicts: GatewayVerdict[] = [];
  const gateways = [...state.systems].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const gw of gateways) {
    const verdict: GatewayVerdict = { gateway: gw.id, carries: false, metric: Infinity };
    for (const p of state.gatewayAccessPolicies) {
      if (!matchesTags(sender, p.senderTags)) continue;
      const action = actionOf(p);
      for (const entry of p.gateways) {
        if (entry.systemId !== gw.id) continue;
        for (const subnetText of entry.subnets) {
          const subnet = parsePrefix(subnetText);
          if (!prefixContainsAddress(subnet, dst)) continue;
          const base = { policy: p.id, policyName: p.name, kind: "gateway" as const, action, gateway: gw.id, subnet: subnet.text };
          const miss = (reason: string) => findings.push({ ...base, matched: false, reason });
          if (!p.enabled) {
            miss(`policy ${p.id} is disabled`);
            continue;
          }
          let rule: string;
          if (p.subnetFilter === undefined) {
            rule = `any to ${subnet.text}`;
          } else {
            const f = p.subnetFilter.find((e) => filterMatches(e, dst, protocol, port));
            if (f === undefined) {
              const list = p.subnetFilter.map((e) => `${aclText(e)} to ${e.destination}`).join(", ");
              miss(`subnet filter of policy ${p.id} (${list}) does not match ${packetText(protocol, port)} to ${dstText}`);
              continue;
            }
            rule = `${aclText(f)} to ${f.destination}`;
          }
          if (action === "deny") {
            const found: Finding = { ...base, rule, matched: true, reason: `policy ${p.id} denies ${rule} through gateway ${gw.id}` };
            findings.push(found);
            verdict.deny ??= found;
            continue;
          }
          if (gw.id === sender.id) {
            miss(`${gw.id} is the sender itself`);
            continue;
          }
          const gwInactive = inactiveReason(gw);
          if (gwInactive !== null) {
            miss(`gateway ${gwInactive.slice("system ".length)}`);
            continue;
          }
          if (!gw.allowedAsGateway) {
            miss(`system ${gw.id} is not allowed to act as a gateway`);
            continue;
          }
          const served = gw.gatewaySubnets
            .filter((s) => prefixCovers(parsePrefix(s.prefix), subnet))
            .sort((a, b) => parsePrefix(b.prefix).length - parsePrefix(a.prefix).length)[0];
          if (served === undefined) {
            miss(`gateway ${gw.id} does not serve ${subnet.text}`);
            continue;
          }
          const trust = checkTrust(p.trust, sender, now);
          if (!trust.ok) {
            miss(trust.reason);
            continue;
          }
          const found: Finding = { ...base, rule, matched: true, reason: `policy ${p.id} allows ${rule} through gateway ${gw.id}` };
          findings.push(found);
          verdict.allow ??= found;
          const metric = (served.priority ?? 100) + (served.draining ? 1000 : 0);
          if (metric < verdict.metric) verdict.metric = metric;
        }
      }
    }
    verdict.carries = verdict.allow !== undefined && verdict.deny === undefined;
    if (verdict.allow !== undefined || verdict.deny !== undefined) verdicts.push(verdict);
  }

  const carrying = verdicts.filter((v) => v.carries);
  if (carrying.length > 0) {
    const best = [...carrying].sort((a, b) => a.metric - b.metric || (a.gateway < b.gateway ? -1 : 1))[0]!;
    return {
      allowed: true,
      path: "gateway",
      via: best.gateway,
      gateways: carrying.map((v) => v.gateway),
      policy: best.allow!.policy,
      rule: best.allow!.rule,
      reason: best.allow!.reason,
      findings,
    };
  }
  const denied = verdicts.find((v) => v.allow !== undefined && v.deny !== undefined);
  if (denied !== undefined) {
    return {
      allowed: false,
      path: "none",
      gateways: [],
      policy: denied.deny!.policy,
      rule: denied.deny!.rule,
      reason: `denied by policy ${denied.deny!.policy} (${denied.deny!.rule}) through gateway ${denied.gateway}`,
      findings,
    };
  }
  const firstMiss = findings.find((f) => f.action === "allow" && !f.matched);
  if (firstMiss !== undefined) return none(firstMiss.reason, findings);
  const granting = state.gatewayAccessPolicies.filter(
    (p) => p.enabled && actionOf(p) === "allow" && matchesTags(sender, p.senderTags),
  );
  if (granting.length === 0) return none(`no gateway access policy grants tags ${tagList(sender.tags)}`, findings);
  return none(`no gateway access policy for tags ${tagList(sender.tags)} covers ${dstText}`, findings);
}

/**
 * `decide`, told for an operator. The first line is the verdict; the lines after it are what
 * each policy that named the sender's tags had to say.
 */
export function explain(
  state: PolicyState,
  systemId: string,
  destination: string,
  port: number | undefined,
  protocol: PacketProtocol,
  now: number,
): Explanation {
  const d = decide(state, systemId, destination, protocol, port, now);
  const what = `${systemId} -> ${destination} ${packetText(protocol, port)}`;
  let head: string;
  if (d.allowed) {
    const via = d.path === "gateway" ? ` through gateway ${d.via}` : " directly";
    head = `ALLOWED ${what}${via} by policy ${d.policy} (rule ${d.rule})`;
  } else {
    head = `DENIED ${what}: ${d.reason}`;
  }
  const lines = [head];
  for (const f of d.findings) {
    const where = f.gateway === undefined ? "" : ` [gateway ${f.gateway}, subnet ${f.subnet}]`;
    lines.push(`  ${f.matched ? "+" : "-"} ${f.policy} "${f.policyName}" (${f.action})${where}: ${f.reason}`);
  }
  return { allowed: d.allowed, text: lines.join("\n"), decision: d };
}
