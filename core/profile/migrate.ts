/**
 * @module core/profile/migrate
 * `waygate migrate-profile` as a function the command and the tests both call:
 * load + validate profiles -> read manual SNAT rules -> plan -> print -> (apply) -> (strip).
 *
 * Order matters for "old or new state, never half":
 *   1. Every input is read and validated, and the plan is made, before anything is written.
 *      A malformed file or a plan error stops here with nothing created, not even the database.
 *   2. The store write is one transaction.
 *   3. Only after it commits are profiles stripped, each atomically; clients before gateways, so
 *      a run killed halfway never leaves a client pointing at a gateway that no longer says
 *      what it provides. The plan also consults the gateways already in the store, so a
 *      re-run after such a kill (or a fleet migrated gateway-first) still resolves.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import type { Logger } from "../log.ts";
import type { Clock } from "../runner.ts";
import { parsePrefix, type Prefix } from "../net/address.ts";
import { openSqliteStore } from "../store/sqlite.ts";
import type { Store } from "../store/store.ts";
import { applyPlan, type ApplyResult } from "./apply.ts";
import { IptablesSaveError, MigrateUsageError, MigrationConflictError } from "./errors.ts";
import { parseIptablesSave } from "./iptables.ts";
import { loadProfiles, type LoadedProfile } from "./load.ts";
import { planMigration, type KnownGateway, type Plan, type SnatInput } from "./plan.ts";
import { planToJson, renderPlanText, type MigrateMode, type RenderContext } from "./render.ts";
import { needsStrip, stripProfile, type StripHooks, type StripResult } from "./strip.ts";
import { isIdentity } from "./schema.ts";

export interface MigrateOptions {
  /** Profile files and fleet directories. */
  readonly paths: readonly string[];
  /** --identity, for a single profile whose identity nothing else gives. */
  readonly identity?: string;
  /** The store database file. */
  readonly db: string;
  readonly apply: boolean;
  readonly strip: boolean;
  readonly json: boolean;
  /** --iptables-save values: `FILE` or `IDENTITY=FILE`. */
  readonly iptablesSave: readonly string[];
}

export interface MigrateDeps {
  readonly logger: Logger;
  readonly now: Clock;
  /** Where the plan goes (stdout in the CLI). */
  readonly out: (text: string) => void;
  /** Test hook: called after every write inside the store transaction. */
  readonly onApplyStep?: (step: string) => void;
  /** Test hooks for the profile rewrite. */
  readonly stripHooks?: StripHooks;
}

export interface MigrateResult {
  readonly mode: MigrateMode;
  readonly db: string;
  readonly profiles: readonly LoadedProfile[];
  readonly plan: Plan;
  readonly applied: ApplyResult | null;
  readonly stripped: readonly StripResult[];
}

const DEFAULT_OVERLAY = "100.64.0.0/10";

async function readSnat(specs: readonly string[], profiles: readonly LoadedProfile[]): Promise<SnatInput[]> {
  const overlays = new Map<string, Prefix>([[DEFAULT_OVERLAY, parsePrefix(DEFAULT_OVERLAY)]]);
  for (const p of profiles) if (p.doc.virtualNetwork) overlays.set(p.doc.virtualNetwork.text, p.doc.virtualNetwork);
  const inputs: SnatInput[] = [];
  for (const spec of specs) {
    const pinned = /^([A-Z0-9]{5})=(.+)$/.exec(spec);
    const file = pinned ? pinned[2]! : spec;
    if (file === "") throw new MigrateUsageError("--iptables-save needs a file (iptables-save output from a gateway)");
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      const code = (err as { code?: string } | null)?.code;
      throw new IptablesSaveError(file, 0, code === "ENOENT" ? "no such file" : `cannot read (${code ?? String(err)})`);
    }
    const parsed = parseIptablesSave(text, file, [...overlays.values()]);
    inputs.push({ file, gateway: pinned ? pinned[1]! : null, rules: parsed.rules, nearMisses: parsed.nearMisses });
  }
  return inputs;
}

