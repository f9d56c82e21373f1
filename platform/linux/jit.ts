/**
 * @module platform/linux/jit
 * The JIT workaround the data plane needs: FFI hot loops in Workers stalled, wrote truncated
 * packets or crashed under Bun's default JIT settings, and `BUN_JSC_useOSREntryToDFG=false`
 * made every run clean (BUN-NOTES.md, Traps). JSC reads BUN_JSC_* once at process start, so
 * setting process.env later does nothing for this process: the CLI calls ensureJitWorkaround()
 * first thing, and when the variable is missing the process re-execs itself (same executable,
 * same arguments, same environment plus the variable, inherited stdio), forwards signals to the
 * child and exits with its status. Works for `bun cmd/main.ts ...` and for the compiled binary.
 */
export const JIT_ENV = "BUN_JSC_useOSREntryToDFG";

export function hasJitWorkaround(env: Record<string, string | undefined> = process.env): boolean {
  const v = env[JIT_ENV];
  return v === "false" || v === "0";
}

/** The argv to re-exec this process with. A compiled binary's argv[1] is its embedded entry. */
export function reexecArgv(execPath: string, argv: readonly string[]): string[] {
  const compiled = argv[1]?.startsWith("/$bunfs/") || argv[1]?.startsWith("B:/~BUN/");
  return [execPath, ...argv.slice(compiled ? 2 : 1)];
}

export interface JitDeps {
  env?: Record<string, string | undefined>;
  execPath?: string;
  argv?: readonly string[];
  exit?: (status: number) => never;
}

/**
 * Resolves true when the workaround is in effect. Otherwise runs this program again with it
 * set and exits with the child's status: the returned promise then never settles, so
 * `await ensureJitWorkaround()` at the top of main is all a caller writes.
 */
export async function ensureJitWorkaround(deps: JitDeps = {}): Promise<boolean> {
  const env = deps.env ?? process.env;
  if (hasJitWorkaround(env)) return true;
  const child = Bun.spawn(reexecArgv(deps.execPath ?? process.execPath, deps.argv ?? process.argv), {
    env: { ...env, [JIT_ENV]: "false" },
    stdio: ["inherit", "inherit", "inherit"],
  });
  const forward = (signal: NodeJS.Signals) => () => child.kill(signal);
  const handlers = (["SIGINT", "SIGTERM", "SIGHUP"] as const).map((s) => [s, forward(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);
  const code = await child.exited;
  for (const [s, h] of handlers) process.off(s, h);
  const status = child.signalCode ? 128 + (signalNumbers[child.signalCode] ?? 0) : code;
  (deps.exit ?? ((c: number) => process.exit(c)))(status);
  return new Promise<boolean>(() => {});
}

const signalNumbers: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGSEGV: 11, SIGTERM: 15, SIGABRT: 6 };
