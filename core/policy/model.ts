/**
 * @module core/policy/model
 * The policy store's in-memory state: systems, tags, direct and gateway access policies.
 * Plain data with valibot schemas, because it crosses trust boundaries (admin API, store,
 * imports). `parsePolicyState` is the one way in from untrusted input.
 *
 * Semantics (compile.ts and evaluate.ts implement exactly this; evaluate.ts is the oracle):
 *
 * 1. A system takes part only when `approved && enabled`. Anything else gets an empty NetMap
 *    and is nobody's peer, in either role.
 * 2. Tags: a policy side matches a system when the system has ANY of the side's tags.
 * 3. Direct access policies follow Enclave: systems matching `fromTags` (senders) may originate
 *    traffic to systems matching `toTags` (receivers), limited by the ACLs (protocol and
 *    destination port at the receiver). Never the reverse: receivers answer through the data
 *    plane's flow table, they cannot initiate. The WireGuard peering itself is symmetric, so
 *    both ends list each other as peers. A system is never its own peer. `acls` is never
 *    empty; `{ protocol: "any" }` is "everything".
 * 4. Gateway access policies: senders (matching `senderTags`) may reach destinations inside the
 *    listed subnets of the listed gateways, through that gateway. A listed subnet counts only
 *    if the gateway is active, `allowedAsGateway`, and one of its `gatewaySubnets` covers it
 *    (equal or wider); a narrower listed subnet grants just itself. Naming one subnet of a
 *    gateway grants nothing in its other subnets. A sender never uses itself as a gateway.
 * 5. Destinations inside the overlay network (`network`, 100.64.0.0/10 by default) are only
 *    ever reached directly (rule 3): a gateway grant of 0.0.0.0/0 does not reach the gateway's
 *    own virtual address, nor any other system's. Gateway rules govern forwarded traffic only;
 *    traffic to the gateway itself needs a direct policy.
 * 6. `subnetFilter`, when present, narrows a gateway grant to packets matching at least one
 *    entry (destination address, range or prefix; protocol; destination ports). Absent means
 *    all traffic to the granted subnets. When present it is never empty.
 * 7. `trust` (allow policies only) must hold for the grant to exist: the sender's `publicIp`
 *    within one of `publicIpWithin` (an unknown public IP fails), and `now` inside one of the
 *    `timeWindows`. Both are evaluated at compile time against the injected `now`; compile.ts's
 *    `nextTrustChange` says when the answer can next change.
 * 8. `action: "deny"` policies have the same shape and always win over allows: a packet is
 *    allowed exactly when some allow policy matches it and no deny policy does. A gateway deny
 *    applies to the gateways it names, whether or not they serve the subnet; a deny carries no
 *    trust requirements. Hence adding a deny, disabling or removing an allow policy, removing a
 *    tag from an allow policy, or removing a subnet from an allow grant never widens access.
 *    (Removing a tag from a SYSTEM can widen access when a deny policy named that tag.)
 * 9. Time windows: `days` are the days on which the window starts, in the window's own UTC
 *    offset; [start, end) in minutes of that day; an end at or before the start runs past
 *    midnight into the next day.
 */
import * as v from "valibot";
import { sha256 } from "@noble/hashes/sha2.js";
import { WaygateError } from "../errors.ts";
import { parseAddress, parsePrefix, prefixContainsAddress } from "../net/address.ts";
import { parseDestination, parsePorts } from "./ranges.ts";

export const DEFAULT_NETWORK = "100.64.0.0/10";

/** A policy state or part of it failed validation; `path` is the JSON path of the culprit. */
export class PolicyError extends WaygateError {
  constructor(
    code: "E_POLICY_INVALID" | "E_POLICY_UNKNOWN_SYSTEM",
    readonly path: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(code, path === "" ? reason : `${path}: ${reason}`, options);
  }
}

/** A string schema whose extra validation is a parser that throws with a readable reason. */
function parsedText(check: (text: string) => unknown) {
  return v.pipe(
    v.string(),
    v.rawCheck(({ dataset, addIssue }) => {
      if (!dataset.typed) return;
      try {
        check(dataset.value);
      } catch (err) {
        addIssue({ message: err instanceof Error ? err.message : String(err) });
      }
    }),
  );
}

