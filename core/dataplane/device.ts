/**
 * @module core/dataplane/device
 * The Device: one WireGuard interface's peers, sessions, cryptokey routing, timers and counters,
 * driven synchronously by a host through PacketEngine (core/dataplane/ports.ts). It never blocks,
 * never returns a Promise, keeps no reference to a buffer it is handed, and reuses a few scratch
 * buffers on the data path. Handshakes run inline: they are rare and each costs a few X25519s.
 *
 * Packet flow (stage names are used in comments, logs and drop reasons below):
 *
 * Outbound, TUN -> UDP (handleTunPacket):
 *   O1 read      the host hands over one IP packet read from the TUN.
 *   O2 parse     version and destination from the header (packet.ts); malformed -> drop `malformed-tun-packet`.
 *   O3 route     destination -> peer by longest prefix over every peer's allowed IPs and the gateway
 *                routes (setRoutes; a route's prefix wins over an equal allowed IP, a longer allowed
 *                IP wins over a route); no match -> drop `no-peer-for-destination`. A route asks the
 *                RouteSelector (routes.ts) which gateway carries the destination now: TCP and UDP
 *                flows are pinned to the gateway that first carried them (`lookupPinned`, so a
 *                draining gateway finishes its flows), everything else follows the selector's
 *                answer. No answer (`gatewayId: null`, or no selector) -> drop `no-healthy-gateway`:
 *                fail closed, never another peer's allowed IPs; an answer naming no configured
 *                peer -> drop `route-gateway-unknown`.
 *   O4 flow      on a gateway (setGateway), a packet whose source is not an overlay address came
 *                from a LAN and must answer a flow the overlay side opened (gateway.ts): its
 *                reversed tuple is a live flow, or it is an ICMP error quoting one; otherwise
 *                drop `gateway-unsolicited` (`gateway-fragment` for a later fragment of an unknown
 *                datagram). Every other packet is this device's own: with inbound ACLs on
 *                (setInboundRules) it opens or refreshes one of the device's own flows
 *                (flow-tracker.ts, strict TCP: only a SYN opens), so that the peer's answers get
 *                in at I10 (`flow-table-full` when it cannot be recorded, `malformed-tun-packet`
 *                when its headers are cut short).
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
 *                Crossed initiations (the peer's arrives while ours, sent less than
 *                CROSSING_WINDOW_MS ago, is unanswered): the side with the greater static key wins
 *                and ignores the other's; the other answers and keeps its own in flight, so both
 *                end on one session within a round trip, never at the REKEY_TIMEOUT retry (which is
 *                where wireguard-go, forgetting its own initiation on answering, meets). See
 *                crossedInitiation.
 *   I4 cookie    a cookie reply for one of our handshakes is stored for mac2 (`cookie-invalid`).
 *   I5 open      transport: receiver index -> keypair (`unknown-receiver`), age (`keypair-expired`),
 *                decrypt (`decrypt-failed`), then the replay window (`replayed`).
 *   I6 confirm   first packet on a responder's new keypair promotes it; the endpoint roams to the
 *                datagram's source; timers.
 *   I7 keepalive an empty packet ends here; so does (once its IP length checks out, else
 *                `malformed-ip`) a Waygate probe (probe.ts): a request is
 *                answered by the Device itself with this device's health report (at most
 *                PROBE_REPLIES_PER_S per peer, else `probe-rate-limited`), a reply to one of our recent
 *                probes is surfaced through `onProbeReply` (any other: `probe-unexpected`). Neither
 *                is written to the TUN or checked against allowed IPs or the gateway filter.
 *   I8 allow     the inner header must be whole (`malformed-ip`) and its source must be among the
 *                sending peer's allowed IPs (`source-not-allowed`): cryptokey routing's inbound half.
 *                Several peers may list one prefix (two gateways serving one subnet): each of them
 *                may send from it.
 *   I9 gateway   gateways only (setGateway): a packet to the gateway's virtual address goes on to
 *                I10 like any device's own traffic. Anything else is forwarded traffic, for the
 *                access filter (filter.ts) of that sender: the source must be its own virtual
 *                address (`gateway-source-spoofed`), the destination not one of the gateway's other
 *                addresses, its LAN side (`gateway-local-address`, always), and destination,
 *                protocol and port granted (`gateway-no-grant`; `gateway-fragment`, `malformed-ip`);
 *                an allowed packet into a LAN records or refreshes its flow (`flow-table-full`)
 *                and skips I10.
 *   I10 acl      inbound ACLs only (setInboundRules; null, the default, lets everything through):
 *                the packet must answer one of this device's own flows (reversed tuple, or an ICMP
 *                error quoting one), or be allowed by the sending peer's rules (acl.ts: source,
 *                destination, protocol, destination port; deny wins; no entry: nothing). A later
 *                fragment passes when its first fragment did. Otherwise drop `acl-denied`
 *                (`malformed-ip` when the headers are cut short).
 *   I11 deliver  written to the TUN, trimmed to the header's length (padding removed).
 *
 * Drops: every one is counted by reason, per peer where a peer is to blame (else device-wide),
 * and recorded in the drop log (drop-log.ts: a preallocated ring of the last 256, no allocation
 * per drop) with what was dropped: the IP packet's addresses, protocol, port and length, or a
 * datagram's source before it was opened. stats().recentDrops carries the newest 64 with their
 * sequence numbers; recentDrops(sinceSeq) reads any that are still kept.
 *
 * Link RTT (stats().peers[].rttMs): round trips this device sees anyway, no extra packets:
 * our initiation -> its response (I3); our response -> the first packet on that session (I6,
 * which the initiator sends at once; ignored beyond REKEY_TIMEOUT, when that packet was lost);
 * our probe -> its reply (I7, every 200 ms to a gateway). Smoothed as TCP's SRTT (gain 1/8);
 * null before the first sample. Each sample costs one subtraction on a path that exists anyway.
 *
 * Gateway drops are counted per peer (with every other drop) and in stats().gateway.drops over
 * all peers. Without setGateway, I9 does nothing and O4 only records own flows. One mechanism
 * decides on traffic to the device itself, gateway or not: a grant never opens the gateway's own
 * services; a direct policy (its inbound ACL) does.
 *
 * Probes (`probe(peer)`, sent by the failover controller's schedule): a probe enters at O5 (no
 * O2-O4); with no usable session it is not staged (a stale probe measures nothing) but starts a
 * handshake, and after PROBE_REHANDSHAKE_AFTER unanswered probes a fresh handshake is started
 * (rate-limited by REKEY_TIMEOUT as always) so a restarted gateway is found again in seconds, not
 * after WireGuard's 15 s dead-session timer. Probes are data, so sessions with standby gateways
 * stay up and a switch needs no handshake.
 *
 * Timers (tick): per peer, WireGuard's retransmit / keepalive / new-handshake / zero-keys /
 * persistent-keepalive deadlines (core/wire/timers.ts); tick returns ms until the next one. On a
 * gateway, tick also expires a slice of the flow table; with routes, a slice of the pin table;
 * with inbound ACLs, a slice of the own-flow table.
 */
