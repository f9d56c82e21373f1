/**
 * @module cmd/main
 * The waygate executable's entry point: builds the citty command tree, handles --help and
 * --version, runs the command and maps errors to exit statuses (core/errors.ts EXIT_STATUS).
 * The only place where platform adapters and core meet.
 */
import { defineCommand, renderUsage, runCommand, type CommandDef } from "citty";
import { exitStatusOf, isWaygateError, EXIT_STATUS } from "../core/errors.ts";
import { commands } from "./commands.ts";
import { waygateVersion } from "./version.ts";

export const main = defineCommand({
  meta: {
    name: "waygate",
    version: waygateVersion(),
    description: "Self-hosted overlay-network gateway",
  },
  subCommands: Object.fromEntries(Object.entries(commands).map(([name, entry]) => [name, entry.load])),
});

/** Top-level help: one line per command from the table, without loading any command module. */
function renderTopHelp(): string {
  const width = Math.max(...Object.keys(commands).map((n) => n.length)) + 2;
  const lines = [
    `waygate ${waygateVersion()} — self-hosted overlay-network gateway`,
    "",
    "USAGE waygate <command> [OPTIONS]",
    "",
    "COMMANDS",
    "",
    ...Object.entries(commands).map(([name, entry]) => `  ${name.padEnd(width)}${entry.summary}`),
    "",
    "Use waygate <command> --help for its options and examples. waygate --version prints the version.",
  ];
  return lines.join("\n");
}

/** Finds the innermost command the argv names (for --help on a subcommand). */
async function resolveTarget(rawArgs: string[]): Promise<[CommandDef<any>, CommandDef<any> | undefined]> {
  let cmd: CommandDef<any> = main;
  let parent: CommandDef<any> | undefined;
  for (const arg of rawArgs) {
    if (arg.startsWith("-")) continue;
    const subs = typeof cmd.subCommands === "function" ? await cmd.subCommands() : await cmd.subCommands;
    const next = subs?.[arg];
    if (!next) break;
    parent = cmd;
    cmd = typeof next === "function" ? await (next as () => Promise<CommandDef<any>>)() : await next;
  }
  return [cmd, parent];
}

export async function runCli(rawArgs: string[]): Promise<number> {
  if (rawArgs.length === 1 && (rawArgs[0] === "--version" || rawArgs[0] === "-V")) {
    console.log(waygateVersion());
    return 0;
  }
  if (rawArgs.length === 0 || rawArgs.includes("--help") || rawArgs.includes("-h")) {
    const [cmd, parent] = await resolveTarget(rawArgs);
    if (cmd === main) {
      console.log(renderTopHelp());
      return 0;
    }
    const name = rawArgs.find((a) => !a.startsWith("-") && a in commands);
    const examples = name ? commands[name]!.examples : [];
    const usage = (await renderUsage(cmd, parent)).replace(/\x1b\[[0-9;]*m/g, "");
    console.log(usage + (examples.length ? `\n\nEXAMPLES\n\n${examples.map((e) => `  ${e}`).join("\n")}` : "") + "\n");
    return 0;
  }
  try {
    await runCommand(main, { rawArgs });
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (isWaygateError(err)) {
      console.error(`error[${err.code}]: ${err.message}`);
      return exitStatusOf(err);
    }
    if (err instanceof Error && err.name === "CLIError") {
      console.error(`error[E_USAGE]: ${err.message.replace(/\x1b\[[0-9;]*m/g, "")}`);
      console.error("Run with --help for usage.");
      return EXIT_STATUS.E_USAGE;
    }
    console.error(`error[E_INTERNAL]: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return EXIT_STATUS.E_INTERNAL;
  }
}

if (import.meta.main) {
  const stdoutFlushed = trackPendingWrites(process.stdout);
  const stderrFlushed = trackPendingWrites(process.stderr);
  // No top-level await: the compiled binary is built with --bytecode, which wants CommonJS.
  void runCli(process.argv.slice(2)).then(async (code) => {
    await stdoutFlushed();
    await stderrFlushed();
    process.exit(code);
  });
}

/**
 * process.exit() right after a large write to a slow pipe (`waygate status --json | jq`) cuts
 * the output at 64 KB. Remember whether the last write was left queued (write() returned false)
 * and, before exiting, wait for that stream's 'drain' (or its end: a closed pipe drains nothing).
 * Exiting explicitly, not by letting the event loop end, because a long-running command (run,
 * serve, up) may leave harmless handles behind that must not delay its exit.
 */
function trackPendingWrites(stream: NodeJS.WriteStream): () => Promise<void> {
  let pending = false;
  const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
  stream.write = ((...args: unknown[]) => {
    const ok = write(...args);
    if (!ok) pending = true;
    return ok;
  }) as typeof stream.write;
  stream.on("drain", () => {
    pending = false;
  });
  return () =>
    pending
      ? new Promise<void>((resolve) => {
          stream.once("drain", resolve);
          stream.once("error", resolve);
          stream.once("close", resolve);
        })
      : Promise.resolve();
}
