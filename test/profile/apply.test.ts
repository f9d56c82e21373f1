/**
 * @module test/profile/apply.test
 * applyPlan into a real sqlite store: the fleet becomes gateways, tags and policies; a second
 * apply changes nothing (same dump, no audit rows, other clock); admin edits survive a re-run;
 * a plan with errors writes nothing; and a process SIGKILLed at any step of the transaction
 * leaves the database exactly as it was, while an uninterrupted run gives the expected state.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { silentLogger } from "../../core/log.ts";
import { applyPlan } from "../../core/profile/apply.ts";
import { loadProfiles } from "../../core/profile/load.ts";
import { readStoreGateways } from "../../core/profile/migrate.ts";
import { parseProfile } from "../../core/profile/schema.ts";
import { stripProfile } from "../../core/profile/strip.ts";
import { planMigration, type Plan } from "../../core/profile/plan.ts";
import { openSqliteStore } from "../../core/store/sqlite.ts";
import { copyFixture, PROFILES, ROOT, removeTemps, tempDir } from "./helpers/fixtures.ts";

afterAll(removeTemps);

const NOW = 1_700_000_000_000;

async function planFor(...rel: string[]): Promise<Plan> {
  const profiles = await loadProfiles({ paths: rel.map((r) => join(PROFILES, r)) }, { logger: silentLogger });
  return planMigration({ profiles });
}

async function storeAt(path: string, now = NOW) {
  return openSqliteStore(path, { now: () => now });
}

describe("applyPlan", () => {
  test("fleet-clean: gateways with subnets, one tag and one policy per client and gateway, audited", async () => {
    const store = await storeAt(join(tempDir(), "w.db"));
    const r = await applyPlan(store, await planFor("fleet-clean"), { logger: silentLogger });
    expect(r.systems).toEqual({ created: 4, updated: 0, unchanged: 0 });
    expect(r.policies).toEqual({ created: 3, updated: 0, unchanged: 0 });
    expect(r.audited).toBe(14);
    expect((await store.listSystems()).map((s) => `${s.identity} ${s.name} gw=${s.allowedAsGateway} src=${s.source} key=${s.publicKey}`)).toEqual([
      "G982V gateway-office gw=true src=migrated key=null",
      "M5T3K build-runner gw=false src=migrated key=null",
      "Q8QW8 gateway-dc gw=true src=migrated key=null",
      "Y7299 laptop-alice gw=false src=migrated key=null",
    ]);
    expect((await store.listGatewaySubnets()).map((s) => `${s.gateway} ${s.prefix} nat=${s.nat} ${s.source}`)).toEqual([
      "G982V 172.26.0.0/20 nat=true migrated",
      "G982V 172.84.0.0/20 nat=true migrated",
      "Q8QW8 10.0.0.0/24 nat=true migrated",
    ]);
    expect(await store.listSystemTags("Y7299")).toEqual(["migrated-Y7299"]);
    expect(await store.getGatewayAccessPolicy("migrated-M5T3K-via-G982V")).toMatchObject({
      senderTags: ["migrated-M5T3K"],
      gateways: [{ gateway: "G982V", subnets: ["172.26.4.0/24", "172.84.0.0/20"] }],
      source: "migrated",
      enabled: true,
    });
    expect((await store.listAudit()).map((a) => a.action).slice(0, 5)).toEqual([
      "system.create",
      "system.create",
      "system.create",
      "system.create",
      "gateway_subnet.create",
    ]);
    store.close();
  });

  test("idempotent: a second apply (later clock) writes nothing, the dump is identical", async () => {
    const path = join(tempDir(), "w.db");
    const plan = await planFor("fleet-clean");
    const first = await storeAt(path, NOW);
    await applyPlan(first, plan, { logger: silentLogger });
    const dump = await first.dump();
    first.close();
    const second = await storeAt(path, NOW + 86_400_000);
    const r = await applyPlan(second, plan, { logger: silentLogger });
    expect([r.systems.unchanged, r.gatewaySubnets.unchanged, r.tags.unchanged, r.systemTags.unchanged, r.policies.unchanged, r.audited]).toEqual([4, 3, 2, 2, 3, 0]);
    expect(await second.dump()).toBe(dump);
    second.close();
  });

  test("re-running never undoes admin edits: names, disabled policies, admin-owned subnets, gateway rights", async () => {
    const path = join(tempDir(), "w.db");
    const store = await storeAt(path);
    await applyPlan(store, await planFor("fleet-clean"), { logger: silentLogger });
    await store.transaction(async (tx) => {
      const g = (await tx.getSystem("G982V"))!;
      await tx.putSystem({ ...g, name: "office-gw-renamed" });
      const p = (await tx.getGatewayAccessPolicy("migrated-Y7299-via-G982V"))!;
      await tx.putGatewayAccessPolicy({ ...p, enabled: false });
      await tx.putGatewaySubnet({ gateway: "Q8QW8", prefix: "10.0.0.0/24", nat: false, natAddress: null, source: "manual" });
    });
    // Later the gateway profiles are stripped: the plan no longer says they are gateways, and
    // the clients' gateways resolve from the store.
    const fleet = copyFixture("fleet-clean");
    for (const id of ["G982V", "Q8QW8"]) {
      const file = join(fleet, `${id}.profile`);
      stripProfile(parseProfile(readFileSync(file, "utf8"), file));
    }
    const profiles = await loadProfiles({ paths: [fleet] }, { logger: silentLogger });
    const plan = planMigration({ profiles, storeGateways: await readStoreGateways(store) });
    expect([plan.errors, plan.gateways.length, plan.policies.every((p) => p.gatewayFromStore)]).toEqual([0, 0, true]);
    const r = await applyPlan(store, plan, { logger: silentLogger });
    expect(r.audited).toBe(0);
    expect((await store.getSystem("Q8QW8"))!.allowedAsGateway).toBe(true);
    expect((await store.getSystem("G982V"))!.name).toBe("office-gw-renamed");
    expect((await store.getGatewayAccessPolicy("migrated-Y7299-via-G982V"))!.enabled).toBe(false);
    expect((await store.listGatewaySubnets("Q8QW8")).map((s) => [s.nat, s.source])).toEqual([[false, "manual"]]);
    store.close();
  });

  test("a new system whose VirtualAddress the store gives to another is refused, all of it rolled back", async () => {
    const store = await storeAt(join(tempDir(), "w.db"));
    await store.transaction((tx) =>
      tx.putSystem({
        identity: "Z1Z1Z", name: "", description: "", publicKey: null, virtualAddress: "100.112.9.41",
        approved: true, enabled: true, allowedAsGateway: false, source: "manual",
      }),
    );
    const before = await store.dump();
    const err = await applyPlan(store, await planFor("fleet-clean"), { logger: silentLogger }).catch((e) => e);
    expect([err.code, err.message]).toEqual([
      "E_MIGRATION_CONFLICT",
      `refusing to write: Y7299 (${join(PROFILES, "fleet-clean", "Y7299.profile")}) has VirtualAddress 100.112.9.41, which the store already gives to Z1Z1Z; nothing was written`,
    ]);
    expect(await store.dump()).toBe(before);
    store.close();
  });

  test("a plan with errors is refused before the transaction starts", async () => {
    const store = await storeAt(join(tempDir(), "w.db"));
    const before = await store.dump();
    const plan = await planFor("fleet");
    expect(plan.errors).toBe(1);
    await expect(applyPlan(store, plan, { logger: silentLogger })).rejects.toMatchObject({ code: "E_MIGRATION_CONFLICT", exitStatus: 8 });
    expect(await store.dump()).toBe(before);
    store.close();
  });

  test("SIGKILL at any step of the apply leaves the old state; an uninterrupted run gives the new one", async () => {
    const dir = tempDir();
    // The old state: the guide's gateway was migrated earlier.
    const base = join(dir, "base.db");
    const s0 = await storeAt(base);
    await applyPlan(s0, await planFor("guide/gateway"), { logger: silentLogger });
    const oldDump = await s0.dump();
    s0.close();
    // The new state, computed in-process on a copy, counting the steps of the transaction.
    const expected = join(dir, "expected.db");
    copyFileSync(base, expected);
    const s1 = await storeAt(expected);
    let steps = 0;
    await applyPlan(s1, await planFor("fleet-clean"), { logger: silentLogger, onStep: () => steps++ });
    const newDump = await s1.dump();
    s1.close();
    expect(newDump).not.toBe(oldDump);
    expect(steps).toBeGreaterThan(20);

    const helper = join(ROOT, "test", "profile", "helpers", "die-midway.ts");
    for (const killAt of [1, Math.floor(steps / 2), steps]) {
      const db = join(dir, `killed-${killAt}.db`);
      copyFileSync(base, db);
      const r = Bun.spawnSync([process.execPath, helper, "apply", String(killAt), db, join(PROFILES, "fleet-clean")], { cwd: ROOT });
      expect(r.signalCode, `kill at step ${killAt}`).toBe("SIGKILL");
      const after = await storeAt(db);
      expect(await after.dump(), `kill at step ${killAt}`).toBe(oldDump);
      after.close();
    }
    const db = join(dir, "complete.db");
    copyFileSync(base, db);
    const r = Bun.spawnSync([process.execPath, helper, "apply", "0", db, join(PROFILES, "fleet-clean")], { cwd: ROOT });
    expect(r.stdout.toString()).toBe(`completed steps=${steps}\n`);
    const done = await storeAt(db);
    expect(await done.dump()).toBe(newDump);
    done.close();
  });
});
