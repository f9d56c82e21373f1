/**
 * @module test/cmd/migrate-profile.test
 * `waygate migrate-profile` end to end: in-process through citty's runCommand (output, logs and
 * the thrown WaygateError captured), plus two real runs through cmd/main.ts for the exit status
 * and the `error[E_CODE]` line. Covers the dry-run plan, --json, --apply twice, --strip twice,
 * every malformed fixture (its code, exit status and message, and nothing written), and that no
 * fixture's private key ever reaches stdout, stderr, logs, error messages or the database.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { openSqliteStore } from "../../core/store/sqlite.ts";
import { scanRawArgs } from "../../cmd/migrate-profile.ts";
import {
  copyFixture,
  databaseBytes,
  fixtureSecrets,
  IPTABLES,
  PROFILES,
  removeTemps,
  ROOT,
  runMigrateCommand,
  tempDir,
  type CommandRun,
} from "../profile/helpers/fixtures.ts";

afterAll(removeTemps);

const rel = (p: string) => relative(ROOT, p);
const clean = (text: string) => text.replaceAll(`${ROOT}/`, "");

function expectNoSecrets(what: string, text: string): void {
  for (const s of fixtureSecrets()) expect(text.includes(s), `${what} contains ${s}`).toBe(false);
}

function everything(run: CommandRun): string {
  return [run.out, run.error?.message ?? "", String(run.error?.stack ?? ""), ...run.lines.map((l) => l.message)].join("\n");
}

async function dumpOf(db: string): Promise<string> {
  const store = await openSqliteStore(db, { now: () => 0, readonly: true });
  try {
    return await store.dump();
  } finally {
    store.close();
  }
}

function filesUnder(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[relative(dir, p)] = readFileSync(p).toString("latin1");
    }
  };
  walk(dir);
  return out;
}

describe("waygate migrate-profile", () => {
  test("dry run of the demo fleet prints the plan, exits 8 for its error, creates nothing", async () => {
    const home = tempDir("waygate-home-");
    const run = await runMigrateCommand([rel(join(PROFILES, "fleet")), "--iptables-save", rel(join(IPTABLES, "gateway-office.iptables-save"))], { home });
    expect([run.error?.code, run.error?.exitStatus]).toEqual(["E_MIGRATION_CONFLICT", 8]);
    expect(run.error?.message).toBe(
      "the plan has 1 error; fix the profiles and run again:\n" +
        "  subnet-partly-provided: test/fixtures/profiles/fleet/desktop-bob/Universe.profile:51:9: K4M2P (desktop-bob) asks for 172.84.0.0/19 via G982V, " +
        "but G982V provides only part of it (172.84.0.0/20); ask for what it provides or add the rest to its ProvidesRoutes",
    );
    const db = join(home, ".local", "state", "waygate", "waygate.db");
    expect(run.out.split("\n")[0]).toBe(`Migration plan (dry run; --apply to write to ${db})`);
    expect(run.out).toContain("Conflicts (1 error, 3 warnings)\n  error    subnet-partly-provided  test/fixtures/profiles/fleet/desktop-bob/Universe.profile:51:9\n");
    expect(run.out).toContain("  warning  failover-candidates\n           G982V and Q8QW8: both provide 172.84.0.0/20; they become failover candidates");
    expect(existsSync(join(home, ".local"))).toBe(false);
  });

  test("dry run of the clean fleet: the whole plan, as text", async () => {
    const run = await runMigrateCommand(
      [rel(join(PROFILES, "fleet-clean")), "--iptables-save", `G982V=${rel(join(IPTABLES, "gateway-office.iptables-save"))}`, "--db", "/var/lib/waygate/waygate.db", "--strip"],
    );
    expect(run.error).toBeNull();
    expect(clean(run.out)).toBe(
      [
        "Migration plan (dry run; --apply to write to /var/lib/waygate/waygate.db)",
        "Profiles (4)",
        "  G982V  gateway-office  gateway  test/fixtures/profiles/fleet-clean/G982V.profile",
        "  M5T3K  build-runner    client   test/fixtures/profiles/fleet-clean/M5T3K.profile",
        "  Q8QW8  gateway-dc      gateway  test/fixtures/profiles/fleet-clean/Q8QW8.profile",
        "  Y7299  laptop-alice    client   test/fixtures/profiles/fleet-clean/Y7299.profile",
        "Gateways",
        "  G982V (gateway-office)  allowed to act as gateway",
        "    172.26.0.0/20  NAT on (to 172.26.0.1)  (was manual SNAT to 172.26.0.1 — now managed)",
        "    172.84.0.0/20  NAT on (to 172.84.0.1)  (was manual SNAT to 172.84.0.1 — now managed)",
        "  Q8QW8 (gateway-dc)  allowed to act as gateway",
        "    10.0.0.0/24  NAT on",
        "Gateway access policies",
        "  migrated-M5T3K-via-G982V: tag migrated-M5T3K -> G982V 172.26.4.0/24, 172.84.0.0/20",
        "  migrated-Y7299-via-G982V: tag migrated-Y7299 -> G982V 172.26.0.0/20",
        "  migrated-Y7299-via-Q8QW8: tag migrated-Y7299 -> Q8QW8 10.0.0.0/24",
        "Tags",
        "  migrated-M5T3K on M5T3K (build-runner)",
        "  migrated-Y7299 on Y7299 (laptop-alice)",
        "Manual SNAT rules Waygate now manages (remove them once the gateway runs Waygate)",
        '  G982V 172.26.0.0/20  test/fixtures/iptables/gateway-office.iptables-save:30  -A POSTROUTING -s 100.64.0.0/10 -d 172.26.0.0/20 -o eth0 -m comment --comment "enclave exit node: office LAN" -j SNAT --to-source 172.26.0.1',
        '    iptables -t nat -D POSTROUTING -s 100.64.0.0/10 -d 172.26.0.0/20 -o eth0 -m comment --comment "enclave exit node: office LAN" -j SNAT --to-source 172.26.0.1',
        "  G982V 172.84.0.0/20  test/fixtures/iptables/gateway-office.iptables-save:31  -A POSTROUTING -s 100.64.0.0/10 -d 172.84.0.0/20 -o eth1 -j SNAT --to-source 172.84.0.1",
        "    iptables -t nat -D POSTROUTING -s 100.64.0.0/10 -d 172.84.0.0/20 -o eth1 -j SNAT --to-source 172.84.0.1",
        "Profiles to strip with --apply --strip (ExitNode becomes {}, original kept as .bak)",
        "  test/fixtures/profiles/fleet-clean/M5T3K.profile",
        "  test/fixtures/profiles/fleet-clean/Y7299.profile",
        "  test/fixtures/profiles/fleet-clean/G982V.profile",
        "  test/fixtures/profiles/fleet-clean/Q8QW8.profile",
        "Conflicts (0 errors, 2 warnings)",
        "  warning  snat-not-recognised  test/fixtures/iptables/gateway-office.iptables-save:32",
        "           NAT rule left alone: it also matches -p tcp -m tcp --dport 443: -A POSTROUTING -s 100.64.0.0/10 -d 192.168.77.0/24 -p tcp -m tcp --dport 443 -j SNAT --to-source 192.168.77.2",
        "  warning  snat-unmatched  test/fixtures/iptables/gateway-office.iptables-save:33",
        "           SNAT rule for 10.200.0.0/16 matches no subnet G982V provides; left in place",
        "Summary: 4 systems, 2 gateways (3 subnets), 3 policies; 0 errors, 2 warnings.",
        "",
      ].join("\n"),
    );
    expect(run.lines.map((l) => l.message)).toContain("migrate: mode=dry-run profiles=4 gateways=2 policies=3 errors=0 warnings=2 store_gateways=0");
  });

  test("--json is one JSON document for scripts", async () => {
    const run = await runMigrateCommand([join(PROFILES, "fleet"), "--json", "--db", "/nonexistent/w.db"]);
    expect(run.error?.code).toBe("E_MIGRATION_CONFLICT");
    const doc = JSON.parse(run.out);
    expect(doc.version).toBe(1);
    expect([doc.mode, doc.written, doc.errors, doc.warnings]).toEqual(["dry-run", false, 1, 1]);
    expect(doc.gateways.map((g: { identity: string }) => g.identity)).toEqual(["G982V", "Q8QW8"]);
    expect(doc.policies).toEqual([
      { name: "migrated-Y7299-via-G982V", senderTags: ["migrated-Y7299"], client: "Y7299", gateway: "G982V", subnets: ["172.26.0.0/20"], gatewayFromStore: false },
      { name: "migrated-Y7299-via-Q8QW8", senderTags: ["migrated-Y7299"], client: "Y7299", gateway: "Q8QW8", subnets: ["10.0.0.0/24"], gatewayFromStore: false },
    ]);
    expect(doc.conflicts.map((c: { severity: string; kind: string }) => `${c.severity} ${c.kind}`)).toEqual([
      "warning failover-candidates",
      "error subnet-partly-provided",
    ]);
    expect(doc.profiles.map((p: { identity: string }) => p.identity)).toEqual(["G982V", "K4M2P", "Q8QW8", "Y7299"]);
    expect(doc.profiles[1]).toEqual({
      file: join(PROFILES, "fleet", "desktop-bob", "Universe.profile"),
      identity: "K4M2P",
      identitySources: ["certificate"],
      name: "desktop-bob",
      provides: [],
      uses: { G982V: ["172.84.0.0/19"] },
    });
  });

  test("--apply twice: the same store; --strip twice: byte-identical profiles", async () => {
    const fleet = copyFixture("fleet-clean");
    const db = join(tempDir(), "state", "waygate.db");
    const ipt = join(IPTABLES, "gateway-office.iptables-save");
    const first = await runMigrateCommand([fleet, "--db", db, "--apply", "--strip", "--iptables-save", ipt], { now: () => 1000 });
    expect(first.error).toBeNull();
    expect(first.out.split("\n")[0]).toBe(`Migration applied to ${db}`);
    expect(first.out).toContain(
      "Applied: systems 4 created, 0 updated, 0 unchanged; gateway subnets 3 created, 0 updated, 0 unchanged; tags 2 created, 0 updated, 0 unchanged; policies 3 created, 0 updated, 0 unchanged; 14 audit entries",
    );
    expect(first.out).toContain(`  ${join(fleet, "G982V.profile")}  (original kept as ${join(fleet, "G982V.profile")}.bak)`);
    const dump1 = await dumpOf(db);
    expect(dump1).toContain(',"172.26.0.0/20",1,"172.26.0.1","migrated",1000,1000,100,0,0,1]');
    const files1 = filesUnder(fleet);
    expect(Object.keys(files1).sort()).toEqual([
      "G982V.profile",
      "G982V.profile.bak",
      "M5T3K.profile",
      "M5T3K.profile.bak",
      "Q8QW8.profile",
      "Q8QW8.profile.bak",
      "Y7299.profile",
      "Y7299.profile.bak",
    ]);
    for (const f of ["G982V", "M5T3K", "Q8QW8", "Y7299"]) {
      expect(files1[`${f}.profile.bak`]).toBe(readFileSync(join(PROFILES, "fleet-clean", `${f}.profile`)).toString("latin1"));
      expect(JSON.parse(files1[`${f}.profile`]!).ExitNode).toEqual({});
    }

    // The second run sees stripped profiles and the gateways in the store: nothing to do.
    const second = await runMigrateCommand([fleet, "--db", db, "--apply", "--strip", "--iptables-save", ipt], { now: () => 999_999 });
    expect(second.error).toBeNull();
    expect(second.out).toContain("Applied: systems 0 created, 0 updated, 4 unchanged;");
    expect(second.out).toContain("; 0 audit entries");
    expect(second.out).toContain("Profiles stripped (ExitNode is now {}, original kept as .bak)\n  (none: every ExitNode was already {} or absent)\n");
    expect(await dumpOf(db)).toBe(dump1);
    expect(filesUnder(fleet)).toEqual(files1);
  });

  test("--apply on a plan with errors writes nothing: no database, profiles untouched", async () => {
    const fleet = copyFixture("fleet");
    const before = filesUnder(fleet);
    const db = join(tempDir(), "w.db");
    const run = await runMigrateCommand([fleet, "--db", db, "--apply", "--strip"]);
    expect([run.error?.code, run.error?.exitStatus]).toEqual(["E_MIGRATION_CONFLICT", 8]);
    expect(run.error?.message).toStartWith(`refusing to write: the plan has 1 error; nothing was written to ${db} and no profile was changed:\n`);
    expect(run.out.split("\n")[0]).toBe(`Migration plan (--apply: nothing written to ${db})`);
    expect(existsSync(db)).toBe(false);
    expect(filesUnder(fleet)).toEqual(before);
  });

  const malformed: [string, string, number, string][] = [
    ["bad/bad-json.profile", "E_PROFILE_JSON", 5, "bad-json.profile:27:3: invalid JSON: expected ',' or '}' after a property value, found '\"'"],
    ["bad/truncated.profile", "E_PROFILE_JSON", 5, "truncated.profile:21:21: invalid JSON: unterminated string"],
    ["bad/bad-cidr.profile", "E_PREFIX_INVALID", 3, 'ExitNode.AvailableRoutes.G982V[1]: "172.26.0.0/33" is not a valid IPv4 prefix: length 33 is out of range 0..32'],
    ["bad/host-bits.profile", "E_PREFIX_INVALID", 3, "host bits are set (did you mean 172.26.0.0/20?)"],
    ["bad/wrong-types.profile", "E_PROFILE_INVALID", 6, "ExitNode.ProvidesRoutes: expected an array of CIDR prefix strings, got a string"],
    ["bad/bad-gateway-key.profile", "E_PROFILE_INVALID", 6, 'gateway "g982v" is not a system identity'],
    ["bad/not-an-object.profile", "E_PROFILE_INVALID", 6, "expected a JSON object (a Universe.profile) at the top level, got an array"],
    ["bad/R2D2X.profile", "E_IDENTITY_CONFLICT", 7, "says Y7299 but the file name says R2D2X"],
    ["bad/no-identity", "E_IDENTITY_MISSING", 7, "cannot tell which system this profile belongs to"],
    ["bad/unknown-gateway.profile", "E_MIGRATION_CONFLICT", 8, "uses gateway X0X0X (ExitNode.AvailableRoutes.X0X0X), but no profile given is X0X0X"],
  ];
  for (const [name, code, status, message] of malformed) {
    test(`${name}: ${code}, exit ${status}, its message, nothing written even with --apply --strip`, async () => {
      const dir = copyFixture("bad");
      const before = filesUnder(dir);
      const db = join(tempDir(), "w.db");
      const run = await runMigrateCommand([join(dir, name.slice("bad/".length)), "--db", db, "--apply", "--strip"]);
      expect([run.error?.code, run.error?.exitStatus]).toEqual([code, status]);
      expect(run.error?.message).toContain(message);
      expect(existsSync(db)).toBe(false);
      expect(filesUnder(dir)).toEqual(before);
    });
  }

  test("--identity fills in for a profile that does not say", async () => {
    const run = await runMigrateCommand([join(PROFILES, "bad", "no-identity"), "--identity", "B4DN0", "--json", "--db", "/nonexistent/w.db"]);
    // Its gateway is not in the fleet: the identity resolved, the plan says what is missing.
    expect(run.error?.code).toBe("E_MIGRATION_CONFLICT");
    expect(JSON.parse(run.out).profiles[0].identitySources).toEqual(["flag"]);
  });

  test("iptables-save problems: unreadable, not iptables-save, pinned to an unknown gateway", async () => {
    const fleet = join(PROFILES, "fleet-clean");
    const missing = await runMigrateCommand([fleet, "--iptables-save", "/nonexistent/rules"]);
    expect([missing.error?.code, missing.error?.exitStatus, missing.error?.message]).toEqual(["E_IPTABLES_SAVE_INVALID", 9, "/nonexistent/rules: no such file"]);
    const notIpt = await runMigrateCommand([fleet, "--iptables-save", join(IPTABLES, "bad-not-iptables.txt")]);
    expect(notIpt.error?.code).toBe("E_IPTABLES_SAVE_INVALID");
    const unknown = await runMigrateCommand([fleet, "--iptables-save", `Z0Z0Z=${join(IPTABLES, "gateway-dc.iptables-save")}`, "--db", "/nonexistent/w.db"]);
    expect(unknown.error?.code).toBe("E_MIGRATION_CONFLICT");
    expect(unknown.error?.message).toContain("snat-unknown-gateway");
  });

  test("usage errors are E_USAGE (exit 2)", async () => {
    for (const args of [
      [join(PROFILES, "fleet"), "--identity", "G982V"],
      [join(PROFILES, "fleet"), "--frobnicate"],
      [join(PROFILES, "fleet"), "--db"],
      [join(PROFILES, "fleet"), "--identity", "nope"],
    ]) {
      const run = await runMigrateCommand(args);
      expect([run.error?.code, run.error?.exitStatus], args.join(" ")).toEqual(["E_USAGE", 2]);
    }
    const none = await runMigrateCommand([]);
    expect(none.error?.name).toBe("CLIError"); // cmd/main.ts maps citty's errors to E_USAGE
  });

  test("scanRawArgs collects repeated --iptables-save and rejects unknown options", () => {
    expect(scanRawArgs(["a", "--iptables-save", "x", "--iptables-save=G982V=y", "--apply", "--", "--weird"]).iptablesSave).toEqual(["x", "G982V=y"]);
    expect(() => scanRawArgs(["--apply=yes"])).toThrow("unknown option --apply");
  });

  test("the default database: WAYGATE_STATE_DIR, /var/lib/waygate as root", async () => {
    const asRoot = await runMigrateCommand([join(PROFILES, "fleet-clean")], { uid: 0 });
    expect(asRoot.out.split("\n")[0]).toBe("Migration plan (dry run; --apply to write to /var/lib/waygate/waygate.db)");
    const explicit = await runMigrateCommand([join(PROFILES, "fleet-clean")], { uid: 0, env: { WAYGATE_STATE_DIR: "/srv/wg" } });
    expect(explicit.out.split("\n")[0]).toBe("Migration plan (dry run; --apply to write to /srv/wg/waygate.db)");
  });

  test("no private key reaches stdout, logs, errors or the database, on any path", async () => {
    const fleet = copyFixture("fleet-clean");
    const demo = copyFixture("fleet");
    const bad = copyFixture("bad");
    const db = join(tempDir(), "w.db");
    const ipt = join(IPTABLES, "gateway-office.iptables-save");
    // The detector itself works: the profiles on disk do hold the keys.
    expect(fixtureSecrets().length).toBeGreaterThan(20);
    expect(() => expectNoSecrets("a profile", readFileSync(join(fleet, "G982V.profile"), "utf8"))).toThrow();
    const runs: [string, string[]][] = [
      ["dry run", [fleet, "--db", db, "--iptables-save", ipt, "--strip"]],
      ["dry run json", [fleet, "--db", db, "--json", "--strip"]],
      ["demo conflicts", [demo, "--db", db, "--apply"]],
      ["demo conflicts json", [demo, "--db", db, "--json"]],
      ["apply strip", [fleet, "--db", db, "--apply", "--strip", "--iptables-save", ipt]],
      ["apply strip again", [fleet, "--db", db, "--apply", "--strip", "--json"]],
      ["whole bad dir", [bad, "--db", db]],
      ...readdirSync(bad).map((f): [string, string[]] => [f, [join(bad, f), "--db", db, "--apply", "--strip"]]),
    ];
    for (const [what, args] of runs) {
      const run = await runMigrateCommand(args);
      expectNoSecrets(what, everything(run));
    }
    expect(existsSync(db)).toBe(true);
    expectNoSecrets("database", databaseBytes(db));
    expectNoSecrets("dump", await dumpOf(db));
  });

  test("through cmd/main.ts: exit status, error[E_CODE] on stderr, JSON alone on stdout", () => {
    const main = join(ROOT, "cmd", "main.ts");
    const bad = Bun.spawnSync([process.execPath, main, "migrate-profile", rel(join(PROFILES, "bad", "bad-cidr.profile"))], { cwd: ROOT, env: { ...process.env, NO_COLOR: "1" } });
    expect(bad.exitCode).toBe(3);
    expect(bad.stderr.toString()).toBe(
      'error[E_PREFIX_INVALID]: test/fixtures/profiles/bad/bad-cidr.profile:47:9: ExitNode.AvailableRoutes.G982V[1]: "172.26.0.0/33" is not a valid IPv4 prefix: length 33 is out of range 0..32\n',
    );
    expect(bad.stdout.toString()).toBe("");
    const home = tempDir("waygate-home-");
    const ok = Bun.spawnSync([process.execPath, main, "migrate-profile", rel(join(PROFILES, "fleet-clean")), "--json"], {
      cwd: ROOT,
      env: { ...process.env, NO_COLOR: "1", HOME: home, XDG_STATE_HOME: "", WAYGATE_STATE_DIR: "" },
    });
    expect(ok.exitCode).toBe(0);
    expect(JSON.parse(ok.stdout.toString()).policies).toHaveLength(3);
    expectNoSecrets("stderr", ok.stderr.toString() + bad.stderr.toString());
  });
});
