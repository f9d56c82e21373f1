/**
 * @module platform/linux/upstream
 * The real checks behind core/failover/upstream.ts on Linux, without running a command:
 *
 * - Link state from sysfs: `<root>/<if>/operstate` ("up" is up; "unknown", which tun, dummy and
 *   some drivers report, counts as up only when `carrier` reads 1 and IFF_UP is set in `flags`;
 *   anything else, a missing interface, or an unreadable file is down). A file read per interface
 *   per 200 ms tick is a few microseconds. `root` defaults to /sys/class/net; tests point it at a
 *   directory of fixture files. Under `ip netns exec`, /sys is remounted for the namespace, so
 *   the namespace's own interfaces are read.
 * - Host probes by TCP connect: a SYN to `host:port` (default port 80) that is answered, by
 *   SYN-ACK (connected) or RST (ECONNREFUSED), proves the host is reachable on its LAN; a
 *   timeout, EHOSTUNREACH or ENETUNREACH (the kernel's neighbour resolution failed, or the LAN
 *   route went with the link) does not. Chosen over ICMP because it needs no raw socket (no root,
 *   no CAP_NET_RAW) and no `ping` subprocess five times a second per host; the cost is one
 *   short-lived socket per probe. A host that silently drops SYNs to every port needs a port it
 *   serves (`"192.168.1.10:443"`). IPv6 hosts are written `[fd00::10]:443`.
 */
import { readFileSync } from "node:fs";
import { createConnection } from "node:net";
import type { UpstreamChecks } from "../../core/failover/upstream.ts";

export const DEFAULT_SYS_CLASS_NET = "/sys/class/net";
export const DEFAULT_PROBE_PORT = 80;
const IFF_UP = 0x1;
/** Interface names as the kernel allows them: no "/", not "." or "..", at most 15 bytes. */
const IFNAME = /^[A-Za-z0-9_.:@+-]{1,15}$/;

function readTrim(path: string): string | null {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return null;
  }
}

/** Whether the interface is operationally up (see the module comment). Never throws. */
export function linkUp(interfaceName: string, root = DEFAULT_SYS_CLASS_NET): boolean {
  if (!IFNAME.test(interfaceName) || interfaceName === "." || interfaceName === "..") return false;
  const dir = `${root}/${interfaceName}`;
  const state = readTrim(`${dir}/operstate`);
  if (state === "up") return true;
  if (state !== "unknown") return false;
  // Reading carrier on an administratively down interface fails with EINVAL: that is down too.
  if (readTrim(`${dir}/carrier`) !== "1") return false;
  const flags = Number.parseInt(readTrim(`${dir}/flags`) ?? "", 16);
  return Number.isFinite(flags) && (flags & IFF_UP) !== 0;
}

/** "a.b.c.d", "a.b.c.d:port", "[v6]:port" or a bare IPv6 address -> host and port. */
export function parseProbeTarget(text: string, defaultPort = DEFAULT_PROBE_PORT): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (v6 !== null) return { host: v6[1]!, port: v6[2] === undefined ? defaultPort : Number(v6[2]) };
  const colons = text.split(":").length - 1;
  if (colons === 1) {
    const [host, port] = text.split(":");
    return { host: host!, port: Number(port) };
  }
  return { host: text, port: defaultPort };
}

/** Resolves true when `host:port` answers (connect or refuse) within `timeoutMs`; never rejects. */
export function tcpProbe(target: string, timeoutMs: number, defaultPort = DEFAULT_PROBE_PORT): Promise<boolean> {
  const { host, port } = parseProbeTarget(target, defaultPort);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return Promise.resolve(false);
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const socket = createConnection({ host, port });
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.once("connect", () => finish(true));
    socket.once("error", (err: NodeJS.ErrnoException) => finish(err.code === "ECONNREFUSED"));
  });
}

export interface LinuxUpstreamOptions {
  /** Where interfaces are listed (default /sys/class/net). */
  root?: string;
  /** Port for hosts given without one (default 80). */
  defaultPort?: number;
}

/** The checks UpstreamMonitor takes, for this host. */
export function linuxUpstreamChecks(options: LinuxUpstreamOptions = {}): UpstreamChecks {
  const root = options.root ?? DEFAULT_SYS_CLASS_NET;
  const port = options.defaultPort ?? DEFAULT_PROBE_PORT;
  return {
    linkUp: (name) => linkUp(name, root),
    probeHost: (address, timeoutMs) => tcpProbe(address, timeoutMs, port),
  };
}
