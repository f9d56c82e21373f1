/**
 * @module test/platform/jit.test
 * ensureJitWorkaround: a process started without BUN_JSC_useOSREntryToDFG=false runs itself
 * again with it, passing argv through and returning the child's exit status.
 */
import { expect, test } from "bun:test";
import { hasJitWorkaround, JIT_ENV, reexecArgv } from "../../platform/linux/jit.ts";

test("hasJitWorkaround reads the variable", () => {
  expect(hasJitWorkaround({ [JIT_ENV]: "false" })).toBe(true);
  expect(hasJitWorkaround({ [JIT_ENV]: "0" })).toBe(true);
  expect(hasJitWorkaround({})).toBe(false);
  expect(hasJitWorkaround({ [JIT_ENV]: "true" })).toBe(false);
});

test("reexecArgv keeps the script for bun and drops the embedded entry of a compiled binary", () => {
  expect(reexecArgv("/usr/bin/bun", ["/usr/bin/bun", "/w/cmd/main.ts", "up", "-v"])).toEqual(["/usr/bin/bun", "/w/cmd/main.ts", "up", "-v"]);
  expect(reexecArgv("/usr/local/bin/waygate", ["bun", "/$bunfs/root/waygate", "up"])).toEqual(["/usr/local/bin/waygate", "up"]);
});

test("a process without the variable re-execs itself with it and exits with the child's status", async () => {
  const script = `${import.meta.dir}/jit-fixture.ts`;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && k !== JIT_ENV) env[k] = v;
  const proc = Bun.spawn([process.execPath, script, "a b", "c"], { env, stdout: "pipe", stderr: "pipe" });
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
  expect(out.trim().split("\n")).toEqual([JSON.stringify({ env: "false", args: ["a b", "c"] })]);
  expect(code).toBe(7);
});
