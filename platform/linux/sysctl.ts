/**
 * @module platform/linux/sysctl
 * IP forwarding for the gateway: `enableForwarding` turns on net.ipv4.ip_forward (and
 * net.ipv6.conf.all.forwarding when an IPv6 subnet is served), remembering the values it found,
 * and the handle's `restore()` puts exactly those back on a clean stop. Everything goes through
 * the injected CommandRunner as `sysctl -n KEY` / `sysctl -q -w KEY=VALUE`, so a runner that
 * prefixes `ip netns exec NS` changes the namespace's own (per-netns) values and never the host's.
 *
 * The remembered values are plain JSON (`ForwardingSnapshot`): the agent writes them to its state
 * dir, so after a crash the restarted agent passes them back as `remembered` and a later clean
 * stop restores the value from before the FIRST start, not the "1" the crashed run left.
 * Note: all.forwarding=1 makes the kernel stop accepting router advertisements on interfaces
 * with accept_ra=1; a gateway that gets its own IPv6 default route by SLAAC needs accept_ra=2.
 */
import { WaygateError } from "../../core/errors.ts";
import { silentLogger, type Logger } from "../../core/log.ts";
import type { CommandRunner } from "../../core/runner.ts";

export const IPV4_FORWARD = "net.ipv4.ip_forward" as const;
export const IPV6_FORWARD = "net.ipv6.conf.all.forwarding" as const;

/** Key → the value found before we changed it. */
export type ForwardingSnapshot = Partial<Record<typeof IPV4_FORWARD | typeof IPV6_FORWARD, string>>;

export interface ForwardingHandle {
  /** What restore() will write back (persist it for crash recovery). */
  readonly previous: ForwardingSnapshot;
  restore(): Promise<void>;
}

export interface SysctlDeps {
  runner: CommandRunner;
  logger?: Logger;
}

const KEY = /^[a-z0-9_]+(\.[a-z0-9_-]+)+$/;

export async function readSysctl(key: string, deps: SysctlDeps): Promise<string> {
  if (!KEY.test(key)) throw new WaygateError("E_CONFIG_INVALID", `sysctl: ${JSON.stringify(key)} is not a sysctl key`);
  return (await deps.runner.run(["sysctl", "-n", key])).stdout.trim();
}

export async function writeSysctl(key: string, value: string, deps: SysctlDeps): Promise<void> {
  if (!KEY.test(key) || !/^[0-9]+$/.test(value)) {
    throw new WaygateError("E_CONFIG_INVALID", `sysctl: refusing to write ${JSON.stringify(key)}=${JSON.stringify(value)}`);
  }
  await deps.runner.run(["sysctl", "-q", "-w", `${key}=${value}`]);
}

/**
 * Turn forwarding on for the wanted families. Idempotent: a value already 1 is not written.
 * `remembered` (from a crashed run's state) wins over the value found now.
 */
export async function enableForwarding(
  want: { ipv4: boolean; ipv6: boolean },
  deps: SysctlDeps & { remembered?: ForwardingSnapshot },
): Promise<ForwardingHandle> {
  const logger = deps.logger ?? silentLogger;
  const previous: ForwardingSnapshot = {};
  const keys: (keyof ForwardingSnapshot)[] = [...(want.ipv4 ? [IPV4_FORWARD] : []), ...(want.ipv6 ? [IPV6_FORWARD] : [])];
  for (const key of keys) {
    const now = await readSysctl(key, deps);
    previous[key] = deps.remembered?.[key] ?? now;
    if (now !== "1") {
      await writeSysctl(key, "1", deps);
      logger.info(`sysctl: key=${key} from=${now} to=1`);
    }
  }
  return { previous, restore: () => restoreForwarding(previous, deps) };
}

/** Write back the values in `previous` where they differ from what is there now. */
export async function restoreForwarding(previous: ForwardingSnapshot, deps: SysctlDeps): Promise<void> {
  const logger = deps.logger ?? silentLogger;
  for (const [key, value] of Object.entries(previous)) {
    if (value === undefined) continue;
    const now = await readSysctl(key, deps);
    if (now !== value) {
      await writeSysctl(key, value, deps);
      logger.info(`sysctl: key=${key} from=${now} to=${value} restored=true`);
    }
  }
}
