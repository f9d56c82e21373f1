/**
 * @module test/firewall/render.test
 * The pure half of the Firewall: config validation, the iptables and nftables renderings (exact
 * text: it is also what the kernel prints back, which the namespace contract checks), and the
 * restore planner over iptables-save texts: creates, no-ops, duplicate jumps, leftovers, and that
 * a foreign chain or rule is never named in what we hand to iptables-restore.
 */
import { describe, expect, test } from "bun:test";
import { FirewallConfigError, normaliseConfig, type FirewallConfig } from "../../core/firewall/firewall.ts";
import { parseIptablesSave, planIptablesRestore, renderIptables } from "../../core/firewall/iptables.ts";
import { nftReplaceScript, normaliseNftListing, renderNftables } from "../../core/firewall/nftables.ts";
import { FOREIGN_IPTABLES_V4 } from "./harness.ts";

const base: FirewallConfig = {
  tunnelInterface: "wg0",
  overlayNetwork: "100.64.0.0/10",
  subnets: [
    { prefix: "0.0.0.0/0", nat: true, lanInterface: "eth0", snatAddress: "203.0.113.5" },
    { prefix: "10.9.0.0/16", nat: false, lanInterface: "eth1" },
    { prefix: "172.26.0.0/20", nat: true, lanInterface: "eth1", snatAddress: "172.26.0.1" },
    { prefix: "172.26.0.0/20", nat: true, lanInterface: "eth1", snatAddress: "172.26.0.1" },
  ],
  mssClamp: true,
  protectGatewayInput: true,
  inputAllow: [{ protocol: "udp", port: 53 }],
  tunnelAddresses: ["fd7a::1", "100.64.0.1", "100.64.0.1"],
};

describe("normaliseConfig", () => {
  const bad = (patch: Partial<FirewallConfig>, field: RegExp) => {
    let err: unknown;
    try {
      normaliseConfig({ ...base, ...patch });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FirewallConfigError);
    expect((err as FirewallConfigError).code).toBe("E_CONFIG_INVALID");
    expect((err as Error).message).toMatch(field);
  };
  test("rejects what would be unsafe or ambiguous, naming the field", () => {
    bad({ tunnelInterface: "wg0 -j ACCEPT" }, /tunnelInterface/);
    bad({ tunnelInterface: "a-very-long-interface" }, /tunnelInterface/);
    bad({ overlayNetwork: "100.64.0.1/10" }, /overlayNetwork/);
    bad({ subnets: [{ prefix: "fd00::/64", nat: true, lanInterface: "eth0" }] }, /subnets\[0\].*overlayNetwork6/);
    bad({ subnets: [{ prefix: "10.0.0.0/8", nat: true, lanInterface: "eth0", snatAddress: "fd00::1" }] }, /subnets\[0\]\.snatAddress/);
    bad({ subnets: [{ prefix: "10.0.0.0/8", nat: true, lanInterface: "wg0" }] }, /tunnel interface/);
    bad(
      { subnets: [{ prefix: "10.0.0.0/8", nat: true, lanInterface: "eth0" }, { prefix: "10.0.0.0/8", nat: false, lanInterface: "eth0" }] },
      /subnets\[1\].*twice/,
    );
    bad({ inputAllow: [{ protocol: "tcp", port: 70000 }] }, /inputAllow\[0\]\.port/);
    bad({ tunnelAddresses: ["100.64.0.1", "100.64.0.0/10"] }, /tunnelAddresses\[1\]/);
  });
  test("most specific subnet first, duplicates once, default route always masqueraded, IPv4 only", () => {
    const n = normaliseConfig(base);
    expect(n.subnets.map((s) => `${s.prefix.text} ${s.lanInterface} ${s.snatAddress}`)).toEqual([
      "172.26.0.0/20 eth1 172.26.0.1",
      "10.9.0.0/16 eth1 null",
      "0.0.0.0/0 eth0 null",
    ]);
    expect(n.families).toEqual([4]);
    expect(n.tunnelAddresses).toEqual([
      { family: 4, text: "100.64.0.1" },
      { family: 6, text: "fd7a::1" },
    ]);
  });
});

