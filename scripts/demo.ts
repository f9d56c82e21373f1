/**
 * @module scripts/demo
 * `npm run demo`: builds dist/waygate, then
 *
 * Part 1 (anyone): migrates the bundled sample fleet of legacy Enclave profiles (two gateways
 * and two clients, test/fixtures/profiles/fleet-clean, with the office gateway's manual SNAT
 * rules) into a throwaway policy store: the dry-run plan, then --apply (and again: idempotent),
 * then --strip. Works on copies in a temp directory; the bundled fixtures are never modified.
 *
 * Part 2 (root): a throwaway office in network namespaces, run with the compiled binary
 * (scripts/demo-office.ts): a gateway running `waygate serve --standalone`, a printer on its
 * LAN, a laptop on the other side of an "internet" link; enrol, ping and fetch a page through
 * the gateway, `waygate status` on both, the printer failing to connect back, teardown and a
 * check that nothing is left behind. Not root: part 2 is skipped with what to run instead.
 *
 * Exit status 0 when every step worked; on a failure the office is torn down and the demo
 * exits 1 with the error. Ctrl-C tears down too (exit 130).
 */
import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "./build.ts";
import { banner, OFFICE_TOOLS, officeDemo } from "./demo-office.ts";

const root = join(import.meta.dir, "..");
const started = Date.now();

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
    for (const line of out.split("\n")) if (/^(Migration applied|Applied|Profiles stripped|  fleet\/)/.test(line)) console.log(line);
  }
  return r.exitCode ?? 1;
}

function migrationDemo(binary: string): void {
  const work = mkdtempSync(join(tmpdir(), "waygate-demo-"));
  const cleanup = () => rmSync(work, { recursive: true, force: true });
  const onSignal = () => {
    cleanup();
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  try {
    cpSync(join(root, "test", "fixtures", "profiles", "fleet-clean"), join(work, "fleet"), { recursive: true });
    cpSync(join(root, "test", "fixtures", "iptables", "gateway-office.iptables-save"), join(work, "gateway-office.rules"));
    const db = join(work, "waygate.db");
    const common = ["fleet", "--iptables-save", "G982V=gateway-office.rules", "--db", db];

    banner("Part 1. Migrating a legacy profile fleet: the plan (dry run, nothing written)");
    if (waygate(binary, ["migrate-profile", ...common], work) !== 0) throw new Error("migrate-profile dry run failed");

    banner("Apply it to the policy store (one transaction), then again: nothing changes");
    if (waygate(binary, ["migrate-profile", ...common, "--apply"], work, true) !== 0) throw new Error("migrate-profile --apply failed");
    if (waygate(binary, ["migrate-profile", ...common, "--apply", "--json"], work, true) !== 0) throw new Error("second migrate-profile --apply failed");

    banner("Strip: every profile's ExitNode becomes {} (atomic rewrite, .bak kept)");
    if (waygate(binary, ["migrate-profile", ...common, "--apply", "--strip"], work, true) !== 0) throw new Error("migrate-profile --strip failed");
    const before = readFileSync(join(work, "fleet", "Y7299.profile.bak"), "utf8").split(/\r?\n/);
    const after = readFileSync(join(work, "fleet", "Y7299.profile"), "utf8").split(/\r?\n/);
    console.log(`fleet/Y7299.profile: ${before.length} lines before, ${after.length} after; the lines that changed:`);
    for (const line of before.filter((l) => !after.includes(l))) console.log(`  - ${line.trim()}`);
    for (const line of after.filter((l) => !before.includes(l))) console.log(`  + ${line.trim()}`);
  } finally {
    process.off("SIGINT", onSignal);
    cleanup();
  }
}

function missingTools(): string[] {
  return OFFICE_TOOLS.filter((t) => Bun.which(t) === null && Bun.which(t, { PATH: "/usr/sbin:/sbin:/usr/bin:/bin" }) === null);
}

try {
  banner("Building the single executable");
  const binary = await build();
  const version = Bun.spawnSync([binary, "--version"]).stdout.toString().trim();
  console.log(`built ${binary} (waygate ${version})`);

  migrationDemo(binary);

  const isRoot = process.getuid?.() === 0;
  const missing = missingTools();
  if (!isRoot) {
    banner("Part 2. The office in network namespaces: skipped");
    console.log(
      "Part 2 builds a throwaway office (laptop, gateway, printer) in network namespaces, which needs root.\n" +
        "Run it with:  sudo npm run demo   (or: sudo bun scripts/demo.ts)",
    );
  } else if (missing.length > 0) {
    throw new Error(`part 2 needs ${missing.join(", ")} on PATH (npm run demo installs them via apt-get as root)`);
  } else {
    await officeDemo(binary);
  }
  banner(`Done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  // Exit now: a stopped process's SIGKILL grace timer (scripts/rig/netns.ts stop()) would keep the loop alive for seconds.
  process.exit(0);
} catch (err) {
  console.error(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
