/**
 * @module test/dataplane/probe
 * The probe wire format (core/dataplane/probe.ts): requests and replies are valid ICMP echo
 * (both checksums verify, so a plain peer's kernel would answer), only probes are classified as
 * probes, health reports round-trip (fast-check, fixed seed), and a truncated or foreign report
 * decodes to null rather than to something wrong.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  MAX_REPORTED_PREFIXES,
  NOT_PROBE,
  PROBE_REPLY,
  PROBE_REQUEST,
  PROBE_SIZE,
  buildProbe,
  buildProbeReply,
  classifyProbe,
  decodeReport,
  encodeReport,
  probeSequence,
  replyReportBytes,
} from "../../core/dataplane/probe.ts";
import { checksumsValid, icmpEcho } from "./memory.ts";
import { ipPacket } from "./packets.ts";

describe("probe wire format", () => {
  test("a probe and its reply are valid ICMP echo, addressed both ways, sequence kept", () => {
    const req = new Uint8Array(1500);
    const n = buildProbe(req, 0x64400002, 0x64400001, 0x01020304);
    expect(n).toBe(PROBE_SIZE);
    const p = req.slice(0, n);
    expect(checksumsValid(p)).toBe(true);
    expect(classifyProbe(p, n)).toBe(PROBE_REQUEST);
    expect(probeSequence(p)).toBe(0x01020304);
    expect([...p.subarray(12, 20)]).toEqual([100, 64, 0, 2, 100, 64, 0, 1]);

    const report = encodeReport({ withdrawn: ["172.26.0.0/20"], draining: true });
    const out = new Uint8Array(1500);
    const m = buildProbeReply(p, out, report);
    const reply = out.slice(0, m);
    expect(checksumsValid(reply)).toBe(true);
    expect(classifyProbe(reply, m)).toBe(PROBE_REPLY);
    expect(probeSequence(reply)).toBe(0x01020304);
    expect([...reply.subarray(12, 20)]).toEqual([100, 64, 0, 1, 100, 64, 0, 2]);
    expect(decodeReport(replyReportBytes(reply, m))).toEqual({ withdrawn: ["172.26.0.0/20"], draining: true });
    // A kernel's echo of the request (no report) decodes to no report.
    expect(decodeReport(replyReportBytes(reply, PROBE_SIZE))).toBeNull();
  });

  test("ordinary traffic is never a probe", () => {
    const probe = new Uint8Array(PROBE_SIZE);
    buildProbe(probe, 1, 2, 3);
    const cases = [
      icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2", id: 0x5747 }), // our identifier, not our payload
      icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2", payload: probe.subarray(28) }), // our payload, not our identifier
      ipPacket({ src: "10.0.0.1", dst: "10.0.0.2", proto: "udp", payload: new Uint8Array(40) }),
      ipPacket({ src: "fd00::1", dst: "fd00::2", proto: "icmp", icmpId: 0x5747, payload: probe.subarray(28) }),
    ];
    for (const c of cases) expect(classifyProbe(c, c.length)).toBe(NOT_PROBE);
    const frag = probe.slice();
    frag[6] = 0x20; // more fragments
    expect(classifyProbe(frag, frag.length)).toBe(NOT_PROBE);
    expect(classifyProbe(probe, PROBE_SIZE - 1)).toBe(NOT_PROBE);
  });

  test("reports round-trip (fixed seed); truncated or foreign blocks decode to null", () => {
    const v4 = fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 })).map(
      ([a, l]) => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}/${l}`,
    );
    const v6 = fc.tuple(fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }), fc.integer({ min: 0, max: 128 })).map(
      ([w, l]) => `${w.map((x) => x.toString(16)).join(":")}/${l}`,
    );
    fc.assert(
      fc.property(fc.array(fc.oneof(v4, v6), { maxLength: 10 }), fc.boolean(), (withdrawn, draining) => {
        const block = encodeReport({ withdrawn, draining });
        const back = decodeReport(block)!;
        expect(back.draining).toBe(draining);
        // Canonical texts: re-encoding the decoded report gives the same bytes.
        expect(encodeReport(back)).toEqual(block);
        expect(back.withdrawn.length).toBe(withdrawn.length);
        if (withdrawn.length > 0) expect(decodeReport(block.subarray(0, block.length - 1))).toBeNull();
      }),
      { seed: 1234, numRuns: 200 },
    );
    expect(decodeReport(new TextEncoder().encode("waygate ping payload"))).toBeNull();
    const tooMany = Array.from({ length: MAX_REPORTED_PREFIXES + 1 }, (_, i) => `10.${i}.0.0/16`);
    expect(() => encodeReport({ withdrawn: tooMany, draining: false })).toThrow(RangeError);
  });
});
