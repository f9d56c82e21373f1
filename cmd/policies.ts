/**
 * @module cmd/policies
 * `waygate policies list|show|add|edit|remove`: gateway access policies (default) and, with
 * `--direct`, direct access policies, on a running control plane.
 *
 *   --gateway G982V                    all of G982V's subnets
 *   --gateway G982V=172.26.0.0/20,...  just those (repeatable, one per gateway)
 *   --filter "10.0.0.5 tcp 22"         subnet filter entry: destination [protocol [ports]] (repeatable)
 *   --public-ip 198.51.100.0/24        trust: sender's public IP within (repeatable)
 *   --window "mon-fri 08:00-18:00"     trust: time window, optional "+01:00" offset (repeatable)
 *   --acl tcp/22 | udp/53 | icmp | any direct policies (repeatable; default any)
 */
import { defineCommand } from "citty";
import { DAYS } from "../core/policy/model.ts";
import { AdminApiError, adminClient, connectionArgs, jsonArg, listArg, output, printList, repeated, type AdminCommandData } from "./admin-client.ts";

const nameArg = { name: { type: "positional", description: "Policy name", required: true, valueHint: "NAME" } } as const;
const directArg = { direct: { type: "boolean", description: "Direct access policies (system to system) instead of gateway ones", default: false } } as const;

const bad = (flag: string, value: string, expected: string) => new AdminApiError(`--${flag} ${JSON.stringify(value)}: expected ${expected}`, 400);

export function parseGatewayArg(text: string): { gateway: string; subnets: string[] } {
  const m = /^([A-Za-z0-9]{5})(?:=(.*))?$/.exec(text.trim());
  if (m === null) throw bad("gateway", text, "ID or ID=CIDR,CIDR");
  return { gateway: m[1]!.toUpperCase(), subnets: listArg(m[2] ?? "") };
}

export function parseFilterArg(text: string): { destination: string; protocol: string; ports?: string } {
  const parts = text.trim().split(/\s+/);
  if (parts.length < 1 || parts.length > 3 || parts[0] === "") throw bad("filter", text, '"DESTINATION [PROTOCOL [PORTS]]", e.g. "10.0.0.5 tcp 22"');
  const [destination, protocol = "any", ports] = parts as [string, string?, string?];
  return ports === undefined ? { destination, protocol } : { destination, protocol, ports };
}

export function parseAclArg(text: string): { protocol: string; ports?: string } {
  const m = /^(any|tcp|udp|icmp)(?:\/(\d+(?:-\d+)?))?$/.exec(text.trim());
  if (m === null) throw bad("acl", text, "any, icmp, tcp/22, udp/1000-2000");
  return m[2] === undefined ? { protocol: m[1]! } : { protocol: m[1]!, ports: m[2] };
}

const DAY_ORDER = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] as const;

export function parseWindowArg(text: string): { days: string[]; start: string; end: string; utcOffsetMinutes: number } {
  const m = /^([a-z,-]+)\s+(\d{2}:\d{2})-(\d{2}:\d{2})(?:\s+(?:UTC)?([+-])(\d{2}):(\d{2}))?$/i.exec(text.trim());
  if (m === null) throw bad("window", text, '"mon-fri 08:00-18:00" with an optional "+01:00"');
  const days = new Set<string>();
  for (const part of m[1]!.toLowerCase().split(",")) {
    const [a, b] = part.split("-") as [string, string?];
    const i = DAY_ORDER.indexOf(a as (typeof DAY_ORDER)[number]);
    const j = b === undefined ? i : DAY_ORDER.indexOf(b as (typeof DAY_ORDER)[number]);
    if (i < 0 || j < 0) throw bad("window", text, `days from ${DAYS.join(",")}, ranges like mon-fri`);
    for (let k = i; ; k = (k + 1) % 7) {
      days.add(DAY_ORDER[k]!);
      if (k === j) break;
    }
  }
  const offset = m[4] === undefined ? 0 : (m[4] === "-" ? -1 : 1) * (Number(m[5]) * 60 + Number(m[6]));
  return { days: DAYS.filter((d) => days.has(d)), start: m[2]!, end: m[3]!, utcOffsetMinutes: offset };
}

interface GatewayPolicyView {
  name: string;
  description: string;
  enabled: boolean;
  action: string;
  senderTags: string[];
  gateways: { gateway: string; subnets: string[] }[];
  subnetFilter: { destination: string; protocol: string; ports?: string }[] | null;
  trust: { publicIpWithin?: string[]; timeWindows?: { days: string[]; start: string; end: string; utcOffsetMinutes: number }[] } | null;
  source: string;
}

