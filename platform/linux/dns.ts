/**
 * @module platform/linux/dns
 * The sockets around core/dns: a DNS server (UDP, plus TCP for clients retrying after TC) that
 * hands every message to a core handler (the stub or the gateway forwarder), an upstream
 * exchange (UDP with a random id, id and source matching and a timeout, TCP when the reply is
 * truncated), and the systemd-resolved registration of the stub.
 *
 * Bun.udpSocket/Bun.listen rather than the FFI sockets of platform/linux/udp.ts: DNS is not the
 * packet path, and these run on the main thread next to the agent's other slow work.
 *
 * A server never throws out of a callback: a handler error is logged and counted
 * (`counters["error:handler"]`), a datagram beyond `maxInFlight` is dropped and counted.
 *
 * systemd-resolved: present when /run/systemd/resolve exists and `resolvectl status` exits 0
 * (logged once as `dns: resolved=present|absent reason=...`). Then `resolvectl dns LINK SERVER`
 * and `resolvectl domain LINK ~zone...` register the stub per link and `resolvectl revert LINK`
 * removes it; otherwise the manual step is logged once and nothing is changed.
 */
import { existsSync } from "node:fs";
import type { Socket, TCPSocketListener } from "bun";
import { WaygateError } from "../../core/errors.ts";
import type { Logger } from "../../core/log.ts";
import type { CommandRunner } from "../../core/runner.ts";
import { decodeHeader } from "../../core/dns/codec.ts";
import type { DnsCounters, QueryFrom } from "../../core/dns/handler.ts";

export type DnsMessageHandler = (query: Uint8Array, from: QueryFrom) => Promise<Uint8Array | null>;

export interface ListenAddress {
  address: string;
  /** Default 53; 0 picks a free port (see `bound`). */
  port?: number;
}

export interface DnsServerOptions {
  listen: readonly ListenAddress[];
  handler: DnsMessageHandler;
  logger: Logger;
  /** Also accept TCP (length-prefixed, RFC 1035 section 4.2.2). Default true. */
  tcp?: boolean;
  /** Queries being handled at once, per server; more are dropped and counted. Default 256. */
  maxInFlight?: number;
}

export interface DnsServer {
  /** The addresses actually bound (ports resolved when 0 was asked for). */
  readonly bound: readonly { address: string; port: number }[];
  readonly counters: DnsCounters;
  close(): void;
}

export class DnsSocketError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_PLATFORM", message, options);
  }
}

function count(counters: DnsCounters, key: string): void {
  counters[key] = (counters[key] ?? 0) + 1;
}

