/**
 * @module core/log
 * The logger core is given (consola satisfies it). Core never creates its own; tests pass
 * `silentLogger` or a `recordingLogger` and assert on the key=value lines.
 */
export interface Logger {
  debug(message: string, ...args: unknown[]): void;
  info(message: string, ...args: unknown[]): void;
  warn(message: string, ...args: unknown[]): void;
  error(message: string, ...args: unknown[]): void;
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

export interface RecordedLine {
  level: "debug" | "info" | "warn" | "error";
  message: string;
}

/** A logger that keeps every line, for tests that assert on decisions. */
export function recordingLogger(): Logger & { lines: RecordedLine[] } {
  const lines: RecordedLine[] = [];
  const at = (level: RecordedLine["level"]) => (message: string) => {
    lines.push({ level, message });
  };
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}
