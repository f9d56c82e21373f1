/**
 * @module test/e2e/rig.test
 * scripts/rig/netns.ts: namespaces and veths work and stay isolated (no default route, nothing
 * in the host namespace), destroy() removes everything with the run's prefix and stops what
 * the rig spawned, and a crashed run's leftovers are cleaned by cleanupDeadRigs.
 */
import { expect } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { rootTest } from "../helpers/env.ts";
import { cleanupDeadRigs, cleanupStale, createRig, MARKER_DIR, randomPrefix } from "../helpers/netns.ts";
import { execRunner } from "../../platform/exec.ts";

const runner = execRunner();

async function namespacesWith(prefix: string): Promise<string[]> {
  const out = (await runner.run(["ip", "netns", "list"])).stdout;
  return out.split("\n").map((l) => l.split(" ")[0]!).filter((n) => n.startsWith(prefix));
}

/** Alive and not a zombie (a killed orphan waits for PID 1 to reap it). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

async function gone(pid: number): Promise<boolean> {
  for (let i = 0; i < 40 && alive(pid); i++) await Bun.sleep(25);
  return !alive(pid);
}

rootTest("rig: namespaces, veth, sysctl, spawn; destroy removes all of it", ["ip", "ping", "sysctl"], async () => {
  const rig = await createRig();
  let sleeperPid = 0;
  let strayPid = 0;
  try {
    expect(rig.prefix).toMatch(/^wg[0-9a-f]{6}$/);
    expect(existsSync(`${MARKER_DIR}/${rig.prefix}`)).toBe(true);
    const a = await rig.addNamespace("a");
    const b = await rig.addNamespace("b");
    expect(a).toBe(`${rig.prefix}-a`);
    const [va, vb] = await rig.addVeth({ ns: a, addresses: ["10.77.1.1/24"], mtu: 1400 }, { ns: b, addresses: ["10.77.1.2/24"] });
    expect(va.startsWith(rig.prefix) && vb.startsWith(rig.prefix)).toBe(true);
    expect((await rig.exec(a, ["ping", "-c", "1", "-W", "2", "10.77.1.2"])).stdout).toContain("1 received");
    // Isolated: no default route, and the veth never appeared in the host namespace.
    expect((await rig.exec(a, ["ip", "route", "show", "default"])).stdout.trim()).toBe("");
    expect((await runner.run(["ip", "-o", "link", "show"])).stdout).not.toContain(rig.prefix);

    await rig.sysctl(a, "net.ipv4.ip_forward", 1);
    expect((await rig.exec(a, ["sysctl", "-n", "net.ipv4.ip_forward"])).stdout.trim()).toBe("1");
    expect((await rig.exec(b, ["sysctl", "-n", "net.ipv4.ip_forward"])).stdout.trim()).toBe("0");

    expect(() => rig.linkName("much-too-long")).toThrow(/longer than 15/);
    await expect(rig.exec("not-ours", ["true"])).rejects.toThrow(/not part of rig/);

    const sleeper = rig.spawn(a, ["sleep", "30"]);
    sleeperPid = sleeper.pid;
    // A process the rig did not track (e.g. a daemonized child) still dies with its namespace.
    const stray = await rig.exec(b, ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"]);
    strayPid = Number(stray.stdout.trim());
    expect(alive(sleeperPid) && alive(strayPid)).toBe(true);
  } finally {
    await rig.destroy();
  }
  expect(await gone(sleeperPid)).toBe(true);
  expect(await gone(strayPid)).toBe(true);
  expect(await namespacesWith(rig.prefix)).toEqual([]);
  expect(existsSync(`${MARKER_DIR}/${rig.prefix}`)).toBe(false);
  await rig.destroy(); // idempotent
});

rootTest("rig: cleanupDeadRigs removes a crashed run's leftovers, cleanupStale one prefix", ["ip"], async () => {
  const prefix = randomPrefix();
  // A live run's rig must survive the sweep.
  const live = await createRig();
  try {
    await live.addNamespace("keep");
    // A "crashed" run: its owner PID is gone, its namespace and a process inside remain.
    const dead = Bun.spawn(["true"]);
    await dead.exited;
    await runner.run(["ip", "netns", "add", `${prefix}-x`]);
    const stray = await runner.run(["ip", "netns", "exec", `${prefix}-x`, "sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"]);
    const strayPid = Number(stray.stdout.trim());
    writeFileSync(`${MARKER_DIR}/${prefix}`, `${dead.pid}\n`);
    {
      const removed = await cleanupDeadRigs({ runner });
      expect(removed).toContain(prefix);
      expect(removed).not.toContain(live.prefix);
      expect(await namespacesWith(prefix)).toEqual([]);
      expect(await namespacesWith(live.prefix)).toEqual([`${live.prefix}-keep`]);
      expect(await gone(strayPid)).toBe(true);
    }
    await runner.run(["ip", "netns", "add", `${prefix}-y`]);
    await cleanupStale(prefix, { runner });
    expect(await namespacesWith(prefix)).toEqual([]);
    await expect(cleanupStale("", { runner })).rejects.toThrow(/refusing/);
  } finally {
    await live.destroy();
    await cleanupStale(prefix, { runner });
  }
});
