/**
 * @module cmd/tags
 * `waygate tags list|add|remove` on a running control plane (cmd/admin-client.ts).
 */
import { defineCommand } from "citty";
import { adminClient, connectionArgs, jsonArg, output, printList, type AdminCommandData } from "./admin-client.ts";

const nameArg = { name: { type: "positional", description: "Tag name (letters, digits, _ . : -)", required: true, valueHint: "TAG" } } as const;

interface TagView {
  name: string;
  description: string;
  systems: number;
  source: string;
}

const list = defineCommand({
  meta: { name: "list", description: "List tags and how many systems carry each" },
  args: { ...connectionArgs, ...jsonArg },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const tags = await adminClient(args, d).request<TagView[]>("GET", "/tags");
    printList(output(d), args.json, tags, () => [["TAG", "SYSTEMS", "DESCRIPTION"], ...tags.map((t) => [t.name, String(t.systems), t.description || "-"])]);
  },
});

const add = defineCommand({
  meta: { name: "add", description: "Create a tag (or change its description)" },
  args: { ...nameArg, description: { type: "string", description: "What the tag means", valueHint: "TEXT" }, ...connectionArgs },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const r = await adminClient(args, d).request<{ change: string }>("POST", "/tags", { name: args.name, ...(args.description === undefined ? {} : { description: args.description }) });
    output(d)(`tag ${args.name} ${r.change}\n`);
  },
});

const remove = defineCommand({
  meta: { name: "remove", description: "Delete a tag (refused while a policy names it)" },
  args: { ...nameArg, ...connectionArgs },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    await adminClient(args, d).request("DELETE", `/tags/${encodeURIComponent(args.name)}`);
    output(d)(`tag ${args.name} removed\n`);
  },
});

export default defineCommand({ meta: { name: "tags", description: "Manage tags" }, subCommands: { list, add, remove } });
