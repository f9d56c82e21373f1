/**
 * @module test/dataplane/wireguard-go-peer
 * A driver process for the wireguard-go interop test (run inside its network namespace): one
 * Device over a real UDP socket on 127.0.0.1:40000, peered with wireguard-go on 127.0.0.1:51820.
 * `initiate`: sends an ICMP echo to 10.77.0.1 and exits 0 when the reply comes back.
 * `respond`: answers echo requests from 10.77.0.1 and exits 0 after answering two.
 * Prints the Device's stats as the last line.
 */
import { Device } from "../../core/dataplane/device.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { loadNativeCrypto } from "../../platform/crypto/openssl.ts";
import { icmpEcho } from "./memory.ts";

const [mode, privateKey, peerKey, cryptoName] = process.argv.slice(2);
const got: Uint8Array[] = [];
let socket: { send(d: Uint8Array, port: number, host: string): unknown } | null = null;
const device = new Device({
  privateKey: privateKey!,
  crypto: cryptoName === "openssl" ? loadNativeCrypto()! : nobleCrypto(),
  now: () => Date.now(),
  random: (n) => crypto.getRandomValues(new Uint8Array(n)),
  logger: { debug() {}, info() {}, warn: console.error, error: console.error },
  tun: { writePacket: (p) => void got.push(p.slice()) },
  bind: { sendDatagram: (d, to) => void socket?.send(d.slice(), to.port, to.address) },
});
socket = await Bun.udpSocket({
  hostname: "127.0.0.1",
  port: 40000,
  socket: {
    data(_s, buf, port, address) {
      device.handleDatagram(new Uint8Array(buf), { address, port });
    },
  },
});
device.setPeers([{ publicKey: peerKey!, allowedIps: ["10.77.0.1/32"], endpoint: { address: "127.0.0.1", port: 51820 } }]);
const timer = setInterval(() => device.tick(), 20);
if (mode === "initiate") device.handleTunPacket(icmpEcho({ src: "10.77.0.2", dst: "10.77.0.1", id: 7, seq: 1 }));

let answered = 0;
const deadline = Date.now() + 10_000;
let ok = false;
while (Date.now() < deadline && !ok) {
  await Bun.sleep(20);
  for (const p of got.splice(0)) {
    const src = Array.from(p.subarray(12, 16)).join(".");
    console.log(`tun: len=${p.length} src=${src} icmp_type=${p[20]}`);
    if (mode === "initiate" && p[20] === 0 && src === "10.77.0.1") ok = true;
    if (mode === "respond" && p[20] === 8) {
      const reply = icmpEcho({
        src: "10.77.0.2",
        dst: src,
        id: (p[24]! << 8) | p[25]!,
        seq: (p[26]! << 8) | p[27]!,
        payload: p.slice(28),
        reply: true,
      });
      device.handleTunPacket(reply);
      if (++answered >= 2) ok = true;
    }
  }
}
await Bun.sleep(100);
clearInterval(timer);
console.log(JSON.stringify(device.stats()));
process.exit(ok ? 0 : 1);
