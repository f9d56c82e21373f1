/**
 * @module test/e2e/gateway-default-route.test
 * A default route through a gateway, end to end, in the office rig with the laptop behind a
 * router (scripts/rig/office.ts `laptopBehindRouter`, `internetHost`):
 *
 *   laptop 10.20.0.2 ──(default via 10.20.0.1)── gateway 10.20.0.1, 198.18.0.1 | 172.26.0.1 ── "internet" 203.0.113.10
 *
 * The control plane and the gateway's WireGuard endpoint (198.18.0.1) are reached through the
 * laptop's own default route. The gateway serves 0.0.0.0/0 (MASQUERADE out of its default route),
 * the laptop runs with `--fail-closed`. Checked:
 *   - the laptop's default traffic goes through the tunnel (the two /1 halves on the TUN) and out
 *     of the gateway masqueraded: 203.0.113.10 sees the gateway's address;
 *   - no loop: 198.18.0.1 has a bypass host route via the laptop's router (proto 87), the NetMap
 *     stream stays connected and a policy change still arrives;
 *   - the laptop's own LAN stays direct (allowLanAccess is the default);
 *   - fail closed: with the agent SIGKILLed (TUN gone) the blackhole halves catch the traffic,
 *     nothing is routed out of the old default route;
 *   - `waygate cleanup` on the laptop leaves its routes exactly as before Waygate.
 */
import { expect } from "bun:test";
import { INTERNET, INTERNET_HOST, LAN, LAPTOP_LAN, withOffice } from "../../scripts/rig/office.ts";
import type { CommandRunner } from "../../core/runner.ts";
import { rootTest } from "../helpers/env.ts";

async function routes(runner: CommandRunner): Promise<string> {
  const v4 = (await runner.run(["ip", "-4", "route", "show", "table", "main"])).stdout;
  const v6 = (await runner.run(["ip", "-6", "route", "show", "table", "main"])).stdout;
  return `${v4}--- ipv6\n${v6}`;
}

async function routeGet(runner: CommandRunner, address: string): Promise<{ type?: string; dev?: string; gateway?: string } | null> {
  const r = await runner.run(["ip", "-j", "-4", "route", "get", address], { allowFailure: true });
  if (r.exitCode !== 0) return null;
  return (JSON.parse(r.stdout) as { type?: string; dev?: string; gateway?: string }[])[0] ?? null;
}

rootTest(
  "default route through a gateway: bypass for control plane and endpoint, LAN kept, fail-closed blackhole, cleanup restores routes",
  ["ip", "curl", "nft"],
  () =>
    withOffice({ firewall: "nftables", laptopBehindRouter: true, internetHost: true, runArgs: ["--fail-closed"] }, async (office) => {
      const { ns, links } = office;
      const lapRunner = office.rig.runnerIn(ns.laptop);
      const before = await routes(lapRunner);

      const gw = await office.startGateway();
      await office.admin(["gateways", "subnet-add", gw.id, "0.0.0.0/0"]);
      await office.untilLog(gw.process, /gateway: applied revision=\d+ .*0\.0\.0\.0\/0@\S+:masquerade/, { timeoutMs: 5000 });
      const laptop = await office.enrolLaptop("staff");
      await office.grant("internet", { subnets: ["0.0.0.0/0"] });
      await office.waitStatus("gateway", (s) => s.peers?.some((p: any) => p.id === laptop.id));
      await office.startLaptop();
      // The compiler hands 0.0.0.0/0 over as the pieces outside the overlay (…, 128.0.0.0/1).
      await office.waitStatus("laptop", (s) => s.peers?.some((p: any) => p.gatewayFor.includes("128.0.0.0/1")));
      await office.listen(ns.printer, INTERNET_HOST, [80]);

      // The default route's halves on the TUN, the blackholes one metric behind, the bypass.
      const ours = (await lapRunner.run(["ip", "-4", "route", "show", "proto", "87"])).stdout;
      expect(ours).toContain(`0.0.0.0/1 dev ${links.laptopTun}`);
      expect(ours).toContain(`128.0.0.0/1 dev ${links.laptopTun}`);
      expect(ours).toMatch(/blackhole 0\.0\.0\.0\/1 .*metric 11/);
      expect(ours).toContain(`${INTERNET.gateway} via ${LAPTOP_LAN.router} dev ${links.laptopInternet}`);
      expect(await routeGet(lapRunner, INTERNET.gateway)).toMatchObject({ dev: links.laptopInternet, gateway: LAPTOP_LAN.router });
      expect(await routeGet(lapRunner, INTERNET_HOST)).toMatchObject({ dev: links.laptopTun });
      // The laptop's LAN stays direct.
      expect(await routeGet(lapRunner, "10.20.0.77")).toMatchObject({ dev: links.laptopInternet });

      // Through the tunnel, masqueraded out of the gateway's default route.
      expect(await office.http(ns.laptop, `http://${INTERNET_HOST}/`, 5000)).toBe(LAN.gateway);
      // No loop: the control plane still reaches the laptop (a policy change arrives).
      const rev = (await office.status("laptop")).netmap.revision;
      await office.grant("lan-too", { subnets: [LAN.prefix] });
      await office.waitStatus("laptop", (s) => s.netmap.revision > rev && s.control.connected && s.peers.some((p: any) => p.gatewayFor.includes(LAN.prefix)), 5000);

      // Fail closed: the agent dies, the TUN and its routes go, the blackholes stay.
      expect(await office.stopLaptop()).toBe(137);
      await Bun.sleep(100);
      expect(await routeGet(lapRunner, INTERNET_HOST)).toBeNull(); // "RTNETLINK answers: Invalid argument": blackhole
      expect((await lapRunner.run(["ip", "-4", "route", "show", "type", "blackhole"])).stdout).toContain("0.0.0.0/1");
      expect(await office.http(ns.laptop, `http://${INTERNET_HOST}/`, 1000)).toBeNull();

      // cleanup: the laptop's routes exactly as before.
      const out = await office.cli(ns.laptop, ["cleanup", "--state-dir", office.dirs.laptop, "--interface", links.laptopTun]);
      expect(out).toContain("cleanup: route delete 0.0.0.0/1 blackhole");
      expect(await routes(lapRunner)).toBe(before);
    }),
  40_000,
);
