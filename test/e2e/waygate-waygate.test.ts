/**
 * @module test/e2e/waygate-waygate.test
 * `waygate up` on both ends (real subprocesses, from source) in two namespaces.
 *
 * 1. Either side initiates: first A (it alone has the Endpoint; ping from A), both stopped (one
 *    with `waygate down <file.conf>`, one with SIGTERM); then B initiates with
 *    WAYGATE_TEST_TIMERS rekeyAfterTimeMs=2500, ping, a 5-second iperf3 TCP run (completes,
 *    > 0 bytes; no throughput assertion), a second handshake (rekey) seen on both sides.
 * 2. Attacks on A, from B (a real peer) and from C (a third namespace with only UDP):
 *    - malformed datagrams of every message type (1, 2, 3, 4, unknown; too short, too long,
 *      right size but garbage, reserved bytes set, empty): no reply within 300 ms, A still
 *      answers, each counted under its drop reason;
 *    - replay: three transport messages B sent, captured with tcpdump and re-sent from C:
 *      no reply, counted `replayed` on B's peer entry, and B's endpoint did not roam to C;
 *    - forged source: B sends from 10.9.0.99 (added to its TUN) which A never allotted to B:
 *      nothing delivered, counted `source-not-allowed`;
 *    - handshake flood: C sends initiations with a valid mac1 from one port at ~2000/s for 6 s;
 *      A answers with cookie replies, and B, restarted meanwhile, still completes a handshake
 *      (its first initiation gets a cookie, the retry carries mac2; rekeyTimeoutMs=1000 on B).
 */
import { expect } from "bun:test";
import { existsSync } from "node:fs";
import type { DropCounts } from "../../core/dataplane/device.ts";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";
import { iperf3 } from "../../scripts/rig/iperf.ts";
import { captureUdp } from "../../scripts/rig/pcap.ts";
import type { ToolRequest, ToolResult } from "../../scripts/rig/udp-tool.ts";
import { startWaygateUp, waitFor, type WaygateUpOptions } from "../../scripts/rig/waygate.ts";
import { wgKeyPair } from "../../scripts/rig/wireguard-go.ts";
import type { Rig } from "../../scripts/rig/netns.ts";

const UDP_TOOL = `${import.meta.dir}/../../scripts/rig/udp-tool.ts`;

async function udpTool(rig: Rig, ns: string, request: ToolRequest): Promise<ToolResult> {
  const r = await rig.exec(ns, [process.execPath, UDP_TOOL, JSON.stringify(request)]);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as ToolResult;
}

const total = (d: DropCounts) => Object.values(d).reduce((s, n) => s + (n ?? 0), 0);
const hex = (bytes: number[] | Uint8Array) => Buffer.from(bytes).toString("hex");
const junk = (type: number, size: number, reserved = 0) => {
  const b = new Uint8Array(size).map(() => (Math.random() * 256) | 0);
  if (size > 0) b[0] = type;
  if (size > 3) b.set([reserved, 0, 0], 1);
  return hex(b);
};

