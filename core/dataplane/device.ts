/**
 * @module core/dataplane/device
 * The Device: one WireGuard interface's peers, sessions, cryptokey routing, timers and counters,
 * driven synchronously by a host through PacketEngine (core/dataplane/ports.ts). It never blocks,
 * never returns a Promise, keeps no reference to a buffer it is handed, and reuses two scratch
 * buffers on the data path. Handshakes run inline: they are rare and each costs a few X25519s.
 *
 * Packet flow (stage names are used in comments, logs and drop reasons below):
 *
 * Outbound, TUN -> UDP (handleTunPacket):
 *   O1 read      the host hands over one IP packet read from the TUN.
 *   O2 parse     version and destination from the header (packet.ts); malformed -> drop `malformed-tun-packet`.
 *   O3 route     destination -> peer by longest prefix over every peer's allowed IPs;
 *                no peer -> drop `no-peer-for-destination`.
 *   O4 flow      gateways only (setGateway): a packet whose source is not an overlay address came
 *                from a LAN and must answer a flow the overlay side opened (gateway.ts): its
 *                reversed tuple is a live flow, or it is an ICMP error quoting one; otherwise
 *                drop `gateway-unsolicited` (`gateway-fragment` for a later fragment of an unknown
 *                datagram, `flow-table-full` when the gateway's own flow cannot be recorded).
 *   O5 session   the peer's current keypair, if usable (younger than REJECT_AFTER_TIME, counter below
 *                the limit); otherwise the packet is staged (bounded, oldest dropped as `staged-overflow`)
 *                and a handshake initiation is sent (at most one per REKEY_TIMEOUT).
 *   O6 seal      pad to 16 (capped at the MTU), encrypt under the next counter, transport header.
 *   O7 send      to the peer's endpoint through the Bind; no endpoint -> drop `no-endpoint`.
 *   O8 timers    data sent / packet sent events; rekey when the session is old (initiator) or worn.
 *
 * Inbound, UDP -> TUN (handleDatagram):
 *   I1 receive   the host hands over one datagram and its source endpoint.
 *   I2 classify  message type and exact size -> `malformed-<type>` drops; nothing is ever sent back.
 *   I3 handshake initiation/response: mac1 (`mac1-invalid`); under load, mac2 or a cookie reply
 *                (`under-load`) and the per-source rate limiter (`rate-limited`); then the Noise
 *                message (`handshake-invalid`, `unknown-peer`, `stale-timestamp`, `handshake-flood`);
 *                an initiation is answered with a response, a response completes the session.
 *   I4 cookie    a cookie reply for one of our handshakes is stored for mac2 (`cookie-invalid`).
 *   I5 open      transport: receiver index -> keypair (`unknown-receiver`), age (`keypair-expired`),
 *                decrypt (`decrypt-failed`), then the replay window (`replayed`).
 *   I6 confirm   first packet on a responder's new keypair promotes it; the endpoint roams to the
 *                datagram's source; timers.
 *   I7 keepalive an empty packet ends here.
 *   I8 allow     the inner header must be whole (`malformed-ip`) and its source must route back to
 *                the sending peer (`source-not-allowed`): cryptokey routing's inbound half.
 *   I9 gateway   gateways only (setGateway): the access filter (filter.ts) for that sender: the
 *                source must be its own virtual address (`gateway-source-spoofed`), the destination
 *                not the gateway itself (`gateway-local-address`), and destination, protocol and
 *                port granted (`gateway-no-grant`; `gateway-fragment`, `malformed-ip`); an allowed
 *                packet into a LAN records or refreshes its flow (`flow-table-full`).
 *   I10 deliver  written to the TUN, trimmed to the header's length (padding removed).
 *
 * Gateway drops are counted per peer (with every other drop) and in stats().gateway.drops over
 * all peers. Without setGateway, O4 and I9 do nothing.
 *
 * Timers (tick): per peer, WireGuard's retransmit / keepalive / new-handshake / zero-keys /
 * persistent-keepalive deadlines (core/wire/timers.ts); tick returns ms until the next one. On a
 * gateway, tick also expires a slice of the flow table.
 */
import { WaygateError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type Prefix, parsePrefix } from "../net/address.ts";
import { PrefixTable } from "../net/prefix-table.ts";
import {
  COOKIE_REPLY_SIZE,
  INITIATION_SIZE,
  KEEPALIVE_SIZE,
  MAX_CONTENT_SIZE,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  RESPONSE_SIZE,
  TAG_SIZE,
  TRANSPORT_HEADER_SIZE,
} from "../wire/constants.ts";
import { CookieChecker, CookieGenerator, sourceBytes } from "../wire/cookie.ts";
import { type Crypto, type RandomSource, isZero } from "../wire/crypto.ts";
import { decodeKey, encodeKey } from "../wire/keys.ts";
import { type Handshake, Noise } from "../wire/noise.ts";
import { RateLimiter } from "../wire/ratelimiter.ts";
import {
  PeerTimers,
  TIMER_NEW_HANDSHAKE,
  TIMER_PERSISTENT_KEEPALIVE,
  TIMER_RETRANSMIT_HANDSHAKE,
  TIMER_SEND_KEEPALIVE,
  TIMER_ZERO_KEY_MATERIAL,
  type TimerConfig,
  maxTimerHandshakes,
  resolveTimers,
} from "../wire/timers.ts";
import { Keypair, TransportCodec, counterHi, counterLo, readU32 } from "../wire/transport.ts";
import {
  ipPacketLength,
  ipVersion,
  ipv4Destination,
  ipv4Source,
  ipv6Destination,
  ipv6Source,
} from "./packet.ts";
import { ALLOW, GatewayConfigError, type GatewayDropReason, type GatewaySender, MALFORMED_IP } from "./filter.ts";
import { Gateway, type GatewayConfig } from "./gateway.ts";
import type { BindWriter, Endpoint, PacketEngine, TunWriter } from "./ports.ts";

