/**
 * @module test/firewall/traffic.test
 * The Firewall's behaviour on real packets, per backend, in three namespaces the test creates:
 *
 *   client (100.64.0.2) ──veth── gateway (tunnel side 100.64.0.1 | LAN side 192.168.50.1, .2)
 *                                   ──veth── lan: the printer (192.168.50.10)
 *
 * The gateway's veth toward the client stands in for the Waygate TUN; routes are set by hand (the
 * printer's LAN routes 100.64.0.0/10 back via the gateway, as a LAN router would for NAT off).
 * Forwarding is turned on in the gateway namespace by platform/linux/sysctl.ts and restored at the
 * end. The foreign rules of the contract harness are seeded first; for iptables they include a
 * Docker-like FORWARD policy DROP, so forwarding works only through our ACCEPT.
 *
 * Checked: NAT on → the printer sees the SNAT address (or the masquerade address); NAT off → it
 * sees the client's virtual address; the printer cannot initiate to the client (and our stateful
 * drop rule's counter is what grew); the gateway's own service on its LAN address is not
 * reachable from the tunnel, while the agent's DNS port on its overlay address is; a service on
 * the gateway's virtual address is closed too until the config lists that address in
 * `tunnelAddresses` (the Device's inbound ACLs filter it then), and then only it opens, the LAN
 * address stays closed; cleanup() restores the ruleset and set(null) leaves forwarding as the
 * printer-initiates control showed.
 */
import { describe, expect } from "bun:test";
import type { FirewallConfig } from "../../core/firewall/firewall.ts";
import type { CommandRunner } from "../../core/runner.ts";
import { enableForwarding, readSysctl } from "../../platform/linux/sysctl.ts";
import { rootTest } from "../helpers/env.ts";
import { lineReader, withRig, type Rig } from "../helpers/netns.ts";
import { dumpRuleset, makeBackend, seedForeign, type BackendUnderTest } from "./harness.ts";

const PEER = `${import.meta.dir}/tcp-peer.ts`;
const BUN = process.execPath;

async function startServer(rig: Rig, ns: string, host: string, port: number): Promise<void> {
  const p = rig.spawn(ns, [BUN, PEER, "serve", host, String(port)]);
  const reader = p.subprocess.stdout as ReadableStream<Uint8Array>;
  const line = await lineReader(reader).next(5000);
  if (line !== "listening") throw new Error(`server in ${ns} said ${JSON.stringify(line)}`);
}

async function probe(rig: Rig, ns: string, host: string, port: number, ms = 800): Promise<string> {
  const r = await rig.exec(ns, [BUN, PEER, "connect", host, String(port), String(ms)], { allowFailure: true });
  return r.stdout.trim();
}

async function ping(rig: Rig, ns: string, host: string): Promise<boolean> {
  return (await rig.exec(ns, ["ping", "-c", "1", "-W", "1", host], { allowFailure: true })).exitCode === 0;
}

/** Packets counted by our stateful "cannot initiate into the tunnel" drop. */
async function statefulDrops(backend: BackendUnderTest, runner: CommandRunner): Promise<number> {
  if (backend === "nftables") {
    const text = (await runner.run(["nft", "list", "chain", "inet", "waygate", "forward"])).stdout;
    return Number(/oifname "[^"]+" counter packets (\d+) bytes \d+ drop/.exec(text)?.[1] ?? NaN);
  }
  const v = backend === "iptables-legacy" ? "legacy" : "nft";
  const text = (await runner.run([`iptables-${v}`, "-w", "-t", "filter", "-L", "WAYGATE-FORWARD", "-v", "-x", "-n"])).stdout;
  const line = text.split("\n").find((l) => /\bDROP\b/.test(l));
  return Number(line?.trim().split(/\s+/)[0] ?? NaN);
}

const TOOLS: Record<BackendUnderTest, string[]> = {
  "iptables-legacy": ["ip", "ping", "iptables-legacy", "iptables-legacy-restore", "sysctl"],
  "iptables-nft": ["ip", "ping", "iptables-nft", "iptables-nft-restore", "sysctl"],
  nftables: ["ip", "ping", "nft", "sysctl"],
};

