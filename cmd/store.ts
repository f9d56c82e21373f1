/**
 * @module cmd/store
 * `waygate store show`: reads the local policy store (read-only, nothing is created or
 * migrated) and prints its systems, gateways with their subnets, gateway access policies and
 * the audit log's length; `--json` for scripts. The control plane's admin CLI covers a running
 * server; this one is for a database file on disk (after `migrate-profile --apply`).
 */
import { defineCommand } from "citty";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { WaygateError } from "../core/errors.ts";
import { defaultDbPath } from "../core/store/paths.ts";
import { openSqliteStore } from "../core/store/sqlite.ts";

export class StoreMissingError extends WaygateError {
  constructor(path: string) {
    super("E_STORE", `no policy store at ${path} (create one with: waygate migrate-profile PATH --apply --db ${path})`);
  }
}

async function storeSnapshot(path: string) {
  const store = await openSqliteStore(path, { now: () => Date.now(), readonly: true });
  try {
    const systems = await store.listSystems();
    const subnets = await store.listGatewaySubnets();
    const policies = await store.listGatewayAccessPolicies();
    const tags = await store.listTags();
    const audit = await store.listAudit();
    const systemTags = Object.fromEntries(
      await Promise.all(systems.map(async (s) => [s.identity, await store.listSystemTags(s.identity)] as const)),
    );
    return {
      location: store.location,
      migrations: await store.appliedMigrations(),
      systems: systems.map((s) => ({
        identity: s.identity,
        name: s.name,
        virtualAddress: s.virtualAddress,
        allowedAsGateway: s.allowedAsGateway,
        approved: s.approved,
        enabled: s.enabled,
        tags: systemTags[s.identity] ?? [],
        source: s.source,
      })),
      gateways: systems
        .filter((s) => s.allowedAsGateway)
        .map((s) => ({
          identity: s.identity,
          name: s.name,
          subnets: subnets
            .filter((n) => n.gateway === s.identity)
            .map((n) => ({ prefix: n.prefix, nat: n.nat, natAddress: n.natAddress, source: n.source })),
        })),
      policies: policies.map((p) => ({
        name: p.name,
        enabled: p.enabled,
        senderTags: [...p.senderTags],
        gateways: p.gateways.map((g) => ({ gateway: g.gateway, subnets: [...g.subnets] })),
        source: p.source,
      })),
      tags: tags.map((t) => t.name),
      auditEntries: audit.length,
    };
  } finally {
    store.close();
  }
}

function renderText(snap: Awaited<ReturnType<typeof storeSnapshot>>): string {
  const lines = [`Policy store ${snap.location} (schema ${snap.migrations.join(", ")})`, "Systems"];
  for (const s of snap.systems) {
    const flags = [s.allowedAsGateway ? "gateway" : "", s.approved ? "" : "unapproved", s.enabled ? "" : "disabled"].filter(Boolean);
    lines.push(`  ${s.identity}  ${s.name.padEnd(16)} ${(s.virtualAddress ?? "-").padEnd(15)} tags: ${s.tags.join(", ") || "-"}${flags.length ? `  [${flags.join(", ")}]` : ""}`);
  }
  lines.push("Gateways");
  for (const g of snap.gateways) {
    lines.push(`  ${g.identity} (${g.name})  allowed to act as gateway`);
    for (const n of g.subnets) lines.push(`    ${n.prefix.padEnd(18)} NAT ${n.nat ? `on${n.natAddress ? ` (to ${n.natAddress})` : ""}` : "off"}  [${n.source}]`);
  }
  lines.push("Gateway access policies");
  for (const p of snap.policies) {
    const via = p.gateways.map((g) => `${g.gateway} ${g.subnets.join(", ")}`).join("; ");
    lines.push(`  ${p.name}: tag ${p.senderTags.join(", ")} -> ${via}${p.enabled ? "" : "  [disabled]"}`);
  }
  lines.push(`Audit log: ${snap.auditEntries} entries`);
  return lines.join("\n");
}

const show = defineCommand({
  meta: { name: "show", description: "Print the systems, gateways and gateway access policies in a policy store" },
  args: {
    db: { type: "string", description: "Policy store (SQLite) to read; default under the state directory" },
    json: { type: "boolean", description: "Print JSON for scripts", default: false },
  },
  async run({ args }) {
    const path = args.db ?? defaultDbPath(process.env, process.getuid?.() ?? 0, homedir());
    if (!existsSync(path)) throw new StoreMissingError(path);
    const snap = await storeSnapshot(path);
    process.stdout.write(`${args.json ? JSON.stringify(snap, null, 2) : renderText(snap)}\n`);
  },
});

export default defineCommand({
  meta: { name: "store", description: "Inspect the local policy store" },
  subCommands: { show },
});
