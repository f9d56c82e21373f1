/**
 * @module test/cmd/build.test
 * `npm run build`'s script produces one executable that runs without the source tree: its
 * version comes from `git describe` and its help lists the commands.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "../../scripts/build.ts";
import { commands } from "../../cmd/commands.ts";

const out = mkdtempSync(join(tmpdir(), "waygate-build-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

test("bun build --compile gives a standalone, version-stamped dist/waygate", async () => {
  const binary = await build({ outfile: join(out, "waygate") });
  expect(statSync(binary).mode & 0o111).not.toBe(0);
  const describe = Bun.spawnSync(["git", "describe", "--tags", "--always", "--dirty"], { cwd: join(import.meta.dir, "..", "..") });
  const version = Bun.spawnSync([binary, "--version"], { cwd: out });
  expect(version.exitCode).toBe(0);
  const printed = version.stdout.toString().trim();
  expect(printed).toMatch(/^\d+\.\d+\.\d+/);
  if (describe.exitCode === 0) expect(printed).toContain(describe.stdout.toString().trim().replace(/^v/, "").split("-")[0]!);
  const help = Bun.spawnSync([binary, "--help"], { cwd: out, env: { ...process.env, NO_COLOR: "1" } });
  for (const name of Object.keys(commands)) expect(help.stdout.toString()).toContain(name);
}, 120_000);