interface DirectPolicyView {
  name: string;
  description: string;
  enabled: boolean;
  action: string;
  fromTags: string[];
  toTags: string[];
  acls: { protocol: string; ports?: string }[];
  source: string;
}

const base = (direct: boolean) => (direct ? "/direct-policies" : "/policies");
const aclText = (a: { protocol: string; ports?: string }) => (a.ports === undefined ? a.protocol : `${a.protocol}/${a.ports}`);
const gwText = (p: GatewayPolicyView) => p.gateways.map((g) => `${g.gateway}${g.subnets.length ? `=${g.subnets.join(",")}` : " (all)"}`).join(" ") || "-";

const list = defineCommand({
  meta: { name: "list", description: "List gateway access policies (or --direct ones)" },
  args: { ...directArg, ...connectionArgs, ...jsonArg },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const client = adminClient(args, d);
    if (args.direct) {
      const ps = await client.request<DirectPolicyView[]>("GET", base(true));
      printList(output(d), args.json, ps, () => [
        ["NAME", "ACTION", "FROM", "TO", "ACLS", "STATE"],
        ...ps.map((p) => [p.name, p.action, p.fromTags.join(","), p.toTags.join(","), p.acls.map(aclText).join(","), p.enabled ? "enabled" : "disabled"]),
      ]);
      return;
    }
    const ps = await client.request<GatewayPolicyView[]>("GET", base(false));
    printList(output(d), args.json, ps, () => [
      ["NAME", "ACTION", "SENDER TAGS", "GATEWAYS", "FILTER", "TRUST", "STATE"],
      ...ps.map((p) => [
        p.name,
        p.action,
        p.senderTags.join(","),
        gwText(p),
        p.subnetFilter === null ? "-" : `${p.subnetFilter.length} entr${p.subnetFilter.length === 1 ? "y" : "ies"}`,
        p.trust === null ? "-" : [p.trust.publicIpWithin ? "public-ip" : "", p.trust.timeWindows ? "time" : ""].filter(Boolean).join(","),
        p.enabled ? "enabled" : "disabled",
      ]),
    ]);
  },
});

const show = defineCommand({
  meta: { name: "show", description: "Show one policy in full" },
  args: { ...nameArg, ...directArg, ...connectionArgs, ...jsonArg },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const p = await adminClient(args, d).request<GatewayPolicyView & DirectPolicyView>("GET", `${base(args.direct)}/${encodeURIComponent(args.name)}`);
    const out = output(d);
    if (args.json) return out(JSON.stringify(p, null, 2) + "\n");
    const lines = [`${args.direct ? "Direct" : "Gateway"} access policy ${p.name} (${p.action}, ${p.enabled ? "enabled" : "disabled"}, ${p.source})`];
    if (p.description) lines.push(`  description: ${p.description}`);
    if (args.direct) {
      lines.push(`  from tags:   ${p.fromTags.join(", ")}`, `  to tags:     ${p.toTags.join(", ")}`, `  acls:        ${p.acls.map(aclText).join(", ")}`);
    } else {
      lines.push(`  sender tags: ${p.senderTags.join(", ")}`, `  gateways:    ${gwText(p)}`);
      for (const f of p.subnetFilter ?? []) lines.push(`  filter:      ${f.destination} ${f.protocol}${f.ports ? ` ${f.ports}` : ""}`);
      for (const ip of p.trust?.publicIpWithin ?? []) lines.push(`  trust:       public IP within ${ip}`);
      for (const w of p.trust?.timeWindows ?? []) lines.push(`  trust:       ${w.days.join(",")} ${w.start}-${w.end}${w.utcOffsetMinutes ? ` offset ${w.utcOffsetMinutes}m` : ""}`);
    }
    out(lines.join("\n") + "\n");
  },
});

