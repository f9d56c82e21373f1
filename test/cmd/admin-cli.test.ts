/**
 * @module test/cmd/admin-cli.test
 * The admin CLI (systems, keys, tags, gateways, policies, policy explain) run in-process against
 * a control plane started on 127.0.0.1: each command's effect and output, `--json` on every
 * listing, and the errors a user sees: a wrong token (401), a bad argument (400 naming the
 * field), an unreachable server, no token at all — with their exit statuses through runCli.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { runCommand, type CommandDef } from "citty";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { commands } from "../../cmd/commands.ts";
import { runCli } from "../../cmd/main.ts";
import { cleanup, enrolledAgent, startTestServer, tempDir, type TestServer } from "../control/helpers.ts";

/** Response JSON, untyped (tests assert on its shape). */
const j = (r: Response): Promise<any> => r.json();

let t: TestServer;
let env: Record<string, string>;

beforeAll(async () => {
  t = await startTestServer();
  env = { WAYGATE_SERVER: t.server.url, WAYGATE_ADMIN_TOKEN: t.adminToken };
});
afterAll(async () => {
  await t.stop();
  cleanup();
});

/** Runs `waygate <argv>` in-process; returns stdout or the error thrown. */
async function cli(argv: string[], extraEnv: Record<string, string | undefined> = {}): Promise<{ out: string; error: (Error & { code?: string; field?: string; httpStatus?: number }) | null }> {
  let out = "";
  const top = (await commands[argv[0]!]!.load()) as CommandDef<any>;
  // citty does not hand `data` down to subcommands: resolve the subcommand here.
  const subs = (typeof top.subCommands === "function" ? await top.subCommands() : await top.subCommands) as Record<string, CommandDef<any>>;
  const cmd = subs[argv[1]!]!;
  try {
    await runCommand(cmd, { rawArgs: argv.slice(2), data: { out: (s: string) => (out += s), env: { ...env, ...extraEnv } } });
    return { out, error: null };
  } catch (error) {
    return { out, error: error as Error };
  }
}

async function ok(argv: string[]): Promise<string> {
  const r = await cli(argv);
  if (r.error) throw r.error;
  return r.out;
}

