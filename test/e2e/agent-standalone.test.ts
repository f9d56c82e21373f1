/**
 * @module test/e2e/agent-standalone
 * The agent issue's end-to-end test, in network namespaces (root):
 *
 *   lan (192.168.81.2) ── gw (192.168.81.1 | 10.81.1.1 | 10.81.2.1) ── a (10.81.1.2)
 *                                                                   └─ b (10.81.2.2, routed to 10.81.1.0/24 via gw)
 *
 * `waygate serve --standalone --listen 10.81.1.1:7070` runs in gw: the control plane plus an agent
 * that is a gateway for the subnets it discovered (192.168.81.0/24 among them). The admin CLI
 * (in gw) creates tags alpha and beta and one enrolment key for each; `waygate enrol` and
 * `waygate run` run in a (alpha) and b (beta). A gateway access policy for alpha puts the
 * gateway, with 192.168.81.0/24 under "gatewayFor", into A's NetMap and not into B's (checked
 * with `waygate status --json` in each namespace; `waygate status` text shows "Gateway for").
 * Deleting the policy reaches A and the gateway within 1 s (their agents' "netmap applied" log
 * lines, timed from just before the DELETE); B's NetMap never held the grant.
 * Nothing leaves the rig: every address is inside the namespaces, torn down also on failure.
 */
import { expect } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lineReader, type Rig, type RigProcess } from "../../scripts/rig/netns.ts";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";

const MAIN = join(import.meta.dir, "..", "..", "cmd", "main.ts");
const BUN = process.execPath;
const LAN = "192.168.81.0/24";
const GW_IP = "10.81.1.1";
const SERVER = `http://${GW_IP}:7070`;
const ENV = { NO_COLOR: "1", CONSOLA_LEVEL: "3" };

interface Watched {
  proc: RigProcess;
  lines: { at: number; text: string }[];
  stdout: ReturnType<typeof lineReader>;
}

/** Spawns waygate in `ns`, recording every stderr line with its arrival time. */
function spawnWaygate(rig: Rig, ns: string, args: string[]): Watched {
  const proc = rig.spawn(ns, [BUN, MAIN, ...args], { env: ENV, stdout: "pipe", stderr: "pipe" });
  const lines: Watched["lines"] = [];
  void (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.subprocess.stderr as ReadableStream<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        lines.push({ at: Date.now(), text: buf.slice(0, nl) });
        buf = buf.slice(nl + 1);
      }
    }
  })().catch(() => {});
  return { proc, lines, stdout: lineReader(proc.subprocess.stdout as ReadableStream<Uint8Array>) };
}

