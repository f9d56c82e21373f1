/**
 * @module test/dns/platform.test
 * platform/linux/dns.ts on loopback only (no root, no namespaces): the UDP/TCP server around a
 * core handler, the upstream exchange (id matching, timeout, TCP after TC), and the
 * systemd-resolved registration against a fake runner (the host's resolver is never touched).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { CLASS_IN, decodeMessage, encodeMessage, makeQuery, makeResponse, TYPE } from "../../core/dns/codec.ts";
import { createStub } from "../../core/dns/stub.ts";
import { recordingLogger, silentLogger } from "../../core/log.ts";
import type { CommandRunner } from "../../core/runner.ts";
import { createExchange, parseUpstream, registerWithResolved, startDnsServer, tcpQuery, unregister, type DnsServer } from "../../platform/linux/dns.ts";

const servers: DnsServer[] = [];
const sockets: { close(): void }[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
  for (const s of sockets.splice(0)) s.close();
});

describe("server + exchange", () => {
  test("a stub behind the server answers over UDP and TCP; the exchange keeps the caller's id", async () => {
    const stub = createStub({
      peers: () => [{ id: "gw1", name: "gw", virtualAddress: "100.64.0.1" }],
      forward: async () => null,
      logger: silentLogger,
    });
    const server = await startDnsServer({ listen: [{ address: "127.0.0.1", port: 0 }], handler: stub.handle, logger: silentLogger });
    servers.push(server);
    const port = server.bound[0]!.port;
    expect(port).toBeGreaterThan(0);
    const exchange = createExchange({ timeoutMs: 1000 });
    const reply = decodeMessage(await exchange(encodeMessage(makeQuery(0x7777, "gw1.id.waygate", TYPE.A)), `127.0.0.1:${port}`));
    expect(reply.id).toBe(0x7777);
    expect([...(reply.answers[0]!.data as { address: Uint8Array }).address]).toEqual([100, 64, 0, 1]);
    const overTcp = decodeMessage(await tcpQuery(encodeMessage(makeQuery(0x8888, "gw.waygate", TYPE.A)), `127.0.0.1:${port}`));
    expect(overTcp.id).toBe(0x8888);
    expect(overTcp.answers.length).toBe(1);
    expect(server.counters["udp:in"]).toBe(1);
    expect(server.counters["tcp:in"]).toBe(1);
  });

  test("a truncated UDP reply is retried over TCP", async () => {
    let calls = 0;
    const server = await startDnsServer({
      listen: [{ address: "127.0.0.1", port: 0 }],
      handler: async (query, from) => {
        calls++;
        const q = decodeMessage(query);
        const res = makeResponse(q, 0);
        for (let i = 0; i < 100; i++) res.answers.push({ name: q.questions[0]!.name, type: TYPE.A, class: CLASS_IN, ttl: 5, data: { kind: "address", address: Uint8Array.of(10, 0, 1, i) } });
        return encodeMessage(res, { maxSize: from.transport === "tcp" ? 65535 : 512 });
      },
      logger: silentLogger,
    });
    servers.push(server);
    const reply = decodeMessage(await createExchange()(encodeMessage(makeQuery(1, "big.corp.net", TYPE.A)), `127.0.0.1:${server.bound[0]!.port}`));
    expect(reply.tc).toBe(false);
    expect(reply.answers.length).toBe(100);
    expect(calls).toBe(2);
  });

  test("replies with the wrong id are ignored; no reply is a timeout; a handler error is counted", async () => {
    // A raw responder that first answers with a wrong id, then with the right one.
    const raw = await Bun.udpSocket({
      hostname: "127.0.0.1",
      socket: {
        data(s, buf, port, address) {
          const q = new Uint8Array(buf);
          const wrong = new Uint8Array(q);
          wrong[0] = q[0]! ^ 0xff;
          wrong[2] = 0x80;
          s.send(wrong, port, address);
          const right = new Uint8Array(q);
          right[2] = 0x80;
          s.send(right, port, address);
        },
      },
    });
    sockets.push(raw);
    const reply = await createExchange({ timeoutMs: 1000 })(encodeMessage(makeQuery(0x1111, "x.corp.net", TYPE.A)), `127.0.0.1:${raw.port}`);
    expect(decodeMessage(reply).id).toBe(0x1111);

    const silent = await startDnsServer({
      listen: [{ address: "127.0.0.1", port: 0 }],
      handler: async () => {
        throw new Error("boom");
      },
      logger: silentLogger,
      tcp: false,
    });
    servers.push(silent);
    const t0 = performance.now();
    await expect(createExchange({ timeoutMs: 150 })(encodeMessage(makeQuery(2, "x.corp.net", TYPE.A)), `127.0.0.1:${silent.bound[0]!.port}`)).rejects.toThrow(/within 150 ms/);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(140);
    expect(silent.counters["error:handler"]).toBe(1);
  });

  test("an upstream that answers with ICMP port unreachable fails fast, without an uncaught socket error", async () => {
    // A port nobody listens on: bind a socket to learn a free port, then close it.
    const probe = await Bun.udpSocket({ hostname: "127.0.0.1" });
    const port = probe.port;
    probe.close();
    const t0 = performance.now();
    const outcome = await createExchange({ timeoutMs: 3000, tcpFallback: false })(encodeMessage(makeQuery(3, "x.corp.net", TYPE.A)), `127.0.0.1:${port}`).then(
      () => "answered",
      (err: Error) => err.message,
    );
    // Either Bun reports the refusal (fast) or the datagram is silently lost (timeout): never a crash.
    if (/failed/.test(outcome)) expect(performance.now() - t0).toBeLessThan(2000);
    else expect(outcome).toMatch(/within 3000 ms/);
  });

  test("parseUpstream", () => {
    expect(parseUpstream("10.0.0.53")).toEqual({ address: "10.0.0.53", port: 53 });
    expect(parseUpstream("10.0.0.53:5353")).toEqual({ address: "10.0.0.53", port: 5353 });
    expect(parseUpstream("2001:db8::53")).toEqual({ address: "2001:db8::53", port: 53 });
    expect(parseUpstream("[2001:db8::53]:5353")).toEqual({ address: "2001:db8::53", port: 5353 });
  });
});

describe("systemd-resolved registration (fake runner)", () => {
  function fakeRunner(statusExit: number) {
    const calls: string[] = [];
    const runner: CommandRunner = {
      async run(argv, options) {
        calls.push(argv.join(" "));
        if (argv[0] !== "resolvectl") throw new Error(`unexpected command ${argv.join(" ")}`);
        if (argv[1] === "status") return { stdout: "", stderr: "", exitCode: statusExit };
        if (["dns", "domain", "revert"].includes(argv[1]!)) return { stdout: "", stderr: "", exitCode: 0 };
        if (options?.allowFailure) return { stdout: "", stderr: "unknown", exitCode: 1 };
        throw new Error(`unexpected command ${argv.join(" ")}`);
      },
    };
    return { runner, calls };
  }

  test("present: per-link DNS and routing domains, revert on stop; decision logged once", async () => {
    const { runner, calls } = fakeRunner(0);
    const logger = recordingLogger();
    const deps = { runner, logger, exists: (p: string) => p === "/run/systemd/resolve" };
    const r = await registerWithResolved({ ...deps, link: "waygate0", dnsServer: "100.64.0.2", domains: ["~waygate", "~corp.net"] });
    expect(r).toEqual({ mode: "resolved", link: "waygate0" });
    await unregister({ ...deps, link: "waygate0" });
    expect(calls).toEqual(["resolvectl status", "resolvectl dns waygate0 100.64.0.2", "resolvectl domain waygate0 ~waygate ~corp.net", "resolvectl revert waygate0"]);
    expect(logger.lines.filter((l) => l.message.startsWith("dns: resolved=")).map((l) => l.message)).toEqual(["dns: resolved=present reason=resolvectl-status-ok"]);
  });

  test("absent (no /run/systemd/resolve, or resolvectl failing): manual step logged once, nothing run", async () => {
    for (const [exists, statusExit, reason] of [
      [false, 0, "no-/run/systemd/resolve"],
      [true, 1, "resolvectl-status-exit-1"],
    ] as const) {
      const { runner, calls } = fakeRunner(statusExit);
      const logger = recordingLogger();
      const deps = { runner, logger, exists: () => exists };
      for (let i = 0; i < 2; i++) {
        expect((await registerWithResolved({ ...deps, link: "waygate0", dnsServer: "100.64.0.2", domains: ["~waygate"] })).mode).toBe("manual");
      }
      await unregister({ ...deps, link: "waygate0" });
      expect(calls.filter((c) => c !== "resolvectl status")).toEqual([]);
      expect(logger.lines.filter((l) => l.message.includes("register=manual")).length).toBe(1);
      expect(logger.lines.some((l) => l.message === `dns: resolved=absent reason=${reason}`)).toBe(true);
    }
  });
});
