/**
 * @module test/agent/client
 * The control-plane client: the SSE parser at every chunk boundary (CRLF, multi-byte characters
 * split included), comments/pings/malformed events, signed requests that the server's verifier
 * accepts, error bodies, and the sync loop: backoff schedule under a fake clock, reset after a
 * delivered NetMap, the fallback to the NetMap saved on disk, idle-stream detection.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  backoffDelay,
  ControlClient,
  DEFAULT_BACKOFF,
  makeAgentSigner,
  newSyncState,
  type NetMapUpdate,
  runNetMapSync,
  type StreamItem,
  streamItem,
} from "../../core/agent/client.ts";
import { ControlPlaneError } from "../../core/agent/errors.ts";
import { SseParser, type SseEvent } from "../../core/agent/sse.ts";
import { NonceCache, verifyAgentRequest } from "../../core/control/auth.ts";
import { recordingLogger, silentLogger } from "../../core/log.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { decodeKey } from "../../core/wire/keys.ts";
import { sampleNetMap, SELF, SERVER } from "./fixtures.ts";

const crypto = nobleCrypto();

function parseAll(chunks: string[]): { events: SseEvent[]; parser: SseParser } {
  const parser = new SseParser();
  const events = chunks.flatMap((c) => parser.push(c));
  return { events, parser };
}

const STREAM =
  "retry: 2000\n\n" +
  ": keep-alive comment\n" +
  "event: netmap\ndata: {\"a\":1,\n\ndata: \"b\":\"ü€\"}\n\n" + // blank line inside: two events
  "event: ping\r\ndata: {}\r\n\r\n" +
  "event: netmap\rdata: line1\rdata: line2\rid: 7\r\r" +
  "data:no-space\n\n";

const EXPECTED: SseEvent[] = [
  { event: "netmap", data: '{"a":1,' },
  { event: "message", data: '"b":"ü€"}' },
  { event: "ping", data: "{}" },
  { event: "netmap", data: "line1\nline2", id: "7" },
  { event: "message", data: "no-space" },
];

describe("SseParser", () => {
  test("one chunk", () => {
    const { events, parser } = parseAll([STREAM]);
    expect(events).toEqual(EXPECTED);
    expect(parser.counters.comments).toBe(1);
  });

  test("split at every position (two chunks), CRLF and characters included", () => {
    for (let i = 0; i <= STREAM.length; i++) {
      expect(parseAll([STREAM.slice(0, i), STREAM.slice(i)]).events).toEqual(EXPECTED);
    }
  });

  test("bytes split anywhere and decoded with a streaming TextDecoder", () => {
    const bytes = new TextEncoder().encode(STREAM);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: bytes.length }), { maxLength: 12 }), (cuts) => {
        const points = [...new Set([0, ...cuts, bytes.length])].sort((a, b) => a - b);
        const decoder = new TextDecoder();
        const chunks: string[] = [];
        for (let i = 1; i < points.length; i++) chunks.push(decoder.decode(bytes.slice(points[i - 1], points[i]), { stream: true }));
        expect(parseAll(chunks).events).toEqual(EXPECTED);
      }),
      { seed: 20240601, numRuns: 300 },
    );
  });

  test("an oversized line drops only its event", () => {
    const parser = new SseParser({ maxLineBytes: 64 });
    const out = [...parser.push(`event: netmap\ndata: ${"x".repeat(50)}`), ...parser.push(`${"y".repeat(50)}\n\n`), ...parser.push("event: ping\ndata: {}\n\n")];
    expect(out).toEqual([{ event: "ping", data: "{}" }]);
    expect(parser.counters.oversized).toBe(1);
  });
});

describe("stream items", () => {
  test("netmap, ping, and every malformed kind", () => {
    const good = JSON.stringify({ revision: 3, netmap: sampleNetMap() });
    expect(streamItem("netmap", good)).toEqual({ type: "netmap", update: { revision: 3, netmap: sampleNetMap() } });
    expect(streamItem("ping", "{}")).toEqual({ type: "ping" });
    expect(streamItem("netmap", "{oops")).toEqual({ type: "malformed", reason: "netmap event data is not JSON" });
    const bad = streamItem("netmap", JSON.stringify({ revision: 3, netmap: { ...sampleNetMap(), peers: [{ id: 1 }] } }));
    expect(bad.type).toBe("malformed");
    expect((bad as { reason: string }).reason).toContain("netmap.peers.0");
    expect(streamItem("surprise", "{}")).toEqual({ type: "malformed", reason: 'unknown event "surprise"' });
  });
});

function sseResponse(chunks: string[], options: { hang?: boolean } = {}): Response {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = chunks.shift();
      if (next === undefined) {
        if (options.hang) await new Promise(() => {});
        controller.close();
        return;
      }
      controller.enqueue(encoder.encode(next));
    },
  });
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
}

const signer = makeAgentSigner({ privateKey: SELF.privateKey, serverPublicKey: SERVER.publicKey }, { crypto, random: (n) => crypto.hash(new Uint8Array([n, Math.random() * 255])).slice(0, n), now: () => 1_700_000_000_000 });

describe("ControlClient", () => {
  test("requests are signed so that the server's verifier accepts them", async () => {
    const seen: { url: string; init: RequestInit }[] = [];
    const client = new ControlClient({
      serverUrl: "http://10.0.0.1:7070/",
      logger: silentLogger,
      signer,
      fetch: async (url, init) => {
        seen.push({ url, init: init! });
        return new Response(null, { status: 204 });
      },
    });
    const report = { listenPort: 51820, endpoints: ["10.0.0.2:51820"], discoveredSubnets: [], agentVersion: "t", os: "linux" };
    await client.report(report);
    expect(seen[0]!.url).toBe("http://10.0.0.1:7070/v1/agent/report");
    const headers = new Headers(seen[0]!.init.headers as Record<string, string>);
    const result = verifyAgentRequest({
      headers,
      method: "POST",
      pathWithQuery: "/v1/agent/report",
      body: new TextEncoder().encode(String(seen[0]!.init.body)),
      serverPrivateKey: decodeKey(SERVER.privateKey),
      crypto,
      now: () => 1_700_000_000_000,
      nonces: new NonceCache(),
    });
    expect(result).toEqual({ ok: true, publicKey: SELF.publicKey });
    expect(JSON.stringify(seen)).not.toContain(SELF.privateKey);
  });

  test("error bodies become ControlPlaneError with status, code and field", async () => {
    const client = new ControlClient({
      serverUrl: "http://s",
      logger: silentLogger,
      signer,
      fetch: async () => new Response(JSON.stringify({ error: { code: "E_ENROLMENT_KEY", message: "the enrolment key is not known", field: "enrolmentKey" } }), { status: 403 }),
    });
    const err = await client.enrol({ enrolmentKey: "12345678", hostname: "h", os: "linux", agentVersion: "1" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ControlPlaneError);
    expect((err as ControlPlaneError).status).toBe(403);
    expect((err as ControlPlaneError).serverCode).toBe("E_ENROLMENT_KEY");
    expect((err as Error).message).toContain("the enrolment key is not known (field enrolmentKey)");
  });

  test("unreachable and off-protocol answers", async () => {
    const down = new ControlClient({ serverUrl: "http://s", logger: silentLogger, fetch: async () => { throw new TypeError("connect ECONNREFUSED"); } });
    await expect(down.info()).rejects.toThrow(/cannot reach the control plane: connect ECONNREFUSED/);
    const odd = new ControlClient({ serverUrl: "http://s", logger: silentLogger, fetch: async () => Response.json({ protocol: 2 }) });
    await expect(odd.info()).rejects.toThrow(/answer does not match the protocol at protocol/);
  });

  test("stream yields netmaps, pings and malformed items across chunk splits", async () => {
    const env = JSON.stringify({ revision: 1, netmap: sampleNetMap() });
    const text = `retry: 2000\n\nevent: netmap\ndata: ${env}\n\nevent: ping\ndata: {}\n\nevent: netmap\ndata: nope\n\n`;
    const chunks = text.match(/[\s\S]{1,37}/g)!;
    const client = new ControlClient({ serverUrl: "http://s", logger: silentLogger, signer, fetch: async () => sseResponse([...chunks]) });
    const items: StreamItem["type"][] = [];
    for await (const item of client.stream({ signal: new AbortController().signal, idleTimeoutMs: 5000, sleep: (ms) => Bun.sleep(ms) })) items.push(item.type);
    expect(items).toEqual(["netmap", "ping", "malformed"]);
  });

  test("a silent stream is dropped after the idle timeout", async () => {
    const client = new ControlClient({ serverUrl: "http://s", logger: silentLogger, signer, fetch: async () => sseResponse([], { hang: true }) });
    const gen = client.stream({ signal: new AbortController().signal, idleTimeoutMs: 30, sleep: (ms) => Bun.sleep(ms) });
    await expect(gen.next()).rejects.toThrow(/silent for 30 ms/);
  });
});

describe("backoff", () => {
  test("exponential, capped, equal jitter", () => {
    const zero = () => 0;
    const one = () => 0.999999;
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8].map((a) => backoffDelay(a, zero))).toEqual([250, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
    expect([0, 1, 2, 6, 100].map((a) => backoffDelay(a, one))).toEqual([500, 1000, 2000, 30000, 30000]);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 200 }), fc.double({ min: 0, max: 1, noNaN: true }), (a, r) => {
        const d = backoffDelay(a, () => r);
        const step = Math.min(DEFAULT_BACKOFF.maxMs, DEFAULT_BACKOFF.baseMs * 2 ** Math.min(a, 60));
        expect(d).toBeGreaterThanOrEqual(step / 2 - 1);
        expect(d).toBeLessThanOrEqual(step + 1);
      }),
      { seed: 7 },
    );
  });
});

/** A fake clock whose sleep advances time instantly and records each wait. */
function fakeClock() {
  let t = 0;
  const sleeps: number[] = [];
  return {
    now: () => t,
    sleeps,
    sleep: async (ms: number) => {
      sleeps.push(ms);
      t += ms;
      await Promise.resolve();
    },
  };
}

