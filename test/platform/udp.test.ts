/**
 * @module test/platform/udp.test
 * platform/linux/udp.ts on loopback (no root needed): batched sendmmsg/recvmmsg, sender
 * decoding to Endpoint, per-errno drop counting instead of throws, and the address codecs.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { encodeSockaddr, formatIPv6, parseIPv6, Poller, UdpSocket } from "../../platform/linux/udp.ts";

const open: UdpSocket[] = [];
function socket(options: ConstructorParameters<typeof UdpSocket>[0]): UdpSocket {
  const s = new UdpSocket(options);
  open.push(s);
  return s;
}
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

/** Receives until `count` datagrams arrived or 2 s passed. */
function receiveAll(s: UdpSocket, count: number): { data: Uint8Array; from: { address: string; port: number } }[] {
  const out: { data: Uint8Array; from: { address: string; port: number } }[] = [];
  const poller = new Poller([s.fd]);
  const deadline = Date.now() + 2000;
  while (out.length < count && Date.now() < deadline) {
    poller.wait(50);
    const n = s.receive();
    for (let i = 0; i < n; i++) out.push({ data: s.datagram(i)!.slice(), from: s.endpoint(i) });
  }
  return out;
}

function ipv6OnLoopback(): boolean {
  try {
    return readFileSync("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "utf8").trim() === "0";
  } catch {
    return false;
  }
}
const hasIPv6Loopback = ipv6OnLoopback();

describe("UdpSocket", () => {
  test("port 0 binds an ephemeral port and reports it", () => {
    const s = socket({ port: 0 });
    expect(s.port).toBeGreaterThan(1023);
    expect(s.port).toBeLessThan(65536);
  });

  test("sends and receives batches over IPv4 loopback, in order, with the sender decoded", () => {
    const a = socket({ port: 0, batchSize: 16 });
    const b = socket({ port: 0, batchSize: 16, family: "ipv4" });
    const to = { address: "127.0.0.1", port: b.port };
    const total = 200;
    for (let i = 0; i < total; i++) {
      const d = new Uint8Array(100 + (i % 1300));
      new DataView(d.buffer).setUint32(0, i);
      a.queue(d, to); // a full batch (16) goes out by itself
    }
    a.flush();
    expect(a.counters.sent).toBe(total);
    const got = receiveAll(b, total);
    expect(got.length).toBe(total);
    got.forEach((g, i) => {
      expect(g.data.byteLength).toBe(100 + (i % 1300));
      expect(new DataView(g.data.buffer).getUint32(0)).toBe(i);
    });
    expect(got[0]!.from).toEqual({ address: "127.0.0.1", port: a.port });
    // The same sender decodes to one shared, frozen object: no allocation per datagram.
    expect(got[1]!.from).toBe(got[0]!.from);
    expect(Object.isFrozen(got[0]!.from)).toBe(true);
    expect(b.counters.received).toBe(total);
  });

  test("replies to the decoded endpoint", () => {
    const a = socket({ port: 0 });
    const b = socket({ port: 0 });
    a.queue(new Uint8Array([1, 2, 3]), { address: "127.0.0.1", port: b.port });
    a.flush();
    const [first] = receiveAll(b, 1);
    b.queue(new Uint8Array([9]), first!.from);
    b.flush();
    const [back] = receiveAll(a, 1);
    expect([...back!.data]).toEqual([9]);
    expect(back!.from.port).toBe(b.port);
  });

  test.skipIf(!hasIPv6Loopback)("carries IPv6 on the dual-stack socket", () => {
    const a = socket({ port: 0 });
    const b = socket({ port: 0 });
    if (a.family !== "dual") return;
    a.queue(new Uint8Array([6]), { address: "::1", port: b.port });
    a.flush();
    const got = receiveAll(b, 1);
    expect(got[0]!.from).toEqual({ address: "::1", port: a.port });
  });

  test("a datagram longer than maxDatagram is dropped on receive and counted", () => {
    const a = socket({ port: 0 });
    const b = socket({ port: 0, maxDatagram: 512 });
    a.queue(new Uint8Array(1000), { address: "127.0.0.1", port: b.port });
    a.queue(new Uint8Array(500), { address: "127.0.0.1", port: b.port });
    a.flush();
    const poller = new Poller([b.fd]);
    const lengths: (number | null)[] = [];
    const deadline = Date.now() + 2000;
    while (lengths.length < 2 && Date.now() < deadline) {
      poller.wait(50);
      const n = b.receive();
      for (let i = 0; i < n; i++) lengths.push(b.datagram(i)?.byteLength ?? null);
    }
    expect(lengths).toEqual([null, 500]);
    expect(b.counters.truncated).toBe(1);
  });

  test("errors are counted by errno and never thrown", () => {
    const a = socket({ port: 0, maxDatagram: 2000 });
    const v4 = socket({ port: 0, family: "ipv4" });
    a.queue(new Uint8Array(3000), { address: "127.0.0.1", port: 9 }); // larger than the send slot
    v4.queue(new Uint8Array(10), { address: "::1", port: 9 }); // no IPv6 on an AF_INET socket
    a.queue(new Uint8Array(10), { address: "not-an-address", port: 9 });
    // Nobody listens on the port: an unconnected socket sees no ECONNREFUSED, just success.
    const closed = socket({ port: 0 });
    const deadPort = closed.port;
    closed.close();
    for (let i = 0; i < 5; i++) a.queue(new Uint8Array(10), { address: "127.0.0.1", port: deadPort });
    expect(() => a.flush()).not.toThrow();
    expect(() => v4.flush()).not.toThrow();
    expect(a.counters.errors).toEqual({ EMSGSIZE: 1, EAFNOSUPPORT: 1 });
    expect(v4.counters.errors).toEqual({ EAFNOSUPPORT: 1 });
    expect(a.receive()).toBe(0); // EAGAIN is not an error
    expect(a.counters.errors.EAGAIN).toBeUndefined();
  });

  test("binding a port in use fails with a named error", () => {
    const a = socket({ port: 0, family: "ipv4" });
    expect(() => socket({ port: a.port, family: "ipv4" })).toThrow(/bind UDP port/);
  });
});

describe("address codecs", () => {
  test("formatIPv6 is RFC 5952 canonical", () => {
    const cases: [string, string][] = [
      ["::1", "::1"],
      ["::", "::"],
      ["fd00:0:0:0:0:0:0:1", "fd00::1"],
      ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
      ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
      ["fe80::ABCD:0:0:1", "fe80::abcd:0:0:1"],
    ];
    for (const [input, canonical] of cases) expect(formatIPv6(parseIPv6(input)!)).toBe(canonical);
  });

  test("parseIPv6 rejects malformed text", () => {
    for (const bad of ["1::2::3", "12345::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "g::1", ""]) expect(parseIPv6(bad)).toBeNull();
    expect(parseIPv6("::ffff:10.1.2.3")).toEqual(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]));
  });

  test("IPv4 endpoints become v4-mapped sockaddr_in6 on a dual-stack socket", () => {
    const sa = encodeSockaddr({ address: "10.1.2.3", port: 51820 }, "dual")!;
    expect(sa.byteLength).toBe(28);
    expect([sa[2], sa[3]]).toEqual([51820 >> 8, 51820 & 0xff]);
    expect([...sa.subarray(18, 24)]).toEqual([0xff, 0xff, 10, 1, 2, 3]);
    expect(encodeSockaddr({ address: "10.1.2.3", port: 1 }, "ipv4")!.byteLength).toBe(16);
    expect(encodeSockaddr({ address: "::1", port: 1 }, "ipv4")).toBeNull();
  });
});
