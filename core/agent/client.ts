/**
 * @module core/agent/client
 * The agent's side of core/control/protocol.ts over an injected `fetch`: info, enrol, netmap,
 * the NetMap event stream (SSE, parsed by sse.ts), report. Every agent request is signed by an
 * injected AgentSigner (core/control/auth.ts's signAgentRequest with the agent's key); every
 * answer is validated with the protocol's valibot schemas before anything uses it.
 *
 * `runNetMapSync` keeps the stream open for as long as the agent runs:
 *   - each `netmap` event is validated and handed to `onNetMap` (in order, one at a time);
 *     `ping` events and comments only prove the connection is alive; a malformed event (bad
 *     JSON, wrong shape, unknown type) is counted, logged and skipped — never fatal;
 *   - a stream silent for longer than `idleTimeoutMs` (three missed pings) is dropped;
 *   - on any failure it reconnects after an exponential backoff with jitter (`backoffDelay`),
 *     reset once a connection delivers a NetMap; sleeping and randomness are injected;
 *   - while no NetMap has come from the server yet and the server cannot be reached, the last
 *     NetMap saved on disk is applied once (`source=disk`), so a restart works while the control
 *     plane is down.
 */
import * as v from "valibot";
import type { Logger } from "../log.ts";
import { NetMapSchema, type NetMap } from "../policy/netmap.ts";
import {
  type AgentReport,
  type EnrolRequest,
  type EnrolResponse,
  EnrolResponseSchema,
  ErrorBodySchema,
  type InfoResponse,
  InfoResponseSchema,
  type NetMapEnvelope,
  PATHS,
} from "../control/protocol.ts";
import { signAgentRequest } from "../control/auth.ts";
import type { Crypto, RandomSource } from "../wire/crypto.ts";
import { ControlPlaneError } from "./errors.ts";
import { SseParser } from "./sse.ts";

export type FetchFn = (input: string, init?: RequestInit) => Promise<Response>;

/** Returns the X-Waygate-* headers for one request (core/control/auth.ts signAgentRequest). */
export type AgentSigner = (method: string, pathWithQuery: string, body: string) => Record<string, string>;

/** An AgentSigner over core/control/auth.ts: the agent's private key never leaves this closure. */
export function makeAgentSigner(keys: { privateKey: string; serverPublicKey: string }, deps: { crypto: Crypto; random: RandomSource; now: () => number }): AgentSigner {
  return (method, pathWithQuery, body) =>
    signAgentRequest({ privateKey: keys.privateKey, serverPublicKey: keys.serverPublicKey, method, pathWithQuery, body, now: deps.now, random: deps.random, crypto: deps.crypto });
}

export const NetMapEnvelopeSchema = v.object({
  revision: v.pipe(v.number(), v.integer(), v.minValue(0)),
  netmap: NetMapSchema,
});
export type NetMapUpdate = NetMapEnvelope<NetMap>;

export interface ControlClientOptions {
  serverUrl: string;
  fetch: FetchFn;
  logger: Logger;
  /** Needed for everything but info(). */
  signer?: AgentSigner;
  /** Per-request timeout for the non-streaming calls (default 10 s). */
  timeoutMs?: number;
}

export type StreamItem =
  | { type: "netmap"; update: NetMapUpdate }
  | { type: "ping" }
  | { type: "malformed"; reason: string };

/** Trailing slashes off, so joining paths gives exactly one. */
export function normalizeServerUrl(url: string): string {
  return url.replace(/\/+$/, "");
}

export class ControlClient {
  readonly serverUrl: string;
  readonly #fetch: FetchFn;
  readonly #signer: AgentSigner | undefined;
  readonly #timeoutMs: number;
  readonly #log: Logger;

  constructor(options: ControlClientOptions) {
    this.serverUrl = normalizeServerUrl(options.serverUrl);
    this.#fetch = options.fetch;
    this.#signer = options.signer;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#log = options.logger;
  }

  async info(): Promise<InfoResponse> {
    const res = await this.#request("GET", PATHS.info, undefined, false);
    return this.#parse(res, PATHS.info, InfoResponseSchema);
  }

  async enrol(request: EnrolRequest): Promise<EnrolResponse> {
    const res = await this.#request("POST", PATHS.enrol, request, true);
    return this.#parse(res, PATHS.enrol, EnrolResponseSchema);
  }

  async netmap(): Promise<NetMapUpdate> {
    const res = await this.#request("GET", PATHS.netmap, undefined, true);
    return this.#parse(res, PATHS.netmap, NetMapEnvelopeSchema);
  }

  async report(report: AgentReport): Promise<void> {
    const res = await this.#request("POST", PATHS.report, report, true);
    await res.body?.cancel().catch(() => {});
  }

