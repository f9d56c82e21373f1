/**
 * @module test/profile/strip.test
 * --strip rewrites only the ExitNode value: byte-identical elsewhere (indentation, CRLF, BOM,
 * property order), atomic with a .bak of the original and the original's mode, idempotent
 * (a second run touches nothing, .bak included), and a process killed before the rename leaves
 * the original in place.
 */
import { afterAll, describe, expect, test } from "bun:test";
import fc from "fast-check";
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseProfile } from "../../core/profile/schema.ts";
import { stripProfile, strippedText, tempPathFor } from "../../core/profile/strip.ts";
import { copyFixture, PROFILES, ROOT, removeTemps, tempDir } from "./helpers/fixtures.ts";

afterAll(removeTemps);

const load = (file: string) => parseProfile(readFileSync(file, "utf8"), file);

describe("strip", () => {
  test("only the ExitNode value changes: tabs, CRLF and key order stay byte for byte", () => {
    const dir = copyFixture("fleet-clean");
    const file = join(dir, "Y7299.profile");
    const before = readFileSync(file, "utf8");
    const r = stripProfile(load(file));
    expect(r).toEqual({ file, changed: true, backup: `${file}.bak` });
    const after = readFileSync(file, "utf8");
    const start = before.indexOf('\t"ExitNode": {');
    const end = before.indexOf("\t},\r\n", start) + "\t},\r\n".length;
    expect(after).toBe(before.slice(0, start) + '\t"ExitNode": {},\r\n' + before.slice(end));
    expect(readFileSync(`${file}.bak`, "utf8")).toBe(before);
    const o = JSON.parse(before);
    const n = JSON.parse(after);
    expect(Object.keys(n)).toEqual(Object.keys(o));
    expect(n).toEqual({ ...o, ExitNode: {} });
  });

  test("a BOM survives, and a compact one-line profile too", () => {
    const alice = join(copyFixture("fleet/laptop-alice"), "Universe.profile");
    stripProfile(load(alice));
    expect([...readFileSync(alice).subarray(0, 3)]).toEqual([0xef, 0xbb, 0xbf]);
    expect(readFileSync(alice, "utf8")).toContain('\t"ExitNode": {},\r\n');

    const m5 = join(copyFixture("fleet-clean"), "M5T3K.profile");
    const before = readFileSync(m5, "utf8");
    stripProfile(load(m5));
    expect(readFileSync(m5, "utf8")).toBe(before.replace(/"ExitNode":\{"AvailableRoutes":\{[^}]*\}\}/, '"ExitNode":{}'));
  });

  test("a second run changes nothing at all: same bytes, .bak untouched, no temp files", () => {
    const dir = copyFixture("fleet-clean");
    const file = join(dir, "G982V.profile");
    stripProfile(load(file));
    const once = readFileSync(file);
    const bak = statSync(`${file}.bak`);
    const r = stripProfile(load(file));
    expect(r).toEqual({ file, changed: false, backup: null });
    expect(readFileSync(file).equals(once)).toBe(true);
    expect(statSync(`${file}.bak`).mtimeMs).toBe(bak.mtimeMs);
    expect(existsSync(tempPathFor(file))).toBe(false);
    expect(existsSync(`${file}.bak.1`)).toBe(false);
  });

  test("an existing .bak with other content is kept; the next free name is used", () => {
    const dir = copyFixture("fleet-clean");
    const file = join(dir, "G982V.profile");
    writeFileSync(`${file}.bak`, "precious");
    const r = stripProfile(load(file));
    expect(r.backup).toBe(`${file}.bak.1`);
    expect(readFileSync(`${file}.bak`, "utf8")).toBe("precious");
  });

  test("the profile and its .bak keep the original's mode (profiles hold private keys)", () => {
    const dir = copyFixture("fleet-clean");
    const file = join(dir, "Q8QW8.profile");
    chmodSync(file, 0o600);
    stripProfile(load(file));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(`${file}.bak`).mode & 0o777).toBe(0o600);
  });

  test("a file changed since it was read is not rewritten", () => {
    const dir = copyFixture("fleet-clean");
    const file = join(dir, "G982V.profile");
    const doc = load(file);
    writeFileSync(file, readFileSync(file, "utf8") + " ");
    const edited = readFileSync(file);
    expect(() => stripProfile(doc)).toThrow(expect.objectContaining({ code: "E_PROFILE_WRITE", exitStatus: 4 }));
    expect(readFileSync(file).equals(edited)).toBe(true);
    expect(existsSync(`${file}.bak`)).toBe(false);
    expect(existsSync(tempPathFor(file))).toBe(false);
  });

  test("nothing to strip: absent or null ExitNode, or already {}", () => {
    for (const text of ['{"Name": "x"}', '{"ExitNode": null}', '{"ExitNode":   { }  }']) {
      expect(strippedText(parseProfile(text, "f"))).toBeNull();
    }
  });

  test("property: on any document only the ExitNode span changes, and stripping is idempotent", () => {
    const doc = fc
      .tuple(
        fc.dictionary(fc.string({ maxLength: 6 }).filter((k) => k !== "ExitNode" && k !== "__proto__"), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 }),
        fc.nat(6),
        fc.record({ ProvidesRoutes: fc.constantFrom<string[]>(["10.0.0.0/8"], ["172.26.0.0/20", "172.84.0.0/20"]) }),
        fc.constantFrom(0, 2, "\t", 4),
        fc.boolean(),
      )
      .map(([rest, at, exitNode, indent, crlf]) => {
        const entries = Object.entries(rest);
        entries.splice(Math.min(at, entries.length), 0, ["ExitNode", exitNode]);
        const text = JSON.stringify(Object.fromEntries(entries), null, indent as number | string);
        return crlf ? text.replaceAll("\n", "\r\n") : text;
      });
    fc.assert(
      fc.property(doc, (text) => {
        const out = strippedText(parseProfile(text, "f"))!;
        expect(out).not.toBeNull();
        const before = JSON.parse(text);
        const after = JSON.parse(out);
        expect(Object.keys(after)).toEqual(Object.keys(before));
        expect(after).toEqual({ ...before, ExitNode: {} });
        // Everything before and after the value is untouched.
        const start = text.indexOf("{", text.indexOf('"ExitNode"') + 10);
        expect(out.slice(0, start)).toBe(text.slice(0, start));
        expect(out.slice(start + 2)).toBe(text.slice(text.length - (out.length - start - 2)));
        expect(strippedText(parseProfile(out, "f"))).toBeNull();
      }),
      { numRuns: 200 },
    );
  });

  test("killed before the rename: the original stays, the next run cleans up and finishes", () => {
    const dir = copyFixture("guide");
    const db = join(tempDir(), "w.db");
    const gateway = join(dir, "gateway", "Universe.profile");
    const original = readFileSync(gateway);
    const run = (killAt: number) =>
      Bun.spawnSync([process.execPath, join(ROOT, "test", "profile", "helpers", "die-midway.ts"), "strip", String(killAt), db, join(dir, "gateway")], {
        cwd: ROOT,
      });
    const killed = run(1);
    expect(killed.signalCode).toBe("SIGKILL");
    expect(readFileSync(gateway).equals(original)).toBe(true);
    expect(existsSync(tempPathFor(gateway))).toBe(true); // left behind: the kill came between write and rename
    const done = run(0);
    expect(done.exitCode).toBe(0);
    expect(done.stdout.toString()).toBe("completed steps=1\n");
    expect(existsSync(tempPathFor(gateway))).toBe(false);
    expect(readFileSync(`${gateway}.bak`).equals(original)).toBe(true);
    expect(readFileSync(gateway, "utf8")).toContain('"ExitNode": {},');
    expect(readFileSync(join(PROFILES, "guide", "gateway", "Universe.profile")).equals(original)).toBe(true);
  });
});
