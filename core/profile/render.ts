/**
 * @module core/profile/render
 * The migration plan for people (aligned text) and for scripts (`--json`, a stable shape with
 * `"version": 1`). Both are built from the Plan and the load results only, which carry no
 * secrets: nothing here can reach a profile's text.
 */
import type { ApplyResult, ChangeCounts } from "./apply.ts";
import type { LoadedProfile } from "./load.ts";
import type { Conflict, Plan } from "./plan.ts";
import type { StripResult } from "./strip.ts";

export type MigrateMode = "dry-run" | "apply";

export interface RenderContext {
  readonly db: string;
  readonly mode: MigrateMode;
  readonly profiles: readonly LoadedProfile[];
  /** --strip given: the files it rewrites (dry run: would rewrite). */
  readonly strip: boolean;
  readonly stripCandidates: readonly string[];
  readonly stripped: readonly StripResult[];
  readonly applied: ApplyResult | null;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

function pad(rows: string[][], indent: string): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd());
}

function conflictLines(c: Conflict): string[] {
  const head = `${c.severity.padEnd(7)}  ${c.kind}${c.at ? `  ${c.at}` : ""}`;
  return [`  ${head}`, `           ${c.message}`];
}

function counts(label: string, c: ChangeCounts): string {
  return `${label} ${c.created} created, ${c.updated} updated, ${c.unchanged} unchanged`;
}

export function renderPlanText(plan: Plan, ctx: RenderContext): string {
  const out: string[] = [];
  const gatewayNames = new Map(plan.systems.map((s) => [s.identity, s.name]));
  const label = (id: string) => (gatewayNames.get(id) ? `${id} (${gatewayNames.get(id)})` : id);

  if (ctx.mode === "dry-run") out.push(`Migration plan (dry run; --apply to write to ${ctx.db})`);
  else if (ctx.applied) out.push(`Migration applied to ${ctx.db}`);
  else out.push(`Migration plan (--apply: nothing written to ${ctx.db})`);

  out.push(`Profiles (${ctx.profiles.length})`);
  out.push(
    ...pad(
      ctx.profiles.map((p) => {
        const roles = [
          p.doc.exitNode.providesRoutes.length > 0 ? "gateway" : "",
          p.doc.exitNode.availableRoutes.length > 0 ? "client" : "",
        ].filter(Boolean);
        return [p.identity, p.doc.name ?? "", roles.join("+") || "-", p.doc.file];
      }),
      "  ",
    ),
  );

  out.push("Gateways");
  if (plan.gateways.length === 0) out.push("  (none: no profile has ExitNode.ProvidesRoutes)");
  for (const g of plan.gateways) {
    out.push(`  ${label(g.identity)}  allowed to act as gateway`);
    out.push(
      ...pad(
        g.subnets.map((s) => {
          const nat = s.nat ? (s.natAddress ? `NAT on (to ${s.natAddress})` : "NAT on") : "NAT off";
          const was = s.manualRule
            ? s.manualRule.target === "SNAT"
              ? `(was manual SNAT to ${s.manualRule.toSource} — now managed)`
              : "(was manual MASQUERADE — now managed)"
            : "";
          return [s.prefix.text, nat, was];
        }),
        "    ",
      ),
    );
  }

  out.push("Gateway access policies");
  if (plan.policies.length === 0) out.push("  (none)");
  for (const p of plan.policies) {
    const from = p.gatewayFromStore ? "  (gateway already in the store)" : "";
    out.push(`  ${p.name}: tag ${p.senderTag} -> ${p.gateway} ${p.subnets.map((s) => s.text).join(", ")}${from}`);
  }

  if (plan.tags.length > 0) {
    out.push("Tags");
    for (const t of plan.tags) out.push(`  ${t.name} on ${label(t.system)}`);
  }

  if (plan.snat.length > 0) {
    out.push("Manual SNAT rules Waygate now manages (remove them once the gateway runs Waygate)");
    for (const s of plan.snat) {
      out.push(`  ${s.gateway} ${s.prefixes.join(", ")}  ${s.rule.file}:${s.rule.line}  ${s.rule.text}`);
      out.push(`    ${s.rule.removeCommand}`);
    }
  }

  if (ctx.strip) {
    if (ctx.mode === "apply" && ctx.applied) {
      out.push("Profiles stripped (ExitNode is now {}, original kept as .bak)");
      if (ctx.stripped.length === 0) out.push("  (none: every ExitNode was already {} or absent)");
      for (const s of ctx.stripped) {
        out.push(s.changed ? `  ${s.file}  (original kept as ${s.backup})` : `  ${s.file}  (already stripped, unchanged)`);
      }
    } else {
      out.push("Profiles to strip with --apply --strip (ExitNode becomes {}, original kept as .bak)");
      if (ctx.stripCandidates.length === 0) out.push("  (none: every ExitNode is already {} or absent)");
      for (const f of ctx.stripCandidates) out.push(`  ${f}`);
    }
  }

  out.push(`Conflicts (${plural(plan.errors, "error")}, ${plural(plan.warnings, "warning")})`);
  if (plan.conflicts.length === 0) out.push("  (none)");
  const ordered = [...plan.conflicts.filter((c) => c.severity === "error"), ...plan.conflicts.filter((c) => c.severity === "warning")];
  for (const c of ordered) out.push(...conflictLines(c));

  if (ctx.applied) {
    const a = ctx.applied;
    out.push(
      `Applied: ${[
        counts("systems", a.systems),
        counts("gateway subnets", a.gatewaySubnets),
        counts("tags", a.tags),
        counts("policies", a.policies),
      ].join("; ")}; ${plural(a.audited, "audit entry").replace("entrys", "entries")}`,
    );
  }
  const subnets = plan.gateways.reduce((n, g) => n + g.subnets.length, 0);
  let summary =
    `Summary: ${plural(plan.systems.length, "system")}, ${plural(plan.gateways.length, "gateway")} (${plural(subnets, "subnet")}), ` +
    `${plural(plan.policies.length, "policy").replace("policys", "policies")}; ${plural(plan.errors, "error")}, ${plural(plan.warnings, "warning")}.`;
  if (plan.errors > 0) summary += " --apply refuses to write until the errors are fixed.";
  out.push(summary);
  return out.join("\n") + "\n";
}

