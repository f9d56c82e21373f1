/**
 * @module test/e2e/dns-e2e.test
 * DNS end to end in network namespaces (root, dnsmasq):
 *
 *   lan (dnsmasq 10.0.0.53) ── gw (forwarder on 100.64.0.1:53, upstream 10.0.0.53 from a temp
 *   resolv.conf, temp hosts file) ══ ca (stub 127.0.0.1:53, client A 100.64.0.2, granted
 *   10.0.0.0/24 via gatewayRules) and ══ cb (stub, client B 100.64.0.3, no grant)
 *
 * The ══ links are point-to-point veths standing in for the tunnel. Client A resolves
 * dbserver1.corp.net (10.0.0.30) through its stub, gets NXDOMAIN for other.corp.net
 * (192.168.0.30 exists on the LAN's DNS but A may not reach it), resolves printer.corp.net from
 * the gateway's hosts file and the peer names from its own stub; client B gets REFUSED.
 *
 * Safety: everything runs inside the rig's namespaces (no route out of the rig); dnsmasq gets
 * explicit flags (no resolv.conf, no hosts, one listen address, a pid file in a temp dir) and is
 * stopped by its PID with the rig; the host's /etc/resolv.conf and /etc/hosts are never read.
 */
import { expect } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NetMapGatewayRule } from "../../core/policy/netmap.ts";
import type { GatewayConfig, QueryConfig, QueryResult, StubConfig } from "../dns/e2e-node.ts";
import { rootTest } from "../helpers/env.ts";
import { createRig, lineReader, type Rig, type RigProcess } from "../helpers/netns.ts";

const NODE = join(import.meta.dir, "../dns/e2e-node.ts");
const BUN = process.execPath;

type LineReader = ReturnType<typeof lineReader>;

/** Reads lines until one matches `pattern`; the process's stderr (or the lines seen) on failure. */
async function waitForLine(proc: RigProcess, reader: LineReader, pattern: RegExp, timeoutMs = 8000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  const seen: string[] = [];
  for (;;) {
    const left = deadline - Date.now();
    let line: string;
    try {
      if (left <= 0) throw new Error(`no line matching ${pattern} within ${timeoutMs} ms`);
      line = await reader.next(left);
    } catch (err) {
      throw new Error(`${proc.argv.slice(0, 3).join(" ")}: ${(err as Error).message}; lines: ${JSON.stringify(seen.slice(-20))}`);
    }
    seen.push(line);
    if (pattern.test(line)) return line;
  }
}

function stdoutOf(proc: RigProcess): LineReader {
  return lineReader(proc.subprocess.stdout as ReadableStream<Uint8Array>);
}

async function query(rig: Rig, ns: string, config: QueryConfig): Promise<QueryResult[]> {
  const r = await rig.exec(ns, [BUN, NODE, "query", JSON.stringify(config)]);
  return r.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as QueryResult);
}

async function p2p(rig: Rig, a: { ns: string; address: string }, b: { ns: string; address: string }): Promise<void> {
  const [la, lb] = await rig.addVeth({ ns: a.ns }, { ns: b.ns });
  await rig.exec(a.ns, ["ip", "addr", "add", a.address, "peer", `${b.address}/32`, "dev", la]);
  await rig.exec(b.ns, ["ip", "addr", "add", b.address, "peer", `${a.address}/32`, "dev", lb]);
}

