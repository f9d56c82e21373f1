/**
 * @module core/agent/status
 * What `waygate status` shows, Enclave-style: the local identity, virtual address and network,
 * then one block per peer (peer state, identity and public key, endpoint, last activity,
 * transfer, link RTT, virtual address, Gateway for, DNS names, ACLs). `buildStatus` assembles
 * the data (pure; the running agent and the offline fallback both use it); `--json` prints it
 * as it is; `renderStatus` is the text form. There is no private key anywhere in here: the
 * identity comes in as a PublicIdentity.
 *
 * Peer state: `up` (a handshake within the last 180 s, WireGuard's REJECT_AFTER_TIME),
 * `connecting` (initiations sent, no current session), `idle` (configured, no traffic asked for
 * a session yet, or the session expired), `unknown` (the agent is not running: data from disk).
 * Last activity: the later of the latest handshake and the latest authenticated packet from
 * the peer (keepalives count: a quiet peer that keeps its NAT mapping open is alive). Link RTT:
 * the Device's smoothed round trip (handshakes and probes, core/dataplane/device.ts), null ("-")
 * before the first sample; text `0.4 ms`, JSON the number.
 * `dns` (optional) is filled in by the running agent's DNS service (platform/linux/agent-dns.ts):
 * where the stub listens, its zone, where it forwards, and the gateway forwarder's upstreams.
 * `failover` (optional, the running agent: platform/linux/agent-failover.ts) has one entry per routed
 * subnet (JSON keeps them all): its group, the active gateway, the candidates with their data-path
 * health (up, down, unknown, withdrawn), RTT, priority and drain, and the last switch with its
 * reason and time; `upstream` (a gateway) is what it reports about its own LANs. Text: one block
 * per failover group before the peers (a 10,000-entry subnet filter routes ~4,094 subnets through
 * the same gateways: one block, not 4,094): `Subnet: P` for a group of one, else `Subnets: P1, P2,
 * P3 and N more`; the rows are the first subnet's, plus where the group's subnets are carried
 * when that differs between them (fallbacks to covering routes).
 */
import type { DeviceStats, DropCounts, PeerStats } from "../dataplane/device.ts";
import type { UpstreamStatus } from "../failover/upstream.ts";
import type { NetMap, NetMapGatewaySubnet } from "../policy/netmap.ts";
import type { FailoverCandidateView, SubnetFailoverStatus } from "./failover-config.ts";
import type { SyncState } from "./client.ts";
import type { PublicIdentity } from "./state.ts";

export const SESSION_FRESH_MS = 180_000;

export type PeerState = "up" | "connecting" | "idle" | "unknown";

export interface PeerAcl {
  direction: "in" | "out" | "forward";
  action: "allow" | "deny";
  src: string;
  dst: string;
  protocol: string;
  ports: string | null;
  policy: string;
}

export interface PeerStatus {
  id: string;
  name: string;
  publicKey: string;
  state: PeerState;
  endpoint: string | null;
  /** Wall-clock ms of the latest handshake, null when none. */
  lastHandshakeAt: number | null;
  /** Wall-clock ms of the latest handshake or packet from the peer, whichever is later; null when none. */
  lastActivityAt?: number | null;
  rxBytes: number;
  txBytes: number;
  /** Smoothed round trip (ms) the Device measured, null before the first sample. */
  rttMs: number | null;
  virtualAddress: string;
  allowedIps: string[];
  /** Subnets this peer routes for us. */
  gatewayFor: string[];
  dnsNames: string[];
  acls: PeerAcl[];
  drops: DropCounts;
}

/** The agent's DNS as `waygate status` shows it. */
export interface DnsStatus {
  zone: string;
  /** "100.64.0.2:53", "127.0.0.1:53": where the stub is bound. */
  listen: string[];
  /** Gateways forwarded to, in the order tried ("GW001 100.64.0.1"); empty: REFUSED locally. */
  forwardTo: string[];
  /** This system's gateway forwarder, when it is an active gateway. */
  forwarder: { upstreams: string[]; hostsEntries: number } | null;
  /** systemd-resolved registration of the stub on the TUN link. */
  registration: "resolved" | "manual" | "skipped" | "failed" | "off";
}

