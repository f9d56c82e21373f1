/**
 * @module test/failover/upstream
 * The gateway's upstream monitor (core/failover/upstream.ts) on a fake clock with scripted checks:
 * link down withdraws at the first reading and recovers after two good ones; host probes withdraw
 * after three silent intervals, one answering host is enough, a new subnet with hosts starts
 * withdrawn, answers to a replaced configuration are ignored. Also the Linux checks
 * (platform/linux/upstream.ts, kept here with the monitor they serve): sysfs link state over a
 * fixture directory, and TCP-connect host probes against a local listener.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { type Server, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FailoverConfigError } from "../../core/failover/health.ts";
import { UpstreamMonitor } from "../../core/failover/upstream.ts";
import { recordingLogger } from "../../core/log.ts";
import { linkUp, linuxUpstreamChecks, parseProbeTarget, tcpProbe } from "../../platform/linux/upstream.ts";

const flush = async () => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

function monitor(opts: { hosts?: Record<string, boolean>; link?: Record<string, boolean> } = {}) {
  let t = 1_000_000;
  const link: Record<string, boolean> = { eth1: true, eth2: true, ...opts.link };
  const hosts: Record<string, boolean> = { ...opts.hosts };
  const probes: string[] = [];
  const changes: string[][] = [];
  const logger = recordingLogger();
  const m = new UpstreamMonitor({
    now: () => t,
    logger,
    checks: {
      linkUp: (i) => link[i] ?? false,
      probeHost: async (h) => {
        probes.push(h);
        return hosts[h] ?? false;
      },
    },
    onChange: (w) => changes.push(w),
  });
  /** Runs the monitor for `ms` as a host would: tick when due, let probe answers land. */
  const run = async (ms: number) => {
    const end = t + ms;
    while (t < end) {
      if (m.nextTickInMs() === 0) m.tick();
      await flush();
      t += 10;
    }
  };
  return { m, link, hosts, probes, changes, logger, run, now: () => t };
}

describe("UpstreamMonitor", () => {
  test("link down withdraws at the first reading; back after two good readings", async () => {
    const s = monitor();
    expect(s.m.setSubnets([{ prefix: "172.26.0.0/20", interface: "eth1" }, { prefix: "10.1.0.0/16", interface: "eth2" }])).toEqual([]);
    await s.run(400);
    s.link.eth1 = false;
    const downAt = s.now();
    await s.run(200);
    expect(s.m.withdrawn()).toEqual(["172.26.0.0/20"]);
    expect(s.changes).toEqual([["172.26.0.0/20"]]);
    expect(s.logger.lines.map((l) => l.message)).toContain("upstream: subnet=172.26.0.0/20 interface=eth1 from=ok to=withdrawn reason=link-down");
    expect(s.m.status()[0]).toMatchObject({ withdrawn: true, reason: "link-down", linkUp: false });
    s.link.eth1 = true;
    await s.run(200);
    expect(s.m.withdrawn()).toEqual(["172.26.0.0/20"]); // one good reading is not enough
    await s.run(200);
    expect(s.m.withdrawn()).toEqual([]);
    expect(s.changes).toEqual([["172.26.0.0/20"], []]);
    expect(downAt).toBeGreaterThan(0);
  });

  test("a subnet whose link is down at configuration is withdrawn at once", () => {
    const s = monitor({ link: { eth1: false } });
    expect(s.m.setSubnets([{ prefix: "172.26.0.1/20", interface: "eth1" }])).toEqual(["172.26.0.0/20"]);
    expect(s.logger.lines.map((l) => l.message)).toContain("upstream: subnet=172.26.0.0/20 interface=eth1 from=new to=withdrawn reason=link-down");
  });

  test("hosts: withdrawn until they answer; one answering host is enough; three silent intervals withdraw", async () => {
    const s = monitor({ hosts: { "172.26.0.1": true, "172.26.0.250": false } });
    expect(s.m.setSubnets([{ prefix: "172.26.0.0/20", interface: "eth1", hosts: ["172.26.0.1", "172.26.0.250"] }])).toEqual(["172.26.0.0/20"]);
    await s.run(450);
    expect(s.m.withdrawn()).toEqual([]);
    expect(s.probes.filter((p) => p === "172.26.0.250").length).toBeGreaterThanOrEqual(2);
    s.hosts["172.26.0.1"] = false;
    const lostAt = s.now();
    let withdrawnAt = 0;
    while (withdrawnAt === 0) {
      await s.run(10);
      if (s.m.withdrawn().length > 0) withdrawnAt = s.now();
    }
    expect(withdrawnAt - lostAt).toBeGreaterThan(400);
    expect(withdrawnAt - lostAt).toBeLessThanOrEqual(810);
    expect(s.m.status()[0]).toMatchObject({ reason: "hosts-unreachable", linkUp: true });
  });

  test("a host probe still in flight is not repeated; answers to a replaced configuration are ignored", async () => {
    let t = 0;
    const pending: ((ok: boolean) => void)[] = [];
    const m = new UpstreamMonitor({
      now: () => t,
      logger: recordingLogger(),
      checks: { linkUp: () => true, probeHost: () => new Promise<boolean>((r) => pending.push(r)) },
    });
    m.setSubnets([{ prefix: "10.0.0.0/8", interface: "eth1", hosts: ["10.0.0.1"] }]);
    for (let i = 0; i < 3; i++) {
      m.tick();
      t += 200;
    }
    expect(pending.length).toBe(1);
    m.setSubnets([{ prefix: "10.0.0.0/8", interface: "eth1", hosts: ["10.0.0.2"] }]);
    pending[0]!(true);
    await flush();
    expect(m.status()[0]!.lastHostAnswerMs).toBeNull();
    expect(m.withdrawn()).toEqual(["10.0.0.0/8"]);
  });

  test("configuration errors", () => {
    const m = new UpstreamMonitor({ now: () => 0, logger: recordingLogger(), checks: { linkUp: () => true } });
    expect(() => m.setSubnets([{ prefix: "10.0.0.0/33", interface: "eth1" }])).toThrow(FailoverConfigError);
    expect(() => m.setSubnets([{ prefix: "10.0.0.0/8", interface: "eth1", hosts: ["10.0.0.1"] }])).toThrow(/no host probe/);
    expect(() =>
      m.setSubnets([
        { prefix: "10.0.0.0/8", interface: "eth1" },
        { prefix: "10.1.0.0/8", interface: "eth2" },
      ]),
    ).toThrow(/appears twice/);
    expect(() => new UpstreamMonitor({ now: () => 0, logger: recordingLogger(), checks: { linkUp: () => true }, intervalMs: 0 })).toThrow(FailoverConfigError);
    expect(m.nextTickInMs()).toBe(Number.POSITIVE_INFINITY);
  });
});

