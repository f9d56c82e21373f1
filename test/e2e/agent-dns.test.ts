/**
 * @module test/e2e/agent-dns
 * The DNS issue's end-to-end test with real agents (root, dnsmasq), in network namespaces:
 *
 *   lan (dnsmasq 10.0.0.53 | 192.168.0.53) ── gw (10.0.0.1 | 192.168.0.1 | 10.84.1.1 | 10.84.2.1)
 *                                             ├─ a (10.84.1.2)
 *                                             └─ b (10.84.2.2, routed to 10.84.1.0/24 via gw)
 *
 * gw runs `waygate serve --standalone` (control plane + gateway agent; it discovers 10.0.0.0/24
 * and 192.168.0.0/24) with `--resolv-conf` / `--hosts-file` temp files: upstream dnsmasq at
 * 10.0.0.53, hosts `10.0.0.40 printer.corp.net`. dnsmasq serves dbserver1.corp.net -> 10.0.0.30
 * and other.corp.net -> 192.168.0.30. Client A (tag a, granted 10.0.0.0/24 through gw) and
 * client B (tag b, no policy) enrol and `waygate run`. From A's namespace, A's stub (127.0.0.1:53)
 * resolves dbserver1 (through the tunnel to gw's forwarder on its virtual address), answers
 * NXDOMAIN for other.corp.net (dnsmasq was asked: the gateway filtered it), resolves the hosts
 * entry and the gateway's peer names; B's stub answers REFUSED (no gateway to forward to).
 *
 * Safety: every address is inside the rig's namespaces, torn down also on failure; dnsmasq gets
 * explicit flags (no resolv.conf, no hosts) and is stopped by its PID; every waygate process gets
 * WAYGATE_RESOLV_CONF / WAYGATE_HOSTS_FILE pointing at the temp files, so none reads /etc; the
 * agents run outside PID 1's network namespace, so systemd-resolved is never asked.
 */
import { expect } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nameSlug } from "../../core/dns/stub.ts";
import type { QueryConfig, QueryResult } from "../dns/e2e-node.ts";
import { rootTest } from "../helpers/env.ts";
import { lineReader, type Rig, type RigProcess, withRig } from "../helpers/netns.ts";

const MAIN = join(import.meta.dir, "..", "..", "cmd", "main.ts");
const NODE = join(import.meta.dir, "..", "dns", "e2e-node.ts");
const BUN = process.execPath;
const GW_IP = "10.84.1.1";
const SERVER = `http://${GW_IP}:7070`;

interface Watched {
  proc: RigProcess;
  lines: string[];
  stdout: ReturnType<typeof lineReader>;
}

function spawnWaygate(rig: Rig, ns: string, args: string[], env: Record<string, string>): Watched {
  const proc = rig.spawn(ns, [BUN, MAIN, ...args], { env, stdout: "pipe", stderr: "pipe" });
  const lines: string[] = [];
  void (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.subprocess.stderr as ReadableStream<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
  })().catch(() => {});
  return { proc, lines, stdout: lineReader(proc.subprocess.stdout as ReadableStream<Uint8Array>) };
}

async function untilLine(w: Watched, re: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = await w.stdout.next(Math.max(1, deadline - Date.now())).catch((err: unknown) => {
      throw new Error(`no stdout line matching ${re} within ${timeoutMs} ms (${String(err)}); stderr:\n${w.lines.join("\n").slice(-4000)}`);
    });
    const m = re.exec(line);
    if (m) return m;
  }
}

