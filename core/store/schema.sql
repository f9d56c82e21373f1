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

CREATE TABLE direct_access_policies (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
  description TEXT NOT NULL DEFAULT '',
  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
  action TEXT NOT NULL DEFAULT 'allow' CHECK (action IN ('allow', 'deny')),
  source TEXT NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'discovered', 'migrated')),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE TABLE direct_access_policy_acls (
  policy_id INTEGER NOT NULL REFERENCES direct_access_policies (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  protocol TEXT NOT NULL CHECK (protocol IN ('any', 'tcp', 'udp', 'icmp')),
  ports TEXT,
  PRIMARY KEY (policy_id, position)
) WITHOUT ROWID;

CREATE TABLE direct_access_policy_tags (
  policy_id INTEGER NOT NULL REFERENCES direct_access_policies (id) ON DELETE CASCADE,
  side TEXT NOT NULL CHECK (side IN ('from', 'to')),
  tag_id INTEGER NOT NULL REFERENCES tags (id) ON DELETE RESTRICT,
  PRIMARY KEY (policy_id, side, tag_id)
) WITHOUT ROWID;

CREATE INDEX direct_access_policy_tags_by_tag ON direct_access_policy_tags (tag_id);

CREATE TABLE enrolment_key_tags (
  key_id INTEGER NOT NULL REFERENCES enrolment_keys (id) ON DELETE CASCADE,
  tag_id INTEGER NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
  PRIMARY KEY (key_id, tag_id)
) WITHOUT ROWID;

CREATE TABLE enrolment_keys (
  id INTEGER PRIMARY KEY,
  key_id TEXT NOT NULL UNIQUE CHECK (length(key_id) BETWEEN 1 AND 32),
  secret_hash TEXT NOT NULL UNIQUE CHECK (length(secret_hash) = 64),
  description TEXT NOT NULL DEFAULT '',
  max_uses INTEGER CHECK (max_uses IS NULL OR max_uses >= 1),
  uses INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0 AND (max_uses IS NULL OR uses <= max_uses)),
  expires_at INTEGER,
  auto_approve INTEGER NOT NULL DEFAULT 0 CHECK (auto_approve IN (0, 1)),
  -- Set: the key claims this existing system (one made by migrate-profile, say) for the agent
  -- that enrols with it, keeping its identity, address, tags and subnets. Single-use then.
  system_identity TEXT CHECK (system_identity IS NULL OR max_uses = 1),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE TABLE gateway_access_policies (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
  description TEXT NOT NULL DEFAULT '',
  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
  source TEXT NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'discovered', 'migrated')),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
, action TEXT NOT NULL DEFAULT 'allow' CHECK (action IN ('allow', 'deny')));

CREATE TABLE gateway_access_policy_filters (
  policy_id INTEGER NOT NULL REFERENCES gateway_access_policies (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  destination TEXT NOT NULL,
  protocol TEXT NOT NULL CHECK (protocol IN ('any', 'tcp', 'udp', 'icmp')),
  ports TEXT,
  PRIMARY KEY (policy_id, position)
) WITHOUT ROWID;

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

CREATE TABLE gateway_access_policy_time_windows (
  policy_id INTEGER NOT NULL REFERENCES gateway_access_policies (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  days TEXT NOT NULL,
  start_time TEXT NOT NULL,
  end_time TEXT NOT NULL,
  utc_offset_minutes INTEGER NOT NULL DEFAULT 0 CHECK (utc_offset_minutes BETWEEN -720 AND 840),
  PRIMARY KEY (policy_id, position)
) WITHOUT ROWID;

CREATE TABLE gateway_access_policy_trust_ips (
  policy_id INTEGER NOT NULL REFERENCES gateway_access_policies (id) ON DELETE CASCADE,
  prefix TEXT NOT NULL,
  PRIMARY KEY (policy_id, prefix)
) WITHOUT ROWID;

CREATE TABLE gateway_subnets (
  id INTEGER PRIMARY KEY,
  system_id INTEGER NOT NULL REFERENCES systems (id) ON DELETE CASCADE,
  prefix TEXT NOT NULL,
  nat INTEGER NOT NULL DEFAULT 1 CHECK (nat IN (0, 1)),
  nat_address TEXT,
  source TEXT NOT NULL CHECK (source IN ('manual', 'discovered', 'migrated')),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL, priority INTEGER NOT NULL DEFAULT 100 CHECK (priority BETWEEN 0 AND 65535), draining INTEGER NOT NULL DEFAULT 0 CHECK (draining IN (0, 1)), discovered INTEGER NOT NULL DEFAULT 0 CHECK (discovered IN (0, 1)), healthy INTEGER NOT NULL DEFAULT 1 CHECK (healthy IN (0, 1)),
  UNIQUE (system_id, prefix)
);

CREATE TABLE schema_migrations (
  id TEXT PRIMARY KEY,
  applied_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE server_settings (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at INTEGER NOT NULL
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
, endpoint TEXT, public_ip TEXT, listen_port INTEGER CHECK (listen_port BETWEEN 0 AND 65535), last_seen INTEGER, agent_version TEXT, os TEXT);

CREATE TABLE tags (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
  description TEXT NOT NULL DEFAULT '',
  source TEXT NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'discovered', 'migrated')),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
