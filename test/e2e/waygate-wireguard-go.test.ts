/**
 * @module test/e2e/waygate-wireguard-go.test
 * Interop: Waygate's Device in a platform/linux host driven directly (no CLI), with the production
 * engine (platform/linux/device-engine.ts) forced onto the @noble reference crypto, in one
 * namespace, wireguard-go in another, `wg genkey` keys. Waygate initiates (ping from its side), then
 * wireguard-go sends through the established session (ping from the other side).
 */
import { expect } from "bun:test";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";
import { spawnHost } from "../../scripts/rig/host.ts";
import { startWireguardGo, wgKeyPair } from "../../scripts/rig/wireguard-go.ts";

rootTest(
  "Waygate host ↔ wireguard-go: handshake and ping both ways",
  ["ip", "ping", "wg", "wireguard-go"],
  async () => {
    await withRig(async (rig) => {
      const a = await rig.addNamespace("a");
      const b = await rig.addNamespace("b");
      await rig.addVeth({ ns: a, addresses: ["10.77.1.1/24"] }, { ns: b, addresses: ["10.77.1.2/24"] });
      const [ka, kb] = await Promise.all([wgKeyPair(rig.runner), wgKeyPair(rig.runner)]);
      const wg = await startWireguardGo(rig, b, {
        ifname: rig.linkName("wgb"),
        privateKey: kb.privateKey,
        listenPort: 51821,
        addresses: ["10.77.2.2/24"],
        peers: [{ publicKey: ka.publicKey, allowedIPs: ["10.77.2.1/32"] }],
      });
      const host = await spawnHost(rig, a, {
        tunName: rig.linkName("wa"),
        listenPort: 51820,
        engineModule: `${import.meta.dir}/../../platform/linux/device-engine.ts`,
        engineConfig: {
          forceNoble: true,
          privateKey: ka.privateKey,
          peers: [{ publicKey: kb.publicKey, allowedIps: ["10.77.2.2/32"], endpoint: { address: "10.77.1.2", port: 51821 } }],
        },
        link: { addresses: ["10.77.2.1/24"], mtu: 1420 },
      });
      const out = await rig.exec(a, ["ping", "-c", "3", "-i", "0.2", "-W", "3", "10.77.2.2"], { allowFailure: true });
      expect(out.stdout).toContain("3 received");
      const back = await rig.exec(b, ["ping", "-c", "3", "-i", "0.2", "-W", "3", "-s", "1300", "10.77.2.1"], { allowFailure: true });
      expect(back.stdout).toContain("3 received");

      const peer = (await wg.dump()).trim().split("\n")[1]!.split("\t");
      expect(peer[0]).toBe(ka.publicKey);
      expect(peer[2]).toBe("10.77.1.1:51820");
      expect(Number(peer[4])).toBeGreaterThan(0);
      const stats = await host.stats();
      expect(stats.host.engineErrors).toBe(0);
      expect(stats.engine).toMatchObject({ crypto: "noble", peers: [{ publicKey: kb.publicKey }] });
      expect(await host.stop()).toBe(0);
    });
  },
  20_000,
);