/** Every reason a packet or message is dropped: stable strings, the keys of `drops` in stats. */
export type DropReason =
  | "malformed-tun-packet"
  | "no-peer-for-destination"
  | "staged-overflow"
  | "handshake-timeout"
  | "no-endpoint"
  | "malformed-initiation"
  | "malformed-response"
  | "malformed-cookie-reply"
  | "malformed-transport"
  | "malformed-unknown-type"
  | "mac1-invalid"
  | "under-load"
  | "rate-limited"
  | "handshake-invalid"
  | "unknown-peer"
  | "stale-timestamp"
  | "handshake-flood"
  | "cookie-invalid"
  | "unknown-receiver"
  | "keypair-expired"
  | "decrypt-failed"
  | "replayed"
  | "malformed-ip"
  | "source-not-allowed"
  | GatewayDropReason
  | "internal-error";

export type DropCounts = Partial<Record<DropReason, number>>;

/** One peer as configured (`wg set` / a [Peer] section). Keys are base64 as wg prints them. */
export interface PeerConfig {
  publicKey: string;
  presharedKey?: string;
  /** Prefixes ("10.0.0.2/32", "fd00::/64"); a bare address means a host route. */
  allowedIps: string[];
  endpoint?: Endpoint;
  /** Seconds; 0 or absent disables. */
  persistentKeepalive?: number;
}

export interface DeviceOptions {
  /** Our static private key: 32 bytes, or base64 as `wg genkey` prints it. */
  privateKey: Uint8Array | string;
  crypto: Crypto;
  /** Wall-clock milliseconds since the Unix epoch (TAI64N timestamps need wall time). */
  now: () => number;
  random: RandomSource;
  logger: Logger;
  tun: TunWriter;
  bind: BindWriter;
  /** Overrides of WireGuard's timer constants (tests and e2e runs shorten them). */
  timers?: Partial<TimerConfig>;
  /** Tunnel MTU, for padding (default 1420). */
  mtu?: number;
  /** Handshake messages per second above which the device is under load (default 128). */
  underLoadHandshakesPerSecond?: number;
  /** Packets staged per peer while a handshake is pending (default 128, as wireguard-go). */
  maxStagedPackets?: number;
}

export interface PeerStats {
  publicKey: string;
  endpoint: Endpoint | null;
  /** Wall-clock ms of the latest completed handshake; 0 when none. */
  latestHandshakeMs: number;
  rxBytes: number;
  txBytes: number;
  /** Completed handshakes. */
  handshakes: number;
  /** Handshake initiations sent. */
  handshakeInitiations: number;
  /** Canonical prefix texts. */
  allowedIps: string[];
  persistentKeepalive: number;
  drops: DropCounts;
}

export interface GatewayStats {
  /** Flows stored (expired ones not yet swept included). */
  flows: number;
  maxFlows: number;
  /** Gateway drops over all peers (each is also in its peer's `drops`). */
  drops: DropCounts;
  senders: number;
  rules: number;
}

export interface DeviceStats {
  publicKey: string;
  peers: PeerStats[];
  /** Drops not attributable to one peer. */
  drops: DropCounts;
  /** Null unless setGateway configured this device as a gateway. */
  gateway: GatewayStats | null;
  cookieRepliesSent: number;
  underLoad: boolean;
}

export class DeviceConfigError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_CONFIG_INVALID", message, options);
  }
}

const UNDER_LOAD_AFTER_MS = 1000;
const MAX_TICK_MS = 1000;
const DEFAULT_MTU = 1420;

interface IndexEntry {
  peer: Peer;
  /** null while the index names an in-flight handshake. */
  keypair: Keypair | null;
}

class Peer {
  readonly keyText: string;
  endpoint: Endpoint | null = null;
  current: Keypair | null = null;
  previous: Keypair | null = null;
  next: Keypair | null = null;
  readonly staged: Uint8Array[] = [];
  prefixes: Prefix[] = [];
  presharedKeyText = "";
  persistentKeepaliveS = 0;
  lastSentHandshakeMs = Number.NEGATIVE_INFINITY;
  latestHandshakeMs = 0;
  rxBytes = 0;
  txBytes = 0;
  handshakes = 0;
  handshakeInitiations = 0;
  drops: DropCounts = {};
  /** This peer's compiled gateway rules (null: none, or not a gateway). */
  gatewaySender: GatewaySender | null = null;

