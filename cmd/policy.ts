/**
 * @module cmd/policy
 * `waygate policy explain`: asks the control plane whether a system may send a packet to a
 * destination, and why (core/policy/evaluate.ts explain, run against the server's live state).
 * Exit status 0 when allowed and 1 when denied, so scripts can test it like grep.
 */
import { defineCommand } from "citty";
import { adminClient, connectionArgs, jsonArg, output, type AdminCommandData } from "./admin-client.ts";

const explain = defineCommand({
  meta: { name: "explain", description: "Explain whether SYSTEM may reach DESTINATION (and through which policy and gateway)" },
  args: {
    system: { type: "string", description: "Sending system id", required: true, valueHint: "ID" },
    destination: { type: "string", description: "Destination IP address", required: true, valueHint: "IP" },
    port: { type: "string", description: "Destination port (tcp/udp)", valueHint: "N" },
    protocol: { type: "string", description: "tcp (default), udp or icmp", default: "tcp", valueHint: "PROTO" },
    ...connectionArgs,
    ...jsonArg,
  },
  async run({ args, data }) {
    const d = data as AdminCommandData | undefined;
    const q = new URLSearchParams({ system: args.system, destination: args.destination, protocol: args.protocol });
    if (args.port !== undefined) q.set("port", args.port);
    const r = await adminClient(args, d).request<{ allowed: boolean; text: string }>("GET", `/explain?${q}`);
    output(d)(args.json ? JSON.stringify(r, null, 2) + "\n" : r.text + "\n");
    // cmd/main.ts runCli returns process.exitCode when a command sets it.
    if (!r.allowed) process.exitCode = 1;
  },
});

export default defineCommand({ meta: { name: "policy", description: "Ask the policy engine" }, subCommands: { explain } });
