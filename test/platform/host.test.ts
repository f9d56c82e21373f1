/**
 * @module test/platform/host.test
 * platform/linux/host.ts end to end with the trivial forward engine: two namespaces joined by
 * a veth, one host process in each (TUN + UDP over the veth), and `ping` between the TUN
 * addresses. Also: stats and control messages reach the engine inside the worker, large and
 * flooded pings survive, and a bad engine module fails the start with a clear error.
 */
import { expect } from "bun:test";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";
import { spawnHost } from "../../scripts/rig/host.ts";

const ENGINE = `${import.meta.dir}/forward-engine.ts`;

function received(pingOutput: string): number {
  return Number(/(\d+) (?:packets )?received/.exec(pingOutput)?.[1] ?? -1);
}

rootTest(
  "host: ping between two namespaces through two hosts running the forward engine",
  ["ip", "ping"],
  async () => {
    await withRig(async (rig) => {
      const a = await rig.addNamespace("a");
      const b = await rig.addNamespace("b");
      await rig.addVeth({ ns: a, addresses: ["10.77.1.1/24"] }, { ns: b, addresses: ["10.77.1.2/24"] });
      const [ha, hb] = await Promise.all([
        spawnHost(rig, a, {
          tunName: rig.linkName("ta"),
          listenPort: 0,
          engineModule: ENGINE,
          engineConfig: { peer: { address: "10.77.1.2", port: 51820 } },
          link: { addresses: ["10.77.2.1/24"], mtu: 1400 },
        }),
        spawnHost(rig, b, {
          tunName: rig.linkName("tb"),
          listenPort: 51820,
          engineModule: ENGINE,
          engineConfig: { peer: { address: "10.77.1.1", port: 1 } }, // fixed below, through control
          link: { addresses: ["10.77.2.2/24"], mtu: 1400 },
        }),
      ]);
      expect(ha.tunName).toBe(rig.linkName("ta"));
      expect(ha.listenPort).toBeGreaterThan(1023);
      expect(hb.listenPort).toBe(51820);
      hb.control({ type: "config", peer: { address: "10.77.1.1", port: ha.listenPort } });
      expect((await hb.stats()).engine).toMatchObject({ controls: 1, peer: { address: "10.77.1.1", port: ha.listenPort } });

      const ping = await rig.exec(a, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.2.2"], { allowFailure: true });
      expect(received(ping.stdout)).toBe(3);
      const big = await rig.exec(b, ["ping", "-c", "2", "-i", "0.2", "-s", "1300", "-W", "2", "10.77.2.1"], { allowFailure: true });
      expect(received(big.stdout)).toBe(2);
      const flood = await rig.exec(a, ["ping", "-f", "-c", "500", "-W", "1", "10.77.2.2"], { allowFailure: true });
      expect(received(flood.stdout)).toBeGreaterThanOrEqual(450);

      const sa = await ha.stats();
      expect(sa.host.tunRead).toBeGreaterThanOrEqual(505);
      expect(sa.host.tunWritten).toBeGreaterThanOrEqual(455);
      expect(sa.host.udp?.sent).toBe(sa.host.tunRead);
      expect(sa.host.engineErrors).toBe(0);
      expect(sa.host.wakeups).toBeGreaterThanOrEqual(1); // the stats request woke the poll
      expect(sa.engine).toMatchObject({ fromTun: sa.host.tunRead, fromUdp: sa.host.udp?.received });

      expect(await ha.stop()).toBe(0);
      expect(await hb.stop()).toBe(0);
      // The TUN went with the host.
      const gone = await rig.exec(a, ["ip", "link", "show", "dev", rig.linkName("ta")], { allowFailure: true });
      expect(gone.exitCode).not.toBe(0);
    });
  },
  30_000,
);

rootTest("host: an engine module without a factory fails the start with the reason", ["ip"], async () => {
  await withRig(async (rig) => {
    const a = await rig.addNamespace("a");
    const err = await spawnHost(rig, a, {
      tunName: rig.linkName("tx"),
      listenPort: 0,
      engineModule: `${import.meta.dir}/../../core/log.ts`,
      engineConfig: {},
    }).catch((e: unknown) => e);
    expect(String(err)).toContain("has no default-exported engine factory");
    const links = await rig.exec(a, ["ip", "-o", "link", "show"]);
    expect(links.stdout).not.toContain(rig.linkName("tx"));
  });
});
