/**
 * @module test/platform/udp-offload.test
 * UdpSocket's UDP GSO grouping and UDP GRO splitting on loopback (no root needed): equal-size
 * runs to one endpoint become one message (fewer sendmmsg messages than datagrams), a shorter
 * datagram ends a group, other endpoints and sizes start new ones, and what arrives, split by
 * `segmentSize`, is exactly what was queued, in order.
 */
import { afterEach, expect, test } from "bun:test";
import { Poller, UdpSocket } from "../../platform/linux/udp.ts";

const open: UdpSocket[] = [];
function socket(options: ConstructorParameters<typeof UdpSocket>[0]): UdpSocket {
  const s = new UdpSocket(options);
  open.push(s);
  return s;
}
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

/** Receives `count` datagrams (splitting GRO buffers) or gives up after 2 s. */
function receiveSplit(s: UdpSocket, count: number): { data: Uint8Array; port: number }[] {
  const out: { data: Uint8Array; port: number }[] = [];
  const poller = new Poller([s.fd]);
  const deadline = Date.now() + 2000;
  while (out.length < count && Date.now() < deadline) {
    poller.wait(50);
    const n = s.receive();
    for (let i = 0; i < n; i++) {
      const d = s.datagram(i)!;
      const seg = s.segmentSize(i);
      const step = seg > 0 ? seg : d.length;
      for (let off = 0; off < d.length; off += step) out.push({ data: d.slice(off, Math.min(off + step, d.length)), port: s.endpoint(i).port });
    }
  }
  return out;
}

/** A datagram of `len` bytes numbered `i`. */
function numbered(i: number, len: number): Uint8Array {
  const d = new Uint8Array(len).fill(i & 0xff);
  new DataView(d.buffer).setUint32(0, i);
  return d;
}

for (const gro of [false, true]) {
  test(`GSO groups equal-size runs; the receiver (gro=${gro}) gets every datagram in order`, () => {
    const a = socket({ port: 0, gso: true });
    const b = socket({ port: 0, gro });
    const c = socket({ port: 0 });
    expect(a.counters.gso).toBe("on");
    expect(b.counters.gro).toBe(gro ? "on" : "off");
    const toB = { address: "127.0.0.1", port: b.port };
    const toC = { address: "127.0.0.1", port: c.port };
    const sizes: number[] = [];
    // 100 x 1452 (< 64 KB per message: 44 + 44 + 12), one 700 (ends the third), 10 x 1452, 5 x 96, one to c.
    for (let i = 0; i < 100; i++) sizes.push(1452);
    sizes.push(700);
    for (let i = 0; i < 10; i++) sizes.push(1452);
    for (let i = 0; i < 5; i++) sizes.push(96);
    sizes.forEach((len, i) => a.queue(numbered(i, len), toB));
    a.queue(numbered(9999, 1452), toC);
    a.flush();
    expect(a.counters.sent).toBe(sizes.length + 1);
    // 44 + 44 + (12 + the 700) + 10 + 5 + 1 to c = 6 messages
    expect(a.counters.sendMessages).toBe(6);
    expect(a.counters.errors).toEqual({});
    const got = receiveSplit(b, sizes.length);
    expect(got.length).toBe(sizes.length);
    got.forEach((g, i) => {
      expect(g.data.length).toBe(sizes[i]!);
      expect(new DataView(g.data.buffer, g.data.byteOffset).getUint32(0)).toBe(i);
      expect(g.port).toBe(a.port);
    });
    expect(b.counters.received).toBe(sizes.length);
    if (gro) expect(b.counters.receiveMessages).toBeLessThan(sizes.length);
    const toc = receiveSplit(c, 1);
    expect(toc.length).toBe(1);
    expect(new DataView(toc[0]!.data.buffer).getUint32(0)).toBe(9999);
  });
}

test("without gso every datagram is its own message", () => {
  const a = socket({ port: 0 });
  const b = socket({ port: 0 });
  for (let i = 0; i < 20; i++) a.queue(numbered(i, 1000), { address: "127.0.0.1", port: b.port });
  a.flush();
  expect(a.counters.sendMessages).toBe(20);
  expect(receiveSplit(b, 20).length).toBe(20);
});

test("more queued than one flush holds: sent in several, nothing lost", () => {
  const a = socket({ port: 0, gso: true, batchSize: 8 });
  const b = socket({ port: 0, gro: true });
  const total = 2000;
  const got: { data: Uint8Array; port: number }[] = [];
  for (let i = 0; i < total; i++) {
    a.queue(numbered(i, 1200), { address: "127.0.0.1", port: b.port });
    if (i % 300 === 299) got.push(...receiveSplit(b, 0), ...drain(b));
  }
  a.flush();
  got.push(...receiveSplit(b, total - got.length));
  expect(a.counters.sent).toBe(total);
  expect(got.length).toBe(total);
  got.forEach((g, i) => expect(new DataView(g.data.buffer, g.data.byteOffset).getUint32(0)).toBe(i));
});

function drain(s: UdpSocket): { data: Uint8Array; port: number }[] {
  const out: { data: Uint8Array; port: number }[] = [];
  for (let n = s.receive(); n > 0; n = s.receive()) {
    for (let i = 0; i < n; i++) {
      const d = s.datagram(i)!;
      const step = s.segmentSize(i) || d.length;
      for (let off = 0; off < d.length; off += step) out.push({ data: d.slice(off, Math.min(off + step, d.length)), port: 0 });
    }
  }
  return out;
}
