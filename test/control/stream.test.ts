/**
 * @module test/control/stream.test
 * The NetMap stream: the current NetMap at once, a new one within a second of a relevant admin
 * change (measured, < 1000 ms), on both ends when a policy between them is revoked, nothing for
 * an unrelated system, the stream ended when the system is removed, and a recompile at a trust
 * time-window boundary.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { PATHS } from "../../core/control/protocol.ts";
import { cleanup, enrolledAgent, sseReader, startTestServer, type TestServer } from "./helpers.ts";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
  for (const name of ["staff", "servers", "other"]) await t.adminJson("POST", "/tags", { name });
});
afterAll(async () => {
  await t.stop();
  cleanup();
});

describe("netmap stream", () => {
  test("policy create and revoke push new NetMaps to both ends within 1 s; an unrelated system gets nothing", async () => {
    const a = await enrolledAgent(t, ["staff"], "stream-a");
    const b = await enrolledAgent(t, ["servers"], "stream-b");
    const c = await enrolledAgent(t, ["other"], "stream-c");
    const ra = sseReader(await a.request("GET", PATHS.netmapStream));
    const rb = sseReader(await b.request("GET", PATHS.netmapStream));
    const rc = sseReader(await c.request("GET", PATHS.netmapStream));
    const first = await ra.next();
    await rb.next();
    await rc.next();
    expect(first.netmap.self.id).toBe(a.id);

    let t0 = performance.now();
    await t.adminJson("POST", "/direct-policies", { name: "a-to-b", fromTags: ["staff"], toTags: ["servers"], acls: [{ protocol: "tcp", ports: "22" }] });
    const [pa, pb] = await Promise.all([ra.next(), rb.next()]);
    let elapsed = performance.now() - t0;
    expect(elapsed).toBeLessThan(1000);
    expect(pa.revision).toBeGreaterThan(first.revision);
    expect(pa.netmap.peers.map((p: { id: string }) => p.id)).toEqual([b.id]);
    expect(pb.netmap.peers.map((p: { id: string }) => p.id)).toEqual([a.id]);

    t0 = performance.now();
    await t.adminJson("DELETE", "/direct-policies/a-to-b");
    const [qa, qb] = await Promise.all([ra.next(), rb.next()]);
    elapsed = performance.now() - t0;
    expect(elapsed).toBeLessThan(1000);
    expect([qa.netmap.peers, qb.netmap.peers]).toEqual([[], []]);
    expect(qa.revision).toBeGreaterThan(pa.revision);

    await Bun.sleep(100);
    expect(rc.pending()).toBe(0);
    for (const r of [ra, rb, rc]) r.cancel();
  });

  test("disabling a system pushes an inactive NetMap; removing it ends its stream", async () => {
    const a = await enrolledAgent(t, ["staff"], "gone");
    const ra = sseReader(await a.request("GET", PATHS.netmapStream));
    expect((await ra.next()).netmap.self.active).toBe(true);
    const sys = await t.adminJson("GET", `/systems/${a.id}`);
    expect(sys.connected).toBe(true);
    await t.adminJson("PATCH", `/systems/${a.id}`, { enabled: false });
    expect((await ra.next()).netmap.self.active).toBe(false);
    await t.adminJson("DELETE", `/systems/${a.id}`);
    await expect(ra.next("netmap", 2000)).rejects.toThrow("stream ended");
    expect((await a.request("GET", PATHS.netmap)).status).toBe(401);
  });

  test("pings keep the stream alive", async () => {
    const fast = await startTestServer({ pingIntervalMs: 50 });
    try {
      const a = await enrolledAgent(fast, [], "pinger");
      const r = sseReader(await a.request("GET", PATHS.netmapStream));
      await r.next();
      expect(await r.next("ping", 1000)).toEqual({});
      r.cancel();
    } finally {
      await fast.stop();
    }
  });

  test("a trust time window opening pushes the gateway grant without any admin write", async () => {
    // A window that opens 1.5 s from now (UTC minutes; the server recompiles at the boundary).
    const w = await startTestServer();
    try {
      await w.adminJson("POST", "/tags", { name: "staff" });
      const gw = await enrolledAgent(w, [], "tw-gw");
      const client = await enrolledAgent(w, ["staff"], "tw-client");
      await w.adminJson("POST", `/gateways/${gw.id}/enable`);
      await w.adminJson("POST", `/gateways/${gw.id}/subnets`, { prefix: "10.50.0.0/24" });
      const minute = 60_000;
      let now = Date.now();
      // Land the boundary on the next whole minute at least 1 s away, so the test waits < 61 s worst case;
      // shift the server clock instead so the boundary is ~1.2 s ahead.
      const nextMinute = Math.ceil((now + 1) / minute) * minute;
      w.clock.offset = nextMinute - now - 1200;
      now = w.now();
      const start = new Date(nextMinute);
      const hhmm = `${String(start.getUTCHours()).padStart(2, "0")}:${String(start.getUTCMinutes()).padStart(2, "0")}`;
      const endDate = new Date(nextMinute + 10 * minute);
      const end = `${String(endDate.getUTCHours()).padStart(2, "0")}:${String(endDate.getUTCMinutes()).padStart(2, "0")}`;
      const day = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"][start.getUTCDay()];
      const r = sseReader(await client.request("GET", PATHS.netmapStream));
      expect((await r.next()).netmap.routes).toEqual([]);
      await w.adminJson("POST", "/policies", {
        name: "timed",
        senderTags: ["staff"],
        gateways: [{ gateway: gw.id }],
        trust: { timeWindows: [{ days: [day], start: hhmm, end, utcOffsetMinutes: 0 }] },
      });
      const opened = await r.next("netmap", 4000);
      expect(opened.netmap.routes.map((x: { prefix: string }) => x.prefix)).toEqual(["10.50.0.0/24"]);
      expect(w.now()).toBeGreaterThanOrEqual(nextMinute);
      r.cancel();
    } finally {
      await w.stop();
    }
  });
});