describe("renderIptables", () => {
  test("the four chains, in iptables-save's own spelling", () => {
    const chains = renderIptables(base);
    expect(chains.map((c) => `${c.family} ${c.table} ${c.hook} → ${c.chain}`)).toEqual([
      "4 nat POSTROUTING → WAYGATE-POSTROUTING",
      "4 filter FORWARD → WAYGATE-FORWARD",
      "4 filter INPUT → WAYGATE-INPUT",
      "4 mangle FORWARD → WAYGATE-MSS",
    ]);
    expect(chains.flatMap((c) => c.rules)).toEqual([
      "-A WAYGATE-POSTROUTING -s 100.64.0.0/10 -d 172.26.0.0/20 -o eth1 -j SNAT --to-source 172.26.0.1",
      "-A WAYGATE-POSTROUTING -s 100.64.0.0/10 -d 10.9.0.0/16 -o eth1 -j ACCEPT",
      "-A WAYGATE-POSTROUTING -s 100.64.0.0/10 -o eth0 -j MASQUERADE",
      "-A WAYGATE-FORWARD -o wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
      "-A WAYGATE-FORWARD ! -i wg0 -o wg0 -j DROP",
      "-A WAYGATE-FORWARD -s 100.64.0.0/10 -d 172.26.0.0/20 -i wg0 -o eth1 -j ACCEPT",
      "-A WAYGATE-FORWARD -s 100.64.0.0/10 -d 10.9.0.0/16 -i wg0 -o eth1 -j ACCEPT",
      "-A WAYGATE-FORWARD -s 100.64.0.0/10 -i wg0 -o eth0 -j ACCEPT",
      "-A WAYGATE-INPUT -i wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
      "-A WAYGATE-INPUT -i wg0 -p udp -m udp --dport 53 -j ACCEPT",
      "-A WAYGATE-INPUT -d 100.64.0.1/32 -i wg0 -j ACCEPT",
      "-A WAYGATE-INPUT -i wg0 -j DROP",
      "-A WAYGATE-MSS -o wg0 -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu",
      "-A WAYGATE-MSS -i wg0 -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu",
    ]);
  });
  test("IPv6 chains only when an IPv6 subnet is served; switches off drop their chains", () => {
    const v6 = renderIptables({ ...base, overlayNetwork6: "fd7a::/48", subnets: [{ prefix: "fd00:1::/64", nat: false, lanInterface: "eth1" }], mssClamp: false, protectGatewayInput: false });
    expect(v6.map((c) => `${c.family} ${c.chain}`)).toEqual(["4 WAYGATE-FORWARD", "6 WAYGATE-POSTROUTING", "6 WAYGATE-FORWARD"]);
    expect(v6.find((c) => c.family === 6 && c.table === "nat")!.rules).toEqual(["-A WAYGATE-POSTROUTING -s fd7a::/48 -d fd00:1::/64 -o eth1 -j ACCEPT"]);
    const v6Input = renderIptables({ ...base, overlayNetwork6: "fd7a::/48", subnets: [{ prefix: "fd00:1::/64", nat: false, lanInterface: "eth1" }] });
    expect(v6Input.filter((c) => c.chain === "WAYGATE-INPUT").map((c) => c.rules)).toEqual([
      [
        "-A WAYGATE-INPUT -i wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A WAYGATE-INPUT -i wg0 -p udp -m udp --dport 53 -j ACCEPT",
        "-A WAYGATE-INPUT -d 100.64.0.1/32 -i wg0 -j ACCEPT",
        "-A WAYGATE-INPUT -i wg0 -j DROP",
      ],
      [
        "-A WAYGATE-INPUT -i wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A WAYGATE-INPUT -i wg0 -p udp -m udp --dport 53 -j ACCEPT",
        "-A WAYGATE-INPUT -d fd7a::1/128 -i wg0 -j ACCEPT",
        "-A WAYGATE-INPUT -i wg0 -j DROP",
      ],
    ]);
  });
  test("without tunnelAddresses the INPUT chain is what it was: established, inputAllow, drop", () => {
    const { tunnelAddresses: _, ...old } = base;
    expect(renderIptables(old).find((c) => c.chain === "WAYGATE-INPUT")!.rules).toEqual([
      "-A WAYGATE-INPUT -i wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
      "-A WAYGATE-INPUT -i wg0 -p udp -m udp --dport 53 -j ACCEPT",
      "-A WAYGATE-INPUT -i wg0 -j DROP",
    ]);
    expect(renderNftables(old)).toContain('\t\tiifname "wg0" udp dport 53 accept\n\t\tiifname "wg0" counter drop\n');
  });
});

