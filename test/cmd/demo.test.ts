/**
 * @module test/cmd/demo.test
 * Keeps `npm run demo` honest: runs `bun scripts/demo.ts` as a subprocess and checks what it
 * prints. Part 1 (the profile migration) runs for everyone; part 2 (the office in network
 * namespaces, with the compiled binary) needs root, so this test is a rootTest: skipped with a
 * reason outside CI when not root, failing under CI=true. A non-root run checks that the demo
 * still does part 1 and says how to run part 2.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { isRoot, rootTest } from "../helpers/env.ts";

const ROOT = join(import.meta.dir, "..", "..");

async function runDemo(): Promise<{ exitCode: number; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  const p = Bun.spawn([process.execPath, join(ROOT, "scripts", "demo.ts")], { cwd: ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  const [stdout, stderr, exitCode] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { exitCode, stdout, stderr, ms: Date.now() - t0 };
}

/** The text between the banner whose title starts with `title` and the next banner. */
function section(out: string, title: string): string {
  const start = out.indexOf(`━━━ ${title}`);
  if (start < 0) throw new Error(`no section "${title}" in the demo's output:\n${out}`);
  const next = out.indexOf("━━━ ", out.indexOf("\n", start));
  return out.slice(start, next < 0 ? undefined : next);
}

function expectMigration(out: string): void {
  expect(out).toMatch(/^built \S+dist\/waygate \(waygate \S+\)$/m);
  const plan = section(out, "Part 1.");
  expect(plan).toContain("Migration plan (dry run; --apply to write to");
  expect(plan).toContain("G982V (gateway-office)  allowed to act as gateway");
  expect(plan).toContain("172.26.0.0/20  NAT on (to 172.26.0.1)  (was manual SNAT to 172.26.0.1 — now managed)");
  expect(plan).toContain("migrated-Y7299-via-G982V: tag migrated-Y7299 -> G982V 172.26.0.0/20");
  expect(plan).toContain("Summary: 4 systems, 2 gateways (3 subnets), 3 policies; 0 errors, 2 warnings.");
  expect(section(out, "Apply it")).toMatch(/^Applied: systems 4 created/m);
  expect(section(out, "Apply it")).toContain('"policies":{"created":0,"updated":0,"unchanged":3}');
  expect(section(out, "Strip")).toContain('+ "ExitNode": {},');
}

rootTest(
  "npm run demo: the migration, then the office: enrol, ping and fetch through the gateway, status on both, connect-back dropped, nothing left behind",
  ["ip", "ping", "curl"],
  async () => {
    const r = await runDemo();
    const out = r.stdout;
    if (r.exitCode !== 0) throw new Error(`demo exited ${r.exitCode}:\n${out}\n${r.stderr}`);
    expectMigration(out);

    const prefix = /carries the run's prefix (wg[0-9a-f]{6})/.exec(out)?.[1];
    expect(prefix).toBeDefined();
    expect(section(out, "The gateway:")).toMatch(/standalone: this machine is [A-Z0-9]{5} \(100\.64\.0\.1\), gateway for 172\.26\.0\.0\/20/);
    expect(section(out, "Enrol the laptop")).toMatch(/^enrolled with http:\/\/198\.18\.0\.1:7070 as [A-Z0-9]{5}: virtual address 100\.64\.0\.2 /m);

    const ping = section(out, "Laptop → printer: ping");
    expect(ping).toContain("ping -n -c 3 -i 0.2 -W 3 172.26.0.250");
    expect(ping.match(/^64 bytes from 172\.26\.0\.250: icmp_seq=\d ttl=63/gm)?.length).toBe(3);
    expect(ping).toContain("3 packets transmitted, 3 received, 0% packet loss");

    const page = section(out, "Laptop → printer: fetch");
    expect(page).toMatch(/curl -sS --max-time 5 http:\/\/172\.26\.0\.250\/\n172\.26\.0\.1\n/);
    expect(page).toContain("the printer saw 172.26.0.1: the gateway's LAN address");

    const laptopStatus = section(out, "`waygate status` on the laptop");
    expect(laptopStatus).toMatch(/^Local identity:\s+[A-Z0-9]{5} \(laptop\)$/m);
    expect(laptopStatus).toMatch(/^ {3}Peer state:\s+Up$/m);
    expect(laptopStatus).toMatch(/^ {3}Gateway for:\s+172\.26\.0\.0\/20$/m);
    const gatewayStatus = section(out, "`waygate status` on the gateway");
    expect(gatewayStatus).toMatch(/^Gateway for:\s+172\.26\.0\.0\/20 \(NAT\)$/m);
    expect(gatewayStatus).toMatch(/^Peer: [A-Z0-9]{5} \(laptop\)$/m);

    const back = section(out, "Printer → laptop");
    expect(back).toMatch(/curl -sS --max-time 2 http:\/\/100\.64\.0\.2:8080\/\ncurl: \(28\)/);
    const drops = /connect-back refused: dropped by the gateway, drop counter (\d+) -> (\d+) packets/.exec(back);
    expect(drops).not.toBeNull();
    expect(Number(drops![2])).toBeGreaterThan(Number(drops![1]));

    const teardown = section(out, "Teardown");
    expect(teardown.match(/^ {2}exit status 0$/gm)?.length).toBe(2); // both agents stopped cleanly
    expect(teardown).toContain(`nothing left behind: no namespace, link, marker, state directory or process of ${prefix}`);
    expect(out).toMatch(/━━━ Done in [\d.]+ s/);
    // Checked here too, not only by the demo itself.
    expect(Bun.spawnSync(["ip", "netns", "list"]).stdout.toString()).not.toContain(`${prefix}-`);
    expect(r.ms).toBeLessThan(60_000);
  },
  90_000,
);

// As root this path cannot be reached (the demo checks the real uid), so the test exists only for non-root runs.
if (!isRoot) {
  test("npm run demo without root: part 1, then what to run for the office", async () => {
  const r = await runDemo();
  expect(r.exitCode).toBe(0);
  expectMigration(r.stdout);
  expect(r.stdout).toContain("needs root");
  expect(r.stdout).toContain("sudo npm run demo");
  expect(r.stdout).not.toContain("━━━ Part 2. The office, in network namespaces ━");
  }, 60_000);
}
