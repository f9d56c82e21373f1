/**
 * @module scripts/rig/wireguard-go
 * A wireguard-go peer inside a rig namespace: the reference implementation Waygate's data plane
 * is tested against. wireguard-go runs in the foreground (`-f`, and WG_PROCESS_FOREGROUND=1,
 * which also silences its "the kernel has WireGuard" banner) as a child process the rig tracks
 * by PID; it is configured with `wg set` over its UAPI socket (/var/run/wireguard/<if>.sock,
 * found by `wg` because the interface name is unique to the run) and `ip` for address and link.
 * Stopping it (SIGTERM by PID) removes its TUN and socket.
 *
 * Note: wireguard-go has no --help; any unknown argument is taken as an interface name and,
 * without -f, it daemonizes. Always pass `-f <ifname>`.
 */
import { existsSync } from "node:fs";
import type { CommandRunner } from "../../core/runner.ts";
import { configureInterface } from "../../platform/linux/link.ts";
import { type Rig, RigError, type RigProcess } from "./netns.ts";

export interface KeyPair {
  privateKey: string;
  publicKey: string;
}

/** A Curve25519 key pair from `wg genkey` / `wg pubkey` (base64). */
export async function wgKeyPair(runner: CommandRunner): Promise<KeyPair> {
  const privateKey = (await runner.run(["wg", "genkey"])).stdout.trim();
  const publicKey = (await runner.run(["wg", "pubkey"], { input: `${privateKey}\n` })).stdout.trim();
  return { privateKey, publicKey };
}

export async function wgPresharedKey(runner: CommandRunner): Promise<string> {
  return (await runner.run(["wg", "genpsk"])).stdout.trim();
}

export interface WgPeer {
  publicKey: string;
  presharedKey?: string;
  /** "address:port" or "[v6]:port". */
  endpoint?: string;
  allowedIPs: readonly string[];
  persistentKeepalive?: number;
}

export interface WireguardGoOptions {
  /** Interface name; must carry the rig prefix (use rig.linkName). */
  ifname: string;
  privateKey: string;
  listenPort?: number;
  addresses: readonly string[];
  mtu?: number;
  peers?: readonly WgPeer[];
  /** wireguard-go LOG_LEVEL: "error" (default), "verbose" or "silent". */
  logLevel?: "error" | "verbose" | "silent";
}

export interface WireguardGo {
  readonly ifname: string;
  readonly ns: string;
  readonly process: RigProcess;
  readonly pid: number;
  /** `wg set <if> peer ...` for one more peer (or changed settings). */
  setPeer(peer: WgPeer): Promise<void>;
  /** `wg show <if> dump` output. */
  dump(): Promise<string>;
  stop(): Promise<number>;
}

export async function startWireguardGo(rig: Rig, ns: string, options: WireguardGoOptions): Promise<WireguardGo> {
  const { ifname } = options;
  if (!ifname.startsWith(rig.prefix) || ifname.length > 15) throw new RigError(`wireguard-go ifname ${ifname} must carry prefix ${rig.prefix} and be ≤ 15 chars`);
  const proc = rig.spawn(ns, ["wireguard-go", "-f", ifname], {
    env: { WG_PROCESS_FOREGROUND: "1", LOG_LEVEL: options.logLevel ?? "error" },
    stdout: "pipe",
    stderr: "pipe",
  });
  const sock = `/var/run/wireguard/${ifname}.sock`;
  const deadline = Date.now() + 5000;
  while (!existsSync(sock)) {
    if (proc.subprocess.exitCode !== null || Date.now() > deadline) {
      await proc.stop(500);
      const err = proc.subprocess.stderr instanceof ReadableStream ? await new Response(proc.subprocess.stderr).text() : "";
      throw new RigError(`wireguard-go ${ifname} in ${ns} did not come up: ${err.trim() || "no UAPI socket"}`);
    }
    await Bun.sleep(20);
  }
  const runner = rig.runnerIn(ns);
  const wg: WireguardGo = {
    ifname,
    ns,
    process: proc,
    pid: proc.pid,
    async setPeer(peer) {
      const argv = ["wg", "set", ifname, "peer", peer.publicKey, "allowed-ips", peer.allowedIPs.join(",")];
      if (peer.endpoint) argv.push("endpoint", peer.endpoint);
      if (peer.persistentKeepalive !== undefined) argv.push("persistent-keepalive", String(peer.persistentKeepalive));
      if (peer.presharedKey) argv.push("preshared-key", "/dev/stdin");
      await runner.run(argv, peer.presharedKey ? { input: `${peer.presharedKey}\n` } : {});
    },
    async dump() {
      return (await runner.run(["wg", "show", ifname, "dump"])).stdout;
    },
    stop: () => proc.stop(),
  };
  try {
    const argv = ["wg", "set", ifname, "private-key", "/dev/stdin"];
    if (options.listenPort !== undefined) argv.push("listen-port", String(options.listenPort));
    await runner.run(argv, { input: `${options.privateKey}\n` });
    for (const peer of options.peers ?? []) await wg.setPeer(peer);
    await configureInterface(runner, ifname, { addresses: options.addresses, mtu: options.mtu ?? 1420, up: true });
  } catch (err) {
    await proc.stop(500);
    throw err;
  }
  return wg;
}