  constructor(
    readonly publicKey: Uint8Array,
    readonly handshake: Handshake,
    readonly cookies: CookieGenerator,
    readonly timers: PeerTimers,
  ) {
    this.keyText = encodeKey(publicKey);
  }
}

export class Device implements PacketEngine {
  readonly publicKey: string;
  private readonly crypto: Crypto;
  private readonly now: () => number;
  private readonly random: RandomSource;
  private readonly log: Logger;
  private readonly tun: TunWriter;
  private readonly bind: BindWriter;
  private readonly timerConfig: TimerConfig;
  private readonly mtu: number;
  private readonly underLoadThreshold: number;
  private readonly maxStaged: number;
  private readonly noise: Noise;
  private readonly checker: CookieChecker;
  private readonly limiter: RateLimiter;
  private readonly codec: TransportCodec;
  private readonly peers = new Map<string, Peer>();
  /** Peers by hex public key, for the initiation lookup. */
  private readonly peersByHex = new Map<string, Peer>();
  private readonly indices = new Map<number, IndexEntry>();
  private routes = new PrefixTable<Peer>();
  private gateway: Gateway | null = null;
  private readonly drops: DropCounts = {};
  private cookieRepliesSent = 0;
  private loadWindowStartMs = Number.NEGATIVE_INFINITY;
  private loadCount = 0;
  private underLoadUntilMs = Number.NEGATIVE_INFINITY;
  /** Scratch: a sealed transport message (header, padded packet, tag). */
  private readonly sendBuf = new Uint8Array(new ArrayBuffer(TRANSPORT_HEADER_SIZE + MAX_CONTENT_SIZE + 16 + TAG_SIZE));
  /** Scratch: an opened packet. */
  private readonly recvBuf = new Uint8Array(new ArrayBuffer(MAX_CONTENT_SIZE + 16));
  private readonly addr16 = new Uint8Array(16);

  constructor(options: DeviceOptions) {
    this.crypto = options.crypto;
    this.now = options.now;
    this.random = options.random;
    this.log = options.logger;
    this.tun = options.tun;
    this.bind = options.bind;
    this.timerConfig = resolveTimers(options.timers);
    this.mtu = options.mtu ?? DEFAULT_MTU;
    this.underLoadThreshold = options.underLoadHandshakesPerSecond ?? 128;
    this.maxStaged = options.maxStagedPackets ?? 128;
    const privateKey =
      typeof options.privateKey === "string" ? decodeKey(options.privateKey, "private key") : options.privateKey;
    if (privateKey.length !== 32) throw new DeviceConfigError(`private key must be 32 bytes, got ${privateKey.length}`);
    this.noise = new Noise({ crypto: this.crypto, privateKey, random: this.random, now: this.now });
    this.publicKey = encodeKey(this.noise.publicKey);
    this.checker = new CookieChecker(this.crypto, this.noise.publicKey, this.random, this.now);
    this.limiter = new RateLimiter({ now: this.now });
    this.codec = new TransportCodec(this.crypto.aead);
    this.log.info(`device: up public_key=${this.publicKey} crypto=${this.crypto.name} mtu=${this.mtu}`);
  }

  // ---------------------------------------------------------------- configuration

