/**
 * @module test/e2e/gateway-office.test
 * The gateway issue's end-to-end test in the office rig (scripts/rig/office.ts), once with the
 * iptables backend and once with nftables (`serve --standalone --firewall X`):
 *
 *   laptop 198.18.0.2 ── gateway 198.18.0.1 | 172.26.0.1 ── printer 172.26.0.250 (+ .251)
 *
 * The gateway namespace first gets foreign rules (test/firewall/harness.ts: for iptables a
 * Docker-like FORWARD policy DROP, so forwarding works only through Waygate's ACCEPT), and the
 * ruleset, routes and ip_forward are recorded: "before Waygate". Then, with a grant of
 * 172.26.0.0/20 to the laptop's tag:
 *   - laptop → printer: ping and TCP (HTTP) work; the printer sees the gateway's LAN address
 *     (NAT on), then, after `gateways nat ... off`, the laptop's virtual address (the printer
 *     routes 100.64.0.0/10 back via the gateway);
 *   - the printer's SYN to the laptop is dropped, and the kernel's stateful drop counter grew;
 *   - the gateway's own service on its LAN address (an SSH stand-in on 172.26.0.1:22, reachable
 *     from the LAN) is not reachable from the laptop: dropped and counted by the Device
 *     (`gateway-local-address`);
 *   - a forged source (a second address on the laptop's TUN, `ping -I`) is dropped and counted
 *     (`source-not-allowed`);
 *   - with the policy's subnet filter "172.26.0.250 tcp 80": .250:80 works, .250:22 does not
 *     (`gateway-no-grant`), .251 does not;
 * Crash hygiene: SIGKILL and restart the gateway five times: the ruleset equals the first run's
 * every time; one of our rules deleted by hand is back within 5 s; after a SIGKILL, `waygate
 * cleanup` leaves ruleset, routes and ip_forward exactly as before Waygate (a second run has
 * nothing to do); a clean stop (SIGTERM) does the same by itself.
 * Counters come from `waygate status --json` (Device drops per peer) and the kernel's rule counters.
 */
import { describe, expect } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { LAN, type Office, withOffice } from "../../scripts/rig/office.ts";
import type { CommandRunner } from "../../core/runner.ts";
import { rootTest } from "../helpers/env.ts";
import { dumpRuleset, seedForeign, type BackendUnderTest } from "../firewall/harness.ts";

type Firewall = "iptables" | "nftables";

/** The iptables variant `iptables` is on this machine: what the foreign rules are seeded with. */
async function systemIptables(): Promise<BackendUnderTest> {
  const r = Bun.spawnSync(["iptables", "-V"]);
  return /nf_tables/.test(r.stdout.toString()) ? "iptables-nft" : "iptables-legacy";
}

/**
 * Every route in every table. The kernel's `local fe80::...` entries are left out: they appear
 * when a veth's link-local address finishes duplicate address detection, on its own schedule.
 */
async function routesOf(runner: CommandRunner): Promise<string> {
  const v4 = (await runner.run(["ip", "-4", "route", "show", "table", "all"])).stdout;
  const v6 = (await runner.run(["ip", "-6", "route", "show", "table", "all"])).stdout;
  return `${v4}--- ipv6\n${v6
    .split("\n")
    .filter((l) => !/^local fe80::/.test(l))
    .join("\n")}`;
}

/** Packets counted by the kernel's "nothing from outside may open a flow into the tunnel" drop. */
async function kernelStatefulDrops(firewall: Firewall, runner: CommandRunner): Promise<number> {
  if (firewall === "nftables") {
    const text = (await runner.run(["nft", "list", "chain", "inet", "waygate", "forward"])).stdout;
    return Number(/oifname "[^"]+" counter packets (\d+) bytes \d+ drop/.exec(text)?.[1] ?? NaN);
  }
  const text = (await runner.run(["iptables", "-w", "-t", "filter", "-L", "WAYGATE-FORWARD", "-v", "-x", "-n"])).stdout;
  const line = text.split("\n").find((l) => /\bDROP\b/.test(l));
  return Number(line?.trim().split(/\s+/)[0] ?? NaN);
}

async function deleteOneOfOurs(firewall: Firewall, runner: CommandRunner): Promise<void> {
  if (firewall === "nftables") {
    const listing = (await runner.run(["nft", "-a", "list", "chain", "inet", "waygate", "forward"])).stdout;
    const handle = /oifname .* drop # handle (\d+)/.exec(listing)?.[1];
    if (!handle) throw new Error(`no drop rule in:\n${listing}`);
    await runner.run(["nft", "delete", "rule", "inet", "waygate", "forward", "handle", handle]);
  } else {
    await runner.run(["iptables", "-w", "-D", "WAYGATE-FORWARD", "2"]);
  }
}

/** The gateway Device's drop counter for the laptop peer. */
async function laptopDrops(office: Office, reason: string): Promise<number> {
  const s = await office.status("gateway");
  const peer = s.peers.find((p: { id: string }) => p.id === office.laptop!.id);
  return Number(peer?.drops?.[reason] ?? 0);
}

