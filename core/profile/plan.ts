/**
 * @module core/profile/plan
 * The ExitNode -> Gateway migration as a pure function: validated profiles (and optionally the
 * manual SNAT rules and the gateways the store already knows) in, a Plan out. Nothing here reads
 * files or the store; applyPlan (apply.ts) writes a plan, render.ts prints one.
 *
 * The mapping:
 *   ExitNode.ProvidesRoutes on G          -> G allowed to act as gateway, one gateway subnet each
 *   ExitNode.AvailableRoutes {G: [S...]}  -> on client C: tag migrated-C on C, and the gateway
 *                                            access policy migrated-C-via-G: tag migrated-C may
 *                                            reach exactly S... via exactly G
 *   manual SNAT -s <overlay> -d S --to A  -> G's subnet S: NAT on, to A; the rule is listed for removal
 *
 * It reports instead of guessing. Errors (block --apply): a gateway no profile provides, a
 * subnet the gateway does not provide or provides only in part, a client naming itself, two
 * profiles with one VirtualAddress.
 * Warnings (do not block): two gateways with overlapping subnets (failover candidates),
 * duplicate or empty route lists, SNAT rules that could not be tied to a gateway subnet.
 */
import { prefixCovers, prefixesOverlap, type Prefix } from "../net/address.ts";
import type { SnatNearMiss, SnatRule } from "./iptables.ts";
import type { LoadedProfile } from "./load.ts";

export type Severity = "error" | "warning";

export type ConflictKind =
  | "unknown-gateway"
  | "not-a-gateway"
  | "self-gateway"
  | "duplicate-virtual-address"
  | "subnet-not-provided"
  | "subnet-partly-provided"
  | "failover-candidates"
  | "duplicate-route"
  | "empty-route-list"
  | "snat-unknown-gateway"
  | "snat-ambiguous"
  | "snat-unmatched"
  | "snat-partial"
  | "snat-missing"
  | "snat-not-recognised";

export interface Conflict {
  readonly severity: Severity;
  readonly kind: ConflictKind;
  readonly message: string;
  /** Where to look: `file:line:column` when known. */
  readonly at: string | null;
  readonly identities: readonly string[];
  readonly prefixes: readonly string[];
}

export interface PlannedSystem {
  readonly identity: string;
  readonly name: string;
  readonly virtualAddress: string | null;
  readonly file: string;
  readonly allowedAsGateway: boolean;
  readonly client: boolean;
}

export interface PlannedSubnet {
  readonly prefix: Prefix;
  readonly nat: boolean;
  /** The address to SNAT to, taken from the manual rule; null: the gateway picks its LAN address. */
  readonly natAddress: string | null;
  /** The manual rule this subnet's NAT replaces, if one was found. */
  readonly manualRule: SnatRule | null;
}

export interface PlannedGateway {
  readonly identity: string;
  readonly name: string;
  readonly file: string;
  readonly subnets: readonly PlannedSubnet[];
}

export interface PlannedTag {
  readonly name: string;
  readonly system: string;
  readonly description: string;
}

export interface PlannedPolicy {
  readonly name: string;
  readonly senderTag: string;
  readonly client: string;
  readonly gateway: string;
  readonly subnets: readonly Prefix[];
  /** The gateway was migrated earlier (it is in the store, not among these profiles). */
  readonly gatewayFromStore: boolean;
  readonly description: string;
}

export interface ManagedSnat {
  readonly gateway: string;
  readonly prefixes: readonly string[];
  readonly rule: SnatRule;
}

export interface Plan {
  readonly systems: readonly PlannedSystem[];
  readonly gateways: readonly PlannedGateway[];
  readonly tags: readonly PlannedTag[];
  readonly policies: readonly PlannedPolicy[];
  /** Manual rules now managed by Waygate: remove them once the gateway runs Waygate. */
  readonly snat: readonly ManagedSnat[];
  readonly conflicts: readonly Conflict[];
  readonly errors: number;
  readonly warnings: number;
}

export interface SnatInput {
  readonly file: string;
  /** `--iptables-save G982V=FILE`: the gateway this output came from; null: work it out. */
  readonly gateway: string | null;
  readonly rules: readonly SnatRule[];
  readonly nearMisses: readonly SnatNearMiss[];
}

export interface KnownGateway {
  readonly identity: string;
  readonly name: string;
  readonly subnets: readonly Prefix[];
}

export interface PlanInput {
  readonly profiles: readonly LoadedProfile[];
  readonly snat?: readonly SnatInput[];
  /** Gateways already in the store (migrated earlier), so clients can be migrated after them. */
  readonly storeGateways?: readonly KnownGateway[];
}

