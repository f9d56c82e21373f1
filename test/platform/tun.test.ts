/**
 * @module test/platform/tun.test
 * platform/linux/tun.ts against the kernel, inside a rig namespace: the TUN is created, moved
 * into the namespace while still down and unaddressed, configured there, and then (1) an ICMP
 * echo request written to it is answered by the kernel with an echo reply read back from it,
 * (2) a `ping` run in the namespace comes out of it as an echo request.
 */
import { expect } from "bun:test";
import { withRig } from "../helpers/netns.ts";
import { rootTest } from "../helpers/env.ts";
import { configureInterface } from "../../platform/linux/link.ts";
import { openTun, TunError } from "../../platform/linux/tun.ts";
import { Poller } from "../../platform/linux/udp.ts";
import { ffiBuffer } from "../../platform/linux/libc.ts";

function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length % 2) sum += bytes[bytes.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ip4(text: string): number[] {
  return text.split(".").map(Number);
}

/** An IPv4 ICMP echo request with correct checksums. */
function echoRequest(src: string, dst: string, id: number, seq: number, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(20 + 8 + payload.length);
  const v = new DataView(p.buffer);
  p[0] = 0x45;
  v.setUint16(2, p.length);
  v.setUint16(4, 0x1234);
  p[8] = 64;
  p[9] = 1;
  p.set(ip4(src), 12);
  p.set(ip4(dst), 16);
  v.setUint16(10, checksum(p.subarray(0, 20)));
  p[20] = 8;
  v.setUint16(24, id);
  v.setUint16(26, seq);
  p.set(payload, 28);
  v.setUint16(22, checksum(p.subarray(20)));
  return p;
}

/** Reads packets for up to `ms` until `match` accepts one. */
function readUntil(tun: ReturnType<typeof openTun>, match: (p: Uint8Array) => boolean, ms: number): Uint8Array | null {
  const buf = ffiBuffer(65536);
  const poller = new Poller([tun.fd]);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    poller.wait(Math.max(1, deadline - Date.now()));
    for (;;) {
      const n = tun.read(buf);
      if (n <= 0) break;
      const packet = buf.slice(0, n);
      if (match(packet)) return packet;
    }
  }
  return null;
}

const isIcmp4 = (p: Uint8Array, type: number) => p[0] === 0x45 && p[9] === 1 && p[20] === type;

rootTest("TUN: the kernel answers an echo request written to it, and routes a ping out of it", ["ip", "ping"], async () => {
  await withRig(async (rig) => {
    const ns = await rig.addNamespace("t");
    const tun = openTun(rig.linkName("tun0"));
    try {
      expect(tun.name).toBe(rig.linkName("tun0"));
      tun.setNonBlocking();
      await rig.runner.run(["ip", "link", "set", "dev", tun.name, "netns", ns]);
      await configureInterface(rig.runnerIn(ns), tun.name, { addresses: ["10.77.3.1/24"], mtu: 1400, up: true });
      const show = await rig.exec(ns, ["ip", "-o", "addr", "show", "dev", tun.name]);
      expect(show.stdout).toContain("10.77.3.1/24");
      expect((await rig.exec(ns, ["ip", "-o", "link", "show", "dev", tun.name])).stdout).toContain("mtu 1400");

      // (1) in: a peer's echo request; out: the kernel's reply.
      const payload = new TextEncoder().encode("waygate-tun-test");
      const req = echoRequest("10.77.3.2", "10.77.3.1", 0xbeef, 7, payload);
      expect(tun.write(req)).toBe(req.length);
      const reply = readUntil(tun, (p) => isIcmp4(p, 0), 2000);
      expect(reply).not.toBeNull();
      const r = reply!;
      expect([...r.subarray(12, 16)].join(".")).toBe("10.77.3.1");
      expect([...r.subarray(16, 20)].join(".")).toBe("10.77.3.2");
      expect(new DataView(r.buffer).getUint16(24)).toBe(0xbeef);
      expect(new DataView(r.buffer).getUint16(26)).toBe(7);
      expect(new TextDecoder().decode(r.subarray(28))).toBe("waygate-tun-test");
      expect(checksum(r.subarray(0, 20))).toBe(0);
      expect(checksum(r.subarray(20))).toBe(0);

      // (2) a ping inside the namespace to an address routed via the TUN comes out as a request.
      const ping = rig.spawn(ns, ["ping", "-c", "1", "-W", "1", "10.77.3.9"], { stdout: "ignore", stderr: "ignore" });
      const out = readUntil(tun, (p) => isIcmp4(p, 8), 2000);
      await ping.stop(500);
      expect(out).not.toBeNull();
      expect([...out!.subarray(16, 20)].join(".")).toBe("10.77.3.9");
      expect([...out!.subarray(12, 16)].join(".")).toBe("10.77.3.1");
    } finally {
      tun.close();
    }
    // The device is not persistent: closing the fd removes it.
    const gone = await rig.exec(ns, ["ip", "link", "show", "dev", rig.linkName("tun0")], { allowFailure: true });
    expect(gone.exitCode).not.toBe(0);
  });
});

rootTest("TUN: invalid names and taken names fail with TunError", ["ip"], async () => {
  expect(() => openTun("this-name-is-too-long")).toThrow(TunError);
  expect(() => openTun("bad/name")).toThrow(TunError);
  await withRig(async (rig) => {
    const name = rig.linkName("dup");
    const first = openTun(name);
    try {
      // A second TUNSETIFF on an attached non-multiqueue TUN is EBUSY.
      expect(() => openTun(name)).toThrow(/TUNSETIFF.*EBUSY/);
    } finally {
      first.close();
    }
  });
});
