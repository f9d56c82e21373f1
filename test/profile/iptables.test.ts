/**
 * @module test/profile/iptables.test
 * The iptables-save reader on recorded gateway output: the guide's SNAT rules are recognised
 * with their LAN address and an exact delete command; docker's and narrowed rules are not;
 * text that is not iptables-save output is rejected with file:line.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parsePrefix } from "../../core/net/address.ts";
import { parseIptablesSave, splitRuleWords } from "../../core/profile/iptables.ts";
import { IPTABLES } from "./helpers/fixtures.ts";

const read = (name: string) => readFileSync(join(IPTABLES, name), "utf8");

describe("parseIptablesSave", () => {
  test("gateway-office: the two guide rules, with LAN addresses and delete commands", () => {
    const save = parseIptablesSave(read("gateway-office.iptables-save"), "office.rules");
    expect(
      save.rules.map((r) => ({
        line: r.line,
        d: r.destination.text,
        s: r.source.text,
        target: r.target,
        to: r.toSource,
        out: r.outInterface,
      })),
    ).toEqual([
      { line: 30, d: "172.26.0.0/20", s: "100.64.0.0/10", target: "SNAT", to: "172.26.0.1", out: "eth0" },
      { line: 31, d: "172.84.0.0/20", s: "100.64.0.0/10", target: "SNAT", to: "172.84.0.1", out: "eth1" },
      { line: 33, d: "10.200.0.0/16", s: "100.64.0.0/10", target: "SNAT", to: "10.200.0.9", out: null },
    ]);
    expect(save.rules[0]!.removeCommand).toBe(
      'iptables -t nat -D POSTROUTING -s 100.64.0.0/10 -d 172.26.0.0/20 -o eth0 -m comment --comment "enclave exit node: office LAN" -j SNAT --to-source 172.26.0.1',
    );
    // The docker MASQUERADE is someone else's; the port-narrowed rule is a near miss, said why.
    expect(save.nearMisses.map((m) => [m.line, m.reason])).toEqual([[32, "it also matches -p tcp -m tcp --dport 443"]]);
  });

  test("gateway-dc: MASQUERADE is recognised with no fixed address", () => {
    const save = parseIptablesSave(read("gateway-dc.iptables-save"), "dc.rules");
    expect(save.rules.map((r) => [r.destination.text, r.target, r.toSource, r.removeCommand])).toEqual([
      ["10.0.0.0/24", "MASQUERADE", null, "iptables -t nat -D POSTROUTING -s 100.64.0.0/10 -d 10.0.0.0/24 -o ens18 -j MASQUERADE"],
    ]);
  });

  test("the guide's own spelling (--to) and the filter table's overlay rules", () => {
    const text = "*filter\n-A FORWARD -s 100.64.0.0/10 -j ACCEPT\nCOMMIT\n*nat\n-A POSTROUTING -s 100.64.0.0/10 -d 172.26.0.0/20 -j SNAT --to 172.26.0.1\nCOMMIT\n";
    const save = parseIptablesSave(text, "f");
    expect(save.rules.map((r) => [r.line, r.toSource])).toEqual([[5, "172.26.0.1"]]);
  });

  test("near misses say why: no destination, negation, port ranges, a wider source", () => {
    const text = [
      "*nat",
      "-A POSTROUTING -s 100.64.0.0/10 -j MASQUERADE",
      "-A POSTROUTING -s 100.64.0.0/10 ! -d 172.26.0.0/20 -j MASQUERADE",
      "-A POSTROUTING -s 100.64.0.0/10 -d 172.26.0.0/20 -j SNAT --to-source 172.26.0.1-172.26.0.4",
      "-A POSTROUTING -s 100.0.0.0/8 -d 172.26.0.0/20 -j SNAT --to-source 172.26.0.1",
      "-A POSTROUTING -s 192.168.0.0/16 -j MASQUERADE",
      "COMMIT",
    ].join("\n");
    const save = parseIptablesSave(text, "f");
    expect(save.rules).toEqual([]);
    expect(save.nearMisses.map((m) => [m.line, m.reason])).toEqual([
      [2, "it has no -d destination subnet (it NATs all overlay traffic)"],
      [3, "it negates -d"],
      [4, "--to-source 172.26.0.1-172.26.0.4 is not a single address (ranges and ports are not migrated)"],
      [5, "its source 100.0.0.0/8 is not exactly the overlay network 100.64.0.0/10"],
    ]);
  });

  test("the overlay can be the profiles' VirtualNetwork; IPv6 rules delete with ip6tables", () => {
    const text = "*nat\n-A POSTROUTING -s fd00:64::/64 -d 2001:db8:1::/48 -j SNAT --to-source 2001:db8:1::1\nCOMMIT\n";
    const save = parseIptablesSave(text, "f6", [parsePrefix("fd00:64::/64")]);
    expect(save.rules.map((r) => [r.family, r.removeCommand])).toEqual([
      [6, "ip6tables -t nat -D POSTROUTING -s fd00:64::/64 -d 2001:db8:1::/48 -j SNAT --to-source 2001:db8:1::1"],
    ]);
  });

  const bad: [string, string][] = [
    ["bad-truncated.iptables-save", "bad-truncated.iptables-save:2: table nat is never COMMITted (truncated output?)"],
    [
      "bad-not-iptables.txt",
      "bad-not-iptables.txt:1: not an iptables-save line (expected *table, :CHAIN, -A CHAIN ..., COMMIT or # comment)",
    ],
    ["bad-cidr.iptables-save", 'bad-cidr.iptables-save:3: -d "172.26.0.0/33" is not a valid IPv4 prefix: length 33 is out of range 0..32'],
  ];
  for (const [name, message] of bad) {
    test(`${name} is E_IPTABLES_SAVE_INVALID (exit 9) with file:line`, () => {
      try {
        parseIptablesSave(read(name), name);
        throw new Error("parsed");
      } catch (err) {
        const e = err as Error & { code: string; exitStatus: number };
        expect([e.code, e.exitStatus, e.message]).toEqual(["E_IPTABLES_SAVE_INVALID", 9, message]);
      }
    });
  }

  test("empty input and rules outside a table are rejected", () => {
    expect(() => parseIptablesSave("# nothing\n", "e")).toThrow("e: no tables found: is this iptables-save output?");
    expect(() => parseIptablesSave("-A POSTROUTING -j MASQUERADE\n", "e")).toThrow("e:1: rule outside a table");
    expect(() => parseIptablesSave("*nat\n*filter\n", "e")).toThrow("e:2: table filter starts before table nat was COMMITted");
  });

  test("splitRuleWords keeps quoted comments whole and unescapes quotes", () => {
    expect(splitRuleWords('-A X -m comment --comment "a \\"b\\" c" -j ACCEPT')).toEqual(["-A", "X", "-m", "comment", "--comment", 'a "b" c', "-j", "ACCEPT"]);
    expect(splitRuleWords('-A X --comment "open')).toBeNull();
  });
});