  /**
   * Sets the complete peer list (idempotent): peers absent from `configs` are removed with their
   * sessions, new ones are added, and existing ones keep their sessions while their allowed IPs,
   * endpoint, preshared key and keepalive are updated. Validates everything before changing anything.
   */
  setPeers(configs: readonly PeerConfig[]): void {
    interface Parsed {
      config: PeerConfig;
      key: Uint8Array;
      keyText: string;
      psk: Uint8Array | undefined;
      prefixes: Prefix[];
    }
    const parsed: Parsed[] = [];
    const seen = new Set<string>();
    configs.forEach((config, i) => {
      const what = `peer ${i + 1}`;
      const key = decodeKey(config.publicKey, `${what} public key`);
      const keyText = encodeKey(key);
      if (seen.has(keyText)) throw new DeviceConfigError(`${what}: public key ${keyText} appears twice`);
      seen.add(keyText);
      if (this.noise.isOwnKey(key)) throw new DeviceConfigError(`${what}: public key ${keyText} is this device's own key`);
      const psk = config.presharedKey ? decodeKey(config.presharedKey, `${what} preshared key`) : undefined;
      const prefixes: Prefix[] = [];
      for (const text of config.allowedIps) {
        try {
          prefixes.push(parsePrefix(text, { allowBareAddress: true, mask: true }));
        } catch (cause) {
          throw new DeviceConfigError(`${what}: allowed IP ${JSON.stringify(text)} is invalid`, { cause });
        }
      }
      const ka = config.persistentKeepalive ?? 0;
      if (!Number.isInteger(ka) || ka < 0 || ka > 65535) {
        throw new DeviceConfigError(`${what}: persistentKeepalive must be an integer 0..65535, got ${ka}`);
      }
      if (config.endpoint) {
        const { port } = config.endpoint;
        if (!Number.isInteger(port) || port < 1 || port > 65535) {
          throw new DeviceConfigError(`${what}: endpoint port must be 1..65535, got ${port}`);
        }
      }
      parsed.push({ config, key, keyText, psk, prefixes });
    });

    for (const [keyText, peer] of this.peers) {
      if (!seen.has(keyText)) this.removePeer(peer);
    }
    const routes = new PrefixTable<Peer>();
    const keepaliveNow: Peer[] = [];
    for (const p of parsed) {
      let peer = this.peers.get(p.keyText);
      if (peer === undefined) {
        peer = this.addPeer(p.key, p.psk);
      } else {
        const pskText = p.psk ? encodeKey(p.psk) : "";
        if (pskText !== peer.presharedKeyText) {
          peer.handshake.presharedKey = p.psk ? Uint8Array.from(p.psk) : new Uint8Array(32);
        }
      }
      peer.presharedKeyText = p.psk ? encodeKey(p.psk) : "";
      peer.prefixes = p.prefixes;
      for (const prefix of p.prefixes) routes.insert(prefix, peer);
      const ep = p.config.endpoint;
      if (ep && (peer.endpoint === null || peer.endpoint.address !== ep.address || peer.endpoint.port !== ep.port)) {
        peer.endpoint = { address: ep.address, port: ep.port };
      }
      const ka = p.config.persistentKeepalive ?? 0;
      if (ka !== peer.persistentKeepaliveS) {
        peer.persistentKeepaliveS = ka;
        peer.timers.persistentKeepaliveMs = ka * 1000;
        // As wg: setting a keepalive on a running interface sends one now (which starts a handshake).
        if (ka > 0) keepaliveNow.push(peer);
        else peer.timers.persistentKeepaliveAt = Number.POSITIVE_INFINITY;
      }
    }
    this.routes = routes;
    for (const peer of this.peers.values()) peer.gatewaySender = this.gateway?.filter.sender(peer.keyText) ?? null;
    for (const peer of keepaliveNow) this.sendKeepalive(peer);
    this.flush();
  }

