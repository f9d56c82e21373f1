/**
 * @module core/store/store
 * The policy store interface: systems, tags, gateway subnets, gateway access policies and the
 * audit log. Async from day one so a server database can sit behind the same interface when the
 * control plane scales out; sqlite.ts (bun:sqlite) is the embedded default.
 *
 * Writes are upserts by natural key (identity, tag name, gateway+prefix, policy name) that
 * return what they did, so callers can be idempotent and audit only real changes. Every write
 * happens inside `transaction`, which commits all of it or none of it.
 *
 * Since 0002_control_plane the store also holds what agents report (endpoint, public IP,
 * version, OS, last seen), enrolment keys (hash only), direct access policies, gateway access
 * policy actions/subnet filters/trust requirements, subnet priority and draining, and the
 * server's settings. core/store/policy-state.ts maps all of it onto core/policy's model.
 */
import type { Acl, PolicyAction, SubnetFilterEntry, TrustRequirements } from "../policy/model.ts";

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

/** What the system's agent last told the control plane; null until it has reported. */
export interface AgentInfo {
  /** host:port peers dial (the report's source IP and the agent's listen port). */
  readonly endpoint: string | null;
  /** The address the control plane saw the agent connect from (trust requirements). */
  readonly publicIp: string | null;
  readonly listenPort: number | null;
  readonly lastSeen: number | null;
  readonly agentVersion: string | null;
  readonly os: string | null;
}

export interface SystemRecord extends SystemInput, AgentInfo {
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
  /** Route preference, lower wins (default 100); undefined keeps what is stored. */
  readonly priority?: number;
  /** Being phased out (failover prefers others); undefined keeps what is stored. */
  readonly draining?: boolean;
}

export interface GatewaySubnetRecord extends GatewaySubnetInput {
  readonly priority: number;
  readonly draining: boolean;
  /** The gateway's last report listed it. */
  readonly discovered: boolean;
  /** False while the gateway reports its upstream probe failing (withdrawn from NetMaps). */
  readonly healthy: boolean;
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
  /** Default "allow". */
  readonly action?: PolicyAction;
  /** Narrows the grant to matching packets; null/undefined: all traffic to the subnets. */
  readonly subnetFilter?: readonly SubnetFilterEntry[] | null;
  /** Allow policies only; null/undefined: none. */
  readonly trust?: TrustRequirements | null;
}

export interface GatewayAccessPolicyRecord extends GatewayAccessPolicyInput {
  readonly action: PolicyAction;
  readonly subnetFilter: SubnetFilterEntry[] | null;
  readonly trust: TrustRequirements | null;
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface DirectAccessPolicyInput {
  readonly name: string;
  readonly description: string;
  readonly enabled: boolean;
  readonly action: PolicyAction;
  readonly source: RowSource;
  /** Senders: systems with any of these tags may originate traffic... */
  readonly fromTags: readonly string[];
  /** ...to systems with any of these, as the ACLs allow. */
  readonly toTags: readonly string[];
  /** Never empty; `{ protocol: "any" }` is everything. */
  readonly acls: readonly Acl[];
}

export interface DirectAccessPolicyRecord extends DirectAccessPolicyInput {
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface EnrolmentKeyInput {
  /** Public, short handle (`waygate keys remove ID`); part of the plain key too. */
  readonly keyId: string;
  /** SHA-256 hex of the plain key. The plain key is never stored. */
  readonly secretHash: string;
  readonly description: string;
  /** null: unlimited. 1: single-use. */
  readonly maxUses: number | null;
  readonly expiresAt: number | null;
  readonly autoApprove: boolean;
  /** Applied to every system enrolled with the key; the tags must exist. */
  readonly tags: readonly string[];
  /** Claims this existing, not yet enrolled system for the enrolling agent (maxUses must be 1). */
  readonly systemIdentity: string | null;
}

export interface EnrolmentKeyRecord extends Omit<EnrolmentKeyInput, "secretHash"> {
  readonly uses: number;
  readonly createdAt: number;
  readonly updatedAt: number;
}

export type ConsumeResult =
  | { readonly ok: true; readonly key: EnrolmentKeyRecord }
  | { readonly ok: false; readonly reason: "unknown" | "expired" | "used-up" };

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
  /** Oldest first; `afterId` and `limit` page through it. */
  listAudit(options?: { afterId?: number; limit?: number }): Promise<AuditRecord[]>;
  getSystemByPublicKey(publicKey: string): Promise<SystemRecord | null>;
  getDirectAccessPolicy(name: string): Promise<DirectAccessPolicyRecord | null>;
  listDirectAccessPolicies(): Promise<DirectAccessPolicyRecord[]>;
  getEnrolmentKey(keyId: string): Promise<EnrolmentKeyRecord | null>;
  listEnrolmentKeys(): Promise<EnrolmentKeyRecord[]>;
  getSetting(name: string): Promise<string | null>;
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
  /** Deletes the system and everything it owns (tags links, subnets, policy gateway entries). */
  removeSystem(identity: string): Promise<boolean>;
  /** Sets the system's tags to exactly `tags` (which must exist). */
  setSystemTags(identity: string, tags: readonly string[]): Promise<Change>;
  /** Fails (StoreError) while a policy names the tag. */
  removeTag(name: string): Promise<boolean>;
  removeGatewaySubnet(gateway: string, prefix: string): Promise<boolean>;
  removeGatewayAccessPolicy(name: string): Promise<boolean>;
  putDirectAccessPolicy(input: DirectAccessPolicyInput): Promise<Change>;
  removeDirectAccessPolicy(name: string): Promise<boolean>;
  /** Records what the agent reported (never touches the admin-owned columns). */
  recordAgentInfo(identity: string, info: AgentInfo): Promise<void>;
  /**
   * The gateway's discovered subnets are now exactly `prefixes`: discovered rows not listed go,
   * new ones come with NAT on, manual rows listed are marked discovered; `unhealthy` ones are
   * withdrawn until reported healthy again.
   */
  syncDiscoveredSubnets(gateway: string, prefixes: readonly string[], unhealthy: readonly string[]): Promise<Change>;
  createEnrolmentKey(input: EnrolmentKeyInput): Promise<void>;
  removeEnrolmentKey(keyId: string): Promise<boolean>;
  /**
   * Uses the key once if it exists, has not expired at `now` and has uses left. Atomic with the
   * rest of the transaction: if the caller's transaction rolls back, the use is not spent.
   */
  consumeEnrolmentKey(secretHash: string, now: number): Promise<ConsumeResult>;
  putSetting(name: string, value: string): Promise<void>;
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
