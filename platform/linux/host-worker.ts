/**
 * @module platform/linux/host-worker
 * The packet loop of platform/linux/host.ts, run in a Bun Worker. One thread, one
 * synchronous loop, no event-loop work per packet:
 *
 *   1. poll([tun, udp, wake], until the engine's next tick, at most 1 s)
 *   2. tun readable  → read up to batchSize frames (fd is non-blocking); with offloads each is a
 *                      vnet header + maybe a 64 KB TCP super-packet, split into IP packets
 *                      (offload.ts splitFrame) → engine.handleTunPacket each → bind flush (one
 *                      sendmmsg for what the engine sent; with UDP GSO, one message per run of
 *                      equal-size datagrams to one endpoint)
 *   3. udp readable  → one recvmmsg (up to batchSize; with UDP GRO a message may hold many
 *                      datagrams, split by its segment size) → engine.handleDatagram each (its
 *                      TUN writes are collected; with offloads consecutive TCP segments of a flow
 *                      are coalesced into one GSO write: offload.ts TcpCoalescer) → TUN flush →
 *                      bind flush (handshake replies)
 *   4. wake readable → drain the eventfd, take control messages with receiveMessageOnPort
 *                      (the loop never yields to the event loop, so messages are pulled)
 *   5. tick due      → engine.tick() → next deadline; flush
 *
 * The engine is built here, from `engineModule`'s default export and a structured-clone
 * config, so the main thread never touches a packet.
 */
import { receiveMessageOnPort } from "node:worker_threads";
import type { Endpoint } from "../../core/dataplane/ports.ts";
import type { Logger } from "../../core/log.ts";
import type { EngineFactory, HostedEngine, HostStats, WorkerInit, WorkerReply, WorkerRequest } from "./host.ts";
import { errnoName, ffiBuffer, libc, POLLERR, POLLHUP, POLLIN, POLLNVAL } from "./libc.ts";
import { splitErrorName, splitFrame, TcpCoalescer, VNET_HDR_LEN } from "./offload.ts";
import { openTun, type Tun } from "./tun.ts";
import { Poller, UdpSocket } from "./udp.ts";

declare const self: Worker;

/** A whole super-packet (64 KB) plus its vnet header, rounded up. */
const TUN_BUFFER = 65536 + 64;
const MAX_POLL_MS = 1000;