async function cli(rig: Rig, ns: string, args: string[]): Promise<string> {
  const r = await rig.exec(ns, [BUN, MAIN, ...args], { allowFailure: true });
  if (r.exitCode !== 0) throw new Error(`waygate ${args.join(" ")} in ${ns} exited ${r.exitCode}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

async function untilLine(w: Watched, re: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = await w.stdout.next(Math.max(1, deadline - Date.now())).catch((err: unknown) => {
      throw new Error(`no stdout line matching ${re} within ${timeoutMs} ms (${String(err)}); stderr:\n${w.lines.map((l) => l.text).join("\n").slice(-4000)}`);
    });
    const m = re.exec(line);
    if (m) return m;
  }
}

async function waitStatus(rig: Rig, ns: string, dir: string, pred: (s: any) => boolean, timeoutMs: number): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  let last: any = null;
  while (Date.now() < deadline) {
    last = JSON.parse(await cli(rig, ns, ["status", "--state-dir", dir, "--json"]));
    if (pred(last)) return last;
    await Bun.sleep(150);
  }
  throw new Error(`status in ${ns} did not reach the expected state within ${timeoutMs} ms: ${JSON.stringify(last)?.slice(0, 3000)}`);
}

/** The time of the first "netmap applied" line after `t0`. */
async function appliedAfter(w: Watched, t0: number, pred: (text: string) => boolean, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const hit = w.lines.find((l) => l.at >= t0 && /netmap applied revision=\d+/.test(l.text) && pred(l.text));
    if (hit) return hit.at;
    await Bun.sleep(10);
  }
  throw new Error(`no "netmap applied" line after the change within ${timeoutMs} ms; last lines:\n${w.lines.slice(-15).map((l) => l.text).join("\n")}`);
}

rootTest(
  "serve --standalone + two agents: gateway policy for one tag, revoked within 1 s, status shows Gateway for",
  ["ip", "curl"],
  async () => {
    const tmp = mkdtempSync(join(tmpdir(), "wg-agent-e2e-"));
    try {
      await withRig(async (rig) => {
        const [gw, a, b, lan] = (await Promise.all([rig.addNamespace("gw"), rig.addNamespace("a"), rig.addNamespace("b"), rig.addNamespace("lan")])) as [string, string, string, string];
        await rig.addVeth({ ns: gw, addresses: [`${GW_IP}/24`] }, { ns: a, addresses: ["10.81.1.2/24"] });
        await rig.addVeth({ ns: gw, addresses: ["10.81.2.1/24"] }, { ns: b, addresses: ["10.81.2.2/24"] });
        await rig.addVeth({ ns: gw, addresses: ["192.168.81.1/24"] }, { ns: lan, addresses: ["192.168.81.2/24"] });
        await rig.sysctl(gw, "net.ipv4.ip_forward", 1);
        await rig.exec(b, ["ip", "route", "add", "10.81.1.0/24", "via", "10.81.2.1"]);

        // The control plane and the gateway agent, one process.
        const gwDir = join(tmp, "gw");
        const tokenFile = join(gwDir, "admin-token");
        const serve = spawnWaygate(rig, gw, ["serve", "--standalone", "--listen", `${GW_IP}:7070`, "--state-dir", gwDir, "--admin-token-file", tokenFile]);
        const gwId = (await untilLine(serve, /^standalone: this machine is ([A-Z0-9]{5}) \(([0-9.]+)\), gateway for (.*)$/, 25_000))[1]!;
        const conn = ["--server", SERVER, "--token-file", tokenFile];

        await Promise.all([cli(rig, gw, ["tags", "add", "alpha", ...conn]), cli(rig, gw, ["tags", "add", "beta", ...conn])]);
        const createKey = async (tag: string): Promise<string> => JSON.parse(await cli(rig, gw, ["keys", "create", "--tag", tag, "--auto-approve", "--json", ...conn])).key;
        const [keyA, keyB] = await Promise.all([createKey("alpha"), createKey("beta")]);

        const dirA = join(tmp, "a");
        const dirB = join(tmp, "b");
        const [enA, enB] = await Promise.all([
          cli(rig, a, ["enrol", "--server", SERVER, "--key", keyA, "--state-dir", dirA, "--hostname", "client-a", "--json"]),
          cli(rig, b, ["enrol", "--server", SERVER, "--key", keyB, "--state-dir", dirB, "--hostname", "client-b", "--json"]),
        ]);
        expect(JSON.parse(enA)).toMatchObject({ status: "enrolled", tags: ["alpha"], approved: true });
        expect(JSON.parse(enB)).toMatchObject({ status: "enrolled", tags: ["beta"], approved: true });
        // Idempotent: the same command again changes nothing.
        expect(await cli(rig, a, ["enrol", "--server", SERVER, "--key", keyA, "--state-dir", dirA])).toContain("already enrolled");

        const runA = spawnWaygate(rig, a, ["run", "--state-dir", dirA, "--interface", rig.linkName("ta"), "-v", "4"]);
        const runB = spawnWaygate(rig, b, ["run", "--state-dir", dirB, "--interface", rig.linkName("tb"), "-v", "4"]);
        await Promise.all([untilLine(runA, /^agent: \S+ up on /, 20_000), untilLine(runB, /^agent: \S+ up on /, 20_000)]);

        // The gateway's subnets are registered (discovered + reported).
        await waitStatus(rig, gw, join(gwDir, "agent"), (s) => s.self.gateway?.subnets.some((x: { prefix: string }) => x.prefix === LAN), 10_000);

        await cli(rig, gw, ["policies", "add", "alpha-lan", "--tag", "alpha", "--gateway", `${gwId}=${LAN}`, ...conn]);
        const sa = await waitStatus(rig, a, dirA, (s) => s.peers.some((p: any) => p.id === gwId && p.gatewayFor.includes(LAN)), 10_000);
        const gwPeer = sa.peers.find((p: any) => p.id === gwId);
        expect(gwPeer.endpoint).toBe(`${GW_IP}:51820`);
        expect(gwPeer.allowedIps).toContain(LAN);
        expect(JSON.stringify(sa)).not.toMatch(/privateKey/);
        // The policy reached the gateway too (its forwarding rule for A).
        await waitStatus(rig, gw, join(gwDir, "agent"), (s) => s.peers.some((p: any) => p.id === sa.self.systemId && p.acls.some((x: any) => x.direction === "forward")), 5_000);
        // A's kernel routes the LAN into the tunnel (Router hook).
        const routes = await rig.exec(a, ["ip", "-4", "route", "show", LAN]);
        expect(routes.stdout).toContain(`dev ${rig.linkName("ta")}`);
        await Bun.sleep(300);
        const sb = JSON.parse(await cli(rig, b, ["status", "--state-dir", dirB, "--json"]));
        expect(sb.running).toBe(true);
        expect(sb.peers.some((p: any) => p.gatewayFor.includes(LAN))).toBe(false);

        const text = await cli(rig, a, ["status", "--state-dir", dirA]);
        expect(text).toContain(`Peer: ${gwId}`);
        expect(text).toMatch(new RegExp(`Gateway for:\\s+${LAN.replace(/\./g, "\\.")}`));
        expect(text).toContain("Local identity:");

        // Revoke: both the permitted agent and the gateway get new NetMaps within 1 s.
        const token = readFileSync(tokenFile, "utf8").trim();
        const t0 = Date.now();
        const del = await rig.exec(gw, ["curl", "-sS", "-f", "-X", "DELETE", "-H", `authorization: Bearer ${token}`, `${SERVER}/v1/admin/policies/alpha-lan`]);
        expect(del.stdout).toContain("alpha-lan");
        const [atA, atGw] = await Promise.all([appliedAfter(runA, t0, () => true, 3000), appliedAfter(serve, t0, () => true, 3000)]);
        if (process.env.WAYGATE_E2E_DEBUG) console.log(`revocation: agent A ${atA - t0} ms, gateway ${atGw - t0} ms; gateway ${gwId}`);
        expect(atA - t0).toBeLessThan(1000);
        expect(atGw - t0).toBeLessThan(1000);
        const after = await waitStatus(rig, a, dirA, (s) => !s.peers.some((p: any) => p.gatewayFor.includes(LAN)), 3000);
        expect(after.netmap.revision).toBeGreaterThan(sa.netmap.revision);
        await waitStatus(rig, a, dirA, () => true, 1000);
        expect((await rig.exec(a, ["ip", "-4", "route", "show", LAN])).stdout.trim()).toBe("");
        expect(runB.lines.some((l) => l.at >= t0 && /netmap applied/.test(l.text))).toBe(false);

        // Clean stop: SIGTERM, exit 0, TUN gone.
        expect(await runA.proc.stop(3000)).toBe(0);
        expect((await rig.exec(a, ["ip", "link", "show", rig.linkName("ta")], { allowFailure: true })).exitCode).not.toBe(0);
      });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  },
  40_000,
);
