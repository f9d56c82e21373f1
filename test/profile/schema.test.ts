/**
 * @module test/profile/schema.test
 * Universe.profile validation: the guide's examples parse, every malformed fixture fails with its
 * own message (file:line:column, JSON path, what was expected) and code, and the parsed document
 * cannot be made to show the private key.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ProfileInvalidError, ProfileJsonError } from "../../core/profile/errors.ts";
import { parseProfile } from "../../core/profile/schema.ts";
import { fixtureSecrets, PROFILES } from "./helpers/fixtures.ts";

const read = (rel: string) => readFileSync(join(PROFILES, rel), "utf8");

function failure(rel: string): Error & { code: string; exitStatus: number } {
  try {
    parseProfile(read(rel), rel);
  } catch (err) {
    return err as Error & { code: string; exitStatus: number };
  }
  throw new Error(`${rel} parsed`);
}

describe("parseProfile", () => {
  test("the guide's gateway: G982V provides 172.26.0.0/20 and 172.84.0.0/20", () => {
    const doc = parseProfile(read("guide/gateway/Universe.profile"), "gateway.profile");
    expect(doc.certificateIdentity).toBe("G982V");
    expect(doc.name).toBe("exit-node");
    expect(doc.virtualAddress).toBe("100.101.34.7");
    expect(doc.virtualNetwork?.text).toBe("100.64.0.0/10");
    expect(doc.exitNode.providesRoutes.map((p) => p.text)).toEqual(["172.26.0.0/20", "172.84.0.0/20"]);
    expect(doc.exitNode.availableRoutes).toEqual([]);
    expect(doc.exitNode.present).toBe(true);
    expect(doc.exitNode.empty).toBe(false);
  });

  test("the guide's client: AvailableRoutes per gateway, in file order, with JSON paths", () => {
    const doc = parseProfile(read("guide/client/Universe.profile"), "client.profile");
    expect(doc.certificateIdentity).toBe("Y7299");
    expect(doc.exitNode.availableRoutes.map((g) => [g.gateway, g.prefixes.map((p) => p.text), g.path])).toEqual([
      ["G982V", ["172.26.0.0/20"], "ExitNode.AvailableRoutes.G982V"],
      ["Q8QW8", ["10.0.0.0/24"], "ExitNode.AvailableRoutes.Q8QW8"],
    ]);
    expect(doc.locate("ExitNode.AvailableRoutes.Q8QW8[0]")).toMatch(/^client\.profile:\d+:\d+$/);
  });

  test('"ExitNode": {} is accepted and marked empty; a missing or null ExitNode is absent', () => {
    const stripped = parseProfile(read("guide/stripped/Universe.profile"), "s.profile");
    expect([stripped.exitNode.present, stripped.exitNode.empty]).toEqual([true, true]);
    const none = parseProfile('{"Name": "x"}', "n.profile");
    expect([none.exitNode.present, none.exitNode.empty]).toEqual([false, false]);
    const nul = parseProfile('{"ExitNode": null, "Identity": null}', "n.profile");
    expect(nul.exitNode.present).toBe(false);
    expect(nul.certificateIdentity).toBeNull();
  });

  test("a BOM and CRLF line endings (a Windows client) are fine", () => {
    const doc = parseProfile(read("fleet/laptop-alice/Universe.profile"), "alice");
    expect(doc.certificateIdentity).toBe("Y7299");
    expect(doc.exitNode.availableRoutes).toHaveLength(2);
  });

  test("unknown properties and unknown ExitNode members pass untouched", () => {
    const doc = parseProfile('{"Future": {"x": [1]}, "ExitNode": {"ProvidesRoutes": [], "Mode": "nat"}}', "f");
    expect(doc.exitNode.providesRoutes).toEqual([]);
    expect(doc.exitNode.empty).toBe(false);
  });

  test("a certificate subject may be written CN=ID", () => {
    expect(parseProfile('{"Identity": {"Certificate": {"SubjectDistinguishedName": "CN=Y7299"}}}', "f").certificateIdentity).toBe("Y7299");
  });

  const malformed: [string, string, number, string][] = [
    ["bad/bad-json.profile", "E_PROFILE_JSON", 5, "bad/bad-json.profile:27:3: invalid JSON: expected ',' or '}' after a property value, found '\"'"],
    ["bad/truncated.profile", "E_PROFILE_JSON", 5, "bad/truncated.profile:21:21: invalid JSON: unterminated string"],
    [
      "bad/bad-cidr.profile",
      "E_PREFIX_INVALID",
      3,
      'bad/bad-cidr.profile:47:9: ExitNode.AvailableRoutes.G982V[1]: "172.26.0.0/33" is not a valid IPv4 prefix: length 33 is out of range 0..32',
    ],
    [
      "bad/host-bits.profile",
      "E_PREFIX_INVALID",
      3,
      'bad/host-bits.profile:45:7: ExitNode.ProvidesRoutes[0]: "172.26.0.1/20" is not a valid IPv4 prefix: host bits are set (did you mean 172.26.0.0/20?)',
    ],
    [
      "bad/wrong-types.profile",
      "E_PROFILE_INVALID",
      6,
      "bad/wrong-types.profile:44:23: ExitNode.ProvidesRoutes: expected an array of CIDR prefix strings, got a string\n" +
        "bad/wrong-types.profile:45:24: ExitNode.AvailableRoutes: expected an object mapping gateway identity to a list of CIDR prefixes, got an array",
    ],
    [
      "bad/bad-gateway-key.profile",
      "E_PROFILE_INVALID",
      6,
      'bad/bad-gateway-key.profile:45:7: ExitNode.AvailableRoutes.g982v: gateway "g982v" is not a system identity (5 characters A-Z, 0-9)',
    ],
    ["bad/not-an-object.profile", "E_PROFILE_INVALID", 6, "bad/not-an-object.profile:1:1: expected a JSON object (a Universe.profile) at the top level, got an array"],
  ];
  for (const [rel, code, status, message] of malformed) {
    test(`${rel} fails with ${code} (exit ${status}) and its own message`, () => {
      const err = failure(rel);
      expect(err.code).toBe(code);
      expect(err.exitStatus).toBe(status);
      expect(err.message).toBe(message);
      expect(err.cause).toBeUndefined();
      for (const s of fixtureSecrets()) expect(err.message).not.toContain(s);
    });
  }

  test("the line:column points at the offending value", () => {
    const rel = "bad/bad-cidr.profile";
    const err = failure(rel) as ProfileInvalidError;
    const issue = err.issues[0]!;
    const line = read(rel).split("\n")[issue.line! - 1]!;
    expect(line.slice(issue.column! - 1)).toBe('"172.26.0.0/33"');
  });

  test("wrong types deep inside are reported by type, never by value", () => {
    const err = failure("bad/not-an-object.profile");
    expect(err).toBeInstanceOf(ProfileInvalidError);
    const text = '{"Identity": {"KeyPair": {"PrivateKey": "S3CR3T"}, "Certificate": "S3CR3T-TOO"}, "Name": ["S3CR3T"]}';
    try {
      parseProfile(text, "f");
      throw new Error("parsed");
    } catch (e) {
      expect((e as Error).message).toBe("f:1:67: Identity.Certificate: expected an object, got a string\nf:1:90: Name: expected a string, got an array");
      expect((e as Error).message).not.toContain("S3CR3T");
    }
  });

  test("ExitNode given twice is an error (JSON.parse would keep the last silently)", () => {
    try {
      parseProfile('{"ExitNode": {"ProvidesRoutes": ["10.0.0.0/8"]},\n "ExitNode": {}}', "d");
      throw new Error("parsed");
    } catch (e) {
      expect((e as Error).message).toBe("d:2:2: ExitNode: property appears more than once (JSON.parse would silently keep the last one)");
    }
  });

  test("an empty file is a JSON error at 1:1", () => {
    expect(() => parseProfile("", "e")).toThrow(ProfileJsonError);
    expect(() => parseProfile("\n\n", "e")).toThrow("e:3:1: invalid JSON: empty file: expected a JSON value");
  });

  test("the document cannot be printed with its private key", () => {
    const text = read("fleet/gateway-office/Universe.profile");
    const doc = parseProfile(text, "g");
    const shown = [JSON.stringify(doc), Bun.inspect(doc), String(doc), Object.keys(doc).join(",")].join("\n");
    for (const s of fixtureSecrets()) expect(shown).not.toContain(s);
    // ... while the one sanctioned reader still has it, for --strip.
    expect(doc.textForRewrite().text).toBe(text);
  });
});