const PUBLIC_KEY_RE = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

export const SystemIdSchema = v.pipe(v.string(), v.regex(/^[A-Z0-9]{5}$/, "a system id is 5 characters A-Z, 0-9"));
export const PublicKeySchema = v.pipe(v.string(), v.regex(PUBLIC_KEY_RE, "a public key is base64 of 32 bytes"));
export const PrefixTextSchema = parsedText((t) => parsePrefix(t));
export const AddressTextSchema = parsedText((t) => parseAddress(t));
export const DestinationTextSchema = parsedText((t) => parseDestination(t));
export const PortsTextSchema = parsedText((t) => parsePorts(t));
export const TagSchema = v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9_.:-]{0,62}$/i, "a tag is 1-63 characters: letters, digits, _ . : -"));
/** "host:port" or "[v6]:port"; the agent resolves and dials it. */
export const EndpointSchema = v.pipe(v.string(), v.regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "an endpoint is host:port or [v6]:port"));

export const AclProtocolSchema = v.picklist(["any", "tcp", "udp", "icmp"]);
export const ActionSchema = v.picklist(["allow", "deny"]);
export const DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] as const;
export const DaySchema = v.picklist(DAYS);
const ClockSchema = v.pipe(v.string(), v.regex(/^([01]\d|2[0-3]):[0-5]\d$|^24:00$/, "a time is HH:MM, 00:00 to 24:00"));

export const GatewaySubnetSchema = v.object({
  prefix: PrefixTextSchema,
  nat: v.boolean(),
  source: v.picklist(["discovered", "manual", "migrated"]),
  /** Being phased out: still served, but failover prefers other candidates. */
  draining: v.optional(v.boolean()),
  /** Route preference among gateways serving the same subnet; lower wins, default 100. */
  priority: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535))),
  /**
   * False while the gateway reports it cannot reach the subnet (default true). Not policy: the
   * grant stands (`decide` still allows), the compiler only marks the routes `withdrawn`.
   */
  healthy: v.optional(v.boolean()),
});

export const SystemSchema = v.object({
  id: SystemIdSchema,
  name: v.pipe(v.string(), v.minLength(1), v.maxLength(128)),
  description: v.optional(v.string()),
  publicKey: PublicKeySchema,
  virtualAddress: AddressTextSchema,
  tags: v.array(TagSchema),
  approved: v.boolean(),
  enabled: v.boolean(),
  endpoint: v.optional(EndpointSchema),
  /** The public address the control plane last saw the system connect from (trust checks). */
  publicIp: v.optional(AddressTextSchema),
  lastSeen: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  agentVersion: v.optional(v.string()),
  os: v.optional(v.string()),
  allowedAsGateway: v.boolean(),
  gatewaySubnets: v.array(GatewaySubnetSchema),
});

/** Ports only make sense for tcp and udp. */
function portsNeedTransport<T extends { protocol: string; ports?: string | undefined }>(entry: T): boolean {
  return entry.ports === undefined || entry.protocol === "tcp" || entry.protocol === "udp";
}

export const AclSchema = v.pipe(
  v.object({ protocol: AclProtocolSchema, ports: v.optional(PortsTextSchema) }),
  v.check(portsNeedTransport, "ports need protocol tcp or udp"),
);

export const DirectAccessPolicySchema = v.object({
  id: v.pipe(v.string(), v.minLength(1)),
  name: v.string(),
  enabled: v.boolean(),
  action: v.optional(ActionSchema),
  fromTags: v.array(TagSchema),
  toTags: v.array(TagSchema),
  acls: v.pipe(v.array(AclSchema), v.minLength(1, "acls is never empty; use { protocol: \"any\" } for everything")),
});

export const SubnetFilterEntrySchema = v.pipe(
  v.object({ destination: DestinationTextSchema, protocol: AclProtocolSchema, ports: v.optional(PortsTextSchema) }),
  v.check(portsNeedTransport, "ports need protocol tcp or udp"),
);

