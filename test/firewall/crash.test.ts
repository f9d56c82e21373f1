/**
 * @module test/firewall/crash.test
 * Crash hygiene with real processes, per backend, in a namespace the test creates: a gateway
 * process (test/firewall/gateway-process.ts: auto-detects the backend from the seeded foreign
 * rules, applies, runs the watchdog) is SIGKILLed and restarted five times, and the ruleset must
 * equal the first run's every time (no duplicates); a rule deleted by hand while it runs is back
 * within 5 s; the cleanup command leaves the ruleset exactly as before the first start.
 */
import { describe, expect } from "bun:test";
import type { FirewallConfig } from "../../core/firewall/firewall.ts";
import { rootTest } from "../helpers/env.ts";
import { lineReader, withRig, type Rig } from "../helpers/netns.ts";
import { dumpRuleset, seedForeign, type BackendUnderTest } from "./harness.ts";

const SCRIPT = `${import.meta.dir}/gateway-process.ts`;
const BUN = process.execPath;

async function start(rig: Rig, ns: string, config: FirewallConfig) {
  const p = rig.spawn(ns, [BUN, SCRIPT, "apply", JSON.stringify(config)]);
  const line = await lineReader(p.subprocess.stdout as ReadableStream<Uint8Array>).next(10_000).catch(async (err) => {
    throw new Error(`${err}; stderr: ${await new Response(p.subprocess.stderr as ReadableStream).text()}`);
  });
  return { p, line };
}

const TOOLS: Record<BackendUnderTest, string[]> = {
  "iptables-legacy": ["ip", "iptables-legacy", "iptables-legacy-restore", "nft"],
  "iptables-nft": ["ip", "iptables-nft", "iptables-nft-restore", "nft"],
  nftables: ["ip", "nft", "iptables-legacy", "iptables-nft"],
};

describe("Firewall crash hygiene (SIGKILL and restart, in a namespace)", () => {
  for (const backend of ["iptables-legacy", "iptables-nft", "nftables"] as const) {
    rootTest(
      `${backend}: five SIGKILL restarts keep the first run's ruleset; hand-deleted rule back within 5 s; cleanup restores the original`,
      TOOLS[backend],
      () =>
        withRig(async (rig) => {
          const ns = await rig.addNamespace("gw");
          const runner = rig.runnerIn(ns);
          await seedForeign(backend, runner);
          const before = await dumpRuleset(backend, runner);
          const config: FirewallConfig = {
            tunnelInterface: rig.linkName("tun"),
            overlayNetwork: "100.64.0.0/10",
            subnets: [
              { prefix: "172.26.0.0/20", nat: true, lanInterface: rig.linkName("lan"), snatAddress: "172.26.0.1" },
              { prefix: "10.9.0.0/16", nat: false, lanInterface: rig.linkName("lan") },
            ],
            mssClamp: true,
            protectGatewayInput: true,
            inputAllow: [{ protocol: "udp", port: 53 }],
            tunnelAddresses: ["100.64.0.1"],
          };

          const first = await start(rig, ns, config);
          expect(first.line).toBe(`applied ${backend}`);
          const applied = await dumpRuleset(backend, runner);
          expect(applied).not.toBe(before);
          first.p.subprocess.kill("SIGKILL");
          await first.p.exited;

          for (let i = 0; i < 5; i++) {
            const again = await start(rig, ns, config);
            expect(again.line).toBe(`applied ${backend}`);
            expect(await dumpRuleset(backend, runner)).toBe(applied);
            if (i === 4) {
              // A rule deleted by hand while the gateway runs comes back within 5 s.
              if (backend === "nftables") await runner.run(["nft", "flush", "chain", "inet", "waygate", "forward"]);
              else await runner.run([`iptables-${backend === "iptables-legacy" ? "legacy" : "nft"}`, "-w", "-D", "WAYGATE-FORWARD", "1"]);
              expect(await dumpRuleset(backend, runner)).not.toBe(applied);
              const t0 = performance.now();
              while ((await dumpRuleset(backend, runner)) !== applied) {
                if (performance.now() - t0 > 5000) throw new Error("not restored within 5 s");
                await Bun.sleep(100);
              }
            }
            again.p.subprocess.kill("SIGKILL");
            expect(await again.p.exited).toBe(128 + 9);
          }
          expect(await dumpRuleset(backend, runner)).toBe(applied);

          const r = await rig.exec(ns, [BUN, SCRIPT, "cleanup"]);
          expect(r.stdout).toMatch(/^cleaned [1-9]/);
          expect(await dumpRuleset(backend, runner)).toBe(before);
        }),
      30_000,
    );
  }
});