export interface AgentStatus {
  /** When the answer was made (wall-clock ms). */
  now: number;
  /** False: the agent is not running; the NetMap is the one saved on disk. */
  running: boolean;
  version: string;
  self: {
    systemId: string | null;
    name: string | null;
    publicKey: string;
    virtualAddress: string | null;
    network: string | null;
    serverUrl: string | null;
    tags: string[];
    approved: boolean | null;
    active: boolean | null;
    interface: string | null;
    listenPort: number | null;
    /** Present when this system acts as a gateway: the subnets it serves. */
    gateway: { subnets: NetMapGatewaySubnet[] } | null;
    discoveredSubnets: string[];
  };
  netmap: { revision: number; source: "server" | "disk"; appliedAt: number | null } | null;
  control: {
    connected: boolean;
    connects: number;
    disconnects: number;
    malformedEvents: number;
    lastEventAt: number | null;
    lastError: string | null;
    lastReportAt: number | null;
    reportError: string | null;
  } | null;
  peers: PeerStatus[];
  drops: DropCounts;
  /** Absent when the agent runs without DNS (or is not running). */
  dns?: DnsStatus | null;
  /** Per routed subnet: gateway choice and health (the running agent; absent from disk). */
  failover?: SubnetFailoverStatus[];
  /** A gateway's own subnets: can it still reach them (withdrawn ones are reported to clients)? */
  upstream?: UpstreamStatus[];
}

export interface StatusInput {
  now: number;
  running: boolean;
  version: string;
  identity: PublicIdentity;
  interfaceName: string | null;
  listenPort: number | null;
  netmap: { revision: number; netmap: NetMap; source: "server" | "disk"; appliedAt: number | null } | null;
  stats: DeviceStats | null;
  sync: SyncState | null;
  discoveredSubnets: string[];
  lastReportAt?: number | null;
  reportError?: string | null;
}

function peerState(running: boolean, s: PeerStats | undefined, now: number): PeerState {
  if (!running || s === undefined) return "unknown";
  if (s.latestHandshakeMs > 0 && now - s.latestHandshakeMs < SESSION_FRESH_MS) return "up";
  if (s.handshakeInitiations > s.handshakes) return "connecting";
  return "idle";
}

