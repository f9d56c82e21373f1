/**
 * @module test/e2e/compiled-up.test
 * The compiled executable (scripts/build.ts into a temp dir) runs the data plane: its Worker and
 * engine entry points are found inside the binary. `dist/waygate up` ↔ wireguard-go: started
 * without the JIT variable so it re-execs itself (platform/linux/jit.ts), handshake, ping both
 * ways, `waygate show --json` and `waygate down` through the same binary.
 */
import { expect } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";
import { build } from "../../scripts/build.ts";
import { startWaygateUp } from "../../scripts/rig/waygate.ts";
import { startWireguardGo, wgKeyPair } from "../../scripts/rig/wireguard-go.ts";

rootTest(
  "compiled waygate up ↔ wireguard-go: worker and engine inside the binary, JIT re-exec, ping, show, down",
  ["ip", "ping", "wg", "wireguard-go"],
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "waygate-build-"));
    try {
      const binary = await build({ outfile: join(dir, "waygate") });
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
        const w = await startWaygateUp(rig, a, {
          // Without the JIT variable (the test preload sets it): the binary must re-exec itself.
          command: ["env", "-u", "BUN_JSC_useOSREntryToDFG", binary],
          ifname: rig.linkName("wa"),
          privateKey: ka.privateKey,
          listenPort: 51820,
          addresses: ["10.77.2.1/24"],
          peers: [{ publicKey: kb.publicKey, allowedIps: ["10.77.2.2/32"], endpoint: "10.77.1.2:51821" }],
        });
        const ping = await rig.exec(a, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.2.2"], { allowFailure: true });
        expect(ping.stdout).toContain("3 received");
        const back = await rig.exec(b, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1300", "10.77.2.1"], { allowFailure: true });
        expect(back.stdout).toContain("3 received");
        expect(w.stderr()).toContain("engine=file:///$bunfs/root/device-engine");
        expect(w.stderr()).not.toContain("jit_workaround=missing");

        const shown = JSON.parse((await w.cli(["show", w.ifname, "--json"])).stdout);
        expect(shown.peers[0].handshakes).toBe(1);
        expect(shown.peers[0].rxBytes).toBeGreaterThan(0);
        expect(shown.crypto).toBe("openssl");
        const dump = (await wg.dump()).trim().split("\n")[1]!.split("\t");
        expect(Number(dump[4])).toBeGreaterThan(0);

        const down = await w.cli(["down", w.ifname]);
        expect(down.exitCode).toBe(0);
        expect(await w.process.exited).toBe(0);
        expect(existsSync(w.socket)).toBe(false);
        expect((await rig.exec(a, ["ip", "link", "show", "dev", w.ifname], { allowFailure: true })).exitCode).not.toBe(0);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  30_000,
);
