/**
 * @module test/cmd/main.test
 * The CLI surface: --version, --help listing every command with one line, every command's
 * --help carrying an example, and error-code-to-exit-status mapping. Runs cmd/main.ts as a
 * subprocess, exactly as a user would (from source; the compiled binary is tested in build.test).
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { commands } from "../../cmd/commands.ts";
import pkg from "../../package.json" with { type: "json" };

const root = join(import.meta.dir, "..", "..");

function cli(...args: string[]) {
  const r = Bun.spawnSync([process.execPath, join(root, "cmd", "main.ts"), ...args], {
    cwd: root,
    env: { ...process.env, NO_COLOR: "1" },
  });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

describe("waygate CLI", () => {
  test("--version prints the package version from source", () => {
    const r = cli("--version");
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`${pkg.version}-dev`);
  });

  test("--help lists every command with a one-line description", () => {
    const r = cli("--help");
    expect(r.code).toBe(0);
    for (const name of Object.keys(commands)) {
      const line = r.stdout.split("\n").find((l) => l.trim().startsWith(name + " ") || l.trim() === name);
      expect(line, `command ${name} listed`).toBeDefined();
      expect(line!.trim().length).toBeGreaterThan(name.length + 3);
    }
  });

  for (const name of Object.keys(commands)) {
    test(`${name} --help shows usage with an example`, () => {
      const r = cli(name, "--help");
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("USAGE");
      expect(r.stdout).toContain("EXAMPLES");
      expect(r.stdout).toMatch(new RegExp(`\\n  waygate ${name} `));
    });
  }

  test("an unknown command is a usage error with exit status 2", () => {
    const r = cli("no-such-command");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error[E_USAGE]");
    expect(r.stderr).toContain("no-such-command");
  });
});