import { WaygateError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type Prefix, ipv4ToUint32, parsePrefix, prefixContainsAddress } from "../net/address.ts";
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
import { AclConfigError, type AclPeer, type InboundAcl, InboundAclFilter } from "./acl.ts";
import { ALLOW, GatewayConfigError, type GatewayDropReason, type GatewaySender, MALFORMED_IP, SELF } from "./filter.ts";
import { Gateway, type GatewayConfig } from "./gateway.ts";
import { DEFAULT_MAX_FLOWS, FlowTable, KEY_FRAGMENT, KEY_V6 } from "./flow-table.ts";
import { type FlowTimeouts, FlowTracker, TABLE_FULL, resolveFlowTimeouts } from "./flow-tracker.ts";
import {
  PARSE_OK,
  FRAG_FIRST,
  FRAG_LATER,
  PROTO_ICMP,
  PROTO_ICMPV6,
  PROTO_TCP,
  PROTO_UDP,
  PacketHeaders,
} from "./headers.ts";
import { DropLog, type DropLogRead, type DropLogSnapshot } from "./drop-log.ts";
import type { BindWriter, Endpoint, PacketEngine, TunWriter } from "./ports.ts";
import {
  type HealthReport,
  NOT_PROBE,
  PROBE_REQUEST,
  PROBE_SIZE,
  buildProbe,
  buildProbeReply,
  classifyProbe,
  decodeReport,
  encodeReport,
  probeSequence,
  replyReportBytes,
} from "./probe.ts";
import type { RouteConfig, RouteSelector } from "./routes.ts";

export type { HealthReport } from "./probe.ts";
export type { DropEntry, DropLogRead, DropLogSnapshot } from "./drop-log.ts";
export type { AclRule, InboundAcl } from "./acl.ts";
export type { RouteConfig, RouteSelector } from "./routes.ts";

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
  /** O3: a routed destination whose selector has no healthy gateway (fail closed). */
  | "no-healthy-gateway"
  /** O3: the selector named a gateway that is not a configured peer. */
  | "route-gateway-unknown"
  /** I7: probe requests from one peer beyond PROBE_REPLIES_PER_S. */
  | "probe-rate-limited"
  /** I7: a probe reply for no probe we sent recently (late beyond the window, or duplicated). */
  | "probe-unexpected"
  /** I10: not allowed by the sending peer's inbound ACL, and no answer to one of our own flows. */
  | "acl-denied"
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
  /** Chooses the gateway for routed destinations (setRoutes); also settable with setRouteSelector. */
  routeSelector?: RouteSelector | null;
  /**
   * A reply to one of our probes (`probe(peer)`): the peer, the round trip, and its health report
   * (null from a plain WireGuard peer whose kernel answered). Called synchronously from
   * handleDatagram; an exception is logged, never propagated.
   */
  onProbeReply?: (peerPublicKey: string, rttMs: number, report: HealthReport | null) => void;
  /** IPv4 source of our probes: this device's virtual address (default 0.0.0.0). */
  probeSource?: string;
  /** Pinned TCP/UDP flows to routed destinations (default 16,384; beyond it flows are not pinned). */
  maxPinnedFlows?: number;
  /** Idle time after which a pinned flow forgets its gateway (defaults: TCP 300 s, UDP 60 s). */
  pinIdleMs?: { tcp?: number; udp?: number };
  /** Own flows tracked while inbound ACLs are on (default 65,536; beyond it new ones are dropped). */
  maxOwnFlows?: number;
  /** Own-flow timeouts (defaults: flow-tracker.ts DEFAULT_FLOW_TIMEOUTS). */
  ownFlowTimeouts?: Partial<FlowTimeouts>;
}

/** Probe counters of one peer. */
export interface ProbeStats {
  /** Probes we sent (sealed and handed to the Bind). */
  sent: number;
  /** probe() calls that found no usable session (a handshake was started instead). */
  unsent: number;
  /** Replies to our probes. */
  replies: number;
  /** Probe requests from this peer that we answered. */
  answered: number;
}

export interface RouteStats {
  /** Routed prefixes (setRoutes). */
  prefixes: number;
  /** Pinned flows stored (expired ones not yet swept included). */
  pinnedFlows: number;
  maxPinnedFlows: number;
  /** Whether a selector is installed (without one every routed packet is dropped). */
  selector: boolean;
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
  /** Always set by Device.stats (optional for hosts that build stats by hand). */
  probes?: ProbeStats;
  /**
   * Wall-clock ms of the latest authenticated message from the peer (handshake, data or
   * keepalive); 0 when none. Always set by Device.stats.
   */
  lastRxMs?: number;
  /**
   * Smoothed round trip to the peer in ms (see the module comment, Link RTT), null before the
   * first sample. Always set by Device.stats.
   */
  rttMs?: number | null;
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

export interface AclStats {
  /** Peers with an inbound ACL entry (the others may send nothing but answers). */
  peers: number;
  rules: number;
  /** The device's own flows stored (expired ones not yet swept included). */
  flows: number;
  maxFlows: number;
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
  /** Null unless setRoutes installed routes (optional for hosts that build stats by hand). */
  routes?: RouteStats | null;
  /** Null unless setInboundRules turned inbound ACLs on (optional for hosts that build stats by hand). */
  acl?: AclStats | null;
  /**
   * The newest drops (at most DROP_LOG_STATS_ENTRIES, oldest first) and the newest seq: a poller
   * remembers the last seq it saw and reads what is newer (gaps are drops the ring overwrote).
   * Always set by Device.stats.
   */
  recentDrops?: DropLogSnapshot;
}

export class DeviceConfigError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_CONFIG_INVALID", message, options);
  }
}

/** Probe requests answered per peer and second (a burst of as many is allowed). */
export const PROBE_REPLIES_PER_S = 20;
/** Unanswered probes in a row after which probe() also starts a fresh handshake. */
export const PROBE_REHANDSHAKE_AFTER = 5;
/** Recent probe sequence numbers a reply may answer (8 x 200 ms: replies up to 1.6 s late). */
const PROBE_WINDOW = 8;
const DEFAULT_MAX_PINNED_FLOWS = 16_384;
const DEFAULT_PIN_TCP_MS = 300_000;
const DEFAULT_PIN_UDP_MS = 60_000;
/** Pin table slots examined per tick. */
const PIN_SWEEP_SLOTS = 1024;
/** Peers that can own pinned flows (the pin table's state byte holds a peer slot, 0 = none). */
const MAX_PIN_SLOTS = 255;

const UNDER_LOAD_AFTER_MS = 1000;
/**
 * An initiation of ours younger than this is taken to cross the peer's (both in flight at once)
 * rather than to be lost: a round-trip bound. Beyond it we answer and forget ours, as wireguard-go.
 */
