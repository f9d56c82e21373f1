/**
 * @module test/cmd/wg-commands.test
 * The wg-style commands without a data plane: genkey/pubkey (RFC 7748 vector, clamping, errors
 * with exit status 12, and interchangeable with the real `wg` both ways), `up`'s checks that
 * fail before anything is created (unreadable file, config errors naming file:line:key, bad
 * interface name, bad WAYGATE_TEST_TIMERS), and show/down against a control socket served
 * in-process (platform/linux/control.ts) in a temp WAYGATE_RUN_DIR, including the stale socket
 * a SIGKILLed run leaves behind. The commands run as subprocesses, as a user runs them.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeKey } from "../../core/wire/keys.ts";
import { listenControl, socketPath, type ControlServer } from "../../platform/linux/control.ts";
import type { ShowData } from "../../platform/linux/wg-quick.ts";
import { planRoutes } from "../../platform/linux/wg-quick.ts";
import { parseWgConfig } from "../../core/wire/wg-config.ts";
import { formatAgo, formatBytes, formatShow } from "../../cmd/show.ts";
import { recordingLogger } from "../../core/log.ts";
import { hasTool, inCI } from "../helpers/env.ts";

const root = join(import.meta.dir, "..", "..");

function cli(args: string[], options: { stdin?: string; env?: Record<string, string> } = {}) {
  const r = Bun.spawnSync([process.execPath, join(root, "cmd", "main.ts"), ...args], {
    cwd: root,
    env: { ...process.env, NO_COLOR: "1", ...options.env },
    stdin: options.stdin === undefined ? "ignore" : new TextEncoder().encode(options.stdin),
  });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

const b64 = (hex: string) => Buffer.from(hex, "hex").toString("base64");
// RFC 7748 §6.1, Alice.
const ALICE_PRIVATE = b64("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
const ALICE_PUBLIC = b64("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");

describe("genkey / pubkey", () => {
  test("genkey prints a clamped 32-byte key in base64, different every time", () => {
    const keys = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const r = cli(["genkey"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
      const key = decodeKey(r.stdout);
      expect(key[0]! & 7).toBe(0);
      expect(key[31]! & 0xc0).toBe(0x40);
      keys.add(r.stdout);
    }
    expect(keys.size).toBe(3);
  });

  test("pubkey matches the RFC 7748 vector, with or without the trailing newline", () => {
    expect(cli(["pubkey"], { stdin: `${ALICE_PRIVATE}\n` }).stdout).toBe(`${ALICE_PUBLIC}\n`);
    expect(cli(["pubkey"], { stdin: `  ${ALICE_PRIVATE}` }).stdout).toBe(`${ALICE_PUBLIC}\n`);
  });

  test.each([
    ["empty input", "", "is empty"],
    ["a short key", "abc\n", "must be 44 characters"],
    ["not base64", `${"!".repeat(43)}=\n`, "not canonical base64"],
    ["two keys", `${ALICE_PRIVATE} ${ALICE_PRIVATE}\n`, "several words"],
    ["non-canonical last char", `${ALICE_PRIVATE.slice(0, 42)}B=\n`, "not canonical base64"],
  ])("pubkey rejects %s with E_KEY_INVALID, exit 12", (_name, input, message) => {
    const r = cli(["pubkey"], { stdin: input });
    expect(r.code).toBe(12);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("error[E_KEY_INVALID]: private key on stdin");
    expect(r.stderr).toContain(message);
  });

  const wgMissing = hasTool("wg") ? null : "needs wg (wireguard-tools) on PATH";
  const wgTest = wgMissing === null ? test : inCI ? test : test.skip;
  wgTest(`interchangeable with wg genkey / wg pubkey both ways${wgMissing && !inCI ? ` [skipped: ${wgMissing}]` : ""}`, () => {
    if (wgMissing) throw new Error(`cannot run under CI=true: ${wgMissing}`);
    for (let i = 0; i < 3; i++) {
      const wgKey = Bun.spawnSync(["wg", "genkey"]).stdout.toString();
      const wgPub = Bun.spawnSync(["wg", "pubkey"], { stdin: new TextEncoder().encode(wgKey) }).stdout.toString();
      expect(cli(["pubkey"], { stdin: wgKey }).stdout).toBe(wgPub);

      const ourKey = cli(["genkey"]).stdout;
      const ourPub = cli(["pubkey"], { stdin: ourKey }).stdout;
      const theirs = Bun.spawnSync(["wg", "pubkey"], { stdin: new TextEncoder().encode(ourKey) });
      expect(theirs.exitCode).toBe(0);
      expect(theirs.stdout.toString()).toBe(ourPub);
    }
  });
});

describe("up: checks before anything is created", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "waygate-up-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("an unreadable config is E_CONFIG_INVALID (exit 11) naming the file", () => {
    const r = cli(["up", join(dir, "missing.conf")]);
    expect(r.code).toBe(11);
    expect(r.stderr).toContain(`error[E_CONFIG_INVALID]: ${join(dir, "missing.conf")}: cannot read`);
  });

  test("a config error names file, line and key (exit 11)", () => {
    const file = join(dir, "wg9.conf");
    writeFileSync(file, `[Interface]\nPrivateKey = ${ALICE_PRIVATE}\n\n[Peer]\nAllowedIPs = 10.0.0.2/32\n`);
    const r = cli(["up", file]);
    expect(r.code).toBe(11);
    expect(r.stderr).toContain(`error[E_CONFIG_INVALID]: ${file}:4: PublicKey: is missing from [Peer]`);
    writeFileSync(file, `[Interface]\nPrivateKey = ${ALICE_PRIVATE}\nListenPort = 99999\n`);
    expect(cli(["up", file]).stderr).toContain(`${file}:3: ListenPort: must be 0..65535`);
  });

  test("a bad interface name, --no-foreground and bad WAYGATE_TEST_TIMERS are usage errors (exit 2)", () => {
    const file = join(dir, "ok.conf");
    writeFileSync(file, `[Interface]\nPrivateKey = ${ALICE_PRIVATE}\n`);
    const name = cli(["up", file, "--interface", "much-too-long-name0"]);
    expect(name.code).toBe(2);
    expect(name.stderr).toContain("must be 1-15 characters");
    expect(cli(["up", file, "--no-foreground"]).code).toBe(2);
    const timers = cli(["up", file], { env: { WAYGATE_TEST_TIMERS: '{"rekeyAfterTime":1}' } });
    expect(timers.code).toBe(2);
    expect(timers.stderr).toContain('unknown timer "rekeyAfterTime"');
  });
});

describe("routes (wg-quick's add_route rules)", () => {
  const conf = (extra: string) =>
    parseWgConfig(
      `[Interface]\nPrivateKey = ${ALICE_PRIVATE}\n${extra}\n[Peer]\nPublicKey = ${ALICE_PUBLIC}\nAllowedIPs = 10.1.0.0/16, 10.1.2.3/32, 0.0.0.0/0, fd00::/64\n`,
    );
  test("longest prefixes first; /0 skipped in the main table; Table = off routes nothing", () => {
    expect(planRoutes(conf(""))).toEqual({
      add: ["fd00::/64", "10.1.2.3/32", "10.1.0.0/16"],
      skipped: [{ prefix: "0.0.0.0/0", reason: "default-route-not-supported" }],
      table: null,
    });
    expect(planRoutes(conf("Table = off")).add).toEqual([]);
    expect(planRoutes(conf("Table = 1234"))).toMatchObject({ table: "1234", skipped: [] });
    expect(planRoutes(conf("Table = 1234")).add).toContain("0.0.0.0/0");
  });
});

const SAMPLE: ShowData = {
  interface: "wgt0",
  publicKey: ALICE_PUBLIC,
  listeningPort: 51820,
  crypto: "openssl",
  mtu: 1420,
  addresses: ["10.9.0.1/24"],
  peers: [
    {
      publicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
      presharedKey: false,
      endpoint: null,
      allowedIps: [],
      latestHandshake: 0,
      latestHandshakeMs: 0,
      rxBytes: 0,
      txBytes: 0,
      handshakes: 0,
      handshakeInitiations: 0,
      persistentKeepalive: 0,
      drops: {},
    },
    {
      publicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
      presharedKey: true,
      endpoint: "[fd00::2]:51821",
      allowedIps: ["10.9.0.2/32", "fd00:9::2/128"],
      latestHandshake: 1_700_000_000 - 3723,
      latestHandshakeMs: (1_700_000_000 - 3723) * 1000,
      rxBytes: 1000,
      txBytes: 5 * 1024 * 1024 + 1,
      handshakes: 3,
      handshakeInitiations: 2,
      persistentKeepalive: 1,
      drops: { replayed: 2, "source-not-allowed": 1 },
    },
  ],
  drops: { "malformed-transport": 4 },
  cookieRepliesSent: 0,
  underLoad: false,
  host: { tunRead: 0, tunWritten: 0, tunErrors: {}, engineErrors: 0, loops: 0, wakeups: 0, udp: null },
  now: 1_700_000_000_500,
};

describe("show formatting (wg show's)", () => {
  test("bytes and ages", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(1536)).toBe("1.50 KiB");
    expect(formatBytes(3 * 1024 ** 3)).toBe("3.00 GiB");
    expect(formatAgo(100, 100)).toBe("Now");
    expect(formatAgo(100, 101)).toBe("1 second ago");
    expect(formatAgo(0, 90061)).toBe("1 day, 1 hour, 1 minute, 1 second ago");
  });

  test("one interface, peers newest handshake first", () => {
    expect(formatShow(SAMPLE)).toBe(
      [
        "interface: wgt0",
        `  public key: ${ALICE_PUBLIC}`,
        "  private key: (hidden)",
        "  listening port: 51820",
        "  dropped: malformed-transport 4",
        "",
        "peer: HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
        "  preshared key: (hidden)",
        "  endpoint: [fd00::2]:51821",
        "  allowed ips: 10.9.0.2/32, fd00:9::2/128",
        "  latest handshake: 1 hour, 2 minutes, 3 seconds ago",
        "  transfer: 1000 B received, 5.00 MiB sent",
        "  persistent keepalive: every 1 second",
        "  dropped: replayed 2, source-not-allowed 1",
        "",
        "peer: xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
        "  allowed ips: (none)",
        "",
      ].join("\n"),
    );
  });
});

describe("show / down over the control socket", () => {
  let runDir: string;
  let server: ControlServer;
  let downCalls = 0;
  const logger = recordingLogger();
  beforeAll(async () => {
    runDir = mkdtempSync(join(tmpdir(), "waygate-run-"));
    server = await listenControl(
      socketPath(runDir, "wgt0"),
      {
        show: async () => SAMPLE,
        down: async () => {
          downCalls++;
          await Bun.sleep(50);
          server.close();
        },
      },
      { logger },
    );
  });
  afterAll(() => {
    server.close();
    rmSync(runDir, { recursive: true, force: true });
  });
  const env = () => ({ WAYGATE_RUN_DIR: runDir });

  test("the socket is 0600", () => {
    expect(statSync(socketPath(runDir, "wgt0")).mode & 0o777).toBe(0o600);
  });

  test("show --json, show text, show all", async () => {
    const json = await runAsync(["show", "wgt0", "--json"], env());
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual(SAMPLE);
    const text = await runAsync(["show", "wgt0"], env());
    expect(text.stdout).toBe(formatShow(SAMPLE));
    const all = await runAsync(["show", "--json"], env());
    expect(JSON.parse(all.stdout)).toEqual([SAMPLE]);
  });

  test("a second up on the same interface is refused", async () => {
    await expect(listenControl(socketPath(runDir, "wgt0"), { show: async () => ({}), down: async () => {} })).rejects.toThrow("already up");
  });

  test("a stale socket (its server SIGKILLed) is detected and removed, by show and by a new up", async () => {
    const stale = socketPath(runDir, "wgt1");
    const child = Bun.spawn([process.execPath, "-e", `require("node:net").createServer().listen(${JSON.stringify(stale)}, () => console.log("ready"))`], { stdout: "pipe" });
    const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    child.kill("SIGKILL");
    await child.exited;
    expect(existsSync(stale)).toBe(true);
    const r = await runAsync(["show", "wgt1"], env());
    expect(r.code).toBe(14);
    expect(r.stderr).toContain("interface wgt1 is not up (removed stale control socket");
    expect(existsSync(stale)).toBe(false);

    const child2 = Bun.spawn([process.execPath, "-e", `require("node:net").createServer().listen(${JSON.stringify(stale)}, () => console.log("ready"))`], { stdout: "pipe" });
    await (child2.stdout as ReadableStream<Uint8Array>).getReader().read();
    child2.kill("SIGKILL");
    await child2.exited;
    const again = await listenControl(stale, { show: async () => ({}), down: async () => {} }, { logger });
    again.close();
    expect(logger.lines.some((l) => l.message === `control: stale socket removed path=${stale}`)).toBe(true);
  });

  test("show / down of an interface that is not up: exit 14", async () => {
    const show = await runAsync(["show", "wgnope"], env());
    expect(show.code).toBe(14);
    expect(show.stderr).toContain("interface wgnope is not up (no control socket");
    expect((await runAsync(["down", "wgnope"], env())).code).toBe(14);
  });

  test("down by config path waits for the stop and removes the socket", async () => {
    const r = await runAsync(["down", "/etc/wireguard/wgt0.conf"], env());
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("interface: wgt0 down\n");
    expect(downCalls).toBe(1);
    expect(existsSync(socketPath(runDir, "wgt0"))).toBe(false);
    expect(JSON.parse((await runAsync(["show", "--json"], env())).stdout)).toEqual([]);
  });
});

/** The server runs in this process, so the CLI must not block the event loop (no spawnSync). */
async function runAsync(args: string[], env: Record<string, string>) {
  const p = Bun.spawn([process.execPath, join(root, "cmd", "main.ts"), ...args], {
    cwd: root,
    env: { ...process.env, NO_COLOR: "1", ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}
