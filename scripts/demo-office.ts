/**
 * @module scripts/demo-office
 * Part 2 of `npm run demo` (root only): a throwaway office in network namespaces
 * (scripts/rig/office.ts), run with the compiled binary, every step narrated with the exact
 * command and its real output:
 *
 *   laptop 198.18.0.2 ── "internet" ── gateway 198.18.0.1 | 172.26.0.1 ── LAN: printer 172.26.0.250
 *
 * The gateway runs `waygate serve --standalone` (control plane + gateway agent in one process);
 * the laptop is enrolled with a tag and a self-approving key, granted the office LAN, and runs
 * `waygate run`. Then: `waygate status` on both, ping and an HTTP fetch from the printer through
 * the gateway (the printer sees the gateway's LAN address: SNAT), the printer trying to open a
 * connection back to the laptop's virtual address (dropped by the gateway's stateful rule; its
 * kernel counter shown before and after), a clean stop of both agents, the rig torn down, and a
 * check that nothing with the run's prefix is left (namespaces, links, marker, state directory).
 *
 * Teardown runs on every way out: normal end, a failed step (the error is rethrown after the
 * teardown), and SIGINT/SIGTERM (the rig's prefix is removed with cleanupStale even when the
 * signal arrives while the rig is still being built; exit 130/143).
 *
 * As a script: `bun scripts/demo-office.ts [--binary dist/waygate]` (builds when no binary is given).
 */
import { existsSync } from "node:fs";
import { relative } from "node:path";
import { cleanupStale, MARKER_DIR, randomPrefix } from "./rig/netns.ts";
import { createOffice, INTERNET, LAN, type LoggedProcess, type Office, SERVER_URL } from "./rig/office.ts";

export function banner(text: string): void {
  console.log(`\n━━━ ${text} ${"━".repeat(Math.max(0, 72 - text.length))}`);
}

/** The tools part 2 runs inside the namespaces. */
export const OFFICE_TOOLS = ["ip", "ping", "curl"] as const;

const indent = (text: string, by = "  ") =>
  text
    .trimEnd()
    .split("\n")
    .map((l) => `${by}${l}`)
    .join("\n");

/** Steps that outlive a failure report: lines from a LoggedProcess, for the error message. */
function lastLines(p: LoggedProcess | undefined, n = 15): string {
  return p ? p.lines.slice(-n).map((l) => `    ${l.text}`).join("\n") : "";
}