function endpointText(ep: { address: string; port: number } | null | undefined): string | null {
  if (!ep) return null;
  return ep.address.includes(":") ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`;
}

function lastActivity(s: PeerStats | undefined): number | null {
  if (s === undefined) return null;
  const at = Math.max(s.latestHandshakeMs, s.lastRxMs ?? 0);
  return at > 0 ? at : null;
}

export function buildStatus(input: StatusInput): AgentStatus {
  const e = input.identity.enrolment;
  const map = input.netmap?.netmap ?? null;
  const stats = new Map((input.stats?.peers ?? []).map((p) => [p.publicKey, p]));
  const peers: PeerStatus[] = (map?.peers ?? []).map((p) => {
    const s = stats.get(p.publicKey);
    const acls: PeerAcl[] = [];
    for (const [direction, rules] of [["out", map!.outboundRules], ["in", map!.inboundRules]] as const) {
      for (const r of rules) {
        if (r.peer !== p.id) continue;
        acls.push({ direction, action: r.action, src: r.src, dst: r.dst, protocol: r.protocol, ports: r.ports ?? null, policy: r.policy });
      }
    }
    for (const r of map!.gatewayRules) {
      if (r.sender !== p.id) continue;
      acls.push({ direction: "forward", action: r.action, src: r.senderAddress, dst: r.dst, protocol: r.protocol, ports: r.ports ?? null, policy: r.policy });
    }
    return {
      id: p.id,
      name: p.name,
      publicKey: p.publicKey,
      state: peerState(input.running, s, input.now),
      endpoint: endpointText(s?.endpoint) ?? p.endpoint ?? null,
      lastHandshakeAt: s && s.latestHandshakeMs > 0 ? s.latestHandshakeMs : null,
      lastActivityAt: lastActivity(s),
      rxBytes: s?.rxBytes ?? 0,
      txBytes: s?.txBytes ?? 0,
      rttMs: s?.rttMs ?? null,
      virtualAddress: p.virtualAddress,
      allowedIps: [...p.allowedIps],
      gatewayFor: [...p.gatewayFor],
      dnsNames: [...p.dnsNames],
      acls,
      drops: { ...(s?.drops ?? {}) },
    };
  });
  const sync = input.sync;
  return {
    now: input.now,
    running: input.running,
    version: input.version,
    self: {
      systemId: e?.systemId ?? null,
      name: map?.self.name ?? e?.hostname ?? null,
      publicKey: input.identity.publicKey,
      virtualAddress: map?.self.virtualAddress ?? e?.virtualAddress ?? null,
      network: map?.self.network ?? e?.network ?? null,
      serverUrl: e?.serverUrl ?? null,
      tags: [...(e?.tags ?? [])],
      approved: e?.approved ?? null,
      active: map ? map.self.active : null,
      interface: input.interfaceName,
      listenPort: input.listenPort,
      gateway: map?.self.gateway ? { subnets: map.self.gateway.subnets.map((s) => ({ ...s })) } : null,
      discoveredSubnets: [...input.discoveredSubnets],
    },
    netmap: input.netmap ? { revision: input.netmap.revision, source: input.netmap.source, appliedAt: input.netmap.appliedAt } : null,
    control: sync
      ? {
          connected: sync.connected,
          connects: sync.connects,
          disconnects: sync.disconnects,
          malformedEvents: sync.malformed,
          lastEventAt: sync.lastEventAt,
          lastError: sync.lastError,
          lastReportAt: input.lastReportAt ?? null,
          reportError: input.reportError ?? null,
        }
      : null,
    peers,
    drops: { ...(input.stats?.drops ?? {}) },
  };
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(2)} ${units[i]}`;
}

