/**
 * @module test/agent/state
 * The agent's state directory: atomic 0600 writes in a 0700 directory, valibot-checked reads
 * whose errors name the file and the field, the key-pair check, and no private key in what
 * publicIdentity hands out.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AgentStateError, NotEnrolledError } from "../../core/agent/errors.ts";
import {
  agentStateDir,
  ensureStateDir,
  identityPath,
  type Identity,
  netMapPath,
  publicIdentity,
  readIdentity,
  readSavedNetMap,
  requireEnrolment,
  writeFileAtomic,
  writeIdentity,
  writeSavedNetMap,
} from "../../core/agent/state.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { encodeKey, generatePrivateKey, publicKeyFrom } from "../../core/wire/keys.ts";
import { sampleNetMap } from "./fixtures.ts";

const crypto = nobleCrypto();
let dir: string;

beforeEach(() => {
  dir = join(mkdtempSync(join(tmpdir(), "wg-agent-state-")), "state");
});
afterEach(() => {
  rmSync(join(dir, ".."), { recursive: true, force: true });
});

function identity(seed = 1): Identity {
  const sk = generatePrivateKey((n) => new Uint8Array(n).fill(seed));
  return {
    version: 1,
    privateKey: encodeKey(sk),
    publicKey: encodeKey(publicKeyFrom(crypto, sk)),
    createdAt: 1000,
    enrolment: {
      serverUrl: "http://10.0.0.1:7070",
      serverPublicKey: encodeKey(publicKeyFrom(crypto, generatePrivateKey((n) => new Uint8Array(n).fill(99)))),
      systemId: "ABC12",
      virtualAddress: "100.64.0.2",
      network: "100.64.0.0/10",
      tags: ["laptops"],
      approved: true,
      hostname: "laptop",
      enrolledAt: 2000,
    },
  };
}

describe("state directory", () => {
  test("created 0700, files 0600, round trip", () => {
    const id = identity();
    writeIdentity(dir, id);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(identityPath(dir)).mode & 0o777).toBe(0o600);
    expect(readIdentity(dir, { crypto })).toEqual(id);
    writeSavedNetMap(dir, { serverUrl: "http://10.0.0.1:7070", revision: 7, savedAt: 5, netmap: sampleNetMap() });
    expect(statSync(netMapPath(dir)).mode & 0o777).toBe(0o600);
    const saved = readSavedNetMap(dir)!;
    expect(saved.revision).toBe(7);
    expect(saved.netmap).toEqual(sampleNetMap());
  });

  test("a wider existing directory and file are tightened", () => {
    ensureStateDir(dir);
    chmodSync(dir, 0o755);
    ensureStateDir(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    writeIdentity(dir, identity());
    chmodSync(identityPath(dir), 0o644);
    readIdentity(dir);
    expect(statSync(identityPath(dir)).mode & 0o777).toBe(0o600);
  });

  test("missing files read as null", () => {
    expect(readIdentity(dir)).toBeNull();
    expect(readSavedNetMap(dir)).toBeNull();
  });

  test("atomic write leaves no temp file and replaces the old content whole", () => {
    ensureStateDir(dir);
    const file = join(dir, "x.json");
    writeFileAtomic(file, "old");
    writeFileAtomic(file, "new content");
    expect(readFileSync(file, "utf8")).toBe("new content");
    expect(readdirSync(dir)).toEqual(["x.json"]);
  });

  test("a failed write names the file and keeps the old content", () => {
    ensureStateDir(dir);
    const file = join(dir, "x.json");
    writeFileAtomic(file, "old");
    expect(() => writeFileAtomic(join(dir, "missing-dir", "y.json"), "z")).toThrow(AgentStateError);
    expect(readFileSync(file, "utf8")).toBe("old");
  });

  test("bad files: not JSON, wrong shape, mismatched key pair — each names the file and field", () => {
    ensureStateDir(dir);
    writeFileSync(identityPath(dir), "{not json", { mode: 0o600 });
    expect(() => readIdentity(dir)).toThrow(/identity\.json: the agent identity is not JSON/);
    writeFileSync(identityPath(dir), JSON.stringify({ ...identity(), privateKey: "short" }), { mode: 0o600 });
    expect(() => readIdentity(dir)).toThrow(/identity\.json: the agent identity is invalid at privateKey: must be a base64 WireGuard key/);
    writeFileSync(identityPath(dir), JSON.stringify({ ...identity(), enrolment: { ...identity().enrolment, systemId: "x" } }), { mode: 0o600 });
    expect(() => readIdentity(dir)).toThrow(/invalid at enrolment\.systemId/);
    writeFileSync(identityPath(dir), JSON.stringify({ ...identity(1), publicKey: identity(2).publicKey }), { mode: 0o600 });
    expect(() => readIdentity(dir, { crypto })).toThrow(/publicKey does not belong to privateKey/);
    writeFileSync(netMapPath(dir), JSON.stringify({ version: 1, serverUrl: "x", revision: 1, savedAt: 1, netmap: { version: 1 } }), { mode: 0o600 });
    expect(() => readSavedNetMap(dir)).toThrow(/netmap\.json: the saved NetMap is invalid at netmap\.self/);
    try {
      readSavedNetMap(dir);
    } catch (err) {
      expect((err as AgentStateError).code).toBe("E_AGENT_STATE");
    }
  });

  test("publicIdentity has no private key; requireEnrolment explains what to do", () => {
    const id = identity();
    const pub = publicIdentity(id);
    expect(JSON.stringify(pub)).not.toContain(id.privateKey);
    expect("privateKey" in pub).toBe(false);
    const { enrolment: _e, ...bare } = id;
    expect(() => requireEnrolment(dir, bare)).toThrow(NotEnrolledError);
    expect(() => requireEnrolment(dir, null)).toThrow(/waygate enrol --server URL --key KEY/);
    expect(requireEnrolment(dir, id).enrolment.systemId).toBe("ABC12");
  });

  test("agentStateDir: explicit, WAYGATE_STATE_DIR, root default, user default", () => {
    expect(agentStateDir("/x", {}, 0, "/root")).toBe("/x");
    expect(agentStateDir(undefined, { WAYGATE_STATE_DIR: "/srv/w" }, 0, "/root")).toBe("/srv/w/agent");
    expect(agentStateDir(undefined, {}, 0, "/root")).toBe("/var/lib/waygate/agent");
    expect(agentStateDir(undefined, {}, 1000, "/home/u")).toBe("/home/u/.local/state/waygate/agent");
    expect(existsSync(dir)).toBe(false);
  });
});
