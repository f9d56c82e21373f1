/**
 * @module test/profile/helpers/fixtures
 * Shared by the profile, store and migrate-profile tests: fixture paths, throwaway copies of
 * fleets, the fake private keys every fixture carries, and an in-process runner for the
 * migrate-profile command that captures its output and logs.
 */
import { runCommand } from "citty";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import command from "../../../cmd/migrate-profile.ts";
import { recordingLogger, type RecordedLine } from "../../../core/log.ts";
import type { MigrateResult } from "../../../core/profile/migrate.ts";

export const ROOT = join(import.meta.dir, "..", "..", "..");
export const PROFILES = join(ROOT, "test", "fixtures", "profiles");
export const IPTABLES = join(ROOT, "test", "fixtures", "iptables");
/** base64 of "waygate-fixture-secret": the start of every fixture PrivateKey. */
export const SECRET_MARK = "d2F5Z2F0ZS1maXh0dXJlLXNlY3JldD";

const temps: string[] = [];

/**
 * Removes every temp dir made so far. bun test evaluates this module once for all the files
 * that import it, so each such file calls `afterAll(removeTemps)` itself.
 */
export function removeTemps(): void {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
}

/** A fresh temp directory, removed after the test file. */
export function tempDir(prefix = "waygate-profile-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

/** Copies test/fixtures/profiles/<name> into a temp dir and returns the copy's path. */
export function copyFixture(name: string): string {
  const dir = tempDir();
  const target = join(dir, name.replaceAll("/", "_"));
  cpSync(join(PROFILES, name), target, { recursive: true });
  return target;
}

function walk(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

/** Every PrivateKey value in the fixtures (a truncated file's partial key included), plus the decoded text. */
export function fixtureSecrets(): string[] {
  const secrets = new Set<string>();
  for (const file of walk(PROFILES)) {
    for (const m of readFileSync(file, "utf8").matchAll(/"PrivateKey":\s*"([A-Za-z0-9+/=]*)/g)) {
      const key = m[1]!;
      if (key.length < 16) continue;
      secrets.add(key);
      // A 16-character run from its start, middle or end is enough to count as a leak.
      secrets.add(key.slice(0, 16));
      secrets.add(key.slice(28, 44));
      secrets.add(key.slice(-16));
      secrets.add(Buffer.from(key, "base64").toString("latin1").slice(0, 30));
    }
  }
  secrets.add(SECRET_MARK);
  secrets.add("waygate-fixture-secret");
  return [...secrets].filter((s) => s.length >= 12);
}

export interface CommandRun {
  out: string;
  lines: RecordedLine[];
  error: (Error & { code?: string; exitStatus?: number }) | null;
  result: MigrateResult | null;
}

/** Runs `waygate migrate-profile ...rawArgs` in-process, capturing everything it prints or logs. */
export async function runMigrateCommand(
  rawArgs: string[],
  options: { now?: () => number; env?: Record<string, string>; home?: string; uid?: number; onApplyStep?: (s: string) => void } = {},
): Promise<CommandRun> {
  let out = "";
  const logger = recordingLogger();
  let error: CommandRun["error"] = null;
  let result: MigrateResult | null = null;
  try {
    const r = await runCommand(command, {
      rawArgs,
      data: {
        out: (t: string) => {
          out += t;
        },
        logger,
        now: options.now ?? (() => 1_700_000_000_000),
        env: options.env ?? {},
        uid: options.uid ?? 1000,
        home: options.home ?? tempDir("waygate-home-"),
        onApplyStep: options.onApplyStep,
      },
    });
    result = r.result as MigrateResult;
  } catch (err) {
    error = err as CommandRun["error"];
  }
  return { out, lines: logger.lines, error, result };
}

/** The bytes of a database and its WAL/SHM files, as latin1 text, for leak checks. */
export function databaseBytes(db: string): string {
  let all = "";
  for (const suffix of ["", "-wal", "-shm"]) {
    try {
      all += readFileSync(db + suffix).toString("latin1");
    } catch {
      // not there
    }
  }
  return all;
}