async function until<T>(what: string, f: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms (last: ${JSON.stringify(v)?.slice(0, 2000)})`);
    await Bun.sleep(100);
  }
}

const debug = process.env.WAYGATE_E2E_DEBUG ? (m: string) => console.log(m) : () => {};

const TOOLS: Record<Firewall, string[]> = {
  iptables: ["ip", "ping", "curl", "iptables", "iptables-save", "iptables-nft-restore", "nft"],
  nftables: ["ip", "ping", "curl", "nft", "iptables-legacy", "iptables-nft"],
};

describe("gateway in the office rig (laptop → gateway → printer)", () => {
  for (const firewall of ["iptables", "nftables"] as const) {
    rootTest(
      `${firewall}: NAT on/off, stateful, own services closed, forged source, subnet filter; crash hygiene, watchdog, cleanup, clean stop`,
      TOOLS[firewall],
      () =>
        withOffice({ firewall }, async (office) => {
          const t0 = Date.now();
          const lap = (m: string) => debug(`[${firewall}] ${((Date.now() - t0) / 1000).toFixed(1)}s ${m}`);
          const { ns } = office;
          const gwRunner = office.rig.runnerIn(ns.gateway);
          const seeded: BackendUnderTest = firewall === "nftables" ? "nftables" : await systemIptables();
          await seedForeign(seeded, gwRunner);
          const dump = () => dumpRuleset(seeded, gwRunner);
          const forwarding = async () => (await gwRunner.run(["sysctl", "-n", "net.ipv4.ip_forward"])).stdout.trim();
          const before = { rules: await dump(), routes: await routesOf(gwRunner), forwarding: await forwarding() };

          // Gateway up, laptop enrolled and granted before it runs (the gateway then knows its key
          // when the first handshake arrives).
          const gw = await office.startGateway();
          await office.untilLog(gw.process, new RegExp(`firewall: backend=${firewall}( variant=\\S+)? reason=explicit`), { timeoutMs: 1000 });
          expect(await forwarding()).toBe("1");
          expect(existsSync(join(office.dirs.gatewayAgent, "forwarding.json"))).toBe(true);
          const laptop = await office.enrolLaptop("staff");
          await office.grant("office", { subnets: [LAN.prefix] });
          await office.waitStatus("gateway", (s) => s.peers?.some((p: any) => p.id === laptop.id));
          await office.startLaptop();
          await office.waitStatus("laptop", (s) => s.peers?.some((p: any) => p.gatewayFor.includes(LAN.prefix)));
          await until("laptop route", async () => (await office.rig.exec(ns.laptop, ["ip", "-4", "route", "show", LAN.prefix])).stdout, (t) => t.includes(office.links.laptopTun));
          lap("laptop up and granted");

          await Promise.all([
            office.listen(ns.printer, LAN.printer, [80, 22]),
            office.listen(ns.printer, LAN.other, [80]),
            office.listen(ns.gateway, LAN.gateway, [22]), // the gateway's own SSH stand-in
            office.listen(ns.laptop, "0.0.0.0", [8080]),
          ]);

          // NAT on: ping and TCP; the printer sees the gateway's LAN address.
          expect(await office.ping(ns.laptop, LAN.printer, { count: 1, timeoutS: 3 })).toBe(true);
          expect(await office.http(ns.laptop, `http://${LAN.printer}/`, 3000)).toBe(LAN.gateway);
          lap("NAT on: ping + TCP");

          // The printer cannot open a connection to the laptop: dropped in the kernel, counted.
          const dropsBefore = await kernelStatefulDrops(firewall, gwRunner);
          expect(await office.http(ns.printer, `http://${laptop.virtualAddress}:8080/`, 1000)).toBeNull();
          expect(await kernelStatefulDrops(firewall, gwRunner)).toBeGreaterThan(dropsBefore);

          // The gateway's own service: reachable from its LAN, not through the grant.
          expect(await office.http(ns.printer, `http://${LAN.gateway}:22/`)).toBe(LAN.printer);
          const localBefore = await laptopDrops(office, "gateway-local-address");
          expect(await office.http(ns.laptop, `http://${LAN.gateway}:22/`, 1000)).toBeNull();
          expect(await laptopDrops(office, "gateway-local-address")).toBeGreaterThan(localBefore);

          // A forged source from the laptop is dropped at the gateway and counted.
          const forged = "100.64.0.99";
          await office.rig.exec(ns.laptop, ["ip", "addr", "add", `${forged}/32`, "dev", office.links.laptopTun]);
          const spoofBefore = (await laptopDrops(office, "source-not-allowed")) + (await laptopDrops(office, "gateway-source-spoofed"));
          expect(await office.ping(ns.laptop, LAN.printer, { source: forged, count: 1, timeoutS: 1 })).toBe(false);
          await until(
            "forged source counted",
            async () => (await laptopDrops(office, "source-not-allowed")) + (await laptopDrops(office, "gateway-source-spoofed")),
            (n) => n > spoofBefore,
            2000,
          );
          await office.rig.exec(ns.laptop, ["ip", "addr", "del", `${forged}/32`, "dev", office.links.laptopTun]);
          lap("stateful, own services, forged source");

          // NAT off: the printer sees the laptop's virtual address (it routes the overlay back).
          const tNat = Date.now();
          await office.admin(["gateways", "nat", gw.id, LAN.prefix, "off"]);
          await office.untilLog(gw.process, /gateway: applied revision=\d+ .*172\.26\.0\.0\/20@\S+:nat=off/, { since: tNat, timeoutMs: 5000 });
          expect(await office.http(ns.laptop, `http://${LAN.printer}/`, 3000)).toBe(laptop.virtualAddress);
          expect(await office.ping(ns.laptop, LAN.printer, { count: 1, timeoutS: 2 })).toBe(true);
          lap("NAT off");

          // Subnet filter: only 172.26.0.250 tcp 80.
          await office.admin(["policies", "edit", "office", "--filter", `${LAN.printer} tcp 80`]);
          await office.waitStatus("gateway", (s) =>
            s.peers?.some((p: any) => p.id === laptop.id && p.acls.some((a: any) => a.direction === "forward" && a.protocol === "tcp" && a.ports === "80")),
          );
          await office.waitStatus("laptop", (s) => s.peers?.some((p: any) => p.gatewayFor.length > 0 && !p.gatewayFor.includes(LAN.prefix)));
          await Bun.sleep(200); // the engines apply their control messages asynchronously
          expect(await office.http(ns.laptop, `http://${LAN.printer}/`, 3000)).toBe(laptop.virtualAddress);
          const noGrantBefore = await laptopDrops(office, "gateway-no-grant");
          expect(await office.http(ns.laptop, `http://${LAN.printer}:22/`, 1000)).toBeNull();
          expect(await laptopDrops(office, "gateway-no-grant")).toBeGreaterThan(noGrantBefore);
          expect(await office.http(ns.gateway, `http://${LAN.other}/`)).toBe(LAN.gateway); // it is up
          expect(await office.http(ns.laptop, `http://${LAN.other}/`, 1000)).toBeNull();
          lap("subnet filter");

          // Crash hygiene: five SIGKILLs and restarts, the same ruleset every time.
          const first = await dump();
          expect(first).not.toBe(before.rules);
          for (let i = 0; i < 5; i++) {
            expect(await office.stopGateway()).toBe(137);
            const since = Date.now();
            const restarted = await office.startGateway();
            // The crashed run's rules were reconciled, not rewritten: the same NetMap changes nothing.
            await office.untilLog(restarted.process, /gateway: applied revision=\d+ backend=\S+ firewall_changes=0 /, { since, timeoutMs: 1000 });
            expect(await dump()).toBe(first);
          }
          expect(await forwarding()).toBe("1");
          lap("five SIGKILL restarts");

          // A rule deleted by hand is back within 5 s (the watchdog).
          await deleteOneOfOurs(firewall, gwRunner);
          const tDel = Date.now();
          expect(await dump()).not.toBe(first);
          await until("hand-deleted rule restored", dump, (d) => d === first, 5000);
          const restoredIn = Date.now() - tDel;
          expect(restoredIn).toBeLessThan(5000);
          lap(`watchdog restored in ${restoredIn} ms`);

          // `waygate cleanup` after a SIGKILL: exactly as before Waygate.
          expect(await office.stopGateway()).toBe(137);
          const out = await office.cli(ns.gateway, ["cleanup", "--state-dir", office.dirs.gatewayAgent]);
          expect(out).toMatch(/cleanup: firewall /);
          expect(out).toContain(`cleanup: sysctl net.ipv4.ip_forward 1 -> ${before.forwarding}`);
          expect(await dump()).toBe(before.rules);
          expect(await routesOf(gwRunner)).toBe(before.routes);
          expect(await forwarding()).toBe(before.forwarding);
          expect(existsSync(join(office.dirs.gatewayAgent, "forwarding.json"))).toBe(false);
          expect(await office.cli(ns.gateway, ["cleanup", "--state-dir", office.dirs.gatewayAgent])).toBe("cleanup: nothing to clean up\n");
          lap("cleanup");

          // A clean stop removes everything by itself.
          await office.startGateway();
          expect(await dump()).toBe(first);
          expect(await office.stopGateway({ graceful: true })).toBe(0);
          expect(await dump()).toBe(before.rules);
          expect(await routesOf(gwRunner)).toBe(before.routes);
          expect(await forwarding()).toBe(before.forwarding);
          expect(existsSync(join(office.dirs.gatewayAgent, "forwarding.json"))).toBe(false);
          lap("clean stop");
        }),
      60_000,
    );
  }
});