describe("Firewall traffic (client → gateway → LAN printer, in namespaces)", () => {
  for (const backend of ["iptables-legacy", "iptables-nft", "nftables"] as const) {
    rootTest(
      `${backend}: NAT on/off source at the printer; printer cannot initiate; LAN-side services closed to the tunnel, the virtual address open once listed`,
      TOOLS[backend],
      () =>
        withRig(async (rig) => {
          const client = await rig.addNamespace("cl");
          const gw = await rig.addNamespace("gw");
          const lan = await rig.addNamespace("lan");
          const [, tun] = await rig.addVeth({ ns: client, addresses: ["100.64.0.2/10"] }, { ns: gw, addresses: ["100.64.0.1/10"] });
          const [lanIf] = await rig.addVeth(
            { ns: gw, addresses: ["192.168.50.1/24", "192.168.50.2/24"] },
            { ns: lan, addresses: ["192.168.50.10/24"] },
          );
          await rig.exec(client, ["ip", "route", "add", "192.168.50.0/24", "via", "100.64.0.1"]);
          await rig.exec(lan, ["ip", "route", "add", "100.64.0.0/10", "via", "192.168.50.1"]);
          const gwRunner = rig.runnerIn(gw);

          const fwd = await enableForwarding({ ipv4: true, ipv6: false }, { runner: gwRunner });
          expect(fwd.previous).toEqual({ "net.ipv4.ip_forward": "0" });
          expect(await readSysctl("net.ipv4.ip_forward", { runner: gwRunner })).toBe("1");

          await Promise.all([
            startServer(rig, lan, "192.168.50.10", 8080), // the printer
            startServer(rig, client, "100.64.0.2", 8082), // something on the laptop
            startServer(rig, gw, "192.168.50.1", 8081), // a service of the gateway itself
            startServer(rig, gw, "100.64.0.1", 53), // the agent's DNS forwarder (allowed)
            startServer(rig, gw, "100.64.0.1", 8083), // a service on the gateway's virtual address
          ]);

          // Control, no rules at all: everything is reachable, so what fails later is our doing.
          const [c1, c2, c3] = await Promise.all([
            probe(rig, lan, "100.64.0.2", 8082),
            probe(rig, client, "192.168.50.1", 8081),
            probe(rig, client, "192.168.50.10", 8080),
          ]);
          expect([c1, c2, c3]).toEqual(["192.168.50.10", "100.64.0.2", "100.64.0.2"]);

          await seedForeign(backend, gwRunner);
          const before = await dumpRuleset(backend, gwRunner);
          const fw = makeBackend(backend, gwRunner);
          const config = (nat: boolean, snatAddress?: string, tunnelAddresses?: string[]): FirewallConfig => ({
            tunnelInterface: tun,
            overlayNetwork: "100.64.0.0/10",
            subnets: [{ prefix: "192.168.50.0/24", nat, lanInterface: lanIf, ...(snatAddress ? { snatAddress } : {}) }],
            mssClamp: true,
            protectGatewayInput: true,
            inputAllow: [{ protocol: "udp", port: 53 }, { protocol: "tcp", port: 53 }],
            ...(tunnelAddresses ? { tunnelAddresses } : {}),
          });

          await fw.set(config(true, "192.168.50.2"));
          expect(await probe(rig, client, "192.168.50.10", 8080)).toBe("192.168.50.2");
          await fw.set(config(true));
          expect(await probe(rig, client, "192.168.50.10", 8080)).toBe("192.168.50.1");

          const drops = await statefulDrops(backend, gwRunner);
          const [fromPrinter, pinged, gatewayService, dns, virtualService] = await Promise.all([
            probe(rig, lan, "100.64.0.2", 8082),
            ping(rig, lan, "100.64.0.2"),
            probe(rig, client, "192.168.50.1", 8081),
            probe(rig, client, "100.64.0.1", 53),
            probe(rig, client, "100.64.0.1", 8083),
          ]);
          expect(fromPrinter).toBe("timeout");
          expect(pinged).toBe(false);
          expect(await statefulDrops(backend, gwRunner)).toBeGreaterThan(drops);
          expect(gatewayService).toBe("timeout");
          expect(dns).toBe("100.64.0.2");
          expect(virtualService).toBe("timeout");

          // The gateway's virtual address listed: reachable through the tunnel; its LAN address is not.
          await fw.set(config(true, undefined, ["100.64.0.1"]));
          const [onVirtual, onLan, printerAgain] = await Promise.all([
            probe(rig, client, "100.64.0.1", 8083),
            probe(rig, client, "192.168.50.1", 8081),
            probe(rig, lan, "100.64.0.2", 8082),
          ]);
          expect(onVirtual).toBe("100.64.0.2");
          expect(onLan).toBe("timeout");
          expect(printerAgain).toBe("timeout");
          // The laptop can still ping the printer: replies are ESTABLISHED.
          expect(await ping(rig, client, "192.168.50.10")).toBe(true);

          await fw.set(config(false));
          expect(await probe(rig, client, "192.168.50.10", 8080)).toBe("100.64.0.2");
          expect(await probe(rig, lan, "100.64.0.2", 8082, 500)).toBe("timeout");

          await fw.cleanup();
          expect(await dumpRuleset(backend, gwRunner)).toBe(before);
          await fwd.restore();
          expect(await readSysctl("net.ipv4.ip_forward", { runner: gwRunner })).toBe("0");
        }),
      30_000,
    );
  }
});