describe("runNetMapSync", () => {
  test("backoff schedule while down, cached NetMap applied once, reset after a delivered NetMap", async () => {
    const clock = fakeClock();
    const controller = new AbortController();
    const applied: { revision: number; source: string }[] = [];
    let calls = 0;
    const cached: NetMapUpdate = { revision: 4, netmap: sampleNetMap() };
    const client = {
      async *stream(): AsyncGenerator<StreamItem> {
        calls++;
        if (calls <= 4) throw new ControlPlaneError("http://s", 0, "cannot reach the control plane: ECONNREFUSED");
        if (calls === 5) {
          yield { type: "netmap", update: { revision: 9, netmap: sampleNetMap() } };
          yield { type: "malformed", reason: "bad" };
          yield { type: "ping" };
          return; // server closed
        }
        if (calls === 6) throw new ControlPlaneError("http://s", 0, "down again");
        controller.abort();
      },
    };
    const state = newSyncState();
    const log = recordingLogger();
    await runNetMapSync({
      client,
      logger: log,
      now: clock.now,
      sleep: clock.sleep,
      random: () => 0.5,
      signal: controller.signal,
      state,
      onNetMap: async (u, source) => {
        applied.push({ revision: u.revision, source });
      },
      loadCached: () => cached,
    });
    // 0.5 jitter: 3/4 of each step. Failures 1-4: steps 500, 1000, 2000, 4000; after the
    // delivering connection closed, attempt resets: 500; then the next failure: 500 again.
    expect(clock.sleeps).toEqual([375, 750, 1500, 3000, 375, 375]);
    expect(applied).toEqual([
      { revision: 4, source: "disk" },
      { revision: 9, source: "server" },
    ]);
    expect(state.malformed).toBe(1);
    expect(state.pings).toBe(1);
    expect(state.connects).toBe(1);
    expect(state.disconnects).toBe(1);
    expect(log.lines.some((l) => l.message.startsWith("agent: netmap source=disk revision=4 reason=control-plane-unreachable"))).toBe(true);
    expect(log.lines.some((l) => l.level === "warn" && l.message.includes('control: event=ignored reason="bad"'))).toBe(true);
  });

  test("nothing on disk: logged, and the loop keeps trying", async () => {
    const clock = fakeClock();
    const controller = new AbortController();
    let calls = 0;
    const log = recordingLogger();
    await runNetMapSync({
      client: {
        async *stream(): AsyncGenerator<StreamItem> {
          if (++calls === 3) controller.abort();
          throw new Error("refused");
        },
      },
      logger: log,
      now: clock.now,
      sleep: clock.sleep,
      random: () => 0,
      signal: controller.signal,
      onNetMap: async () => {
        throw new Error("must not be called");
      },
      loadCached: () => null,
    });
    expect(calls).toBe(3);
    expect(log.lines.filter((l) => l.message.includes("netmap source=none")).length).toBe(1);
  });

  test("an apply that throws is logged and the stream goes on", async () => {
    const controller = new AbortController();
    const log = recordingLogger();
    const seen: number[] = [];
    await runNetMapSync({
      client: {
        async *stream(): AsyncGenerator<StreamItem> {
          yield { type: "netmap", update: { revision: 1, netmap: sampleNetMap() } };
          yield { type: "netmap", update: { revision: 2, netmap: sampleNetMap() } };
          controller.abort();
        },
      },
      logger: log,
      now: () => 0,
      sleep: async () => {},
      random: () => 0,
      signal: controller.signal,
      onNetMap: async (u) => {
        seen.push(u.revision);
        if (u.revision === 1) throw new Error("setPeers failed");
      },
      loadCached: () => null,
    });
    expect(seen).toEqual([1, 2]);
    expect(log.lines.some((l) => l.level === "error" && l.message.includes("netmap=apply-failed revision=1"))).toBe(true);
  });
});
