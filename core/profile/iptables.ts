/**
 * @module core/profile/iptables
 * Reads `iptables-save` (or `ip6tables-save`) output and picks out the manual NAT rules the
 * exit-node beta guide had admins add on each exit node:
 *
 *   -A POSTROUTING -s 100.64.0.0/10 -d 172.26.0.0/20 -j SNAT --to-source 172.26.0.1
 *
 * Pure: text in, rules out. A rule is recognised only when its source is the overlay network,
 * it names one destination prefix, and nothing else narrows it (an out-interface and a comment
 * are allowed); SNAT must go to one address. Near misses are returned separately so the plan can
 * say why they were left alone, rather than half-understanding them.
 */
import { AddressError } from "../errors.ts";
import { parseAddress, parsePrefix, prefixCovers, type Prefix } from "../net/address.ts";
import { IptablesSaveError } from "./errors.ts";

export interface SnatRule {
  readonly file: string;
  /** 1-based line in the file. */
  readonly line: number;
  readonly family: 4 | 6;
  readonly source: Prefix;
  readonly destination: Prefix;
  readonly target: "SNAT" | "MASQUERADE";
  /** The SNAT address (the gateway's LAN address); null for MASQUERADE. */
  readonly toSource: string | null;
  readonly outInterface: string | null;
  /** The line as saved, e.g. `-A POSTROUTING -s 100.64.0.0/10 -d ... -j SNAT --to-source ...`. */
  readonly text: string;
  /** The shell command that deletes exactly this rule. */
  readonly removeCommand: string;
}

export interface SnatNearMiss {
  readonly file: string;
  readonly line: number;
  readonly text: string;
  readonly reason: string;
}

export interface IptablesSave {
  readonly file: string;
  readonly rules: readonly SnatRule[];
  readonly nearMisses: readonly SnatNearMiss[];
}

/** Splits a saved rule into words; iptables-save double-quotes values with spaces (comments). */
export function splitRuleWords(line: string): string[] | null {
  const words: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && (line[i] === " " || line[i] === "\t")) i++;
    if (i >= line.length) break;
    let word = "";
    while (i < line.length && line[i] !== " " && line[i] !== "\t") {
      if (line[i] === '"') {
        i++;
        while (i < line.length && line[i] !== '"') {
          if (line[i] === "\\" && i + 1 < line.length) i++;
          word += line[i];
          i++;
        }
        if (i >= line.length) return null; // unterminated quote
        i++;
      } else {
        word += line[i];
        i++;
      }
    }
    words.push(word);
  }
  return words;
}

const DEFAULT_OVERLAY = "100.64.0.0/10";

interface RuleOptions {
  source?: string;
  destination?: string;
  outInterface?: string;
  jump?: string;
  toSource?: string;
  others: string[];
  negated: string[];
}

/** Reads the options of one `-A CHAIN ...` rule; unknown matches are collected, not interpreted. */
function readOptions(words: readonly string[]): RuleOptions {
  const o: RuleOptions = { others: [], negated: [] };
  let negate = false;
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === "!") {
      negate = true;
      continue;
    }
    const value = words[i + 1];
    const take = () => {
      i++;
      return value ?? "";
    };
    if (negate) {
      o.negated.push(w);
      if (value !== undefined && !value.startsWith("-")) i++;
      negate = false;
      continue;
    }
    switch (w) {
      case "-s":
      case "--source":
        o.source = take();
        break;
      case "-d":
      case "--destination":
        o.destination = take();
        break;
      case "-o":
      case "--out-interface":
        o.outInterface = take();
        break;
      case "-j":
      case "--jump":
        o.jump = take();
        break;
      case "--to-source":
      case "--to":
        o.toSource = take();
        break;
      case "-m":
      case "--match":
        if (value !== "comment") o.others.push(`-m ${value ?? ""}`);
        take();
        break;
      case "--comment":
        take();
        break;
      default:
        if (value !== undefined && !value.startsWith("-")) {
          o.others.push(`${w} ${value}`);
          i++;
        } else {
          o.others.push(w);
        }
    }
  }
  return o;
}

/**
 * Parses iptables-save output. Throws IptablesSaveError when the text is not iptables-save
 * output (rules outside a table, a table without COMMIT, an unreadable line).
 * `overlay` are the overlay networks whose traffic the manual rules NAT (default 100.64.0.0/10).
 */
