/**
 * @module scripts/demo
 * `npm run demo`: builds dist/waygate, then migrates the bundled sample fleet of legacy Enclave
 * profiles (two gateways and two clients, test/fixtures/profiles/fleet-clean, with the office
 * gateway's manual SNAT rules) into a throwaway policy store: first the dry-run plan, then
 * --apply --strip, then the resulting store, then a second apply to show it is idempotent.
 * Works on copies in a temp directory; the bundled fixtures are never modified.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "./build.ts";

const root = join(import.meta.dir, "..");

function banner(text: string): void {
  console.log(`\n━━━ ${text} ${"━".repeat(Math.max(0, 72 - text.length))}`);
}

/** Runs the binary; with `summary`, prints only the "Applied:"/"applied" counts of its output. */
function waygate(binary: string, args: string[], cwd: string, summary = false): number {
  console.log(`$ waygate ${args.join(" ")}`);
  if (!summary) return Bun.spawnSync([binary, ...args], { cwd, stdout: "inherit", stderr: "inherit" }).exitCode ?? 1;
  const r = Bun.spawnSync([binary, ...args], { cwd, stderr: "inherit" });
  const out = r.stdout.toString();
  if (args.includes("--json")) {
    const doc = JSON.parse(out) as { applied?: unknown };
    console.log(`applied: ${JSON.stringify(doc.applied)}`);
  } else {
    for (const line of out.split("\n")) if (/^(Applied|Profiles stripped|  fleet\/)/.test(line)) console.log(line);
  }
  return r.exitCode ?? 1;
}

banner("Building the single executable");
const binary = await build();
const version = Bun.spawnSync([binary, "--version"]).stdout.toString().trim();
console.log(`built ${binary} (waygate ${version})`);

const work = mkdtempSync(join(tmpdir(), "waygate-demo-"));
try {
  cpSync(join(root, "test", "fixtures", "profiles", "fleet-clean"), join(work, "fleet"), { recursive: true });
  cpSync(join(root, "test", "fixtures", "iptables", "gateway-office.iptables-save"), join(work, "gateway-office.rules"));
  const db = join(work, "waygate.db");
  const common = ["fleet", "--iptables-save", "G982V=gateway-office.rules", "--db", db];

  banner("1. The plan (dry run: nothing is written)");
  if (waygate(binary, ["migrate-profile", ...common], work) !== 0) throw new Error("dry run failed");

  banner("2. Apply: write the plan to the policy store in one transaction");
  if (waygate(binary, ["migrate-profile", ...common, "--apply"], work) !== 0) throw new Error("apply failed");

  banner("3. Apply again: nothing changes (idempotent)");
  if (waygate(binary, ["migrate-profile", ...common, "--apply", "--json"], work, true) !== 0) throw new Error("second apply failed");

  banner("4. Strip: every profile's ExitNode becomes {} (atomic rewrite, .bak kept)");
  if (waygate(binary, ["migrate-profile", ...common, "--apply", "--strip"], work, true) !== 0) throw new Error("strip failed");
  const before = readFileSync(join(work, "fleet", "Y7299.profile.bak"), "utf8").split(/\r?\n/);
  const after = readFileSync(join(work, "fleet", "Y7299.profile"), "utf8").split(/\r?\n/);
  console.log(`fleet/Y7299.profile: ${before.length} lines before, ${after.length} after; the lines that changed:`);
  for (const line of before.filter((l) => !after.includes(l))) console.log(`  - ${line.trim()}`);
  for (const line of after.filter((l) => !before.includes(l))) console.log(`  + ${line.trim()}`);

  banner("5. The resulting gateways and policies, read back from the store");
  if (waygate(binary, ["store", "show", "--db", db], work) !== 0) throw new Error("store show failed");
} finally {
  rmSync(work, { recursive: true, force: true });
}
banner("Done");
