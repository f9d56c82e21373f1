/**
 * @module platform/linux/link
 * Interface configuration with `ip` through the injected CommandRunner: MTU, addresses, up.
 * Idempotent (`ip addr replace`), so it may be re-run with the same settings; the runner decides
 * the namespace (a rig passes one that prefixes `ip netns exec <ns>`).
 */
import type { CommandRunner } from "../../core/runner.ts";

export interface InterfaceSettings {
  /** CIDR text, IPv4 or IPv6, e.g. "10.7.0.1/24". */
  addresses: readonly string[];
  mtu?: number;
  up?: boolean;
}

export async function configureInterface(runner: CommandRunner, name: string, settings: InterfaceSettings): Promise<void> {
  if (settings.mtu !== undefined) await runner.run(["ip", "link", "set", "dev", name, "mtu", String(settings.mtu)]);
  for (const address of settings.addresses) {
    await runner.run(["ip", address.includes(":") ? "-6" : "-4", "addr", "replace", address, "dev", name]);
  }
  if (settings.up !== false) await runner.run(["ip", "link", "set", "dev", name, "up"]);
}

/** Deletes a link; a missing one is not an error (cleanup runs after crashes too). */
export async function deleteInterface(runner: CommandRunner, name: string): Promise<boolean> {
  const r = await runner.run(["ip", "link", "del", "dev", name], { allowFailure: true });
  return r.exitCode === 0;
}
