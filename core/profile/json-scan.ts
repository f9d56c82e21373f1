/**
 * @module core/profile/json-scan
 * A small validating JSON scanner that records where things are, for two jobs JSON.parse cannot
 * do: report a syntax error as file:line:column without quoting the text (JSON.parse's own
 * messages echo tokens, and a profile holds a private key), and locate the exact span of a value
 * (ExitNode) so `--strip` can rewrite it and leave every other byte as it was.
 * Accepts exactly RFC 8259 JSON (what JSON.parse accepts), plus a leading UTF-8 BOM.
 */

/** A region of the text: [start, end) in UTF-16 code units; line and column are 1-based. */
export interface JsonSpan {
  readonly start: number;
  readonly end: number;
  readonly line: number;
  readonly column: number;
}

export interface JsonScan {
  /** Where each value is, keyed by its path (`ExitNode.AvailableRoutes.G982V[1]`; "" is the root). */
  readonly values: ReadonlyMap<string, JsonSpan>;
  /** Where each property name is, keyed by the path of its value. */
  readonly keys: ReadonlyMap<string, JsonSpan>;
  /** Properties named more than once in the same object (JSON.parse keeps the last silently). */
  readonly duplicates: readonly { path: string; span: JsonSpan }[];
  /** Offset where the JSON text starts (1 after a BOM, else 0). */
  readonly bodyStart: number;
}

/** A syntax error at a position; `reason` never quotes more than one character of the input. */
export class JsonSyntaxError extends Error {
  constructor(
    readonly reason: string,
    readonly offset: number,
    readonly line: number,
    readonly column: number,
  ) {
    super(`${line}:${column}: ${reason}`);
    this.name = "JsonSyntaxError";
  }
}

export type PathSegment = string | number;

const PLAIN_KEY = /^[A-Za-z0-9_$-]+$/;

