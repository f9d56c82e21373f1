/**
 * @module test/contract/firewall.contract
 * The suite every Firewall backend runs: iptables (legacy and nf_tables variants) and nftables,
 * each for real inside a network namespace the harness creates and pre-seeds with rules Waygate
 * does not own (a Docker-like DOCKER-USER chain and MASQUERADE, a ufw-like input chain, a mangle
 * MARK; for nftables a foreign `table inet filter` and `table ip nat`). It checks behaviour through
 * the harness's own dumps of the whole ruleset and its count of state-changing commands, never
 * through the firewall's opinion of itself alone:
 *
 * - set(config): our chains/table present with the rendered rules; foreign rules byte-identical
 *   and in the same order;
 * - set(same): no state-changing command, identical dump; set(other): only ours changed;
 * - set(null), and cleanup() of a fresh instance after a "crash": dump equal to before;
 * - five fresh instances applying the same config: dump equal to the first run's (no duplicates);
 * - a rule deleted by hand: verify() false, set() restores it, verify() true; the watchdog
 *   restores within 5 s;
 * - IPv6 subnets get IPv6 rules, removed again when no IPv6 subnet is served.
 */
import { describe, expect, test } from "bun:test";
import { recordingLogger } from "../../core/log.ts";
import { watchFirewall, type Firewall, type FirewallConfig } from "../../core/firewall/firewall.ts";

export interface FirewallHarness {
  firewall: Firewall;
  /** Interface names the configs use. */
  tunnel: string;
  lan: string;
  /** The whole ruleset (ours and foreign) as text, counters and timestamps removed. */
  dump(): Promise<string>;
  /** dump() without Waygate's chains/table/jumps: what must never change. */
  foreignDump(): Promise<string>;
  /** Waygate's part of the ruleset as text. */
  ours(): Promise<string>;
  /** State-changing commands issued so far through the firewall's runner. */
  mutations(): number;
  /** A new instance over the same system, as after a crash and restart. */
  newFirewall(): Firewall;
  /** Delete one of our rules the way an admin would (not through the firewall). */
  deleteOneOfOurs(): Promise<void>;
  cleanup(): Promise<void>;
}

export interface FirewallContractOptions {
  test?: (name: string, fn: () => Promise<void>, timeoutMs?: number) => void;
  timeoutMs?: number;
  /** Text every rendering of contractConfigs().main must contain in ours() (layout checks). */
  expectOurs: { main: string[]; other: string[]; v6: string[]; mss: string[] };
}

export function contractConfigs(h: { tunnel: string; lan: string }): Record<"main" | "other" | "v6", FirewallConfig> {
  const main: FirewallConfig = {
    tunnelInterface: h.tunnel,
    overlayNetwork: "100.64.0.0/10",
    subnets: [
      { prefix: "172.26.0.0/20", nat: true, lanInterface: h.lan, snatAddress: "172.26.0.1" },
      { prefix: "10.9.0.0/16", nat: false, lanInterface: h.lan },
      { prefix: "0.0.0.0/0", nat: true, lanInterface: h.lan },
    ],
    mssClamp: true,
    protectGatewayInput: true,
    inputAllow: [{ protocol: "udp", port: 53 }, { protocol: "tcp", port: 53 }],
    tunnelAddresses: ["100.64.0.1"],
  };
  const other: FirewallConfig = {
    ...main,
    subnets: [{ prefix: "172.26.0.0/20", nat: false, lanInterface: h.lan }],
    mssClamp: false,
    protectGatewayInput: false,
  };
  const v6: FirewallConfig = {
    ...main,
    overlayNetwork6: "fd7a:115c:a1e0::/48",
    subnets: [...main.subnets, { prefix: "fd00:26::/64", nat: true, lanInterface: h.lan }],
    tunnelAddresses: ["100.64.0.1", "fd7a:115c:a1e0::1"],
  };
  return { main, other, v6 };
}