rootTest(
  "agent DNS: stub peer names, gateway forwarder over dnsmasq filtered by grant (NXDOMAIN), hosts file, REFUSED without a gateway",
  ["ip", "dnsmasq"],
  async () => {
    const tmp = mkdtempSync(join(tmpdir(), "waygate-agent-dns-e2e-"));
    try {
      const resolvConf = join(tmp, "resolv.conf");
      const hostsFile = join(tmp, "hosts");
      writeFileSync(resolvConf, "# the gateway's resolver (a temp file, not /etc/resolv.conf)\nnameserver 10.0.0.53\n");
      writeFileSync(hostsFile, "127.0.0.1 localhost\n10.0.0.40 printer.corp.net\n");
      // Clients never read these (they are no gateways); pointing them here keeps /etc out of reach.
      const env = { NO_COLOR: "1", CONSOLA_LEVEL: "4", WAYGATE_RESOLV_CONF: resolvConf, WAYGATE_HOSTS_FILE: hostsFile };

      await withRig(async (rig) => {
        const [gw, a, b, lan] = (await Promise.all([rig.addNamespace("gw"), rig.addNamespace("a"), rig.addNamespace("b"), rig.addNamespace("lan")])) as [string, string, string, string];
        await rig.addVeth({ ns: gw, addresses: [`${GW_IP}/24`] }, { ns: a, addresses: ["10.84.1.2/24"] });
        await rig.addVeth({ ns: gw, addresses: ["10.84.2.1/24"] }, { ns: b, addresses: ["10.84.2.2/24"] });
        await rig.addVeth({ ns: gw, addresses: ["10.0.0.1/24", "192.168.0.1/24"] }, { ns: lan, addresses: ["10.0.0.53/24", "192.168.0.53/24"] });
        await rig.sysctl(gw, "net.ipv4.ip_forward", 1);
        await rig.exec(b, ["ip", "route", "add", "10.84.1.0/24", "via", "10.84.2.1"]);

        const dnsmasq = rig.spawn(lan, [
          "dnsmasq",
          "--no-daemon",
          "--conf-file=/dev/null",
          "--no-resolv",
          "--no-hosts",
          "--listen-address=10.0.0.53",
          "--bind-interfaces",
          "--port=53",
          "--address=/dbserver1.corp.net/10.0.0.30",
          "--address=/other.corp.net/192.168.0.30",
          `--pid-file=${join(tmp, "dnsmasq.pid")}`,
          "--log-facility=-",
          "--log-queries",
        ]);
        const dnsmasqLog: string[] = [];
        void (async () => {
          const r = lineReader(dnsmasq.subprocess.stderr as ReadableStream<Uint8Array>);
          for (;;) dnsmasqLog.push(await r.next(60_000));
        })().catch(() => {});

        const gwDir = join(tmp, "gw");
        const tokenFile = join(gwDir, "admin-token");
        const serve = spawnWaygate(
          rig,
          gw,
          ["serve", "--standalone", "--listen", `${GW_IP}:7070`, "--state-dir", gwDir, "--admin-token-file", tokenFile, "--resolv-conf", resolvConf, "--hosts-file", hostsFile],
          { ...env, WAYGATE_RESOLV_CONF: "/nonexistent/flag-wins", WAYGATE_HOSTS_FILE: "/nonexistent/flag-wins" },
        );
        const gwMatch = await untilLine(serve, /^standalone: this machine is ([A-Z0-9]{5}) \(([0-9.]+)\), gateway for (.*)$/, 25_000);
        const [gwId, gwAddr, gwSubnets] = [gwMatch[1]!, gwMatch[2]!, gwMatch[3]!];
        expect(gwSubnets).toContain("10.0.0.0/24");
        expect(gwSubnets).toContain("192.168.0.0/24");

        const cli = async (ns: string, args: string[]): Promise<string> => {
          const r = await rig.exec(ns, [BUN, MAIN, ...args], { allowFailure: true });
          if (r.exitCode !== 0) throw new Error(`waygate ${args.join(" ")} in ${ns} exited ${r.exitCode}: ${r.stderr}${r.stdout}`);
          return r.stdout;
        };
        const status = async (ns: string, dir: string): Promise<any> => JSON.parse(await cli(ns, ["status", "--state-dir", dir, "--json"]));
        const waitStatus = async (ns: string, dir: string, pred: (s: any) => boolean, timeoutMs: number): Promise<any> => {
          const deadline = Date.now() + timeoutMs;
          let last: any = null;
          while (Date.now() < deadline) {
            last = await status(ns, dir).catch(() => null);
            if (last !== null && pred(last)) return last;
            await Bun.sleep(150);
          }
          throw new Error(`status in ${ns} did not reach the expected state within ${timeoutMs} ms: ${JSON.stringify(last)?.slice(0, 3000)}`);
        };

        const conn = ["--server", SERVER, "--token-file", tokenFile];
        await Promise.all([cli(gw, ["tags", "add", "a", ...conn]), cli(gw, ["tags", "add", "b", ...conn])]);
        const createKey = async (tag: string): Promise<string> => JSON.parse(await cli(gw, ["keys", "create", "--tag", tag, "--auto-approve", "--json", ...conn])).key;
        const [keyA, keyB] = await Promise.all([createKey("a"), createKey("b")]);
        const dirA = join(tmp, "a");
        const dirB = join(tmp, "b");
        await Promise.all([
          cli(a, ["enrol", "--server", SERVER, "--key", keyA, "--state-dir", dirA, "--hostname", "client-a"]),
          cli(b, ["enrol", "--server", SERVER, "--key", keyB, "--state-dir", dirB, "--hostname", "client-b"]),
        ]);
        const runA = spawnWaygate(rig, a, ["run", "--state-dir", dirA, "--interface", rig.linkName("ta"), "-v", "4"], env);
        const runB = spawnWaygate(rig, b, ["run", "--state-dir", dirB, "--interface", rig.linkName("tb"), "-v", "4"], env);
        await Promise.all([untilLine(runA, /^agent: \S+ up on /, 20_000), untilLine(runB, /^agent: \S+ up on /, 20_000)]);

        // The gateway serves both LAN subnets, and its forwarder reads the temp files (the flags won over the env).
        const gwAgentDir = join(gwDir, "agent");
        const sg = await waitStatus(
          gw,
          gwAgentDir,
          (s) => ["10.0.0.0/24", "192.168.0.0/24"].every((p) => s.self.gateway?.subnets.some((x: { prefix: string }) => x.prefix === p)) && s.dns?.forwarder !== null,
          10_000,
        );
        expect(sg.dns.forwarder).toEqual({ upstreams: ["10.0.0.53"], hostsEntries: 2 });
        expect(sg.dns.registration).toBe("skipped");

        await cli(gw, ["policies", "add", "a-lan", "--tag", "a", "--gateway", `${gwId}=10.0.0.0/24`, ...conn]);
        // Forwarding waits for the tunnel: the first query would otherwise be staged behind the
        // handshake (and time out at the stub if that handshake needs a retry).
        const sa = await waitStatus(
          a,
          dirA,
          (s) => s.dns?.forwardTo.includes(`${gwId} ${gwAddr}`) === true && s.peers.some((p: any) => p.id === gwId && p.state === "up"),
          10_000,
        );
        await waitStatus(gw, gwAgentDir, (s) => s.peers.some((p: any) => p.id === sa.self.systemId && p.acls.some((x: any) => x.direction === "forward")), 5_000);
        expect(sa.dns.zone).toBe("waygate");
        expect(sa.dns.listen).toEqual([`${sa.self.virtualAddress}:53`, "127.0.0.1:53"]);
        const gwName = nameSlug(sa.peers.find((p: any) => p.id === gwId).name);

        const query = async (ns: string, queries: QueryConfig["queries"]): Promise<string[]> => {
          const r = await rig.exec(ns, [BUN, NODE, "query", JSON.stringify({ server: "127.0.0.1", queries } satisfies QueryConfig)]);
          return r.stdout
            .trim()
            .split("\n")
            .map((l) => JSON.parse(l) as QueryResult)
            .map((x) => `${x.name} ${x.rcode} ${x.answers.join(",")}`.trim());
        };

        const resultsA = await query(a, [
            { name: "dbserver1.corp.net", type: "A" },
            { name: "other.corp.net", type: "A" },
            { name: "printer.corp.net", type: "A" },
            { name: `${gwId}.id.waygate`, type: "A" },
            { name: `${gwName}.waygate`, type: "A" },
            { name: "client-a.waygate", type: "A" },
            { name: "nobody.waygate", type: "A" },
            { name: "DBSERVER1.corp.net", type: "A", tcp: true },
          ]);
        if (process.env.WAYGATE_E2E_DEBUG && resultsA.some((r) => r.includes("SERVFAIL"))) {
          console.log(`A:\n${runA.lines.slice(-60).join("\n")}\nGW:\n${serve.lines.slice(-60).join("\n")}`);
        }
        expect(resultsA).toEqual([
          "dbserver1.corp.net NOERROR 10.0.0.30",
          "other.corp.net NXDOMAIN",
          "printer.corp.net NOERROR 10.0.0.40",
          `${gwId}.id.waygate NOERROR ${gwAddr}`,
          `${gwName}.waygate NOERROR ${gwAddr}`,
          `client-a.waygate NOERROR ${sa.self.virtualAddress}`,
          "nobody.waygate NXDOMAIN",
          "DBSERVER1.corp.net NOERROR 10.0.0.30",
        ]);

        const sb = await status(b, dirB);
        expect(sb.dns.forwardTo).toEqual([]);
        expect(await query(b, [{ name: "dbserver1.corp.net", type: "A" }, { name: "printer.corp.net", type: "A" }, { name: "client-b.waygate", type: "A" }])).toEqual([
          "dbserver1.corp.net REFUSED",
          "printer.corp.net REFUSED",
          `client-b.waygate NOERROR ${sb.self.virtualAddress}`,
        ]);

        // The gateway asked dnsmasq (from its LAN address) for both names: other.corp.net was
        // filtered at the gateway, not missing upstream.
        const deadline = Date.now() + 3000;
        while (Date.now() < deadline && !dnsmasqLog.some((l) => /query\[A\] other\.corp\.net from 10\.0\.0\.1$/.test(l))) await Bun.sleep(50);
        expect(dnsmasqLog.filter((l) => /query\[A\] (dbserver1|other)\.corp\.net from 10\.0\.0\.1$/.test(l)).length).toBeGreaterThanOrEqual(2);
        expect(dnsmasqLog.some((l) => / from 10\.84\./.test(l))).toBe(false);

        const text = await cli(a, ["status", "--state-dir", dirA]);
        expect(text).toMatch(new RegExp(`^DNS:\\s+stub ${sa.self.virtualAddress.replace(/\./g, "\\.")}:53, 127\\.0\\.0\\.1:53, zone waygate, registration skipped$`, "m"));
        expect(text).toMatch(new RegExp(`^DNS forwards to:\\s+${gwId} ${gwAddr.replace(/\./g, "\\.")}$`, "m"));
        expect(runA.lines.some((l) => /register=skipped reason=other-netns/.test(l))).toBe(true);

        // Clean stop: the stub goes with the agent.
        expect(await runA.proc.stop(3000)).toBe(0);
        expect(runA.lines.some((l) => /agent: down interface=/.test(l) || /down interface=/.test(l))).toBe(true);
      });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  },
  40_000,
);