rootTest(
  "Waygate ↔ Waygate: either side initiates, ping, iperf3, rekey, show on both ends",
  ["ip", "ping", "iperf3", "wg"],
  async () => {
    await withRig(async (rig) => {
      const a = await rig.addNamespace("a");
      const b = await rig.addNamespace("b");
      await rig.addVeth({ ns: a, addresses: ["10.77.1.1/24"] }, { ns: b, addresses: ["10.77.1.2/24"] });
      const [ka, kb] = await Promise.all([wgKeyPair(rig.runner), wgKeyPair(rig.runner)]);
      const base = (k: typeof ka, port: number, addr: string): Omit<WaygateUpOptions, "peers" | "ifname"> => ({
        privateKey: k.privateKey,
        listenPort: port,
        addresses: [addr],
      });

      // A initiates.
      let wa = await startWaygateUp(rig, a, {
        ...base(ka, 51820, "10.9.0.1/24"),
        ifname: rig.linkName("wa"),
        peers: [{ publicKey: kb.publicKey, allowedIps: ["10.9.0.2/32"], endpoint: "10.77.1.2:51821" }],
      });
      let wb = await startWaygateUp(rig, b, {
        ...base(kb, 51821, "10.9.0.2/24"),
        ifname: rig.linkName("wb"),
        peers: [{ publicKey: ka.publicKey, allowedIps: ["10.9.0.1/32"] }],
      });
      expect((await rig.exec(a, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.9.0.2"], { allowFailure: true })).stdout).toContain("2 received");
      let [sa, sb] = [(await wa.show()).peers[0]!, (await wb.show()).peers[0]!];
      expect(sa.handshakeInitiations).toBeGreaterThanOrEqual(1);
      expect(sa.handshakes).toBe(1);
      expect(sb.handshakeInitiations).toBe(0);
      expect(sb.handshakes).toBe(1);
      expect(sb.endpoint).toBe("10.77.1.1:51820");
      const down = await wa.cli(["down", wa.configFile]);
      expect(down.exitCode).toBe(0);
      expect(await wa.process.exited).toBe(0);
      expect(await wb.stop()).toBe(0);
      expect(existsSync(wa.socket) || existsSync(wb.socket)).toBe(false);

      // B initiates, with a 2.5 s rekey.
      wa = await startWaygateUp(rig, a, {
        ...base(ka, 51820, "10.9.0.1/24"),
        ifname: rig.linkName("wa"),
        peers: [{ publicKey: kb.publicKey, allowedIps: ["10.9.0.2/32"] }],
      });
      wb = await startWaygateUp(rig, b, {
        ...base(kb, 51821, "10.9.0.2/24"),
        ifname: rig.linkName("wb"),
        peers: [{ publicKey: ka.publicKey, allowedIps: ["10.9.0.1/32"], endpoint: "10.77.1.1:51820" }],
        timers: { rekeyAfterTimeMs: 2500 },
      });
      expect((await rig.exec(b, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.9.0.1"], { allowFailure: true })).stdout).toContain("2 received");
      const firstHandshake = (await wb.show()).peers[0]!.latestHandshakeMs;
      const run = await iperf3(rig, { serverNs: a, clientNs: b, serverAddress: "10.9.0.1", seconds: 5 });
      expect(run.exitCode).toBe(0);
      expect(run.bytesReceived).toBeGreaterThan(0);

      [sa, sb] = [(await wa.show()).peers[0]!, (await wb.show()).peers[0]!];
      expect(sb.handshakes).toBeGreaterThanOrEqual(2);
      expect(sb.latestHandshakeMs).toBeGreaterThan(firstHandshake);
      expect(sa.handshakes).toBeGreaterThanOrEqual(2);
      expect(sa.handshakeInitiations).toBe(0);
      expect(sa.rxBytes).toBeGreaterThan(run.bytesReceived / 2);
      expect(sb.txBytes).toBeGreaterThan(run.bytesReceived / 2);
      expect(sa.txBytes).toBeGreaterThan(0);
      for (const w of [wa, wb]) {
        const s = await w.show();
        expect(s.host.engineErrors).toBe(0);
        expect(s.peers[0]!.drops["decrypt-failed"] ?? 0).toBe(0);
      }
      expect(await wa.stop()).toBe(0);
      expect(await wb.stop()).toBe(0);
    });
  },
  30_000,
);

rootTest(
  "Waygate ↔ Waygate attacks: malformed datagrams, replay, forged source, handshake flood",
  ["ip", "ping", "tcpdump", "wg"],
  async () => {
    await withRig(async (rig) => {
      const a = await rig.addNamespace("a");
      const b = await rig.addNamespace("b");
      const c = await rig.addNamespace("c");
      const [vab] = await rig.addVeth({ ns: a, addresses: ["10.77.1.1/24"] }, { ns: b, addresses: ["10.77.1.2/24"] });
      await rig.addVeth({ ns: a, addresses: ["10.77.3.1/24"] }, { ns: c, addresses: ["10.77.3.2/24"] });
      const [ka, kb] = await Promise.all([wgKeyPair(rig.runner), wgKeyPair(rig.runner)]);
      const wa = await startWaygateUp(rig, a, {
        privateKey: ka.privateKey,
        ifname: rig.linkName("wa"),
        listenPort: 51820,
        addresses: ["10.9.0.1/24"],
        peers: [{ publicKey: kb.publicKey, allowedIps: ["10.9.0.2/32"] }],
      });
      const optionsB: WaygateUpOptions = {
        privateKey: kb.privateKey,
        ifname: rig.linkName("wb"),
        listenPort: 51821,
        addresses: ["10.9.0.2/24"],
        peers: [{ publicKey: ka.publicKey, allowedIps: ["10.9.0.0/24"], endpoint: "10.77.1.1:51820" }],
        timers: { rekeyTimeoutMs: 1000 },
      };
      let wb = await startWaygateUp(rig, b, optionsB);
      const pingFromB = (extra: string[] = []) =>
        rig.exec(b, ["ping", "-c", "3", "-i", "0.2", "-W", "1", ...extra, "10.9.0.1"], { allowFailure: true });
      expect((await pingFromB()).stdout).toContain("3 received");
      const to = { address: "10.77.3.1", port: 51820 };

      // ---- malformed datagrams of every type: no reply, no crash, counted
      const before = await wa.show();
      const malformed = [
        "", // empty
        "01", // one byte
        "010000", // three bytes
        junk(1, 100), // initiation, short
        junk(1, 200), // initiation, long
        junk(1, 148), // initiation, right size, bad mac1
        junk(1, 148, 7), // reserved bytes set
        junk(2, 50), // response, short
        junk(2, 120), // response, long
        junk(2, 92), // response, right size, bad mac1
        junk(3, 10), // cookie reply, short
        junk(3, 100), // cookie reply, long
        junk(3, 64), // cookie reply, right size, unknown receiver
        junk(4, 10), // transport, shorter than a keepalive
        junk(4, 64), // transport, unknown receiver
        junk(4, 3000), // transport, big, unknown receiver
        junk(5, 148), // unknown type
        junk(0, 32), // type 0
        junk(255, 1400), // unknown type, MTU-sized
      ];
      const sentMalformed = await udpTool(rig, c, { mode: "send", to, datagrams: malformed, waitMs: 300 });
      expect(sentMalformed.sent).toBe(malformed.length);
      expect(sentMalformed.replies).toEqual([]);
      const afterMalformed = await wa.show();
      expect(afterMalformed.host.engineErrors).toBe(0);
      expect(total(afterMalformed.drops) - total(before.drops)).toBe(malformed.length);
      for (const reason of [
        "malformed-unknown-type",
        "malformed-initiation",
        "malformed-response",
        "malformed-cookie-reply",
        "malformed-transport",
        "mac1-invalid",
        "unknown-receiver",
      ] as const) {
        expect(afterMalformed.drops[reason] ?? 0, reason).toBeGreaterThan(before.drops[reason] ?? 0);
      }
      expect(afterMalformed.drops["internal-error"] ?? 0).toBe(0);
      expect((await pingFromB()).stdout).toContain("3 received");

      // ---- replay: capture B's transport messages to A, send them again from C
      const cap = await captureUdp(rig, a, vab, "udp and dst port 51820 and udp[8] = 4 and greater 100", 3);
      expect((await pingFromB()).stdout).toContain("3 received");
      const captured = await cap.packets();
      expect(captured.length).toBe(3);
      expect(captured.every((p) => p.payload[0] === 4 && p.src === "10.77.1.2")).toBe(true);
      const replayBefore = (await wa.show()).peers[0]!;
      const replay = await udpTool(rig, c, { mode: "send", to, datagrams: captured.map((p) => hex(p.payload)), waitMs: 300 });
      expect(replay.replies).toEqual([]);
      const replayAfter = (await wa.show()).peers[0]!;
      expect((replayAfter.drops.replayed ?? 0) - (replayBefore.drops.replayed ?? 0)).toBe(3);
      expect(replayAfter.endpoint).toBe("10.77.1.2:51821"); // no roaming to the replayer
      expect(replayAfter.rxBytes).toBe(replayBefore.rxBytes);

      // ---- forged source: B sends from an address A never allotted to it
      await rig.exec(b, ["ip", "addr", "add", "10.9.0.99/32", "dev", wb.ifname]);
      const forged = await pingFromB(["-I", "10.9.0.99"]);
      expect(forged.stdout).toContain("0 received");
      const forgedPeer = (await wa.show()).peers[0]!;
      expect(forgedPeer.drops["source-not-allowed"] ?? 0).toBeGreaterThanOrEqual(3);
      expect((await pingFromB()).stdout).toContain("3 received"); // the honest address still works

      // ---- handshake flood from C while B reconnects
      const handshakesBefore = (await wa.show()).peers[0]!.handshakes;
      const floodRequest: ToolRequest = { mode: "flood", to, responderPublicKey: ka.publicKey, rate: 2000, durationMs: 6000, waitMs: 200 };
      const flood = rig.spawn(c, [process.execPath, UDP_TOOL, JSON.stringify(floodRequest)], { stdout: "pipe", stderr: "pipe" });
      await waitFor("A under load", async () => (await wa.show()).underLoad, 3000);
      expect(await wb.stop()).toBe(0);
      wb = await startWaygateUp(rig, b, optionsB); // fresh keys: it must handshake again
      const honest = await rig.exec(b, ["ping", "-c", "3", "-w", "3", "-i", "0.3", "10.9.0.1"], { allowFailure: true });
      expect(honest.stdout).toMatch(/[1-9]\d* received/);
      const duringFlood = await wa.show();
      expect(flood.subprocess.exitCode).toBe(null); // the flood was still on when B got through
      expect(duringFlood.underLoad).toBe(true);
      expect(duringFlood.peers[0]!.handshakes).toBeGreaterThan(handshakesBefore);
      const newB = (await wb.show()).peers[0]!;
      expect(newB.handshakes).toBeGreaterThanOrEqual(1);
      // Its first initiation was answered with a cookie, not a response: it had to retry with mac2.
      expect(newB.handshakeInitiations).toBeGreaterThanOrEqual(2);

      expect(await flood.exited).toBe(0);
      const floodResult = JSON.parse((await new Response(flood.subprocess.stdout as ReadableStream).text()).trim()) as ToolResult;
      expect(floodResult.sent).toBeGreaterThan(1000);
      expect(floodResult.cookieReplies).toBeGreaterThan(0);
      expect(floodResult.replies.every((r) => r.type === 3 && r.len === 64)).toBe(true);
      const afterFlood = await wa.show();
      expect(afterFlood.cookieRepliesSent).toBeGreaterThanOrEqual(floodResult.cookieReplies);
      expect(afterFlood.drops["under-load"] ?? 0).toBeGreaterThan(0);
      expect(afterFlood.host.engineErrors).toBe(0);
      expect(afterFlood.drops["internal-error"] ?? 0).toBe(0);
      expect(await wa.stop()).toBe(0);
      expect(await wb.stop()).toBe(0);
    });
  },
  30_000,
);