export const TimeWindowSchema = v.object({
  days: v.pipe(v.array(DaySchema), v.minLength(1)),
  start: ClockSchema,
  end: ClockSchema,
  /** Minutes east of UTC the window's clock runs in (60 for UTC+01:00). */
  utcOffsetMinutes: v.pipe(v.number(), v.integer(), v.minValue(-720), v.maxValue(840)),
});

export const TrustSchema = v.object({
  publicIpWithin: v.optional(v.pipe(v.array(PrefixTextSchema), v.minLength(1))),
  timeWindows: v.optional(v.pipe(v.array(TimeWindowSchema), v.minLength(1))),
});

export const GatewayTargetSchema = v.object({
  systemId: SystemIdSchema,
  subnets: v.pipe(v.array(PrefixTextSchema), v.minLength(1)),
});

export const GatewayAccessPolicySchema = v.object({
  id: v.pipe(v.string(), v.minLength(1)),
  name: v.string(),
  enabled: v.boolean(),
  action: v.optional(ActionSchema),
  senderTags: v.array(TagSchema),
  gateways: v.array(GatewayTargetSchema),
  subnetFilter: v.optional(v.pipe(v.array(SubnetFilterEntrySchema), v.minLength(1))),
  trust: v.optional(TrustSchema),
});

export const TagInfoSchema = v.object({ name: TagSchema, description: v.optional(v.string()) });

export const PolicyStateSchema = v.object({
  network: PrefixTextSchema,
  tags: v.optional(v.array(TagInfoSchema)),
  systems: v.array(SystemSchema),
  directAccessPolicies: v.array(DirectAccessPolicySchema),
  gatewayAccessPolicies: v.array(GatewayAccessPolicySchema),
});

export type AclProtocol = v.InferOutput<typeof AclProtocolSchema>;
/** What a packet carries; "any" exists only in rules. */
export type PacketProtocol = Exclude<AclProtocol, "any">;
export type PolicyAction = v.InferOutput<typeof ActionSchema>;
export type Day = v.InferOutput<typeof DaySchema>;
export type GatewaySubnet = v.InferOutput<typeof GatewaySubnetSchema>;
export type System = v.InferOutput<typeof SystemSchema>;
export type Acl = v.InferOutput<typeof AclSchema>;
export type DirectAccessPolicy = v.InferOutput<typeof DirectAccessPolicySchema>;
export type SubnetFilterEntry = v.InferOutput<typeof SubnetFilterEntrySchema>;
export type TimeWindow = v.InferOutput<typeof TimeWindowSchema>;
export type TrustRequirements = v.InferOutput<typeof TrustSchema>;
export type GatewayTarget = v.InferOutput<typeof GatewayTargetSchema>;
export type GatewayAccessPolicy = v.InferOutput<typeof GatewayAccessPolicySchema>;
export type TagInfo = v.InferOutput<typeof TagInfoSchema>;
/**
 * The whole policy state. Treated as immutable: compile.ts memoises parsed views of systems
 * and policies by object identity, so a change is a new object, never an edit in place.
 */
export type PolicyState = v.InferOutput<typeof PolicyStateSchema>;

export function emptyPolicyState(network: string = DEFAULT_NETWORK): PolicyState {
  return { network, systems: [], directAccessPolicies: [], gatewayAccessPolicies: [] };
}

export function isActive(system: System): boolean {
  return system.approved && system.enabled;
}

export function actionOf(policy: { action?: PolicyAction | undefined }): PolicyAction {
  return policy.action ?? "allow";
}

function issuePath(issue: v.BaseIssue<unknown>): string {
  let path = "";
  for (const item of issue.path ?? []) {
    const key = (item as { key?: unknown }).key;
    path += typeof key === "number" ? `[${key}]` : path === "" ? String(key) : `.${String(key)}`;
  }
  return path;
}

/**
 * Validate untrusted input into a PolicyState: the schema, then what a schema cannot say
 * (unique ids, keys and addresses; addresses inside the network; references to systems that
 * exist; no trust requirements on deny policies). Throws PolicyError E_POLICY_INVALID naming
 * the first problem's JSON path.
 */
