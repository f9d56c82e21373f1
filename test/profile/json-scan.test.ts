/**
 * @module test/profile/json-scan.test
 * The JSON scanner against JSON.parse as the oracle: it accepts exactly what JSON.parse accepts
 * (random documents and random one-character mutations of them), every recorded span holds the
 * value at its path, and errors carry line:column without quoting the text.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { formatJsonPath, scanJson, JsonSyntaxError } from "../../core/profile/json-scan.ts";

function accepts(text: string): boolean {
  try {
    scanJson(text);
    return true;
  } catch (err) {
    if (err instanceof JsonSyntaxError) return false;
    throw err;
  }
}

function parses(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** Every (path, value) of a parsed document, paths formatted as the scanner formats them. */
function entries(value: unknown, path: (string | number)[] = [], out: [string, unknown][] = []): [string, unknown][] {
  out.push([formatJsonPath(path), value]);
  if (Array.isArray(value)) value.forEach((v, i) => entries(v, [...path, i], out));
  else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) entries(v, [...path, k], out);
  }
  return out;
}

const jsonText = fc
  .tuple(fc.jsonValue({ maxDepth: 4 }), fc.constantFrom(0, 1, 2, "\t", "    "), fc.boolean())
  .map(([v, indent, crlf]) => {
    const t = JSON.stringify(v, null, indent as string | number);
    return crlf ? t.replaceAll("\n", "\r\n") : t;
  });

describe("scanJson", () => {
  test("accepts what JSON.parse accepts, and every span holds the value at its path", () => {
    fc.assert(
      fc.property(jsonText, (text) => {
        const scan = scanJson(text);
        const parsed = JSON.parse(text);
        for (const [path, value] of entries(parsed)) {
          // Objects with duplicate keys cannot come out of JSON.stringify, so paths are unique.
          const span = scan.values.get(path);
          expect(span, path).toBeDefined();
          expect(JSON.parse(text.slice(span!.start, span!.end))).toEqual(value as never);
        }
      }),
      { numRuns: 300 },
    );
  });

  test("agrees with JSON.parse on one-character mutations of valid JSON", () => {
    const mutated = fc
      .tuple(jsonText, fc.nat(), fc.constantFrom("", ",", "}", "]", '"', ":", "x", "0", "-", ".", "\\", "\n", " ", "e", "\u0001", "{", "["), fc.boolean())
      .map(([text, at, ch, replace]) => {
        const i = text.length === 0 ? 0 : at % text.length;
        return text.slice(0, i) + ch + text.slice(replace ? i + 1 : i);
      });
    fc.assert(
      fc.property(mutated, (text) => {
        expect(accepts(text)).toBe(parses(text));
      }),
      { numRuns: 2000 },
    );
  });

  test("hand-picked edge cases agree with JSON.parse", () => {
    const cases = [
      "", " ", "{}", "[]", "0", "-0", "01", "1.", ".5", "1e", "1e+", "1E-2", "-", "--1", "tru", "true", "nul", "null x",
      '"\\u12"', '"\\u1234"', '"\\x"', '"a\tb"', '"a\\tb"', '{"a":1,}', "[1,]", '{"a" 1}', '{1:2}', '{"a":1 "b":2}',
      "[1 2]", '{"a":[1,{"b":null}]}', "\u00a0{}", "{}\u00a0", '"\u2028"',
    ];
    for (const c of cases) expect(accepts(c), JSON.stringify(c)).toBe(parses(c));
  });

  test("a leading BOM is skipped and spans still index the original text", () => {
    const text = '\uFEFF{\n  "ExitNode": { "ProvidesRoutes": ["10.0.0.0/8"] }\n}';
    const scan = scanJson(text);
    expect(scan.bodyStart).toBe(1);
    const span = scan.values.get("ExitNode")!;
    expect(text.slice(span.start, span.end)).toBe('{ "ProvidesRoutes": ["10.0.0.0/8"] }');
    expect([span.line, span.column]).toEqual([2, 15]);
  });

  test("errors give line and column and never quote letters or digits of the text", () => {
    const text = '{\n  "KeyPair": {\n    "PrivateKey": SECRETSECRET\n  }\n}';
    let err: unknown;
    try {
      scanJson(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(JsonSyntaxError);
    const e = err as JsonSyntaxError;
    expect([e.line, e.column]).toEqual([3, 19]);
    expect(e.reason).toBe("expected a value, found a letter");
    expect(e.message).not.toContain("SECRET");

    const unterminated = '{\n  "PrivateKey": "SECRETSECRET';
    try {
      scanJson(unterminated);
    } catch (e) {
      expect((e as JsonSyntaxError).reason).toBe("unterminated string");
      expect([(e as JsonSyntaxError).line, (e as JsonSyntaxError).column]).toEqual([2, 17]);
      expect((e as Error).message).not.toContain("SECRET");
    }
  });

  test("missing comma is reported where the next property starts", () => {
    const text = '{\n  "a": "1"\n  "b": 2\n}';
    expect(() => scanJson(text)).toThrow("3:3: expected ',' or '}' after a property value, found '\"'");
  });

  test("duplicate keys are recorded with their position", () => {
    const text = '{"ExitNode": {}, "x": 1, "ExitNode": {"ProvidesRoutes": []}}';
    const scan = scanJson(text);
    expect(scan.duplicates.map((d) => [d.path, d.span.column])).toEqual([["ExitNode", 26]]);
    // The last one wins, as in JSON.parse.
    const span = scan.values.get("ExitNode")!;
    expect(text.slice(span.start, span.end)).toBe('{"ProvidesRoutes": []}');
  });

  test("paths quote keys that are not plain words", () => {
    expect(formatJsonPath(["ExitNode", "AvailableRoutes", "G982V", 1])).toBe("ExitNode.AvailableRoutes.G982V[1]");
    expect(formatJsonPath(["a b", 0, "c.d"])).toBe('["a b"][0]["c.d"]');
    expect(formatJsonPath([])).toBe("");
  });
});
