/**
 * @module platform/linux/firewall/iptables
 * The iptables Firewall backend: reads each family with one `iptables-save` (ip6tables-save),
 * plans with core/firewall/iptables.ts and applies with one `iptables-restore --noflush -w` per
 * family, whose input names only Waygate's chains and their jump rules (atomic per table). Same
 * config twice: two reads, no write.
 *
 * The variant (legacy x_tables or nf_tables) is chosen by the detector and fixed per instance:
 * the tools are `iptables-legacy-save`/`-restore` or `iptables-nft-save`/`-restore`, or plain
 * `iptables-save`/`-restore` ("system": whatever the alternatives link points at). Reading is
 * done with *-save only: unlike `iptables -S`, it does not create empty legacy tables that then
 * make every iptables-nft call warn about "legacy tables present".
 *
 * Read-back calibration: after every restore the chains are read again. If the kernel prints a
 * chain differently from our rendering (another iptables version's spelling), the printed form is
 * remembered as what that rendering looks like, so the next set() of the same config is a no-op
 * instead of a rewrite every time; a missing chain or jump after a restore is an error.
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
  parseIptablesSave,
  planIptablesRestore,
  renderIptables,
  type IptablesChain,
} from "../../../core/firewall/iptables.ts";
import type { Family } from "../../../core/net/address.ts";

export type IptablesVariant = "legacy" | "nft" | "system";

export interface IptablesTools {
  save: string;
  restore: string;
}

/** The binaries of one variant and family. */
export function iptablesTools(variant: IptablesVariant, family: Family): IptablesTools {
  const base = family === 4 ? "iptables" : "ip6tables";
  const suffix = variant === "system" ? "" : `-${variant}`;
  return { save: `${base}${suffix}-save`, restore: `${base}${suffix}-restore` };
}

export interface IptablesFirewallOptions {
  runner: CommandRunner;
  logger?: Logger;
  variant: IptablesVariant;
}

const chainKey = (c: IptablesChain) => JSON.stringify([c.family, c.table, c.chain, c.rules]);

export class IptablesFirewall implements Firewall {
  readonly backend = "iptables" as const;
  readonly variant: IptablesVariant;
  private readonly runner: CommandRunner;
  private readonly logger: Logger;
  /** Rendering → the rules the kernel prints for it, where they differ. */
  private readonly printed = new Map<string, string[]>();
  private last: IptablesChain[] | null = null;

  constructor(options: IptablesFirewallOptions) {
    this.runner = options.runner;
    this.logger = options.logger ?? silentLogger;
    this.variant = options.variant;
  }

  private tools(family: Family): IptablesTools {
    return iptablesTools(this.variant, family);
  }

  /** `*-save` of one family; "" when the tool is missing and `optional`. */
  async save(family: Family, optional = false): Promise<string> {
    const { save } = this.tools(family);
    const r = await this.runner.run([save], { allowFailure: true });
    if (r.exitCode !== 0) {
      if (optional && r.exitCode === 127) return "";
      throw new FirewallPlatformError(`${save} failed (exit ${r.exitCode}): ${r.stderr.trim()}`);
    }
    return r.stdout;
  }

  private expected = (c: IptablesChain): readonly string[] => this.printed.get(chainKey(c)) ?? c.rules;

  /** Families to read: IPv4 always, IPv6 too (to find leftovers), unless its tools are missing and not wanted. */
  private async reconcile(want: IptablesChain[], apply: boolean): Promise<{ changes: FirewallChange[]; intact: boolean }> {
    const changes: FirewallChange[] = [];
    let intact = true;
    for (const family of [4, 6] as const) {
      const wanted = want.filter((c) => c.family === family);
      const text = await this.save(family, wanted.length === 0);
      const plan = planIptablesRestore(family, parseIptablesSave(text), wanted, this.expected);
      if (plan.restore === "") continue;
      intact = false;
      if (!apply) continue;
      for (const ch of plan.changes) this.logger.debug(`firewall: ${ch.op} ${ch.target}${ch.detail ? ` (${ch.detail})` : ""}`);
      await this.runner.run([this.tools(family).restore, "--noflush", "-w"], { input: plan.restore });
      changes.push(...plan.changes);
      await this.readBack(family, wanted);
    }
    return { changes, intact };
  }

  private async readBack(family: Family, wanted: IptablesChain[]): Promise<void> {
    const have = parseIptablesSave(await this.save(family));
    for (const c of wanted) {
      const rules = have.get(c.table)?.chains.get(c.chain);
      const jump = have.get(c.table)?.chains.get(c.hook)?.includes(`-A ${c.hook} -j ${c.chain}`);
      if (rules === undefined || !jump) {
        throw new FirewallPlatformError(`after ${this.tools(family).restore}, ${c.table} ${c.chain} or its jump from ${c.hook} is missing`);
      }
      if (rules.join("\n") !== c.rules.join("\n")) {
        this.printed.set(chainKey(c), rules);
        this.logger.warn(`firewall: readback=differs backend=iptables chain=${c.chain} family=ipv${family} (kernel spelling remembered)`);
      }
    }
    const extra = planIptablesRestore(family, have, wanted, this.expected);
    if (extra.restore !== "") {
      throw new FirewallPlatformError(`after ${this.tools(family).restore} our chains still differ: ${extra.changes.map((c) => c.target).join(", ")}`);
    }
  }

  async set(config: FirewallConfig | null): Promise<FirewallChange[]> {
    if (config === null) {
      const { changes } = await this.reconcile([], true);
      this.last = null;
      return changes;
    }
    const want = renderIptables(normaliseConfig(config));
    const { changes } = await this.reconcile(want, true);
    this.last = want;
    return changes;
  }

  cleanup(): Promise<FirewallChange[]> {
    return this.set(null);
  }

  async verify(): Promise<boolean> {
    if (this.last === null) return true;
    return (await this.reconcile(this.last, false)).intact;
  }
}