/** Formats a JSON path the way every Waygate message shows it: `ExitNode.AvailableRoutes.G982V[1]`. */
export function formatJsonPath(segments: readonly PathSegment[]): string {
  let out = "";
  for (const seg of segments) {
    if (typeof seg === "number") out += `[${seg}]`;
    else if (PLAIN_KEY.test(seg)) out += out === "" ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** Line and column (1-based) of an offset. A lone "\r" does not count as a line break. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

/** Describes a character for an error message without echoing letters or digits of the input. */
function describe(text: string, i: number): string {
  if (i >= text.length) return "end of input";
  const ch = text[i]!;
  if ("{}[],:\"".includes(ch)) return `'${ch}'`;
  const code = ch.charCodeAt(0);
  if (code < 0x20) return `control character U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
  if (/[A-Za-z]/.test(ch)) return "a letter";
  if (/[0-9]/.test(ch)) return "a digit";
  if (/[-+.'#/\\*;=<>!?&|~`@%^()]/.test(ch)) return `'${ch}'`;
  return `U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
}

/**
 * Scans `text` as one JSON value. Throws JsonSyntaxError at the first error.
 * Positions are recorded for every value and property name.
 */
export function scanJson(text: string): JsonScan {
  const values = new Map<string, JsonSpan>();
  const keys = new Map<string, JsonSpan>();
  const duplicates: { path: string; span: JsonSpan }[] = [];
  // Newline offsets, so spans get line/column in O(log n) instead of rescanning.
  const newlines: number[] = [];
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) newlines.push(i);
  const pos = (offset: number) => {
    let lo = 0;
    let hi = newlines.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (newlines[mid]! < offset) lo = mid + 1;
      else hi = mid;
    }
    const lineStart = lo === 0 ? 0 : newlines[lo - 1]! + 1;
    return { line: lo + 1, column: offset - lineStart + 1 };
  };
  const span = (start: number, end: number): JsonSpan => ({ start, end, ...pos(start) });
  const fail = (reason: string, at: number): never => {
    const p = pos(at);
    throw new JsonSyntaxError(reason, at, p.line, p.column);
  };

  const bodyStart = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let i = bodyStart;

  const skipWs = () => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else return;
    }
  };

  const scanString = (): string => {
    const start = i;
    i++; // opening quote
    let out = "";
    let chunk = i;
    for (;;) {
      if (i >= text.length) fail("unterminated string", start);
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(chunk, i);
        i++;
        return out;
      }
      if (c < 0x20) fail(`${describe(text, i)} inside a string (escape it)`, i);
      if (c === 0x5c) {
        out += text.slice(chunk, i);
        const e = text[i + 1];
        const simple: Record<string, string> = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
        if (e !== undefined && e in simple) {
          out += simple[e];
          i += 2;
        } else if (e === "u") {
          const hex = text.slice(i + 2, i + 6);
          if (!/^[0-9A-Fa-f]{4}$/.test(hex)) fail("invalid \\u escape in string (expected 4 hex digits)", i);
          out += String.fromCharCode(parseInt(hex, 16));
          i += 6;
        } else {
          fail("invalid escape in string", i);
        }
        chunk = i;
        continue;
      }
      i++;
    }
  };

  const scanNumber = () => {
    const start = i;
    if (text[i] === "-") i++;
    if (text[i] === "0") i++;
    else if (text[i] !== undefined && text[i]! >= "1" && text[i]! <= "9") {
      while (text[i] !== undefined && text[i]! >= "0" && text[i]! <= "9") i++;
    } else fail(`invalid number: expected a digit, found ${describe(text, i)}`, i);
    if (text[i] === ".") {
      i++;
      if (!(text[i] !== undefined && text[i]! >= "0" && text[i]! <= "9")) fail(`invalid number: expected a digit after '.', found ${describe(text, i)}`, i);
      while (text[i] !== undefined && text[i]! >= "0" && text[i]! <= "9") i++;
    }
    if (text[i] === "e" || text[i] === "E") {
      i++;
      if (text[i] === "+" || text[i] === "-") i++;
      if (!(text[i] !== undefined && text[i]! >= "0" && text[i]! <= "9")) fail(`invalid number: expected a digit in the exponent, found ${describe(text, i)}`, i);
      while (text[i] !== undefined && text[i]! >= "0" && text[i]! <= "9") i++;
    }
    return start;
  };

  const scanValue = (path: PathSegment[], depth: number): void => {
    if (depth > 512) fail("nesting deeper than 512 levels", i);
    skipWs();
    const start = i;
    const c = text[i];
    if (c === "{") {
      i++;
      skipWs();
      const seen = new Set<string>();
      if (text[i] === "}") {
        i++;
      } else {
        for (;;) {
          skipWs();
          if (text[i] !== '"') fail(`expected a property name in double quotes, found ${describe(text, i)}`, i);
          const keyStart = i;
          const key = scanString();
          const childPath = [...path, key];
          const childKey = formatJsonPath(childPath);
          const keySpan = span(keyStart, i);
          if (seen.has(key)) duplicates.push({ path: childKey, span: keySpan });
          seen.add(key);
          keys.set(childKey, keySpan);
          skipWs();
          if (text[i] !== ":") fail(`expected ':' after a property name, found ${describe(text, i)}`, i);
          i++;
          scanValue(childPath, depth + 1);
          skipWs();
          if (text[i] === ",") {
            i++;
            continue;
          }
          if (text[i] === "}") {
            i++;
            break;
          }
          fail(`expected ',' or '}' after a property value, found ${describe(text, i)}`, i);
        }
      }
    } else if (c === "[") {
      i++;
      skipWs();
      if (text[i] === "]") {
        i++;
      } else {
        for (let n = 0; ; n++) {
          scanValue([...path, n], depth + 1);
          skipWs();
          if (text[i] === ",") {
            i++;
            continue;
          }
          if (text[i] === "]") {
            i++;
            break;
          }
          fail(`expected ',' or ']' after an array element, found ${describe(text, i)}`, i);
        }
      }
    } else if (c === '"') {
      scanString();
    } else if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) {
      scanNumber();
    } else if (text.startsWith("true", i)) {
      i += 4;
    } else if (text.startsWith("false", i)) {
      i += 5;
    } else if (text.startsWith("null", i)) {
      i += 4;
    } else {
      fail(`expected a value, found ${describe(text, i)}`, i);
    }
    values.set(formatJsonPath(path), span(start, i));
  };

  skipWs();
  if (i >= text.length) fail("empty file: expected a JSON value", i);
  scanValue([], 0);
  skipWs();
  if (i < text.length) fail(`unexpected ${describe(text, i)} after the end of the JSON value`, i);
  return { values, keys, duplicates, bodyStart };
}
