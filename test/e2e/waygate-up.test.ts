/**
 * @module test/e2e/waygate-up.test
 * `waygate up` (a real subprocess, from source) in one namespace, wireguard-go (configured with
 * `wg set`) in another, joined by a veth. Two cases, one per initiator:
 *
 * 1. Waygate initiates: its [Peer] has the Endpoint and PersistentKeepalive, so the handshake
 *    completes with no traffic; then ping, a 5-second iperf3 TCP run (completes, > 0 bytes; no
 *    throughput assertion), a rekey under WAYGATE_TEST_TIMERS rekeyAfterTimeMs=2500 (a second
 *    handshake, a newer handshake time on both sides), `wg show dump` on wireguard-go (handshake
 *    time, transfer both ways), `waygate show --json` and `waygate show` text, an AllowedIPs
 *    route beyond the Address subnet, then `waygate down` removes route, TUN and socket.
 * 2. wireguard-go initiates: only it knows the Endpoint; ping from its side; Waygate learns the
 *    endpoint from the handshake; SIGTERM stops `up` cleanly.
 */
import { expect } from "bun:test";
import { existsSync } from "node:fs";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";
import { startWaygateUp, waitFor } from "../../scripts/rig/waygate.ts";
import { startWireguardGo, wgKeyPair, wgPresharedKey } from "../../scripts/rig/wireguard-go.ts";
import { iperf3 } from "../../scripts/rig/iperf.ts";

const TOOLS = ["ip", "ping", "wg", "wireguard-go", "iperf3"];

/** `wg show <if> dump` peer line: pubkey psk endpoint allowed-ips latest-handshake rx tx keepalive. */
function dumpPeer(dump: string, publicKey: string) {
  const line = dump.trim().split("\n").slice(1).map((l) => l.split("\t")).find((f) => f[0] === publicKey);
  if (!line) throw new Error(`peer ${publicKey} not in wg dump:\n${dump}`);
  return { endpoint: line[2], latestHandshake: Number(line[4]), rx: Number(line[5]), tx: Number(line[6]) };
}

