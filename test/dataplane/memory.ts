/**
 * @module test/dataplane/memory
 * An in-memory Tun/Bind pair: Devices attached to a MemoryNetwork send datagrams into one FIFO
 * that the test drains with `deliver()`, and write decrypted packets into a MemoryTun. Every
 * buffer is copied on the way in, as a real host would, so the Device's scratch reuse is safe.
 * Also a hand-built IPv4 ICMP echo with valid checksums, and a two-Device rig with a fake clock.
 */
import { silentLogger } from "../../core/log.ts";
import { Device, type DeviceOptions } from "../../core/dataplane/device.ts";
import type { BindWriter, Endpoint, TunWriter } from "../../core/dataplane/ports.ts";
import type { Crypto } from "../../core/wire/crypto.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { encodeKey, generatePrivateKey, publicKeyFrom } from "../../core/wire/keys.ts";
import { fakeClock, seededRandom } from "../wire/helpers.ts";

export class MemoryTun implements TunWriter {
  readonly packets: Uint8Array[] = [];
  writePacket(packet: Uint8Array): void {
    this.packets.push(packet.slice());
  }
  take(): Uint8Array[] {
    return this.packets.splice(0, this.packets.length);
  }
}

export interface Datagram {
  data: Uint8Array;
  from: Endpoint;
  to: Endpoint;
}

const key = (e: Endpoint) => `${e.address}:${e.port}`;

export class MemoryNetwork {
  readonly queue: Datagram[] = [];
  /** Every datagram ever sent, for tests that capture and re-inject. */
  readonly log: Datagram[] = [];
  private readonly hosts = new Map<string, { handleDatagram(d: Uint8Array, f: Endpoint): void }>();
  flushes = 0;

  bind(local: Endpoint): BindWriter {
    return {
      sendDatagram: (data, to) => {
        const d = { data: data.slice(), from: { ...local }, to: { ...to } };
        this.queue.push(d);
        this.log.push(d);
      },
      flush: () => {
        this.flushes++;
      },
    };
  }

  attach(local: Endpoint, host: { handleDatagram(d: Uint8Array, f: Endpoint): void }): void {
    this.hosts.set(key(local), host);
  }

  /** Delivers queued datagrams (and whatever they cause) until the queue is empty. */
  deliver(filter?: (d: Datagram) => boolean, maxSteps = 10_000): number {
    let n = 0;
    while (this.queue.length > 0) {
      if (++n > maxSteps) throw new Error("MemoryNetwork: delivery did not settle");
      const d = this.queue.shift()!;
      if (filter && !filter(d)) continue;
      this.hosts.get(key(d.to))?.handleDatagram(d.data, d.from);
    }
    return n;
  }

  /** Removes and returns queued datagrams without delivering them. */
  take(): Datagram[] {
    return this.queue.splice(0, this.queue.length);
  }
}

function checksum(b: Uint8Array, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i += 2) sum += (b[off + i]! << 8) | (i + 1 < len ? b[off + i + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ipv4Bytes(text: string): number[] {
  return text.split(".").map(Number);
}

/** An IPv4 ICMP echo request (type 8) or reply (type 0) with valid header and ICMP checksums. */
export function icmpEcho(opts: { src: string; dst: string; id?: number; seq?: number; payload?: Uint8Array; reply?: boolean }): Uint8Array {
  const payload = opts.payload ?? new TextEncoder().encode("waygate ping payload");
  const total = 20 + 8 + payload.length;
  const p = new Uint8Array(total);
  p[0] = 0x45;
  p[2] = total >> 8;
  p[3] = total & 0xff;
  p[4] = 0x12;
  p[5] = 0x34;
  p[8] = 64; // TTL
  p[9] = 1; // ICMP
  p.set(ipv4Bytes(opts.src), 12);
  p.set(ipv4Bytes(opts.dst), 16);
  const hc = checksum(p, 0, 20);
  p[10] = hc >> 8;
  p[11] = hc & 0xff;
  p[20] = opts.reply ? 0 : 8;
  const id = opts.id ?? 0x4242;
  const seq = opts.seq ?? 1;
  p[24] = id >> 8;
  p[25] = id & 0xff;
  p[26] = seq >> 8;
  p[27] = seq & 0xff;
  p.set(payload, 28);
  const ic = checksum(p, 20, total - 20);
  p[22] = ic >> 8;
  p[23] = ic & 0xff;
  return p;
}

/** Whether an IPv4 packet's header checksum and ICMP checksum verify. */
export function checksumsValid(p: Uint8Array): boolean {
  return checksum(p, 0, 20) === 0 && checksum(p, 20, p.length - 20) === 0;
}

export interface Node {
  device: Device;
  tun: MemoryTun;
  endpoint: Endpoint;
  publicKey: string;
  privateKey: Uint8Array;
}

/** Two Devices, A (10.0.0.1) and B (10.0.0.2), peered with each other over one MemoryNetwork. */
export function twoDevices(options: {
  seed?: number;
  crypto?: Crypto;
  /** B's crypto when it differs from A's (cross-implementation tests). */
  cryptoB?: Crypto;
  timers?: DeviceOptions["timers"];
  psk?: string;
  aKeepalive?: number;
  bUnderLoad?: number;
  /** Whether B is told A's endpoint (A always knows B's). */
  bKnowsA?: boolean;
} = {}) {
  const cryptoA = options.crypto ?? nobleCrypto();
  const crypto = cryptoA;
  const clock = fakeClock();
  const random = seededRandom(options.seed ?? 1);
  const net = new MemoryNetwork();
  const make = (address: string, port: number, underLoad?: number, crypto = cryptoA): Node => {
    const privateKey = generatePrivateKey(random);
    const endpoint = { address, port };
    const tun = new MemoryTun();
    const device = new Device({
      privateKey,
      crypto,
      now: clock.now,
      random,
      logger: silentLogger,
      tun,
      bind: net.bind(endpoint),
      timers: options.timers,
      underLoadHandshakesPerSecond: underLoad,
    });
    net.attach(endpoint, device);
    return { device, tun, endpoint, privateKey, publicKey: encodeKey(publicKeyFrom(crypto, privateKey)) };
  };
  const a = make("192.0.2.1", 51820);
  const b = make("192.0.2.2", 51820, options.bUnderLoad, options.cryptoB ?? cryptoA);
  a.device.setPeers([
    {
      publicKey: b.publicKey,
      allowedIps: ["10.0.0.2/32", "fd00::2/128"],
      endpoint: b.endpoint,
      presharedKey: options.psk,
      persistentKeepalive: options.aKeepalive,
    },
  ]);
  b.device.setPeers([
    {
      publicKey: a.publicKey,
      allowedIps: ["10.0.0.1/32", "fd00::1/128"],
      endpoint: options.bKnowsA ? a.endpoint : undefined,
      presharedKey: options.psk,
    },
  ]);
  return { a, b, net, clock, random, crypto };
}
