/**
 * @module core/store/store
 * The policy store interface: systems, tags, gateway subnets, gateway access policies and the
 * audit log. Async from day one so a server database can sit behind the same interface when the
 * control plane scales out; sqlite.ts (bun:sqlite) is the embedded default.
 *
 * Writes are upserts by natural key (identity, tag name, gateway+prefix, policy name) that
 * return what they did, so callers can be idempotent and audit only real changes. Every write
 * happens inside `transaction`, which commits all of it or none of it.
 */

/** What an upsert did. `unchanged` writes nothing (not even updated_at). */
export type Change = "created" | "updated" | "unchanged";

/** Who put a row there: an admin, discovery on the gateway, or the ExitNode migration. */
export type RowSource = "manual" | "discovered" | "migrated";

export interface SystemInput {
  /** Five characters A-Z, 0-9. */
  readonly identity: string;
  readonly name: string;
  readonly description: string;
  /** The WireGuard public key (base64), once the system has enrolled. Never a private key. */
  readonly publicKey: string | null;
  readonly virtualAddress: string | null;
  readonly approved: boolean;
  readonly enabled: boolean;
  readonly allowedAsGateway: boolean;
  readonly source: RowSource;
}

export interface SystemRecord extends SystemInput {
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface TagInput {
  readonly name: string;
  readonly description: string;
  readonly source: RowSource;
}

export interface TagRecord extends TagInput {
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface GatewaySubnetInput {
  /** The gateway system's identity. */
  readonly gateway: string;
  /** Canonical prefix text (core/net/address.ts). */
  readonly prefix: string;
  readonly nat: boolean;
  /** The address to SNAT to; null: the gateway's address on the subnet's interface. */
  readonly natAddress: string | null;
  readonly source: RowSource;
}

export interface GatewaySubnetRecord extends GatewaySubnetInput {
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface PolicyGatewayInput {
  readonly gateway: string;
  /** The subnets (of that gateway) the policy opens; canonical prefix text. */
  readonly subnets: readonly string[];
}

export interface GatewayAccessPolicyInput {
  readonly name: string;
  readonly description: string;
  readonly enabled: boolean;
  readonly source: RowSource;
  /** Systems carrying any of these tags may use the gateways below. */
  readonly senderTags: readonly string[];
  readonly gateways: readonly PolicyGatewayInput[];
}

export interface GatewayAccessPolicyRecord extends GatewayAccessPolicyInput {
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface AuditInput {
  /** Who did it: `migrate-profile`, an admin's name, `agent:G982V`. */
  readonly actor: string;
  /** Dotted verb: `system.create`, `gateway_access_policy.update`. */
  readonly action: string;
  /** The natural key of what changed. */
  readonly subject: string;
  /** Small JSON-able detail. Never secrets. */
  readonly detail: Readonly<Record<string, unknown>>;
}

export interface AuditRecord extends AuditInput {
  readonly id: number;
  readonly at: number;
}

export interface StoreReader {
  getSystem(identity: string): Promise<SystemRecord | null>;
  listSystems(): Promise<SystemRecord[]>;
  getTag(name: string): Promise<TagRecord | null>;
  listTags(): Promise<TagRecord[]>;
  /** Tag names of a system, sorted. */
  listSystemTags(identity: string): Promise<string[]>;
  /** Subnets of one gateway, or of all gateways; sorted by gateway then prefix. */
  listGatewaySubnets(gateway?: string): Promise<GatewaySubnetRecord[]>;
  getGatewayAccessPolicy(name: string): Promise<GatewayAccessPolicyRecord | null>;
  listGatewayAccessPolicies(): Promise<GatewayAccessPolicyRecord[]>;
  listAudit(): Promise<AuditRecord[]>;
}

export interface StoreWriter extends StoreReader {
  /** Creates or updates the system to exactly `input` (timestamps aside). */
  putSystem(input: SystemInput): Promise<Change>;
  putTag(input: TagInput): Promise<Change>;
  /** Adds the tag to the system; both must exist. */
  addSystemTag(identity: string, tag: string): Promise<Change>;
  /** The gateway system must exist. */
  putGatewaySubnet(input: GatewaySubnetInput): Promise<Change>;
  /** Creates or replaces the policy, its sender tags and its per-gateway subnets exactly. */
  putGatewayAccessPolicy(input: GatewayAccessPolicyInput): Promise<Change>;
  appendAudit(input: AuditInput): Promise<void>;
}

export interface Store extends StoreReader {
  /** Where it lives (a file path for sqlite). */
  readonly location: string;
  readonly readonly: boolean;
  /** Ids of the schema migrations applied, in order. */
  appliedMigrations(): Promise<string[]>;
  /** Runs `fn` in one transaction: everything it wrote commits, or (on a throw) nothing does. */
  transaction<T>(fn: (tx: StoreWriter) => Promise<T>): Promise<T>;
  /** A canonical text dump of every row, for comparing states in tests and support bundles. */
  dump(): Promise<string>;
  close(): void;
}