export function migratedTagName(client: string): string {
  return `migrated-${client}`;
}

export function migratedPolicyName(client: string, gateway: string): string {
  return `migrated-${client}-via-${gateway}`;
}

const byText = (a: { text: string }, b: { text: string }) => (a.text < b.text ? -1 : a.text > b.text ? 1 : 0);

function uniquePrefixes(list: readonly Prefix[]): { unique: Prefix[]; repeated: Prefix[] } {
  const seen = new Set<string>();
  const unique: Prefix[] = [];
  const repeated: Prefix[] = [];
  for (const p of list) {
    if (seen.has(p.text)) repeated.push(p);
    else {
      seen.add(p.text);
      unique.push(p);
    }
  }
  return { unique, repeated };
}

const list = (ps: readonly Prefix[]) => (ps.length === 0 ? "nothing" : ps.map((p) => p.text).join(", "));

export function planMigration(input: PlanInput): Plan {
  const conflicts: Conflict[] = [];
  const add = (c: Omit<Conflict, "at"> & { at?: string | null }) => conflicts.push({ ...c, at: c.at ?? null });
  const profiles = [...input.profiles].sort((a, b) => (a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0));
  const byIdentity = new Map(profiles.map((p) => [p.identity, p]));

  // Two systems with one overlay address cannot both be right.
  const byAddress = new Map<string, LoadedProfile>();
  for (const p of profiles) {
    const address = p.doc.virtualAddress;
    if (address === null) continue;
    const other = byAddress.get(address);
    if (other) {
      add({
        severity: "error",
        kind: "duplicate-virtual-address",
        message: `${other.identity} (${other.doc.file}) and ${p.identity} (${p.doc.file}) both have VirtualAddress ${address}`,
        at: p.doc.locate("VirtualAddress"),
        identities: [other.identity, p.identity],
        prefixes: [],
      });
    } else {
      byAddress.set(address, p);
    }
  }

  // Gateways: every profile that provides routes.
  const provided = new Map<string, { profile: LoadedProfile; prefixes: Prefix[] }>();
  for (const p of profiles) {
    const { unique, repeated } = uniquePrefixes(p.doc.exitNode.providesRoutes);
    for (const r of repeated) {
      add({
        severity: "warning",
        kind: "duplicate-route",
        message: `${p.identity} lists ${r.text} more than once in ExitNode.ProvidesRoutes; it is migrated once`,
        at: p.doc.locate("ExitNode.ProvidesRoutes"),
        identities: [p.identity],
        prefixes: [r.text],
      });
    }
    if (unique.length > 0) provided.set(p.identity, { profile: p, prefixes: unique });
  }
  const storeGateways = new Map<string, KnownGateway>();
  for (const g of input.storeGateways ?? []) if (!provided.has(g.identity)) storeGateways.set(g.identity, g);

  // Overlaps between gateways: failover candidates, reported once per pair of subnets.
  const allGateways: { identity: string; prefixes: readonly Prefix[] }[] = [
    ...[...provided].map(([identity, g]) => ({ identity, prefixes: g.prefixes })),
    ...[...storeGateways.values()].map((g) => ({ identity: g.identity, prefixes: g.subnets })),
  ].sort((a, b) => (a.identity < b.identity ? -1 : 1));
  for (let i = 0; i < allGateways.length; i++) {
    for (let j = i + 1; j < allGateways.length; j++) {
      const a = allGateways[i]!;
      const b = allGateways[j]!;
      for (const pa of a.prefixes) {
        for (const pb of b.prefixes) {
          if (!prefixesOverlap(pa, pb)) continue;
          const shared = pa.length >= pb.length ? pa : pb;
          const how = pa.text === pb.text ? `both provide ${pa.text}` : `${a.identity} provides ${pa.text} and ${b.identity} provides ${pb.text}, which overlap in ${shared.text}`;
          add({
            severity: "warning",
            kind: "failover-candidates",
            message: `${a.identity} and ${b.identity}: ${how}; they become failover candidates for ${shared.text} (check both really reach the same network)`,
            identities: [a.identity, b.identity],
            prefixes: [pa.text, pb.text],
          });
        }
      }
    }
  }

  // SNAT: tie each iptables-save file to one gateway, then each rule to that gateway's subnets.
  const subnetRule = new Map<string, SnatRule>(); // `${gateway} ${prefix}` -> most specific rule
  const snat: ManagedSnat[] = [];
  for (const file of input.snat ?? []) {
    for (const miss of file.nearMisses) {
      add({
        severity: "warning",
        kind: "snat-not-recognised",
        message: `NAT rule left alone: ${miss.reason}: ${miss.text}`,
        at: `${miss.file}:${miss.line}`,
        identities: [],
        prefixes: [],
      });
    }
    const matchesOf = (gateway: string, rule: SnatRule) =>
      (provided.get(gateway)?.prefixes ?? []).filter((s) => prefixCovers(rule.destination, s));
    let owner: string | null = file.gateway;
    if (owner !== null && !provided.has(owner)) {
      add({
        severity: "error",
        kind: "snat-unknown-gateway",
        message: `--iptables-save ${owner}=${file.file}: no profile given provides routes as ${owner}`,
        at: file.file,
        identities: [owner],
        prefixes: [],
      });
      continue;
    }
    if (owner === null) {
      // The gateways every matching rule fits; iptables-save output comes from one machine.
      let candidates = null as Set<string> | null;
      for (const rule of file.rules) {
        const fits = new Set([...provided.keys()].filter((g) => matchesOf(g, rule).length > 0));
        if (fits.size === 0) continue;
        candidates = candidates === null ? fits : new Set([...candidates].filter((g) => fits.has(g)));
      }
      if (candidates === null) {
        if (file.rules.length > 0) {
          add({
            severity: "warning",
            kind: "snat-unmatched",
            message: `none of the ${file.rules.length} overlay SNAT rules matches a subnet any gateway provides; left in place`,
            at: file.file,
            identities: [],
            prefixes: file.rules.map((r) => r.destination.text),
          });
        }
        continue;
      }
      if (candidates.size !== 1) {
        const names = [...candidates].sort();
        add({
          severity: "warning",
          kind: "snat-ambiguous",
          message:
            names.length === 0
              ? `its SNAT rules match subnets of different gateways; pass --iptables-save IDENTITY=${file.file} to say whose output it is`
              : `its SNAT rules fit ${names.join(" and ")} equally; pass --iptables-save IDENTITY=${file.file} to say whose output it is`,
          at: file.file,
          identities: names,
          prefixes: [],
        });
        continue;
      }
      owner = [...candidates][0]!;
    }
    const gateway = provided.get(owner)!;
    for (const rule of file.rules) {
      const covered = matchesOf(owner, rule);
      const partial = gateway.prefixes.filter((s) => !prefixCovers(rule.destination, s) && prefixesOverlap(rule.destination, s));
      if (partial.length > 0) {
        add({
          severity: "warning",
          kind: "snat-partial",
          message: `SNAT rule for ${rule.destination.text} covers only part of ${owner}'s ${list(partial)}; Waygate NATs the whole subnet, so check the rule is not doing something narrower on purpose`,
          at: `${rule.file}:${rule.line}`,
          identities: [owner],
          prefixes: [rule.destination.text, ...partial.map((p) => p.text)],
        });
      }
      if (covered.length === 0) {
        if (partial.length === 0) {
          add({
            severity: "warning",
            kind: "snat-unmatched",
            message: `SNAT rule for ${rule.destination.text} matches no subnet ${owner} provides; left in place`,
            at: `${rule.file}:${rule.line}`,
            identities: [owner],
            prefixes: [rule.destination.text],
          });
        }
        continue;
      }
      for (const s of covered) {
        const key = `${owner} ${s.text}`;
        const prev = subnetRule.get(key);
        if (!prev || rule.destination.length > prev.destination.length) subnetRule.set(key, rule);
      }
      snat.push({ gateway: owner, prefixes: covered.map((p) => p.text), rule });
    }
    for (const s of gateway.prefixes) {
      if (!subnetRule.has(`${owner} ${s.text}`)) {
        add({
          severity: "warning",
          kind: "snat-missing",
          message: `${file.file} has no SNAT rule for ${owner}'s ${s.text}; Waygate will NAT it to the gateway's LAN address (turn NAT off for this subnet if the LAN routes the overlay back to ${owner})`,
          at: file.file,
          identities: [owner],
          prefixes: [s.text],
        });
      }
    }
  }

  const gateways: PlannedGateway[] = [...provided].map(([identity, g]) => ({
    identity,
    name: g.profile.doc.name ?? "",
    file: g.profile.doc.file,
    subnets: g.prefixes.map((prefix) => {
      const rule = subnetRule.get(`${identity} ${prefix.text}`) ?? null;
      return { prefix, nat: true, natAddress: rule?.toSource ?? null, manualRule: rule };
    }),
  }));

  // Clients: one policy per (client, gateway) with exactly the subnets the client had.
  const policies: PlannedPolicy[] = [];
  const tags: PlannedTag[] = [];
  for (const p of profiles) {
    let clientHasPolicy = false;
    for (const grant of p.doc.exitNode.availableRoutes) {
      const at = p.doc.locate(grant.path);
      const who = `${p.identity} (${p.doc.name ?? p.doc.file})`;
      const { unique, repeated } = uniquePrefixes(grant.prefixes);
      for (const r of repeated) {
        add({
          severity: "warning",
          kind: "duplicate-route",
          message: `${who} lists ${r.text} more than once for ${grant.gateway}; it is migrated once`,
          at,
          identities: [p.identity, grant.gateway],
          prefixes: [r.text],
        });
      }
      if (unique.length === 0) {
        add({
          severity: "warning",
          kind: "empty-route-list",
          message: `${who} lists no subnets for ${grant.gateway}; no policy is created`,
          at,
          identities: [p.identity, grant.gateway],
          prefixes: [],
        });
        continue;
      }
      if (grant.gateway === p.identity) {
        add({
          severity: "error",
          kind: "self-gateway",
          message: `${who} names itself as a gateway in ${grant.path}`,
          at,
          identities: [p.identity],
          prefixes: unique.map((s) => s.text),
        });
        continue;
      }
      const gw = provided.get(grant.gateway);
      const stored = storeGateways.get(grant.gateway);
      const gatewayPrefixes = gw?.prefixes ?? stored?.subnets;
      if (gatewayPrefixes === undefined) {
        const known = byIdentity.get(grant.gateway);
        add(
          known
            ? {
                severity: "error",
                kind: "not-a-gateway",
                message: `${who} uses ${grant.gateway} as a gateway (${grant.path}), but ${grant.gateway}'s profile (${known.doc.file}) provides no routes`,
                at,
                identities: [p.identity, grant.gateway],
                prefixes: unique.map((s) => s.text),
              }
            : {
                severity: "error",
                kind: "unknown-gateway",
                message: `${who} uses gateway ${grant.gateway} (${grant.path}), but no profile given is ${grant.gateway} and the store has no such gateway; add its profile`,
                at,
                identities: [p.identity, grant.gateway],
                prefixes: unique.map((s) => s.text),
              },
        );
        continue;
      }
      const ok: Prefix[] = [];
      unique.forEach((s, index) => {
        if (gatewayPrefixes.some((g) => prefixCovers(g, s))) {
          ok.push(s);
          return;
        }
        const original = grant.prefixes.indexOf(s);
        const where = p.doc.locate(`${grant.path}[${original >= 0 ? original : index}]`);
        const parts = gatewayPrefixes.filter((g) => prefixesOverlap(g, s));
        add(
          parts.length > 0
            ? {
                severity: "error",
                kind: "subnet-partly-provided",
                message: `${who} asks for ${s.text} via ${grant.gateway}, but ${grant.gateway} provides only part of it (${list(parts)}); ask for what it provides or add the rest to its ProvidesRoutes`,
                at: where,
                identities: [p.identity, grant.gateway],
                prefixes: [s.text, ...parts.map((x) => x.text)],
              }
            : {
                severity: "error",
                kind: "subnet-not-provided",
                message: `${who} asks for ${s.text} via ${grant.gateway}, but ${grant.gateway} provides ${list(gatewayPrefixes)}`,
                at: where,
                identities: [p.identity, grant.gateway],
                prefixes: [s.text],
              },
        );
      });
      if (ok.length === 0) continue;
      clientHasPolicy = true;
      policies.push({
        name: migratedPolicyName(p.identity, grant.gateway),
        senderTag: migratedTagName(p.identity),
        client: p.identity,
        gateway: grant.gateway,
        subnets: [...ok].sort(byText),
        gatewayFromStore: gw === undefined,
        description: `Migrated from ${p.identity}'s ExitNode.AvailableRoutes.${grant.gateway}`,
      });
    }
    if (clientHasPolicy) {
      tags.push({
        name: migratedTagName(p.identity),
        system: p.identity,
        description: `Migrated client ${p.identity}; regroup its policies under your own tags`,
      });
    }
  }
  policies.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  const systems: PlannedSystem[] = profiles.map((p) => ({
    identity: p.identity,
    name: p.doc.name ?? "",
    virtualAddress: p.doc.virtualAddress,
    file: p.doc.file,
    allowedAsGateway: provided.has(p.identity),
    client: p.doc.exitNode.availableRoutes.length > 0,
  }));

  const errors = conflicts.filter((c) => c.severity === "error").length;
  return { systems, gateways, tags, policies, snat, conflicts, errors, warnings: conflicts.length - errors };
}
