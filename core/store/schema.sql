-- @module core/store/schema.sql: the canonical schema after every migration in core/store/migrations.ts,
-- as SQLite keeps it (sqlite_master, ordered by name). test/store/schema.test.ts compares it byte for byte;
-- regenerate it when adding a migration, and review the diff as the schema change.

CREATE TABLE audit_log (
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  subject TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
);

CREATE INDEX audit_log_by_subject ON audit_log (subject, at);

CREATE TABLE gateway_access_policies (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
  description TEXT NOT NULL DEFAULT '',
  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
  source TEXT NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'discovered', 'migrated')),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE TABLE gateway_access_policy_gateways (
  policy_id INTEGER NOT NULL REFERENCES gateway_access_policies (id) ON DELETE CASCADE,
  system_id INTEGER NOT NULL REFERENCES systems (id) ON DELETE CASCADE,
  PRIMARY KEY (policy_id, system_id)
) WITHOUT ROWID;

CREATE INDEX gateway_access_policy_gateways_by_system ON gateway_access_policy_gateways (system_id);

CREATE TABLE gateway_access_policy_sender_tags (
  policy_id INTEGER NOT NULL REFERENCES gateway_access_policies (id) ON DELETE CASCADE,
  tag_id INTEGER NOT NULL REFERENCES tags (id) ON DELETE RESTRICT,
  PRIMARY KEY (policy_id, tag_id)
) WITHOUT ROWID;

CREATE TABLE gateway_access_policy_subnets (
  policy_id INTEGER NOT NULL,
  system_id INTEGER NOT NULL,
  prefix TEXT NOT NULL,
  PRIMARY KEY (policy_id, system_id, prefix),
  FOREIGN KEY (policy_id, system_id) REFERENCES gateway_access_policy_gateways (policy_id, system_id) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE gateway_subnets (
  id INTEGER PRIMARY KEY,
  system_id INTEGER NOT NULL REFERENCES systems (id) ON DELETE CASCADE,
  prefix TEXT NOT NULL,
  nat INTEGER NOT NULL DEFAULT 1 CHECK (nat IN (0, 1)),
  nat_address TEXT,
  source TEXT NOT NULL CHECK (source IN ('manual', 'discovered', 'migrated')),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (system_id, prefix)
);

CREATE TABLE schema_migrations (
  id TEXT PRIMARY KEY,
  applied_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE system_tags (
  system_id INTEGER NOT NULL REFERENCES systems (id) ON DELETE CASCADE,
  tag_id INTEGER NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
  PRIMARY KEY (system_id, tag_id)
) WITHOUT ROWID;

CREATE INDEX system_tags_by_tag ON system_tags (tag_id);

CREATE TABLE systems (
  id INTEGER PRIMARY KEY,
  identity TEXT NOT NULL UNIQUE CHECK (length(identity) = 5 AND identity NOT GLOB '*[^A-Z0-9]*'),
  name TEXT NOT NULL DEFAULT '',
  description TEXT NOT NULL DEFAULT '',
  public_key TEXT UNIQUE,
  virtual_address TEXT UNIQUE,
  approved INTEGER NOT NULL DEFAULT 0 CHECK (approved IN (0, 1)),
  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
  allowed_as_gateway INTEGER NOT NULL DEFAULT 0 CHECK (allowed_as_gateway IN (0, 1)),
  source TEXT NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'discovered', 'migrated')),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE TABLE tags (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
  description TEXT NOT NULL DEFAULT '',
  source TEXT NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'discovered', 'migrated')),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