/** "0.4 ms" below 10 ms (sub-millisecond LAN links stay readable), "23 ms" above. */
export function formatRtt(ms: number): string {
  return ms < 9.95 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

export function formatAgo(thenMs: number | null, nowMs: number): string {
  if (thenMs === null) return "never";
  const s = Math.max(0, Math.round((nowMs - thenMs) / 1000));
  if (s < 60) return `${s} second${s === 1 ? "" : "s"} ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} minute${m === 1 ? "" : "s"}, ${s % 60} seconds ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} hour${h === 1 ? "" : "s"}, ${m % 60} minutes ago`;
  return `${Math.floor(h / 24)} days ago`;
}

const STATE_TEXT: Record<PeerState, string> = { up: "Up", connecting: "Connecting", idle: "Idle (no session)", unknown: "Unknown (agent not running)" };

function aclText(a: PeerAcl): string {
  const proto = a.protocol === "any" ? "any" : a.ports ? `${a.protocol}/${a.ports}` : a.protocol;
  const dir = a.direction === "out" ? "to peer" : a.direction === "in" ? "from peer" : "forwarded for peer";
  return `${a.action} ${proto} ${dir}: ${a.src} -> ${a.dst} (policy ${a.policy})`;
}

/** Label column width: "Virtual address:" and two spaces, the same in every block. */
const LABEL_WIDTH = 18;

function block(rows: [string, string | string[]][], indent: string): string[] {
  const width = Math.max(LABEL_WIDTH, ...rows.map(([k]) => k.length + 2));
  const out: string[] = [];
  for (const [label, value] of rows) {
    const values = Array.isArray(value) ? (value.length === 0 ? ["-"] : value) : [value];
    values.forEach((v, i) => out.push(`${indent}${(i === 0 ? `${label}:` : "").padEnd(width)}${v}`));
  }
  return out;
}

function dnsRows(d: DnsStatus): [string, string | string[]][] {
  return [
    ["DNS", `stub ${d.listen.join(", ") || "not listening"}, zone ${d.zone}, registration ${d.registration}`],
    ["DNS forwards to", d.forwardTo.length > 0 ? d.forwardTo : "no gateway (other names: REFUSED)"],
    ...(d.forwarder ? [["DNS forwarder", `upstreams ${d.forwarder.upstreams.join(", ") || "none"}, ${d.forwarder.hostsEntries} hosts entries`] as [string, string]] : []),
  ];
}

const CANDIDATE_STATE: Record<FailoverCandidateView["state"], string> = {
  up: "up",
  down: "down (probes unanswered)",
  unknown: "unknown (no answer yet)",
  withdrawn: "withdrawn (cannot reach the subnet)",
};

function gatewayName(id: string | null, candidates: readonly FailoverCandidateView[]): string {
  if (id === null) return "none";
  const name = candidates.find((c) => c.id === id)?.name ?? "";
  return name !== "" && name !== id ? `${id} (${name})` : id;
}

function candidateText(c: FailoverCandidateView, active: string | null): string {
  const parts = [CANDIDATE_STATE[c.state]];
  if (c.rttMs !== null) parts.push(`RTT ${c.rttMs} ms`);
  parts.push(`priority ${c.priority}`);
  if (c.draining) parts.push("draining");
  if (!c.own) parts.push("inherited from a covering route");
  if (c.id === active) parts.push("active");
  return `${gatewayName(c.id, [c])}: ${parts.join(", ")}`;
}

/** One `Subnet:` block of `waygate status`. */
export function failoverRows(f: SubnetFailoverStatus, now: number): [string, string | string[]][] {
  let active: string;
  if (f.active !== null) active = gatewayName(f.active, f.candidates);
  else if (f.effective.gateway !== null) active = `none (carried by ${gatewayName(f.effective.gateway, f.candidates)} for ${f.effective.via})`;
  else active = "none: no healthy gateway (packets are dropped and counted, never sent outside the tunnel)";
  const last = f.lastSwitch;
  return [
    ["Active gateway", active],
    ["Candidates", f.candidates.map((c) => candidateText(c, f.active))],
    [
      "Last switch",
      last === null ? "none" : `${gatewayName(last.from, f.candidates)} -> ${gatewayName(last.to, f.candidates)} (${last.reason}), ${formatAgo(last.at, now)}`,
    ],
  ];
}

/** Subnets named in a group's heading; the rest are counted. */
export const GROUP_SUBNETS_SHOWN = 3;

/** The failover rows by group, groups in the order their first subnet comes. */
export function failoverGroups(rows: readonly SubnetFailoverStatus[]): SubnetFailoverStatus[][] {
  const byGroup = new Map<string, SubnetFailoverStatus[]>();
  for (const r of rows) {
    const key = r.group ?? r.prefix;
    let list = byGroup.get(key);
    if (list === undefined) byGroup.set(key, (list = []));
    list.push(r);
  }
  return [...byGroup.values()];
}

function groupHeading(members: readonly SubnetFailoverStatus[]): string {
  if (members.length === 1) return `Subnet: ${members[0]!.prefix}`;
  const shown = members.slice(0, GROUP_SUBNETS_SHOWN).map((m) => m.prefix).join(", ");
  const more = members.length - GROUP_SUBNETS_SHOWN;
  return `Subnets: ${shown}${more > 0 ? ` and ${more} more` : ""} (${members.length} subnets, one failover group)`;
}

/** One group's rows: the first subnet's, and where its subnets go when that differs between them. */
function groupRows(members: readonly SubnetFailoverStatus[], now: number): [string, string | string[]][] {
  const rows = failoverRows(members[0]!, now);
  const effective = new Map<string, number>();
  for (const m of members) {
    const e = m.effective;
    const text = e.gateway === null ? "dropped: no healthy gateway" : `${gatewayName(e.gateway, m.candidates)}${e.via !== m.prefix ? ` for ${e.via}` : ""}`;
    effective.set(text, (effective.get(text) ?? 0) + 1);
  }
  if (effective.size > 1) {
    rows.splice(1, 0, ["Carried by", [...effective].map(([text, n]) => `${text} (${n} subnet${n === 1 ? "" : "s"})`)]);
  }
  return rows;
}

function upstreamText(u: UpstreamStatus): string {
  return `${u.prefix} on ${u.interface}: ${u.withdrawn ? `withdrawn (${u.reason ?? "unreachable"})` : "reachable"}${u.hosts.length > 0 ? `, hosts ${u.hosts.join(", ")}` : ""}`;
}

/** The text `waygate status` prints. */
export function renderStatus(s: AgentStatus): string {
  const self = s.self;
  const lines: string[] = [];
  const netmapLine = s.netmap
    ? `revision ${s.netmap.revision} from ${s.netmap.source === "disk" ? "disk (control plane not reached yet)" : "the control plane"}${s.netmap.appliedAt !== null ? `, applied ${formatAgo(s.netmap.appliedAt, s.now)}` : ""}`
    : "none yet";
  const control = s.control
    ? `${self.serverUrl ?? "-"} (${s.control.connected ? "connected" : `disconnected${s.control.lastError ? `: ${s.control.lastError}` : ""}`})`
    : `${self.serverUrl ?? "-"}`;
  lines.push(
    ...block(
      [
        ["Local identity", self.systemId ? `${self.systemId}${self.name ? ` (${self.name})` : ""}` : "not enrolled"],
        ["Public key", self.publicKey],
        ["Virtual address", self.virtualAddress ? `${self.virtualAddress}${self.network ? ` (network ${self.network})` : ""}` : "-"],
        ["Tags", self.tags.join(", ") || "-"],
        ["Agent", s.running ? `running, version ${s.version}` : "not running (showing the NetMap saved on disk)"],
        ["Interface", self.interface ? `${self.interface}${self.listenPort !== null ? `, UDP port ${self.listenPort}` : ""}` : "-"],
        ["Control plane", control],
        ["NetMap", netmapLine],
        ...(self.active === false ? [["State", "inactive (disabled or awaiting approval): no peers"] as [string, string]] : []),
        ...(self.gateway ? [["Gateway for", self.gateway.subnets.map((g) => `${g.prefix}${g.nat ? " (NAT)" : ""}${g.draining ? " (draining)" : ""}`)] as [string, string[]]] : []),
        ...(self.discoveredSubnets.length > 0 ? [["Local subnets", self.discoveredSubnets] as [string, string[]]] : []),
        ...(s.upstream && s.upstream.length > 0 ? [["Upstream", s.upstream.map(upstreamText)] as [string, string[]]] : []),
        ...(s.dns ? dnsRows(s.dns) : []),
      ],
      "",
    ),
  );
  for (const members of failoverGroups(s.failover ?? [])) {
    lines.push("", groupHeading(members));
    lines.push(...block(groupRows(members, s.now), "   "));
  }
  if (s.peers.length === 0) {
    lines.push("", "No peers.");
  }
  for (const p of s.peers) {
    lines.push("", `Peer: ${p.id}${p.name ? ` (${p.name})` : ""}`);
    lines.push(
      ...block(
        [
          ["Peer state", STATE_TEXT[p.state]],
          ["Identity", p.id],
          ["Public key", p.publicKey],
          ["Endpoint", p.endpoint ?? "-"],
          ["Last activity", p.state === "unknown" ? "-" : formatAgo(p.lastActivityAt ?? p.lastHandshakeAt, s.now)],
          ["Transfer", p.state === "unknown" ? "-" : `${formatBytes(p.rxBytes)} received, ${formatBytes(p.txBytes)} sent`],
          ["Link RTT", p.rttMs === null ? "-" : formatRtt(p.rttMs)],
          ["Virtual address", p.virtualAddress],
          ["Gateway for", p.gatewayFor],
          ["DNS names", p.dnsNames],
          ["ACLs", p.acls.map(aclText)],
        ],
        "   ",
      ),
    );
  }
  return `${lines.join("\n")}\n`;
}