describe("planIptablesRestore", () => {
  const want = renderIptables(base);
  const applied = (extra = "") => {
    const byTable = new Map<string, string[]>();
    for (const c of want) byTable.set(c.table, [...(byTable.get(c.table) ?? []), `:${c.chain} - [0:0]`, `-A ${c.hook} -j ${c.chain}`, ...c.rules]);
    return [...byTable].map(([t, lines]) => `*${t}\n${lines.join("\n")}\n${extra && t === "filter" ? `${extra}\n` : ""}COMMIT`).join("\n");
  };
  test("from a system with foreign rules: one restore that names only our chains and jumps", () => {
    const plan = planIptablesRestore(4, parseIptablesSave(FOREIGN_IPTABLES_V4), want);
    expect(plan.restore).toContain("*filter\n:WAYGATE-FORWARD - [0:0]\n-A WAYGATE-FORWARD -o wg0");
    expect(plan.restore).toContain("-I FORWARD 1 -j WAYGATE-FORWARD");
    for (const line of plan.restore.trimEnd().split("\n")) expect(line).toMatch(/^(\*(mangle|nat|filter)|COMMIT|:WAYGATE-\S+ - \[0:0\]|-A WAYGATE-.*|-I \S+ 1 -j WAYGATE-\S+)$/);
    expect(plan.changes.filter((c) => c.op === "create").length).toBe(8);
  });
  test("what we applied: nothing to do; duplicates and misplaced jumps are deleted; a changed chain is refilled", () => {
    expect(planIptablesRestore(4, parseIptablesSave(applied()), want)).toEqual({ restore: "", changes: [] });
    const dup = planIptablesRestore(4, parseIptablesSave(applied("-A FORWARD -j WAYGATE-FORWARD\n-A OUTPUT -j WAYGATE-INPUT")), want);
    expect(dup.restore).toBe("*filter\n-D FORWARD -j WAYGATE-FORWARD\n-D OUTPUT -j WAYGATE-INPUT\nCOMMIT\n");
    const fewer = renderIptables({ ...base, protectGatewayInput: false, mssClamp: false });
    const shrink = planIptablesRestore(4, parseIptablesSave(applied()), fewer);
    expect(shrink.restore).toBe(
      "*mangle\n-D FORWARD -j WAYGATE-MSS\n-F WAYGATE-MSS\n-X WAYGATE-MSS\nCOMMIT\n*filter\n-D INPUT -j WAYGATE-INPUT\n-F WAYGATE-INPUT\n-X WAYGATE-INPUT\nCOMMIT\n",
    );
    const other = renderIptables({ ...base, subnets: base.subnets.slice(0, 1) });
    const refill = planIptablesRestore(4, parseIptablesSave(applied()), other);
    expect(refill.changes.map((c) => `${c.op} ${c.target}`)).toEqual(["replace iptables(v4) nat WAYGATE-POSTROUTING", "replace iptables(v4) filter WAYGATE-FORWARD"]);
  });
  test("set(null) removes every chain of ours, leftovers of unknown WAYGATE- chains included", () => {
    const leftover = parseIptablesSave(applied(":WAYGATE-OLD - [0:0]\n-A INPUT -j WAYGATE-OLD\n-A WAYGATE-OLD -j DROP"));
    const plan = planIptablesRestore(4, leftover, []);
    expect(plan.restore).toContain("-D INPUT -j WAYGATE-OLD\n-F WAYGATE-OLD\n-X WAYGATE-OLD");
    expect(plan.changes.every((c) => c.op === "delete")).toBe(true);
    expect(planIptablesRestore(4, parseIptablesSave(FOREIGN_IPTABLES_V4), [])).toEqual({ restore: "", changes: [] });
  });
});

describe("renderNftables", () => {
  test("one table of our own, as nft lists it", () => {
    expect(renderNftables(base)).toBe(`table inet waygate {
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat - 1; policy accept;
\t\tip saddr 100.64.0.0/10 ip daddr 172.26.0.0/20 oifname "eth1" snat ip to 172.26.0.1
\t\tip saddr 100.64.0.0/10 ip daddr 10.9.0.0/16 oifname "eth1" accept
\t\tip saddr 100.64.0.0/10 oifname "eth0" masquerade
\t}

\tchain forward {
\t\ttype filter hook forward priority filter - 1; policy accept;
\t\toifname "wg0" ct state established,related accept
\t\tiifname != "wg0" oifname "wg0" counter drop
\t\tip saddr 100.64.0.0/10 ip daddr 172.26.0.0/20 iifname "wg0" oifname "eth1" accept
\t\tip saddr 100.64.0.0/10 ip daddr 10.9.0.0/16 iifname "wg0" oifname "eth1" accept
\t\tip saddr 100.64.0.0/10 iifname "wg0" oifname "eth0" accept
\t}

\tchain input {
\t\ttype filter hook input priority filter - 1; policy accept;
\t\tiifname "wg0" ct state established,related accept
\t\tiifname "wg0" udp dport 53 accept
\t\tiifname "wg0" ip daddr 100.64.0.1 accept
\t\tiifname "wg0" ip6 daddr fd7a::1 accept
\t\tiifname "wg0" counter drop
\t}

\tchain mss {
\t\ttype filter hook forward priority mangle; policy accept;
\t\toifname "wg0" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
\t\tiifname "wg0" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
\t}
}
`);
  });
  test("the replacement is one transaction naming only our table; counters normalise away", () => {
    const script = nftReplaceScript(renderNftables(base));
    expect(script.startsWith("table inet waygate {}\ndelete table inet waygate\ntable inet waygate {\n")).toBe(true);
    expect(script.match(/\btable \S+ \S+/g)).toEqual(["table inet waygate", "table inet waygate", "table inet waygate"]);
    expect(normaliseNftListing("table inet waygate {\n\tchain f {\n\t\tcounter packets 12 bytes 3400 drop  \n\t}\n}")).toBe(
      "table inet waygate {\n\tchain f {\n\t\tcounter drop\n\t}\n}\n",
    );
    const v6 = renderNftables({ ...base, overlayNetwork6: "fd7a::/48", subnets: [{ prefix: "fd00:1::/64", nat: true, lanInterface: "eth1", snatAddress: "fd00:1::1" }] });
    expect(v6).toContain('ip6 saddr fd7a::/48 ip6 daddr fd00:1::/64 oifname "eth1" snat ip6 to fd00:1::1');
  });
});
