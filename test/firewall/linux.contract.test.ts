/**
 * @module test/firewall/linux.contract.test
 * The Firewall contract, for real, in network namespaces (root only): iptables in both variants
 * (legacy x_tables and nf_tables) and nftables. Each harness is a fresh namespace pre-seeded with
 * foreign rules (test/firewall/harness.ts); the host's firewall is never touched.
 */
import { rootTest } from "../helpers/env.ts";
import { firewallContract } from "../contract/firewall.contract.ts";
import { firewallHarness, type BackendUnderTest } from "./harness.ts";

const TOOLS: Record<BackendUnderTest, string[]> = {
  "iptables-legacy": ["ip", "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore", "ip6tables-legacy-restore"],
  "iptables-nft": ["ip", "iptables-nft", "iptables-nft-save", "iptables-nft-restore", "ip6tables-nft-restore"],
  nftables: ["ip", "nft"],
};

const IPT = (tun: string, lan: string) => ({
  main: [
    "-A POSTROUTING -j WAYGATE-POSTROUTING",
    `-A WAYGATE-POSTROUTING -s 100.64.0.0/10 -d 172.26.0.0/20 -o ${lan} -j SNAT --to-source 172.26.0.1`,
    `-A WAYGATE-POSTROUTING -s 100.64.0.0/10 -d 10.9.0.0/16 -o ${lan} -j ACCEPT`,
    `-A WAYGATE-POSTROUTING -s 100.64.0.0/10 -o ${lan} -j MASQUERADE`,
    "-A FORWARD -j WAYGATE-FORWARD",
    `-A WAYGATE-FORWARD -o ${tun} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A WAYGATE-FORWARD ! -i ${tun} -o ${tun} -j DROP`,
    `-A WAYGATE-FORWARD -s 100.64.0.0/10 -d 172.26.0.0/20 -i ${tun} -o ${lan} -j ACCEPT`,
    "-A INPUT -j WAYGATE-INPUT",
    `-A WAYGATE-INPUT -i ${tun} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A WAYGATE-INPUT -i ${tun} -p udp -m udp --dport 53 -j ACCEPT`,
    `-A WAYGATE-INPUT -d 100.64.0.1/32 -i ${tun} -j ACCEPT\n-A WAYGATE-INPUT -i ${tun} -j DROP`,
  ],
  other: [`-A WAYGATE-POSTROUTING -s 100.64.0.0/10 -d 172.26.0.0/20 -o ${lan} -j ACCEPT`],
  mss: [
    "-A FORWARD -j WAYGATE-MSS",
    `-A WAYGATE-MSS -o ${tun} -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu`,
    "-A INPUT -j WAYGATE-INPUT",
  ],
  v6: [
    `-A WAYGATE-POSTROUTING -s fd7a:115c:a1e0::/48 -d fd00:26::/64 -o ${lan} -j MASQUERADE`,
    `-A WAYGATE-INPUT -d fd7a:115c:a1e0::1/128 -i ${tun} -j ACCEPT\n-A WAYGATE-INPUT -i ${tun} -j DROP`,
  ],
});

const NFT = (tun: string, lan: string) => ({
  main: [
    "type nat hook postrouting priority srcnat - 1; policy accept;",
    `ip saddr 100.64.0.0/10 ip daddr 172.26.0.0/20 oifname "${lan}" snat ip to 172.26.0.1`,
    `ip saddr 100.64.0.0/10 ip daddr 10.9.0.0/16 oifname "${lan}" accept`,
    `ip saddr 100.64.0.0/10 oifname "${lan}" masquerade`,
    `oifname "${tun}" ct state established,related accept\n\t\tiifname != "${tun}" oifname "${tun}" counter drop`,
    `iifname "${tun}" udp dport 53 accept`,
    `iifname "${tun}" ip daddr 100.64.0.1 accept\n\t\tiifname "${tun}" counter drop`,
  ],
  other: [`ip saddr 100.64.0.0/10 ip daddr 172.26.0.0/20 oifname "${lan}" accept`],
  mss: [`oifname "${tun}" tcp flags syn / syn,rst tcp option maxseg size set rt mtu`, "chain input"],
  v6: [
    `ip6 saddr fd7a:115c:a1e0::/48 ip6 daddr fd00:26::/64 oifname "${lan}" masquerade`,
    `iifname "${tun}" ip daddr 100.64.0.1 accept\n\t\tiifname "${tun}" ip6 daddr fd7a:115c:a1e0::1 accept`,
  ],
});

// Names are fixed per rig prefix; the expectations are computed from the harness's names.
for (const backend of ["iptables-legacy", "iptables-nft", "nftables"] as const) {
  let names = { tun: "", lan: "" };
  const expectations = {
    get main() { return (backend === "nftables" ? NFT : IPT)(names.tun, names.lan).main; },
    get other() { return (backend === "nftables" ? NFT : IPT)(names.tun, names.lan).other; },
    get mss() { return (backend === "nftables" ? NFT : IPT)(names.tun, names.lan).mss; },
    get v6() { return (backend === "nftables" ? NFT : IPT)(names.tun, names.lan).v6; },
  };
  firewallContract(
    `${backend} (in a network namespace)`,
    async () => {
      const h = await firewallHarness(backend);
      names = { tun: h.tunnel, lan: h.lan };
      return h;
    },
    {
      expectOurs: expectations,
      test: (name, fn, ms) => rootTest(name, TOOLS[backend], fn, ms),
    },
  );
}