const writeArgs = {
  ...directArg,
  description: { type: "string", description: "What the policy is for", valueHint: "TEXT" },
  deny: { type: "boolean", description: "A deny policy (always wins over allows)" },
  tag: { type: "string", description: "Gateway policies: sender tag (repeatable, or comma-separated)", valueHint: "TAG" },
  gateway: { type: "string", description: "Gateway policies: ID or ID=CIDR,CIDR (repeatable)", valueHint: "ID[=CIDRS]" },
  filter: { type: "string", description: 'Gateway policies: subnet filter entry "DEST [PROTO [PORTS]]" (repeatable)', valueHint: "ENTRY" },
  "public-ip": { type: "string", description: "Gateway policies: trust requirement, sender public IP within CIDR (repeatable)", valueHint: "CIDR" },
  window: { type: "string", description: 'Gateway policies: trust requirement, time window "mon-fri 08:00-18:00 [+01:00]" (repeatable)', valueHint: "WINDOW" },
  from: { type: "string", description: "Direct policies: sender tags (comma-separated)", valueHint: "TAGS" },
  to: { type: "string", description: "Direct policies: receiver tags (comma-separated)", valueHint: "TAGS" },
  acl: { type: "string", description: "Direct policies: any, icmp, tcp/22, udp/53 (repeatable; default any)", valueHint: "ACL" },
  ...connectionArgs,
} as const;

/** The body fields the flags given set (edit sends only these). */
function bodyFrom(args: Record<string, unknown>, rawArgs: readonly string[]): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (args.description !== undefined) body.description = args.description;
  if (args.deny !== undefined) body.action = args.deny ? "deny" : "allow";
  if (args.direct) {
    if (args.from !== undefined) body.fromTags = listArg(args.from);
    if (args.to !== undefined) body.toTags = listArg(args.to);
    const acls = repeated(rawArgs, "acl").flatMap((x) => listArg(x)).map(parseAclArg);
    if (acls.length > 0) body.acls = acls;
    return body;
  }
  const tags = repeated(rawArgs, "tag").flatMap((x) => listArg(x));
  if (tags.length > 0) body.senderTags = tags;
  const gateways = repeated(rawArgs, "gateway").map(parseGatewayArg);
  if (gateways.length > 0) body.gateways = gateways;
  const filters = repeated(rawArgs, "filter").map(parseFilterArg);
  if (filters.length > 0) body.subnetFilter = filters;
  const ips = repeated(rawArgs, "public-ip").flatMap((x) => listArg(x));
  const windows = repeated(rawArgs, "window").map(parseWindowArg);
  if (ips.length > 0 || windows.length > 0) {
    body.trust = { ...(ips.length ? { publicIpWithin: ips } : {}), ...(windows.length ? { timeWindows: windows } : {}) };
  }
  return body;
}

const add = defineCommand({
  meta: { name: "add", description: "Create a policy" },
  args: { ...nameArg, ...writeArgs, disabled: { type: "boolean", description: "Create it disabled", default: false } },
  async run({ args, data, rawArgs }) {
    const d = data as AdminCommandData | undefined;
    const body = { name: args.name, ...bodyFrom(args, rawArgs), ...(args.disabled ? { enabled: false } : {}) };
    await adminClient(args, d).request("POST", base(args.direct), body);
    output(d)(`${args.direct ? "direct" : "gateway"} access policy ${args.name} created\n`);
  },
});

const edit = defineCommand({
  meta: { name: "edit", description: "Change a policy: the flags given replace those fields" },
  args: {
    ...nameArg,
    ...writeArgs,
    enable: { type: "boolean", description: "Enable it (--no-enable or --disable to disable)" },
    disable: { type: "boolean", description: "Disable it" },
    "clear-filter": { type: "boolean", description: "Gateway policies: remove the subnet filter", default: false },
    "clear-trust": { type: "boolean", description: "Gateway policies: remove the trust requirements", default: false },
  },
  async run({ args, data, rawArgs }) {
    const d = data as AdminCommandData | undefined;
    const body = bodyFrom(args, rawArgs);
    if (args.enable !== undefined) body.enabled = args.enable;
    if (args.disable === true) body.enabled = false;
    if (args["clear-filter"]) body.subnetFilter = null;
    if (args["clear-trust"]) body.trust = null;
    await adminClient(args, d).request("PATCH", `${base(args.direct)}/${encodeURIComponent(args.name)}`, body);
    output(d)(`${args.direct ? "direct" : "gateway"} access policy ${args.name} updated\n`);
  },
});

const remove = defineCommand({
  meta: { name: "remove", description: "Delete a policy (affected agents get new NetMaps within a second)" },
  args: { ...nameArg, ...directArg, ...connectionArgs },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    await adminClient(args, d).request("DELETE", `${base(args.direct)}/${encodeURIComponent(args.name)}`);
    output(d)(`${args.direct ? "direct" : "gateway"} access policy ${args.name} removed\n`);
  },
});

export default defineCommand({
  meta: { name: "policies", description: "Manage gateway access policies (--direct: direct access policies)" },
  subCommands: { list, show, add, edit, remove },
});