function run(init: WorkerInit): void {
  const port = init.port;
  const reply = (m: WorkerReply) => port.postMessage(m);
  const logger: Logger = {
    debug: (message) => reply({ type: "log", level: "debug", message }),
    info: (message) => reply({ type: "log", level: "info", message }),
    warn: (message) => reply({ type: "log", level: "warn", message }),
    error: (message) => reply({ type: "log", level: "error", message }),
  };
  const now = () => performance.timeOrigin + performance.now();

  let tun: Tun | undefined;
  let udp: UdpSocket | undefined;
  let engine: HostedEngine | undefined;
  const counters = { tunRead: 0, tunWritten: 0, tunErrors: {} as Record<string, number>, engineErrors: 0, loops: 0, wakeups: 0 };
  const offload = { tunFrames: 0, tunWrites: 0, merged: 0, badChecksum: 0, splitErrors: {} as Record<string, number> };
  let offloadState = "off reason=disabled";
  let coalescer: TcpCoalescer | null = null;
  const countTunError = (code: number) => {
    const name = errnoName(code);
    counters.tunErrors[name] = (counters.tunErrors[name] ?? 0) + 1;
  };
  const engineError = (where: string, err: unknown) => {
    // Logged for the first few only: a broken engine would otherwise log per packet.
    if (++counters.engineErrors <= 5) logger.error(`host: engine_error stage=${where} error=${String(err)}`);
  };
  const stats = (): HostStats => ({
    host: {
      ...counters,
      tunErrors: { ...counters.tunErrors },
      udp: udp ? structuredClone(udp.counters) : null,
      offloads: offloadState,
      offload: {
        ...offload,
        merged: coalescer?.stats.merged ?? 0,
        badChecksum: coalescer?.stats.badChecksum ?? 0,
        splitErrors: { ...offload.splitErrors },
      },
    },
    engine: engine?.stats?.() ?? null,
  });

  (async () => {
    tun = openTun(init.tunName, { offloads: init.offloads });
    tun.setNonBlocking();
    offloadState = tun.vnetHdr ? "on" : `off reason=${init.offloads ? tun.offloadOff : "disabled"}`;
    udp = new UdpSocket({ port: init.listenPort, batchSize: init.batchSize, family: init.family, gso: init.offloads, gro: init.offloads });
    logger.info(`tun: offloads=${tun.vnetHdr ? "on reason=TUNSETOFFLOAD(CSUM|TSO4|TSO6)" : offloadState} udp_gso=${udp.counters.gso} udp_gro=${udp.counters.gro}`);
    const mod = (await import(init.engineModule)) as { default?: EngineFactory };
    if (typeof mod.default !== "function") throw new Error(`${init.engineModule} has no default-exported engine factory`);
    const t = tun;
    const u = udp;
    if (t.vnetHdr) {
      coalescer = new TcpCoalescer(
        (frame, packets) => {
          offload.tunWrites++;
          const n = t.write(frame);
          if (n >= 0) counters.tunWritten += packets;
          else countTunError(-n);
        },
        { slots: Math.max(init.batchSize, 64) },
      );
    }
    const c = coalescer;
    engine = await mod.default(init.engineConfig, {
      tun: {
        writePacket:
          c !== null
            ? (packet: Uint8Array): void => c.add(packet)
            : (packet: Uint8Array): void => {
                const n = t.write(packet);
                if (n >= 0) counters.tunWritten++;
                else countTunError(-n);
              },
      },
      bind: {
        sendDatagram: (data: Uint8Array, to: Endpoint) => u.queue(data, to),
        flush: () => void u.flush(),
      },
      now,
      logger,
    });
    logger.info(`host: tun=${tun.name} port=${udp.port} family=${udp.family} batch=${udp.batchSize} engine=${init.engineModule}`);
    reply({ type: "ready", tunName: tun.name, listenPort: udp.port });
    loop(tun, udp, engine);
  })()
    .catch((err: unknown) => {
      reply({ type: "error", message: err instanceof Error ? err.message : String(err), stack: err instanceof Error ? err.stack : undefined });
    })
    .finally(() => {
      const final = stats();
      try {
        engine?.close?.();
      } catch (err) {
        logger.error(`host: engine_close_error error=${String(err)}`);
      }
      udp?.close();
      tun?.close();
      reply({ type: "stopped", stats: final });
      port.close();
    });

  function loop(tun: Tun, udp: UdpSocket, engine: HostedEngine): void {
    const poller = new Poller([tun.fd, udp.fd, init.wakeFd]);
    const tunBuf = ffiBuffer(TUN_BUFFER);
    const segBuf = ffiBuffer(TUN_BUFFER);
    const vnet = tun.vnetHdr;
    const c = coalescer;
    /** Engine calls may write to the TUN: after each batch, write what they collected. */
    const flushTun = (): void => {
      if (c !== null) c.flush();
    };
    const toEngine = (packet: Uint8Array): void => {
      counters.tunRead++;
      try {
        engine.handleTunPacket(packet);
      } catch (err) {
        engineError("tun", err);
      }
    };
    const wakeBuf = ffiBuffer(8);
    const batch = udp.batchSize;
    let nextTick = 0;
    let lastMessageCheck = now();

    const drainTun = (): void => {
      for (let k = 0; k < batch; k++) {
        const n = tun.read(tunBuf);
        if (n === 0) break;
        if (n < 0) {
          countTunError(-n);
          break;
        }
        if (vnet) {
          offload.tunFrames++;
          const r = n < VNET_HDR_LEN ? -1 : splitFrame(tunBuf, n, segBuf, toEngine);
          if (r < 0) {
            const why = splitErrorName(r);
            offload.splitErrors[why] = (offload.splitErrors[why] ?? 0) + 1;
          }
        } else {
          toEngine(tunBuf.subarray(0, n));
        }
      }
      flushTun();
      udp.flush();
    };

    const drainUdp = (): void => {
      const got = udp.receive();
      for (let k = 0; k < got; k++) {
        const data = udp.datagram(k);
        if (data === null) continue;
        const from = udp.endpoint(k);
        const seg = udp.segmentSize(k);
        try {
          if (seg > 0 && seg < data.length) {
            // UDP GRO: several datagrams of one sender back to back.
            for (let off = 0; off < data.length; off += seg) engine.handleDatagram(data.subarray(off, Math.min(off + seg, data.length)), from);
          } else {
            engine.handleDatagram(data, from);
          }
        } catch (err) {
          engineError("udp", err);
        }
      }
      flushTun();
      udp.flush();
    };

    /** Control messages; false when told to stop. */
    const takeMessages = (woken: boolean): boolean => {
      if (woken) {
        counters.wakeups++;
        libc.read(init.wakeFd, wakeBuf, 8);
      }
      for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
        const msg = m.message as WorkerRequest;
        if (msg.type === "stop") return false;
        if (msg.type === "stats") {
          reply({ type: "stats", id: msg.id, stats: stats() });
        } else if (msg.type === "control") {
          try {
            engine.control?.(msg.message);
          } catch (err) {
            engineError("control", err);
          }
          flushTun();
          udp.flush();
        }
      }
      return true;
    };

    // One iteration per call, on purpose: with BUN_JSC_useOSREntryToDFG=false a long-running
    // loop body is never tiered up (no OSR entry), but a function called per iteration is.
    const step = (): boolean => {
      counters.loops++;
      let t = now();
      if (t >= nextTick) {
        let ms = 1000;
        try {
          ms = engine.tick();
        } catch (err) {
          engineError("tick", err);
        }
        flushTun();
        udp.flush();
        nextTick = t + Math.min(Math.max(ms, 0), 60_000);
      }
      const ready = poller.wait(Math.min(Math.max(Math.ceil(nextTick - t), 0), MAX_POLL_MS));
      const tunEv = poller.revents(0);
      if ((tunEv & (POLLERR | POLLHUP | POLLNVAL)) !== 0) throw new Error(`host: tun ${tun.name} failed (revents=0x${tunEv.toString(16)})`);
      if ((tunEv & POLLIN) !== 0) drainTun();
      if ((poller.revents(1) & POLLIN) !== 0) drainUdp();
      const woken = (poller.revents(2) & POLLIN) !== 0;
      if (woken || ready === 0) {
        lastMessageCheck = now();
        return takeMessages(woken);
      }
      // Belt and braces: a message whose wakeup was lost is still seen within MAX_POLL_MS.
      t = now();
      if (t - lastMessageCheck >= MAX_POLL_MS) {
        lastMessageCheck = t;
        return takeMessages(false);
      }
      return true;
    };

    while (step()) {
      // all work is in step()
    }
  }
}

self.onmessage = (event: MessageEvent) => {
  self.onmessage = null;
  run(event.data as WorkerInit);
};

