/**
 * @module test/e2e/wireguard-go.test
 * Sanity rig for the later Waygate ↔ wireguard-go e2e: two namespaces joined by a veth, a
 * wireguard-go in each (scripts/rig/wireguard-go.ts) with `wg genkey` keys, and ping across the
 * tunnel. If this fails, the rig or the tools are broken, not Waygate.
 */
import { expect } from "bun:test";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";
import { startWireguardGo, wgKeyPair, wgPresharedKey } from "../../scripts/rig/wireguard-go.ts";

rootTest(
  "wireguard-go ↔ wireguard-go: handshake and ping across two namespaces",
  ["ip", "ping", "wg", "wireguard-go"],
  async () => {
    await withRig(async (rig) => {
      const a = await rig.addNamespace("a");
      const b = await rig.addNamespace("b");
      await rig.addVeth({ ns: a, addresses: ["10.77.1.1/24"] }, { ns: b, addresses: ["10.77.1.2/24"] });
      const [ka, kb, psk] = await Promise.all([wgKeyPair(rig.runner), wgKeyPair(rig.runner), wgPresharedKey(rig.runner)]);
      expect(ka.privateKey).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      expect(ka.publicKey).not.toBe(kb.publicKey);

      const [wa, wb] = await Promise.all([
        startWireguardGo(rig, a, {
          ifname: rig.linkName("wga"),
          privateKey: ka.privateKey,
          listenPort: 51820,
          addresses: ["10.77.2.1/24"],
          peers: [{ publicKey: kb.publicKey, presharedKey: psk, endpoint: "10.77.1.2:51821", allowedIPs: ["10.77.2.2/32"] }],
        }),
        startWireguardGo(rig, b, {
          ifname: rig.linkName("wgb"),
          privateKey: kb.privateKey,
          listenPort: 51821,
          addresses: ["10.77.2.2/24"],
          peers: [{ publicKey: ka.publicKey, presharedKey: psk, allowedIPs: ["10.77.2.1/32"] }],
        }),
      ]);
      const ping = await rig.exec(a, ["ping", "-c", "3", "-i", "0.2", "-W", "3", "10.77.2.2"], { allowFailure: true });
      expect(ping.stdout).toContain("3 received");

      // wg show dump, peer line: pubkey psk endpoint allowed-ips latest-handshake rx tx keepalive
      const peerLine = (await wb.dump()).trim().split("\n")[1]!.split("\t");
      expect(peerLine[0]).toBe(ka.publicKey);
      expect(peerLine[2]).toBe("10.77.1.1:51820"); // b learned a's endpoint from the handshake
      expect(Number(peerLine[4])).toBeGreaterThan(0);
      expect(Number(peerLine[5])).toBeGreaterThan(0);

      const pid = wa.pid;
      expect(await wa.stop()).toBe(0);
      expect(() => process.kill(pid, 0)).toThrow();
      await wb.stop();
      const gone = await rig.exec(a, ["ip", "link", "show", "dev", rig.linkName("wga")], { allowFailure: true });
      expect(gone.exitCode).not.toBe(0);
    });
  },
  20_000,
);
