/**
 * @module platform/exec
 * The production CommandRunner over Bun.spawn. Every command runs with LC_ALL=C so tools print
 * the English, parseable text the adapters (and recorded fixtures) expect; a failing command
 * throws a CommandError whose message carries argv, exit status and stderr, so a log line alone
 * is enough to reproduce it.
 */
import { WaygateError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import type { CommandResult, CommandRunner, RunOptions } from "../core/runner.ts";

/** A command exited non-zero (or could not be started: exitCode 127). */
export class CommandError extends WaygateError {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number,
    readonly stdout: string,
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super("E_COMMAND_FAILED", `command failed (exit ${exitCode}): ${formatArgv(argv)}${describeOutput(stderr, stdout)}`, options);
  }
}

/** Shell-like quoting, for messages only: the runner never goes through a shell. */
export function formatArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`)).join(" ");
}

function describeOutput(stderr: string, stdout: string): string {
  const err = stderr.trim();
  if (err !== "") return `: ${err}`;
  const out = stdout.trim();
  return out === "" ? "" : `: (stdout) ${out.slice(0, 2000)}`;
}

export interface ExecRunnerOptions {
  logger?: Logger;
  /** Extra environment for every command (on top of process.env and LC_ALL=C). */
  env?: Record<string, string>;
}

/** The CommandRunner used in production and by the root-only rigs. */
export function execRunner(options: ExecRunnerOptions = {}): CommandRunner {
  const { logger, env } = options;
  return {
    async run(argv: readonly string[], runOptions: RunOptions = {}): Promise<CommandResult> {
      if (argv.length === 0) throw new WaygateError("E_INTERNAL", "execRunner: empty argv");
      logger?.debug(`exec: ${formatArgv(argv)}`);
      let proc;
      try {
        proc = Bun.spawn([...argv], {
          env: { ...process.env, ...env, LC_ALL: "C" },
          stdin: runOptions.input === undefined ? "ignore" : new TextEncoder().encode(runOptions.input),
          stdout: "pipe",
          stderr: "pipe",
        });
      } catch (cause) {
        // Typically ENOENT: the binary is not installed. Reported like a shell would (127).
        const message = cause instanceof Error ? cause.message : String(cause);
        if (runOptions.allowFailure) return { stdout: "", stderr: message, exitCode: 127 };
        throw new CommandError(argv, 127, "", message, { cause });
      }
      const [stdout, stderr, exitCode] = await Promise.all([
        new Response(proc.stdout).text(),
        new Response(proc.stderr).text(),
        proc.exited,
      ]);
      if (exitCode !== 0 && !runOptions.allowFailure) throw new CommandError(argv, exitCode, stdout, stderr);
      return { stdout, stderr, exitCode };
    },
  };
}
