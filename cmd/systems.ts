/**
 * @module cmd/systems
 * `waygate systems list|show|approve|enable|disable|edit|remove`: systems on a running control
 * plane, through the admin API (cmd/admin-client.ts).
 */
import { defineCommand } from "citty";
import type { SystemView, SubnetView } from "../core/control/admin.ts";
import { adminClient, ago, connectionArgs, jsonArg, listArg, output, printList, repeated, type AdminCommandData } from "./admin-client.ts";

const idArg = { id: { type: "positional", description: "System id (5 characters, e.g. G982V)", required: true, valueHint: "ID" } } as const;

function flags(s: SystemView): string {
  return [s.approved ? "" : "unapproved", s.enabled ? "" : "disabled", s.allowedAsGateway ? "gateway" : "", s.enrolled ? "" : "not-enrolled"].filter(Boolean).join(",") || "-";
}

const list = defineCommand({
  meta: { name: "list", description: "List systems: id, name, address, tags, state, last seen" },
  args: { ...connectionArgs, ...jsonArg },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const systems = await adminClient(args, d).request<SystemView[]>("GET", "/systems");
    const now = Date.now();
    printList(output(d), args.json, systems, () => [
      ["ID", "NAME", "ADDRESS", "TAGS", "STATE", "ENDPOINT", "LAST SEEN"],
      ...systems.map((s) => [s.id, s.name, s.virtualAddress ?? "-", s.tags.join(",") || "-", flags(s), s.endpoint ?? "-", s.connected ? "connected" : ago(s.lastSeen, now)]),
    ]);
  },
});

const show = defineCommand({
  meta: { name: "show", description: "Show one system in full" },
  args: { ...idArg, ...connectionArgs, ...jsonArg },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const s = await adminClient(args, d).request<SystemView & { subnets: SubnetView[]; netmapRevision: number | null }>("GET", `/systems/${encodeURIComponent(args.id)}`);
    const out = output(d);
    if (args.json) return out(JSON.stringify(s, null, 2) + "\n");
    const lines = [
      `System ${s.id} (${s.name})`,
      `  description:  ${s.description || "-"}`,
      `  public key:   ${s.publicKey ?? "(not enrolled)"}`,
      `  address:      ${s.virtualAddress ?? "-"}`,
      `  tags:         ${s.tags.join(", ") || "-"}`,
      `  approved:     ${s.approved ? "yes" : "no"}    enabled: ${s.enabled ? "yes" : "no"}    gateway: ${s.allowedAsGateway ? "allowed" : "no"}`,
      `  endpoint:     ${s.endpoint ?? "-"}    public IP: ${s.publicIp ?? "-"}`,
      `  agent:        ${s.agentVersion ?? "-"} on ${s.os ?? "-"}, ${s.connected ? "connected" : `last seen ${ago(s.lastSeen, Date.now())}`}`,
      `  netmap rev:   ${s.netmapRevision ?? "-"}`,
    ];
    if (s.subnets.length > 0) {
      lines.push("  subnets:");
      for (const n of s.subnets) lines.push(`    ${n.prefix.padEnd(18)} NAT ${n.nat ? "on " : "off"} priority ${n.priority}${n.draining ? " draining" : ""}${n.healthy ? "" : " UNHEALTHY"} [${n.source}]`);
    }
    out(lines.join("\n") + "\n");
  },
});

function patchCommand(name: string, description: string, body: Record<string, unknown>, verb: string) {
  return defineCommand({
    meta: { name, description },
    args: { ...idArg, ...connectionArgs },
    async run({ args, data }) {
      const d = data as AdminCommandData | undefined;
      const s = await adminClient(args, d).request<SystemView>("PATCH", `/systems/${encodeURIComponent(args.id)}`, body);
      output(d)(`${s.id} (${s.name}) ${verb}\n`);
    },
  });
}

const edit = defineCommand({
  meta: { name: "edit", description: "Change a system's name, description or tags" },
  args: {
    ...idArg,
    name: { type: "string", description: "New display name", valueHint: "NAME" },
    description: { type: "string", description: "New description", valueHint: "TEXT" },
    tags: { type: "string", description: "Replace the tags (comma-separated; \"\" for none)", valueHint: "A,B" },
    "add-tag": { type: "string", description: "Add a tag (repeatable)", valueHint: "TAG" },
    "remove-tag": { type: "string", description: "Remove a tag (repeatable)", valueHint: "TAG" },
    ...connectionArgs,
  },
  async run({ args, data, rawArgs }) {
    const d = data as AdminCommandData | undefined;
    const client = adminClient(args, d);
    const path = `/systems/${encodeURIComponent(args.id)}`;
    const body: Record<string, unknown> = {};
    if (args.name !== undefined) body.name = args.name;
    if (args.description !== undefined) body.description = args.description;
    const add = repeated(rawArgs, "add-tag").flatMap((x) => listArg(x));
    const remove = repeated(rawArgs, "remove-tag").flatMap((x) => listArg(x));
    if (args.tags !== undefined || add.length > 0 || remove.length > 0) {
      const base = args.tags !== undefined ? listArg(args.tags) : (await client.request<SystemView>("GET", path)).tags;
      body.tags = [...new Set([...base, ...add])].filter((t) => !remove.includes(t));
    }
    const s = await client.request<SystemView>("PATCH", path, body);
    output(d)(`${s.id} (${s.name}) updated: tags ${s.tags.join(", ") || "-"}\n`);
  },
});

const remove = defineCommand({
  meta: { name: "remove", description: "Remove a system (its agent can no longer fetch a NetMap)" },
  args: { ...idArg, ...connectionArgs },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    await adminClient(args, d).request("DELETE", `/systems/${encodeURIComponent(args.id)}`);
    output(d)(`${args.id} removed\n`);
  },
});

export default defineCommand({
  meta: { name: "systems", description: "Manage systems on the control plane" },
  subCommands: {
    list,
    show,
    approve: patchCommand("approve", "Approve a system so it takes part in the network", { approved: true }, "approved"),
    enable: patchCommand("enable", "Enable a system", { enabled: true }, "enabled"),
    disable: patchCommand("disable", "Disable a system (it gets an empty NetMap and is nobody's peer)", { enabled: false }, "disabled"),
    edit,
    remove,
  },
});
