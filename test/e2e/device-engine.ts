/**
 * @module test/e2e/device-engine
 * Engine factory for the host (platform/linux/host.ts) that runs the real Device
 * (core/dataplane/device.ts) with the @noble reference crypto: what the Waygate ↔ wireguard-go
 * e2e runs. The production factory (native AEAD, agent-driven config) will replace it.
 */
import { randomBytes } from "node:crypto";
import { Device, type PeerConfig } from "../../core/dataplane/device.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import type { EngineDeps, EngineFactory, HostedEngine } from "../../platform/linux/host.ts";

export interface DeviceEngineConfig {
  privateKey: string;
  peers: PeerConfig[];
}

const createEngine: EngineFactory = (config: DeviceEngineConfig, deps: EngineDeps): HostedEngine => {
  const device = new Device({
    privateKey: config.privateKey,
    crypto: nobleCrypto(),
    now: deps.now,
    random: (n) => new Uint8Array(randomBytes(n)),
    logger: deps.logger,
    tun: deps.tun,
    bind: deps.bind,
  });
  device.setPeers(config.peers);
  return {
    handleTunPacket: (packet) => device.handleTunPacket(packet),
    handleDatagram: (data, from) => device.handleDatagram(data, from),
    tick: () => device.tick(),
    control(message) {
      const m = message as { type?: string; peers?: PeerConfig[] };
      if (m.type === "config" && m.peers) device.setPeers(m.peers);
    },
    stats: () => device.stats(),
  };
};

export default createEngine;
