/**
 * @module core/firewall/iptables
 * The iptables side of the Firewall, pure: render the chains a config calls for, parse
 * `iptables-save` output, and plan the `iptables-restore --noflush` text that turns what the
 * kernel has into what we want, touching nothing but Waygate's chains and their jump rules.
 *
 * Layout: four chains of our own, each hooked by exactly one jump rule from a built-in chain.
 *
 *   nat     POSTROUTING → WAYGATE-POSTROUTING   SNAT / MASQUERADE / ACCEPT (no NAT), per subnet
 *   filter  FORWARD     → WAYGATE-FORWARD       stateful tunnel ingress + overlay → subnet ACCEPT
 *   filter  INPUT       → WAYGATE-INPUT         the gateway's own services (protectGatewayInput):
 *                                               established, inputAllow, to tunnelAddresses, DROP
 *   mangle  FORWARD     → WAYGATE-MSS           TCPMSS --clamp-mss-to-pmtu (mssClamp)
 *
 * Rules are rendered in the exact text `iptables-save` prints (option order -s -d -i -o -p -m,
 * implicit `-m tcp`/`-m udp` spelled out), so "what the kernel has" and "what we want" compare
 * as strings. A chain whose rules differ is refilled as a whole: the restore file declares it
 * (`:WAYGATE-FORWARD - [0:0]`, which flushes that chain only) and lists its rules, so the kernel
 * switches from the old rules to the new ones in one commit of that table and never sees a
 * half-updated chain. A missing jump is inserted at position 1 (`-I FORWARD 1`); an existing one
 * is left wherever it is (another tool may have inserted its own jump above ours since: we never
 * reorder), duplicates are deleted. Foreign chains and rules never appear in the restore file,
 * and `--noflush` keeps every table's other contents.
 */
import type { Family } from "../net/address.ts";
import { natAction, normaliseConfig, type FirewallChange, type FirewallConfig, type NormalConfig } from "./firewall.ts";

export type IptablesTable = "nat" | "filter" | "mangle";

/** Our chains, the built-in chain that jumps to each, and its table. */
export const IPTABLES_CHAINS = {
  "WAYGATE-POSTROUTING": { table: "nat", hook: "POSTROUTING" },
  "WAYGATE-FORWARD": { table: "filter", hook: "FORWARD" },
  "WAYGATE-INPUT": { table: "filter", hook: "INPUT" },
  "WAYGATE-MSS": { table: "mangle", hook: "FORWARD" },
} as const satisfies Record<string, { table: IptablesTable; hook: string }>;

export type WaygateChain = keyof typeof IPTABLES_CHAINS;

export const OWN_CHAIN_PREFIX = "WAYGATE-";

export interface IptablesChain {
  family: Family;
  table: IptablesTable;
  chain: WaygateChain;
  hook: string;
  /** `-A WAYGATE-… …` lines, exactly as iptables-save prints them. */
  rules: string[];
}

const TABLE_ORDER: readonly IptablesTable[] = ["mangle", "nat", "filter"];

