/**
 * @module test/firewall/harness
 * Namespace harnesses for the Firewall contract and the traffic tests: a rig namespace
 * pre-seeded with rules Waygate does not own, dumps of the whole ruleset as the tools print it
 * (timestamps and counters removed), and a runner that counts state-changing commands. Every
 * iptables/nft command runs inside the namespace (`ip netns exec`): the host's firewall is never
 * read or written.
 */
import type { CommandRunner } from "../../core/runner.ts";
import type { Firewall } from "../../core/firewall/firewall.ts";
import { normaliseNftListing } from "../../core/firewall/nftables.ts";
import { IptablesFirewall } from "../../platform/linux/firewall/iptables.ts";
import { NftablesFirewall } from "../../platform/linux/firewall/nftables.ts";
import { createRig, type Rig } from "../helpers/netns.ts";
import type { FirewallHarness } from "../contract/firewall.contract.ts";

export type BackendUnderTest = "iptables-legacy" | "iptables-nft" | "nftables";

/** Docker-like and ufw-like rules: nat, filter (FORWARD policy DROP) and mangle, both families. */
export const FOREIGN_IPTABLES_V4 = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -d 10.250.0.1/32 -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
:ufw-user-input - [0:0]
-A INPUT -j ufw-user-input
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-USER -j RETURN
-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 9999 -j MARK --set-xmark 0x1/0xffffffff
COMMIT
`;

export const FOREIGN_IPTABLES_V6 = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s fd00:17::/64 ! -o docker0 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ufw6-user-input - [0:0]
-A INPUT -j ufw6-user-input
-A ufw6-user-input -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 9999 -j MARK --set-xmark 0x1/0xffffffff
COMMIT
`;

/** A foreign native nftables setup: an nftables.conf-like `inet filter` and a masquerade. */
export const FOREIGN_NFT = `table inet filter {
  chain input { type filter hook input priority filter; policy accept; tcp dport 22 accept; }
  chain forward { type filter hook forward priority filter; policy accept; ct state invalid drop; }
}
table ip nat {
  chain postrouting { type nat hook postrouting priority srcnat; policy accept; ip saddr 172.17.0.0/16 oifname != "docker0" masquerade; }
}
`;

const stripSave = (text: string) =>
  text
    .split("\n")
    .filter((l) => !l.startsWith("#"))
    .map((l) => l.replace(/\[\d+:\d+\]/g, "[0:0]"))
    .join("\n");

/** Runs inside `ns` and counts the commands that can change state. */
export function countingRunner(inner: CommandRunner): CommandRunner & { mutations: number; log: string[] } {
  const r = {
    mutations: 0,
    log: [] as string[],
    run(argv: readonly string[], options?: Parameters<CommandRunner["run"]>[1]) {
      r.log.push(argv.join(" "));
      const readOnly =
        /-save$/.test(argv[0] ?? "") ||
        argv.includes("-V") ||
        argv.includes("--version") ||
        (argv[0] === "nft" && argv[1] === "list") ||
        (argv[0] === "sysctl" && argv[1] === "-n");
      if (!readOnly) r.mutations++;
      return inner.run(argv, options);
    },
  };
  return r;
}

export function makeBackend(backend: BackendUnderTest, runner: CommandRunner): Firewall {
  if (backend === "nftables") return new NftablesFirewall({ runner });
  return new IptablesFirewall({ runner, variant: backend === "iptables-legacy" ? "legacy" : "nft" });
}

/** The whole ruleset of the namespace as seen by `backend`'s tools. */
export async function dumpRuleset(backend: BackendUnderTest, runner: CommandRunner): Promise<string> {
  if (backend === "nftables") {
    return normaliseNftListing((await runner.run(["nft", "list", "ruleset"])).stdout);
  }
  const v = backend === "iptables-legacy" ? "legacy" : "nft";
  const v4 = (await runner.run([`iptables-${v}-save`])).stdout;
  const v6 = (await runner.run([`ip6tables-${v}-save`])).stdout;
  return `${stripSave(v4)}\n--- ipv6\n${stripSave(v6)}`;
}

/** Waygate's part of a dump. */
export function oursOf(backend: BackendUnderTest, dump: string): string {
  if (backend === "nftables") {
    const m = /^table inet waygate \{\n[\s\S]*?\n\}\n/m.exec(dump);
    return m ? m[0] : "";
  }
  return dump
    .split("\n")
    .filter((l) => l.includes("WAYGATE-"))
    .join("\n");
}

/** A dump without Waygate's part. */
export function foreignOf(backend: BackendUnderTest, dump: string): string {
  if (backend === "nftables") return dump.replace(/^table inet waygate \{\n[\s\S]*?\n\}\n/m, "");
  return dump
    .split("\n")
    .filter((l) => !l.includes("WAYGATE-"))
    .join("\n");
}

export async function seedForeign(backend: BackendUnderTest, runner: CommandRunner): Promise<void> {
  if (backend === "nftables") {
    await runner.run(["nft", "-f", "-"], { input: FOREIGN_NFT });
    return;
  }
  const v = backend === "iptables-legacy" ? "legacy" : "nft";
  await runner.run([`iptables-${v}-restore`, "-w"], { input: FOREIGN_IPTABLES_V4 });
  await runner.run([`ip6tables-${v}-restore`, "-w"], { input: FOREIGN_IPTABLES_V6 });
}

export async function firewallHarness(backend: BackendUnderTest): Promise<FirewallHarness & { rig: Rig; ns: string }> {
  const rig = await createRig();
  try {
    const ns = await rig.addNamespace("fw");
    const plain = rig.runnerIn(ns);
    await seedForeign(backend, plain);
    const counting = countingRunner(plain);
    const tunnel = rig.linkName("tun");
    const lan = rig.linkName("lan");
    return {
      rig,
      ns,
      tunnel,
      lan,
      firewall: makeBackend(backend, counting),
      dump: () => dumpRuleset(backend, plain),
      foreignDump: async () => foreignOf(backend, await dumpRuleset(backend, plain)),
      ours: async () => oursOf(backend, await dumpRuleset(backend, plain)),
      mutations: () => counting.mutations,
      newFirewall: () => makeBackend(backend, counting),
      async deleteOneOfOurs() {
        if (backend === "nftables") {
          // The forward chain's stateful drop, by handle, as an admin would.
          const listing = (await plain.run(["nft", "-a", "list", "chain", "inet", "waygate", "forward"])).stdout;
          const handle = /oifname .* drop # handle (\d+)/.exec(listing)?.[1];
          if (!handle) throw new Error(`no drop rule in:\n${listing}`);
          await plain.run(["nft", "delete", "rule", "inet", "waygate", "forward", "handle", handle]);
        } else {
          const v = backend === "iptables-legacy" ? "legacy" : "nft";
          await plain.run([`iptables-${v}`, "-w", "-D", "WAYGATE-FORWARD", "2"]);
        }
      },
      cleanup: () => rig.destroy(),
    };
  } catch (err) {
    await rig.destroy();
    throw err;
  }
}
