/**
 * @module cmd/show
 * `waygate show [iface] [--json]`: asks running `waygate up` processes over their control
 * sockets (platform/linux/control.ts) and prints what `wg show` prints: interface, public key,
 * listening port, then per peer endpoint, allowed ips, latest handshake, transfer, persistent
 * keepalive; plus Waygate's drop counters when there are any. Without an interface it shows every
 * running one (stale sockets from crashed runs are removed on the way). --json prints the
 * ShowData object (platform/linux/wg-quick.ts) for one interface, or an array for all.
 */
import { defineCommand } from "citty";
import type { DropCounts } from "../core/dataplane/device.ts";
import { WaygateError } from "../core/errors.ts";
import { controlRequest, listSockets, runDirOf, socketPath } from "../platform/linux/control.ts";
import type { ShowData } from "../platform/linux/wg-quick.ts";
import { checkInterfaceName } from "../platform/linux/wg-quick.ts";

export interface ShowCommandData {
  out?: (text: string) => void;
  env?: Record<string, string | undefined>;
}

/** wg's bytes(): B below 1 KiB, else two decimals of KiB/MiB/GiB/TiB. */
export function formatBytes(b: number): string {
  if (b < 1024) return `${b} B`;
  if (b < 1024 ** 2) return `${(b / 1024).toFixed(2)} KiB`;
  if (b < 1024 ** 3) return `${(b / 1024 ** 2).toFixed(2)} MiB`;
  if (b < 1024 ** 4) return `${(b / 1024 ** 3).toFixed(2)} GiB`;
  return `${(b / 1024 ** 4).toFixed(2)} TiB`;
}

/** wg's pretty_time(): "1 day, 2 hours, 3 minutes, 4 seconds". */
export function formatDuration(totalSeconds: number): string {
  let left = Math.max(0, Math.floor(totalSeconds));
  const units: [string, number][] = [
    ["year", 365 * 24 * 3600],
    ["day", 24 * 3600],
    ["hour", 3600],
    ["minute", 60],
    ["second", 1],
  ];
  const parts: string[] = [];
  for (const [name, size] of units) {
    const n = Math.floor(left / size);
    left %= size;
    if (n > 0) parts.push(`${n} ${name}${n === 1 ? "" : "s"}`);
  }
  return parts.join(", ");
}

/** wg's ago(): "Now", or "<duration> ago". */
export function formatAgo(thenSeconds: number, nowSeconds: number): string {
  if (thenSeconds === nowSeconds) return "Now";
  if (nowSeconds < thenSeconds) return "(System clock wound backward; connection problems may ensue.)";
  return `${formatDuration(nowSeconds - thenSeconds)} ago`;
}

function formatDrops(drops: DropCounts): string | null {
  const entries = Object.entries(drops).filter(([, n]) => (n ?? 0) > 0);
  if (entries.length === 0) return null;
  return entries
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, n]) => `${k} ${n}`)
    .join(", ");
}

/** The `wg show` text for one interface (peers by latest handshake, newest first, as wg sorts). */
export function formatShow(data: ShowData): string {
  const nowS = Math.floor(data.now / 1000);
  const lines = [
    `interface: ${data.interface}`,
    `  public key: ${data.publicKey}`,
    "  private key: (hidden)",
    `  listening port: ${data.listeningPort}`,
  ];
  const ifaceDrops = formatDrops(data.drops);
  if (ifaceDrops) lines.push(`  dropped: ${ifaceDrops}`);
  if (data.cookieRepliesSent > 0) lines.push(`  cookie replies sent: ${data.cookieRepliesSent}`);
  const peers = [...data.peers].sort((a, b) => b.latestHandshakeMs - a.latestHandshakeMs);
  for (const p of peers) {
    lines.push("", `peer: ${p.publicKey}`);
    if (p.presharedKey) lines.push("  preshared key: (hidden)");
    if (p.endpoint) lines.push(`  endpoint: ${p.endpoint}`);
    lines.push(`  allowed ips: ${p.allowedIps.length > 0 ? p.allowedIps.join(", ") : "(none)"}`);
    if (p.latestHandshake > 0) lines.push(`  latest handshake: ${formatAgo(p.latestHandshake, nowS)}`);
    if (p.rxBytes > 0 || p.txBytes > 0) lines.push(`  transfer: ${formatBytes(p.rxBytes)} received, ${formatBytes(p.txBytes)} sent`);
    if (p.persistentKeepalive > 0) {
      lines.push(`  persistent keepalive: every ${formatDuration(p.persistentKeepalive)}`);
    }
    const drops = formatDrops(p.drops);
    if (drops) lines.push(`  dropped: ${drops}`);
  }
  return `${lines.join("\n")}\n`;
}

export async function showInterface(runDir: string, iface: string): Promise<ShowData> {
  const [reply] = await controlRequest(socketPath(runDir, iface), { op: "show" }, { iface });
  if (!reply || typeof reply.show !== "object" || reply.show === null) {
    throw new WaygateError("E_PLATFORM", `interface ${iface}: the control socket answered without data`);
  }
  return reply.show as ShowData;
}

export default defineCommand({
  meta: {
    name: "show",
    description: "Show running interfaces and their peers like wg show (handshakes, transfer, endpoints). Example: waygate show wg0 --json",
  },
  args: {
    interface: { type: "positional", description: "Interface (default: every running one)", valueHint: "IFACE", required: false },
    json: { type: "boolean", description: "Print JSON (an object for one interface, an array for all)", default: false },
  },
  async run({ args, data }) {
    const injected = (data ?? {}) as ShowCommandData;
    const out = injected.out ?? ((t: string) => process.stdout.write(t));
    const runDir = runDirOf(injected.env ?? process.env);
    const one = typeof args.interface === "string" && args.interface !== "" ? checkInterfaceName(args.interface) : null;
    if (one !== null) {
      const show = await showInterface(runDir, one);
      out(args.json ? `${JSON.stringify(show, null, 2)}\n` : formatShow(show));
      return;
    }
    const all: ShowData[] = [];
    for (const iface of listSockets(runDir)) {
      try {
        all.push(await showInterface(runDir, iface));
      } catch {
        // Not running (a stale socket is removed by controlRequest): wg show skips it too.
      }
    }
    out(args.json ? `${JSON.stringify(all, null, 2)}\n` : all.map(formatShow).join("\n"));
  },
});