rootTest(
  "dns: dnsmasq on the LAN, gateway forwarder filtering by grant, client stubs with peer names",
  ["ip", "dnsmasq"],
  async () => {
    const tmp = mkdtempSync(join(tmpdir(), "waygate-dns-e2e-"));
    const rig = await createRig();
    try {
      const lan = await rig.addNamespace("lan");
      const gw = await rig.addNamespace("gw");
      const ca = await rig.addNamespace("ca");
      const cb = await rig.addNamespace("cb");
      await rig.addVeth({ ns: lan, addresses: ["10.0.0.53/24"] }, { ns: gw, addresses: ["10.0.0.1/24"] });
      await p2p(rig, { ns: gw, address: "100.64.0.1" }, { ns: ca, address: "100.64.0.2" });
      await p2p(rig, { ns: gw, address: "100.64.0.1" }, { ns: cb, address: "100.64.0.3" });

      const pidFile = join(tmp, "dnsmasq.pid");
      const dnsmasq = rig.spawn(lan, [
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--listen-address=10.0.0.53",
        "--bind-interfaces",
        "--port",
        "53",
        "--address=/dbserver1.corp.net/10.0.0.30",
        "--address=/other.corp.net/192.168.0.30",
        `--pid-file=${pidFile}`,
        "--log-facility=-",
        "--log-queries",
      ]);
      const dnsmasqLog = lineReader(dnsmasq.subprocess.stderr as ReadableStream<Uint8Array>);
      await waitForLine(dnsmasq, dnsmasqLog, /started, version/);

      const resolvConfPath = join(tmp, "resolv.conf");
      const hostsPath = join(tmp, "hosts");
      writeFileSync(resolvConfPath, "# the gateway's resolver (a temp file, not /etc/resolv.conf)\nnameserver 10.0.0.53\n");
      writeFileSync(hostsPath, "127.0.0.1 localhost\n10.0.0.40 printer.corp.net\n");
      // A's only grant: PostgreSQL on 10.0.0.0/24. DNS filtering ignores ports: the LAN subnet is reachable.
      const gatewayRules: NetMapGatewayRule[] = [
        { action: "allow", sender: "sys-a", senderAddress: "100.64.0.2", subnet: "10.0.0.0/24", nat: true, dst: "10.0.0.0/24", protocol: "tcp", ports: "5432", policy: "db" },
      ];
      const gwConfig: GatewayConfig = { listen: "100.64.0.1", resolvConfPath, hostsPath, gatewayRules };
      const gateway = rig.spawn(gw, [BUN, NODE, "gateway", JSON.stringify(gwConfig)]);

      const peers = [
        { id: "sys-a", name: "Client A", virtualAddress: "100.64.0.2", dnsNames: ["client-a.waygate", "sys-a.id.waygate"] },
        { id: "gw-berlin", name: "Gateway Berlin", virtualAddress: "100.64.0.1", dnsNames: ["gateway-berlin.waygate", "gw-berlin.id.waygate"] },
      ];
      const stubConfig: StubConfig = { listen: "127.0.0.1", gateway: "100.64.0.1", peers };
      const stubA = rig.spawn(ca, [BUN, NODE, "stub", JSON.stringify(stubConfig)]);
      const stubB = rig.spawn(cb, [BUN, NODE, "stub", JSON.stringify(stubConfig)]);
      await Promise.all([gateway, stubA, stubB].map((p) => waitForLine(p, stdoutOf(p), /^ready$/)));

      const a = await query(rig, ca, {
        server: "127.0.0.1",
        queries: [
          { name: "dbserver1.corp.net", type: "A" },
          { name: "other.corp.net", type: "A" },
          { name: "printer.corp.net", type: "A" },
          { name: "gw-berlin.id.waygate", type: "A" },
          { name: "Gateway-Berlin.waygate", type: "A" },
          { name: "client-a.waygate", type: "A" },
          { name: "nobody.waygate", type: "A" },
          { name: "DBSERVER1.corp.net", type: "A", tcp: true },
        ],
      });
      const brief = (r: QueryResult) => `${r.name} ${r.rcode} ${r.answers.join(",")}`.trim();
      expect(a.map(brief)).toEqual([
        "dbserver1.corp.net NOERROR 10.0.0.30",
        "other.corp.net NXDOMAIN",
        "printer.corp.net NOERROR 10.0.0.40",
        "gw-berlin.id.waygate NOERROR 100.64.0.1",
        "Gateway-Berlin.waygate NOERROR 100.64.0.1",
        "client-a.waygate NOERROR 100.64.0.2",
        "nobody.waygate NXDOMAIN",
        "DBSERVER1.corp.net NOERROR 10.0.0.30",
      ]);

      const b = await query(rig, cb, {
        server: "127.0.0.1",
        queries: [
          { name: "dbserver1.corp.net", type: "A" },
          { name: "printer.corp.net", type: "A" },
          { name: "gw-berlin.id.waygate", type: "A" },
        ],
      });
      expect(b.map(brief)).toEqual(["dbserver1.corp.net REFUSED", "printer.corp.net REFUSED", "gw-berlin.id.waygate NOERROR 100.64.0.1"]);

      // The gateway asked dnsmasq (from its LAN address) for both names: other.corp.net was
      // filtered at the gateway, not missing upstream. Only A's queries reached it.
      await waitForLine(dnsmasq, dnsmasqLog, /query\[A\] dbserver1\.corp\.net from 10\.0\.0\.1$/);
      await waitForLine(dnsmasq, dnsmasqLog, /query\[A\] other\.corp\.net from 10\.0\.0\.1$/);
      // --no-daemon writes no pid file (dnsmasq only writes it when it forks), so the rig stops
      // dnsmasq by the PID it spawned; it is still running until then.
      expect(dnsmasq.subprocess.exitCode).toBeNull();
    } finally {
      await rig.destroy();
      rmSync(tmp, { recursive: true, force: true });
    }
  },
  30_000,
);