export async function officeDemo(binary: string): Promise<void> {
  const prefix = randomPrefix();
  let office: Office | null = null;
  let tearingDown: Promise<void> | null = null;
  const teardown = (): Promise<void> =>
    (tearingDown ??= (async () => {
      if (office) await office.destroy();
      // Also what a half-built rig left (a signal during createOffice): everything with the prefix.
      await cleanupStale(prefix);
    })());
  let interrupted = false;
  const onSignal = (signal: "SIGINT" | "SIGTERM") => {
    interrupted = true;
    console.log(`\n${signal}: tearing the office down (prefix ${prefix})`);
    void teardown()
      .catch((err: unknown) => console.error(`teardown failed: ${String(err)}`))
      .finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  const onInt = () => onSignal("SIGINT");
  const onTerm = () => onSignal("SIGTERM");
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);

  const wg = relative(process.cwd(), binary) || binary;
  const show = (ns: string, argv: readonly string[]) => console.log(`$ ip netns exec ${ns} ${argv.join(" ")}`);
  const t0 = Date.now();
  try {
    banner("Part 2. The office, in network namespaces");
    console.log(
      [
        `laptop ${INTERNET.laptop} ── "internet" ${INTERNET.prefix} ── gateway ${INTERNET.gateway} | ${LAN.gateway} ── office LAN ${LAN.prefix}: printer ${LAN.printer}`,
        `Every namespace, link and process carries the run's prefix ${prefix}; nothing is routed out of the rig.`,
        `"waygate" below is ${wg}, the executable just built.`,
      ].join("\n"),
    );
    office = await createOffice({ waygate: [binary], prefix });
    const { ns, dirs, links } = office;
    console.log(`namespaces: ${ns.laptop} (laptop), ${ns.gateway} (gateway), ${ns.printer} (printer); state under ${dirs.root}`);

    const cli = async (where: string, args: readonly string[]) => {
      show(where, ["waygate", ...args]);
      const out = await office!.cli(where, args);
      console.log(out.trimEnd());
      return out;
    };
    const conn = ["--server", SERVER_URL, "--token-file", dirs.tokenFile];
    const admin = (args: readonly string[]) => cli(ns.gateway, [...args, ...conn]);

    banner("The gateway: control plane and gateway agent in one process");
    show(ns.gateway, ["waygate", "serve", "--standalone", "--listen", `${INTERNET.gateway}:7070`, "--state-dir", dirs.server, "--admin-token-file", dirs.tokenFile, "&"]);
    const gw = await office.startGateway();
    for (const re of [/^standalone: this machine is /, /firewall: backend=/, /sysctl: key=net.ipv4.ip_forward/, /gateway: applied /]) {
      const l = gw.process.lines.find((x) => re.test(x.text));
      if (l) console.log(`  ${l.text}`);
    }
    const backendLine = gw.process.lines.find((l) => /firewall: backend=/.test(l.text))?.text ?? "";
    const backend = /backend=(\S+)/.exec(backendLine)?.[1] ?? "";
    const variant = /variant=(\S+)/.exec(backendLine)?.[1];

    banner("Enrol the laptop: a tag, a self-approving key, `waygate enrol`");
    await admin(["tags", "add", "staff"]);
    const keyOut = await admin(["keys", "create", "--tag", "staff", "--auto-approve"]);
    const key = /^\s+(\S+)\s*$/m.exec(keyOut)?.[1];
    if (!key) throw new Error(`no key in the output of keys create:\n${keyOut}`);
    const enrolOut = await cli(ns.laptop, ["enrol", "--server", SERVER_URL, "--key", key, "--state-dir", dirs.laptop, "--hostname", "laptop"]);
    const enrolled = /as ([A-Z0-9]{5}): virtual address ([0-9.]+)/.exec(enrolOut);
    if (!enrolled) throw new Error(`unexpected enrol output:\n${enrolOut}`);
    const laptop = office.adoptLaptop({ id: enrolled[1]!, virtualAddress: enrolled[2]! });

    banner("Grant the tag the office LAN through the gateway");
    await admin(["policies", "add", "office", "--tag", "staff", "--gateway", `${gw.id}=${LAN.prefix}`]);
    await office.waitStatus("gateway", (s) => s.peers?.some((p: any) => p.id === laptop.id));

    banner("Start the laptop's agent");
    show(ns.laptop, ["waygate", "run", "--state-dir", dirs.laptop, "--interface", links.laptopTun, "&"]);
    const lp = await office.startLaptop();
    for (const l of lp.lines) if (/^agent: \S+ up on /.test(l.text)) console.log(`  ${l.text}`);
    await office.waitStatus("laptop", (s) => s.peers?.some((p: any) => p.gatewayFor.includes(LAN.prefix)));
    await waitUntil("the laptop's route to the LAN", async () => (await office!.rig.exec(ns.laptop, ["ip", "-4", "route", "show", LAN.prefix])).stdout.includes(links.laptopTun));
    const route = await office.rig.exec(ns.laptop, ["ip", "-4", "route", "show", LAN.prefix]);
    show(ns.laptop, ["ip", "route", "show", LAN.prefix]);
    console.log(route.stdout.trimEnd());

    banner("The printer: an HTTP server on 172.26.0.250:80 that answers with who asked");
    await office.listen(ns.printer, LAN.printer, [80]);
    console.log(`(in ${ns.printer}: bun scripts/rig/office.ts listen ${LAN.printer} 80)`);

    banner("Laptop → printer: ping, through the gateway");
    // The agent is up, but its first handshake with the gateway (and the gateway's health as the
    // route selector sees it) may take a moment: wait for one answer, then show three.
    const ready = Date.now();
    await waitUntil("a first answer from the printer", () => office!.ping(ns.laptop, LAN.printer, { count: 1, timeoutS: 1 }), 15_000);
    console.log(`(the tunnel answered after ${Date.now() - ready} ms)`);
    const pingArgv = ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "3", LAN.printer];
    show(ns.laptop, pingArgv);
    const ping = await office.rig.exec(ns.laptop, pingArgv, { allowFailure: true });
    console.log(ping.stdout.trimEnd());
    if (ping.exitCode !== 0) throw new Error(`ping ${LAN.printer} from the laptop failed (exit ${ping.exitCode}): ${ping.stderr}`);

    banner("Laptop → printer: fetch a page");
    const curlArgv = ["curl", "-sS", "--max-time", "5", `http://${LAN.printer}/`];
    show(ns.laptop, curlArgv);
    const page = await office.rig.exec(ns.laptop, curlArgv, { allowFailure: true });
    if (page.exitCode !== 0) throw new Error(`curl http://${LAN.printer}/ from the laptop failed: ${page.stderr}`);
    console.log(page.stdout.trimEnd());
    const asker = page.stdout.trim();
    console.log(
      asker === LAN.gateway
        ? `the printer saw ${asker}: the gateway's LAN address (the gateway SNATs overlay traffic into the LAN), not the laptop's ${laptop.virtualAddress}`
        : `the printer saw ${asker}`,
    );

    banner("`waygate status` on the laptop: the gateway is up, and what it is gateway for");
    await cli(ns.laptop, ["status", "--state-dir", dirs.laptop]);

    banner("`waygate status` on the gateway");
    await cli(ns.gateway, ["status", "--state-dir", dirs.gatewayAgent]);

    banner("Printer → laptop: connecting back is not allowed");
    await office.listen(ns.laptop, "0.0.0.0", [8080]);
    console.log(`(the laptop listens on port 8080, so only the gateway can be in the way)`);
    const counterArgv =
      backend === "nftables"
        ? ["nft", "list", "chain", "inet", "waygate", "forward"]
        : [variant === "legacy" || variant === "nft" ? `iptables-${variant}` : "iptables", "-w", "-L", "WAYGATE-FORWARD", "-v", "-x", "-n"];
    const dropLine = async () => {
      const r = await office!.rig.exec(ns.gateway, counterArgv, { allowFailure: true });
      const line = r.stdout.split("\n").find((l) => (backend === "nftables" ? /oifname .* drop/.test(l) : /\bDROP\b/.test(l)))?.trim() ?? "";
      const packets = backend === "nftables" ? Number(/counter packets (\d+)/.exec(line)?.[1] ?? NaN) : Number(line.split(/\s+/)[0] ?? NaN);
      return { text: r.stdout, line, packets };
    };
    const before = await dropLine();
    show(ns.gateway, counterArgv);
    console.log(before.text.trimEnd());
    const backArgv = ["curl", "-sS", "--max-time", "2", `http://${laptop.virtualAddress}:8080/`];
    show(ns.printer, backArgv);
    const back = await office.rig.exec(ns.printer, backArgv, { allowFailure: true });
    console.log(`${(back.stdout + back.stderr).trimEnd()}${back.exitCode === 0 ? "" : `\n(curl exit ${back.exitCode})`}`);
    if (back.exitCode === 0) throw new Error(`the printer reached the laptop at ${laptop.virtualAddress}:8080: the gateway let a LAN-initiated connection in`);
    const after = await dropLine();
    show(ns.gateway, [...counterArgv, "|", "grep", "-i", "drop"]);
    console.log(after.line);
    if (!(after.packets > before.packets)) throw new Error(`the gateway's drop counter did not grow (${before.packets} -> ${after.packets})`);
    console.log(`connect-back refused: dropped by the gateway, drop counter ${before.packets} -> ${after.packets} packets`);

    banner("Teardown: stop both agents, remove the namespaces");
    console.log(`$ kill -TERM ${lp.proc.pid}   # the laptop's waygate run`);
    console.log(`  exit status ${await office.stopLaptop({ graceful: true })}`);
    console.log(`$ kill -TERM ${gw.process.proc.pid}   # the gateway's waygate serve`);
    console.log(`  exit status ${await office.stopGateway({ graceful: true })}`);
    const root = dirs.root;
    const pids = [lp.proc.pid, gw.process.proc.pid];
    await teardown();
    office = null;
    const left = await leftovers(prefix, root);
    for (const pid of pids) if (alive(pid)) left.push(`process ${pid}`);
    console.log(`$ ip netns list; ip -o link show; ls ${MARKER_DIR}; ps   # anything with ${prefix}, or our waygate processes?`);
    if (left.length > 0) throw new Error(`left behind after teardown: ${left.join("; ")}`);
    console.log(`nothing left behind: no namespace, link, marker, state directory or process of ${prefix} (part 2 took ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (err) {
    // A step failing because the signal handler is tearing the rig down: let the handler finish and exit.
    if (interrupted) await new Promise(() => {});
    const hint = office ? [lastLines(office.gateway?.process), lastLines(office.laptop?.process ?? undefined)].filter(Boolean).join("\n---\n") : "";
    console.log(`\nfailed: ${err instanceof Error ? err.message : String(err)}\ntearing the office down (prefix ${prefix})`);
    if (hint) console.log(`last lines of the waygate processes:\n${hint}`);
    await teardown().catch((e: unknown) => console.error(`teardown failed: ${String(e)}`));
    const left = await leftovers(prefix, office?.dirs.root).catch(() => ["(check failed)"]);
    console.log(left.length === 0 ? `nothing left behind (${prefix})` : `LEFT BEHIND: ${left.join("; ")}`);
    throw err;
  } finally {
    process.off("SIGINT", onInt);
    process.off("SIGTERM", onTerm);
  }
}

/** What still carries the prefix: namespaces, links in the host namespace, the marker, the state dir. */
export async function leftovers(prefix: string, stateRoot?: string): Promise<string[]> {
  const out: string[] = [];
  const netns = Bun.spawnSync(["ip", "netns", "list"]).stdout.toString();
  for (const l of netns.split("\n")) if (l.startsWith(`${prefix}-`)) out.push(`namespace ${l.split(/\s+/)[0]}`);
  const links = Bun.spawnSync(["ip", "-o", "link", "show"]).stdout.toString();
  for (const l of links.split("\n")) {
    const m = /^\d+:\s+([^:@\s]+)/.exec(l);
    if (m?.[1]?.startsWith(prefix)) out.push(`link ${m[1]}`);
  }
  if (existsSync(`${MARKER_DIR}/${prefix}`)) out.push(`marker ${MARKER_DIR}/${prefix}`);
  if (stateRoot && existsSync(stateRoot)) out.push(`directory ${stateRoot}`);
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitUntil(what: string, probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what}: not there within ${timeoutMs} ms`);
    await Bun.sleep(100);
  }
}

if (import.meta.main) {
  const i = process.argv.indexOf("--binary");
  let binary = i >= 0 ? process.argv[i + 1] : undefined;
  if (!binary) binary = await (await import("./build.ts")).build();
  try {
    await officeDemo(binary);
  } catch {
    process.exit(1);
  }
  process.exit(0);
}
