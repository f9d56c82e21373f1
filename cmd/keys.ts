/**
 * @module cmd/keys
 * `waygate keys list|create|remove`: enrolment keys on a running control plane. `create` prints
 * the plain key once; the server keeps only its hash.
 */
import { defineCommand } from "citty";
import type { KeyView } from "../core/control/admin.ts";
import { adminClient, connectionArgs, jsonArg, listArg, output, parseDuration, printList, repeated, type AdminCommandData } from "./admin-client.ts";

const list = defineCommand({
  meta: { name: "list", description: "List enrolment keys (never the keys themselves)" },
  args: { ...connectionArgs, ...jsonArg },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const keys = await adminClient(args, d).request<KeyView[]>("GET", "/keys");
    printList(output(d), args.json, keys, () => [
      ["ID", "USES", "EXPIRES", "AUTO-APPROVE", "TAGS", "DESCRIPTION"],
      ...keys.map((k) => [
        k.id,
        k.maxUses === null ? `${k.uses}/unlimited` : `${k.uses}/${k.maxUses}`,
        k.expiresAt === null ? "never" : `${new Date(k.expiresAt).toISOString()}${k.expired ? " (expired)" : ""}`,
        k.autoApprove ? "yes" : "no",
        k.tags.join(",") || "-",
        k.description || (k.system === null ? "-" : `claims ${k.system}`),
      ]),
    ]);
  },
});

const create = defineCommand({
  meta: { name: "create", description: "Create an enrolment key and print it (once)" },
  args: {
    description: { type: "string", description: "What the key is for", valueHint: "TEXT" },
    uses: { type: "string", description: "How many enrolments it allows (default 1: single-use)", valueHint: "N" },
    unlimited: { type: "boolean", description: "No use limit (multi-use until removed or expired)", default: false },
    expires: { type: "string", description: "Expire after this long: 30m, 12h, 7d", valueHint: "DURATION" },
    tag: { type: "string", description: "Tag applied to systems enrolled with it (repeatable, or comma-separated)", valueHint: "TAG" },
    "auto-approve": { type: "boolean", description: "Systems enrolled with it are approved at once", default: false },
    system: { type: "string", description: "Claim this existing, not yet enrolled system (e.g. one migrate-profile made)", valueHint: "ID" },
    ...connectionArgs,
    ...jsonArg,
  },
  async run({ args, data, rawArgs }) {
    const d = data as AdminCommandData | undefined;
    const body: Record<string, unknown> = {
      tags: repeated(rawArgs, "tag").flatMap((x) => listArg(x)),
      autoApprove: args["auto-approve"],
      maxUses: args.unlimited ? null : args.uses === undefined ? 1 : Number(args.uses),
    };
    if (args.description !== undefined) body.description = args.description;
    if (args.expires !== undefined) body.expiresInSeconds = parseDuration(args.expires);
    if (args.system !== undefined) body.system = args.system;
    const k = await adminClient(args, d).request<KeyView & { key: string }>("POST", "/keys", body);
    const out = output(d);
    if (args.json) return out(JSON.stringify(k, null, 2) + "\n");
    out(
      [
        `Enrolment key ${k.id} (${k.maxUses === null ? "unlimited uses" : k.maxUses === 1 ? "single-use" : `${k.maxUses} uses`}${k.expiresAt === null ? "" : `, expires ${new Date(k.expiresAt).toISOString()}`}${k.autoApprove ? ", auto-approve" : ""}${k.tags.length ? `, tags ${k.tags.join(",")}` : ""}):`,
        `  ${k.key}`,
        "Shown once; the server keeps only its hash. On the device: waygate enrol --server URL --key <key>",
        "",
      ].join("\n"),
    );
  },
});

const remove = defineCommand({
  meta: { name: "remove", description: "Revoke an enrolment key (systems already enrolled stay)" },
  args: { id: { type: "positional", description: "Key id (from keys list)", required: true, valueHint: "ID" }, ...connectionArgs },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    await adminClient(args, d).request("DELETE", `/keys/${encodeURIComponent(args.id)}`);
    output(d)(`enrolment key ${args.id} removed\n`);
  },
});

export default defineCommand({ meta: { name: "keys", description: "Manage enrolment keys" }, subCommands: { list, create, remove } });
