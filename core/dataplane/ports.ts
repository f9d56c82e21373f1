/**
 * @module core/dataplane/ports
 * The two small interfaces the data plane talks to, and the engine contract a platform host
 * drives. A host (platform/linux, or the in-memory pair in tests) owns the threads and
 * syscalls; the engine is synchronous, per-packet and never blocks.
 */

/** A UDP endpoint. `address` is canonical text (IPv4 dotted quad or compressed IPv6). */
export interface Endpoint {
  address: string;
  port: number;
}

/** Where the engine writes decrypted IP packets (the TUN side). */
export interface TunWriter {
  writePacket(packet: Uint8Array): void;
}

/** Where the engine sends datagrams (the UDP side). `flush` ends a batch (sendmmsg). */
export interface BindWriter {
  sendDatagram(data: Uint8Array, to: Endpoint): void;
  flush?(): void;
}

/**
 * What a host drives. The host reads packets from the TUN and datagrams from UDP, hands each to
 * the engine, and calls `tick` no later than the number of milliseconds the previous call
 * returned. The engine may keep references to neither buffer after returning.
 */
export interface PacketEngine {
  handleTunPacket(packet: Uint8Array): void;
  handleDatagram(data: Uint8Array, from: Endpoint): void;
  /** Runs due timers (handshake retries, keepalives, rekeys); returns ms until the next one. */
  tick(): number;
}