rootTest(
  "waygate up ↔ wireguard-go: Waygate initiates; ping, iperf3, rekey, wg show and waygate show, down",
  TOOLS,
  async () => {
    await withRig(async (rig) => {
      const a = await rig.addNamespace("a");
      const b = await rig.addNamespace("b");
      await rig.addVeth({ ns: a, addresses: ["10.77.1.1/24"] }, { ns: b, addresses: ["10.77.1.2/24"] });
      const [ka, kb, psk] = await Promise.all([wgKeyPair(rig.runner), wgKeyPair(rig.runner), wgPresharedKey(rig.runner)]);
      const wg = await startWireguardGo(rig, b, {
        ifname: rig.linkName("wgb"),
        privateKey: kb.privateKey,
        listenPort: 51821,
        addresses: ["10.77.2.2/24"],
        peers: [{ publicKey: ka.publicKey, presharedKey: psk, allowedIPs: ["10.77.2.1/32"] }],
      });
      const w = await startWaygateUp(rig, a, {
        ifname: rig.linkName("wa"),
        privateKey: ka.privateKey,
        listenPort: 51820,
        addresses: ["10.77.2.1/24"],
        peers: [
          {
            publicKey: kb.publicKey,
            presharedKey: psk,
            allowedIps: ["10.77.2.2/32", "10.88.0.0/24"],
            endpoint: "10.77.1.2:51821",
            persistentKeepalive: 25,
          },
        ],
        timers: { rekeyAfterTimeMs: 2500 },
      });
      expect(w.publicKey).toBe(ka.publicKey);
      expect(w.listenPort).toBe(51820);

      // Handshake with no traffic at all: the persistent keepalive set at start initiates it.
      const first = await waitFor("first handshake", async () => {
        const p = (await w.show()).peers[0]!;
        return p.handshakes >= 1 ? p : undefined;
      });
      expect(first.endpoint).toBe("10.77.1.2:51821");
      expect(dumpPeer(await wg.dump(), ka.publicKey).latestHandshake).toBeGreaterThan(0);

      // The AllowedIPs route outside the Address subnet is on the interface.
      expect((await rig.exec(a, ["ip", "-4", "route", "show", "dev", w.ifname])).stdout).toContain("10.88.0.0/24");

      const ping = await rig.exec(a, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.2.2"], { allowFailure: true });
      expect(ping.stdout).toContain("3 received");

      const run = await iperf3(rig, { serverNs: b, clientNs: a, serverAddress: "10.77.2.2", seconds: 5 });
      expect(run.exitCode).toBe(0);
      expect(run.bytesReceived).toBeGreaterThan(0);

      // Rekey: the session is older than REKEY_AFTER_TIME (2.5 s), so sending makes Waygate initiate
      // again — but, as in WireGuard, not sooner than REKEY_TIMEOUT (5 s) after its last initiation,
      // which on a loaded machine can fall just after iperf3 ends. Keep sending until it happens.
      const after = await waitFor("rekey", async () => {
        const p = (await w.show()).peers[0]!;
        if (p.handshakes >= 2) return p;
        await rig.exec(a, ["ping", "-c", "1", "-W", "1", "10.77.2.2"], { allowFailure: true });
        return undefined;
      });
      expect(after.handshakes).toBeGreaterThanOrEqual(2);
      expect(after.latestHandshakeMs).toBeGreaterThan(first.latestHandshakeMs);
      const peerOnWg = dumpPeer(await wg.dump(), ka.publicKey);
      expect(peerOnWg.endpoint).toBe("10.77.1.1:51820");
      expect(peerOnWg.latestHandshake).toBeGreaterThan(Math.floor(first.latestHandshakeMs / 1000));
      expect(peerOnWg.rx).toBeGreaterThan(run.bytesReceived / 2);
      expect(peerOnWg.tx).toBeGreaterThan(0);

      const json = await w.cli(["show", w.ifname, "--json"]);
      expect(json.exitCode).toBe(0);
      const shown = JSON.parse(json.stdout);
      expect(shown).toMatchObject({ interface: w.ifname, publicKey: ka.publicKey, listeningPort: 51820 });
      expect(shown.peers[0].publicKey).toBe(kb.publicKey);
      expect(shown.peers[0].presharedKey).toBe(true);
      expect(shown.peers[0].latestHandshake).toBeGreaterThan(0);
      expect(shown.peers[0].rxBytes).toBeGreaterThan(0);
      expect(shown.peers[0].txBytes).toBeGreaterThan(run.bytesReceived / 2);
      expect(shown.host.engineErrors).toBe(0);

      const text = await w.cli(["show", w.ifname]);
      expect(text.stdout).toContain(`interface: ${w.ifname}\n  public key: ${ka.publicKey}\n  private key: (hidden)\n  listening port: 51820\n`);
      expect(text.stdout).toContain(`peer: ${kb.publicKey}\n  preshared key: (hidden)\n  endpoint: 10.77.1.2:51821\n  allowed ips: 10.77.2.2/32, 10.88.0.0/24\n  latest handshake: `);
      expect(text.stdout).toMatch(/\n {2}transfer: [\d.]+ [KMG]iB received, [\d.]+ [KMG]iB sent\n {2}persistent keepalive: every 25 seconds\n/);

      // Every waygate show without a name lists this one too.
      const all = JSON.parse((await w.cli(["show", "--json"])).stdout) as { interface: string }[];
      expect(all.map((s) => s.interface)).toContain(w.ifname);

      const down = await w.cli(["down", w.ifname]);
      expect(down.stderr).toBe("");
      expect(down.exitCode).toBe(0);
      expect(await w.process.exited).toBe(0);
      expect(existsSync(w.socket)).toBe(false);
      expect((await rig.exec(a, ["ip", "link", "show", "dev", w.ifname], { allowFailure: true })).exitCode).not.toBe(0);
      expect((await rig.exec(a, ["ip", "-4", "route"])).stdout).not.toContain("10.88.0.0");
      // Down again: not up any more, a clear error.
      const again = await w.cli(["down", w.ifname]);
      expect(again.exitCode).toBe(14);
      expect(again.stderr).toContain("is not up");
    });
  },
  30_000,
);

rootTest(
  "waygate up ↔ wireguard-go: wireguard-go initiates; Waygate learns the endpoint; SIGTERM stops up",
  TOOLS,
  async () => {
    await withRig(async (rig) => {
      const a = await rig.addNamespace("a");
      const b = await rig.addNamespace("b");
      await rig.addVeth({ ns: a, addresses: ["10.77.1.1/24"] }, { ns: b, addresses: ["10.77.1.2/24"] });
      const [ka, kb] = await Promise.all([wgKeyPair(rig.runner), wgKeyPair(rig.runner)]);
      const w = await startWaygateUp(rig, a, {
        ifname: rig.linkName("wa"),
        privateKey: ka.privateKey,
        listenPort: 51820,
        addresses: ["10.77.2.1/24"],
        mtu: 1400,
        peers: [{ publicKey: kb.publicKey, allowedIps: ["10.77.2.2/32"] }],
      });
      const wg = await startWireguardGo(rig, b, {
        ifname: rig.linkName("wgb"),
        privateKey: kb.privateKey,
        listenPort: 51821,
        addresses: ["10.77.2.2/24"],
        peers: [{ publicKey: ka.publicKey, endpoint: "10.77.1.1:51820", allowedIPs: ["10.77.2.1/32"] }],
      });
      expect((await w.show()).peers[0]!.handshakes).toBe(0);
      expect((await rig.exec(a, ["ip", "link", "show", "dev", w.ifname])).stdout).toContain("mtu 1400");

      const ping = await rig.exec(b, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1200", "10.77.2.1"], { allowFailure: true });
      expect(ping.stdout).toContain("3 received");
      const back = await rig.exec(a, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.77.2.2"], { allowFailure: true });
      expect(back.stdout).toContain("2 received");

      const peer = (await w.show()).peers[0]!;
      expect(peer.handshakes).toBe(1);
      expect(peer.handshakeInitiations).toBe(0); // it only responded
      expect(peer.endpoint).toBe("10.77.1.2:51821");
      expect(peer.rxBytes).toBeGreaterThan(0);
      const onWg = dumpPeer(await wg.dump(), ka.publicKey);
      expect(onWg.latestHandshake).toBeGreaterThan(0);
      expect(onWg.rx).toBeGreaterThan(0);

      expect(await w.stop()).toBe(0);
      expect(existsSync(w.socket)).toBe(false);
      expect((await rig.exec(a, ["ip", "link", "show", "dev", w.ifname], { allowFailure: true })).exitCode).not.toBe(0);
      expect(w.stderr()).toContain("up: signal=SIGTERM stopping");
    });
  },
  20_000,
);
