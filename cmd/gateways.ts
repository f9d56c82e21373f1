/**
 * @module cmd/gateways
 * `waygate gateways list|enable|disable|subnet-add|subnet-remove|nat|drain|priority`: which
 * systems may act as gateways and the subnets they serve, on a running control plane.
 */
import { defineCommand } from "citty";
import type { GatewayView, SubnetView } from "../core/control/admin.ts";
import { AdminApiError, adminClient, connectionArgs, jsonArg, output, printList, type AdminCommandData } from "./admin-client.ts";

const idArg = { id: { type: "positional", description: "Gateway system id", required: true, valueHint: "ID" } } as const;
const prefixArg = { prefix: { type: "positional", description: "Subnet, e.g. 172.26.0.0/20 or 0.0.0.0/0", required: true, valueHint: "CIDR" } } as const;
const path = (id: string) => `/gateways/${encodeURIComponent(id)}`;

const list = defineCommand({
  meta: { name: "list", description: "List gateways and their subnets (NAT, priority, draining, health)" },
  args: { ...connectionArgs, ...jsonArg },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const gws = await adminClient(args, d).request<GatewayView[]>("GET", "/gateways");
    printList(output(d), args.json, gws, () => [
      ["GATEWAY", "NAME", "ALLOWED", "SUBNET", "NAT", "PRIORITY", "STATE", "SOURCE"],
      ...gws.flatMap((g) =>
        (g.subnets.length === 0 ? [null] : g.subnets).map((n: SubnetView | null) => [
          g.id,
          g.name,
          g.allowedAsGateway ? "yes" : "no",
          n?.prefix ?? "-",
          n === null ? "-" : n.nat ? "on" : "off",
          n === null ? "-" : String(n.priority),
          n === null ? "-" : [n.draining ? "draining" : "", n.healthy ? "" : "unhealthy"].filter(Boolean).join(",") || "ok",
          n?.source ?? "-",
        ]),
      ),
    ]);
  },
});

const toggle = (name: "enable" | "disable") =>
  defineCommand({
    meta: { name, description: name === "enable" ? "Allow a system to act as a gateway" : "Stop a system acting as a gateway (its subnets stay, unused)" },
    args: { ...idArg, ...connectionArgs },
    async run({ args, data }) {
      const d = data as AdminCommandData | undefined;
      await adminClient(args, d).request("POST", `${path(args.id)}/${name}`);
      output(d)(`${args.id} ${name === "enable" ? "may act as a gateway" : "no longer acts as a gateway"}\n`);
    },
  });

const subnetAdd = defineCommand({
  meta: { name: "subnet-add", description: "Add a subnet by hand (0.0.0.0/0 for an internet gateway)" },
  args: {
    ...idArg,
    ...prefixArg,
    nat: { type: "boolean", description: "SNAT to the gateway's LAN address (--no-nat when the LAN routes the overlay back)", default: true },
    priority: { type: "string", description: "Route preference, lower wins (default 100)", valueHint: "N" },
    ...connectionArgs,
  },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const body: Record<string, unknown> = { prefix: args.prefix, nat: args.nat };
    if (args.priority !== undefined) body.priority = Number(args.priority);
    const n = await adminClient(args, d).request<SubnetView>("POST", `${path(args.id)}/subnets`, body);
    output(d)(`${args.id} serves ${n.prefix} (NAT ${n.nat ? "on" : "off"}, priority ${n.priority})\n`);
  },
});

const subnetRemove = defineCommand({
  meta: { name: "subnet-remove", description: "Remove a subnet from a gateway" },
  args: { ...idArg, ...prefixArg, ...connectionArgs },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    await adminClient(args, d).request("DELETE", `${path(args.id)}/subnets?prefix=${encodeURIComponent(args.prefix)}`);
    output(d)(`${args.id} no longer serves ${args.prefix}\n`);
  },
});

function onOff(text: string, what: string): boolean {
  if (text === "on" || text === "true" || text === "yes") return true;
  if (text === "off" || text === "false" || text === "no") return false;
  throw new AdminApiError(`${what}: expected on or off, got ${JSON.stringify(text)}`, 400);
}

const nat = defineCommand({
  meta: { name: "nat", description: "Turn NAT on or off for one subnet of a gateway" },
  args: { ...idArg, ...prefixArg, state: { type: "positional", description: "on or off", required: true, valueHint: "on|off" }, ...connectionArgs },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const n = await adminClient(args, d).request<SubnetView>("PATCH", `${path(args.id)}/subnets`, { prefix: args.prefix, nat: onOff(args.state, "NAT") });
    output(d)(`${args.id} ${n.prefix}: NAT ${n.nat ? "on" : "off"}\n`);
  },
});

const drain = defineCommand({
  meta: { name: "drain", description: "Drain a subnet (failover prefers other gateways); --undo to stop draining" },
  args: { ...idArg, ...prefixArg, undo: { type: "boolean", description: "Stop draining", default: false }, ...connectionArgs },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const n = await adminClient(args, d).request<SubnetView>("PATCH", `${path(args.id)}/subnets`, { prefix: args.prefix, draining: !args.undo });
    output(d)(`${args.id} ${n.prefix}: ${n.draining ? "draining" : "not draining"}\n`);
  },
});

const priority = defineCommand({
  meta: { name: "priority", description: "Set a subnet's route priority (lower wins, default 100)" },
  args: { ...idArg, ...prefixArg, value: { type: "positional", description: "0-65535", required: true, valueHint: "N" }, ...connectionArgs },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const n = await adminClient(args, d).request<SubnetView>("PATCH", `${path(args.id)}/subnets`, { prefix: args.prefix, priority: Number(args.value) });
    output(d)(`${args.id} ${n.prefix}: priority ${n.priority}\n`);
  },
});

export default defineCommand({
  meta: { name: "gateways", description: "Manage gateways and their subnets" },
  subCommands: { list, enable: toggle("enable"), disable: toggle("disable"), "subnet-add": subnetAdd, "subnet-remove": subnetRemove, nat, drain, priority },
});