describe("platform/linux/upstream", () => {
  let root = "";
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), "waygate-sysfs-"));
    const iface = (name: string, files: Record<string, string>) => {
      mkdirSync(join(root, name));
      for (const [f, v] of Object.entries(files)) writeFileSync(join(root, name, f), `${v}\n`);
    };
    iface("eth1", { operstate: "up", carrier: "1", flags: "0x1003" });
    iface("eth2", { operstate: "down", carrier: "0", flags: "0x1003" });
    iface("tun0", { operstate: "unknown", carrier: "1", flags: "0x1091" });
    iface("tun1", { operstate: "unknown", carrier: "1", flags: "0x1090" }); // admin down
    iface("dummy0", { operstate: "unknown", flags: "0x1083" }); // carrier unreadable
    iface("eth3", { operstate: "lowerlayerdown", carrier: "0", flags: "0x1003" });
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  test("link state from operstate, carrier and flags; missing or odd names are down", () => {
    const got = Object.fromEntries(["eth1", "eth2", "tun0", "tun1", "dummy0", "eth3", "nope", "..", "a/b"].map((n) => [n, linkUp(n, root)]));
    expect(got).toEqual({ eth1: true, eth2: false, tun0: true, tun1: false, dummy0: false, eth3: false, nope: false, "..": false, "a/b": false });
    expect(linuxUpstreamChecks({ root }).linkUp("eth1")).toBe(true);
  });

  test("probe targets", () => {
    expect(parseProbeTarget("192.168.1.1")).toEqual({ host: "192.168.1.1", port: 80 });
    expect(parseProbeTarget("192.168.1.1:443")).toEqual({ host: "192.168.1.1", port: 443 });
    expect(parseProbeTarget("[fd00::10]:22")).toEqual({ host: "fd00::10", port: 22 });
    expect(parseProbeTarget("fd00::10", 8080)).toEqual({ host: "fd00::10", port: 8080 });
  });

  test("TCP connect probe: a listener and a refusing port answer; a bad port does not", async () => {
    const server: Server = createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as { port: number }).port;
    expect(await tcpProbe(`127.0.0.1:${port}`, 1000)).toBe(true);
    await new Promise<void>((r) => server.close(() => r()));
    expect(await tcpProbe(`127.0.0.1:${port}`, 1000)).toBe(true); // RST: the host is there
    expect(await tcpProbe("127.0.0.1:0", 100)).toBe(false);
    expect(await tcpProbe("127.0.0.1:70000", 100)).toBe(false);
  });
});
