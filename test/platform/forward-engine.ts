/**
 * @module test/platform/forward-engine
 * A trivial engine for testing platform/linux/host.ts before the real Device exists: every TUN
 * packet goes unencrypted as one datagram to `config.peer`, every datagram received is written
 * to the TUN as it is. `control({ type: "config", peer })` changes the peer; `stats()` counts.
 */
import type { Endpoint } from "../../core/dataplane/ports.ts";
import type { EngineDeps, EngineFactory, HostedEngine } from "../../platform/linux/host.ts";

export interface ForwardConfig {
  peer: Endpoint;
}

const createEngine: EngineFactory = (config: ForwardConfig, deps: EngineDeps): HostedEngine => {
  let peer: Endpoint = { address: config.peer.address, port: config.peer.port };
  const counts = { fromTun: 0, fromUdp: 0, ticks: 0, controls: 0 };
  return {
    handleTunPacket(packet: Uint8Array): void {
      counts.fromTun++;
      deps.bind.sendDatagram(packet, peer);
    },
    handleDatagram(data: Uint8Array): void {
      counts.fromUdp++;
      deps.tun.writePacket(data);
    },
    tick(): number {
      counts.ticks++;
      return 250;
    },
    control(message: unknown): void {
      counts.controls++;
      const m = message as { type?: string; peer?: Endpoint };
      if (m.type === "config" && m.peer) peer = { address: m.peer.address, port: m.peer.port };
    },
    stats: () => ({ ...counts, peer }),
  };
};

export default createEngine;