export function parsePolicyState(input: unknown): PolicyState {
  const result = v.safeParse(PolicyStateSchema, input);
  if (!result.success) {
    const issue = result.issues[0];
    throw new PolicyError("E_POLICY_INVALID", issuePath(issue), issue.message);
  }
  const state = result.output;
  checkIntegrity(state);
  return state;
}

/** The cross-reference checks parsePolicyState runs after the schema; exported for the store. */
export function checkIntegrity(state: PolicyState): void {
  const fail = (path: string, reason: string): never => {
    throw new PolicyError("E_POLICY_INVALID", path, reason);
  };
  const network = parsePrefix(state.network);
  const ids = new Map<string, number>();
  const keys = new Map<string, number>();
  const addresses = new Map<string, number>();
  state.systems.forEach((s, i) => {
    const at = `systems[${i}]`;
    const seen = ids.get(s.id);
    if (seen !== undefined) fail(`${at}.id`, `${s.id} is also systems[${seen}].id`);
    ids.set(s.id, i);
    const keySeen = keys.get(s.publicKey);
    if (keySeen !== undefined) fail(`${at}.publicKey`, `the same key as systems[${keySeen}]`);
    keys.set(s.publicKey, i);
    const address = parseAddress(s.virtualAddress);
    if (!prefixContainsAddress(network, address.bytes)) {
      fail(`${at}.virtualAddress`, `${s.virtualAddress} is outside the overlay network ${network.text}`);
    }
    const prefixes = new Set<string>();
    s.gatewaySubnets.forEach((g, j) => {
      const text = parsePrefix(g.prefix).text;
      if (prefixes.has(text)) fail(`${at}.gatewaySubnets[${j}].prefix`, `${text} is listed twice`);
      prefixes.add(text);
    });
    const addressSeen = addresses.get(address.text);
    if (addressSeen !== undefined) fail(`${at}.virtualAddress`, `${address.text} is also systems[${addressSeen}]'s`);
    addresses.set(address.text, i);
  });
  const policyIds = new Map<string, string>();
  const claim = (id: string, at: string) => {
    const seen = policyIds.get(id);
    if (seen !== undefined) fail(`${at}.id`, `policy id ${JSON.stringify(id)} is also ${seen}'s`);
    policyIds.set(id, at);
  };
  state.directAccessPolicies.forEach((p, i) => claim(p.id, `directAccessPolicies[${i}]`));
  state.gatewayAccessPolicies.forEach((p, i) => {
    const at = `gatewayAccessPolicies[${i}]`;
    claim(p.id, at);
    if (actionOf(p) === "deny" && p.trust !== undefined) {
      fail(`${at}.trust`, "a deny policy cannot carry trust requirements (a deny always applies)");
    }
    p.gateways.forEach((g, j) => {
      if (!ids.has(g.systemId)) fail(`${at}.gateways[${j}].systemId`, `no system ${g.systemId}`);
    });
  });
}

const ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/**
 * The 5-character system id for a public key: SHA-256 over the key bytes (and, after the first
 * attempt, a counter byte), first 25 bits in Crockford base32. 25 bits collide among 10,000
 * systems more often than not, so whoever allots ids passes `taken` and the next attempt is
 * used; the result is still a pure function of the key and the ids already in use.
 */
export function systemIdFromPublicKey(publicKey: string, taken: (id: string) => boolean = () => false): string {
  if (!PUBLIC_KEY_RE.test(publicKey)) {
    throw new PolicyError("E_POLICY_INVALID", "publicKey", "a public key is base64 of 32 bytes");
  }
  const key = Uint8Array.from(atob(publicKey), (c) => c.charCodeAt(0));
  for (let attempt = 0; attempt < 256; attempt++) {
    const input = attempt === 0 ? key : Uint8Array.of(...key, attempt);
    const digest = sha256(input);
    let bits = ((digest[0]! << 24) | (digest[1]! << 16) | (digest[2]! << 8) | digest[3]!) >>> 0;
    let id = "";
    for (let i = 0; i < 5; i++) {
      id += ID_ALPHABET[bits >>> 27]!;
      bits = (bits << 5) >>> 0;
    }
    if (!taken(id)) return id;
  }
  throw new PolicyError("E_POLICY_INVALID", "publicKey", "no free system id after 256 attempts");
}