export const CROSSING_WINDOW_MS = 1000;
const MAX_TICK_MS = 1000;
const DEFAULT_MTU = 1420;

interface IndexEntry {
  peer: Peer;
  /** null while the index names an in-flight handshake. */
  keypair: Keypair | null;
}

/** A routed prefix (setRoutes): the selector picks among `candidates` per destination. */
class Route {
  constructor(
    readonly prefix: Prefix,
    readonly candidates: readonly string[],
  ) {}
}

class Peer {
  readonly keyText: string;
  endpoint: Endpoint | null = null;
  current: Keypair | null = null;
  previous: Keypair | null = null;
  next: Keypair | null = null;
  readonly staged: Uint8Array[] = [];
  prefixes: Prefix[] = [];
  /** IPv4 allowed IPs as (network, mask) pairs and the IPv6 ones, for I8's per-peer check. */
  v4Nets = new Uint32Array(0);
  v4Masks = new Uint32Array(0);
  v6Prefixes: Prefix[] = [];
  /** Where our probes to this peer are addressed: its first IPv4 host route, else 0.0.0.0. */
  probeDestination = 0;
  presharedKeyText = "";
  persistentKeepaliveS = 0;
  /** Whether our initiation wins when it crosses one of this peer's (Noise.initiationWins). */
  initiationWins = false;
  lastSentHandshakeMs = Number.NEGATIVE_INFINITY;
  /** When our latest initiation was sent (lastSentHandshakeMs also counts responses). */
  lastInitiationSentMs = Number.NEGATIVE_INFINITY;
  latestHandshakeMs = 0;
  rxBytes = 0;
  txBytes = 0;
  handshakes = 0;
  handshakeInitiations = 0;
  /** Wall-clock ms of the latest authenticated message from this peer (keepalives included); 0: none. */
  lastRxMs = 0;
  /** Smoothed round trip in ms (rttSample), NaN before the first sample. */
  rttMs = Number.NaN;
  /** When our latest handshake response went out, until the first packet on its session confirms it (NaN). */
  responseSentMs = Number.NaN;
  drops: DropCounts = {};
  /** This peer's compiled gateway rules (null: none, or not a gateway). */
  gatewaySender: GatewaySender | null = null;
  /** This peer's compiled inbound ACL (null: none, or ACLs off). */
  acl: AclPeer | null = null;
  /** The pin table's name for this peer (1..255), 0 when it cannot own pinned flows. */
  pinSlot = 0;
  /** Probes: our next sequence number, the recent ones and when each was sent. */
  probeSeq = 0;
  readonly probeSeqs = new Uint32Array(PROBE_WINDOW);
  readonly probeSentAt = new Float64Array(PROBE_WINDOW).fill(Number.NaN);
  probeUnanswered = 0;
  probeTokens = PROBE_REPLIES_PER_S;
  probeTokensAt = 0;
  /** The last report block received from this peer and its decoding (reused while unchanged). */
  reportBytes: Uint8Array | null = null;
  report: HealthReport | null = null;
  readonly probeStats: ProbeStats = { sent: 0, unsent: 0, replies: 0, answered: 0 };

  constructor(
    readonly publicKey: Uint8Array,
    readonly handshake: Handshake,
    readonly cookies: CookieGenerator,
    readonly timers: PeerTimers,
  ) {
    this.keyText = encodeKey(publicKey);
  }

  setPrefixes(prefixes: Prefix[]): void {
    this.prefixes = prefixes;
    const v4 = prefixes.filter((p) => p.family === 4);
    this.v4Nets = Uint32Array.from(v4, (p) => ipv4ToUint32(p.bytes));
    this.v4Masks = Uint32Array.from(v4, (p) => (p.length === 0 ? 0 : (0xffffffff << (32 - p.length)) >>> 0));
    this.v6Prefixes = prefixes.filter((p) => p.family === 6);
    const host = v4.find((p) => p.length === 32);
    this.probeDestination = host === undefined ? 0 : ipv4ToUint32(host.bytes);
  }

  /** Whether one of this peer's allowed IPs holds the IPv4 address (linear: a peer lists few). */
  allowsV4(addr: number): boolean {
    const nets = this.v4Nets;
    const masks = this.v4Masks;
    for (let i = 0; i < nets.length; i++) if (((addr & masks[i]!) >>> 0) === nets[i]) return true;
    return false;
  }