  /**
   * Opens the NetMap stream and yields its items until the server ends it, `signal` aborts, or
   * nothing (not even a ping) arrives for `idleTimeoutMs`. Throws ControlPlaneError when the
   * connection cannot be opened or breaks.
   */
  async *stream(options: { signal: AbortSignal; idleTimeoutMs: number; sleep: (ms: number, signal?: AbortSignal) => Promise<void> }): AsyncGenerator<StreamItem> {
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    options.signal.addEventListener("abort", onAbort, { once: true });
    const url = this.#url(PATHS.netmapStream);
    try {
      const res = await this.#request("GET", PATHS.netmapStream, undefined, true, controller.signal, { accept: "text/event-stream" }, false);
      if (res.body === null) throw new ControlPlaneError(url, res.status, "the event stream has no body");
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser();
      let pending: ReturnType<typeof reader.read> | undefined;
      try {
        for (;;) {
          pending ??= reader.read();
          const idle = new AbortController();
          const r = await Promise.race([
            pending,
            options.sleep(options.idleTimeoutMs, idle.signal).then(() => "idle" as const),
          ]).finally(() => idle.abort());
          if (r === "idle") {
            if (options.signal.aborted) return;
            throw new ControlPlaneError(url, res.status, `the event stream was silent for ${options.idleTimeoutMs} ms`);
          }
          pending = undefined;
          if (r.done) return;
          for (const event of parser.push(decoder.decode(r.value, { stream: true }))) yield streamItem(event.event, event.data);
        }
      } finally {
        controller.abort();
        reader.cancel().catch(() => {});
      }
    } catch (err) {
      if (options.signal.aborted) return;
      if (err instanceof ControlPlaneError) throw err;
      throw new ControlPlaneError(url, 0, `event stream broke: ${(err as Error).message ?? String(err)}`, undefined, { cause: err });
    } finally {
      options.signal.removeEventListener("abort", onAbort);
    }
  }

  #url(path: string): string {
    return `${this.serverUrl}${path}`;
  }

  async #request(
    method: string,
    path: string,
    body: unknown,
    auth: boolean,
    signal?: AbortSignal,
    extraHeaders: Record<string, string> = {},
    timeout = true,
  ): Promise<Response> {
    const url = this.#url(path);
    const bodyText = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept: "application/json", ...extraHeaders };
    if (bodyText !== undefined) headers["content-type"] = "application/json";
    if (auth) {
      if (this.#signer === undefined) throw new ControlPlaneError(url, 0, "agent request without an identity to sign it");
      Object.assign(headers, this.#signer(method, new URL(url).pathname, bodyText ?? ""));
    }
    const signals = [signal, timeout ? AbortSignal.timeout(this.#timeoutMs) : undefined].filter((s): s is AbortSignal => s !== undefined);
    let res: Response;
    try {
      res = await this.#fetch(url, {
        method,
        headers,
        body: bodyText,
        signal: signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals),
      });
    } catch (cause) {
      throw new ControlPlaneError(url, 0, `cannot reach the control plane: ${(cause as Error).message ?? String(cause)}`, undefined, { cause });
    }
    this.#log.debug(`control: request method=${method} path=${path} status=${res.status}`);
    if (!res.ok) {
      const text = await res.text().catch(() => "");
      let code: string | undefined;
      let message = text.slice(0, 300);
      try {
        const parsed = v.safeParse(ErrorBodySchema, JSON.parse(text));
        if (parsed.success) {
          code = parsed.output.error.code;
          message = `${parsed.output.error.message}${parsed.output.error.field ? ` (field ${parsed.output.error.field})` : ""}`;
        }
      } catch {
        // not JSON: keep the text
      }
      throw new ControlPlaneError(url, res.status, `${method} ${path} answered ${res.status}${code ? ` ${code}` : ""}: ${message}`, code);
    }
    return res;
  }

  async #parse<S extends v.GenericSchema>(res: Response, path: string, schema: S): Promise<v.InferOutput<S>> {
    const url = this.#url(path);
    let raw: unknown;
    try {
      raw = await res.json();
    } catch (cause) {
      throw new ControlPlaneError(url, res.status, "answer is not JSON", undefined, { cause });
    }
    const parsed = v.safeParse(schema, raw);
    if (!parsed.success) {
      const issue = parsed.issues[0];
      throw new ControlPlaneError(url, res.status, `answer does not match the protocol at ${v.getDotPath(issue) ?? "(top level)"}: ${issue.message}`);
    }
    return parsed.output;
  }
}

/** One SSE event -> a stream item; anything unexpected is "malformed", never a throw. */
export function streamItem(event: string, data: string): StreamItem {
  if (event === "ping") return { type: "ping" };
  if (event !== "netmap") return { type: "malformed", reason: `unknown event ${JSON.stringify(event.slice(0, 40))}` };
  let raw: unknown;
  try {
    raw = JSON.parse(data);
  } catch {
    return { type: "malformed", reason: "netmap event data is not JSON" };
  }
  const parsed = v.safeParse(NetMapEnvelopeSchema, raw);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    return { type: "malformed", reason: `netmap event invalid at ${v.getDotPath(issue) ?? "(top level)"}: ${issue.message}` };
  }
  return { type: "netmap", update: parsed.output };
}