interface TcpState {
  buf: Uint8Array;
  pending: Uint8Array[];
  remote: string;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return new Uint8Array(b);
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function frame(msg: Uint8Array): Uint8Array {
  const out = new Uint8Array(msg.length + 2);
  out[0] = msg.length >>> 8;
  out[1] = msg.length & 0xff;
  out.set(msg, 2);
  return out;
}

function flushTcp(s: Socket<TcpState>): void {
  while (s.data.pending.length > 0) {
    const chunk = s.data.pending[0]!;
    const n = s.write(chunk);
    if (n < 0) return;
    if (n < chunk.length) {
      s.data.pending[0] = chunk.subarray(n);
      return;
    }
    s.data.pending.shift();
  }
}

export async function startDnsServer(options: DnsServerOptions): Promise<DnsServer> {
  const { handler, logger } = options;
  const maxInFlight = options.maxInFlight ?? 256;
  const counters: DnsCounters = {};
  const udp: { close(): void }[] = [];
  const tcp: TCPSocketListener<TcpState>[] = [];
  const bound: { address: string; port: number }[] = [];
  let inFlight = 0;

  const run = async (query: Uint8Array, from: QueryFrom): Promise<Uint8Array | null> => {
    if (inFlight >= maxInFlight) {
      count(counters, "drop:in-flight");
      return null;
    }
    inFlight++;
    try {
      return await handler(query, from);
    } catch (err) {
      count(counters, "error:handler");
      logger.warn(`dns: handler failed from=${from.address} error=${(err as Error).message}`);
      return null;
    } finally {
      inFlight--;
    }
  };

  const closeAll = () => {
    for (const s of udp) s.close();
    for (const l of tcp) l.stop(true);
  };

  try {
    for (const l of options.listen) {
      const sock = await Bun.udpSocket({
        hostname: l.address,
        port: l.port ?? 53,
        socket: {
          data(socket, buf, port, address) {
            count(counters, "udp:in");
            const query = new Uint8Array(buf);
            void run(query, { address, port, transport: "udp" }).then((res) => {
              if (res === null || socket.closed) return;
              try {
                socket.send(res, port, address);
                count(counters, "udp:out");
              } catch (err) {
                count(counters, "udp:error");
                logger.debug(`dns: send failed to=${address}:${port} error=${(err as Error).message}`);
              }
            });
          },
          // An ICMP error for an earlier reply (the client's socket is gone) surfaces here, e.g.
          // ECONNREFUSED from the error queue: count it; without a handler Bun reports it uncaught.
          error(...args: unknown[]) {
            count(counters, "udp:error");
            logger.debug(`dns: udp socket error=${socketErrorText(args)}`);
          },
        },
      });
      udp.push(sock);
      bound.push({ address: l.address, port: sock.port });
      if (options.tcp ?? true) {
        const listener = Bun.listen<TcpState>({
          hostname: l.address,
          port: sock.port,
          socket: {
            open(s) {
              s.data = { buf: new Uint8Array(0), pending: [], remote: s.remoteAddress };
            },
            data(s, chunk) {
              s.data.buf = concat(s.data.buf, chunk);
              for (;;) {
                const b = s.data.buf;
                if (b.length < 2) return;
                const len = (b[0]! << 8) | b[1]!;
                if (b.length < 2 + len) return;
                const query = b.slice(2, 2 + len);
                s.data.buf = b.slice(2 + len);
                count(counters, "tcp:in");
                void run(query, { address: s.data.remote, transport: "tcp" }).then((res) => {
                  if (res === null) return;
                  s.data.pending.push(frame(res));
                  flushTcp(s);
                });
              }
            },
            drain(s) {
              flushTcp(s);
            },
            error(_s, err) {
              count(counters, "tcp:error");
              logger.debug(`dns: tcp error=${err.message}`);
            },
          },
        });
        tcp.push(listener);
      }
      logger.info(`dns: listening address=${l.address} port=${sock.port} tcp=${options.tcp ?? true}`);
    }
  } catch (err) {
    closeAll();
    throw new DnsSocketError(`cannot listen for DNS on ${options.listen.map((l) => `${l.address}:${l.port ?? 53}`).join(", ")}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return { bound, counters, close: closeAll };
}

// ---------------------------------------------------------------------------------------------
// Upstream exchange

export interface UpstreamAddress {
  address: string;
  port: number;
}

/** "10.0.0.53", "10.0.0.53:5353", "::1", "[::1]:5353". */
export function parseUpstream(text: string): UpstreamAddress {
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracket) return { address: bracket[1]!, port: bracket[2] ? Number(bracket[2]) : 53 };
  const colons = text.split(":").length - 1;
  if (colons === 1) {
    const [address, port] = text.split(":");
    return { address: address!, port: Number(port) };
  }
  return { address: text, port: 53 };
}

export interface ExchangeOptions {
  /** Per attempt (UDP, then TCP when truncated). Default 2000 ms. */
  timeoutMs?: number;
  /** Retry over TCP when the UDP reply has TC set. Default true. */
  tcpFallback?: boolean;
  logger?: Logger;
}

export type Exchange = (query: Uint8Array, upstream: string) => Promise<Uint8Array>;

function randomId(): number {
  const b = new Uint16Array(1);
  crypto.getRandomValues(b);
  return b[0]!;
}

function withId(msg: Uint8Array, id: number): Uint8Array {
  const out = new Uint8Array(msg);
  out[0] = id >>> 8;
  out[1] = id & 0xff;
  return out;
}

function udpExchange(query: Uint8Array, up: UpstreamAddress, timeoutMs: number): Promise<Uint8Array> {
  const id = randomId();
  const wire = withId(query, id);
  return new Promise<Uint8Array>((resolve, reject) => {
    let done = false;
    let sock: { close(): void; send(d: Uint8Array, port: number, address: string): boolean } | undefined;
    const finish = (err: Error | null, value?: Uint8Array) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock?.close();
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(() => finish(new DnsSocketError(`no DNS reply from ${up.address}:${up.port} within ${timeoutMs} ms`)), timeoutMs);
    Bun.udpSocket({
      hostname: up.address.includes(":") ? "::" : "0.0.0.0",
      socket: {
        data(_s, buf, port, address) {
          // Only the server we asked, only our id: anything else is someone else's (or spoofed).
          // The question is checked by core (stub/forwarder), which decodes the reply anyway.
          if (port !== up.port || address.replace(/^::ffff:/, "") !== up.address.replace(/^::ffff:/, "")) return;
          const reply = new Uint8Array(buf);
          const h = decodeHeader(reply);
          if (h === null || h.id !== id || !h.qr) return;
          finish(null, reply);
        },
        // ICMP port unreachable from the upstream arrives as ECONNREFUSED: fail now, so the
        // caller moves on to the next upstream instead of waiting for the timeout.
        error(...args: unknown[]) {
          finish(new DnsSocketError(`DNS upstream ${up.address}:${up.port} failed: ${socketErrorText(args)}`, { cause: args.find((a) => a instanceof Error) }));
        },
      },
    }).then(
      (s) => {
        sock = s;
        if (done) {
          s.close();
          return;
        }
        s.send(wire, up.port, up.address);
      },
      (err) => finish(new DnsSocketError(`cannot open a UDP socket for DNS: ${(err as Error).message}`, { cause: err })),
    );
  });
}

/** Bun's UDP `error` handler has had both (socket, err) and (err) shapes: find the error either way. */
function socketErrorText(args: readonly unknown[]): string {
  const err = args.find((a): a is Error => a instanceof Error);
  return err ? `${(err as NodeJS.ErrnoException).code ?? ""} ${err.message}`.trim() : "unknown socket error";
}

function tcpExchange(query: Uint8Array, up: UpstreamAddress, timeoutMs: number): Promise<Uint8Array> {
  const id = randomId();
  const wire = withId(query, id);
  return new Promise<Uint8Array>((resolve, reject) => {
    let done = false;
    let buf: Uint8Array = new Uint8Array(0);
    let socket: Socket<undefined> | undefined;
    const finish = (err: Error | null, value?: Uint8Array) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket?.end();
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(() => finish(new DnsSocketError(`no DNS reply over TCP from ${up.address}:${up.port} within ${timeoutMs} ms`)), timeoutMs);
    Bun.connect({
      hostname: up.address,
      port: up.port,
      socket: {
        open(s) {
          socket = s;
          s.write(frame(wire));
        },
        data(_s, chunk) {
          buf = concat(buf, chunk);
          if (buf.length < 2) return;
          const len = (buf[0]! << 8) | buf[1]!;
          if (buf.length < 2 + len) return;
          const reply = buf.slice(2, 2 + len);
          const h = decodeHeader(reply);
          if (h === null || h.id !== id) return finish(new DnsSocketError(`DNS reply over TCP from ${up.address} has the wrong id`));
          finish(null, reply);
        },
        close() {
          finish(new DnsSocketError(`DNS TCP connection to ${up.address}:${up.port} closed before a reply`));
        },
        error(_s, err) {
          finish(new DnsSocketError(`DNS over TCP to ${up.address}:${up.port}: ${err.message}`, { cause: err }));
        },
        connectError(_s, err) {
          finish(new DnsSocketError(`DNS over TCP to ${up.address}:${up.port}: ${err.message}`, { cause: err }));
        },
      },
    }).catch((err: unknown) => finish(new DnsSocketError(`DNS over TCP to ${up.address}:${up.port}: ${(err as Error).message}`, { cause: err })));
  });
}

/**
 * An upstream exchange for the forwarder (and for the stub's forward to a gateway): a fresh UDP
 * socket per query with a random id (restored to the caller's id in the reply), replies only
 * from the asked server with that id, TCP when the reply is truncated.
 */
export function createExchange(options: ExchangeOptions = {}): Exchange {
  const timeoutMs = options.timeoutMs ?? 2000;
  return async (query, upstream) => {
    const up = parseUpstream(upstream);
    const h = decodeHeader(query);
    if (h === null) throw new DnsSocketError("refusing to send a DNS query shorter than its header");
    let reply = await udpExchange(query, up, timeoutMs);
    if ((options.tcpFallback ?? true) && (reply[2]! & 0x02) !== 0) {
      options.logger?.debug(`dns: upstream=${upstream} truncated, retrying over tcp`);
      reply = await tcpExchange(query, up, timeoutMs);
    }
    return withId(reply, h.id);
  };
}

/** One query over TCP (for tests and clients that start with TCP). */
export async function tcpQuery(query: Uint8Array, upstream: string, timeoutMs = 2000): Promise<Uint8Array> {
  const h = decodeHeader(query);
  if (h === null) throw new DnsSocketError("refusing to send a DNS query shorter than its header");
  return withId(await tcpExchange(query, parseUpstream(upstream), timeoutMs), h.id);
}

// ---------------------------------------------------------------------------------------------
// systemd-resolved

export interface ResolvedDeps {
  runner: CommandRunner;
  logger: Logger;
  /** fs.existsSync by default; tests inject a fake. */
  exists?: (path: string) => boolean;
}

export interface RegisterOptions extends ResolvedDeps {
  /** The interface the stub's address lives on (the Waygate TUN). */
  link: string;
  /** The stub's address on that link. */
  dnsServer: string;
  /** Routing domains, "~waygate", "~corp.net"; "~." makes it the default resolver. */
  domains: readonly string[];
}

export type Registration = { mode: "resolved"; link: string } | { mode: "manual"; link: string };

const RESOLVED_DIR = "/run/systemd/resolve";
const decided = new WeakMap<Logger, boolean>();
const manualLogged = new WeakSet<Logger>();

/** Whether systemd-resolved runs here; the decision is logged once per logger. */
export async function resolvedPresent(deps: ResolvedDeps): Promise<boolean> {
  const cached = decided.get(deps.logger);
  if (cached !== undefined) return cached;
  const exists = deps.exists ?? existsSync;
  let present = false;
  let reason: string;
  if (!exists(RESOLVED_DIR)) {
    reason = `no-${RESOLVED_DIR}`;
  } else {
    const status = await deps.runner.run(["resolvectl", "status"], { allowFailure: true }).catch((err: Error) => ({ exitCode: -1, stdout: "", stderr: err.message }));
    present = status.exitCode === 0;
    reason = present ? "resolvectl-status-ok" : `resolvectl-status-exit-${status.exitCode}`;
  }
  deps.logger.info(`dns: resolved=${present ? "present" : "absent"} reason=${reason}`);
  decided.set(deps.logger, present);
  return present;
}

export async function registerWithResolved(options: RegisterOptions): Promise<Registration> {
  if (!(await resolvedPresent(options))) {
    if (!manualLogged.has(options.logger)) {
      manualLogged.add(options.logger);
      options.logger.warn(
        `dns: register=manual link=${options.link} server=${options.dnsServer} domains=${options.domains.join(",")} ` +
          `hint="systemd-resolved is not running: point your resolver at ${options.dnsServer} for ${options.domains.map((d) => d.replace(/^~/, "")).join(", ")} ` +
          `(e.g. dnsmasq server=/zone/${options.dnsServer}), or put 'nameserver ${options.dnsServer}' first in /etc/resolv.conf"`,
      );
    }
    return { mode: "manual", link: options.link };
  }
  await options.runner.run(["resolvectl", "dns", options.link, options.dnsServer]);
  await options.runner.run(["resolvectl", "domain", options.link, ...options.domains]);
  options.logger.info(`dns: register=resolved link=${options.link} server=${options.dnsServer} domains=${options.domains.join(",")}`);
  return { mode: "resolved", link: options.link };
}

/** Removes what registerWithResolved set (also after a crash: call it at start). */
export async function unregister(options: ResolvedDeps & { link: string }): Promise<void> {
  if (!(await resolvedPresent(options))) return;
  const r = await options.runner.run(["resolvectl", "revert", options.link], { allowFailure: true });
  if (r.exitCode !== 0) options.logger.debug(`dns: unregister link=${options.link} result=failed exit=${r.exitCode} stderr=${r.stderr.trim()}`);
  else options.logger.info(`dns: unregister link=${options.link} result=reverted`);
}
