/**
 * @module platform/linux/firewall/nftables
 * The nftables Firewall backend: one table of our own, `table inet waygate`. set() reads it with
 * `nft list table inet waygate` (one command), compares the normalised listing with the rendered
 * table and, only when they differ, replaces the whole table in one `nft -f -` transaction
 * (core/firewall/nftables.ts). The text listing rather than `nft -j`: our renderer already writes
 * the listing's exact text, so comparing is a string comparison with nothing to re-serialise;
 * counters are normalised away. If the kernel prints the table differently from our rendering (an
 * nft version's spelling), the printed form is remembered after the first apply (read-back
 * calibration), so the next set() of the same config changes nothing.
 */
import { silentLogger, type Logger } from "../../../core/log.ts";
import type { CommandRunner } from "../../../core/runner.ts";
import {
  FirewallPlatformError,
  normaliseConfig,
  type Firewall,
  type FirewallChange,
  type FirewallConfig,
} from "../../../core/firewall/firewall.ts";
import {
  NFT_DELETE_SCRIPT,
  NFT_FAMILY,
  NFT_TABLE,
  nftReplaceScript,
  normaliseNftListing,
  renderNftables,
} from "../../../core/firewall/nftables.ts";

export interface NftablesFirewallOptions {
  runner: CommandRunner;
  logger?: Logger;
}

const TARGET = `nftables ${NFT_FAMILY} ${NFT_TABLE}`;

export class NftablesFirewall implements Firewall {
  readonly backend = "nftables" as const;
  private readonly runner: CommandRunner;
  private readonly logger: Logger;
  private readonly printed = new Map<string, string>();
  private last: string | null = null;

  constructor(options: NftablesFirewallOptions) {
    this.runner = options.runner;
    this.logger = options.logger ?? silentLogger;
  }

  /** Our table's normalised listing, or null when it does not exist. */
  async read(): Promise<string | null> {
    const r = await this.runner.run(["nft", "list", "table", NFT_FAMILY, NFT_TABLE], { allowFailure: true });
    if (r.exitCode === 0) return normaliseNftListing(r.stdout);
    if (/No such file or directory/.test(r.stderr)) return null;
    throw new FirewallPlatformError(`nft list table ${NFT_FAMILY} ${NFT_TABLE} failed (exit ${r.exitCode}): ${r.stderr.trim()}`);
  }

  private expected(table: string): string {
    return this.printed.get(table) ?? table;
  }

  async set(config: FirewallConfig | null): Promise<FirewallChange[]> {
    if (config === null) {
      this.last = null;
      if ((await this.read()) === null) return [];
      this.logger.debug(`firewall: delete ${TARGET}`);
      await this.runner.run(["nft", "-f", "-"], { input: NFT_DELETE_SCRIPT });
      return [{ op: "delete", target: TARGET }];
    }
    const want = renderNftables(normaliseConfig(config));
    const have = await this.read();
    this.last = want;
    if (have === this.expected(want)) return [];
    this.logger.debug(`firewall: ${have === null ? "create" : "replace"} ${TARGET}`);
    await this.runner.run(["nft", "-f", "-"], { input: nftReplaceScript(want) });
    const after = await this.read();
    if (after === null) throw new FirewallPlatformError(`after nft -f, ${TARGET} does not exist`);
    if (after !== want && after !== this.printed.get(want)) {
      this.printed.set(want, after);
      this.logger.warn(`firewall: readback=differs backend=nftables (kernel spelling remembered)`);
    }
    return [{ op: have === null ? "create" : "replace", target: TARGET }];
  }

  cleanup(): Promise<FirewallChange[]> {
    return this.set(null);
  }

  async verify(): Promise<boolean> {
    if (this.last === null) return true;
    return (await this.read()) === this.expected(this.last);
  }
}
