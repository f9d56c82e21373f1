/**
 * @module platform/linux/firewall/detect
 * Which firewall backend the gateway uses, decided once at start and logged once as
 * `firewall: backend=… [variant=…] reason=… …` (tests assert on the line). In order:
 *
 * 1. An explicit setting wins ("nftables", "iptables", "iptables-legacy", "iptables-nft");
 *    its tool missing is an error, not a silent fallback. reason=explicit
 * 2. What the system already uses, because our rules must live where the other tools' do
 *    (an ACCEPT in our nft table cannot override Docker's iptables FORWARD policy DROP, and
 *    mixing legacy and nf_tables rules makes both hard to read):
 *    - rules in the legacy x_tables (and at least as many as under iptables-nft): iptables,
 *      variant=legacy, reason=legacy-rules
 *    - rules under iptables-nft: iptables, variant=nft, reason=iptables-nft-rules
 *    - native nftables tables (firewalld's `inet firewalld`, an `inet filter` from nftables.conf):
 *      nftables, reason=nft-tables
 *    Rules and tables that are Waygate's own (WAYGATE-* chains, `inet waygate`) do not count, so
 *    a crashed run's leftovers do not steer the choice. The tables iptables-nft itself creates
 *    (`ip filter`, `ip6 nat`, …) are counted as iptables-nft rules, not as native tables.
 * 3. Defaults: nftables when `nft` is installed (reason=default); otherwise iptables in the
 *    variant `iptables -V` reports (reason=no-nft); nothing usable: FirewallPlatformError.
 *
 * Probing only reads: `*-save` (not `iptables -S`, which would create empty legacy tables),
 * `nft list tables`, `-V`/`--version`.
 */
import { silentLogger, type Logger } from "../../../core/log.ts";
import type { CommandRunner } from "../../../core/runner.ts";
import { FirewallPlatformError, type FirewallBackendName } from "../../../core/firewall/firewall.ts";
import { foreignRuleCount } from "../../../core/firewall/iptables.ts";
import { foreignNftTables } from "../../../core/firewall/nftables.ts";
import type { IptablesVariant } from "./iptables.ts";

export type ExplicitBackend = "nftables" | "iptables" | "iptables-legacy" | "iptables-nft";

export type DetectReason = "explicit" | "legacy-rules" | "iptables-nft-rules" | "nft-tables" | "default" | "no-nft";

export interface BackendChoice {
  backend: FirewallBackendName;
  /** For iptables: which tools to run. */
  variant?: IptablesVariant;
  reason: DetectReason;
  /** The key=value line that was logged. */
  line: string;
}

export interface DetectOptions {
  explicit?: ExplicitBackend | "auto";
  runner: CommandRunner;
  logger?: Logger;
}

/** Tables iptables-nft (and ebtables/arptables-nft) create for their own use. */
const XTABLES_NFT_TABLES = /^(ip|ip6) (filter|nat|mangle|raw|security)$|^(arp|bridge) (filter|nat|broute)$/;

async function ok(runner: CommandRunner, argv: string[]): Promise<{ ok: boolean; stdout: string }> {
  const r = await runner.run(argv, { allowFailure: true });
  return { ok: r.exitCode === 0, stdout: `${r.stdout}${r.stderr}` };
}

/** The variant the plain `iptables` reports, or null when there is no `iptables`. */
function variantOf(versionText: string): "legacy" | "nft" | null {
  if (/nf_tables/.test(versionText)) return "nft";
  if (/legacy/.test(versionText) || /^iptables v\d/m.test(versionText)) return "legacy";
  return null;
}

async function countRules(runner: CommandRunner, tools: string[]): Promise<number> {
  let n = 0;
  for (const t of tools) {
    const r = await runner.run([t], { allowFailure: true });
    if (r.exitCode === 0) n += foreignRuleCount(r.stdout);
  }
  return n;
}

export async function detectFirewallBackend(options: DetectOptions): Promise<BackendChoice> {
  const { runner } = options;
  const logger = options.logger ?? silentLogger;
  const decide = (backend: FirewallBackendName, variant: IptablesVariant | undefined, reason: DetectReason, extra = ""): BackendChoice => {
    const line = `firewall: backend=${backend}${variant ? ` variant=${variant}` : ""} reason=${reason}${extra}`;
    logger.info(line);
    return { backend, ...(variant ? { variant } : {}), reason, line };
  };

  const explicit = options.explicit ?? "auto";
  if (explicit !== "auto") {
    const probe: Record<ExplicitBackend, string[]> = {
      nftables: ["nft", "--version"],
      iptables: ["iptables", "-V"],
      "iptables-legacy": ["iptables-legacy", "-V"],
      "iptables-nft": ["iptables-nft", "-V"],
    };
    const argv = probe[explicit];
    if (!argv) throw new FirewallPlatformError(`unknown firewall backend setting ${JSON.stringify(explicit)}`);
    const p = await ok(runner, argv);
    if (!p.ok) throw new FirewallPlatformError(`firewall backend ${explicit} was asked for but \`${argv.join(" ")}\` failed: ${p.stdout.trim()}`);
    if (explicit === "nftables") return decide("nftables", undefined, "explicit");
    const variant: IptablesVariant = explicit === "iptables-legacy" ? "legacy" : explicit === "iptables-nft" ? "nft" : "system";
    return decide("iptables", variant, "explicit");
  }

  const nft = await ok(runner, ["nft", "--version"]);
  const plain = await ok(runner, ["iptables", "-V"]);
  const plainVariant = plain.ok ? variantOf(plain.stdout) : null;
  const legacyTool = (await ok(runner, ["iptables-legacy", "-V"])).ok;
  const nftTool = (await ok(runner, ["iptables-nft", "-V"])).ok;

  // Save tools per variant: the suffixed ones, or the plain ones when they are that variant.
  const legacySave = legacyTool ? ["iptables-legacy-save", "ip6tables-legacy-save"] : plainVariant === "legacy" ? ["iptables-save", "ip6tables-save"] : [];
  const nftSave = nftTool ? ["iptables-nft-save", "ip6tables-nft-save"] : plainVariant === "nft" ? ["iptables-save", "ip6tables-save"] : [];
  const legacyRules = await countRules(runner, legacySave);
  const nftRules = await countRules(runner, nftSave);
  let nativeTables: string[] = [];
  if (nft.ok) {
    const r = await runner.run(["nft", "list", "tables"], { allowFailure: true });
    if (r.exitCode === 0) nativeTables = foreignNftTables(r.stdout).filter((t) => !XTABLES_NFT_TABLES.test(t));
  }
  const stats = ` legacy_rules=${legacyRules} nft_rules=${nftRules} nft_tables=${nativeTables.length}`;
  const pick = (v: "legacy" | "nft"): IptablesVariant => ((v === "legacy" ? legacyTool : nftTool) ? v : "system");

  if (legacyRules > 0 && legacyRules >= nftRules) return decide("iptables", pick("legacy"), "legacy-rules", stats);
  if (nftRules > 0) return decide("iptables", pick("nft"), "iptables-nft-rules", stats);
  if (nft.ok && nativeTables.length > 0) return decide("nftables", undefined, "nft-tables", stats);
  if (nft.ok) return decide("nftables", undefined, "default", stats);
  if (plainVariant) return decide("iptables", "system", "no-nft", stats);
  if (nftTool || legacyTool) return decide("iptables", nftTool ? "nft" : "legacy", "no-nft", stats);
  throw new FirewallPlatformError("no firewall tool found: neither nft nor iptables is installed");
}
