/**
 * @module platform/linux/device-engine
 * The production EngineFactory (default export) that platform/linux/host.ts imports inside its
 * Worker: one core/dataplane Device with the crypto platform/crypto/select.ts picks (OpenSSL's
 * AEAD through FFI, @noble when forced or missing), the wall clock the host passes (TAI64N
 * handshake timestamps need wall time), the OS CSPRNG, and a logger tagged `engine` that the
 * host forwards to the main thread.
 *
 * Control messages (one postMessage each, never per packet):
 *   { type: "setPeers", peers: PeerConfig[] }   the complete peer list (Device.setPeers, idempotent)
 *   { type: "config", peers }                   the same, under the name the test engine used
 *   { type: "setGateway", gateway }             Device.setGateway: a GatewayConfig makes this device
 *                                               a gateway enforcing it, null turns that off (the agent's
 *                                               gateway role, platform/linux/agent-gateway.ts)
 * `stats()` returns the DeviceStats plus the crypto name; the host adds its own counters.
 *
 * `timers` shortens WireGuard's constants (e2e rekey tests: `waygate up` reads the
 * WAYGATE_TEST_TIMERS environment variable and passes it here; the engine reads no environment).
 * A compiled binary carries this file as an extra `bun build --compile` entry point
 * (scripts/build.ts); `deviceEngineModule()` in platform/linux/wg-quick.ts names it.
 */
import { randomFillSync } from "node:crypto";
import { Device, type DeviceStats, type PeerConfig } from "../../core/dataplane/device.ts";
import type { GatewayConfig } from "../../core/dataplane/gateway.ts";
import type { Logger } from "../../core/log.ts";
import type { TimerConfig } from "../../core/wire/timers.ts";
import { selectCrypto } from "../crypto/select.ts";
import type { EngineDeps, EngineFactory, HostedEngine } from "./host.ts";

export interface DeviceEngineConfig {
  /** Base64, as `wg genkey` prints it. */
  privateKey: string;
  peers: PeerConfig[];
  /** Tunnel MTU (padding); default 1420. */
  mtu?: number;
  /** Use @noble even where libcrypto loads (`waygate up --noble`, benches). */
  forceNoble?: boolean;
  /** Overrides of WireGuard's timer constants (tests only). */
  timers?: Partial<TimerConfig>;
  /** Handshake messages per second above which cookies are demanded (default 128). */
  underLoadHandshakesPerSecond?: number;
}

export type DeviceEngineControl =
  | { type: "setPeers"; peers: PeerConfig[] }
  | { type: "config"; peers: PeerConfig[] }
  | { type: "setGateway"; gateway: GatewayConfig | null };

export interface DeviceEngineStats extends DeviceStats {
  crypto: string;
}

/** Prefixes every line with `engine:`-style tags unless the line already names its stage. */
function tagged(logger: Logger, tag: string): Logger {
  const t = (m: string) => (m.startsWith(`${tag}:`) || /^[a-z]+: /.test(m) ? m : `${tag}: ${m}`);
  return {
    debug: (m, ...a) => logger.debug(t(m), ...a),
    info: (m, ...a) => logger.info(t(m), ...a),
    warn: (m, ...a) => logger.warn(t(m), ...a),
    error: (m, ...a) => logger.error(t(m), ...a),
  };
}

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  randomFillSync(out);
  return out;
}

const createDeviceEngine: EngineFactory = (config: DeviceEngineConfig, deps: EngineDeps): HostedEngine => {
  const logger = tagged(deps.logger, "engine");
  const crypto = selectCrypto({ forceNoble: config.forceNoble === true, logger });
  const device = new Device({
    privateKey: config.privateKey,
    crypto,
    now: deps.now,
    random,
    logger,
    tun: deps.tun,
    bind: deps.bind,
    timers: config.timers,
    mtu: config.mtu,
    underLoadHandshakesPerSecond: config.underLoadHandshakesPerSecond,
  });
  if (config.timers && Object.keys(config.timers).length > 0) {
    logger.warn(`engine: timers=override values=${JSON.stringify(config.timers)} (tests only)`);
  }
  device.setPeers(config.peers);
  return {
    handleTunPacket: (packet) => device.handleTunPacket(packet),
    handleDatagram: (data, from) => device.handleDatagram(data, from),
    tick: () => device.tick(),
    control(message: unknown): void {
      const m = message as Partial<DeviceEngineControl> | null;
      if (m && (m.type === "setPeers" || m.type === "config") && Array.isArray(m.peers)) {
        device.setPeers(m.peers);
        logger.info(`engine: peers set count=${m.peers.length}`);
        return;
      }
      if (m && m.type === "setGateway" && (m.gateway === null || typeof m.gateway === "object")) {
        device.setGateway(m.gateway ?? null);
        return;
      }
      logger.warn(`engine: unknown control message ${JSON.stringify(message)?.slice(0, 200)}`);
    },
    stats: (): DeviceEngineStats => ({ ...device.stats(), crypto: crypto.name }),
  };
};

export default createDeviceEngine;
