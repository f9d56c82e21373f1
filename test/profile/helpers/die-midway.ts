/**
 * @module test/profile/helpers/die-midway
 * A subprocess for the crash tests: runs `migrate-profile --apply [--strip]` through
 * migrateProfiles and SIGKILLs itself at the Nth step of the store transaction (mode "apply") or
 * just before the Nth profile rename (mode "strip"); N = 0 never kills.
 * Usage: bun die-midway.ts apply|strip N DB PATH...
 */
import { silentLogger } from "../../../core/log.ts";
import { migrateProfiles } from "../../../core/profile/migrate.ts";

const [mode, killAt, db, ...paths] = process.argv.slice(2);
const target = Number(killAt);
let steps = 0;
const tick = () => {
  steps++;
  if (steps === target) process.kill(process.pid, "SIGKILL");
};
await migrateProfiles(
  { paths, db: db!, apply: true, strip: mode === "strip", json: false, iptablesSave: [] },
  {
    logger: silentLogger,
    now: () => 1_700_000_000_000,
    out: () => {},
    onApplyStep: mode === "apply" ? tick : undefined,
    stripHooks: mode === "strip" ? { beforeRename: tick } : undefined,
  },
);
process.stdout.write(`completed steps=${steps}\n`);
