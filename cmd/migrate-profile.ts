/**
 * @module cmd/migrate-profile
 * `waygate migrate-profile`: the ExitNode -> Gateway migration. Parses and validates the
 * arguments (valibot), resolves the default database path, wires stdout, the clock and a
 * logger into core/profile/migrate.ts, and lets WaygateErrors reach cmd/main.ts, which prints
 * `error[E_CODE]: message` and exits with the code's status.
 *
 * Tests run it in-process with `runCommand(cmd, { rawArgs, data: { out, logger, now, env, uid, home } })`.
 */
import { defineCommand } from "citty";
import { createConsola } from "consola";
import { homedir } from "node:os";
import * as v from "valibot";
import type { Logger } from "../core/log.ts";
import type { Clock } from "../core/runner.ts";
import { MigrateUsageError } from "../core/profile/errors.ts";
import { migrateProfiles, type MigrateResult } from "../core/profile/migrate.ts";
import { defaultDbPath } from "../core/store/paths.ts";

/** What tests (or an embedding program) may inject through citty's `data`. */
export interface MigrateCommandData {
  out?: (text: string) => void;
  logger?: Logger;
  now?: Clock;
  env?: Record<string, string | undefined>;
  uid?: number;
  home?: string;
  onApplyStep?: (step: string) => void;
}

const STRING_FLAGS = new Set(["--identity", "--db", "--iptables-save", "--iptablesSave"]);
const BOOLEAN_FLAGS = new Set(["--apply", "--strip", "--json", "--no-apply", "--no-strip", "--no-json"]);

/**
 * Reads the raw argv ourselves for what citty's parser cannot express: repeated
 * --iptables-save, and unknown options (which it would silently accept).
 */
export function scanRawArgs(rawArgs: readonly string[]): { iptablesSave: string[] } {
  const iptablesSave: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]!;
    if (arg === "--") break;
    if (!arg.startsWith("-") || arg === "-") continue;
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    if (STRING_FLAGS.has(name)) {
      const value = eq >= 0 ? arg.slice(eq + 1) : rawArgs[++i];
      if (value === undefined || value === "") throw new MigrateUsageError(`${name} needs a value`);
      if (name === "--iptables-save" || name === "--iptablesSave") iptablesSave.push(value);
      continue;
    }
    if (BOOLEAN_FLAGS.has(name) && eq < 0) continue;
    throw new MigrateUsageError(`unknown option ${name} (see waygate migrate-profile --help)`);
  }
  return { iptablesSave };
}

const NonEmpty = (what: string) => v.pipe(v.string(`${what} must be text`), v.minLength(1, `${what} must not be empty`));

const ArgsSchema = v.object({
  paths: v.pipe(v.array(NonEmpty("a profile path")), v.minLength(1, "give at least one profile file or fleet directory")),
  identity: v.optional(NonEmpty("--identity")),
  db: v.optional(NonEmpty("--db")),
  apply: v.boolean(),
  strip: v.boolean(),
  json: v.boolean(),
  iptablesSave: v.array(NonEmpty("--iptables-save")),
});

export default defineCommand({
  meta: {
    name: "migrate-profile",
    description:
      "Migrate Enclave-style ExitNode settings (Universe.profile) into Waygate gateways and gateway access policies. " +
      "Prints the plan and writes nothing unless --apply. " +
      "Example: waygate migrate-profile ./fleet --iptables-save G982V=g982v.rules --apply --strip",
  },
  args: {
    paths: {
      type: "positional",
      description: "Universe.profile files or fleet directories (one folder per machine, or IDENTITY.profile files)",
      valueHint: "PROFILE|DIR",
      required: true,
    },
    identity: {
      type: "string",
      description: "Identity of the system a single profile belongs to, when the profile does not say",
      valueHint: "ID",
    },
    db: {
      type: "string",
      description: "Policy store database (default: $WAYGATE_STATE_DIR/waygate.db, /var/lib/waygate/waygate.db as root, else ~/.local/state/waygate/waygate.db)",
      valueHint: "PATH",
    },
    apply: { type: "boolean", description: "Write the plan to the store (one transaction); refused while the plan has errors", default: false },
    strip: { type: "boolean", description: "With --apply: rewrite each profile's ExitNode to {} atomically, keeping FILE.bak", default: false },
    json: { type: "boolean", description: "Print the plan as JSON for scripts", default: false },
    "iptables-save": {
      type: "string",
      description: "iptables-save output from a gateway holding the manual SNAT rules; repeatable; IDENTITY=FILE says whose it is",
      valueHint: "[ID=]FILE",
    },
  },
  async run({ args, rawArgs, data }): Promise<MigrateResult> {
    const injected = (data ?? {}) as MigrateCommandData;
    const { iptablesSave } = scanRawArgs(rawArgs);
    const parsed = v.safeParse(ArgsSchema, {
      paths: [...args._],
      identity: args.identity,
      db: args.db,
      apply: args.apply === true,
      strip: args.strip === true,
      json: args.json === true,
      iptablesSave,
    });
    if (!parsed.success) throw new MigrateUsageError(parsed.issues.map((i) => i.message).join("; "));
    const opts = parsed.output;
    const env = injected.env ?? process.env;
    const uid = injected.uid ?? (typeof process.getuid === "function" ? process.getuid() : 1000);
    const db = opts.db ?? defaultDbPath(env, uid, injected.home ?? homedir());
    // Logs go to stderr so stdout stays the plan (and valid JSON with --json).
    const level = Number.parseInt(env.CONSOLA_LEVEL ?? "", 10);
    const logger = injected.logger ?? createConsola({ level: Number.isNaN(level) ? 1 : level, stdout: process.stderr, stderr: process.stderr });
    return migrateProfiles(
      { paths: opts.paths, identity: opts.identity, db, apply: opts.apply, strip: opts.strip, json: opts.json, iptablesSave: opts.iptablesSave },
      {
        logger,
        now: injected.now ?? (() => Date.now()),
        out: injected.out ?? ((text) => void process.stdout.write(text)),
        onApplyStep: injected.onApplyStep,
      },
    );
  },
});
