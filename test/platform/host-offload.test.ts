/**
 * @module test/platform/host-offload.test
 * The host's offloads against the real kernel: two hosts running the forward engine (raw IP
 * packets as datagrams) in two namespaces, TUN TSO/GRO and UDP GSO/GRO on or off. A 24 MB
 * stream of seeded bytes crosses the tunnel over TCP and must arrive byte-identical (sha256
 * at both ends): every super-packet was split, sent, received, coalesced and accepted by the
 * receiving kernel's TCP. With offloads on the counters must show the batching (fewer TUN
 * reads, UDP messages and TUN writes than packets) and nothing refused.
 */
import { expect } from "bun:test";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";
import { spawnHost } from "../../scripts/rig/host.ts";
import { iperf3 } from "../../scripts/rig/iperf.ts";

const ENGINE = `${import.meta.dir}/forward-engine.ts`;
const BYTES = 24 << 20;

const SERVER = `
const h = new Bun.CryptoHasher("sha256");
let n = 0;
const server = Bun.listen({ hostname: "10.77.2.2", port: 7001, socket: {
  data(_s, d) { h.update(d); n += d.length; },
  close() { console.log(JSON.stringify({ n, sha: h.digest("hex") })); server.stop(true); },
}});
console.log("listening");
`;

const CLIENT = `
const total = ${BYTES};
const chunk = new Uint8Array(1 << 20);
let x = 12345;
const h = new Bun.CryptoHasher("sha256");
const s = await Bun.connect({ hostname: "10.77.2.2", port: 7001, socket: { data() {}, drain(s) { pump(s); } } });
let sent = 0;
let buf = null;
function next() { for (let i = 0; i < chunk.length; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; chunk[i] = x >>> 24; } h.update(chunk); return chunk.slice(); }
function pump(s) {
  for (;;) {
    if (buf === null) { if (sent >= total) { s.end(); console.log(JSON.stringify({ n: sent, sha: h.digest("hex") })); return; } buf = next(); }
    const w = s.write(buf);
    if (w < buf.length) { buf = buf.subarray(w); return; }
    sent += chunk.length; buf = null;
  }
}
pump(s);
`;

for (const offloads of [true, false]) {
  rootTest(
    `host offloads=${offloads}: a TCP stream crosses byte-identical; iperf3 runs; counters show the batching`,
    ["ip", "iperf3"],
    async () => {
      await withRig(async (rig) => {
        const a = await rig.addNamespace("a");
        const b = await rig.addNamespace("b");
        await rig.addVeth({ ns: a, addresses: ["10.77.1.1/24"] }, { ns: b, addresses: ["10.77.1.2/24"] });
        const hb = await spawnHost(rig, b, {
          tunName: rig.linkName("tb"),
          listenPort: 51820,
          engineModule: ENGINE,
          engineConfig: { peer: { address: "10.77.1.1", port: 51821 } },
          link: { addresses: ["10.77.2.2/24"], mtu: 1400 },
          offloads,
        });
        const ha = await spawnHost(rig, a, {
          tunName: rig.linkName("ta"),
          listenPort: 51821,
          engineModule: ENGINE,
          engineConfig: { peer: { address: "10.77.1.2", port: 51820 } },
          link: { addresses: ["10.77.2.1/24"], mtu: 1400 },
          offloads,
        });

        const server = rig.spawn(b, [process.execPath, "-e", SERVER], { stdout: "pipe", stderr: "pipe" });
        const reader = (server.subprocess.stdout as ReadableStream<Uint8Array>).getReader();
        let out = "";
        const decoder = new TextDecoder();
        while (!out.includes("listening")) {
          const { value, done } = await reader.read();
          if (done) break;
          out += decoder.decode(value);
        }
        const client = await rig.exec(a, [process.execPath, "-e", CLIENT], { allowFailure: true });
        expect(client.exitCode).toBe(0);
        const deadline = Date.now() + 10_000;
        while (!/\{.*\}/.test(out.replace("listening", "")) && Date.now() < deadline) {
          const { value, done } = await Promise.race([reader.read(), Bun.sleep(200).then(() => ({ value: undefined, done: false }))]);
          if (value) out += decoder.decode(value);
          if (done) break;
        }
        await server.stop(500);
        const sent = JSON.parse(client.stdout.trim().split("\n").pop()!);
        const got = JSON.parse(/\{.*\}/.exec(out)![0]);
        expect(sent.n).toBe(BYTES);
        expect(got).toEqual(sent);

        const r = await iperf3(rig, { serverNs: b, clientNs: a, serverAddress: "10.77.2.2", seconds: 2 });
        expect(r.exitCode).toBe(0);
        expect(r.bytesReceived).toBeGreaterThan(0);

        const [sa, sb] = [await ha.stats(), await hb.stats()];
        for (const s of [sa, sb]) {
          expect(s.host.engineErrors).toBe(0);
          expect(s.host.tunErrors).toEqual({});
          expect(s.host.udp?.errors).toEqual({});
        }
        if (offloads) {
          for (const s of [sa, sb]) {
            expect(s.host.offloads).toBe("on");
            expect(s.host.udp?.gso).toBe("on");
            expect(s.host.udp?.gro).toBe("on");
            expect(s.host.offload?.splitErrors).toEqual({});
            expect(s.host.offload?.badChecksum).toBe(0);
          }
          // a sends the bulk: super-packets in, GSO out; b coalesces what it writes.
          expect(sa.host.offload!.tunFrames * 4).toBeLessThan(sa.host.tunRead);
          expect(sa.host.udp!.sendMessages * 4).toBeLessThan(sa.host.udp!.sent);
          expect(sb.host.udp!.receiveMessages * 4).toBeLessThan(sb.host.udp!.received);
          expect(sb.host.offload!.tunWrites * 4).toBeLessThan(sb.host.tunWritten);
          expect(sb.host.offload!.merged).toBeGreaterThan(0);
        } else {
          expect(sa.host.offloads).toBe("off reason=disabled");
          expect(sa.host.udp?.sendMessages).toBe(sa.host.udp?.sent);
          expect(sb.host.offload?.tunWrites).toBe(0);
        }
        expect(sa.host.udp?.sent).toBe(sa.host.tunRead);
        expect(sb.host.udp?.received).toBe(sb.host.tunWritten);
      });
    },
    60_000,
  );
}
