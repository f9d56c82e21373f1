/**
 * @module test/cmd/store.test
 * `waygate store show` reads back what `migrate-profile --apply` wrote, as text and JSON, and
 * refuses a missing database with E_STORE instead of creating one.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = join(import.meta.dir, "..", "..");
const work = mkdtempSync(join(tmpdir(), "waygate-store-cmd-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function cli(...args: string[]) {
  const r = Bun.spawnSync([process.execPath, join(root, "cmd", "main.ts"), ...args], { cwd: work, env: { ...process.env, NO_COLOR: "1" } });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

describe("waygate store show", () => {
  const db = join(work, "waygate.db");

  test("shows the gateways and policies a migration wrote", () => {
    cpSync(join(root, "test", "fixtures", "profiles", "fleet-clean"), join(work, "fleet"), { recursive: true });
    expect(cli("migrate-profile", "fleet", "--db", db, "--apply").code).toBe(0);
    const text = cli("store", "show", "--db", db);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain("G982V (gateway-office)  allowed to act as gateway");
    expect(text.stdout).toMatch(/172\.26\.0\.0\/20\s+NAT on/);
    expect(text.stdout).toContain("migrated-Y7299-via-G982V: tag migrated-Y7299 -> G982V 172.26.0.0/20");

    const json = JSON.parse(cli("store", "show", "--db", db, "--json").stdout);
    expect(json.gateways.map((g: { identity: string }) => g.identity)).toEqual(["G982V", "Q8QW8"]);
    const policy = json.policies.find((p: { name: string }) => p.name === "migrated-Y7299-via-Q8QW8");
    expect(policy).toEqual({
      name: "migrated-Y7299-via-Q8QW8",
      enabled: true,
      senderTags: ["migrated-Y7299"],
      gateways: [{ gateway: "Q8QW8", subnets: ["10.0.0.0/24"] }],
      source: "migrated",
    });
    expect(JSON.stringify(json)).not.toContain("d2F5Z2F0ZS1maXh0dXJlLXNlY3JldD");
  });

  test("a missing database is an E_STORE error and is not created", () => {
    const missing = join(work, "nope", "waygate.db");
    const r = cli("store", "show", "--db", missing);
    expect(r.code).toBe(10);
    expect(r.stderr).toContain("error[E_STORE]: no policy store at");
    expect(existsSync(missing)).toBe(false);
  });
});
