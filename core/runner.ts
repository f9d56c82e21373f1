/**
 * @module core/runner
 * The CommandRunner interface core declares; platform/exec.ts implements it (spawning processes there) and
 * tests use state-modelling fakes. Core itself never spawns processes.
 */
export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface RunOptions {
  /** Text written to the command's stdin. */
  input?: string;
  /** Return a non-zero exit instead of throwing CommandError. */
  allowFailure?: boolean;
}

export interface CommandRunner {
  run(argv: readonly string[], options?: RunOptions): Promise<CommandResult>;
}

/** A clock; core reads time only through this. Milliseconds since the epoch. */
export type Clock = () => number;
