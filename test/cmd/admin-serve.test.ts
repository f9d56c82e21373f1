/**
 * @module test/cmd/admin-serve.test
 * `waygate serve` in-process on 127.0.0.1:0: the first start prints the admin token once and
 * stores only its hash; a restart prints none and the old token still works; --admin-token-file
 * writes a new token 0600 or provisions an existing one; bad --listen and half a TLS pair are
 * usage errors.
 */
import { afterAll, expect, test } from "bun:test";
import { runCommand } from "citty";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import serve, { parseListen, type ServeCommandData } from "../../cmd/serve.ts";
import { silentLogger } from "../../core/log.ts";
import { cleanup, tempDir } from "../control/helpers.ts";

afterAll(cleanup);

async function start(args: string[]): Promise<{ out: () => string; url: string; close: () => Promise<void>; done: Promise<unknown> }> {
  let out = "";
  let resolveListening!: (v: { url: string; close: () => Promise<void> }) => void;
  const listening = new Promise<{ url: string; close: () => Promise<void> }>((r) => (resolveListening = r));
  const data: ServeCommandData = { out: (s) => (out += s), logger: silentLogger, env: {}, noble: true, onListening: (s) => resolveListening({ url: s.url, close: s.close }) };
  const done = runCommand(serve, { rawArgs: ["--listen", "127.0.0.1:0", ...args], data });
  const s = await Promise.race([listening, done.then(() => Promise.reject(new Error("serve ended early")))]);
  return { out: () => out, url: s.url, close: s.close, done };
}

test("first start prints the token once and stores its hash only; a restart prints none", async () => {
  const dir = tempDir();
  const first = await start(["--state-dir", dir]);
  const token = /\n {2}(wga_\S+)\n/.exec(first.out())![1]!;
  expect(first.out()).toContain("Admin token (shown once");
  expect(first.out()).toContain("waygate keys create");
  const res = await fetch(`${first.url}/v1/admin/tags`, { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  await first.close();
  await first.done;
  const db = readFileSync(join(dir, "waygate.db"));
  expect(db.includes(Buffer.from(token))).toBe(false);
  expect(statSync(join(dir, "waygate.db")).mode & 0o777).toBe(0o600);

  const second = await start(["--state-dir", dir]);
  expect(second.out()).not.toContain("Admin token");
  expect((await fetch(`${second.url}/v1/admin/tags`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
  await second.close();
  await second.done;
});

test("--admin-token-file: absent -> generated and written 0600; present -> provisioned", async () => {
  const dir = tempDir();
  const file = join(dir, "secrets", "admin-token");
  const a = await start(["--state-dir", dir, "--admin-token-file", file]);
  expect(a.out()).toContain(`Admin token written to ${file}`);
  expect(a.out()).not.toContain("Admin token (shown once");
  const token = readFileSync(file, "utf8").trim();
  expect(statSync(file).mode & 0o777).toBe(0o600);
  expect((await fetch(`${a.url}/v1/admin/systems`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
  await a.close();
  await a.done;

  writeFileSync(file, "wga_provisioned_by_a_script_0123456789\n");
  const b = await start(["--state-dir", dir, "--admin-token-file", file]);
  expect((await fetch(`${b.url}/v1/admin/systems`, { headers: { authorization: "Bearer wga_provisioned_by_a_script_0123456789" } })).status).toBe(200);
  expect((await fetch(`${b.url}/v1/admin/systems`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
  await b.close();
  await b.done;
});

test("usage errors: --listen, half a TLS pair", async () => {
  expect(parseListen("0.0.0.0:7070")).toEqual({ hostname: "0.0.0.0", port: 7070 });
  expect(parseListen("[::1]:8080")).toEqual({ hostname: "::1", port: 8080 });
  expect(parseListen(":9000")).toEqual({ hostname: "0.0.0.0", port: 9000 });
  expect(() => parseListen("7070")).toThrow("expected HOST:PORT");
  expect(() => parseListen("host:99999")).toThrow("expected HOST:PORT");
  const err = await runCommand(serve, { rawArgs: ["--listen", "127.0.0.1:0", "--tls-cert", "x.pem"], data: { out: () => {}, logger: silentLogger, env: {} } }).catch((e) => e);
  expect(err).toMatchObject({ code: "E_USAGE", message: "--tls-cert and --tls-key go together" });
});
