/**
 * @module test/router/linux.contract.test
 * The Linux Router runs the Router contract for real, inside a network namespace this test
 * creates (root only). The namespace holds a veth "LAN" with a default gateway and a route the
 * "user" owns, and a veth "tunnel"; it has no link to the machine's real network, and the
 * host's own routing table is never touched: the router's runner prefixes every command with
 * `ip netns exec <ns>`. Names carry a per-run prefix; every harness deletes its namespace in
 * `finally`, on failure too.
 */
import { describe, expect, test } from "bun:test";
import { recordingLogger } from "../../core/log.ts";
import type { CommandRunner } from "../../core/runner.ts";
import { execRunner } from "../../platform/exec.ts";
import { linuxRouter, linuxRouteArgv, parseIpRouteJson } from "../../platform/linux/router.ts";
import { rootTest } from "../helpers/env.ts";
import { routerContract, type Hop, type RouterHarness } from "../contract/router.contract.ts";

const RUN = `wr${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
let serial = 0;

async function sh(argv: string[]): Promise<{ stdout: string; exitCode: number; stderr: string }> {
  const p = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", env: { ...process.env, LC_ALL: "C" } });
  const [stdout, stderr, exitCode] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { stdout, stderr, exitCode };
}

async function must(argv: string[]): Promise<string> {
  const r = await sh(argv);
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")} failed (${r.exitCode}): ${r.stderr}`);
  return r.stdout;
}

async function namespaceHarness(): Promise<RouterHarness & { runner: CommandRunner }> {
  const p = `${RUN}${serial++}`;
  const ns = `${p}ns`;
  const lan = `${p}l0`;
  const tun = `${p}t0`;
  const inNs = (...argv: string[]) => must(["ip", "netns", "exec", ns, ...argv]);
  await must(["ip", "netns", "add", ns]);
  try {
    // No DAD: the link-local addresses (and their local routes) must exist before the first dump.
    await inNs("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0");
    await inNs("ip", "link", "set", "lo", "up");
    await inNs("ip", "link", "add", lan, "type", "veth", "peer", "name", `${p}l1`);
    await inNs("ip", "link", "add", tun, "type", "veth", "peer", "name", `${p}t1`);
    for (const dev of [lan, `${p}l1`, tun, `${p}t1`]) await inNs("ip", "link", "set", dev, "up");
    await inNs("ip", "addr", "add", "192.168.7.2/24", "dev", lan);
    await inNs("ip", "-6", "addr", "add", "fd07::2/64", "dev", lan, "nodad");
    await inNs("ip", "addr", "add", "100.64.0.2/32", "dev", tun);
    await inNs("ip", "route", "add", "default", "via", "192.168.7.1", "dev", lan);
    await inNs("ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", lan);
    await inNs("ip", "route", "add", "10.20.0.0/16", "via", "192.168.7.254", "dev", lan);
    for (let i = 0; ; i++) {
      const local = await inNs("ip", "-6", "route", "show", "table", "local");
      if ((local.match(/^local fe80::/gm) ?? []).length === 4) break;
      if (i > 200) throw new Error(`link-local addresses did not appear in ${ns}:\n${local}`);
      await Bun.sleep(10);
    }
  } catch (err) {
    await sh(["ip", "netns", "del", ns]);
    throw err;
  }

  const exec = execRunner();
  let mutations = 0;
  const runner: CommandRunner = {
    run(argv, options) {
      if (argv[0] !== "ip") throw new Error(`unexpected command ${argv.join(" ")}`);
      if (argv.includes("add") || argv.includes("del")) mutations++;
      return exec.run(["ip", "netns", "exec", ns, ...argv], options);
    },
  };
  const tunnel = { interfaceName: tun, addresses: ["100.64.0.2/32"] };
  return {
    runner,
    router: linuxRouter({ runner, tunnel }),
    env: {
      tunnel,
      lan4: "192.168.7.0/24",
      gateway4: "192.168.7.1",
      lanHost4: "192.168.7.9",
      userRoute: "10.20.0.0/16",
      userGateway: "192.168.7.254",
      ipv6: { lan: "fd07::/64", gateway: "fe80::1", lanHost: "fd07::9" },
    },
    async dump() {
      const v4 = await inNs("ip", "-4", "route", "show", "table", "all");
      const v6 = await inNs("ip", "-6", "route", "show", "table", "all");
      const rules = await inNs("ip", "rule", "show");
      return `${v4}\n${v6}\n${rules}`;
    },
    mutations: () => mutations,
    async resolve(dst): Promise<Hop> {
      const r = await sh(["ip", "netns", "exec", ns, "ip", "-j", "route", "get", dst]);
      if (r.exitCode !== 0) return { kind: "blackhole" };
      const [hop] = JSON.parse(r.stdout) as { dev: string; gateway?: string; type?: string }[];
      if (!hop || hop.type === "blackhole") return { kind: "blackhole" };
      if (hop.dev === tun) return { kind: "tunnel" };
      if (hop.gateway) return { kind: "gateway", gateway: hop.gateway };
      return { kind: "link" };
    },
    async tunnelDown() {
      await inNs("ip", "link", "set", tun, "down");
    },
    newRouter: () => linuxRouter({ runner }),
    async cleanup() {
      await sh(["ip", "netns", "del", ns]);
    },
  };
}