/** The gateways an earlier migration (or an admin) put in the store, for planning. */
export async function readStoreGateways(store: Store): Promise<KnownGateway[]> {
  const systems = await store.listSystems();
  const subnets = await store.listGatewaySubnets();
  return systems
    .filter((s) => s.allowedAsGateway)
    .map((s) => ({
      identity: s.identity,
      name: s.name,
      subnets: subnets.filter((x) => x.gateway === s.identity).map((x) => parsePrefix(x.prefix)),
    }));
}

export async function migrateProfiles(options: MigrateOptions, deps: MigrateDeps): Promise<MigrateResult> {
  if (options.strip && !options.apply) {
    deps.logger.debug("migrate: strip=dry-run reason=no-apply");
  }
  if (options.identity !== undefined && !isIdentity(options.identity)) {
    throw new MigrateUsageError(`--identity ${JSON.stringify(options.identity)} is not a system identity (5 characters A-Z, 0-9)`);
  }
  const mode: MigrateMode = options.apply ? "apply" : "dry-run";
  const profiles = await loadProfiles({ paths: options.paths, identity: options.identity }, deps);
  const snat = await readSnat(options.iptablesSave, profiles);

  // Peek at what an earlier migration put in the store, without creating anything.
  let known: KnownGateway[] = [];
  if (existsSync(options.db)) {
    const peek = await openSqliteStore(options.db, { now: deps.now, logger: deps.logger, readonly: true });
    try {
      known = await readStoreGateways(peek);
    } finally {
      peek.close();
    }
  }

  const plan = planMigration({ profiles, snat, storeGateways: known });
  deps.logger.info(
    `migrate: mode=${mode} profiles=${profiles.length} gateways=${plan.gateways.length} policies=${plan.policies.length} ` +
      `errors=${plan.errors} warnings=${plan.warnings} store_gateways=${known.length}`,
  );
  // Clients first, gateways last: see the module comment.
  const stripOrder = [...profiles]
    .filter((p) => needsStrip(p.doc))
    .sort((a, b) => Number(a.doc.exitNode.providesRoutes.length > 0) - Number(b.doc.exitNode.providesRoutes.length > 0));
  const ctx = (applied: ApplyResult | null, stripped: StripResult[]): RenderContext => ({
    db: options.db,
    mode,
    profiles,
    strip: options.strip,
    stripCandidates: stripOrder.map((p) => p.doc.file),
    stripped,
    applied,
  });
  const print = (c: RenderContext) =>
    deps.out(options.json ? JSON.stringify(planToJson(plan, c), null, 2) + "\n" : renderPlanText(plan, c));

  if (plan.errors > 0) {
    print(ctx(null, []));
    const n = `${plan.errors} error${plan.errors === 1 ? "" : "s"}`;
    const details = plan.conflicts
      .filter((c) => c.severity === "error")
      .map((c) => `\n  ${c.kind}: ${c.at ? `${c.at}: ` : ""}${c.message}`)
      .join("");
    throw new MigrationConflictError(
      options.apply
        ? `refusing to write: the plan has ${n}; nothing was written to ${options.db} and no profile was changed:${details}`
        : `the plan has ${n}; fix the profiles and run again:${details}`,
      plan.conflicts,
    );
  }

  if (!options.apply) {
    print(ctx(null, []));
    return { mode, db: options.db, profiles, plan, applied: null, stripped: [] };
  }

  const store = await openSqliteStore(options.db, { now: deps.now, logger: deps.logger });
  let applied: ApplyResult;
  try {
    applied = await applyPlan(store, plan, { logger: deps.logger, onStep: deps.onApplyStep });
  } finally {
    store.close();
  }

  const stripped: StripResult[] = [];
  if (options.strip) {
    for (const p of stripOrder) {
      const r = stripProfile(p.doc, deps.stripHooks);
      deps.logger.info(`migrate: strip file=${r.file} changed=${r.changed}${r.backup ? ` backup=${r.backup}` : ""}`);
      stripped.push(r);
    }
    if (stripOrder.length === 0) deps.logger.info("migrate: strip files=0 reason=already-stripped");
  }
  print(ctx(applied, stripped));
  return { mode, db: options.db, profiles, plan, applied, stripped };
}
