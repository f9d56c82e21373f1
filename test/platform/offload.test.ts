/**
 * @module test/platform/offload.test
 * platform/linux/offload.ts against simple oracles, with a seeded RNG: the RFC 1071 checksum
 * against a byte-pair sum at every alignment; TSO/USO splitting (IPv4/IPv6, options, FIN/PSH,
 * odd sizes) checked segment by segment and reassembled into the original stream; GRO
 * coalescing checked by splitting its super-packets again; and the cases that must not merge.
 */
import { describe, expect, test } from "bun:test";
import {
  checksum,
  GSO_NONE,
  GSO_TCPV4,
  GSO_TCPV6,
  GSO_UDP_L4,
  readVnetHdr,
  splitErrorName,
  splitFrame,
  TcpCoalescer,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VNET_HDR_LEN,
  writeVnetHdr,
} from "../../platform/linux/offload.ts";

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The oracle: RFC 1071 the slow way. */
function oracleChecksum(bytes: readonly number[] | Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i]! << 8) | (i + 1 < bytes.length ? bytes[i + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function pseudo(p: Uint8Array, v6: boolean, proto: number, l4Len: number): number[] {
  const addr = v6 ? [...p.subarray(8, 40)] : [...p.subarray(12, 20)];
  return [...addr, 0, proto, l4Len >> 8, l4Len & 0xff];
}

/** Valid per the oracle: the transport checksum over pseudo-header + segment. */
function l4ChecksumValid(p: Uint8Array, iphLen: number, proto: number): boolean {
  const v6 = p[0]! >> 4 === 6;
  const l4 = [...p.subarray(iphLen)];
  return oracleChecksum([...pseudo(p, v6, proto, l4.length), ...l4]) === 0;
}

interface Flow {
  v6: boolean;
  tcpOptions: number; // bytes, multiple of 4
  seq: number;
  ack: number;
  id: number;
}

/** A TCP/IP packet with `payload`, valid checksums. */
function tcpPacket(flow: Flow, payload: Uint8Array, flags = 0x10, seqOffset = 0): Uint8Array {
  const iph = flow.v6 ? 40 : 20;
  const tcph = 20 + flow.tcpOptions;
  const p = new Uint8Array(iph + tcph + payload.length);
  const dv = new DataView(p.buffer);
  if (flow.v6) {
    p[0] = 0x60;
    dv.setUint16(4, tcph + payload.length);
    p[6] = 6;
    p[7] = 64;
    for (let i = 8; i < 40; i++) p[i] = i * 7;
  } else {
    p[0] = 0x45;
    dv.setUint16(2, p.length);
    dv.setUint16(4, flow.id);
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p.set([10, 9, 0, 1, 10, 9, 0, 2], 12);
    dv.setUint16(10, oracleChecksum(p.subarray(0, 20)));
  }
  dv.setUint16(iph, 40000);
  dv.setUint16(iph + 2, 5201);
  dv.setUint32(iph + 4, (flow.seq + seqOffset) >>> 0);
  dv.setUint32(iph + 8, flow.ack);
  p[iph + 12] = (tcph / 4) << 4;
  p[iph + 13] = flags;
  dv.setUint16(iph + 14, 502);
  for (let i = 0; i < flow.tcpOptions; i++) p[iph + 20 + i] = i === 0 ? 1 : 0x11 + i; // NOP + junk
  p.set(payload, iph + tcph);
  dv.setUint16(iph + 16, oracleChecksum([...pseudo(p, flow.v6, 6, tcph + payload.length), ...p.subarray(iph)]));
  return p;
}

/** What the kernel hands over for a TSO send: vnet header + one big packet, NEEDS_CSUM. */
function tsoFrame(flow: Flow, payload: Uint8Array, gsoSize: number, flags: number): Uint8Array {
  const p = tcpPacket(flow, payload, flags);
  const iph = flow.v6 ? 40 : 20;
  // The TCP checksum field holds the folded pseudo-header sum (not complemented).
  const ps = pseudo(p, flow.v6, 6, p.length - iph);
  const partial = ~oracleChecksum(ps) & 0xffff;
  new DataView(p.buffer).setUint16(iph + 16, partial);
  const frame = new Uint8Array(VNET_HDR_LEN + p.length);
  writeVnetHdr(frame, 0, {
    flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
    gsoType: flow.v6 ? GSO_TCPV6 : GSO_TCPV4,
    hdrLen: iph + 20 + flow.tcpOptions,
    gsoSize,
    csumStart: iph,
    csumOffset: 16,
  });
  frame.set(p, VNET_HDR_LEN);
  return frame;
}

function randomBytes(r: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (r() * 256) | 0;
  return b;
}

function split(frame: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  const scratch = new Uint8Array(new ArrayBuffer(65536));
  const n = splitFrame(frame, frame.length, scratch, (p) => out.push(p.slice()));
  if (n < 0) throw new Error(`split failed: ${splitErrorName(n)}`);
  expect(n).toBe(out.length);
  return out;
}

describe("checksum", () => {
  test("agrees with the byte-pair oracle at every alignment and length", () => {
    const r = rng(1);
    const big = new Uint8Array(new ArrayBuffer(4096));
    for (let i = 0; i < big.length; i++) big[i] = (r() * 256) | 0;
    for (let trial = 0; trial < 2000; trial++) {
      const off = (r() * 64) | 0;
      const len = (r() * 1600) | 0;
      expect(checksum(big, off, len)).toBe(oracleChecksum(big.subarray(off, off + len)));
      // and through a view that starts elsewhere in the buffer
      const view = big.subarray(off);
      expect(checksum(view, 0, len)).toBe(oracleChecksum(big.subarray(off, off + len)));
    }
    expect(checksum(new Uint8Array(new ArrayBuffer(64)).fill(0xff), 0, 64)).toBe(0);
  });
});

describe("splitFrame (TSO/GSO)", () => {
  test("property: split then reassemble equals the original stream; each segment valid", () => {
    const r = rng(42);
    for (let trial = 0; trial < 300; trial++) {
      const v6 = r() < 0.5;
      const flow: Flow = { v6, tcpOptions: [0, 12, 20][(r() * 3) | 0]!, seq: (r() * 2 ** 32) >>> 0, ack: (r() * 2 ** 32) >>> 0, id: (r() * 65536) | 0 };
      const gsoSize = 500 + ((r() * 1000) | 0);
      const payloadLen = 1 + ((r() * (60000 - 100)) | 0);
      const payload = randomBytes(r, payloadLen);
      const flags = [0x10, 0x18, 0x19, 0x11, 0x98][(r() * 5) | 0]!; // ACK, ACK|PSH, +FIN, ACK|FIN, CWR|ACK|PSH
      const segs = split(tsoFrame(flow, payload, gsoSize, flags));
      const iph = v6 ? 40 : 20;
      const tcph = 20 + flow.tcpOptions;
      expect(segs.length).toBe(Math.ceil(payloadLen / gsoSize));
      const stream: number[] = [];
      segs.forEach((s, i) => {
        const dv = new DataView(s.buffer, s.byteOffset, s.byteLength);
        const last = i === segs.length - 1;
        const segPayload = s.length - iph - tcph;
        expect(segPayload).toBe(last ? payloadLen - i * gsoSize : gsoSize);
        if (v6) {
          expect(dv.getUint16(4)).toBe(s.length - 40);
        } else {
          expect(dv.getUint16(2)).toBe(s.length);
          expect(dv.getUint16(4)).toBe((flow.id + i) & 0xffff);
          expect(oracleChecksum(s.subarray(0, 20))).toBe(0);
        }
        expect(dv.getUint32(iph + 4)).toBe((flow.seq + i * gsoSize) >>> 0);
        expect(dv.getUint32(iph + 8)).toBe(flow.ack);
        const f = s[iph + 13]!;
        expect(f & 0x10).toBe(0x10);
        expect(f & 0x09).toBe(last ? flags & 0x09 : 0); // FIN/PSH only on the last
        expect(f & 0x80).toBe(i === 0 ? flags & 0x80 : 0); // CWR only on the first
        expect(l4ChecksumValid(s, iph, 6)).toBe(true);
        stream.push(...s.subarray(iph + tcph));
      });
      expect(Buffer.from(stream).equals(Buffer.from(payload))).toBe(true);
    }
  });

  test("GSO_NONE with NEEDS_CSUM: the checksum is completed (TCP and UDP); without: untouched", () => {
    const flow: Flow = { v6: false, tcpOptions: 0, seq: 1, ack: 2, id: 3 };
    const frame = tsoFrame(flow, new Uint8Array([1, 2, 3, 4, 5]), 1400, 0x18);
    frame[1] = GSO_NONE;
    const [p] = split(frame);
    expect(l4ChecksumValid(p!, 20, 6)).toBe(true);

    // UDP over IPv6, partial checksum in the field.
    const udp = new Uint8Array(40 + 8 + 33);
    udp[0] = 0x60;
    new DataView(udp.buffer).setUint16(4, 41);
    udp[6] = 17;
    for (let i = 8; i < 40; i++) udp[i] = i;
    new DataView(udp.buffer).setUint16(40 + 4, 41);
    udp.fill(0xab, 48);
    new DataView(udp.buffer).setUint16(46, ~oracleChecksum(pseudo(udp, true, 17, 41)) & 0xffff);
    const f2 = new Uint8Array(VNET_HDR_LEN + udp.length);
    writeVnetHdr(f2, 0, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: GSO_NONE, hdrLen: 0, gsoSize: 0, csumStart: 40, csumOffset: 6 });
    f2.set(udp, VNET_HDR_LEN);
    const [u] = split(f2);
    expect(l4ChecksumValid(u!, 40, 17)).toBe(true);

    const plain = tcpPacket(flow, new Uint8Array([9, 9, 9]));
    const f3 = new Uint8Array(VNET_HDR_LEN + plain.length);
    f3.set(plain, VNET_HDR_LEN);
    expect(split(f3)[0]).toEqual(plain);
  });

  test("USO (GSO_UDP_L4): UDP datagrams with lengths and checksums", () => {
    const r = rng(7);
    const payload = randomBytes(r, 5000);
    const p = new Uint8Array(20 + 8 + payload.length);
    const dv = new DataView(p.buffer);
    p[0] = 0x45;
    dv.setUint16(2, p.length);
    p[8] = 64;
    p[9] = 17;
    p.set([10, 0, 0, 1, 10, 0, 0, 2], 12);
    dv.setUint16(20, 1000);
    dv.setUint16(22, 2000);
    dv.setUint16(24, 8 + payload.length);
    p.set(payload, 28);
    const frame = new Uint8Array(VNET_HDR_LEN + p.length);
    writeVnetHdr(frame, 0, { flags: 1, gsoType: GSO_UDP_L4, hdrLen: 28, gsoSize: 1200, csumStart: 20, csumOffset: 6 });
    frame.set(p, VNET_HDR_LEN);
    const segs = split(frame);
    expect(segs.length).toBe(5);
    const joined: number[] = [];
    for (const s of segs) {
      const sv = new DataView(s.buffer, s.byteOffset);
      expect(sv.getUint16(24)).toBe(s.length - 20);
      expect(oracleChecksum(s.subarray(0, 20))).toBe(0);
      expect(l4ChecksumValid(s, 20, 17)).toBe(true);
      joined.push(...s.subarray(28));
    }
    expect(Buffer.from(joined).equals(Buffer.from(payload))).toBe(true);
  });

  test("refuses malformed frames", () => {
    const scratch = new Uint8Array(65536);
    const none = () => {};
    expect(splitErrorName(splitFrame(new Uint8Array(5), 5, scratch, none))).toBe("short-frame");
    const flow: Flow = { v6: false, tcpOptions: 0, seq: 1, ack: 2, id: 3 };
    const f = tsoFrame(flow, new Uint8Array(3000), 1000, 0x10);
    const bad = f.slice();
    bad[VNET_HDR_LEN + 9] = 17; // not TCP
    expect(splitErrorName(splitFrame(bad, bad.length, scratch, none))).toBe("bad-gso-packet");
    const zero = f.slice();
    zero[4] = 0;
    zero[5] = 0;
    expect(splitErrorName(splitFrame(zero, zero.length, scratch, none))).toBe("bad-gso-packet");
    const range = f.slice();
    range[1] = GSO_NONE;
    range[6] = 0xff;
    range[7] = 0xff;
    expect(splitErrorName(splitFrame(range, range.length, scratch, none))).toBe("bad-csum-range");
    const ufo = f.slice();
    ufo[1] = 3;
    expect(splitErrorName(splitFrame(ufo, ufo.length, scratch, none))).toBe("unsupported-gso");
  });
});

describe("TcpCoalescer (GRO)", () => {
  function collect(): { frames: { frame: Uint8Array; packets: number }[]; c: TcpCoalescer } {
    const frames: { frame: Uint8Array; packets: number }[] = [];
    const c = new TcpCoalescer((frame, packets) => frames.push({ frame: frame.slice(), packets }), { slots: 16 });
    return { frames, c };
  }

  test("property: consecutive segments merge; splitting the super-packets gives the segments back", () => {
    const r = rng(9);
    for (let trial = 0; trial < 200; trial++) {
      const v6 = r() < 0.5;
      const flow: Flow = { v6, tcpOptions: r() < 0.5 ? 12 : 0, seq: (r() * 2 ** 32) >>> 0, ack: 77, id: 100 };
      const mss = 200 + ((r() * 1200) | 0);
      const total = mss * (1 + ((r() * 60) | 0)) + ((r() * mss) | 0);
      const payload = randomBytes(r, total);
      const psh = r() < 0.5;
      const segs = split(tsoFrame(flow, payload, mss, psh ? 0x18 : 0x10));
      const { frames, c } = collect();
      for (const s of segs) c.add(s);
      c.flush();
      expect(frames.reduce((n, f) => n + f.packets, 0)).toBe(segs.length);
      const back: Uint8Array[] = [];
      for (const { frame, packets } of frames) {
        const h = readVnetHdr(frame);
        if (packets === 1) {
          expect(h.gsoType).toBe(GSO_NONE);
          expect(h.flags).toBe(0);
        } else {
          expect(h.gsoType).toBe(v6 ? GSO_TCPV6 : GSO_TCPV4);
          expect(h.gsoSize).toBe(mss);
          expect(frame.length - VNET_HDR_LEN).toBeLessThanOrEqual(65535);
        }
        back.push(...split(frame));
      }
      expect(back.length).toBe(segs.length);
      back.forEach((b, i) => expect(Buffer.from(b).equals(Buffer.from(segs[i]!))).toBe(true));
      // 64 KB frames: as few as the size limit allows.
      const iph = v6 ? 40 : 20;
      const perFrame = Math.floor((65535 - iph - 20 - flow.tcpOptions) / mss);
      expect(frames.length).toBe(Math.ceil(segs.length / perFrame));
    }
  });

  test("two interleaved flows each merge; other packets pass in order with a zero header", () => {
    const r = rng(3);
    const a: Flow = { v6: false, tcpOptions: 12, seq: 1000, ack: 1, id: 1 };
    const b: Flow = { v6: true, tcpOptions: 12, seq: 5000, ack: 2, id: 1 };
    const { frames, c } = collect();
    const udp = new Uint8Array(28);
    udp[0] = 0x45;
    udp[9] = 17;
    new DataView(udp.buffer).setUint16(2, 28);
    for (let i = 0; i < 6; i++) {
      c.add(tcpPacket(a, randomBytes(r, 1000), 0x10, i * 1000));
      c.add(tcpPacket(b, randomBytes(r, 800), 0x10, i * 800));
      if (i === 2) c.add(udp);
    }
    c.flush();
    expect(frames.map((f) => f.packets)).toEqual([6, 6, 1]);
    expect(frames[2]!.frame.subarray(0, VNET_HDR_LEN)).toEqual(new Uint8Array(VNET_HDR_LEN));
    expect(frames[2]!.frame.subarray(VNET_HDR_LEN)).toEqual(udp);
    expect(c.stats).toMatchObject({ packets: 13, frames: 3, merged: 10, badChecksum: 0 });
  });

  test("does not merge across: a gap, a PSH, a shorter segment, another ack, SYN/FIN/RST, bad checksums", () => {
    const r = rng(5);
    const f: Flow = { v6: false, tcpOptions: 0, seq: 0, ack: 9, id: 1 };
    const cases: [string, Uint8Array[], number[]][] = [
      ["gap", [tcpPacket(f, randomBytes(r, 100)), tcpPacket(f, randomBytes(r, 100), 0x10, 200)], [1, 1]],
      ["psh ends", [tcpPacket(f, randomBytes(r, 100), 0x18), tcpPacket(f, randomBytes(r, 100), 0x10, 100)], [1, 1]],
      ["psh joins last", [tcpPacket(f, randomBytes(r, 100)), tcpPacket(f, randomBytes(r, 100), 0x18, 100)], [2]],
      ["short ends", [tcpPacket(f, randomBytes(r, 100)), tcpPacket(f, randomBytes(r, 50), 0x10, 100), tcpPacket(f, randomBytes(r, 100), 0x10, 150)], [2, 1]],
      ["longer", [tcpPacket(f, randomBytes(r, 100)), tcpPacket(f, randomBytes(r, 150), 0x10, 100)], [1, 1]],
      ["ack differs", [tcpPacket(f, randomBytes(r, 100)), tcpPacket({ ...f, ack: 10 }, randomBytes(r, 100), 0x10, 100)], [1, 1]],
      ["fin", [tcpPacket(f, randomBytes(r, 100)), tcpPacket(f, randomBytes(r, 100), 0x11, 100)], [1, 1]],
      ["pure ack", [tcpPacket(f, new Uint8Array(0)), tcpPacket(f, new Uint8Array(0))], [1, 1]],
    ];
    for (const [name, packets, expected] of cases) {
      const { frames, c } = collect();
      for (const p of packets) c.add(p);
      c.flush();
      expect({ name, got: frames.map((x) => x.packets) }).toEqual({ name, got: expected });
    }
    const { frames, c } = collect();
    const bad = tcpPacket(f, randomBytes(r, 100), 0x10, 100);
    bad[bad.length - 1]! ^= 0xff;
    c.add(tcpPacket(f, randomBytes(r, 100)));
    c.add(bad);
    c.flush();
    expect(frames.map((x) => x.packets)).toEqual([1, 1]);
    expect(c.stats.badChecksum).toBe(1);
    expect(frames[1]!.frame.subarray(VNET_HDR_LEN)).toEqual(bad); // passed on unchanged: the kernel drops it
  });

  test("more packets than slots: flushes early, nothing lost", () => {
    const r = rng(11);
    const { frames, c } = collect();
    for (let i = 0; i < 40; i++) c.add(tcpPacket({ v6: false, tcpOptions: 0, seq: i * 1000, ack: i, id: 1 }, randomBytes(r, 10)));
    c.flush();
    expect(frames.length).toBe(40);
    expect(frames.every((x) => x.packets === 1)).toBe(true);
  });
});