export function parseIptablesSave(text: string, file: string, overlay: readonly Prefix[] = []): IptablesSave {
  const overlays = overlay.length > 0 ? overlay : [parsePrefix(DEFAULT_OVERLAY)];
  const rules: SnatRule[] = [];
  const nearMisses: SnatNearMiss[] = [];
  let table: string | null = null;
  let tableLine = 0;
  let tables = 0;
  const lines = text.split("\n");
  for (let n = 0; n < lines.length; n++) {
    const lineNo = n + 1;
    const line = lines[n]!.replace(/\r$/, "").trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("*")) {
      if (table !== null) throw new IptablesSaveError(file, lineNo, `table ${line.slice(1)} starts before table ${table} was COMMITted`);
      table = line.slice(1);
      tableLine = lineNo;
      tables++;
      continue;
    }
    if (line === "COMMIT") {
      if (table === null) throw new IptablesSaveError(file, lineNo, "COMMIT outside a table");
      table = null;
      continue;
    }
    if (line.startsWith(":")) {
      if (table === null) throw new IptablesSaveError(file, lineNo, "chain declaration outside a table (expected a *table line first)");
      continue;
    }
    if (line.startsWith("-A ") || line.startsWith("-I ")) {
      if (table === null) throw new IptablesSaveError(file, lineNo, "rule outside a table (expected a *table line first)");
      const words = splitRuleWords(line);
      if (words === null) throw new IptablesSaveError(file, lineNo, "unterminated quote in rule");
      if (table !== "nat" || words[1] !== "POSTROUTING") continue;
      const o = readOptions(words.slice(2));
      if (o.jump !== "SNAT" && o.jump !== "MASQUERADE") continue;
      let source: Prefix | null = null;
      if (o.source !== undefined) {
        try {
          source = parsePrefix(o.source, { allowBareAddress: true });
        } catch (err) {
          if (err instanceof AddressError) throw new IptablesSaveError(file, lineNo, `-s ${err.message}`);
          throw err;
        }
      }
      const fromOverlay = source !== null && overlays.some((ov) => ov.text === source!.text);
      if (!fromOverlay) {
        // A NAT rule for other traffic (docker, LAN masquerade): not ours to migrate.
        if (source !== null && overlays.some((ov) => prefixCovers(source!, ov) || prefixCovers(ov, source!))) {
          nearMisses.push({ file, line: lineNo, text: line, reason: `its source ${source.text} is not exactly the overlay network ${overlays.map((p) => p.text).join(", ")}` });
        }
        continue;
      }
      const miss = (reason: string) => nearMisses.push({ file, line: lineNo, text: line, reason });
      if (o.negated.length > 0) {
        miss(`it negates ${o.negated.join(", ")}`);
        continue;
      }
      if (o.destination === undefined) {
        miss("it has no -d destination subnet (it NATs all overlay traffic)");
        continue;
      }
      let destination: Prefix;
      try {
        destination = parsePrefix(o.destination, { allowBareAddress: true });
      } catch (err) {
        if (err instanceof AddressError) throw new IptablesSaveError(file, lineNo, `-d ${err.message}`);
        throw err;
      }
      if (o.others.length > 0) {
        miss(`it also matches ${o.others.join(" ")}`);
        continue;
      }
      if (destination.family !== source!.family) {
        miss("its source and destination are different address families");
        continue;
      }
      let toSource: string | null = null;
      if (o.jump === "SNAT") {
        if (o.toSource === undefined) {
          miss("SNAT without --to-source");
          continue;
        }
        try {
          toSource = parseAddress(o.toSource).text;
        } catch {
          miss(`--to-source ${o.toSource} is not a single address (ranges and ports are not migrated)`);
          continue;
        }
      }
      const tool = destination.family === 6 ? "ip6tables" : "iptables";
      const spec = line.replace(/^-[AI]\s+POSTROUTING\s+/, "");
      rules.push({
        file,
        line: lineNo,
        family: destination.family,
        source: source!,
        destination,
        target: o.jump,
        toSource,
        outInterface: o.outInterface ?? null,
        text: line,
        removeCommand: `${tool} -t nat -D POSTROUTING ${spec}`,
      });
      continue;
    }
    throw new IptablesSaveError(file, lineNo, "not an iptables-save line (expected *table, :CHAIN, -A CHAIN ..., COMMIT or # comment)");
  }
  if (table !== null) throw new IptablesSaveError(file, tableLine, `table ${table} is never COMMITted (truncated output?)`);
  if (tables === 0) throw new IptablesSaveError(file, 0, "no tables found: is this iptables-save output?");
  return { file, rules, nearMisses };
}
