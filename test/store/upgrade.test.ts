/**
 * @module test/store/upgrade.test
 * The committed 0001 database (test/fixtures/db/0001.sqlite: migrate-profile --apply of
 * fleet-clean at schema 0001_initial) upgraded by today's migrations: every row kept, the new
 * columns at their defaults, the result's schema equal to core/store/schema.sql, and the data
 * mapping into a valid PolicyState once its systems enrol.
 */
import { Database } from "bun:sqlite";
import { afterAll, expect, test } from "bun:test";
import { copyFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { MIGRATIONS } from "../../core/store/migrations.ts";
import { loadPolicyState } from "../../core/store/policy-state.ts";
import { dumpDatabase, openSqliteStore, schemaText } from "../../core/store/sqlite.ts";
import { ROOT, removeTemps, tempDir } from "../profile/helpers/fixtures.ts";

afterAll(removeTemps);

const FIXTURE = join(ROOT, "test", "fixtures", "db", "0001.sqlite");

/** Rows of the tables 0001 had, with only the columns 0001 had. */
function oldRows(path: string): string {
  const db = new Database(path, { readonly: true });
  const tables = ["systems", "tags", "system_tags", "gateway_subnets", "gateway_access_policies", "gateway_access_policy_sender_tags", "gateway_access_policy_gateways", "gateway_access_policy_subnets", "audit_log"];
  const cols: Record<string, string> = {
    systems: "id, identity, name, description, public_key, virtual_address, approved, enabled, allowed_as_gateway, source, created_at, updated_at",
    gateway_subnets: "id, system_id, prefix, nat, nat_address, source, created_at, updated_at",
    gateway_access_policies: "id, name, description, enabled, source, created_at, updated_at",
  };
  const out = tables.map((t) => `${t}: ${JSON.stringify(db.query(`SELECT ${cols[t] ?? "*"} FROM ${t} ORDER BY 1, 2`).all())}`).join("\n");
  db.close();
  return out;
}

test("the 0001 fixture is at schema 0001_initial and holds the fleet-clean migration", () => {
  const db = new Database(FIXTURE, { readonly: true });
  expect(db.query("SELECT id FROM schema_migrations").all()).toEqual([{ id: "0001_initial" }]);
  expect((db.query("SELECT identity FROM systems ORDER BY identity").all() as { identity: string }[]).map((r) => r.identity)).toEqual(["G982V", "M5T3K", "Q8QW8", "Y7299"]);
  expect((db.query("SELECT count(*) AS n FROM gateway_access_policies").get() as { n: number }).n).toBeGreaterThan(0);
  db.close();
});

test("upgrading the 0001 fixture keeps every row and reaches the canonical schema", async () => {
  const path = join(tempDir("waygate-upgrade-"), "waygate.db");
  copyFileSync(FIXTURE, path);
  const before = oldRows(path);
  const store = await openSqliteStore(path, { now: () => 42 });
  expect(await store.appliedMigrations()).toEqual(MIGRATIONS.map((m) => m.id));
  const systems = await store.listSystems();
  expect(systems.map((s) => [s.identity, s.endpoint, s.lastSeen])).toEqual([
    ["G982V", null, null],
    ["M5T3K", null, null],
    ["Q8QW8", null, null],
    ["Y7299", null, null],
  ]);
  const subnets = await store.listGatewaySubnets();
  expect(subnets.every((s) => s.priority === 100 && !s.draining && s.healthy && s.source === "migrated")).toBe(true);
  const policies = await store.listGatewayAccessPolicies();
  expect(policies.every((p) => p.action === "allow" && p.subnetFilter === null && p.trust === null)).toBe(true);
  store.close();
  expect(oldRows(path)).toBe(before);
  const db = new Database(path, { readonly: true });
  const canonical = readFileSync(join(ROOT, "core", "store", "schema.sql"), "utf8").replace(/^(--.*\n)+\n/, "");
  expect(schemaText(db)).toBe(canonical);
  db.close();
});

test("after upgrade the migrated fleet maps to a valid PolicyState once its systems have keys", async () => {
  const path = join(tempDir("waygate-upgrade-"), "waygate.db");
  copyFileSync(FIXTURE, path);
  const store = await openSqliteStore(path, { now: () => 42 });
  // Not enrolled yet: no system takes part, and policies naming them keep no gateways.
  const empty = await loadPolicyState(store);
  expect(empty.systems).toEqual([]);
  expect(empty.gatewayAccessPolicies.every((p) => p.gateways.length === 0)).toBe(true);
  const keys = ["G982V", "M5T3K", "Q8QW8", "Y7299"].map((_, i) => Buffer.alloc(32, i + 1).toString("base64"));
  await store.transaction(async (tx) => {
    for (const [i, s] of (await tx.listSystems()).entries()) await tx.putSystem({ ...s, publicKey: keys[i]!, approved: true });
  });
  const state = await loadPolicyState(store);
  expect(state.systems.map((s) => s.id)).toEqual(["G982V", "M5T3K", "Q8QW8", "Y7299"]);
  expect(state.gatewayAccessPolicies.length).toBeGreaterThan(0);
  expect(state.gatewayAccessPolicies.every((p) => p.gateways.every((g) => g.subnets.length > 0))).toBe(true);
  expect(dumpDatabase(new Database(path, { readonly: true }))).toContain("== enrolment_keys");
  store.close();
});
