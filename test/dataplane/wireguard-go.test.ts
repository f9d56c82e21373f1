/**
 * @module test/dataplane/wireguard-go
 * Interop with the real wireguard-go (root only): in a private network namespace, wireguard-go
 * on 127.0.0.1:51820 and our Device (in a driver process) on 127.0.0.1:40000 complete a handshake
 * started by either side and carry ICMP echo both ways; once with noble, once with OpenSSL.
 */
import { afterAll, beforeAll, expect } from "bun:test";
import { encodeKey, generatePrivateKey, publicKeyFrom } from "../../core/wire/keys.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { missingRequirement, rootTest } from "../helpers/env.ts";

const TOOLS = ["wireguard-go", "wg", "ip", "ping"];
const NS = `wgi${process.pid}`;
const DRIVER = new URL("./wireguard-go-peer.ts", import.meta.url).pathname;
const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));
const crypto25519 = nobleCrypto();
let wg: ReturnType<typeof Bun.spawn> | null = null;
let keyFile = "";

function run(argv: string[], allowFail = false) {
  const r = Bun.spawnSync(argv, { env: { ...process.env, LC_ALL: "C" } });
  const out = r.stdout.toString() + r.stderr.toString();
  if (r.exitCode !== 0 && !allowFail) throw new Error(`${argv.join(" ")} exited ${r.exitCode}: ${out}`);
  return { code: r.exitCode, out };
}
const inNs = (argv: string[], allowFail = false) => run(["ip", "netns", "exec", NS, ...argv], allowFail);
const keypair = () => {
  const sk = generatePrivateKey(random);
  return { sk: encodeKey(sk), pk: encodeKey(publicKeyFrom(crypto25519, sk)) };
};

const wgKeys = keypair();
const ours = keypair();

if (missingRequirement(TOOLS) === null) {
  beforeAll(async () => {
    run(["ip", "netns", "add", NS]);
    inNs(["ip", "link", "set", "lo", "up"]);
    wg = Bun.spawn(["ip", "netns", "exec", NS, "wireguard-go", "-f", "wgi0"], {
      env: { ...process.env, WG_PROCESS_FOREGROUND: "1", LOG_LEVEL: "error" },
      stdout: "ignore",
      stderr: "ignore",
    });
    for (let i = 0; i < 100 && inNs(["ip", "link", "show", "wgi0"], true).code !== 0; i++) await Bun.sleep(50);
    keyFile = `/tmp/${NS}.key`;
    await Bun.write(keyFile, `${wgKeys.sk}\n`);
    inNs(["wg", "set", "wgi0", "private-key", keyFile, "listen-port", "51820"]);
    inNs(["ip", "addr", "add", "10.77.0.1/24", "dev", "wgi0"]);
    inNs(["ip", "link", "set", "wgi0", "up"]);
  });
  afterAll(() => {
    wg?.kill();
    run(["ip", "netns", "del", NS], true);
    if (keyFile) run(["rm", "-f", keyFile], true);
  });
}

function resetPeer() {
  inNs(["wg", "set", "wgi0", "peer", ours.pk, "remove"]);
  inNs(["wg", "set", "wgi0", "peer", ours.pk, "allowed-ips", "10.77.0.2/32", "endpoint", "127.0.0.1:40000"]);
}

function driver(mode: "initiate" | "respond", cryptoName: string) {
  return Bun.spawn(["ip", "netns", "exec", NS, process.execPath, DRIVER, mode, ours.sk, wgKeys.pk, cryptoName], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, BUN_JSC_useOSREntryToDFG: "false" },
  });
}

for (const cryptoName of ["noble", "openssl"]) {
  rootTest(`we initiate; wireguard-go answers the handshake and the ping (${cryptoName})`, TOOLS, async () => {
    resetPeer();
    const p = driver("initiate", cryptoName);
    const code = await p.exited;
    const out = await new Response(p.stdout).text();
    expect({ code, out }).toMatchObject({ code: 0 });
    const stats = JSON.parse(out.trim().split("\n").at(-1)!);
    expect(stats.peers[0].handshakes).toBe(1);
    expect(stats.peers[0].drops).toEqual({});
    const dump = inNs(["wg", "show", "wgi0", "latest-handshakes"]).out;
    expect(Number(dump.trim().split(/\s+/)[1])).toBeGreaterThan(0);
  }, 20_000);

  rootTest(`wireguard-go initiates; our Device responds and answers pings (${cryptoName})`, TOOLS, async () => {
    resetPeer();
    const p = driver("respond", cryptoName);
    await Bun.sleep(500);
    const ping = inNs(["ping", "-c", "2", "-i", "0.3", "-W", "3", "10.77.0.2"], true);
    const code = await p.exited;
    const out = await new Response(p.stdout).text();
    expect(ping.out).toContain("2 received");
    expect(code).toBe(0);
    const stats = JSON.parse(out.trim().split("\n").at(-1)!);
    expect(stats.peers[0].handshakes).toBe(1);
    expect(stats.peers[0].handshakeInitiations).toBe(0);
  }, 20_000);
}
