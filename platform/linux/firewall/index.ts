/**
 * @module platform/linux/firewall/index
 * The gateway's Linux Firewall as the agent gets it: the detector picks the backend, and the
 * returned Firewall's cleanup() removes Waygate's rules from EVERY backend present, not only the
 * chosen one, so a run that crashed under another setting (or before a kernel/tool change made
 * the detector choose differently) leaves nothing behind. The agent calls cleanup() at start and
 * `waygate cleanup` calls it; set(null) removes only the chosen backend's rules.
 */
import { silentLogger, type Logger } from "../../../core/log.ts";
import type { CommandRunner } from "../../../core/runner.ts";
import type { Firewall, FirewallChange, FirewallConfig } from "../../../core/firewall/firewall.ts";
import { detectFirewallBackend, type BackendChoice, type ExplicitBackend } from "./detect.ts";
import { IptablesFirewall, type IptablesVariant } from "./iptables.ts";
import { NftablesFirewall } from "./nftables.ts";

export { detectFirewallBackend, IptablesFirewall, NftablesFirewall };
export type { BackendChoice, ExplicitBackend, IptablesVariant };

export interface LinuxFirewallOptions {
  runner: CommandRunner;
  logger?: Logger;
  explicit?: ExplicitBackend | "auto";
}

export interface LinuxFirewall extends Firewall {
  readonly choice: BackendChoice;
  /**
   * What the agent runs at start, before its first set(): removes Waygate's rules from every
   * backend other than the chosen one. The chosen backend's leftovers are not removed but
   * reconciled by that set() (our chains and table have fixed names and are diffed), so a restart
   * with the same NetMap changes nothing and does not interrupt forwarded flows.
   */
  cleanupOthers(): Promise<FirewallChange[]>;
}

/** Remove Waygate's chains/table from every backend whose tools exist (but `except`). */
export async function cleanupAllBackends(deps: {
  runner: CommandRunner;
  logger?: Logger;
  except?: { backend: "iptables" | "nftables"; variant?: IptablesVariant };
}): Promise<FirewallChange[]> {
  const changes: FirewallChange[] = [];
  const { except } = deps;
  const has = async (argv: string[]) => (await deps.runner.run(argv, { allowFailure: true })).exitCode === 0;
  if (except?.backend !== "nftables" && (await has(["nft", "--version"]))) changes.push(...(await new NftablesFirewall(deps).cleanup()));
  const variants: IptablesVariant[] = [];
  if (await has(["iptables-legacy", "-V"])) variants.push("legacy");
  if (await has(["iptables-nft", "-V"])) variants.push("nft");
  if (variants.length === 0 && (await has(["iptables", "-V"]))) variants.push("system");
  for (const variant of variants) {
    if (except?.backend === "iptables" && except.variant === variant) continue;
    changes.push(...(await new IptablesFirewall({ ...deps, variant }).cleanup()));
  }
  return changes;
}

export async function createLinuxFirewall(options: LinuxFirewallOptions): Promise<LinuxFirewall> {
  const logger = options.logger ?? silentLogger;
  const choice = await detectFirewallBackend({ explicit: options.explicit, runner: options.runner, logger });
  const inner: Firewall =
    choice.backend === "nftables"
      ? new NftablesFirewall({ runner: options.runner, logger })
      : new IptablesFirewall({ runner: options.runner, logger, variant: choice.variant ?? "system" });
  const exceptChosen = { backend: choice.backend, variant: choice.variant };
  return {
    choice,
    backend: inner.backend,
    set: (config: FirewallConfig | null) => inner.set(config),
    verify: () => inner.verify!(),
    async cleanup() {
      const changes = await inner.cleanup();
      return [...changes, ...(await cleanupAllBackends({ runner: options.runner, logger, except: exceptChosen }))];
    },
    cleanupOthers: () => cleanupAllBackends({ runner: options.runner, logger, except: exceptChosen }),
  };
}
