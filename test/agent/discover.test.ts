/**
 * @module test/agent/discover
 * Subnet discovery: the pure parser over `ip -j addr show` recorded in a namespace (loopback,
 * link-local, /32, a down interface, the Waygate TUN and another TUN inside the overlay network,
 * IPv6 ignored), bad output, and a real run in a rig namespace.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { discoverSubnets, DiscoverParseError, parseIpAddrJson } from "../../platform/linux/discover.ts";
import { recordingLogger } from "../../core/log.ts";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";

const fixture = (name: string) => readFileSync(join(import.meta.dir, "fixtures", name), "utf8");
const OPTIONS = { excludeInterfaces: ["wg-waygate"], excludePrefixes: ["100.64.0.0/10"] };

describe("parseIpAddrJson", () => {
  for (const file of ["ip-j-4-addr-gateway.json", "ip-j-addr-gateway.json"]) {
    test(`recorded ${file}`, () => {
      const { found, skipped } = parseIpAddrJson(fixture(file), OPTIONS);
      expect(found).toEqual([
        { interface: "eth0", address: "10.20.0.1", subnet: "10.20.0.0/16" },
        { interface: "eth0", address: "192.168.50.1", subnet: "192.168.50.0/24" },
        { interface: "eth1", address: "192.168.77.9", subnet: "192.168.77.0/24" },
      ]);
      expect(skipped.map((s) => `${s.interface} ${s.address} ${s.reason}`)).toEqual([
        "lo 127.0.0.1 loopback-interface",
        "eth1 169.254.10.1 link-local",
        "eth1 172.30.0.5 host-address",
        "eth2 10.99.0.1 interface-down",
        "wg-waygate 100.64.0.1 excluded-interface",
        "tun9 100.64.5.1 overlay-network",
      ]);
    });
  }

  test("without exclusions the TUNs count as subnets", () => {
    const { found } = parseIpAddrJson(fixture("ip-j-4-addr-gateway.json"));
    expect(found.map((f) => f.subnet)).toEqual(["10.20.0.0/16", "100.64.0.0/10", "100.64.5.0/24", "192.168.50.0/24", "192.168.77.0/24"]);
  });

  test("multicast, this-network, non-global scope, links without addresses", () => {
    const text = JSON.stringify([
      {},
      { ifname: "e1", flags: ["UP"], addr_info: [{ family: "inet", local: "224.0.0.5", prefixlen: 24, scope: "global" }] },
      { ifname: "e2", flags: ["UP"], addr_info: [{ family: "inet", local: "0.0.0.1", prefixlen: 8, scope: "global" }] },
      { ifname: "e3", flags: ["UP"], addr_info: [{ family: "inet", local: "10.1.2.3", prefixlen: 24, scope: "link" }] },
      { ifname: "e4", flags: ["UP"], addr_info: [] },
      { ifname: "e5", flags: ["UP"], addr_info: [{ family: "inet", local: "10.9.9.9", prefixlen: 30, scope: "global" }] },
    ]);
    const { found, skipped } = parseIpAddrJson(text);
    expect(found).toEqual([{ interface: "e5", address: "10.9.9.9", subnet: "10.9.9.8/30" }]);
    expect(skipped.map((s) => s.reason)).toEqual(["multicast", "this-network", "scope-link"]);
  });

  test("bad output names the problem", () => {
    expect(() => parseIpAddrJson("not json")).toThrow(DiscoverParseError);
    expect(() => parseIpAddrJson('{"ifname":1}')).toThrow(/ip -j addr show: unexpected shape/);
    expect(parseIpAddrJson("")).toEqual({ found: [], skipped: [] });
  });
});

rootTest("discoverSubnets in a namespace (real ip -j addr)", ["ip"], async () => {
  await withRig(async (rig) => {
    const a = await rig.addNamespace("a");
    const b = await rig.addNamespace("b");
    await rig.addVeth({ ns: a, addresses: ["192.168.61.1/24", "10.61.0.1/16"] }, { ns: b, addresses: ["192.168.61.2/24"] });
    const logger = recordingLogger();
    const found = await discoverSubnets(rig.runnerIn(a), { ...OPTIONS, logger });
    expect(found.map((f) => f.subnet)).toEqual(["10.61.0.0/16", "192.168.61.0/24"]);
    expect(logger.lines.some((l) => l.message.startsWith("discover: skip interface=lo address=127.0.0.1 reason=loopback-interface"))).toBe(true);
  });
});
