/**
 * @module scripts/rig/pcap
 * Capturing datagrams inside a rig namespace with tcpdump (`-w` to a temp file, `-U`, `-c N`)
 * and reading their UDP payloads back out of the pcap file, for the replay e2e test (capture a
 * real transport message, send it again). Handles classic pcap (micro- and nanosecond magic,
 * either byte order) over Ethernet (veth) or raw IP links, IPv4 and IPv6.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lineReader, type Rig, RigError } from "./netns.ts";

export interface UdpPacket {
  src: string;
  srcPort: number;
  dst: string;
  dstPort: number;
  payload: Uint8Array;
}

const LINKTYPE_ETHERNET = 1;
const LINKTYPE_RAW = 101;

/** UDP datagrams of a pcap file (others are skipped). */
export function parsePcapUdp(file: Uint8Array): UdpPacket[] {
  if (file.length < 24) throw new RigError(`pcap: ${file.length} bytes is shorter than a header`);
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const magic = dv.getUint32(0, true);
  let le: boolean;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) le = true;
  else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) le = false;
  else throw new RigError(`pcap: bad magic 0x${magic.toString(16)}`);
  const linktype = dv.getUint32(20, le);
  if (linktype !== LINKTYPE_ETHERNET && linktype !== LINKTYPE_RAW) throw new RigError(`pcap: link type ${linktype} not supported`);
  const out: UdpPacket[] = [];
  for (let off = 24; off + 16 <= file.length; ) {
    const incl = dv.getUint32(off + 8, le);
    const start = off + 16;
    off = start + incl;
    if (off > file.length) break;
    let ip = start;
    if (linktype === LINKTYPE_ETHERNET) {
      const ethertype = dv.getUint16(start + 12, false);
      if (ethertype !== 0x0800 && ethertype !== 0x86dd) continue;
      ip = start + 14;
    }
    const version = file[ip]! >> 4;
    let udp: number;
    let src: string;
    let dst: string;
    if (version === 4) {
      if (file[ip + 9] !== 17) continue;
      udp = ip + (file[ip]! & 0x0f) * 4;
      src = Array.from(file.subarray(ip + 12, ip + 16)).join(".");
      dst = Array.from(file.subarray(ip + 16, ip + 20)).join(".");
    } else if (version === 6) {
      if (file[ip + 6] !== 17) continue;
      udp = ip + 40;
      const hex = (a: number) => Array.from({ length: 8 }, (_, i) => dv.getUint16(a + 2 * i, false).toString(16)).join(":");
      src = hex(ip + 8);
      dst = hex(ip + 24);
    } else {
      continue;
    }
    const len = dv.getUint16(udp + 4, false);
    out.push({
      src,
      srcPort: dv.getUint16(udp, false),
      dst,
      dstPort: dv.getUint16(udp + 2, false),
      payload: file.slice(udp + 8, Math.min(udp + len, off)),
    });
  }
  return out;
}

export interface Capture {
  /** Resolves with the captured UDP datagrams once tcpdump has seen `count` packets. */
  packets(timeoutMs?: number): Promise<UdpPacket[]>;
  stop(): Promise<void>;
}

/** Starts tcpdump on `iface` in `ns` and resolves once it is listening. */
export async function captureUdp(rig: Rig, ns: string, iface: string, filter: string, count: number): Promise<Capture> {
  const dir = mkdtempSync(join(tmpdir(), `${rig.prefix}-pcap-`));
  const file = join(dir, "capture.pcap");
  const proc = rig.spawn(ns, ["tcpdump", "-i", iface, "-n", "-U", "-c", String(count), "-w", file, filter], { stdout: "ignore", stderr: "pipe" });
  const err = lineReader(proc.subprocess.stderr as ReadableStream<Uint8Array>);
  try {
    for (;;) {
      const line = await err.next(5000);
      if (line.includes("listening on")) break;
    }
  } catch (e) {
    await proc.stop(500);
    rmSync(dir, { recursive: true, force: true });
    throw new RigError(`tcpdump on ${iface} in ${ns} did not start: ${String(e)}`, { cause: e });
  }
  return {
    async packets(timeoutMs = 5000) {
      const status = await Promise.race([proc.exited, Bun.sleep(timeoutMs).then(() => null)]);
      if (status === null) {
        await proc.stop(500);
        rmSync(dir, { recursive: true, force: true });
        throw new RigError(`tcpdump on ${iface}: fewer than ${count} packets within ${timeoutMs} ms`);
      }
      try {
        return parsePcapUdp(new Uint8Array(readFileSync(file)));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    async stop() {
      await proc.stop(500);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