/** The `--json` document. Field names are part of the CLI's contract. */
export function planToJson(plan: Plan, ctx: RenderContext): Record<string, unknown> {
  return {
    version: 1,
    mode: ctx.mode,
    db: ctx.db,
    written: ctx.applied !== null,
    profiles: ctx.profiles.map((p) => ({
      file: p.doc.file,
      identity: p.identity,
      identitySources: p.sources,
      name: p.doc.name,
      provides: p.doc.exitNode.providesRoutes.map((x) => x.text),
      uses: Object.fromEntries(p.doc.exitNode.availableRoutes.map((g) => [g.gateway, g.prefixes.map((x) => x.text)])),
    })),
    systems: plan.systems.map((s) => ({ ...s })),
    gateways: plan.gateways.map((g) => ({
      identity: g.identity,
      name: g.name,
      file: g.file,
      subnets: g.subnets.map((s) => ({
        prefix: s.prefix.text,
        nat: s.nat,
        natAddress: s.natAddress,
        manualRule: s.manualRule ? { file: s.manualRule.file, line: s.manualRule.line, text: s.manualRule.text } : null,
      })),
    })),
    tags: plan.tags.map((t) => ({ ...t })),
    policies: plan.policies.map((p) => ({
      name: p.name,
      senderTags: [p.senderTag],
      client: p.client,
      gateway: p.gateway,
      subnets: p.subnets.map((s) => s.text),
      gatewayFromStore: p.gatewayFromStore,
    })),
    snat: plan.snat.map((s) => ({
      gateway: s.gateway,
      prefixes: s.prefixes,
      file: s.rule.file,
      line: s.rule.line,
      rule: s.rule.text,
      target: s.rule.target,
      toSource: s.rule.toSource,
      removeCommand: s.rule.removeCommand,
    })),
    strip: !ctx.strip
      ? null
      : ctx.applied
        ? ctx.stripped.map((s) => ({ file: s.file, changed: s.changed, backup: s.backup }))
        : ctx.stripCandidates.map((f) => ({ file: f, changed: false, backup: null, pending: true })),
    conflicts: plan.conflicts.map((c) => ({ ...c })),
    errors: plan.errors,
    warnings: plan.warnings,
    applied: ctx.applied,
  };
}
