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
import type { Acl, SubnetFilterEntry, TimeWindow, TrustRequirements } from "../policy/model.ts";
import type {
  AgentInfo,
  AuditInput,
  AuditRecord,
  Change,
  ConsumeResult,
  DirectAccessPolicyInput,
  DirectAccessPolicyRecord,
  EnrolmentKeyInput,
  EnrolmentKeyRecord,
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

const optText = (x: unknown): string | null => (x === null || x === undefined ? null : String(x));
const optNum = (x: unknown): number | null => (x === null || x === undefined ? null : Number(x));

/** Key order fixed so stored and wanted values compare as JSON. */
function canonicalFilter(f: SubnetFilterEntry): SubnetFilterEntry {
  return f.ports === undefined ? { destination: f.destination, protocol: f.protocol } : { destination: f.destination, protocol: f.protocol, ports: f.ports };
}

function canonicalAcl(a: Acl): Acl {
  return a.ports === undefined ? { protocol: a.protocol } : { protocol: a.protocol, ports: a.ports };
}

function canonicalTrust(t: TrustRequirements | null | undefined): TrustRequirements | null {
  if (t === null || t === undefined) return null;
  const ips = t.publicIpWithin === undefined ? [] : sortedUnique(t.publicIpWithin);
  const windows = (t.timeWindows ?? []).map((w) => ({ days: [...w.days], start: w.start, end: w.end, utcOffsetMinutes: w.utcOffsetMinutes }));
  if (ips.length === 0 && windows.length === 0) return null;
  return { ...(ips.length > 0 ? { publicIpWithin: ips } : {}), ...(windows.length > 0 ? { timeWindows: windows } : {}) };
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

/** Tables whose values are secrets (the server's private key): dumped as names only. */
const REDACTED_TABLES = new Set(["server_settings"]);

/** Every row of every table, ordered by all columns, as text; secret values redacted. */
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
      const shown = REDACTED_TABLES.has(name) ? row.map((v, i) => (cols[i] === "value" ? "(redacted)" : v)) : row;
      out += JSON.stringify(shown, (_k, v) => (typeof v === "bigint" ? v.toString() : v)) + "\n";
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
  /** 0002_control_plane applied (a read-only open of an older file may lack it). */
  readonly #hasControlPlane: boolean;

  constructor(
    db: Database,
    readonly location: string,
    readonly readonly: boolean,
    now: Clock,
  ) {
    this.#db = db;
    this.#now = now;
    this.#hasSchema = db.query("SELECT 1 FROM sqlite_master WHERE name = 'systems'").get() !== null;
    this.#hasControlPlane = db.query("SELECT 1 FROM sqlite_master WHERE name = 'server_settings'").get() !== null;
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

  #id(table: "systems" | "tags" | "gateway_access_policies" | "direct_access_policies" | "enrolment_keys", column: string, key: string, what: string): number {
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
      endpoint: optText(r.endpoint),
      publicIp: optText(r.public_ip),
      listenPort: optNum(r.listen_port),
      lastSeen: optNum(r.last_seen),
      agentVersion: optText(r.agent_version),
      os: optText(r.os),
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
    };
  }

  async getSystemByPublicKey(publicKey: string): Promise<SystemRecord | null> {
    const r = this.#get("SELECT * FROM systems WHERE public_key = ?", publicKey);
    return r === null ? null : this.#system(r);
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
      priority: r.priority === undefined ? 100 : Number(r.priority),
      draining: bool(r.draining),
      discovered: r.discovered === undefined ? r.source === "discovered" : bool(r.discovered),
      healthy: r.healthy === undefined ? true : bool(r.healthy),
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
    let subnetFilter: SubnetFilterEntry[] | null = null;
    let trust: TrustRequirements | null = null;
    if (this.#hasControlPlane) {
      const filters = this.#all("SELECT * FROM gateway_access_policy_filters WHERE policy_id = ? ORDER BY position", id).map(
        (f): SubnetFilterEntry =>
          f.ports === null
            ? { destination: String(f.destination), protocol: f.protocol as SubnetFilterEntry["protocol"] }
            : { destination: String(f.destination), protocol: f.protocol as SubnetFilterEntry["protocol"], ports: String(f.ports) },
      );
      if (filters.length > 0) subnetFilter = filters;
      const ips = this.#all("SELECT prefix FROM gateway_access_policy_trust_ips WHERE policy_id = ? ORDER BY prefix", id).map((x) => String(x.prefix));
      const windows = this.#all("SELECT * FROM gateway_access_policy_time_windows WHERE policy_id = ? ORDER BY position", id).map(
        (w): TimeWindow => ({
          days: String(w.days).split(",") as TimeWindow["days"],
          start: String(w.start_time),
          end: String(w.end_time),
          utcOffsetMinutes: Number(w.utc_offset_minutes),
        }),
      );
      if (ips.length > 0 || windows.length > 0) {
        trust = {
          ...(ips.length > 0 ? { publicIpWithin: ips } : {}),
          ...(windows.length > 0 ? { timeWindows: windows } : {}),
        };
      }
    }
    return {
      name: String(r.name),
      description: String(r.description),
      enabled: bool(r.enabled),
      source: r.source as RowSource,
      senderTags,
      gateways,
      action: r.action === "deny" ? "deny" : "allow",
      subnetFilter,
      trust,
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

  async listAudit(options: { afterId?: number; limit?: number } = {}): Promise<AuditRecord[]> {
    const limit = options.limit ?? -1;
    return this.#all("SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?", options.afterId ?? 0, limit).map((r) => ({
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
    const cp = this.#hasControlPlane;
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
      if (cp && (input.priority !== undefined || input.draining !== undefined)) {
        this.#run(
          "UPDATE gateway_subnets SET priority = ?, draining = ? WHERE system_id = ? AND prefix = ?",
          input.priority ?? 100,
          int(input.draining ?? false),
          systemId,
          input.prefix,
        );
      }
      return "created";
    }
    const priority = input.priority ?? (cp ? Number(existing.priority) : 100);
    const draining = input.draining ?? (cp ? bool(existing.draining) : false);
    if (
      bool(existing.nat) === input.nat &&
      (existing.nat_address ?? null) === input.natAddress &&
      existing.source === input.source &&
      (!cp || (Number(existing.priority) === priority && bool(existing.draining) === draining))
    ) {
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
    if (cp) this.#run("UPDATE gateway_subnets SET priority = ?, draining = ? WHERE id = ?", priority, int(draining), Number(existing.id));
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
    const action = input.action ?? "allow";
    const subnetFilter = input.subnetFilter === undefined || input.subnetFilter === null || input.subnetFilter.length === 0 ? null : input.subnetFilter.map(canonicalFilter);
    const trust = canonicalTrust(input.trust);
    if (!this.#hasControlPlane && (action !== "allow" || subnetFilter !== null || trust !== null)) {
      throw new StoreError(this.location, "actions, subnet filters and trust requirements need schema migration 0002_control_plane");
    }
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
        existing.action === action &&
        JSON.stringify([existing.subnetFilter, existing.trust]) === JSON.stringify([subnetFilter, trust]) &&
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
      if (this.#hasControlPlane) {
        this.#run("DELETE FROM gateway_access_policy_filters WHERE policy_id = ?", policyId);
        this.#run("DELETE FROM gateway_access_policy_trust_ips WHERE policy_id = ?", policyId);
        this.#run("DELETE FROM gateway_access_policy_time_windows WHERE policy_id = ?", policyId);
      }
      change = "updated";
    }
    if (this.#hasControlPlane) {
      this.#run("UPDATE gateway_access_policies SET action = ? WHERE id = ?", action, policyId);
      (subnetFilter ?? []).forEach((f, i) => {
        this.#run(
          "INSERT INTO gateway_access_policy_filters (policy_id, position, destination, protocol, ports) VALUES (?, ?, ?, ?, ?)",
          policyId,
          i,
          f.destination,
          f.protocol,
          f.ports ?? null,
        );
      });
      for (const prefix of trust?.publicIpWithin ?? []) {
        this.#run("INSERT INTO gateway_access_policy_trust_ips (policy_id, prefix) VALUES (?, ?)", policyId, prefix);
      }
      (trust?.timeWindows ?? []).forEach((w, i) => {
        this.#run(
          `INSERT INTO gateway_access_policy_time_windows (policy_id, position, days, start_time, end_time, utc_offset_minutes)
           VALUES (?, ?, ?, ?, ?, ?)`,
          policyId,
          i,
          w.days.join(","),
          w.start,
          w.end,
          w.utcOffsetMinutes,
        );
      });
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

  // ---- control plane (0002) ----

  #requireControlPlane(): void {
    if (!this.#hasControlPlane) throw new StoreError(this.location, "the database lacks schema migration 0002_control_plane");
  }

  #direct(r: Row): DirectAccessPolicyRecord {
    const id = Number(r.id);
    const tags = this.#all(
      "SELECT p.side, t.name FROM direct_access_policy_tags p JOIN tags t ON t.id = p.tag_id WHERE p.policy_id = ? ORDER BY t.name",
      id,
    );
    const acls = this.#all("SELECT protocol, ports FROM direct_access_policy_acls WHERE policy_id = ? ORDER BY position", id).map(
      (a): Acl => (a.ports === null ? { protocol: a.protocol as Acl["protocol"] } : { protocol: a.protocol as Acl["protocol"], ports: String(a.ports) }),
    );
    return {
      name: String(r.name),
      description: String(r.description),
      enabled: bool(r.enabled),
      action: r.action === "deny" ? "deny" : "allow",
      source: r.source as RowSource,
      fromTags: tags.filter((t) => t.side === "from").map((t) => String(t.name)),
      toTags: tags.filter((t) => t.side === "to").map((t) => String(t.name)),
      acls,
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
    };
  }

  async getDirectAccessPolicy(name: string): Promise<DirectAccessPolicyRecord | null> {
    if (!this.#hasControlPlane) return null;
    const r = this.#get("SELECT * FROM direct_access_policies WHERE name = ?", name);
    return r === null ? null : this.#direct(r);
  }

  async listDirectAccessPolicies(): Promise<DirectAccessPolicyRecord[]> {
    if (!this.#hasControlPlane) return [];
    return this.#all("SELECT * FROM direct_access_policies ORDER BY name").map((r) => this.#direct(r));
  }

  #enrolmentKey(r: Row): EnrolmentKeyRecord {
    const tags = this.#all(
      "SELECT t.name FROM enrolment_key_tags k JOIN tags t ON t.id = k.tag_id WHERE k.key_id = ? ORDER BY t.name",
      Number(r.id),
    ).map((t) => String(t.name));
    return {
      keyId: String(r.key_id),
      description: String(r.description),
      maxUses: optNum(r.max_uses),
      uses: Number(r.uses),
      expiresAt: optNum(r.expires_at),
      autoApprove: bool(r.auto_approve),
      tags,
      systemIdentity: optText(r.system_identity),
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
    };
  }

  async getEnrolmentKey(keyId: string): Promise<EnrolmentKeyRecord | null> {
    if (!this.#hasControlPlane) return null;
    const r = this.#get("SELECT * FROM enrolment_keys WHERE key_id = ?", keyId);
    return r === null ? null : this.#enrolmentKey(r);
  }

  async listEnrolmentKeys(): Promise<EnrolmentKeyRecord[]> {
    if (!this.#hasControlPlane) return [];
    return this.#all("SELECT * FROM enrolment_keys ORDER BY key_id").map((r) => this.#enrolmentKey(r));
  }

  async getSetting(name: string): Promise<string | null> {
    if (!this.#hasControlPlane) return null;
    const r = this.#get("SELECT value FROM server_settings WHERE name = ?", name);
    return r === null ? null : String(r.value);
  }

  async removeSystem(identity: string): Promise<boolean> {
    this.#assertWritable();
    return this.#run("DELETE FROM systems WHERE identity = ?", identity) > 0;
  }

  async setSystemTags(identity: string, tags: readonly string[]): Promise<Change> {
    this.#assertWritable();
    const systemId = this.#id("systems", "identity", identity, "system");
    const want = sortedUnique(tags);
    const have = await this.listSystemTags(identity);
    if (JSON.stringify(have) === JSON.stringify(want)) return "unchanged";
    const tagIds = want.map((t) => this.#id("tags", "name", t, "tag"));
    this.#run("DELETE FROM system_tags WHERE system_id = ?", systemId);
    for (const tagId of tagIds) this.#run("INSERT INTO system_tags (system_id, tag_id) VALUES (?, ?)", systemId, tagId);
    this.#run("UPDATE systems SET updated_at = ? WHERE id = ?", this.#now(), systemId);
    return "updated";
  }

  async removeTag(name: string): Promise<boolean> {
    this.#assertWritable();
    return this.#run("DELETE FROM tags WHERE name = ?", name) > 0;
  }

  async removeGatewaySubnet(gateway: string, prefix: string): Promise<boolean> {
    this.#assertWritable();
    const systemId = this.#id("systems", "identity", gateway, "gateway system");
    return this.#run("DELETE FROM gateway_subnets WHERE system_id = ? AND prefix = ?", systemId, prefix) > 0;
  }

  async removeGatewayAccessPolicy(name: string): Promise<boolean> {
    this.#assertWritable();
    return this.#run("DELETE FROM gateway_access_policies WHERE name = ?", name) > 0;
  }

  async putDirectAccessPolicy(input: DirectAccessPolicyInput): Promise<Change> {
    this.#assertWritable();
    this.#requireControlPlane();
    const fromTags = sortedUnique(input.fromTags);
    const toTags = sortedUnique(input.toTags);
    const acls = input.acls.map(canonicalAcl);
    const existing = await this.getDirectAccessPolicy(input.name);
    const now = this.#now();
    let policyId: number;
    let change: Change;
    if (existing === null) {
      this.#run(
        `INSERT INTO direct_access_policies (name, description, enabled, action, source, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
        input.name,
        input.description,
        int(input.enabled),
        input.action,
        input.source,
        now,
        now,
      );
      policyId = this.#id("direct_access_policies", "name", input.name, "direct access policy");
      change = "created";
    } else {
      const same =
        existing.description === input.description &&
        existing.enabled === input.enabled &&
        existing.action === input.action &&
        existing.source === input.source &&
        JSON.stringify([existing.fromTags, existing.toTags, existing.acls]) === JSON.stringify([fromTags, toTags, acls]);
      if (same) return "unchanged";
      policyId = this.#id("direct_access_policies", "name", input.name, "direct access policy");
      this.#run(
        "UPDATE direct_access_policies SET description = ?, enabled = ?, action = ?, source = ?, updated_at = ? WHERE id = ?",
        input.description,
        int(input.enabled),
        input.action,
        input.source,
        now,
        policyId,
      );
      this.#run("DELETE FROM direct_access_policy_tags WHERE policy_id = ?", policyId);
      this.#run("DELETE FROM direct_access_policy_acls WHERE policy_id = ?", policyId);
      change = "updated";
    }
    for (const [side, list] of [["from", fromTags], ["to", toTags]] as const) {
      for (const tag of list) {
        const tagId = this.#id("tags", "name", tag, `${side} tag`);
        this.#run("INSERT INTO direct_access_policy_tags (policy_id, side, tag_id) VALUES (?, ?, ?)", policyId, side, tagId);
      }
    }
    acls.forEach((a, i) => {
      this.#run("INSERT INTO direct_access_policy_acls (policy_id, position, protocol, ports) VALUES (?, ?, ?, ?)", policyId, i, a.protocol, a.ports ?? null);
    });
    return change;
  }

  async removeDirectAccessPolicy(name: string): Promise<boolean> {
    this.#assertWritable();
    this.#requireControlPlane();
    return this.#run("DELETE FROM direct_access_policies WHERE name = ?", name) > 0;
  }

  async recordAgentInfo(identity: string, info: AgentInfo): Promise<void> {
    this.#assertWritable();
    this.#requireControlPlane();
    const n = this.#run(
      "UPDATE systems SET endpoint = ?, public_ip = ?, listen_port = ?, last_seen = ?, agent_version = ?, os = ? WHERE identity = ?",
      info.endpoint,
      info.publicIp,
      info.listenPort,
      info.lastSeen,
      info.agentVersion,
      info.os,
      identity,
    );
    if (n === 0) throw new StoreError(this.location, `system ${identity} does not exist`);
  }

  async syncDiscoveredSubnets(gateway: string, prefixes: readonly string[], unhealthy: readonly string[]): Promise<Change> {
    this.#assertWritable();
    this.#requireControlPlane();
    const systemId = this.#id("systems", "identity", gateway, "gateway system");
    const want = new Set(prefixes);
    const sick = new Set(unhealthy);
    const rows = this.#all("SELECT id, prefix, source, discovered, healthy FROM gateway_subnets WHERE system_id = ?", systemId);
    const now = this.#now();
    let changed = false;
    for (const r of rows) {
      const prefix = String(r.prefix);
      const listed = want.has(prefix);
      if (!listed && r.source === "discovered") {
        this.#run("DELETE FROM gateway_subnets WHERE id = ?", Number(r.id));
        changed = true;
        continue;
      }
      const healthy = !sick.has(prefix);
      if (bool(r.discovered) !== listed || bool(r.healthy) !== healthy) {
        this.#run("UPDATE gateway_subnets SET discovered = ?, healthy = ?, updated_at = ? WHERE id = ?", int(listed), int(healthy), now, Number(r.id));
        changed = true;
      }
      want.delete(prefix);
    }
    for (const prefix of [...want].sort()) {
      this.#run(
        `INSERT INTO gateway_subnets (system_id, prefix, nat, nat_address, source, discovered, healthy, created_at, updated_at)
         VALUES (?, ?, 1, NULL, 'discovered', 1, ?, ?, ?)`,
        systemId,
        prefix,
        int(!sick.has(prefix)),
        now,
        now,
      );
      changed = true;
    }
    return changed ? "updated" : "unchanged";
  }

  async createEnrolmentKey(input: EnrolmentKeyInput): Promise<void> {
    this.#assertWritable();
    this.#requireControlPlane();
    const now = this.#now();
    this.#run(
      `INSERT INTO enrolment_keys (key_id, secret_hash, description, max_uses, uses, expires_at, auto_approve, system_identity,
         created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?)`,
      input.keyId,
      input.secretHash,
      input.description,
      input.maxUses,
      input.expiresAt,
      int(input.autoApprove),
      input.systemIdentity,
      now,
      now,
    );
    const id = this.#id("enrolment_keys", "key_id", input.keyId, "enrolment key");
    for (const tag of sortedUnique(input.tags)) {
      this.#run("INSERT INTO enrolment_key_tags (key_id, tag_id) VALUES (?, ?)", id, this.#id("tags", "name", tag, "tag"));
    }
  }

  async removeEnrolmentKey(keyId: string): Promise<boolean> {
    this.#assertWritable();
    this.#requireControlPlane();
    return this.#run("DELETE FROM enrolment_keys WHERE key_id = ?", keyId) > 0;
  }

  async consumeEnrolmentKey(secretHash: string, now: number): Promise<ConsumeResult> {
    this.#assertWritable();
    this.#requireControlPlane();
    const row = this.#get("SELECT * FROM enrolment_keys WHERE secret_hash = ?", secretHash);
    if (row === null) return { ok: false, reason: "unknown" };
    if (row.expires_at !== null && Number(row.expires_at) <= now) return { ok: false, reason: "expired" };
    // The guard is in the UPDATE itself: even a second writer on this file cannot overspend.
    const n = this.#run(
      "UPDATE enrolment_keys SET uses = uses + 1, updated_at = ? WHERE id = ? AND (max_uses IS NULL OR uses < max_uses)",
      this.#now(),
      Number(row.id),
    );
    if (n === 0) return { ok: false, reason: "used-up" };
    return { ok: true, key: this.#enrolmentKey(this.#get("SELECT * FROM enrolment_keys WHERE id = ?", Number(row.id))!) };
  }

  async putSetting(name: string, value: string): Promise<void> {
    this.#assertWritable();
    this.#requireControlPlane();
    this.#run(
      "INSERT INTO server_settings (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
      name,
      value,
      this.#now(),
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
