/**
 * @module core/store/sqlite
 * The embedded Store over bun:sqlite: WAL, foreign keys on, synchronous=FULL (policy writes are
 * rare and must survive a power cut), migrations applied on open. The file is created 0600 in a
 * 0700 directory; SQLite gives its -wal and -shm files the same mode.
 *
 * A transaction is BEGIN IMMEDIATE ... COMMIT around an async callback, serialised per store
 * so two callers never interleave on the one connection. A process killed before COMMIT leaves
 * the database as it was: SQLite discards uncommitted WAL frames on the next open.
 */
import { Database, type SQLQueryBindings } from "bun:sqlite";
import { closeSync, existsSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import type { Logger } from "../log.ts";
import type { Clock } from "../runner.ts";
import { StoreError } from "./errors.ts";
import { MIGRATIONS, SCHEMA_MIGRATIONS_DDL, type Migration } from "./migrations.ts";
import type {
  AuditInput,
  AuditRecord,
  Change,
  GatewayAccessPolicyInput,
  GatewayAccessPolicyRecord,
  GatewaySubnetInput,
  GatewaySubnetRecord,
  RowSource,
  Store,
  StoreWriter,
  SystemInput,
  SystemRecord,
  TagInput,
  TagRecord,
} from "./store.ts";

export interface SqliteStoreOptions {
  readonly now: Clock;
  readonly logger?: Logger;
  /** Open without writing anything: no file created, no migration run. */
  readonly readonly?: boolean;
  /** The migrations to run (tests pass a longer list to exercise upgrades). */
  readonly migrations?: readonly Migration[];
}

type Row = Record<string, unknown>;

const bool = (x: unknown) => x === 1 || x === 1n || x === true;
const int = (b: boolean) => (b ? 1 : 0);

function sortedUnique(xs: readonly string[]): string[] {
  return [...new Set(xs)].sort();
}

/** Runs the migrations not yet applied, each in its own transaction. */
export function runMigrations(db: Database, location: string, migrations: readonly Migration[], now: Clock, logger?: Logger): string[] {
  db.run(SCHEMA_MIGRATIONS_DDL);
  const ran: string[] = [];
  for (let i = 0; i < migrations.length; i++) {
    const m = migrations[i]!;
    db.run("BEGIN IMMEDIATE");
    try {
      // Checked inside the write lock: another process may have migrated meanwhile.
      const applied = (db.query("SELECT id FROM schema_migrations ORDER BY id").all() as { id: string }[]).map((r) => r.id);
      const unknown = applied.find((id) => !migrations.some((k) => k.id === id));
      if (unknown !== undefined) {
        throw new StoreError(location, `the database has schema migration ${unknown}, which this Waygate does not know (was it written by a newer version?)`);
      }
      if (applied.includes(m.id)) {
        db.run("COMMIT");
        continue;
      }
      const later = applied.find((id) => migrations.findIndex((k) => k.id === id) > i);
      if (later !== undefined) throw new StoreError(location, `schema migration ${m.id} is missing but the later ${later} is applied`);
      for (const step of m.up) db.run(step);
      db.query("INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)").run(m.id, now());
      db.run("COMMIT");
      ran.push(m.id);
      logger?.info(`store: migration=${m.id} applied location=${location}`);
    } catch (err) {
      try {
        db.run("ROLLBACK");
      } catch {
        // already rolled back
      }
      if (err instanceof StoreError) throw err;
      throw new StoreError(location, `schema migration ${m.id} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }
  return ran;
}

/** The schema as canonical text: every CREATE statement SQLite keeps, ordered by name. */
export function schemaText(db: Database): string {
  const rows = db
    .query("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .all() as { name: string; sql: string }[];
  return rows.map((r) => `${r.sql};\n`).join("\n");
}

/** Every row of every table, ordered by all columns, as text. */
export function dumpDatabase(db: Database): string {
  const tables = db
    .query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .all() as { name: string }[];
  let out = "";
  for (const { name } of tables) {
    const cols = (db.query(`SELECT name FROM pragma_table_info(?) ORDER BY cid`).all(name) as { name: string }[]).map((c) => c.name);
    out += `== ${name} (${cols.join(", ")}) ==\n`;
    const order = cols.map((_, i) => String(i + 1)).join(", ");
    for (const row of db.query(`SELECT * FROM "${name}" ORDER BY ${order}`).values()) {
      out += JSON.stringify(row, (_k, v) => (typeof v === "bigint" ? v.toString() : v)) + "\n";
    }
  }
  return out;
}

class SqliteStore implements Store {
  readonly #db: Database;
  readonly #now: Clock;
  #queue: Promise<unknown> = Promise.resolve();
  #inTransaction = false;
  #closed = false;
  readonly #hasSchema: boolean;

  constructor(
    db: Database,
    readonly location: string,
    readonly readonly: boolean,
    now: Clock,
  ) {
    this.#db = db;
    this.#now = now;
    this.#hasSchema = db.query("SELECT 1 FROM sqlite_master WHERE name = 'systems'").get() !== null;
  }

  #fail(what: string, err: unknown): never {
    if (err instanceof StoreError) throw err;
    throw new StoreError(this.location, `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }

  #all(sql: string, ...params: SQLQueryBindings[]): Row[] {
    if (!this.#hasSchema) return [];
    try {
      return this.#db.query(sql).all(...params) as Row[];
    } catch (err) {
      this.#fail("query failed", err);
    }
  }

  #get(sql: string, ...params: SQLQueryBindings[]): Row | null {
    return this.#all(sql, ...params)[0] ?? null;
  }

  #run(sql: string, ...params: SQLQueryBindings[]): number {
    try {
      return this.#db.query(sql).run(...params).changes;
    } catch (err) {
      this.#fail("write failed", err);
    }
  }

  #id(table: "systems" | "tags" | "gateway_access_policies", column: string, key: string, what: string): number {
    const row = this.#get(`SELECT id FROM ${table} WHERE ${column} = ?`, key);
    if (row === null) throw new StoreError(this.location, `${what} ${key} does not exist`);
    return Number(row.id);
  }

  async appliedMigrations(): Promise<string[]> {
    const exists = this.#db.query("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").get();
    if (exists === null) return [];
    return (this.#db.query("SELECT id FROM schema_migrations ORDER BY id").all() as { id: string }[]).map((r) => r.id);
  }

  // ---- reads ----

  #system(r: Row): SystemRecord {
    return {
      identity: String(r.identity),
      name: String(r.name),
      description: String(r.description),
      publicKey: r.public_key === null ? null : String(r.public_key),
      virtualAddress: r.virtual_address === null ? null : String(r.virtual_address),
      approved: bool(r.approved),
      enabled: bool(r.enabled),
      allowedAsGateway: bool(r.allowed_as_gateway),
      source: r.source as RowSource,
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
    };
  }

  async getSystem(identity: string): Promise<SystemRecord | null> {
    const r = this.#get("SELECT * FROM systems WHERE identity = ?", identity);
    return r === null ? null : this.#system(r);
  }

  async listSystems(): Promise<SystemRecord[]> {
    return this.#all("SELECT * FROM systems ORDER BY identity").map((r) => this.#system(r));
  }

  #tag(r: Row): TagRecord {
    return {
      name: String(r.name),
      description: String(r.description),
      source: r.source as RowSource,
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
    };
  }

  async getTag(name: string): Promise<TagRecord | null> {
    const r = this.#get("SELECT * FROM tags WHERE name = ?", name);
    return r === null ? null : this.#tag(r);
  }

  async listTags(): Promise<TagRecord[]> {
    return this.#all("SELECT * FROM tags ORDER BY name").map((r) => this.#tag(r));
  }

  async listSystemTags(identity: string): Promise<string[]> {
    return this.#all(
      `SELECT t.name FROM system_tags st JOIN systems s ON s.id = st.system_id JOIN tags t ON t.id = st.tag_id
       WHERE s.identity = ? ORDER BY t.name`,
      identity,
    ).map((r) => String(r.name));
  }

  async listGatewaySubnets(gateway?: string): Promise<GatewaySubnetRecord[]> {
    const sql = `SELECT s.identity, g.* FROM gateway_subnets g JOIN systems s ON s.id = g.system_id
      ${gateway === undefined ? "" : "WHERE s.identity = ?"} ORDER BY s.identity, g.prefix`;
    const rows = gateway === undefined ? this.#all(sql) : this.#all(sql, gateway);
    return rows.map((r) => ({
      gateway: String(r.identity),
      prefix: String(r.prefix),
      nat: bool(r.nat),
      natAddress: r.nat_address === null ? null : String(r.nat_address),
      source: r.source as RowSource,
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
    }));
  }

  #policy(r: Row): GatewayAccessPolicyRecord {
    const id = Number(r.id);
    const senderTags = this.#all(
      "SELECT t.name FROM gateway_access_policy_sender_tags p JOIN tags t ON t.id = p.tag_id WHERE p.policy_id = ? ORDER BY t.name",
      id,
    ).map((x) => String(x.name));
    const gateways = this.#all(
      "SELECT s.id, s.identity FROM gateway_access_policy_gateways p JOIN systems s ON s.id = p.system_id WHERE p.policy_id = ? ORDER BY s.identity",
      id,
    ).map((g) => ({
      gateway: String(g.identity),
      subnets: this.#all(
        "SELECT prefix FROM gateway_access_policy_subnets WHERE policy_id = ? AND system_id = ? ORDER BY prefix",
        id,
        Number(g.id),
      ).map((x) => String(x.prefix)),
    }));
    return {
      name: String(r.name),
      description: String(r.description),
      enabled: bool(r.enabled),
      source: r.source as RowSource,
      senderTags,
      gateways,
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
    };
  }

  async getGatewayAccessPolicy(name: string): Promise<GatewayAccessPolicyRecord | null> {
    const r = this.#get("SELECT * FROM gateway_access_policies WHERE name = ?", name);
    return r === null ? null : this.#policy(r);
  }

  async listGatewayAccessPolicies(): Promise<GatewayAccessPolicyRecord[]> {
    return this.#all("SELECT * FROM gateway_access_policies ORDER BY name").map((r) => this.#policy(r));
  }

  async listAudit(): Promise<AuditRecord[]> {
    return this.#all("SELECT * FROM audit_log ORDER BY id").map((r) => ({
      id: Number(r.id),
      at: Number(r.at),
      actor: String(r.actor),
      action: String(r.action),
      subject: String(r.subject),
      detail: JSON.parse(String(r.detail)) as Record<string, unknown>,
    }));
  }

  // ---- writes (only inside transaction) ----

  #assertWritable(): void {
    if (!this.#inTransaction) throw new StoreError(this.location, "write outside a transaction");
  }

  async putSystem(input: SystemInput): Promise<Change> {
    this.#assertWritable();
    const existing = await this.getSystem(input.identity);
    const now = this.#now();
    if (existing === null) {
      this.#run(
        `INSERT INTO systems (identity, name, description, public_key, virtual_address, approved, enabled,
           allowed_as_gateway, source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        input.identity,
        input.name,
        input.description,
        input.publicKey,
        input.virtualAddress,
        int(input.approved),
        int(input.enabled),
        int(input.allowedAsGateway),
        input.source,
        now,
        now,
      );
      return "created";
    }
    const same =
      existing.name === input.name &&
      existing.description === input.description &&
      existing.publicKey === input.publicKey &&
      existing.virtualAddress === input.virtualAddress &&
      existing.approved === input.approved &&
      existing.enabled === input.enabled &&
      existing.allowedAsGateway === input.allowedAsGateway &&
      existing.source === input.source;
    if (same) return "unchanged";
    this.#run(
      `UPDATE systems SET name = ?, description = ?, public_key = ?, virtual_address = ?, approved = ?, enabled = ?,
         allowed_as_gateway = ?, source = ?, updated_at = ? WHERE identity = ?`,
      input.name,
      input.description,
      input.publicKey,
      input.virtualAddress,
      int(input.approved),
      int(input.enabled),
      int(input.allowedAsGateway),
      input.source,
      now,
      input.identity,
    );
    return "updated";
  }

  async putTag(input: TagInput): Promise<Change> {
    this.#assertWritable();
    const existing = await this.getTag(input.name);
    const now = this.#now();
    if (existing === null) {
      this.#run(
        "INSERT INTO tags (name, description, source, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        input.name,
        input.description,
        input.source,
        now,
        now,
      );
      return "created";
    }
    if (existing.description === input.description && existing.source === input.source) return "unchanged";
    this.#run("UPDATE tags SET description = ?, source = ?, updated_at = ? WHERE name = ?", input.description, input.source, now, input.name);
    return "updated";
  }

  async addSystemTag(identity: string, tag: string): Promise<Change> {
    this.#assertWritable();
    const systemId = this.#id("systems", "identity", identity, "system");
    const tagId = this.#id("tags", "name", tag, "tag");
    const n = this.#run("INSERT OR IGNORE INTO system_tags (system_id, tag_id) VALUES (?, ?)", systemId, tagId);
    return n > 0 ? "created" : "unchanged";
  }

  async putGatewaySubnet(input: GatewaySubnetInput): Promise<Change> {
    this.#assertWritable();
    const systemId = this.#id("systems", "identity", input.gateway, "gateway system");
    const existing = this.#get("SELECT * FROM gateway_subnets WHERE system_id = ? AND prefix = ?", systemId, input.prefix);
    const now = this.#now();
    if (existing === null) {
      this.#run(
        `INSERT INTO gateway_subnets (system_id, prefix, nat, nat_address, source, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
        systemId,
        input.prefix,
        int(input.nat),
        input.natAddress,
        input.source,
        now,
        now,
      );
      return "created";
    }
    if (bool(existing.nat) === input.nat && (existing.nat_address ?? null) === input.natAddress && existing.source === input.source) {
      return "unchanged";
    }
    this.#run(
      "UPDATE gateway_subnets SET nat = ?, nat_address = ?, source = ?, updated_at = ? WHERE id = ?",
      int(input.nat),
      input.natAddress,
      input.source,
      now,
      Number(existing.id),
    );
    return "updated";
  }

  async putGatewayAccessPolicy(input: GatewayAccessPolicyInput): Promise<Change> {
    this.#assertWritable();
    const want = {
      senderTags: sortedUnique(input.senderTags),
      gateways: [...input.gateways]
        .map((g) => ({ gateway: g.gateway, subnets: sortedUnique(g.subnets) }))
        .sort((a, b) => (a.gateway < b.gateway ? -1 : a.gateway > b.gateway ? 1 : 0)),
    };
    const existing = await this.getGatewayAccessPolicy(input.name);
    const now = this.#now();
    let change: Change;
    let policyId: number;
    if (existing === null) {
      this.#run(
        `INSERT INTO gateway_access_policies (name, description, enabled, source, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
        input.name,
        input.description,
        int(input.enabled),
        input.source,
        now,
        now,
      );
      change = "created";
      policyId = this.#id("gateway_access_policies", "name", input.name, "policy");
    } else {
      const same =
        existing.description === input.description &&
        existing.enabled === input.enabled &&
        existing.source === input.source &&
        JSON.stringify({ senderTags: existing.senderTags, gateways: existing.gateways }) === JSON.stringify(want);
      if (same) return "unchanged";
      policyId = this.#id("gateway_access_policies", "name", input.name, "policy");
      this.#run(
        "UPDATE gateway_access_policies SET description = ?, enabled = ?, source = ?, updated_at = ? WHERE id = ?",
        input.description,
        int(input.enabled),
        input.source,
        now,
        policyId,
      );
      this.#run("DELETE FROM gateway_access_policy_sender_tags WHERE policy_id = ?", policyId);
      this.#run("DELETE FROM gateway_access_policy_gateways WHERE policy_id = ?", policyId); // cascades to subnets
      change = "updated";
    }
    for (const tag of want.senderTags) {
      const tagId = this.#id("tags", "name", tag, "sender tag");
      this.#run("INSERT INTO gateway_access_policy_sender_tags (policy_id, tag_id) VALUES (?, ?)", policyId, tagId);
    }
    for (const g of want.gateways) {
      const systemId = this.#id("systems", "identity", g.gateway, "gateway system");
      this.#run("INSERT INTO gateway_access_policy_gateways (policy_id, system_id) VALUES (?, ?)", policyId, systemId);
      for (const prefix of g.subnets) {
        this.#run("INSERT INTO gateway_access_policy_subnets (policy_id, system_id, prefix) VALUES (?, ?, ?)", policyId, systemId, prefix);
      }
    }
    return change;
  }

  async appendAudit(input: AuditInput): Promise<void> {
    this.#assertWritable();
    this.#run(
      "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
      this.#now(),
      input.actor,
      input.action,
      input.subject,
      JSON.stringify(input.detail),
    );
  }

  async transaction<T>(fn: (tx: StoreWriter) => Promise<T>): Promise<T> {
    if (this.readonly) throw new StoreError(this.location, "the store is open read-only");
    const run = async (): Promise<T> => {
      if (this.#closed) throw new StoreError(this.location, "the store is closed");
      this.#run("BEGIN IMMEDIATE");
      this.#inTransaction = true;
      try {
        const result = await fn(this);
        this.#run("COMMIT");
        return result;
      } catch (err) {
        try {
          this.#db.run("ROLLBACK");
        } catch {
          // SQLite already rolled back (e.g. on a constraint failure during COMMIT)
        }
        throw err;
      } finally {
        this.#inTransaction = false;
      }
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  async dump(): Promise<string> {
    return dumpDatabase(this.#db);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }
}

/**
 * Opens (and for read-write, creates and migrates) the database at `path`. Read-only on a
 * missing file throws; callers that only want to peek check for the file first.
 */
export async function openSqliteStore(path: string, options: SqliteStoreOptions): Promise<Store> {
  const readonly = options.readonly === true;
  let db: Database;
  try {
    if (readonly) {
      if (!existsSync(path)) throw new StoreError(path, "no such database");
      db = new Database(path, { readonly: true, strict: true });
    } else {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      if (!existsSync(path)) closeSync(openSync(path, "a", 0o600));
      db = new Database(path, { create: true, readwrite: true, strict: true });
    }
  } catch (err) {
    if (err instanceof StoreError) throw err;
    throw new StoreError(path, `cannot open the database: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  try {
    db.run("PRAGMA busy_timeout = 5000");
    db.run("PRAGMA foreign_keys = ON");
    if (!readonly) {
      const mode = db.query("PRAGMA journal_mode = WAL").get() as { journal_mode: string } | null;
      if (mode?.journal_mode !== "wal") options.logger?.warn(`store: journal_mode=${mode?.journal_mode} reason=wal-unavailable location=${path}`);
      db.run("PRAGMA synchronous = FULL");
      runMigrations(db, path, options.migrations ?? MIGRATIONS, options.now, options.logger);
    } else {
      const known = options.migrations ?? MIGRATIONS;
      const hasTable = db.query("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").get() !== null;
      if (hasTable) {
        const applied = (db.query("SELECT id FROM schema_migrations ORDER BY id").all() as { id: string }[]).map((r) => r.id);
        const unknown = applied.find((id) => !known.some((k) => k.id === id));
        if (unknown !== undefined) {
          throw new StoreError(path, `the database has schema migration ${unknown}, which this Waygate does not know (was it written by a newer version?)`);
        }
      }
    }
  } catch (err) {
    db.close();
    if (err instanceof StoreError) throw err;
    throw new StoreError(path, `cannot open the database: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return new SqliteStore(db, path, readonly, options.now);
}
