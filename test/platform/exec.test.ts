/**
 * @module test/platform/exec.test
 * platform/exec.ts: output capture, stdin, LC_ALL=C, and the CommandError contract (code,
 * argv, exit status and stderr in the message; allowFailure returns instead).
 */
import { describe, expect, test } from "bun:test";
import { EXIT_STATUS } from "../../core/errors.ts";
import { recordingLogger } from "../../core/log.ts";
import { CommandError, execRunner, formatArgv } from "../../platform/exec.ts";

describe("execRunner", () => {
  const runner = execRunner();

  test("captures stdout, stderr and the exit status", async () => {
    const r = await runner.run(["sh", "-c", "echo out; echo err >&2"]);
    expect(r).toEqual({ stdout: "out\n", stderr: "err\n", exitCode: 0 });
  });

  test("writes input to stdin", async () => {
    const r = await runner.run(["cat"], { input: "hello\nworld\n" });
    expect(r.stdout).toBe("hello\nworld\n");
  });

  test("runs with LC_ALL=C", async () => {
    const r = await runner.run(["sh", "-c", 'printf %s "$LC_ALL"']);
    expect(r.stdout).toBe("C");
  });

  test("a failing command throws CommandError with argv, status and stderr", async () => {
    const argv = ["sh", "-c", "echo boom >&2; exit 3", "arg with space"];
    const err = await runner.run(argv).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    const ce = err as CommandError;
    expect(ce.code).toBe("E_COMMAND_FAILED");
    expect(ce.exitStatus).toBe(EXIT_STATUS.E_COMMAND_FAILED);
    expect(ce.name).toBe("CommandError");
    expect(ce.exitCode).toBe(3);
    expect(ce.stderr).toBe("boom\n");
    expect(ce.argv).toEqual(argv);
    expect(ce.message).toContain("exit 3");
    expect(ce.message).toContain("sh -c 'echo boom >&2; exit 3' 'arg with space'");
    expect(ce.message).toContain("boom");
  });

  test("allowFailure returns the result instead of throwing", async () => {
    const r = await runner.run(["sh", "-c", "echo nope >&2; exit 5"], { allowFailure: true });
    expect(r).toEqual({ stdout: "", stderr: "nope\n", exitCode: 5 });
  });

  test("a missing binary is a CommandError with status 127", async () => {
    const err = (await runner.run(["/nonexistent/waygate-no-such-tool", "x"]).catch((e: unknown) => e)) as CommandError;
    expect(err).toBeInstanceOf(CommandError);
    expect(err.exitCode).toBe(127);
    expect(err.message).toContain("/nonexistent/waygate-no-such-tool x");
    const r = await runner.run(["/nonexistent/waygate-no-such-tool"], { allowFailure: true });
    expect(r.exitCode).toBe(127);
  });

  test("logs each command at debug level", async () => {
    const logger = recordingLogger();
    await execRunner({ logger }).run(["true"]);
    expect(logger.lines).toEqual([{ level: "debug", message: "exec: true" }]);
  });

  test("formatArgv quotes only what needs quoting", () => {
    expect(formatArgv(["ip", "-n", "wg1-a", "addr", "add", "10.0.0.1/24"])).toBe("ip -n wg1-a addr add 10.0.0.1/24");
    expect(formatArgv(["sh", "-c", "it's"])).toBe(`sh -c 'it'\\''s'`);
  });
});