routerContract("linux (ip route, in a network namespace)", namespaceHarness, {
  crashCleanup: "full",
  test: (name, fn, ms) => rootTest(name, ["ip"], fn, ms),
});

describe("linux router pieces", () => {
  test("parseIpRouteJson reads default, host and blackhole entries", () => {
    const text = JSON.stringify([
      { dst: "default", gateway: "192.168.7.1", dev: "eth0", flags: [] },
      { type: "blackhole", dst: "0.0.0.0/1", protocol: "87", metric: 11, flags: [] },
      { dst: "203.0.113.7", gateway: "192.168.7.1", dev: "eth0", protocol: "87", metric: 10, flags: ["onlink"] },
    ]);
    expect(parseIpRouteJson(text, 4).map((e) => e.prefix)).toEqual(["0.0.0.0/0", "0.0.0.0/1", "203.0.113.7/32"]);
    expect(parseIpRouteJson("", 6)).toEqual([]);
    expect(() => parseIpRouteJson("{", 4)).toThrow(/E_ROUTE_PARSE|not JSON/);
  });

  test("one ip command per change, tagged with our protocol", () => {
    const t = { interfaceName: "wg0" };
    expect(linuxRouteArgv({ op: "add", route: { prefix: "0.0.0.0/1", target: { kind: "blackhole" }, metric: 11 } }, t)).toEqual(
      ["ip", "-4", "route", "add", "blackhole", "0.0.0.0/1", "proto", "87", "metric", "11"],
    );
    expect(linuxRouteArgv({ op: "delete", route: { prefix: "fd10::/48", target: { kind: "tunnel" }, metric: 10 } }, t)).toEqual(
      ["ip", "-6", "route", "del", "fd10::/48", "dev", "wg0", "proto", "87", "metric", "10"],
    );
  });

  rootTest("conflicts are logged once as key=value lines", ["ip"], async () => {
    const h = await namespaceHarness();
    try {
      const logger = recordingLogger();
      const router = linuxRouter({ runner: h.runner, logger });
      const cfg = { ...h.env.tunnel, routes: [{ prefix: "192.168.7.0/24" }, { prefix: "192.168.0.0/16" }] };
      await router.set(cfg);
      await router.set(cfg);
      const lines = logger.lines.filter((l) => l.message.includes("conflict=")).map((l) => `${l.level} ${l.message.split(" reason=")[0]}`);
      expect(lines).toEqual([
        `warn router(linux): conflict=equals-lan prefix=192.168.7.0/24 other=192.168.7.0/24 dev=${h.env.tunnel.interfaceName.replace(/t0$/, "l0")} action=skipped`,
        `info router(linux): conflict=contains-lan prefix=192.168.0.0/16 other=192.168.7.0/24 dev=${h.env.tunnel.interfaceName.replace(/t0$/, "l0")} action=installed`,
      ]);
      expect(await h.resolve("192.168.7.9")).toEqual({ kind: "link" });
      expect(await h.resolve("192.168.9.9")).toEqual({ kind: "tunnel" });
      await router.set(null);
    } finally {
      await h.cleanup();
    }
  });
});
