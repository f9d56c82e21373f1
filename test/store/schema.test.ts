/**
 * @module test/store/schema.test
 * The migrations list against the canonical schema (core/store/schema.sql, byte for byte), the
 * schema_migrations record, upgrades of an older database (including the committed 0001 fixture,
 * test/fixtures/db/0001.sqlite, made by migrate-profile --apply on fleet-clean), and refusal of a
 * newer one.
 */
import { Database } from "bun:sqlite";
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { recordingLogger } from "../../core/log.ts";
import { MIGRATIONS, type Migration } from "../../core/store/migrations.ts";
import { openSqliteStore, runMigrations, schemaText } from "../../core/store/sqlite.ts";
import { ROOT, removeTemps, tempDir } from "../profile/helpers/fixtures.ts";

afterAll(removeTemps);

const canonical = readFileSync(join(ROOT, "core", "store", "schema.sql"), "utf8")
  .split("\n")
  .filter((l, i, all) => !(l.startsWith("--") && all.slice(0, i).every((x) => x.startsWith("--"))))
  .join("\n")
  .replace(/^\n/, "");

describe("schema", () => {
  test("migrating an empty database gives exactly core/store/schema.sql", () => {
    const db = new Database(":memory:");
    runMigrations(db, ":memory:", MIGRATIONS, () => 0);
    const actual = schemaText(db);
    if (actual !== canonical) {
      // The message carries the new text: paste it into core/store/schema.sql after review.
      expect(actual).toBe(canonical);
    }
    expect(actual).toBe(canonical);
  });

  test("the schema has the policy-store and control-plane tables", () => {
    const tables = [...canonical.matchAll(/^CREATE TABLE (\w+)/gm)].map((m) => m[1]);
    expect(tables).toEqual([
      "audit_log",
      "direct_access_policies",
      "direct_access_policy_acls",
      "direct_access_policy_tags",
      "enrolment_key_tags",
      "enrolment_keys",
      "gateway_access_policies",
      "gateway_access_policy_filters",
      "gateway_access_policy_gateways",
      "gateway_access_policy_sender_tags",
      "gateway_access_policy_subnets",
      "gateway_access_policy_time_windows",
      "gateway_access_policy_trust_ips",
      "gateway_subnets",
      "schema_migrations",
      "server_settings",
      "system_tags",
      "systems",
      "tags",
    ]);
  });

  test("migration ids are ordered, unique and never reuse a step list", () => {
    const ids = MIGRATIONS.map((m) => m.id);
    expect(ids).toEqual([...ids].sort());
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toMatch(/^\d{4}_[a-z0-9_]+$/);
    expect(ids.slice(0, 2)).toEqual(["0001_initial", "0002_control_plane"]);
  });

  test("open records each migration once with the injected clock, WAL and foreign keys on", async () => {
    const path = join(tempDir("waygate-store-"), "w.db");
    const logger = recordingLogger();
    const store = await openSqliteStore(path, { now: () => 1234, logger });
    expect(await store.appliedMigrations()).toEqual(["0001_initial", "0002_control_plane"]);
    store.close();
    const again = await openSqliteStore(path, { now: () => 9999, logger });
    again.close();
    expect(logger.lines.map((l) => l.message)).toEqual([
      `store: migration=0001_initial applied location=${path}`,
      `store: migration=0002_control_plane applied location=${path}`,
    ]);
    const db = new Database(path);
    expect(db.query("SELECT id, applied_at FROM schema_migrations ORDER BY id").all()).toEqual([
      { id: "0001_initial", applied_at: 1234 },
      { id: "0002_control_plane", applied_at: 1234 },
    ]);
    expect(db.query("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    db.close();
  });

  test("an older database is upgraded by the migrations it lacks, in order", async () => {
    const path = join(tempDir("waygate-store-"), "old.db");
    (await openSqliteStore(path, { now: () => 1 })).close();
    const next: Migration = { id: "0099_test_column", up: ["ALTER TABLE systems ADD COLUMN test_column TEXT"] };
    const store = await openSqliteStore(path, { now: () => 2, migrations: [...MIGRATIONS, next] });
    expect(await store.appliedMigrations()).toEqual([...MIGRATIONS.map((m) => m.id), "0099_test_column"]);
    store.close();
    const db = new Database(path);
    expect(db.query("SELECT applied_at FROM schema_migrations ORDER BY id").all()).toEqual([...MIGRATIONS.map(() => ({ applied_at: 1 })), { applied_at: 2 }]);
    expect((db.query("SELECT sql FROM sqlite_master WHERE name = 'systems'").get() as { sql: string }).sql).toContain("test_column TEXT");
    db.close();
  });

  test("a failing migration leaves no trace and is E_STORE", async () => {
    const path = join(tempDir("waygate-store-"), "bad.db");
    const broken: Migration = { id: "0099_broken", up: ["CREATE TABLE half (x)", "THIS IS NOT SQL"] };
    let err: (Error & { code?: string }) | null = null;
    try {
      await openSqliteStore(path, { now: () => 1, migrations: [...MIGRATIONS, broken] });
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err?.code).toBe("E_STORE");
    expect(err?.message).toStartWith(`${path}: schema migration 0099_broken failed: `);
    const db = new Database(path);
    expect(db.query("SELECT name FROM sqlite_master WHERE name = 'half'").all()).toEqual([]);
    expect(db.query("SELECT id FROM schema_migrations ORDER BY id").all()).toEqual(MIGRATIONS.map((m) => ({ id: m.id })));
    db.close();
  });

  test("a database from a newer Waygate is refused, read-write and read-only", async () => {
    const path = join(tempDir("waygate-store-"), "new.db");
    (await openSqliteStore(path, { now: () => 1, migrations: [...MIGRATIONS, { id: "0099_future", up: [] }] })).close();
    for (const readonly of [false, true]) {
      let message = "";
      try {
        await openSqliteStore(path, { now: () => 1, readonly });
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message).toBe(`${path}: the database has schema migration 0099_future, which this Waygate does not know (was it written by a newer version?)`);
    }
  });
});
