/**
 * @module test/firewall/linux-firewall.test
 * createLinuxFirewall in a namespace: the detector's choice is logged once, cleanupOthers() (run
 * at start) removes a crashed run's rules from the backends NOT chosen and leaves the chosen
 * one's to be reconciled by set() without a change, and cleanup() (`waygate cleanup`) removes
 * Waygate's rules from every backend, leaving each ruleset as it was before.
 */
import { expect } from "bun:test";
import { recordingLogger } from "../../core/log.ts";
import { createLinuxFirewall } from "../../platform/linux/firewall/index.ts";
import { IptablesFirewall } from "../../platform/linux/firewall/iptables.ts";
import { NftablesFirewall } from "../../platform/linux/firewall/nftables.ts";
import type { FirewallConfig } from "../../core/firewall/firewall.ts";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";
import { countingRunner, dumpRuleset, seedForeign } from "./harness.ts";

rootTest("leftovers in every backend: cleanupOthers() spares the chosen one, cleanup() removes all", ["ip", "nft", "iptables-legacy", "iptables-nft"], () =>
  withRig(async (rig) => {
    const ns = await rig.addNamespace("lf");
    const runner = rig.runnerIn(ns);
    await seedForeign("nftables", runner);
    await seedForeign("iptables-legacy", runner);
    const before = {
      nft: await dumpRuleset("nftables", runner),
      legacy: await dumpRuleset("iptables-legacy", runner),
    };
    const config: FirewallConfig = {
      tunnelInterface: "wg0",
      overlayNetwork: "100.64.0.0/10",
      subnets: [{ prefix: "192.168.50.0/24", nat: true, lanInterface: "eth1" }],
      mssClamp: true,
      protectGatewayInput: true,
    };
    // A crashed run under each backend.
    await new NftablesFirewall({ runner }).set(config);
    await new IptablesFirewall({ runner, variant: "legacy" }).set(config);
    await new IptablesFirewall({ runner, variant: "nft" }).set(config);

    const logger = recordingLogger();
    const counting = countingRunner(runner);
    const fw = await createLinuxFirewall({ runner: counting, logger, explicit: "nftables" });
    expect(logger.lines.map((l) => l.message)).toEqual(["firewall: backend=nftables reason=explicit"]);
    const removed = await fw.cleanupOthers();
    expect(removed.map((c) => c.target)).toContain("iptables(v4) filter WAYGATE-FORWARD");
    expect(removed.some((c) => c.target.startsWith("nftables"))).toBe(false);
    expect(await dumpRuleset("iptables-legacy", runner)).toBe(before.legacy);
    expect((await dumpRuleset("iptables-nft", runner)).includes("WAYGATE-")).toBe(false);
    expect((await dumpRuleset("nftables", runner)).includes("table inet waygate")).toBe(true);

    const m = counting.mutations;
    expect(await fw.set(config)).toEqual([]);
    expect(counting.mutations).toBe(m);
    expect((await dumpRuleset("nftables", runner)).includes("table inet waygate")).toBe(true);
    expect(await dumpRuleset("nftables", runner)).not.toBe(before.nft);

    await new IptablesFirewall({ runner, variant: "legacy" }).set(config);
    const all = await fw.cleanup();
    expect(all.map((c) => c.target)).toContain("nftables inet waygate");
    expect(await dumpRuleset("iptables-legacy", runner)).toBe(before.legacy);
    // Nothing of ours is left. What the crashed iptables-nft run made iptables-nft instantiate
    // stays: its empty built-in chains (policy accept, no rules: no effect on any packet), which
    // cannot be told apart from ones that existed before. Everything else is as before.
    const nftAfter = await dumpRuleset("nftables", runner);
    expect(nftAfter.includes("waygate")).toBe(false);
    expect(nftAfter.includes("WAYGATE")).toBe(false);
    const withoutEmptyBuiltins = nftAfter
      .replace(/\n\tchain (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) \{\n\t\ttype [^\n]*policy accept;\n\t\}\n/g, "\n")
      .replace(/\n\n\}/g, "\n}")
      .replace(/^table ip6? \S+ \{\n+\}\n/gm, "");
    expect(withoutEmptyBuiltins).toBe(before.nft);
  }),
);
