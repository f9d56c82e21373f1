/**
 * @module core/wire/transport
 * Transport data messages (whitepaper §5.4.6): type 4, receiver index, a 64-bit little-endian
 * counter that is also the AEAD nonce (4 zero bytes ‖ counter), then the packet zero-padded to a
 * multiple of 16 (capped at the MTU) and sealed. A Keypair is one session's keys and counters;
 * a TransportCodec owns the scratch nonce so sealing and opening allocate nothing.
 */
import { KEEPALIVE_SIZE, MESSAGE_TRANSPORT, PADDING_MULTIPLE, TAG_SIZE, TRANSPORT_HEADER_SIZE } from "./constants.ts";
import type { Aead } from "./crypto.ts";
import { ReplayFilter } from "./replay.ts";

const TWO32 = 2 ** 32;

/** One session's keys (wireguard-go's Keypair). */
export class Keypair {
  /** The next counter to send. */
  sendCounter = 0;
  readonly replay = new ReplayFilter();
  constructor(
    readonly sendKey: Uint8Array,
    readonly recvKey: Uint8Array,
    readonly isInitiator: boolean,
    readonly createdMs: number,
    readonly localIndex: number,
    readonly remoteIndex: number,
  ) {}

  zero(): void {
    this.sendKey.fill(0);
    this.recvKey.fill(0);
  }
}

/** Bytes of zero padding after a packet of `size` bytes, for a tunnel MTU (wireguard-go's rule). */
export function paddingSize(size: number, mtu: number): number {
  let last = size;
  if (mtu === 0) return ((last + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1)) - last;
  if (last > mtu) last %= mtu;
  let padded = (last + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1);
  if (padded > mtu) padded = mtu;
  return padded - last;
}

/** The size of the transport message carrying a packet of `size` bytes. */
export function sealedSize(size: number, mtu: number): number {
  return TRANSPORT_HEADER_SIZE + size + paddingSize(size, mtu) + TAG_SIZE;
}

export class TransportCodec {
  private readonly nonce = new Uint8Array(12);

  constructor(private readonly aead: Aead) {}

  /**
   * Seals `packet[0, len)` for `keypair` into `out` (which must hold sealedSize(len, mtu) bytes),
   * using and advancing the keypair's send counter. Returns the message length.
   */
  seal(keypair: Keypair, packet: Uint8Array, len: number, out: Uint8Array, mtu: number): number {
    const counter = keypair.sendCounter++;
    const lo = counter >>> 0;
    const hi = Math.floor(counter / TWO32) >>> 0;
    out[0] = MESSAGE_TRANSPORT;
    out[1] = 0;
    out[2] = 0;
    out[3] = 0;
    writeU32(out, 4, keypair.remoteIndex);
    writeU32(out, 8, lo);
    writeU32(out, 12, hi);
    const nonce = this.nonce;
    nonce[0] = nonce[1] = nonce[2] = nonce[3] = 0;
    for (let i = 0; i < 8; i++) nonce[4 + i] = out[8 + i]!;
    const pad = paddingSize(len, mtu);
    if (len > 0) out.set(len === packet.length ? packet : packet.subarray(0, len), TRANSPORT_HEADER_SIZE);
    out.fill(0, TRANSPORT_HEADER_SIZE + len, TRANSPORT_HEADER_SIZE + len + pad);
    const plainLen = len + pad;
    this.aead.seal(keypair.sendKey, nonce, null, out, TRANSPORT_HEADER_SIZE, plainLen, out, TRANSPORT_HEADER_SIZE);
    return TRANSPORT_HEADER_SIZE + plainLen + TAG_SIZE;
  }

  /**
   * Opens a transport message into `out` at offset 0; returns the plaintext length (padding
   * included), or -1 when it does not authenticate. The replay filter is not consulted: callers
   * check `keypair.replay.check(counterHi(data), counterLo(data))` after this succeeds.
   */
  open(keypair: Keypair, data: Uint8Array, out: Uint8Array): number {
    if (data.length < KEEPALIVE_SIZE) return -1;
    const nonce = this.nonce;
    nonce[0] = nonce[1] = nonce[2] = nonce[3] = 0;
    for (let i = 0; i < 8; i++) nonce[4 + i] = data[8 + i]!;
    const len = data.length - TRANSPORT_HEADER_SIZE;
    if (!this.aead.open(keypair.recvKey, nonce, null, data, TRANSPORT_HEADER_SIZE, len, out, 0)) return -1;
    return len - TAG_SIZE;
  }
}

export function readU32(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

export function writeU32(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = (v >>> 16) & 0xff;
  b[off + 3] = (v >>> 24) & 0xff;
}

/** Low and high 32-bit halves of a transport message's counter. */
export function counterLo(data: Uint8Array): number {
  return readU32(data, 8);
}
export function counterHi(data: Uint8Array): number {
  return readU32(data, 12);
}