/** The chains `config` calls for, per family (IPv6 only when an IPv6 subnet is served). */
export function renderIptables(config: FirewallConfig | NormalConfig): IptablesChain[] {
  const c = "families" in config ? config : normaliseConfig(config);
  const T = c.tunnelInterface;
  const out: IptablesChain[] = [];
  for (const family of c.families) {
    const overlay = c.overlay[family]!.text;
    const subnets = c.subnets.filter((s) => s.prefix.family === family);
    const chain = (name: WaygateChain, rules: string[]) => {
      const { table, hook } = IPTABLES_CHAINS[name];
      out.push({ family, table, chain: name, hook, rules: rules.map((r) => `-A ${name} ${r}`) });
    };
    const dst = (p: { length: number; text: string }) => (p.length === 0 ? "" : `-d ${p.text} `);

    if (subnets.length > 0) {
      chain(
        "WAYGATE-POSTROUTING",
        subnets.map((s) => {
          const match = `-s ${overlay} ${dst(s.prefix)}-o ${s.lanInterface}`;
          const a = natAction(s);
          return a.kind === "snat" ? `${match} -j SNAT --to-source ${a.to}` : a.kind === "masquerade" ? `${match} -j MASQUERADE` : `${match} -j ACCEPT`;
        }),
      );
    }
    chain("WAYGATE-FORWARD", [
      `-o ${T} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
      `! -i ${T} -o ${T} -j DROP`,
      ...subnets.map((s) => `-s ${overlay} ${dst(s.prefix)}-i ${T} -o ${s.lanInterface} -j ACCEPT`),
    ]);
    if (c.protectGatewayInput) {
      chain("WAYGATE-INPUT", [
        `-i ${T} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
        ...c.inputAllow.map((a) => `-i ${T} -p ${a.protocol} -m ${a.protocol} --dport ${a.port} -j ACCEPT`),
        ...c.tunnelAddresses.filter((a) => a.family === family).map((a) => `-d ${a.text}/${family === 4 ? 32 : 128} -i ${T} -j ACCEPT`),
        `-i ${T} -j DROP`,
      ]);
    }
    if (c.mssClamp) {
      chain("WAYGATE-MSS", [
        `-o ${T} -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu`,
        `-i ${T} -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu`,
      ]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// reading iptables-save

export interface SavedTable {
  /** Chain name → its `-A` lines in order (built-in and user chains alike). */
  chains: Map<string, string[]>;
}

/** Parse `iptables-save` / `ip6tables-save` text (comments and counters ignored). */
export function parseIptablesSave(text: string): Map<string, SavedTable> {
  const tables = new Map<string, SavedTable>();
  let current: SavedTable | null = null;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("*")) {
      current = { chains: new Map() };
      tables.set(line.slice(1), current);
    } else if (line === "COMMIT") {
      current = null;
    } else if (current && line.startsWith(":")) {
      const name = line.slice(1).split(/\s+/)[0]!;
      if (!current.chains.has(name)) current.chains.set(name, []);
    } else if (current && line.startsWith("-A ")) {
      const name = line.split(/\s+/)[1]!;
      const rules = current.chains.get(name) ?? [];
      rules.push(line.replace(/^\[\d+:\d+\]\s+/, ""));
      current.chains.set(name, rules);
    }
  }
  return tables;
}

const BUILTIN = new Set(["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]);

/**
 * `-A HOOK -j WAYGATE-…` lines in `table`: where built-in chains jump to ours. A jump another
 * tool put into a chain of its own is that tool's rule and is not ours to move or delete.
 */
function jumpsIn(table: SavedTable): { from: string; to: string; line: string }[] {
  const out: { from: string; to: string; line: string }[] = [];
  for (const [from, rules] of table.chains) {
    if (!BUILTIN.has(from)) continue;
    for (const line of rules) {
      const m = /^-A (\S+) -j (WAYGATE-\S+)$/.exec(line);
      if (m) out.push({ from, to: m[2]!, line });
    }
  }
  return out;
}

/** Our chains as the kernel has them now, for comparing and dumping. */
export function ownChainsIn(tables: Map<string, SavedTable>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [tname, t] of tables) {
    for (const [name, rules] of t.chains) if (name.startsWith(OWN_CHAIN_PREFIX)) out.set(`${tname} ${name}`, rules);
  }
  return out;
}

export interface RestorePlan {
  /** Text for `iptables-restore --noflush`, "" when nothing is to change. */
  restore: string;
  changes: FirewallChange[];
}

/**
 * The restore text turning `have` (parsed iptables-save of one family) into `want` (that
 * family's chains; empty = remove all ours). `expected` maps a desired chain to the rules the
 * kernel is known to print for it when that differs from our rendering (see the backend's
 * read-back calibration); absent, the rendering itself is expected.
 */
export function planIptablesRestore(
  family: Family,
  have: Map<string, SavedTable>,
  want: readonly IptablesChain[],
  expected: (chain: IptablesChain) => readonly string[] = (c) => c.rules,
): RestorePlan {
  const tool = family === 4 ? "iptables(v4)" : "iptables(v6)";
  const changes: FirewallChange[] = [];
  const blocks: string[] = [];
  for (const tname of TABLE_ORDER) {
    const table = have.get(tname) ?? { chains: new Map<string, string[]>() };
    const wantHere = want.filter((c) => c.family === family && c.table === tname);
    const wantNames = new Set<string>(wantHere.map((c) => c.chain));
    const lines: string[] = [];
    const jumps = jumpsIn(table);

    for (const c of wantHere) {
      const rules = table.chains.get(c.chain);
      const target = `${tool} ${tname} ${c.chain}`;
      if (rules === undefined || !sameLines(rules, expected(c))) {
        lines.push(`:${c.chain} - [0:0]`, ...c.rules);
        changes.push({ op: rules === undefined ? "create" : "replace", target, detail: `${c.rules.length} rule(s)` });
      }
      const mine = jumps.filter((j) => j.to === c.chain);
      const keep = mine.find((j) => j.from === c.hook);
      if (!keep) {
        lines.push(`-I ${c.hook} 1 -j ${c.chain}`);
        changes.push({ op: "create", target: `${tool} ${tname} ${c.hook} -j ${c.chain}` });
      }
      for (const j of mine) {
        if (j === keep) continue;
        lines.push(`-D ${j.from} -j ${c.chain}`);
        changes.push({ op: "delete", target: `${tool} ${tname} ${j.from} -j ${c.chain}`, detail: "duplicate or misplaced jump" });
      }
    }
    // Ours but no longer wanted (or left by a crashed run): unhook, empty, delete.
    for (const name of table.chains.keys()) {
      if (!name.startsWith(OWN_CHAIN_PREFIX) || wantNames.has(name)) continue;
      for (const j of jumps.filter((x) => x.to === name)) lines.push(`-D ${j.from} -j ${name}`);
      lines.push(`-F ${name}`, `-X ${name}`);
      changes.push({ op: "delete", target: `${tool} ${tname} ${name}` });
    }
    if (lines.length > 0) blocks.push(`*${tname}`, ...lines, "COMMIT");
  }
  return { restore: blocks.length > 0 ? `${blocks.join("\n")}\n` : "", changes };
}

function sameLines(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Rule lines (`-A …`) that are not Waygate's: what the detector counts as "the system uses iptables". */
export function foreignRuleCount(saveText: string): number {
  let n = 0;
  for (const line of saveText.split("\n")) {
    if (line.startsWith("-A ") && !/\bWAYGATE-/.test(line)) n++;
  }
  return n;
}