  allowsV6(addr: Uint8Array): boolean {
    const list = this.v6Prefixes;
    for (let i = 0; i < list.length; i++) if (prefixContainsAddress(list[i]!, addr)) return true;
    return false;
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
  /** Every peer's allowed IPs (one owner per prefix: the last peer listing it). */
  private routes = new PrefixTable<Peer>();
  /** O3's table: `routes` plus the gateway routes (the same object while there are none). */
  private outbound: PrefixTable<Peer | Route> = this.routes;
  private gatewayRoutes: Route[] | null = null;
  private selector: RouteSelector | null;
  /** Pinned TCP/UDP flows to routed destinations -> peer slot (allocated with the first routes). */
  private pins: FlowTable | null = null;
  private readonly maxPins: number;
  private readonly pinTcpMs: number;
  private readonly pinUdpMs: number;
  private readonly pinPeers: (Peer | undefined)[] = new Array(MAX_PIN_SLOTS + 1);
  private readonly freePinSlots: number[] = [];
  private readonly headers = new PacketHeaders();
  private probeListener: ((peerPublicKey: string, rttMs: number, report: HealthReport | null) => void) | null;
  private readonly probeSource: number;
  private healthReport: HealthReport = Object.freeze({ withdrawn: Object.freeze([]), draining: false });
  private healthBlock: Uint8Array = encodeReport(this.healthReport);
  private gateway: Gateway | null = null;
  /** Inbound ACLs (I10) and this device's own flows (O4); both null while ACLs are off. */
  private acl: InboundAclFilter | null = null;
  private ownFlows: FlowTracker | null = null;
  private readonly maxOwnFlows: number;
  private readonly ownFlowTimeouts: FlowTimeouts;
  private readonly drops: DropCounts = {};
  private readonly dropLog = new DropLog();
  /** stats()' drop log part, rebuilt only when a drop happened since (stats is polled twice a second). */
  private dropSnapshot: DropLogSnapshot = { seq: 0, entries: [] };
  private cookieRepliesSent = 0;
  private loadWindowStartMs = Number.NEGATIVE_INFINITY;
  private loadCount = 0;
  private underLoadUntilMs = Number.NEGATIVE_INFINITY;
  /** Scratch: a sealed transport message (header, padded packet, tag). */
  private readonly sendBuf = new Uint8Array(new ArrayBuffer(TRANSPORT_HEADER_SIZE + MAX_CONTENT_SIZE + 16 + TAG_SIZE));
  /** Scratch: an opened packet. */
  private readonly recvBuf = new Uint8Array(new ArrayBuffer(MAX_CONTENT_SIZE + 16));
  private readonly addr16 = new Uint8Array(16);
  private readonly addr4 = new Uint8Array(4);
  /** Scratch: a probe or probe reply being built. */
  private readonly probeBuf = new Uint8Array(new ArrayBuffer(MAX_CONTENT_SIZE));

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
    this.selector = options.routeSelector ?? null;
    this.probeListener = options.onProbeReply ?? null;
    this.maxPins = options.maxPinnedFlows ?? DEFAULT_MAX_PINNED_FLOWS;
    this.pinTcpMs = options.pinIdleMs?.tcp ?? DEFAULT_PIN_TCP_MS;
    this.pinUdpMs = options.pinIdleMs?.udp ?? DEFAULT_PIN_UDP_MS;
    this.maxOwnFlows = options.maxOwnFlows ?? DEFAULT_MAX_FLOWS;
    if (!Number.isInteger(this.maxOwnFlows) || this.maxOwnFlows < 1) throw new DeviceConfigError(`maxOwnFlows must be a positive integer, got ${this.maxOwnFlows}`);
    try {
      this.ownFlowTimeouts = resolveFlowTimeouts(options.ownFlowTimeouts);
    } catch (cause) {
      throw new DeviceConfigError(`ownFlowTimeouts: ${(cause as Error).message}`, { cause });
    }
    if (!Number.isInteger(this.maxPins) || this.maxPins < 1) throw new DeviceConfigError(`maxPinnedFlows must be a positive integer, got ${this.maxPins}`);
    if (!(this.pinTcpMs > 0 && this.pinUdpMs > 0)) throw new DeviceConfigError("pinIdleMs values must be positive");
    let probeSource = 0;
    if (options.probeSource !== undefined) {
      try {
        const p = parsePrefix(options.probeSource, { allowBareAddress: true });
        if (p.family !== 4 || p.length !== 32) throw new Error("not an IPv4 address");
        probeSource = ipv4ToUint32(p.bytes);
      } catch (cause) {
        throw new DeviceConfigError(`probeSource ${JSON.stringify(options.probeSource)} is not an IPv4 address`, { cause });
      }
    }
    this.probeSource = probeSource;
    for (let slot = MAX_PIN_SLOTS; slot >= 1; slot--) this.freePinSlots.push(slot);
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
      peer.setPrefixes(p.prefixes);
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
    this.rebuildOutbound();
    for (const peer of this.peers.values()) {
      peer.gatewaySender = this.gateway?.filter.sender(peer.keyText) ?? null;
      peer.acl = this.acl?.peer(peer.keyText) ?? null;
    }
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
      next = new Gateway(config, { seed, previous: this.gateway, headers: this.headers });
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

  /**
   * Inbound ACLs (stage I10; acl.ts): what each peer may send to this device itself, gateway or
   * not. null (the default) lets every packet through, as before ACLs existed; a list (even [])
   * turns them on: a peer without an entry may then send only answers to this device's own
   * flows, which O4 starts recording now (connections opened before ACLs were on are not known:
   * turn them on before traffic flows). Idempotent; validates before changing anything. A new
   * list keeps the own flows, except UDP and other portless flows the old rules admitted the
   * peer's side of and the new ones do not (they may be answers to the peer, not our own).
   */
  setInboundRules(rules: readonly InboundAcl[] | null): void {
    if (rules === null) {
      if (this.acl !== null) this.log.info("device: inbound acl off");
      this.acl = null;
      this.ownFlows = null;
      for (const peer of this.peers.values()) peer.acl = null;
      return;
    }
    let next: InboundAclFilter;
    try {
      next = new InboundAclFilter(rules);
    } catch (cause) {
      if (cause instanceof AclConfigError) throw cause;
      throw new DeviceConfigError(`inbound acl: ${(cause as Error).message}`, { cause });
    }
    const previous = this.acl;
    if (this.ownFlows === null) {
      const b = this.random(4);
      const seed = b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24);
      this.ownFlows = new FlowTracker(new FlowTable({ maxEntries: this.maxOwnFlows, seed }), this.ownFlowTimeouts, true);
    }
    this.acl = next;
    for (const peer of this.peers.values()) peer.acl = next.peer(peer.keyText);
    const revoked = previous === null ? 0 : this.revalidateOwnFlows(previous, next);
    const d = next.describe();
    this.log.info(`device: inbound acl on peers=${d.peers} rules=${d.rules} groups=${d.groups} flows_revoked=${revoked}`);
  }

  /**
   * After an ACL change: forgets own UDP/other flows whose answers the old rules admitted from
   * their peer and the new ones do not. Such a flow may have been opened by our answer to the
   * peer (only TCP tells a SYN apart), and would keep the peer's side open past the revocation;
   * if it was ours, our next packet opens it again.
   */
  private revalidateOwnFlows(previous: InboundAclFilter, next: InboundAclFilter): number {
    const own = this.ownFlows!;
    const now = this.now();
    const k = own.flows.key;
    const h = this.headers;
    const addr = this.addr16;
    return own.flows.retain((_slot, expiresAt) => {
      if (expiresAt <= now) return false;
      const meta = k[0]!;
      if ((meta & KEY_FRAGMENT) !== 0) return true;
      const v6 = (meta & KEY_V6) !== 0;
      const proto = meta & 0xff;
      if (proto === PROTO_TCP || proto === (v6 ? PROTO_ICMPV6 : PROTO_ICMP)) return true;
      // The answer's headers: from the remote end (key words 5..8) to us (1..4), ports swapped.
      own.headersFromKey(h, true);
      let peer: Peer | undefined;
      if (!v6) {
        peer = this.routes.lookupV4(h.s3);
      } else {
        for (let i = 0; i < 4; i++) {
          const w = k[5 + i]!;
          addr[4 * i] = w >>> 24;
          addr[4 * i + 1] = (w >>> 16) & 255;
          addr[4 * i + 2] = (w >>> 8) & 255;
          addr[4 * i + 3] = w & 255;
        }
        peer = this.routes.lookup(addr);
      }
      if (peer === undefined) return true;
      const before = previous.peer(peer.keyText)?.permits(h) ?? false;
      return !before || (next.peer(peer.keyText)?.permits(h) ?? false);
    });
  }

