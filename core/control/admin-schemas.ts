/**
 * @module core/control/admin-schemas
 * Request bodies of the admin API (`/v1/admin/...`), as valibot schemas shared by the server
 * (which validates every body with them, answering 400 with the offending field) and the admin
 * CLI (which builds bodies of these shapes). Objects are strict: an unknown field is an error
 * naming that field, so a typo never silently does nothing. Paths are listed in ADMIN_PATHS.
 */
import * as v from "valibot";
import {
  AclSchema,
  ActionSchema,
  PrefixTextSchema,
  SubnetFilterEntrySchema,
  SystemIdSchema,
  TagSchema,
  TrustSchema,
} from "../policy/model.ts";

/** Policy names appear in URLs: keep them to a safe alphabet. */
export const PolicyNameSchema = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, "a policy name is 1-128 characters: letters, digits, _ . : - (starting with a letter or digit)"),
);

const Description = v.pipe(v.string(), v.maxLength(500, "a description is at most 500 characters"));
const Priority = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535));

export const SystemPatchSchema = v.strictObject({
  name: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(128))),
  description: v.optional(Description),
  approved: v.optional(v.boolean()),
  enabled: v.optional(v.boolean()),
  allowedAsGateway: v.optional(v.boolean()),
  tags: v.optional(v.array(TagSchema)),
});
export type SystemPatch = v.InferOutput<typeof SystemPatchSchema>;

export const KeyCreateSchema = v.strictObject({
  description: v.optional(Description),
  /** 1 (the default) is single-use; null is unlimited. */
  maxUses: v.optional(v.nullable(v.pipe(v.number(), v.integer(), v.minValue(1, "maxUses is at least 1 (null: unlimited)"))), 1),
  /** Seconds from now; absent: never expires. */
  expiresInSeconds: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(10 * 365 * 86400))),
  autoApprove: v.optional(v.boolean(), false),
  tags: v.optional(v.array(TagSchema), []),
  /** Claim this existing, not yet enrolled system (single-use only). */
  system: v.optional(SystemIdSchema),
});
export type KeyCreate = v.InferOutput<typeof KeyCreateSchema>;

export const TagCreateSchema = v.strictObject({
  name: TagSchema,
  description: v.optional(Description, ""),
});

export const SubnetAddSchema = v.strictObject({
  prefix: PrefixTextSchema,
  nat: v.optional(v.boolean(), true),
  priority: v.optional(Priority),
  draining: v.optional(v.boolean()),
});

export const SubnetPatchSchema = v.strictObject({
  prefix: PrefixTextSchema,
  nat: v.optional(v.boolean()),
  priority: v.optional(Priority),
  draining: v.optional(v.boolean()),
});

export const PolicyGatewaySchema = v.strictObject({
  gateway: SystemIdSchema,
  /** Absent or empty: every subnet of that gateway. */
  subnets: v.optional(v.array(PrefixTextSchema), []),
});

const gatewayPolicyFields = {
  description: v.optional(Description),
  enabled: v.optional(v.boolean()),
  action: v.optional(ActionSchema),
  senderTags: v.optional(v.array(TagSchema)),
  gateways: v.optional(v.array(PolicyGatewaySchema)),
  subnetFilter: v.optional(v.nullable(v.pipe(v.array(SubnetFilterEntrySchema), v.minLength(1, "subnetFilter is never empty; null removes it")))),
  trust: v.optional(v.nullable(TrustSchema)),
};

export const GatewayPolicyCreateSchema = v.strictObject({
  name: PolicyNameSchema,
  ...gatewayPolicyFields,
  senderTags: v.pipe(v.array(TagSchema), v.minLength(1, "senderTags needs at least one tag")),
  gateways: v.pipe(v.array(PolicyGatewaySchema), v.minLength(1, "gateways needs at least one gateway")),
});
export type GatewayPolicyCreate = v.InferOutput<typeof GatewayPolicyCreateSchema>;

export const GatewayPolicyPatchSchema = v.strictObject(gatewayPolicyFields);
export type GatewayPolicyPatch = v.InferOutput<typeof GatewayPolicyPatchSchema>;

const directPolicyFields = {
  description: v.optional(Description),
  enabled: v.optional(v.boolean()),
  action: v.optional(ActionSchema),
  fromTags: v.optional(v.array(TagSchema)),
  toTags: v.optional(v.array(TagSchema)),
  acls: v.optional(v.pipe(v.array(AclSchema), v.minLength(1, "acls is never empty; use { protocol: \"any\" } for everything"))),
};

export const DirectPolicyCreateSchema = v.strictObject({
  name: PolicyNameSchema,
  ...directPolicyFields,
  fromTags: v.pipe(v.array(TagSchema), v.minLength(1, "fromTags needs at least one tag")),
  toTags: v.pipe(v.array(TagSchema), v.minLength(1, "toTags needs at least one tag")),
});
export type DirectPolicyCreate = v.InferOutput<typeof DirectPolicyCreateSchema>;

export const DirectPolicyPatchSchema = v.strictObject(directPolicyFields);
export type DirectPolicyPatch = v.InferOutput<typeof DirectPolicyPatchSchema>;

export const ExplainQuerySchema = v.strictObject({
  system: SystemIdSchema,
  destination: v.pipe(v.string(), v.minLength(1)),
  port: v.optional(v.pipe(v.string(), v.regex(/^\d{1,5}$/, "port is a number 0-65535"), v.transform(Number), v.maxValue(65535, "port is a number 0-65535"))),
  protocol: v.optional(v.picklist(["tcp", "udp", "icmp"]), "tcp"),
});

export const AuditQuerySchema = v.strictObject({
  after: v.optional(v.pipe(v.string(), v.regex(/^\d+$/, "after is an audit entry id"), v.transform(Number))),
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d+$/, "limit is a number"), v.transform(Number), v.minValue(1), v.maxValue(10_000))),
});

/** The admin API's paths under PATHS.admin (`:x` is a path parameter, URL-encoded). */
export const ADMIN_PATHS = {
  systems: "/systems",
  system: "/systems/:id",
  keys: "/keys",
  key: "/keys/:id",
  tags: "/tags",
  tag: "/tags/:name",
  gateways: "/gateways",
  gatewayEnable: "/gateways/:id/enable",
  gatewayDisable: "/gateways/:id/disable",
  gatewaySubnets: "/gateways/:id/subnets",
  policies: "/policies",
  policy: "/policies/:name",
  directPolicies: "/direct-policies",
  directPolicy: "/direct-policies/:name",
  explain: "/explain",
  audit: "/audit",
} as const;