  /**
   * Makes this device a gateway enforcing `config` (core/dataplane/gateway.ts), or, with null, no
   * gateway at all (flows forgotten, O4 and I9 off). Validates before changing anything; calling
   * it again keeps the flow table (unless maxFlows changes) and drops the flows the new rules
   * would not let the overlay side open.
   */
  setGateway(config: GatewayConfig | null): void {
    if (config === null) {
      if (this.gateway !== null) this.log.info("device: gateway off");
      this.gateway = null;
      for (const peer of this.peers.values()) peer.gatewaySender = null;
      return;
    }
    let next: Gateway;
    try {
      const b = this.random(4);
      const seed = b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24);
      next = new Gateway(config, { seed, previous: this.gateway });
    } catch (cause) {
      if (cause instanceof GatewayConfigError) throw cause;
      throw new DeviceConfigError(`gateway: ${(cause as Error).message}`, { cause });
    }
    const revoked = this.gateway === null ? 0 : next.revalidate(this.now());
    this.gateway = next;
    for (const peer of this.peers.values()) peer.gatewaySender = next.filter.sender(peer.keyText);
    const d = next.filter.describe();
    this.log.info(
      `device: gateway on senders=${d.senders} rules=${d.rules} intervals=${d.intervals} max_flows=${next.flows.maxEntries} flows_revoked=${revoked}`,
    );
  }

  private addPeer(key: Uint8Array, psk: Uint8Array | undefined): Peer {
    const handshake = this.noise.newHandshake(key, psk);
    const cookies = new CookieGenerator(this.crypto, key, this.now);
    const timers = new PeerTimers(this.timerConfig, this.now, (max) => this.jitter(max));
    const peer = new Peer(Uint8Array.from(key), handshake, cookies, timers);
    this.peers.set(peer.keyText, peer);
    this.peersByHex.set(Buffer.from(key).toString("hex"), peer);
    this.log.debug(`device: peer added key=${peer.keyText}`);
    return peer;
  }

  private removePeer(peer: Peer): void {
    this.zeroAndFlushAll(peer);
    peer.timers.stopAll();
    this.peers.delete(peer.keyText);
    this.peersByHex.delete(Buffer.from(peer.publicKey).toString("hex"));
    this.log.debug(`device: peer removed key=${peer.keyText}`);
  }

  // ---------------------------------------------------------------- outbound

  /** O1: one IP packet from the TUN. Never throws: a failure is counted as `internal-error`. */
  handleTunPacket(packet: Uint8Array): void {
    try {
      this.send(packet);
    } catch (err) {
      this.drop(null, "internal-error");
      this.log.error(`device: internal error on a TUN packet: ${String(err)}`);
    }
  }

  private send(packet: Uint8Array): void {
    const len = packet.length;
    // O2 parse, O3 route
    const version = ipVersion(packet, len);
    let peer: Peer | undefined;
    if (version === 4) {
      peer = this.routes.lookupV4(ipv4Destination(packet));
    } else if (version === 6) {
      peer = this.routes.lookup(ipv6Destination(packet, this.addr16));
    } else {
      this.drop(null, "malformed-tun-packet");
      return;
    }
    if (len > MAX_CONTENT_SIZE) {
      this.drop(null, "malformed-tun-packet");
      return;
    }
    if (peer === undefined) {
      this.drop(null, "no-peer-for-destination");
      return;
    }
    // O4 flow
    const gateway = this.gateway;
    if (gateway !== null) {
      const verdict = gateway.outbound(packet, len, this.now());
      if (verdict !== ALLOW) {
        if (verdict === MALFORMED_IP) this.drop(null, "malformed-tun-packet");
        else this.drop(peer, gateway.count(verdict));
        return;
      }
    }
    // O5 session
    const kp = peer.current;
    if (peer.staged.length === 0 && kp !== null && this.usable(kp)) {
      this.sealAndSend(peer, kp, packet, len);
      this.afterSend(peer, len > 0);
      return;
    }
    this.stage(peer, packet.slice());
    this.sendStagedPackets(peer);
  }

  private usable(kp: Keypair): boolean {
    return kp.sendCounter < this.timerConfig.rejectAfterMessages && this.now() - kp.createdMs < this.timerConfig.rejectAfterTimeMs;
  }

  private stage(peer: Peer, packet: Uint8Array): void {
    if (peer.staged.length >= this.maxStaged) {
      peer.staged.shift();
      this.drop(peer, "staged-overflow");
    }
    peer.staged.push(packet);
  }

  /** O6 seal, O7 send. */
  private sealAndSend(peer: Peer, kp: Keypair, packet: Uint8Array, len: number): void {
    const endpoint = peer.endpoint;
    if (endpoint === null) {
      this.drop(peer, "no-endpoint");
      return;
    }
    const n = this.codec.seal(kp, packet, len, this.sendBuf, this.mtu);
    peer.txBytes += n;
    this.bind.sendDatagram(this.sendBuf.subarray(0, n), endpoint);
  }

  /** O8 timers, after one or more transport messages went out. */
  private afterSend(peer: Peer, dataSent: boolean): void {
    peer.timers.anyAuthenticatedPacketTraversal();
    peer.timers.anyAuthenticatedPacketSent();
    if (dataSent) peer.timers.dataSent();
    this.keepKeyFreshSending(peer);
  }

  private sendStagedPackets(peer: Peer): void {
    if (peer.staged.length === 0) return;
    const kp = peer.current;
    if (kp === null || !this.usable(kp)) {
      this.sendHandshakeInitiation(peer, false);
      return;
    }
    let dataSent = false;
    const staged = peer.staged.splice(0, peer.staged.length);
    for (const packet of staged) {
      if (!this.usable(kp)) {
        // Worn out mid-batch: keep the rest staged for the next session.
        this.stage(peer, packet);
        continue;
      }
      this.sealAndSend(peer, kp, packet, packet.length);
      if (packet.length > 0) dataSent = true;
    }
    this.afterSend(peer, dataSent);
    if (peer.staged.length > 0) this.sendHandshakeInitiation(peer, false);
  }

  private sendKeepalive(peer: Peer): void {
    if (peer.staged.length === 0) peer.staged.push(new Uint8Array(0));
    this.sendStagedPackets(peer);
  }

  private keepKeyFreshSending(peer: Peer): void {
    const kp = peer.current;
    if (kp === null) return;
    const t = this.timerConfig;
    if (kp.sendCounter > t.rekeyAfterMessages || (kp.isInitiator && this.now() - kp.createdMs > t.rekeyAfterTimeMs)) {
      this.sendHandshakeInitiation(peer, false);
    }
  }

  private keepKeyFreshReceiving(peer: Peer): void {
    if (peer.timers.sentLastMinuteHandshake) return;
    const kp = peer.current;
    const t = this.timerConfig;
    if (kp !== null && kp.isInitiator && this.now() - kp.createdMs > t.rejectAfterTimeMs - t.keepaliveTimeoutMs - t.rekeyTimeoutMs) {
      peer.timers.sentLastMinuteHandshake = true;
      this.sendHandshakeInitiation(peer, false);
    }
  }

  // ---------------------------------------------------------------- handshakes we send

  private sendHandshakeInitiation(peer: Peer, isRetry: boolean): void {
    if (!isRetry) peer.timers.handshakeAttempts = 0;
    const now = this.now();
    if (now - peer.lastSentHandshakeMs < this.timerConfig.rekeyTimeoutMs) return;
    const endpoint = peer.endpoint;
    if (endpoint === null) return; // nowhere to send it; the peer has to reach us first
    if (isZero(peer.handshake.precomputedStaticStatic)) return; // a low-order key can never handshake
    peer.lastSentHandshakeMs = now;
    this.releaseHandshakeIndex(peer);
    const index = this.newIndex();
    const msg = this.noise.createInitiation(peer.handshake, index);
    this.indices.set(index, { peer, keypair: null });
    peer.cookies.addMacs(msg);
    peer.timers.anyAuthenticatedPacketTraversal();
    peer.timers.anyAuthenticatedPacketSent();
    peer.txBytes += msg.length;
    peer.handshakeInitiations++;
    this.log.debug(`device: handshake initiation peer=${peer.keyText} to=${endpoint.address}:${endpoint.port}`);
    this.bind.sendDatagram(msg, endpoint);
    peer.timers.handshakeInitiated();
  }

  private sendHandshakeResponse(peer: Peer, to: Endpoint): void {
    peer.lastSentHandshakeMs = this.now();
    this.releaseHandshakeIndex(peer);
    const index = this.newIndex();
    const msg = this.noise.createResponse(peer.handshake, index);
    this.indices.set(index, { peer, keypair: null });
    peer.cookies.addMacs(msg);
    this.beginSymmetricSession(peer);
    peer.timers.sessionDerived();
    peer.timers.anyAuthenticatedPacketTraversal();
    peer.timers.anyAuthenticatedPacketSent();
    peer.txBytes += msg.length;
    this.bind.sendDatagram(msg, to);
  }

  private releaseHandshakeIndex(peer: Peer): void {
    const idx = peer.handshake.localIndex;
    const entry = this.indices.get(idx);
    if (entry !== undefined && entry.peer === peer && entry.keypair === null) this.indices.delete(idx);
  }

  private newIndex(): number {
    for (;;) {
      const b = this.random(4);
      const idx = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
      if (!this.indices.has(idx)) return idx;
    }
  }

  /** Derives a keypair from the finished handshake and rotates current / previous / next. */
  private beginSymmetricSession(peer: Peer): void {
    const keys = this.noise.deriveSession(peer.handshake);
    const kp = new Keypair(keys.sendKey, keys.recvKey, keys.isInitiator, this.now(), keys.localIndex, keys.remoteIndex);
    this.indices.set(kp.localIndex, { peer, keypair: kp });
    if (kp.isInitiator) {
      const oldPrevious = peer.previous;
      if (peer.next !== null) {
        peer.previous = peer.next;
        peer.next = null;
        this.deleteKeypair(peer.current);
      } else {
        peer.previous = peer.current;
      }
      this.deleteKeypair(oldPrevious);
      peer.current = kp;
    } else {
      this.deleteKeypair(peer.next);
      peer.next = kp;
      this.deleteKeypair(peer.previous);
      peer.previous = null;
    }
  }

  private deleteKeypair(kp: Keypair | null): void {
    if (kp === null) return;
    const entry = this.indices.get(kp.localIndex);
    if (entry !== undefined && entry.keypair === kp) this.indices.delete(kp.localIndex);
    kp.zero();
  }

  /** I6: the first packet on a responder's `next` keypair confirms it. */
  private receivedWithKeypair(peer: Peer, kp: Keypair): boolean {
    if (peer.next !== kp) return false;
    this.deleteKeypair(peer.previous);
    peer.previous = peer.current;
    peer.current = kp;
    peer.next = null;
    return true;
  }

  private zeroAndFlushAll(peer: Peer): void {
    this.deleteKeypair(peer.previous);
    this.deleteKeypair(peer.current);
    this.deleteKeypair(peer.next);
    peer.previous = peer.current = peer.next = null;
    this.releaseHandshakeIndex(peer);
    peer.handshake.clear();
    peer.staged.length = 0;
  }

  private handshakeComplete(peer: Peer): void {
    peer.timers.handshakeComplete();
    peer.latestHandshakeMs = this.now();
    peer.handshakes++;
  }

  // ---------------------------------------------------------------- inbound

  /** I1: one datagram from UDP. */
  handleDatagram(data: Uint8Array, from: Endpoint): void {
    try {
      this.receive(data, from);
    } catch (err) {
      this.drop(null, "internal-error");
      this.log.error(`device: internal error on datagram from ${from.address}:${from.port}: ${String(err)}`);
    }
  }

  private receive(data: Uint8Array, from: Endpoint): void {
    const len = data.length;
    // I2 classify
    if (len < 4 || data[1] !== 0 || data[2] !== 0 || data[3] !== 0) {
      this.drop(null, "malformed-unknown-type");
      return;
    }
    switch (data[0]) {
      case MESSAGE_TRANSPORT:
        if (len < KEEPALIVE_SIZE) this.drop(null, "malformed-transport");
        else this.receiveTransport(data, from);
        return;
      case MESSAGE_INITIATION:
        if (len !== INITIATION_SIZE) this.drop(null, "malformed-initiation");
        else this.receiveHandshake(data, from);
        return;
      case MESSAGE_RESPONSE:
        if (len !== RESPONSE_SIZE) this.drop(null, "malformed-response");
        else this.receiveHandshake(data, from);
        return;
      case MESSAGE_COOKIE_REPLY:
        if (len !== COOKIE_REPLY_SIZE) this.drop(null, "malformed-cookie-reply");
        else this.receiveCookieReply(data);
        return;
      default:
        this.drop(null, "malformed-unknown-type");
    }
  }

  /** True while handshake messages arrive faster than the threshold (and for a second after). */
  private underLoad(now: number): boolean {
    if (now - this.loadWindowStartMs >= 1000) {
      this.loadWindowStartMs = now;
      this.loadCount = 0;
    }
    this.loadCount++;
    if (this.loadCount > this.underLoadThreshold) this.underLoadUntilMs = now + UNDER_LOAD_AFTER_MS;
    return now < this.underLoadUntilMs;
  }

  /** I3: an initiation or response of the right size. */
  private receiveHandshake(data: Uint8Array, from: Endpoint): void {
    const now = this.now();
    const loaded = this.underLoad(now);
    if (!this.checker.checkMac1(data)) {
      this.drop(null, "mac1-invalid");
      return;
    }
    if (loaded) {
      const src = sourceBytes(from.address, from.port);
      if (!this.checker.checkMac2(data, src)) {
        const reply = this.checker.createReply(data, readU32(data, 4), src);
        this.cookieRepliesSent++;
        this.drop(null, "under-load");
        this.bind.sendDatagram(reply, from);
        this.flush();
        return;
      }
      if (!this.limiter.allow(from.address)) {
        this.drop(null, "rate-limited");
        return;
      }
    }
    if (data[0] === MESSAGE_INITIATION) {
      let found: Peer | null = null;
      const result = this.noise.consumeInitiation(data, (key) => {
        found = this.peersByHex.get(Buffer.from(key).toString("hex")) ?? null;
        return found === null ? null : found.handshake;
      });
      const peer = found as Peer | null;
      if (!result.ok) {
        this.drop(result.reason === "unknown-peer" ? null : peer, result.reason);
        return;
      }
      if (peer === null) return;
      peer.timers.anyAuthenticatedPacketTraversal();
      peer.timers.anyAuthenticatedPacketReceived();
      this.setEndpoint(peer, from);
      peer.rxBytes += data.length;
      this.log.debug(`device: handshake initiation received peer=${peer.keyText}`);
      this.sendHandshakeResponse(peer, from);
      this.flush();
      return;
    }
    const entry = this.indices.get(readU32(data, 8));
    if (entry === undefined || entry.keypair !== null || entry.peer.handshake.localIndex !== readU32(data, 8)) {
      this.drop(null, "unknown-receiver");
      return;
    }
    const peer = entry.peer;
    const rejection = this.noise.consumeResponse(peer.handshake, data);
    if (rejection !== null) {
      this.drop(peer, rejection);
      return;
    }
    this.setEndpoint(peer, from);
    peer.rxBytes += data.length;
    peer.timers.anyAuthenticatedPacketTraversal();
    peer.timers.anyAuthenticatedPacketReceived();
    this.beginSymmetricSession(peer);
    peer.timers.sessionDerived();
    this.handshakeComplete(peer);
    this.log.debug(`device: handshake complete peer=${peer.keyText} role=initiator`);
    this.sendKeepalive(peer);
    this.flush();
  }

  /** I4: a cookie reply to one of our handshake messages. */
  private receiveCookieReply(data: Uint8Array): void {
    const entry = this.indices.get(readU32(data, 4));
    if (entry === undefined) {
      this.drop(null, "unknown-receiver");
      return;
    }
    if (!entry.peer.cookies.consumeReply(data)) this.drop(entry.peer, "cookie-invalid");
  }

  /** I5–I10: a transport message. */
  private receiveTransport(data: Uint8Array, from: Endpoint): void {
    // I5 open
    const entry = this.indices.get(readU32(data, 4));
    if (entry === undefined || entry.keypair === null) {
      this.drop(null, "unknown-receiver");
      return;
    }
    const kp = entry.keypair;
    const peer = entry.peer;
    if (this.now() - kp.createdMs >= this.timerConfig.rejectAfterTimeMs) {
      this.drop(peer, "keypair-expired");
      return;
    }
    const buf = this.recvBuf;
    const n = this.codec.open(kp, data, buf);
    if (n < 0) {
      this.drop(peer, "decrypt-failed");
      return;
    }
    if (!kp.replay.check(counterHi(data), counterLo(data))) {
      this.drop(peer, "replayed");
      return;
    }
    // I6 confirm
    if (this.receivedWithKeypair(peer, kp)) {
      this.setEndpoint(peer, from);
      this.handshakeComplete(peer);
      this.log.debug(`device: handshake complete peer=${peer.keyText} role=responder`);
      this.sendStagedPackets(peer);
    }
    peer.rxBytes += data.length;
    this.setEndpoint(peer, from);
    this.keepKeyFreshReceiving(peer);
    peer.timers.anyAuthenticatedPacketTraversal();
    peer.timers.anyAuthenticatedPacketReceived();
    // I7 keepalive
    if (n === 0) return;
    peer.timers.dataReceived();
    // I8 allow
    const length = ipPacketLength(buf, n);
    if (length < 0) {
      this.drop(peer, "malformed-ip");
      return;
    }
    const version = buf[0]! >> 4;
    const owner = version === 4 ? this.routes.lookupV4(ipv4Source(buf)) : this.routes.lookup(ipv6Source(buf, this.addr16));
    if (owner !== peer) {
      this.drop(peer, "source-not-allowed");
      return;
    }
    // I9 gateway
    const gateway = this.gateway;
    if (gateway !== null) {
      const verdict = gateway.inbound(peer.gatewaySender, buf, length, this.now());
      if (verdict !== ALLOW) {
        this.drop(peer, gateway.count(verdict));
        return;
      }
    }
    // I10 deliver
    this.tun.writePacket(buf.subarray(0, length));
  }

  /** Roaming: the endpoint follows the source of authenticated packets. */
  private setEndpoint(peer: Peer, from: Endpoint): void {
    const ep = peer.endpoint;
    if (ep !== null && ep.port === from.port && ep.address === from.address) return;
    if (ep !== null) {
      this.log.debug(`device: endpoint roamed peer=${peer.keyText} from=${ep.address}:${ep.port} to=${from.address}:${from.port}`);
    }
    peer.endpoint = { address: from.address, port: from.port };
  }

  private drop(peer: Peer | null, reason: DropReason): void {
    const counts = peer === null ? this.drops : peer.drops;
    counts[reason] = (counts[reason] ?? 0) + 1;
  }

  private flush(): void {
    this.bind.flush?.();
  }

  private jitter(maxMs: number): number {
    if (maxMs <= 0) return 0;
    const b = this.random(2);
    return ((b[0]! | (b[1]! << 8)) % maxMs) | 0;
  }

  // ---------------------------------------------------------------- timers

  /** Runs every expired peer timer; returns ms until the next deadline (at most 1000). */
  tick(): number {
    const now = this.now();
    let next = now + MAX_TICK_MS;
    this.gateway?.sweep(now);
    for (const peer of this.peers.values()) {
      const bits = peer.timers.takeExpired(now);
      if (bits !== 0) {
        try {
          this.runTimers(peer, bits);
        } catch (err) {
          this.drop(peer, "internal-error");
          this.log.error(`device: internal error in timers peer=${peer.keyText}: ${String(err)}`);
        }
      }
      const d = peer.timers.nextDeadline();
      if (d < next) next = d;
    }
    this.flush();
    return Math.max(0, next - now);
  }

  private runTimers(peer: Peer, bits: number): void {
    const timers = peer.timers;
    if (bits & TIMER_RETRANSMIT_HANDSHAKE) {
      if (timers.handshakeAttempts > maxTimerHandshakes(this.timerConfig)) {
        this.log.debug(`device: handshake gave up peer=${peer.keyText} attempts=${timers.handshakeAttempts + 2}`);
        timers.cancelKeepalive();
        const n = peer.staged.length;
        peer.staged.length = 0;
        if (n > 0) peer.drops["handshake-timeout"] = (peer.drops["handshake-timeout"] ?? 0) + n;
        timers.armZeroKeyMaterialIfIdle();
      } else {
        timers.handshakeAttempts++;
        this.sendHandshakeInitiation(peer, true);
      }
    }
    if (bits & TIMER_SEND_KEEPALIVE) {
      this.sendKeepalive(peer);
      if (timers.needAnotherKeepalive) {
        timers.needAnotherKeepalive = false;
        timers.rearmKeepalive();
      }
    }
    if (bits & TIMER_NEW_HANDSHAKE) {
      this.log.debug(`device: no reply after data, new handshake peer=${peer.keyText}`);
      this.sendHandshakeInitiation(peer, false);
    }
    if (bits & TIMER_ZERO_KEY_MATERIAL) {
      this.log.debug(`device: zeroing keys peer=${peer.keyText}`);
      this.zeroAndFlushAll(peer);
    }
    if (bits & TIMER_PERSISTENT_KEEPALIVE && timers.persistentKeepaliveMs > 0) {
      this.sendKeepalive(peer);
    }
  }

  // ---------------------------------------------------------------- stats

  stats(): DeviceStats {
    const peers: PeerStats[] = [];
    for (const peer of this.peers.values()) {
      peers.push({
        publicKey: peer.keyText,
        endpoint: peer.endpoint ? { ...peer.endpoint } : null,
        latestHandshakeMs: peer.latestHandshakeMs,
        rxBytes: peer.rxBytes,
        txBytes: peer.txBytes,
        handshakes: peer.handshakes,
        handshakeInitiations: peer.handshakeInitiations,
        allowedIps: peer.prefixes.map((p) => p.text),
        persistentKeepalive: peer.persistentKeepaliveS,
        drops: { ...peer.drops },
      });
    }
    return {
      publicKey: this.publicKey,
      peers,
      drops: { ...this.drops },
      gateway: this.gatewayStats(),
      cookieRepliesSent: this.cookieRepliesSent,
      underLoad: this.now() < this.underLoadUntilMs,
    };
  }

  private gatewayStats(): GatewayStats | null {
    const g = this.gateway;
    if (g === null) return null;
    const d = g.filter.describe();
    return { flows: g.flows.size, maxFlows: g.flows.maxEntries, drops: { ...g.drops }, senders: d.senders, rules: d.rules };
  }

  /** Session facts for one peer (tests and diagnostics): which keypairs exist, counters. */
  sessionInfo(publicKey: string): { current: boolean; next: boolean; previous: boolean; sendCounter: number; staged: number } | null {
    const peer = this.peers.get(publicKey);
    if (peer === undefined) return null;
    return {
      current: peer.current !== null,
      next: peer.next !== null,
      previous: peer.previous !== null,
      sendCounter: peer.current?.sendCounter ?? 0,
      staged: peer.staged.length,
    };
  }
}
