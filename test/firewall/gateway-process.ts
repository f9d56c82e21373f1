/**
 * @module test/firewall/gateway-process
 * Stands in for the gateway agent's firewall lifecycle in the crash tests; run inside a test's
 * namespace (`ip netns exec`), so every command it issues stays there.
 *   bun gateway-process.ts apply CONFIG_JSON   detect (logged), cleanupOthers(), set(config),
 *                                              print "applied <backend>", then keep the rules
 *                                              intact with the watchdog (1 s) until killed
 *   bun gateway-process.ts cleanup             what `waygate cleanup` does: remove everything ours
 */
import { watchFirewall, type FirewallConfig } from "../../core/firewall/firewall.ts";
import { execRunner } from "../../platform/exec.ts";
import { createLinuxFirewall } from "../../platform/linux/firewall/index.ts";

const logger = {
  debug() {},
  info: (m: string) => console.error(m),
  warn: (m: string) => console.error(m),
  error: (m: string) => console.error(m),
};
const [mode, json] = process.argv.slice(2);
const fw = await createLinuxFirewall({ runner: execRunner(), logger });

if (mode === "apply") {
  const config = JSON.parse(json!) as FirewallConfig;
  await fw.cleanupOthers();
  await fw.set(config);
  console.log(`applied ${fw.backend}${fw.choice.variant ? `-${fw.choice.variant}` : ""}`);
  watchFirewall(fw, () => config, {
    intervalMs: 1000,
    logger,
    every: (ms, f) => {
      const t = setInterval(f, ms);
      return () => clearInterval(t);
    },
  });
} else if (mode === "cleanup") {
  const changes = await fw.cleanup();
  console.log(`cleaned ${changes.length}`);
} else {
  console.error("usage: gateway-process.ts apply CONFIG_JSON | cleanup");
  process.exit(64);
}