describe("admin CLI", () => {
  test("tags add/list/remove, with --json", async () => {
    expect(await ok(["tags", "add", "staff", "--description", "office laptops"])).toBe("tag staff created\n");
    await ok(["tags", "add", "servers"]);
    await ok(["tags", "add", "temp"]);
    expect(await ok(["tags", "list"])).toContain("staff    0        office laptops");
    expect(await ok(["tags", "remove", "temp"])).toBe("tag temp removed\n");
    const json = JSON.parse(await ok(["tags", "list", "--json"]));
    expect(json.map((x: { name: string }) => x.name)).toEqual(["servers", "staff"]);
  });

  test("keys create prints the key once; list never shows it; remove revokes", async () => {
    const out = await ok(["keys", "create", "--tag", "staff", "--tag", "servers", "--uses", "3", "--expires", "7d", "--auto-approve", "--description", "rack"]);
    const key = /\n {2}(wgk_\S+)\n/.exec(out)![1]!;
    expect(out).toContain("3 uses");
    const list = await ok(["keys", "list"]);
    expect(list).not.toContain(key);
    expect(list).toContain("0/3");
    const json = JSON.parse(await ok(["keys", "list", "--json"]));
    expect(json[0]).toMatchObject({ maxUses: 3, autoApprove: true, tags: ["servers", "staff"], description: "rack" });
    expect(await ok(["keys", "remove", json[0].id])).toBe(`enrolment key ${json[0].id} removed\n`);
    expect(JSON.parse(await ok(["keys", "list", "--json"]))).toEqual([]);
  });

  test("systems list/show/approve/disable/enable/edit/remove", async () => {
    const key = /\n {2}(wgk_\S+)\n/.exec(await ok(["keys", "create", "--tag", "staff"]))![1]!;
    const { testAgent } = await import("../control/helpers.ts");
    const agent = testAgent(t);
    const enrolled = await j(await agent.enrol(key, "laptop-cli"));
    const id = enrolled.systemId as string;
    expect(await ok(["systems", "list"])).toMatch(new RegExp(`${id}\\s+laptop-cli\\s+100\\.64\\.0\\.\\d+\\s+staff\\s+unapproved`));
    expect(await ok(["systems", "approve", id])).toBe(`${id} (laptop-cli) approved\n`);
    await ok(["systems", "disable", id]);
    expect(JSON.parse(await ok(["systems", "show", id, "--json"]))).toMatchObject({ approved: true, enabled: false });
    await ok(["systems", "enable", id]);
    expect(await ok(["systems", "edit", id, "--add-tag", "servers", "--remove-tag", "staff", "--description", "Alice's"])).toBe(`${id} (laptop-cli) updated: tags servers\n`);
    const shown = await ok(["systems", "show", id]);
    expect(shown).toContain("description:  Alice's");
    expect(shown).toContain("tags:         servers");
    const list = JSON.parse(await ok(["systems", "list", "--json"]));
    expect(list.find((s: { id: string }) => s.id === id)).toMatchObject({ tags: ["servers"], enabled: true });
    expect(await ok(["systems", "remove", id])).toBe(`${id} removed\n`);
  });

  test("gateways enable, subnet-add, nat, drain, priority, subnet-remove, list --json", async () => {
    const gw = await enrolledAgent(t, [], "gw-cli");
    expect(await ok(["gateways", "enable", gw.id])).toBe(`${gw.id} may act as a gateway\n`);
    expect(await ok(["gateways", "subnet-add", gw.id, "172.26.0.0/20"])).toBe(`${gw.id} serves 172.26.0.0/20 (NAT on, priority 100)\n`);
    await ok(["gateways", "subnet-add", gw.id, "0.0.0.0/0", "--no-nat", "--priority", "50"]);
    expect(await ok(["gateways", "nat", gw.id, "172.26.0.0/20", "off"])).toBe(`${gw.id} 172.26.0.0/20: NAT off\n`);
    expect(await ok(["gateways", "drain", gw.id, "172.26.0.0/20"])).toBe(`${gw.id} 172.26.0.0/20: draining\n`);
    expect(await ok(["gateways", "priority", gw.id, "172.26.0.0/20", "20"])).toBe(`${gw.id} 172.26.0.0/20: priority 20\n`);
    const table = await ok(["gateways", "list"]);
    expect(table).toMatch(new RegExp(`${gw.id}\\s+gw-cli\\s+yes\\s+172\\.26\\.0\\.0/20\\s+off\\s+20\\s+draining\\s+manual`));
    const json = JSON.parse(await ok(["gateways", "list", "--json"]));
    expect(json.find((g: { id: string }) => g.id === gw.id).subnets.map((s: { prefix: string; nat: boolean }) => [s.prefix, s.nat])).toEqual([
      ["0.0.0.0/0", false],
      ["172.26.0.0/20", false],
    ]);
    expect(await ok(["gateways", "subnet-remove", gw.id, "0.0.0.0/0"])).toBe(`${gw.id} no longer serves 0.0.0.0/0\n`);
    expect(await ok(["gateways", "disable", gw.id])).toBe(`${gw.id} no longer acts as a gateway\n`);
    await ok(["gateways", "enable", gw.id]);
    await ok(["gateways", "drain", gw.id, "172.26.0.0/20", "--undo"]);
  });

  test("policies add/list/show/edit/remove (gateway and --direct), and policy explain", async () => {
    const gw = (JSON.parse(await ok(["gateways", "list", "--json"])) as Array<{ id: string }>)[0]!.id;
    const client = await enrolledAgent(t, ["staff"], "client-cli");
    const server = await enrolledAgent(t, ["servers"], "server-cli");
    await ok(["policies", "add", "office", "--tag", "staff", "--gateway", `${gw}=172.26.0.0/20`, "--filter", "172.26.0.250 tcp 443", "--window", "mon-sun 00:00-24:00", "--description", "office LAN"]);
    await ok(["policies", "add", "ssh", "--direct", "--from", "staff", "--to", "servers", "--acl", "tcp/22"]);
    const list = await ok(["policies", "list"]);
    expect(list).toMatch(/office\s+allow\s+staff\s+\S+=172\.26\.0\.0\/20\s+1 entry\s+time\s+enabled/);
    expect(await ok(["policies", "list", "--direct"])).toMatch(/ssh\s+allow\s+staff\s+servers\s+tcp\/22\s+enabled/);
    expect(JSON.parse(await ok(["policies", "list", "--json"]))[0]).toMatchObject({ name: "office", subnetFilter: [{ destination: "172.26.0.250", protocol: "tcp", ports: "443" }] });
    expect(JSON.parse(await ok(["policies", "list", "--direct", "--json"]))[0]).toMatchObject({ name: "ssh", acls: [{ protocol: "tcp", ports: "22" }] });
    expect(await ok(["policies", "show", "office"])).toContain("filter:      172.26.0.250 tcp 443");

    let explained = await ok(["policy", "explain", "--system", client.id, "--destination", "172.26.0.250", "--port", "443"]);
    expect(explained).toStartWith(`ALLOWED ${client.id} -> 172.26.0.250 tcp/443 through gateway ${gw} by policy office`);
    explained = await ok(["policy", "explain", "--system", client.id, "--destination", server.address, "--port", "22"]);
    expect(explained).toStartWith(`ALLOWED ${client.id} -> ${server.address} tcp/22 directly by policy ssh`);
    await ok(["policies", "edit", "office", "--clear-filter", "--disable"]);
    expect(process.exitCode ?? 0).toBe(0);
    explained = await ok(["policy", "explain", "--system", client.id, "--destination", "172.26.0.250", "--port", "443", "--json"]);
    expect(JSON.parse(explained).allowed).toBe(false);
    // Denied: exit status 1 (runCli returns process.exitCode); reset so the test runner's own status is untouched.
    expect(process.exitCode).toBe(1);
    process.exitCode = 0;
    await ok(["policies", "edit", "office", "--enable"]);
    expect(JSON.parse(await ok(["policies", "show", "office", "--json"]))).toMatchObject({ enabled: true, subnetFilter: null });
    expect(await ok(["policies", "remove", "ssh", "--direct"])).toBe("direct access policy ssh removed\n");
    expect(await ok(["policies", "remove", "office"])).toBe("gateway access policy office removed\n");
  });

  test("errors: wrong token, bad field, unknown system, unreachable server, no token; exit statuses through runCli", async () => {
    let r = await cli(["tags", "list"], { WAYGATE_ADMIN_TOKEN: "wga_wrong" });
    expect(r.error?.message).toStartWith("the control plane refused the admin token (the admin token is wrong)");
    expect(r.error?.code).toBe("E_CONTROL_AUTH");
    r = await cli(["tags", "add", "bad tag!"]);
    expect(r.error?.message).toContain("[field: name]");
    expect(r.error?.field).toBe("name");
    expect(r.error?.code).toBe("E_CONTROL_REJECTED");
    r = await cli(["gateways", "subnet-add", "ZZZZZ", "10.0.0.1/8"]);
    expect(r.error?.field).toBe("prefix");
    r = await cli(["systems", "show", "ZZZZZ"]);
    expect(r.error?.httpStatus).toBe(404);
    r = await cli(["tags", "list"], { WAYGATE_SERVER: "http://127.0.0.1:1" });
    expect(r.error?.message).toStartWith("cannot reach the control plane at http://127.0.0.1:1");
    expect(r.error?.code).toBe("E_CONTROL_UNREACHABLE");
    r = await cli(["tags", "list"], { WAYGATE_ADMIN_TOKEN: undefined });
    expect(r.error?.message).toStartWith("no admin token");
    expect(r.error?.code).toBe("E_USAGE");
    const file = join(tempDir(), "token");
    writeFileSync(file, `${t.adminToken}\n`);
    r = await cli(["tags", "list", "--json", "--token-file", file], { WAYGATE_ADMIN_TOKEN: undefined });
    expect(r.error).toBeNull();

    const saved = { ...process.env };
    const errors: string[] = [];
    const origError = console.error;
    console.error = (...a: unknown[]) => errors.push(a.join(" "));
    try {
      process.env.WAYGATE_SERVER = t.server.url;
      process.env.WAYGATE_ADMIN_TOKEN = "wga_wrong";
      expect(await runCli(["tags", "list"])).toBe(23);
      expect(errors.join("\n")).toContain("error[E_CONTROL_AUTH]: the control plane refused the admin token");
    } finally {
      console.error = origError;
      process.env.WAYGATE_SERVER = saved.WAYGATE_SERVER;
      process.env.WAYGATE_ADMIN_TOKEN = saved.WAYGATE_ADMIN_TOKEN;
      if (saved.WAYGATE_SERVER === undefined) delete process.env.WAYGATE_SERVER;
      if (saved.WAYGATE_ADMIN_TOKEN === undefined) delete process.env.WAYGATE_ADMIN_TOKEN;
    }
  });

  test("every admin command has examples in the command table", () => {
    for (const name of ["serve", "systems", "keys", "tags", "gateways", "policies", "policy"]) {
      expect(commands[name]!.examples.length).toBeGreaterThan(1);
    }
  });
});