  /**
   * Gateway routes (idempotent; null or [] removes them): each prefix is carried by one of its
   * candidate peers, chosen per destination by the RouteSelector (stage O3). Candidates are peer
   * public keys and need not be configured yet (setPeers may follow). Validates before changing
   * anything; pinned flows survive a call that keeps their gateway a peer.
   */
  setRoutes(routes: readonly RouteConfig[] | null): void {
    const parsed: Route[] = [];
    const seen = new Set<string>();
    (routes ?? []).forEach((r, i) => {
      let prefix: Prefix;
      try {
        prefix = parsePrefix(r.prefix, { mask: true });
      } catch (cause) {
        throw new DeviceConfigError(`route ${i + 1}: prefix ${JSON.stringify(r.prefix)} is invalid`, { cause });
      }
      if (seen.has(prefix.text)) throw new DeviceConfigError(`route ${i + 1}: prefix ${prefix.text} appears twice`);
      seen.add(prefix.text);
      const candidates = r.candidates.map((c, j) => encodeKey(decodeKey(c, `route ${i + 1} candidate ${j + 1}`)));
      parsed.push(new Route(prefix, [...new Set(candidates)]));
    });
    this.gatewayRoutes = parsed.length === 0 ? null : parsed;
    if (this.gatewayRoutes !== null && this.pins === null) {
      const b = this.random(4);
      const seed = b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24);
      this.pins = new FlowTable({ maxEntries: this.maxPins, seed });
    }
    if (this.gatewayRoutes === null) this.pins = null;
    this.rebuildOutbound();
    this.log.info(`device: routes set prefixes=${parsed.length} selector=${this.selector !== null}`);
  }

  /** Installs (or, with null, removes) the selector for routed destinations. */
  setRouteSelector(selector: RouteSelector | null): void {
    this.selector = selector;
  }

  /** Sets (or clears) the callback for replies to our probes; see DeviceOptions.onProbeReply. */
  setProbeListener(listener: ((peerPublicKey: string, rttMs: number, report: HealthReport | null) => void) | null): void {
    this.probeListener = listener;
  }

  /**
   * What this device tells every peer that probes it (a gateway: the subnets its upstream
   * monitor withdrew, and whether an admin drains it). Idempotent; validates before changing.
   */
  setHealthReport(report: HealthReport): void {
    let block: Uint8Array;
    try {
      block = encodeReport(report);
    } catch (cause) {
      throw new DeviceConfigError(`health report: ${(cause as Error).message}`, { cause });
    }
    const decoded = decodeReport(block)!;
    const before = this.healthReport;
    this.healthBlock = block;
    this.healthReport = decoded;
    if (before.draining !== decoded.draining || before.withdrawn.join(",") !== decoded.withdrawn.join(",")) {
      this.log.info(`device: health report withdrawn=${decoded.withdrawn.join(",") || "none"} draining=${decoded.draining}`);
    }
  }

  /** The report probe replies carry now (canonical prefix texts). */
  getHealthReport(): HealthReport {
    return this.healthReport;
  }

  /** Bytes received from a peer so far (the failover loop's "heard from it" signal), -1 if unknown. */
  rxBytesOf(publicKey: string): number {
    return this.peers.get(publicKey)?.rxBytes ?? -1;
  }

  private rebuildOutbound(): void {
    const routes = this.gatewayRoutes;
    if (routes === null) {
      this.outbound = this.routes;
      return;
    }
    const table = new PrefixTable<Peer | Route>();
    for (const [prefix, peer] of this.routes) table.insert(prefix, peer);
    for (const route of routes) table.insert(route.prefix, route);
    this.outbound = table;
  }

  private addPeer(key: Uint8Array, psk: Uint8Array | undefined): Peer {
    const handshake = this.noise.newHandshake(key, psk);
    const cookies = new CookieGenerator(this.crypto, key, this.now);
    const timers = new PeerTimers(this.timerConfig, this.now, (max) => this.jitter(max));
    const peer = new Peer(Uint8Array.from(key), handshake, cookies, timers);
    peer.initiationWins = this.noise.initiationWins(peer.publicKey);
    peer.pinSlot = this.freePinSlots.pop() ?? 0;
    if (peer.pinSlot !== 0) this.pinPeers[peer.pinSlot] = peer;
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
    const slot = peer.pinSlot;
    if (slot !== 0) {
      this.pins?.retain((_s, _e, owner) => owner !== slot);
      this.pinPeers[slot] = undefined;
      this.freePinSlots.push(slot);
      peer.pinSlot = 0;
    }
    this.log.debug(`device: peer removed key=${peer.keyText}`);
  }

  // ---------------------------------------------------------------- outbound

  /** O1: one IP packet from the TUN. Never throws: a failure is counted as `internal-error`. */
  handleTunPacket(packet: Uint8Array): void {
    try {
      this.send(packet);
    } catch (err) {
      this.drop(null, "internal-error", packet, packet.length);
      this.log.error(`device: internal error on a TUN packet: ${String(err)}`);
    }
  }

  private send(packet: Uint8Array): void {
    const len = packet.length;
    // O2 parse, O3 route
    const version = ipVersion(packet, len);
    let target: Peer | Route | undefined;
    if (version === 4) {
      target = this.outbound.lookupV4(ipv4Destination(packet));
    } else if (version === 6) {
      target = this.outbound.lookup(ipv6Destination(packet, this.addr16));
    } else {
      this.drop(null, "malformed-tun-packet", packet, len);
      return;
    }
    if (len > MAX_CONTENT_SIZE) {
      this.drop(null, "malformed-tun-packet", packet, len);
      return;
    }
    if (target === undefined) {
      this.drop(null, "no-peer-for-destination", packet, len);
      return;
    }
    let peer: Peer;
    if (target instanceof Route) {
      const chosen = this.selectGateway(packet, len, version);
      if (chosen === null) return;
      peer = chosen;
    } else {
      peer = target;
    }
    // O4 flow
    const gateway = this.gateway;
    const own = this.ownFlows;
    let parsed = false;
    if (gateway !== null) {
      const verdict = gateway.outbound(packet, len, this.now());
      if (verdict === ALLOW) {
        this.transmit(peer, packet, len); // a LAN's answer, forwarded: not our own flow
        return;
      }
      if (verdict !== SELF) {
        if (verdict === MALFORMED_IP) this.drop(null, "malformed-tun-packet", packet, len);
        else this.drop(peer, gateway.count(verdict), packet, len);
        return;
      }
      parsed = true;
    }
    if (own !== null) {
      const h = this.headers;
      if (!parsed && h.parse(packet, len) !== PARSE_OK) {
        this.drop(null, "malformed-tun-packet", packet, len);
        return;
      }
      if (h.fragment !== FRAG_LATER && own.open(h, this.now()) === TABLE_FULL) {
        this.drop(peer, "flow-table-full", packet, len);
        return;
      }
    }
    this.transmit(peer, packet, len);
  }

  /**
   * O3 for a routed destination: the selector's gateway (the pinned one for a TCP/UDP flow it
   * still allows), or null after counting the drop. `addr16` holds an IPv6 destination already.
   */
  private selectGateway(packet: Uint8Array, len: number, version: 4 | 6): Peer | null {
    const selector = this.selector;
    if (selector === null) {
      this.drop(null, "no-healthy-gateway", packet, len);
      return null;
    }
    let dst = this.addr16;
    if (version === 4) {
      dst = this.addr4;
      dst[0] = packet[16]!;
      dst[1] = packet[17]!;
      dst[2] = packet[18]!;
      dst[3] = packet[19]!;
    }
    const pins = this.pins;
    let pinnable = false;
    let slot = -1;
    let answer;
    if (pins !== null && selector.lookupPinned !== undefined && this.pinKey(packet, len, pins)) {
      pinnable = true;
      slot = pins.find(this.now());
      const owner = slot >= 0 ? this.pinPeers[pins.state(slot)] : undefined;
      answer = owner === undefined ? selector.lookup(dst) : selector.lookupPinned(dst, owner.keyText);
    } else {
      answer = selector.lookup(dst);
    }
    const id = answer.gatewayId;
    if (id === null) {
      this.drop(null, "no-healthy-gateway", packet, len);
      return null;
    }
    const peer = this.peers.get(id);
    if (peer === undefined) {
      this.drop(null, "route-gateway-unknown", packet, len);
      return null;
    }
    if (pinnable && peer.pinSlot !== 0) {
      const now = this.now();
      const expires = now + (this.headers.proto === PROTO_TCP ? this.pinTcpMs : this.pinUdpMs);
      if (slot >= 0) pins!.update(slot, expires, peer.pinSlot);
      else pins!.upsert(now, expires, peer.pinSlot);
    }
    return peer;
  }

  /** Loads a TCP/UDP packet's flow key into the pin table's scratch key; false for anything else. */
  private pinKey(packet: Uint8Array, len: number, pins: FlowTable): boolean {
    const h = this.headers;
    if (h.parse(packet, len) !== PARSE_OK || h.fragment === FRAG_LATER) return false;
    if (h.proto !== PROTO_TCP && h.proto !== PROTO_UDP) return false;
    const k = pins.key;
    k[0] = h.proto | (h.family === 6 ? KEY_V6 : 0);
    k[1] = h.s0;
    k[2] = h.s1;
    k[3] = h.s2;
    k[4] = h.s3;
    k[5] = h.d0;
    k[6] = h.d1;
    k[7] = h.d2;
    k[8] = h.d3;
    k[9] = ((h.sport << 16) | h.dport) >>> 0;
    return true;
  }

  /** O5 session, O6 seal, O7 send, O8 timers: `packet[0..len)` to `peer`. */
  private transmit(peer: Peer, packet: Uint8Array, len: number): void {
    const kp = peer.current;
    if (peer.staged.length === 0 && kp !== null && this.usable(kp)) {
      this.sealAndSend(peer, kp, packet, len);
      this.afterSend(peer, len > 0);
      return;
    }
    this.stage(peer, packet.slice(0, len));
    this.sendStagedPackets(peer);
  }

  // ---------------------------------------------------------------- probes

  /**
   * Sends one probe to the peer (see the module comment): false when it is not a configured
   * peer. Never throws. With no usable session, starts a handshake instead and counts `unsent`.
   */
  probe(publicKey: string): boolean {
    const peer = this.peers.get(publicKey);
    if (peer === undefined) return false;
    try {
      peer.probeUnanswered++;
      const kp = peer.current;
      if (kp === null || !this.usable(kp) || peer.endpoint === null) {
        peer.probeStats.unsent++;
        this.sendHandshakeInitiation(peer, false);
      } else {
        if (peer.probeUnanswered > PROBE_REHANDSHAKE_AFTER) this.sendHandshakeInitiation(peer, false);
        const seq = (peer.probeSeq = (peer.probeSeq + 1) >>> 0);
        const i = seq % PROBE_WINDOW;
        peer.probeSeqs[i] = seq;
        peer.probeSentAt[i] = this.now();
        const n = buildProbe(this.probeBuf, this.probeSource, peer.probeDestination, seq);
        peer.probeStats.sent++;
        this.transmit(peer, this.probeBuf, n);
      }
      this.flush();
    } catch (err) {
      this.drop(peer, "internal-error");
      this.log.error(`device: internal error probing peer=${peer.keyText}: ${String(err)}`);
    }
    return true;
  }

  /** I7: a probe request from `peer` (`len` bytes in `buf`): answered with our health report. */
  private answerProbe(peer: Peer, buf: Uint8Array, len: number): void {
    const now = this.now();
    const refill = ((now - peer.probeTokensAt) * PROBE_REPLIES_PER_S) / 1000;
    const tokens = Math.min(PROBE_REPLIES_PER_S, peer.probeTokens + (refill > 0 ? refill : 0));
    peer.probeTokensAt = now;
    if (tokens < 1) {
      peer.probeTokens = tokens;
      this.drop(peer, "probe-rate-limited", buf, len);
      return;
    }
    peer.probeTokens = tokens - 1;
    const n = buildProbeReply(buf, this.probeBuf, this.healthBlock);
    peer.probeStats.answered++;
    this.transmit(peer, this.probeBuf, n);
  }

  /** I7: a reply to one of our probes. */
  private probeReplied(peer: Peer, buf: Uint8Array, len: number): void {
    const seq = probeSequence(buf);
    const i = seq % PROBE_WINDOW;
    const sentAt = peer.probeSentAt[i]!;
    if (peer.probeSeqs[i] !== seq || Number.isNaN(sentAt) || seq === 0) {
      this.drop(peer, "probe-unexpected", buf, len);
      return;
    }
    peer.probeSentAt[i] = Number.NaN;
    peer.probeUnanswered = 0;
    this.rttSample(peer, this.now() - sentAt);
    peer.probeStats.replies++;
    const block = replyReportBytes(buf, len);
    const last = peer.reportBytes;
    if (last === null || !sameBytes(last, block)) {
      peer.reportBytes = block.slice();
      peer.report = decodeReport(block);
    }
    const listener = this.probeListener;
    if (listener === null) return;
    try {
      listener(peer.keyText, Math.max(0, this.now() - sentAt), peer.report);
    } catch (err) {
      this.log.error(`device: probe listener failed peer=${peer.keyText}: ${String(err)}`);
    }
  }

  private usable(kp: Keypair): boolean {
    return kp.sendCounter < this.timerConfig.rejectAfterMessages && this.now() - kp.createdMs < this.timerConfig.rejectAfterTimeMs;
  }

  private stage(peer: Peer, packet: Uint8Array): void {
    if (peer.staged.length >= this.maxStaged) {
      const oldest = peer.staged.shift()!;
      this.drop(peer, "staged-overflow", oldest, oldest.length);
    }
    peer.staged.push(packet);
  }

  /** O6 seal, O7 send. */
  private sealAndSend(peer: Peer, kp: Keypair, packet: Uint8Array, len: number): void {
    const endpoint = peer.endpoint;
    if (endpoint === null) {
      this.drop(peer, "no-endpoint", packet, len);
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
    peer.lastInitiationSentMs = now;
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
    peer.responseSentMs = peer.lastSentHandshakeMs;
    // Our own initiation, if one is in flight, was set aside and must keep its index.
    if (peer.handshake.pendingInitiation === null) this.releaseHandshakeIndex(peer);
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
      this.drop(null, "internal-error", data, data.length, from);
      this.log.error(`device: internal error on datagram from ${from.address}:${from.port}: ${String(err)}`);
    }
  }

  private receive(data: Uint8Array, from: Endpoint): void {
    const len = data.length;
    // I2 classify
    if (len < 4 || data[1] !== 0 || data[2] !== 0 || data[3] !== 0) {
      this.drop(null, "malformed-unknown-type", data, len, from);
      return;
    }
    switch (data[0]) {
      case MESSAGE_TRANSPORT:
        if (len < KEEPALIVE_SIZE) this.drop(null, "malformed-transport", data, len, from);
        else this.receiveTransport(data, from);
        return;
      case MESSAGE_INITIATION:
        if (len !== INITIATION_SIZE) this.drop(null, "malformed-initiation", data, len, from);
        else this.receiveHandshake(data, from);
        return;
      case MESSAGE_RESPONSE:
        if (len !== RESPONSE_SIZE) this.drop(null, "malformed-response", data, len, from);
        else this.receiveHandshake(data, from);
        return;
      case MESSAGE_COOKIE_REPLY:
        if (len !== COOKIE_REPLY_SIZE) this.drop(null, "malformed-cookie-reply", data, len, from);
        else this.receiveCookieReply(data, from);
        return;
      default:
        this.drop(null, "malformed-unknown-type", data, len, from);
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
      this.drop(null, "mac1-invalid", data, data.length, from);
      return;
    }
    if (loaded) {
      const src = sourceBytes(from.address, from.port);
      if (!this.checker.checkMac2(data, src)) {
        const reply = this.checker.createReply(data, readU32(data, 4), src);
        this.cookieRepliesSent++;
        this.drop(null, "under-load", data, data.length, from);
        this.bind.sendDatagram(reply, from);
        this.flush();
        return;
      }
      if (!this.limiter.allow(from.address)) {
        this.drop(null, "rate-limited", data, data.length, from);
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
        this.drop(result.reason === "unknown-peer" ? null : peer, result.reason, data, data.length, from);
        return;
      }
      if (peer === null) return;
      peer.lastRxMs = now;
      peer.timers.anyAuthenticatedPacketTraversal();
      peer.timers.anyAuthenticatedPacketReceived();
      this.setEndpoint(peer, from);
      peer.rxBytes += data.length;
      this.log.debug(`device: handshake initiation received peer=${peer.keyText}`);
      if (peer.handshake.pendingInitiation !== null && !this.crossedInitiation(peer)) return;
      this.sendHandshakeResponse(peer, from);
      this.flush();
      return;
    }
    const entry = this.indices.get(readU32(data, 8));
    if (entry === undefined || entry.keypair !== null || entry.peer.handshake.localIndex !== readU32(data, 8)) {
      this.drop(null, "unknown-receiver", data, data.length, from);
      return;
    }
    const peer = entry.peer;
    const rejection = this.noise.consumeResponse(peer.handshake, data);
    if (rejection !== null) {
      this.drop(peer, rejection, data, data.length, from);
      return;
    }
    // The response answers our latest initiation (an older one's index was released): a round trip.
    this.rttSample(peer, now - peer.lastInitiationSentMs);
    peer.lastRxMs = now;
    this.setEndpoint(peer, from);
    peer.rxBytes += data.length;
    peer.timers.anyAuthenticatedPacketTraversal();
    peer.timers.anyAuthenticatedPacketReceived();
    if (peer.handshake.crossed && !peer.initiationWins && peer.next === null) {
      // Ours crossed the peer's, lost the tie and was kept only as a fallback, and the peer's
      // session is confirmed already (promoted from next): using ours as well would leave two
      // sessions (crossedInitiation). The response authenticated; its session is not used.
      this.releaseHandshakeIndex(peer);
      peer.handshake.clear();
      this.log.debug(`device: crossed handshake superseded peer=${peer.keyText}`);
      return;
    }
    this.beginSymmetricSession(peer);
    peer.timers.sessionDerived();
    this.handshakeComplete(peer);
    this.log.debug(`device: handshake complete peer=${peer.keyText} role=initiator`);
    this.sendKeepalive(peer);
    this.flush();
  }

  /**
   * I3, the peer's initiation consumed while ours is in flight (set aside by Noise). If both
   * sides answered both, each would hold two sessions with no order-free way to agree on one: a side that settles on the other's can find the other has already moved to
   * its own, and the pair ends each sending on a session the other holds only as `previous`,
   * which the next rotation deletes under in-flight packets. So one side answers:
   * - ours is older than CROSSING_WINDOW_MS: taken as lost; forget it, answer (wireguard-go).
   * - we win the tie: keep ours, do not answer; the peer answers ours and we settle on it.
   * - we lose: answer, and keep ours in flight for a peer that will not answer it (wireguard-go,
   *   which forgets its own; then ours completes and both settle on it). Should the winner's
   *   session be confirmed first, the response to ours is superseded (receiveHandshake).
   * Returns whether to answer.
   */
  private crossedInitiation(peer: Peer): boolean {
    const hs = peer.handshake;
    if (this.now() - peer.lastInitiationSentMs >= CROSSING_WINDOW_MS) {
      this.releaseHandshakeIndex(peer);
      hs.dropPendingInitiation();
      return true;
    }
    if (peer.initiationWins) {
      hs.restorePendingInitiation();
      this.log.debug(`device: crossed initiation not answered, ours wins peer=${peer.keyText}`);
      return false;
    }
    this.log.debug(`device: crossed initiation answered, ours kept peer=${peer.keyText}`);
    return true;
  }

  /** I4: a cookie reply to one of our handshake messages. */
  private receiveCookieReply(data: Uint8Array, from: Endpoint): void {
    const entry = this.indices.get(readU32(data, 4));
    if (entry === undefined) {
      this.drop(null, "unknown-receiver", data, data.length, from);
      return;
    }
    if (!entry.peer.cookies.consumeReply(data)) this.drop(entry.peer, "cookie-invalid", data, data.length, from);
  }

  /** I5–I10: a transport message. */
  private receiveTransport(data: Uint8Array, from: Endpoint): void {
    // I5 open
    const entry = this.indices.get(readU32(data, 4));
    if (entry === undefined || entry.keypair === null) {
      this.drop(null, "unknown-receiver", data, data.length, from);
      return;
    }
    const kp = entry.keypair;
    const peer = entry.peer;
    const now = this.now();
    if (now - kp.createdMs >= this.timerConfig.rejectAfterTimeMs) {
      this.drop(peer, "keypair-expired", data, data.length, from);
      return;
    }
    const buf = this.recvBuf;
    const n = this.codec.open(kp, data, buf);
    if (n < 0) {
      this.drop(peer, "decrypt-failed", data, data.length, from);
      return;
    }
    if (!kp.replay.check(counterHi(data), counterLo(data))) {
      this.drop(peer, "replayed", data, data.length, from);
      return;
    }
    peer.lastRxMs = now;
    // I6 confirm
    if (this.receivedWithKeypair(peer, kp)) {
      // The initiator answers our response at once (a keepalive or its staged data): a round
      // trip, unless that packet was lost and a later one confirms (then the sample is too old).
      const sent = peer.responseSentMs;
      peer.responseSentMs = Number.NaN;
      if (now - sent <= this.timerConfig.rekeyTimeoutMs) this.rttSample(peer, now - sent);
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
    const length = ipPacketLength(buf, n);
    if (length < 0) {
      this.drop(peer, "malformed-ip", buf, n);
      return;
    }
    // I7 probe
    if (length >= PROBE_SIZE) {
      const kind = classifyProbe(buf, length);
      if (kind !== NOT_PROBE) {
        if (kind === PROBE_REQUEST) this.answerProbe(peer, buf, length);
        else this.probeReplied(peer, buf, length);
        return;
      }
    }
    // I8 allow: the single owner answers fast; a prefix several peers list needs the sender's own list.
    let allowed: boolean;
    if (buf[0]! >> 4 === 4) {
      const src = ipv4Source(buf);
      allowed = this.routes.lookupV4(src) === peer || peer.allowsV4(src);
    } else {
      const src = ipv6Source(buf, this.addr16);
      allowed = this.routes.lookup(src) === peer || peer.allowsV6(src);
    }
    if (!allowed) {
      this.drop(peer, "source-not-allowed", buf, length);
      return;
    }
    // I9 gateway
    const gateway = this.gateway;
    let parsed = false;
    if (gateway !== null) {
      const verdict = gateway.inbound(peer.gatewaySender, buf, length, this.now());
      if (verdict === ALLOW) {
        this.tun.writePacket(buf.subarray(0, length)); // forwarded into a LAN: I11
        return;
      }
      if (verdict !== SELF) {
        this.drop(peer, gateway.count(verdict), buf, length);
        return;
      }
      parsed = true;
    }
    // I10 acl
    if (this.ownFlows !== null) {
      if (!parsed && this.headers.parse(buf, length) !== PARSE_OK) {
        this.drop(peer, "malformed-ip", buf, length);
        return;
      }
      const reason = this.inboundAcl(peer);
      if (reason !== null) {
        this.drop(peer, reason, buf, length);
        return;
      }
    }
    // I11 deliver
    this.tun.writePacket(buf.subarray(0, length));
  }

  /** I10 on the parsed headers: null to deliver, else the drop reason. */
  private inboundAcl(peer: Peer): DropReason | null {
    const h = this.headers;
    const own = this.ownFlows!;
    const now = this.now();
    if (h.fragment === FRAG_LATER) return own.fragmentKnown(h, now) ? null : "acl-denied";
    if (!own.answer(h, now)) {
      const acl = peer.acl;
      if (acl === null || !acl.permits(h)) return "acl-denied";
    }
    if (h.fragment === FRAG_FIRST && !own.recordFragment(h, now)) return "flow-table-full";
    return null;
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

  /**
   * Counts a drop and records it in the drop log: `packet[0..len)` is the IP packet, or, with
   * `from`, the datagram as it arrived. On the packet path: nothing here allocates.
   */
  private drop(peer: Peer | null, reason: DropReason, packet: Uint8Array | null = null, len = 0, from: Endpoint | null = null): void {
    const counts = peer === null ? this.drops : peer.drops;
    counts[reason] = (counts[reason] ?? 0) + 1;
    this.dropLog.record(this.now(), reason, peer === null ? null : peer.keyText, packet, len, from);
  }

  /** One round-trip sample (ms) into the peer's smoothed RTT (EWMA, gain 1/8 as TCP's SRTT). */
  private rttSample(peer: Peer, ms: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) return;
    peer.rttMs = Number.isNaN(peer.rttMs) ? ms : peer.rttMs + (ms - peer.rttMs) / 8;
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
    this.ownFlows?.sweep(now);
    this.pins?.sweep(now, PIN_SWEEP_SLOTS);
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
        for (const packet of peer.staged) this.drop(peer, "handshake-timeout", packet, packet.length);
        peer.staged.length = 0;
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
        probes: { ...peer.probeStats },
        lastRxMs: peer.lastRxMs,
        rttMs: Number.isNaN(peer.rttMs) ? null : Math.round(peer.rttMs * 100) / 100,
      });
    }
    if (this.dropSnapshot.seq !== this.dropLog.seq) this.dropSnapshot = this.dropLog.snapshot();
    return {
      publicKey: this.publicKey,
      peers,
      drops: { ...this.drops },
      gateway: this.gatewayStats(),
      cookieRepliesSent: this.cookieRepliesSent,
      underLoad: this.now() < this.underLoadUntilMs,
      routes: this.routeStats(),
      acl: this.aclStats(),
      recentDrops: this.dropSnapshot,
    };
  }

  /**
   * Drops recorded after `sinceSeq` (drop-log.ts), oldest first, at most `max`; `lost` counts
   * the later ones the ring overwrote (or `max` left out). Allocates: the stats path, not per packet.
   */
  recentDrops(sinceSeq = 0, max?: number): DropLogRead {
    return this.dropLog.since(sinceSeq, max);
  }

  private aclStats(): AclStats | null {
    const acl = this.acl;
    const own = this.ownFlows;
    if (acl === null || own === null) return null;
    return { peers: acl.peerCount, rules: acl.ruleCount, flows: own.flows.size, maxFlows: own.flows.maxEntries };
  }

  private routeStats(): RouteStats | null {
    const routes = this.gatewayRoutes;
    if (routes === null) return null;
    return { prefixes: routes.length, pinnedFlows: this.pins?.size ?? 0, maxPinnedFlows: this.maxPins, selector: this.selector !== null };
  }

  private gatewayStats(): GatewayStats | null {
    const g = this.gateway;
    if (g === null) return null;
    const d = g.filter.describe();
    return { flows: g.flows.size, maxFlows: g.flows.maxEntries, drops: { ...g.drops }, senders: d.senders, rules: d.rules };
  }

  /** Session facts for one peer (tests and diagnostics): which keypairs exist, counters. */
  sessionInfo(publicKey: string): {
    current: boolean;
    next: boolean;
    previous: boolean;
    sendCounter: number;
    staged: number;
    /** The current keypair's receiver indices (ours, the peer's): two ends of one session mirror them. */
    currentIndices: [number, number] | null;
  } | null {
    const peer = this.peers.get(publicKey);
    if (peer === undefined) return null;
    const kp = peer.current;
    return {
      current: kp !== null,
      next: peer.next !== null,
      previous: peer.previous !== null,
      sendCounter: kp?.sendCounter ?? 0,
      staged: peer.staged.length,
      currentIndices: kp === null ? null : [kp.localIndex, kp.remoteIndex],
    };
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