export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
  factor: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 30_000, factor: 2 };

/**
 * The wait before reconnect attempt `attempt` (0-based): the exponential step capped at maxMs,
 * then "equal jitter" — half fixed, half random — so a fleet that lost the server at the same
 * moment does not come back in lock-step, yet no agent ever retries at once.
 */
export function backoffDelay(attempt: number, random: () => number, options: BackoffOptions = DEFAULT_BACKOFF): number {
  const step = Math.min(options.maxMs, options.baseMs * options.factor ** Math.min(attempt, 60));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(step / 2 + (r * step) / 2);
}

export interface SyncState {
  connected: boolean;
  connects: number;
  disconnects: number;
  netmaps: number;
  pings: number;
  malformed: number;
  lastError: string | null;
  /** Wall-clock ms of the last byte-carrying event (netmap or ping). */
  lastEventAt: number | null;
  /** Where the NetMap applied last came from. */
  source: "server" | "disk" | null;
}

export interface SyncOptions {
  client: Pick<ControlClient, "stream">;
  logger: Logger;
  now: () => number;
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Uniform in [0, 1). */
  random: () => number;
  signal: AbortSignal;
  /** Applies one NetMap; a throw is logged and the stream goes on. */
  onNetMap(update: NetMapUpdate, source: "server" | "disk"): Promise<void>;
  /** The last NetMap saved on disk, if any. */
  loadCached(): NetMapUpdate | null;
  backoff?: BackoffOptions;
  /** Default 45 s: three missed 15 s pings. */
  idleTimeoutMs?: number;
  /** A live view of the counters (status output). */
  state?: SyncState;
}

export function newSyncState(): SyncState {
  return { connected: false, connects: 0, disconnects: 0, netmaps: 0, pings: 0, malformed: 0, lastError: null, lastEventAt: null, source: null };
}

/** Streams NetMaps until `signal` aborts; never throws for network trouble. */
export async function runNetMapSync(o: SyncOptions): Promise<void> {
  const state = o.state ?? newSyncState();
  const idleTimeoutMs = o.idleTimeoutMs ?? 45_000;
  let attempt = 0;
  let fromServer = false;
  let triedCache = false;
  while (!o.signal.aborted) {
    let deliveredThisConnection = false;
    try {
      for await (const item of o.client.stream({ signal: o.signal, idleTimeoutMs, sleep: o.sleep })) {
        if (!state.connected) {
          state.connected = true;
          state.connects++;
          o.logger.info(`control: connected attempt=${attempt}`);
        }
        state.lastEventAt = o.now();
        if (item.type === "ping") {
          state.pings++;
          o.logger.debug("control: ping");
          continue;
        }
        if (item.type === "malformed") {
          state.malformed++;
          o.logger.warn(`control: event=ignored reason=${JSON.stringify(item.reason)} malformed_total=${state.malformed}`);
          continue;
        }
        state.netmaps++;
        deliveredThisConnection = true;
        fromServer = true;
        attempt = 0;
        state.source = "server";
        try {
          await o.onNetMap(item.update, "server");
        } catch (err) {
          o.logger.error(`agent: netmap=apply-failed revision=${item.update.revision} error=${JSON.stringify((err as Error).message ?? String(err))}`);
        }
      }
      if (o.signal.aborted) break;
      state.lastError = "stream ended by the server";
      o.logger.warn("control: stream ended reason=server-closed");
    } catch (err) {
      if (o.signal.aborted) break;
      state.lastError = (err as Error).message ?? String(err);
      o.logger.warn(`control: stream error=${JSON.stringify(state.lastError)}`);
    }
    if (state.connected) {
      state.connected = false;
      state.disconnects++;
    }
    if (!fromServer && !triedCache) {
      triedCache = true;
      const cached = o.loadCached();
      if (cached) {
        o.logger.info(`agent: netmap source=disk revision=${cached.revision} reason=control-plane-unreachable`);
        state.source = "disk";
        try {
          await o.onNetMap(cached, "disk");
        } catch (err) {
          o.logger.error(`agent: netmap=apply-failed source=disk error=${JSON.stringify((err as Error).message ?? String(err))}`);
        }
      } else {
        o.logger.info("agent: netmap source=none reason=control-plane-unreachable-and-nothing-saved");
      }
    }
    if (!deliveredThisConnection) attempt++;
    const delay = backoffDelay(Math.max(0, attempt - 1), o.random, o.backoff);
    o.logger.info(`control: reconnect in_ms=${delay} attempt=${attempt}`);
    await o.sleep(delay, o.signal).catch(() => {});
  }
  state.connected = false;
}

/** A sleep that resolves early (without throwing) when `signal` aborts. */
export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
