/**
 * @module core/firewall/nftables
 * The nftables side of the Firewall, pure: everything Waygate puts into the kernel lives in one
 * table of its own, `table inet waygate`, so it can never flush, reorder or even see another
 * tool's rules (Docker's, firewalld's `inet firewalld`, a hand-written `inet filter`).
 *
 *   chain postrouting  nat    hook postrouting priority srcnat - 1   SNAT / masquerade / accept
 *   chain forward      filter hook forward     priority filter - 1   stateful tunnel ingress
 *   chain input        filter hook input       priority filter - 1   gateway's own services:
 *                                                                        established, inputAllow,
 *                                                                        to tunnelAddresses, drop
 *   chain mss          filter hook forward     priority mangle       maxseg size set rt mtu
 *
 * `renderNftables` returns the table in the exact text `nft list table inet waygate` prints, so
 * the same text is both the script we load and the listing we expect back: the backend compares
 * the kernel's listing (counters normalised) with it and replaces the table only when they differ.
 * The replacement is one `nft -f -` transaction: `table inet waygate {}` (creates it if absent),
 * `delete table inet waygate`, then the new table. The kernel swaps old for new atomically; no
 * other table is named.
 *
 * Two nftables facts shape the rules. An `accept` ends only our chain: base chains of other
 * tables on the same hook still run, so our `drop`s are final but our `accept`s only document
 * intent (where a foreign FORWARD policy is DROP, prefer the iptables backend; the detector does
 * when the system has iptables rules). NAT is decided by the first nat chain that binds; ours runs
 * at srcnat - 1, before iptables-nft's nat table, so our SNAT wins, but our "no NAT" accept
 * cannot stop a later foreign masquerade.
 * Unlike the iptables layout, the inet table covers IPv6 for the stateful and input rules always.
 */
import { natAction, normaliseConfig, type FirewallConfig, type NormalConfig } from "./firewall.ts";

export const NFT_FAMILY = "inet";
export const NFT_TABLE = "waygate";

/** The table as `nft list table inet waygate` prints it (tabs, a blank line between chains). */
export function renderNftables(config: FirewallConfig | NormalConfig): string {
  const c = "families" in config ? config : normaliseConfig(config);
  const T = JSON.stringify(c.tunnelInterface);
  const chains: string[][] = [];
  const chain = (name: string, head: string, rules: string[]) => {
    chains.push([`\tchain ${name} {`, `\t\t${head}`, ...rules.map((r) => `\t\t${r}`), "\t}"]);
  };
  const match = (family: 4 | 6, saddr: string, daddr: { length: number; text: string }) => {
    const ip = family === 4 ? "ip" : "ip6";
    return `${ip} saddr ${saddr}${daddr.length === 0 ? "" : ` ${ip} daddr ${daddr.text}`}`;
  };

  if (c.subnets.length > 0) {
    chain(
      "postrouting",
      "type nat hook postrouting priority srcnat - 1; policy accept;",
      c.subnets.map((s) => {
        const f = s.prefix.family;
        const m = `${match(f, c.overlay[f]!.text, s.prefix)} oifname ${JSON.stringify(s.lanInterface)}`;
        const a = natAction(s);
        return a.kind === "snat" ? `${m} snat ${f === 4 ? "ip" : "ip6"} to ${a.to}` : a.kind === "masquerade" ? `${m} masquerade` : `${m} accept`;
      }),
    );
  }
  chain("forward", "type filter hook forward priority filter - 1; policy accept;", [
    `oifname ${T} ct state established,related accept`,
    `iifname != ${T} oifname ${T} counter drop`,
    ...c.subnets.map((s) => {
      const f = s.prefix.family;
      return `${match(f, c.overlay[f]!.text, s.prefix)} iifname ${T} oifname ${JSON.stringify(s.lanInterface)} accept`;
    }),
  ]);
  if (c.protectGatewayInput) {
    chain("input", "type filter hook input priority filter - 1; policy accept;", [
      `iifname ${T} ct state established,related accept`,
      ...c.inputAllow.map((a) => `iifname ${T} ${a.protocol} dport ${a.port} accept`),
      ...c.tunnelAddresses.map((a) => `iifname ${T} ${a.family === 4 ? "ip" : "ip6"} daddr ${a.text} accept`),
      `iifname ${T} counter drop`,
    ]);
  }
  if (c.mssClamp) {
    chain("mss", "type filter hook forward priority mangle; policy accept;", [
      `oifname ${T} tcp flags syn / syn,rst tcp option maxseg size set rt mtu`,
      `iifname ${T} tcp flags syn / syn,rst tcp option maxseg size set rt mtu`,
    ]);
  }
  return `table ${NFT_FAMILY} ${NFT_TABLE} {\n${chains.map((l) => l.join("\n")).join("\n\n")}\n}\n`;
}

/** Removes our table if it exists, in one transaction; never names another table. */
export const NFT_DELETE_SCRIPT = `table ${NFT_FAMILY} ${NFT_TABLE} {}\ndelete table ${NFT_FAMILY} ${NFT_TABLE}\n`;

/** Replaces our table atomically with `table` (a renderNftables text). */
export function nftReplaceScript(table: string): string {
  return `${NFT_DELETE_SCRIPT}${table}`;
}

/** A listing with counters zeroed away and whitespace settled, for comparison and dumps. */
export function normaliseNftListing(text: string): string {
  const body = text
    .replace(/counter packets \d+ bytes \d+/g, "counter")
    .split("\n")
    .map((l) => l.replace(/\s+$/, ""))
    .join("\n")
    .trim();
  return body === "" ? "" : `${body}\n`;
}

/** Tables in `nft list tables` output other than ours, as "family name". */
export function foreignNftTables(listTables: string): string[] {
  return listTables
    .split("\n")
    .map((l) => /^table\s+(\S+)\s+(\S+)/.exec(l.trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => `${m[1]} ${m[2]}`)
    .filter((t) => t !== `${NFT_FAMILY} ${NFT_TABLE}`);
}
