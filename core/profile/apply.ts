/**
 * @module core/profile/apply
 * Writes a migration Plan into the policy store in one transaction: all of it or none of it.
 *
 * Idempotent: every write is an upsert by natural key (identity, tag name, gateway+prefix,
 * policy name) that reports whether it changed anything, and only changes are audited, so a
 * second apply of the same plan writes nothing at all. The migration adds and never takes
 * away: it does not revoke a gateway, overwrite a name an admin set, or touch subnets and tags
 * an admin created; its own policies (migrated-C-via-G) are set to exactly what the profiles say.
 */
import type { Logger } from "../log.ts";
import type { Change, StoreWriter, Store, SystemInput } from "../store/store.ts";
import { MigrationConflictError } from "./errors.ts";
import type { Plan } from "./plan.ts";

export const MIGRATION_ACTOR = "migrate-profile";

export interface ChangeCounts {
  created: number;
  updated: number;
  unchanged: number;
}

export interface ApplyResult {
  readonly systems: ChangeCounts;
  readonly gatewaySubnets: ChangeCounts;
  readonly tags: ChangeCounts;
  readonly systemTags: ChangeCounts;
  readonly policies: ChangeCounts;
  /** Audit rows written (one per change). */
  readonly audited: number;
}

export interface ApplyDeps {
  readonly logger: Logger;
  /**
   * Called after every write inside the transaction, with a step name. Tests use it to kill the
   * process mid-transaction; production passes nothing.
   */
  readonly onStep?: (step: string) => void;
}

const counts = (): ChangeCounts => ({ created: 0, updated: 0, unchanged: 0 });

export async function applyPlan(store: Store, plan: Plan, deps: ApplyDeps): Promise<ApplyResult> {
  if (plan.errors > 0) {
    throw new MigrationConflictError(
      `refusing to write: the plan has ${plan.errors} error${plan.errors === 1 ? "" : "s"}`,
      plan.conflicts,
    );
  }
  const step = deps.onStep ?? (() => {});
  const result = await store.transaction(async (tx: StoreWriter) => {
    const r = {
      systems: counts(),
      gatewaySubnets: counts(),
      tags: counts(),
      systemTags: counts(),
      policies: counts(),
      audited: 0,
    };
    const record = async (bucket: ChangeCounts, change: Change, action: string, subject: string, detail: Record<string, unknown>) => {
      bucket[change]++;
      if (change === "unchanged") return;
      await tx.appendAudit({ actor: MIGRATION_ACTOR, action: `${action}.${change === "created" ? "create" : "update"}`, subject, detail });
      r.audited++;
      step(`audit ${action} ${subject}`);
    };

    const addresses = new Map((await tx.listSystems()).filter((x) => x.virtualAddress !== null).map((x) => [x.virtualAddress!, x.identity]));
    for (const s of plan.systems) {
      const existing = await tx.getSystem(s.identity);
      const holder = s.virtualAddress === null ? undefined : addresses.get(s.virtualAddress);
      if (holder !== undefined && holder !== s.identity && (existing === null || existing.virtualAddress === null)) {
        // Thrown inside the transaction: everything written so far rolls back.
        throw new MigrationConflictError(
          `refusing to write: ${s.identity} (${s.file}) has VirtualAddress ${s.virtualAddress}, which the store already gives to ${holder}; nothing was written`,
          [],
        );
      }
      const want: SystemInput = existing
        ? {
            ...existing,
            name: existing.name !== "" ? existing.name : s.name,
            virtualAddress: existing.virtualAddress ?? s.virtualAddress,
            allowedAsGateway: existing.allowedAsGateway || s.allowedAsGateway,
          }
        : {
            identity: s.identity,
            name: s.name,
            description: "Migrated from an Enclave-style Universe.profile",
            publicKey: null,
            virtualAddress: s.virtualAddress,
            approved: true,
            enabled: true,
            allowedAsGateway: s.allowedAsGateway,
            source: "migrated",
          };
      const change = await tx.putSystem(want);
      step(`system ${s.identity}`);
      await record(r.systems, change, "system", s.identity, { name: want.name, allowedAsGateway: want.allowedAsGateway });
    }

    for (const g of plan.gateways) {
      const existing = new Map((await tx.listGatewaySubnets(g.identity)).map((x) => [x.prefix, x]));
      for (const s of g.subnets) {
        const old = existing.get(s.prefix.text);
        if (old !== undefined && old.source !== "migrated") {
          // An admin (or discovery) owns this row; the migration leaves it as it is.
          r.gatewaySubnets.unchanged++;
          continue;
        }
        const natAddress = s.natAddress ?? old?.natAddress ?? null;
        const change = await tx.putGatewaySubnet({ gateway: g.identity, prefix: s.prefix.text, nat: s.nat, natAddress, source: "migrated" });
        step(`gateway subnet ${g.identity} ${s.prefix.text}`);
        await record(r.gatewaySubnets, change, "gateway_subnet", `${g.identity} ${s.prefix.text}`, { nat: s.nat, natAddress });
      }
    }

    for (const t of plan.tags) {
      const existing = await tx.getTag(t.name);
      const change = existing ? "unchanged" : await tx.putTag({ name: t.name, description: t.description, source: "migrated" });
      step(`tag ${t.name}`);
      await record(r.tags, change, "tag", t.name, { description: t.description });
      const link = await tx.addSystemTag(t.system, t.name);
      step(`system tag ${t.system} ${t.name}`);
      await record(r.systemTags, link, "system_tag", `${t.system} ${t.name}`, {});
    }

    for (const p of plan.policies) {
      const existing = await tx.getGatewayAccessPolicy(p.name);
      const subnets = p.subnets.map((s) => s.text);
      const change = await tx.putGatewayAccessPolicy({
        name: p.name,
        description: p.description,
        enabled: existing?.enabled ?? true,
        source: "migrated",
        senderTags: [p.senderTag],
        gateways: [{ gateway: p.gateway, subnets }],
      });
      step(`policy ${p.name}`);
      await record(r.policies, change, "gateway_access_policy", p.name, { senderTags: [p.senderTag], gateway: p.gateway, subnets });
    }
    step("commit");
    return r;
  });
  deps.logger.info(
    `migrate: applied location=${store.location} systems=${fmt(result.systems)} gateway_subnets=${fmt(result.gatewaySubnets)} ` +
      `tags=${fmt(result.tags)} policies=${fmt(result.policies)} audited=${result.audited}`,
  );
  return result;
}

function fmt(c: ChangeCounts): string {
  return `created:${c.created},updated:${c.updated},unchanged:${c.unchanged}`;
}
