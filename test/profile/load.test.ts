/**
 * @module test/profile/load.test
 * Finding a fleet's profiles and settling each one's identity: certificate, --identity and an
 * IDENTITY.profile file name must agree; none at all, or two profiles with one identity, is an
 * error; every broken file is reported in one run.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { recordingLogger, silentLogger } from "../../core/log.ts";
import { FleetLoadError } from "../../core/profile/errors.ts";
import { findProfileFiles, identityFromFileName, loadProfiles } from "../../core/profile/load.ts";
import { PROFILES, removeTemps, tempDir } from "./helpers/fixtures.ts";

afterAll(removeTemps);

const deps = { logger: silentLogger };

async function failure(p: Promise<unknown>): Promise<Error & { code: string; exitStatus: number }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code: string; exitStatus: number };
  }
  throw new Error("did not fail");
}

describe("findProfileFiles", () => {
  test("a fleet of one folder per machine: every Universe.profile, sorted", async () => {
    const files = await findProfileFiles([join(PROFILES, "fleet")]);
    expect(files.map((f) => f.slice(PROFILES.length + 1))).toEqual([
      "fleet/desktop-bob/Universe.profile",
      "fleet/gateway-dc/Universe.profile",
      "fleet/gateway-office/Universe.profile",
      "fleet/laptop-alice/Universe.profile",
    ]);
  });

  test("skips .bak copies and hidden temp files; a file reached twice counts once", async () => {
    const dir = tempDir();
    cpSync(join(PROFILES, "fleet-clean"), dir, { recursive: true });
    writeFileSync(join(dir, "G982V.profile.bak"), "{}");
    writeFileSync(join(dir, ".G982V.profile.waygate-strip.tmp"), "{}");
    mkdirSync(join(dir, ".git"));
    writeFileSync(join(dir, ".git", "X.profile"), "{}");
    symlinkSync(join(dir, "G982V.profile"), join(dir, "ALIAS.profile"));
    const files = await findProfileFiles([dir, join(dir, "Q8QW8.profile")]);
    expect(files.map((f) => f.slice(dir.length + 1))).toEqual(["G982V.profile", "M5T3K.profile", "Q8QW8.profile", "Y7299.profile"]);
  });

  test("missing paths and empty directories are E_PROFILE_READ (exit 4); no paths is E_USAGE", async () => {
    const missing = await failure(findProfileFiles(["/nonexistent/Universe.profile"]));
    expect([missing.code, missing.exitStatus, missing.message]).toEqual(["E_PROFILE_READ", 4, "/nonexistent/Universe.profile: no such file or directory"]);
    const empty = tempDir();
    expect((await failure(findProfileFiles([empty]))).message).toBe(`${empty}: no *.profile files in this directory`);
    expect((await failure(findProfileFiles([]))).code).toBe("E_USAGE");
  });

  test("identityFromFileName takes only identity-shaped names", () => {
    expect(identityFromFileName("/x/Y7299.profile")).toBe("Y7299");
    expect(identityFromFileName("/x/Universe.profile")).toBeNull();
    expect(identityFromFileName("/x/gateway-office.profile")).toBeNull();
    expect(identityFromFileName("/x/y7299.profile")).toBeNull();
    expect(identityFromFileName("/x/Y7299.json")).toBeNull();
  });
});

describe("loadProfiles", () => {
  test("identity from the certificate, the file name, or both when they agree; logged once per file", async () => {
    const logger = recordingLogger();
    const loaded = await loadProfiles({ paths: [join(PROFILES, "fleet-clean")] }, { logger });
    expect(loaded.map((p) => [p.identity, p.sources.join(",")])).toEqual([
      ["G982V", "certificate,filename"],
      ["M5T3K", "filename"],
      ["Q8QW8", "certificate,filename"],
      ["Y7299", "certificate,filename"],
    ]);
    expect(logger.lines.filter((l) => l.message.startsWith("profile: ")).map((l) => l.message.replace(/file=\S+\//, "file="))).toEqual([
      "profile: file=G982V.profile identity=G982V from=certificate,filename",
      "profile: file=M5T3K.profile identity=M5T3K from=filename",
      "profile: file=Q8QW8.profile identity=Q8QW8 from=certificate,filename",
      "profile: file=Y7299.profile identity=Y7299 from=certificate,filename",
    ]);
  });

  test("--identity names a single profile that says nothing itself", async () => {
    const file = join(PROFILES, "bad", "no-identity", "Universe.profile");
    const [p] = await loadProfiles({ paths: [file], identity: "B4DN0" }, deps);
    expect([p!.identity, p!.sources]).toEqual(["B4DN0", ["flag"]]);
  });

  test("--identity that disagrees with the certificate is E_IDENTITY_CONFLICT (exit 7)", async () => {
    const err = await failure(loadProfiles({ paths: [join(PROFILES, "guide", "gateway", "Universe.profile")], identity: "Q8QW8" }, deps));
    expect([err.code, err.exitStatus]).toEqual(["E_IDENTITY_CONFLICT", 7]);
    expect(err.message).toMatch(/Universe\.profile:8:35: Identity\.Certificate\.SubjectDistinguishedName says G982V but --identity says Q8QW8/);
  });

  test("a file name that disagrees with the certificate is E_IDENTITY_CONFLICT", async () => {
    const err = await failure(loadProfiles({ paths: [join(PROFILES, "bad", "R2D2X.profile")] }, deps));
    expect(err.code).toBe("E_IDENTITY_CONFLICT");
    expect(err.message).toContain("says Y7299 but the file name says R2D2X");
  });

  test("no identity anywhere is E_IDENTITY_MISSING (exit 7)", async () => {
    const err = await failure(loadProfiles({ paths: [join(PROFILES, "bad", "no-identity")] }, deps));
    expect([err.code, err.exitStatus]).toEqual(["E_IDENTITY_MISSING", 7]);
    expect(err.message).toContain("no-identity/Universe.profile: cannot tell which system this profile belongs to");
  });

  test("--identity with several profiles, or not identity-shaped, is E_USAGE", async () => {
    expect((await failure(loadProfiles({ paths: [join(PROFILES, "fleet")], identity: "G982V" }, deps))).code).toBe("E_USAGE");
    expect((await failure(loadProfiles({ paths: [join(PROFILES, "guide", "client")], identity: "y7299" }, deps))).message).toBe(
      '--identity "y7299" is not a system identity (5 characters A-Z, 0-9)',
    );
  });

  test("two profiles with one identity is an error naming both files", async () => {
    const err = await failure(loadProfiles({ paths: [join(PROFILES, "guide", "client"), join(PROFILES, "fleet", "laptop-alice")] }, deps));
    expect(err.code).toBe("E_IDENTITY_CONFLICT");
    expect(err.message).toBe(
      `Y7299 is the identity of both ${join(PROFILES, "guide", "client", "Universe.profile")} and ${join(PROFILES, "fleet", "laptop-alice", "Universe.profile")}; keep one profile per system`,
    );
  });

  test("every broken file in a fleet is reported at once; the code is the first one's", async () => {
    const err = await failure(loadProfiles({ paths: [join(PROFILES, "bad")] }, deps));
    expect(err).toBeInstanceOf(FleetLoadError);
    expect(err.message.split("\n")[0]).toBe("9 profiles could not be loaded:");
    expect((err as FleetLoadError).errors.map((e) => e.code)).toEqual([
      "E_IDENTITY_CONFLICT", // R2D2X.profile sorts first
      "E_PREFIX_INVALID",
      "E_PROFILE_INVALID",
      "E_PROFILE_JSON",
      "E_PREFIX_INVALID",
      "E_IDENTITY_MISSING",
      "E_PROFILE_INVALID",
      "E_PROFILE_JSON",
      "E_PROFILE_INVALID",
    ]);
    expect(err.code).toBe("E_IDENTITY_CONFLICT");
  });
});