export function firewallContract(name: string, makeHarness: () => Promise<FirewallHarness>, options: FirewallContractOptions): void {
  const timeout = options.timeoutMs ?? 20_000;
  const it = options.test ?? ((n: string, fn: () => Promise<void>, ms?: number) => test(n, fn, ms));
  const withHarness = (fn: (h: FirewallHarness) => Promise<void>) => async () => {
    const h = await makeHarness();
    try {
      await fn(h);
    } finally {
      await h.cleanup();
    }
  };
  const contains = (text: string, parts: string[]) => {
    for (const p of parts) expect(text).toContain(p);
  };

  describe(`Firewall contract: ${name}`, () => {
    it(
      "set(config) installs our rules, leaves foreign rules untouched and in order; set(same) changes nothing",
      withHarness(async (h) => {
        const c = contractConfigs(h);
        const before = await h.dump();
        const foreign = await h.foreignDump();
        expect(await h.ours()).toBe("");
        const changes = await h.firewall.set(c.main);
        expect(changes.length).toBeGreaterThan(0);
        const ours = await h.ours();
        contains(ours, options.expectOurs.main);
        contains(ours, options.expectOurs.mss);
        expect(await h.foreignDump()).toBe(foreign);
        expect(await h.dump()).not.toBe(before);

        const applied = await h.dump();
        const m = h.mutations();
        expect(await h.firewall.set(c.main)).toEqual([]);
        expect(h.mutations()).toBe(m);
        expect(await h.dump()).toBe(applied);
        expect(await h.firewall.verify!()).toBe(true);
      }),
      timeout,
    );

    it(
      "set(other) changes only ours; set(null) restores the ruleset exactly",
      withHarness(async (h) => {
        const c = contractConfigs(h);
        const before = await h.dump();
        const foreign = await h.foreignDump();
        await h.firewall.set(c.main);
        await h.firewall.set(c.other);
        const ours = await h.ours();
        contains(ours, options.expectOurs.other);
        for (const gone of options.expectOurs.mss) expect(ours).not.toContain(gone);
        expect(await h.foreignDump()).toBe(foreign);
        const m = h.mutations();
        expect(await h.firewall.set(c.other)).toEqual([]);
        expect(h.mutations()).toBe(m);

        expect((await h.firewall.set(null)).length).toBeGreaterThan(0);
        expect(await h.dump()).toBe(before);
        expect(await h.firewall.set(null)).toEqual([]);
      }),
      timeout,
    );

    it(
      "crash: five fresh instances applying the same config leave the first run's ruleset; a fresh cleanup() restores the original",
      withHarness(async (h) => {
        const c = contractConfigs(h);
        const before = await h.dump();
        await h.firewall.set(c.main);
        const first = await h.dump();
        for (let i = 0; i < 5; i++) {
          const fw = h.newFirewall();
          const m = h.mutations();
          expect(await fw.set(c.main)).toEqual([]);
          expect(h.mutations()).toBe(m);
          expect(await h.dump()).toBe(first);
        }
        // A crash in the middle of a config change: the leftovers are another config's.
        await h.newFirewall().set(c.other);
        await h.newFirewall().set(c.main);
        expect(await h.dump()).toBe(first);
        await h.newFirewall().cleanup();
        expect(await h.dump()).toBe(before);
      }),
      timeout,
    );

    it(
      "a rule deleted by hand: verify() is false, set() restores it; the watchdog restores it within 5 s",
      withHarness(async (h) => {
        const c = contractConfigs(h);
        await h.firewall.set(c.main);
        const applied = await h.dump();
        await h.deleteOneOfOurs();
        expect(await h.dump()).not.toBe(applied);
        expect(await h.firewall.verify!()).toBe(false);
        expect((await h.firewall.set(c.main)).length).toBeGreaterThan(0);
        expect(await h.dump()).toBe(applied);
        expect(await h.firewall.verify!()).toBe(true);

        const logger = recordingLogger();
        const stop = watchFirewall(h.firewall, () => c.main, {
          intervalMs: 250,
          logger,
          every: (ms, fn) => {
            const t = setInterval(fn, ms);
            return () => clearInterval(t);
          },
        });
        try {
          await h.deleteOneOfOurs();
          const t0 = performance.now();
          const logged = () => logger.lines.some((l) => l.message.startsWith(`firewall: restored=true backend=${h.firewall.backend}`));
          // The dump can match while set() is still reading back, before the watchdog logs.
          while ((await h.dump()) !== applied || !logged()) {
            if (performance.now() - t0 > 5000) throw new Error("watchdog did not restore the rule within 5 s");
            await Bun.sleep(50);
          }
          expect(performance.now() - t0).toBeLessThan(5000);
        } finally {
          stop();
        }
      }),
      timeout,
    );

    it(
      "IPv6 subnets get IPv6 rules; dropping them removes them",
      withHarness(async (h) => {
        const c = contractConfigs(h);
        const before = await h.dump();
        const foreign = await h.foreignDump();
        await h.firewall.set(c.v6);
        contains(await h.ours(), options.expectOurs.v6);
        expect(await h.foreignDump()).toBe(foreign);
        const m = h.mutations();
        expect(await h.firewall.set(c.v6)).toEqual([]);
        expect(h.mutations()).toBe(m);
        await h.firewall.set(c.main);
        for (const gone of options.expectOurs.v6) expect(await h.ours()).not.toContain(gone);
        await h.firewall.set(null);
        expect(await h.dump()).toBe(before);
      }),
      timeout,
    );
  });
}
