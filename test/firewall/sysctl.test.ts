/**
 * @module test/firewall/sysctl.test
 * IP forwarding in a namespace the test creates (its net.ipv4.ip_forward and
 * net.ipv6.conf.all.forwarding are its own): enable remembers and restore puts back; a second
 * enable writes nothing; a crashed run's remembered values win over the "1" it left. The host's
 * values are only read, before and after, to show they never move.
 */
import { expect } from "bun:test";
import { readFileSync } from "node:fs";
import { enableForwarding, IPV4_FORWARD, IPV6_FORWARD, readSysctl, restoreForwarding } from "../../platform/linux/sysctl.ts";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";
import { countingRunner } from "./harness.ts";

const hostValues = () => ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"].map((f) => readFileSync(f, "utf8"));

rootTest("enableForwarding remembers, is idempotent, and restore() puts back exactly what was there", ["ip", "sysctl"], () =>
  withRig(async (rig) => {
    const host = hostValues();
    const ns = await rig.addNamespace("sy");
    const runner = countingRunner(rig.runnerIn(ns));
    expect(await readSysctl(IPV4_FORWARD, { runner })).toBe("0");
    expect(await readSysctl(IPV6_FORWARD, { runner })).toBe("0");

    const v4only = await enableForwarding({ ipv4: true, ipv6: false }, { runner });
    expect(v4only.previous).toEqual({ [IPV4_FORWARD]: "0" });
    expect(await readSysctl(IPV6_FORWARD, { runner })).toBe("0");
    const both = await enableForwarding({ ipv4: true, ipv6: true }, { runner, remembered: v4only.previous });
    expect(both.previous).toEqual({ [IPV4_FORWARD]: "0", [IPV6_FORWARD]: "0" });
    expect(await readSysctl(IPV4_FORWARD, { runner })).toBe("1");
    expect(await readSysctl(IPV6_FORWARD, { runner })).toBe("1");

    const writes = runner.mutations;
    const again = await enableForwarding({ ipv4: true, ipv6: true }, { runner });
    expect(runner.mutations).toBe(writes);
    expect(again.previous).toEqual({ [IPV4_FORWARD]: "1", [IPV6_FORWARD]: "1" });

    // After a crash: the persisted snapshot, not the "1" the crashed run left, is restored.
    const persisted = JSON.parse(JSON.stringify(both.previous));
    const restarted = await enableForwarding({ ipv4: true, ipv6: true }, { runner, remembered: persisted });
    await restarted.restore();
    expect(await readSysctl(IPV4_FORWARD, { runner })).toBe("0");
    expect(await readSysctl(IPV6_FORWARD, { runner })).toBe("0");
    const settled = runner.mutations;
    await restoreForwarding(persisted, { runner });
    expect(runner.mutations).toBe(settled);
    await expect(readSysctl("net.ipv4.ip_forward; reboot", { runner })).rejects.toThrow(/not a sysctl key/);
    expect(hostValues()).toEqual(host);
  }),
);
