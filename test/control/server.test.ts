/**
 * @module test/control/server.test
 * The control plane over real HTTP on 127.0.0.1: every endpoint refuses missing, forged,
 * expired, replayed and not-enrolled agent credentials and a wrong admin token with 401 before
 * its handler runs (nothing is written, no use spent, no audit entry); enrolment with single-use,
 * multi-use, expired, unknown and claim keys, twenty parallel enrolments on one single-use key;
 * an agent only ever sees its own NetMap; reports (endpoint from the source address, discovered
 * subnets filtered to unicast IPv4); the admin API's writes with audit entries and its 400s
 * naming the field.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ADMIN_PATHS } from "../../core/control/admin-schemas.ts";
import { filterDiscoveredSubnets } from "../../core/control/agent-handlers.ts";
import { PATHS } from "../../core/control/protocol.ts";
import { cleanup, createKey, enrolledAgent, startTestServer, testAgent, type TestServer } from "./helpers.ts";

/** Response JSON, untyped (tests assert on its shape). */
const j = (r: Response): Promise<any> => r.json();

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
  for (const name of ["staff", "servers", "gw"]) await t.adminJson("POST", "/tags", { name });
});
afterAll(async () => {
  await t.stop();
  cleanup();
});

const fill = (path: string) => path.replace(":id", "ZZZZZ").replace(":name", "nope");

/** Every admin route with a body that would be valid enough to reach a handler. */
const ADMIN_REQUESTS: Array<[string, string, unknown?]> = [
  ["GET", ADMIN_PATHS.systems],
  ["GET", ADMIN_PATHS.system],
  ["PATCH", ADMIN_PATHS.system, { approved: true }],
  ["DELETE", ADMIN_PATHS.system],
  ["GET", ADMIN_PATHS.keys],
  ["POST", ADMIN_PATHS.keys, { description: "refused" }],
  ["DELETE", ADMIN_PATHS.key],
  ["GET", ADMIN_PATHS.tags],
  ["POST", ADMIN_PATHS.tags, { name: "refused" }],
  ["DELETE", ADMIN_PATHS.tag],
  ["GET", ADMIN_PATHS.gateways],
  ["POST", ADMIN_PATHS.gatewayEnable],
  ["POST", ADMIN_PATHS.gatewayDisable],
  ["POST", ADMIN_PATHS.gatewaySubnets, { prefix: "10.0.0.0/24" }],
  ["PATCH", ADMIN_PATHS.gatewaySubnets, { prefix: "10.0.0.0/24", nat: false }],
  ["DELETE", ADMIN_PATHS.gatewaySubnets + "?prefix=10.0.0.0%2F24"],
  ["GET", ADMIN_PATHS.policies],
  ["GET", ADMIN_PATHS.policy],
  ["POST", ADMIN_PATHS.policies, { name: "refused", senderTags: ["staff"], gateways: [{ gateway: "ZZZZZ" }] }],
  ["PATCH", ADMIN_PATHS.policy, { enabled: false }],
  ["DELETE", ADMIN_PATHS.policy],
  ["GET", ADMIN_PATHS.directPolicies],
  ["GET", ADMIN_PATHS.directPolicy],
  ["POST", ADMIN_PATHS.directPolicies, { name: "refused", fromTags: ["staff"], toTags: ["servers"] }],
  ["PATCH", ADMIN_PATHS.directPolicy, { enabled: false }],
  ["DELETE", ADMIN_PATHS.directPolicy],
  ["GET", ADMIN_PATHS.explain + "?system=ZZZZZ&destination=10.0.0.1"],
  ["GET", ADMIN_PATHS.audit],
  ["GET", "/no-such-endpoint"],
];

describe("admin auth", () => {
  test("every admin endpoint: no token, a wrong token, a Basic header or an agent signature -> 401, nothing written", async () => {
    const before = await t.store.dump();
    const agent = await enrolledAgent(t, [], "agent-not-admin");
    const afterEnrol = await t.store.dump();
    for (const [method, path, body] of ADMIN_REQUESTS) {
      const url = `${t.server.url}/v1/admin${fill(path)}`;
      const text = body === undefined ? undefined : JSON.stringify(body);
      const variants: Record<string, string>[] = [
        {},
        { authorization: `Bearer ${t.adminToken}x` },
        { authorization: `Bearer ${t.adminToken.slice(0, -1)}` },
        { authorization: `Basic ${t.adminToken}` },
        agent.headers(method, `/v1/admin${fill(path)}`, text ?? ""),
      ];
      for (const headers of variants) {
        const res = await fetch(url, { method, headers: { ...headers, "content-type": "application/json" }, body: text });
        expect(`${method} ${path} ${res.status}`).toBe(`${method} ${path} 401`);
        expect((await j(res)).error.code).toBe("E_UNAUTHORIZED");
      }
    }
    expect(await t.store.dump()).toBe(afterEnrol);
    expect(before).not.toBe(afterEnrol);
  });
});

describe("agent auth", () => {
  const AGENT_REQUESTS: Array<[string, string, unknown?]> = [
    ["POST", PATHS.enrol, { enrolmentKey: "wgk_0000000000_x", hostname: "h", os: "linux", agentVersion: "t" }],
    ["GET", PATHS.netmap],
    ["GET", PATHS.netmapStream],
    ["POST", PATHS.report, { listenPort: 51820, endpoints: [], discoveredSubnets: ["192.168.7.0/24"], agentVersion: "t", os: "linux" }],
    ["GET", "/v1/agent/unknown"],
  ];

  test("missing, forged, expired, replayed, wrong-path and not-enrolled credentials -> 401 before any handler", async () => {
    const a = await enrolledAgent(t, ["gw"], "victim");
    await t.adminJson("POST", `/gateways/${a.id}/enable`);
    const stranger = testAgent(t);
    const key = await createKey(t, {});
    const before = await t.store.dump();
    for (const [method, path, body] of AGENT_REQUESTS) {
      const text = body === undefined ? "" : JSON.stringify(body);
      const send = (headers: Record<string, string>) =>
        fetch(`${t.server.url}${path}`, { method, headers: { ...headers, "content-type": "application/json" }, body: body === undefined ? undefined : text });
      const cases: Array<[string, Record<string, string>]> = [
        ["missing", {}],
        ...(["x-waygate-key", "x-waygate-time", "x-waygate-nonce", "x-waygate-auth"].map((h) => [`no ${h}`, a.headers(method, path, text, { drop: h })]) as Array<[string, Record<string, string>]>),
        ["forged (stranger signs, claims the victim's key)", stranger.headers(method, path, text, { claimKey: a.publicKey })],
        ["forged tag", { ...a.headers(method, path, text), "x-waygate-auth": Buffer.alloc(32, 7).toString("base64") }],
        ["expired", a.headers(method, path, text, { timeOffsetMs: -120_000 })],
        ["future", a.headers(method, path, text, { timeOffsetMs: 120_000 })],
        ["signed for another path", a.headers(method, path, text, { signedPath: "/v1/agent/other" })],
        ["signed for another body", a.headers(method, path, text, { signedBody: text + " " })],
      ];
      if (path !== PATHS.enrol) cases.push(["not enrolled", stranger.headers(method, path, text)]);
      for (const [name, headers] of cases) {
        const res = await send(headers);
        expect(`${method} ${path} ${name}: ${res.status}`).toBe(`${method} ${path} ${name}: 401`);
        await res.body?.cancel();
      }
      // Replay: the same headers twice; the first is fine (or 4xx for the unknown path), the second 401.
      const headers = a.headers(method, path, text);
      const first = await send(headers);
      await first.body?.cancel();
      expect(first.status).not.toBe(401);
      const again = await send(headers);
      expect(`${path} replay ${again.status}`).toBe(`${path} replay 401`);
    }
    // Nothing the refused requests carried was written: no enrolment, no report of 192.168.7.0/24.
    const after = await t.store.dump();
    expect(after).not.toContain("192.168.7.0/24".replace("7", "9"));
    const subnets = await t.store.listGatewaySubnets(a.id);
    expect(subnets.map((s) => s.prefix)).toEqual(["192.168.7.0/24"]); // from the one accepted report
    expect((await t.store.listAudit()).filter((e) => e.action === "system.enrol" && e.detail.hostname === "h")).toEqual([]);
    expect(before.length).toBeGreaterThan(0);
    expect((await t.store.listEnrolmentKeys()).find((k) => k.uses === 0 && k.description === "")?.uses).toBe(0);
    void key;
  });

  test("an agent only ever gets its own NetMap", async () => {
    const a = await enrolledAgent(t, ["staff"], "own-a");
    const b = await enrolledAgent(t, ["servers"], "own-b");
    const na = await j(await a.request("GET", PATHS.netmap));
    const nb = await j(await b.request("GET", PATHS.netmap));
    expect(na.netmap.self.id).toBe(a.id);
    expect(nb.netmap.self.id).toBe(b.id);
    // A query string cannot select another system: the key decides.
    const res = await a.request("GET", `${PATHS.netmap}?system=${b.id}`);
    expect((await j(res)).netmap.self.id).toBe(a.id);
  });
});

describe("enrolment", () => {
  test("single-use: first 201, second agent 403 naming enrolmentKey; a retry by the first agent is 200 and spends nothing", async () => {
    const key = await createKey(t, { tags: ["staff"] });
    const a = testAgent(t);
    const first = await a.enrol(key, "laptop-1");
    expect(first.status).toBe(201);
    const body = await j(first);
    expect(body).toMatchObject({ approved: false, tags: ["staff"], network: "100.64.0.0/10" });
    expect(body.systemId).toMatch(/^[A-Z0-9]{5}$/);
    const second = await testAgent(t).enrol(key, "laptop-2");
    expect(second.status).toBe(403);
    expect((await j(second)).error).toMatchObject({ code: "E_ENROLMENT_KEY", field: "enrolmentKey", message: "the enrolment key has no uses left" });
    const retry = await a.enrol(key, "laptop-1");
    expect(retry.status).toBe(200);
    expect((await j(retry)).systemId).toBe(body.systemId);
    // Unapproved: an inactive NetMap until an admin approves.
    const nm = await j(await a.request("GET", PATHS.netmap));
    expect(nm.netmap.self.active).toBe(false);
  });

  test("multi-use keys count uses; expired and unknown keys are refused", async () => {
    const key = await createKey(t, { maxUses: 2, autoApprove: true });
    expect((await testAgent(t).enrol(key)).status).toBe(201);
    expect((await testAgent(t).enrol(key)).status).toBe(201);
    expect((await testAgent(t).enrol(key)).status).toBe(403);
    const expiring = await createKey(t, { expiresInSeconds: 60 });
    t.clock.offset = 61_000;
    try {
      const res = await testAgent(t).enrol(expiring);
      expect((await j(res)).error.message).toBe("the enrolment key has expired");
    } finally {
      t.clock.offset = 0;
    }
    const unknown = await testAgent(t).enrol("wgk_0000000000_notakey");
    expect((await j(unknown)).error.message).toBe("the enrolment key is not known");
  });

  test("a claim key binds the agent to an existing, not yet enrolled system", async () => {
    await t.store.transaction(async (tx) => {
      await tx.putSystem({ identity: "M1GR8", name: "migrated", description: "", publicKey: null, virtualAddress: "100.64.200.1", approved: true, enabled: true, allowedAsGateway: true, source: "migrated" });
    });
    const key = await createKey(t, { system: "M1GR8" });
    const res = await testAgent(t).enrol(key, "whatever");
    expect(res.status).toBe(201);
    expect(await j(res)).toMatchObject({ systemId: "M1GR8", virtualAddress: "100.64.200.1", approved: true });
    const bad = await t.admin("POST", "/keys", { system: "M1GR8" });
    expect(bad.status).toBe(400);
    expect((await j(bad)).error.field).toBe("system");
  });

  test("twenty agents racing one single-use key over HTTP: exactly one enrols", async () => {
    const key = await createKey(t, {});
    const agents = Array.from({ length: 20 }, () => testAgent(t));
    const statuses = await Promise.all(agents.map((a, i) => a.enrol(key, `racer-${i}`).then((r) => r.status)));
    expect(statuses.filter((s) => s === 201).length).toBe(1);
    expect(statuses.filter((s) => s === 403).length).toBe(19);
    const systems = await t.adminJson<Array<{ name: string }>>("GET", "/systems");
    expect(systems.filter((s) => s.name.startsWith("racer-")).length).toBe(1);
  });
});

describe("reports", () => {
  test("endpoint from the source address and listen port; discovered subnets only for gateways, filtered", async () => {
    const a = await enrolledAgent(t, [], "reporter");
    const report = { listenPort: 51999, endpoints: ["192.168.1.5:51999"], discoveredSubnets: ["192.168.50.0/24", "127.0.0.0/8"], agentVersion: "9.9", os: "linux-test" };
    expect((await a.request("POST", PATHS.report, report)).status).toBe(204);
    let s = await t.adminJson("GET", `/systems/${a.id}`);
    expect([s.endpoint, s.publicIp, s.agentVersion, s.os, s.subnets]).toEqual(["127.0.0.1:51999", "127.0.0.1", "9.9", "linux-test", []]);
    await t.adminJson("POST", `/gateways/${a.id}/enable`);
    const subnets = ["192.168.50.5/24", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32", "100.64.0.0/10", "fe80::/64", "10.20.0.0/16", "junk"];
    expect((await a.request("POST", PATHS.report, { ...report, discoveredSubnets: subnets })).status).toBe(204);
    s = await t.adminJson("GET", `/systems/${a.id}`);
    expect(s.subnets.map((x: { prefix: string; source: string; nat: boolean }) => [x.prefix, x.source, x.nat])).toEqual([
      ["10.20.0.0/16", "discovered", true],
      ["192.168.50.0/24", "discovered", true],
    ]);
    const bad = await a.request("POST", PATHS.report, { ...report, listenPort: 70000 });
    expect(bad.status).toBe(400);
    expect((await j(bad)).error.field).toBe("listenPort");
  });

  test("filterDiscoveredSubnets keeps unicast IPv4 networks only", () => {
    expect(filterDiscoveredSubnets(["10.0.0.9/8", "0.0.0.0/0", "0.0.0.0/8", "172.16.5.1/32", "239.1.1.0/24", "192.168.0.0/16"], "100.64.0.0/10")).toEqual({
      keep: ["10.0.0.0/8", "192.168.0.0/16"],
      dropped: ["0.0.0.0/0", "0.0.0.0/8", "172.16.5.1/32", "239.1.1.0/24"],
    });
  });
});

describe("admin API", () => {
  test("bad bodies are 400 naming the field", async () => {
    const cases: Array<[string, string, unknown, string]> = [
      ["POST", "/tags", { name: "bad tag!" }, "name"],
      ["POST", "/tags", { name: "ok", colour: "red" }, "colour"],
      ["POST", "/keys", { maxUses: 0 }, "maxUses"],
      ["POST", "/keys", { tags: ["nope"] }, "tags.0"],
      ["POST", "/policies", { name: "p1", senderTags: [], gateways: [] }, "senderTags"],
      ["POST", "/policies", { name: "p1", senderTags: ["staff"], gateways: [{ gateway: "ZZZZZ" }] }, "gateways.0.gateway"],
      ["POST", "/policies", { name: "p1", senderTags: ["staff"], gateways: [{ gateway: "ABCDE", subnets: ["10.0.0.1/24"] }] }, "gateways.0.subnets.0"],
      ["POST", "/policies", { name: "p1", senderTags: ["staff"], gateways: [{ gateway: "ABCDE" }], trust: { timeWindows: [{ days: ["mon"], start: "25:00", end: "08:00", utcOffsetMinutes: 0 }] } }, "trust.timeWindows.0.start"],
      ["POST", "/direct-policies", { name: "d1", fromTags: ["staff"], toTags: ["servers"], acls: [{ protocol: "icmp", ports: "22" }] }, "acls.0"],
      ["POST", "/direct-policies", { name: "bad name", fromTags: ["staff"], toTags: ["servers"] }, "name"],
      ["PATCH", "/systems/ZZZZZ", { approved: "yes" }, "approved"],
      ["POST", "/gateways/ZZZZZ/subnets", { prefix: "300.0.0.0/8" }, "prefix"],
      ["GET", "/explain?system=ABCDE&destination=1.2.3.4&port=99999", undefined, "port"],
    ];
    for (const [method, path, body, field] of cases) {
      const res = await t.admin(method, path, body);
      const json = await j(res);
      expect(`${method} ${path} ${res.status} ${json.error.field}`).toBe(`${method} ${path} 400 ${field}`);
      expect(json.error.code).toBe("E_BAD_REQUEST");
    }
    const notJson = await t.admin("POST", "/tags", "{nope");
    expect([notJson.status, (await j(notJson)).error.field]).toEqual([400, "body"]);
  });

  test("writes are audited in the same transaction; unknown names are 404; referenced tags 409", async () => {
    const gw = await enrolledAgent(t, ["gw"], "gw-admin");
    const auditBefore = (await t.store.listAudit()).length;
    await t.adminJson("POST", `/gateways/${gw.id}/enable`);
    await t.adminJson("POST", `/gateways/${gw.id}/subnets`, { prefix: "172.26.0.0/20" });
    expect((await t.admin("POST", `/gateways/${gw.id}/subnets`, { prefix: "172.26.0.0/20" })).status).toBe(409);
    await t.adminJson("PATCH", `/gateways/${gw.id}/subnets`, { prefix: "172.26.0.0/20", nat: false, priority: 10, draining: true });
    await t.adminJson("POST", "/policies", { name: "office", senderTags: ["staff"], gateways: [{ gateway: gw.id, subnets: ["172.26.0.0/20"] }] });
    await t.adminJson("PATCH", "/policies/office", { subnetFilter: [{ destination: "172.26.0.250", protocol: "tcp", ports: "443" }] });
    await t.adminJson("POST", "/direct-policies", { name: "ssh", fromTags: ["staff"], toTags: ["servers"], acls: [{ protocol: "tcp", ports: "22" }] });
    expect((await t.admin("POST", "/direct-policies", { name: "office", fromTags: ["staff"], toTags: ["servers"] })).status).toBe(409);
    expect((await t.admin("DELETE", "/tags/staff")).status).toBe(409);
    expect((await t.admin("GET", "/policies/missing")).status).toBe(404);
    expect((await t.admin("DELETE", "/systems/ZZZZZ")).status).toBe(404);
    const gws = await t.adminJson("GET", "/gateways");
    expect(gws.find((g: { id: string }) => g.id === gw.id).subnets[0]).toMatchObject({ prefix: "172.26.0.0/20", nat: false, priority: 10, draining: true });
    const audit = (await t.store.listAudit()).slice(auditBefore).map((e) => `${e.actor} ${e.action} ${e.subject}`);
    expect(audit).toEqual([
      `admin gateway.enable ${gw.id}`,
      `admin gateway_subnet.create ${gw.id} 172.26.0.0/20`,
      `admin gateway_subnet.update ${gw.id} 172.26.0.0/20`,
      "admin gateway_access_policy.create office",
      "admin gateway_access_policy.update office",
      "admin direct_access_policy.create ssh",
    ]);
    const viaApi = await t.adminJson("GET", "/audit?limit=3");
    expect(viaApi.length).toBe(3);
    await t.adminJson("DELETE", "/policies/office");
    await t.adminJson("DELETE", `/gateways/${gw.id}/subnets?prefix=172.26.0.0%2F20`);
    await t.adminJson("DELETE", "/direct-policies/ssh");
  });

  test("keys: the plain key is returned once and never listed or stored", async () => {
    const created = await t.adminJson("POST", "/keys", { description: "once", maxUses: null, tags: ["staff"] });
    expect(created.key).toMatch(/^wgk_[0-9a-f]{10}_/);
    const listed = await t.adminJson("GET", "/keys");
    expect(JSON.stringify(listed)).not.toContain(created.key);
    expect(await t.store.dump()).not.toContain(created.key.split("_")[2]);
    expect(listed.find((k: { id: string }) => k.id === created.id)).toMatchObject({ maxUses: null, usesRemaining: null, tags: ["staff"] });
    await t.adminJson("DELETE", `/keys/${created.id}`);
    expect((await testAgent(t).enrol(created.key)).status).toBe(403);
  });

  test("info needs no auth and says nothing secret", async () => {
    const info = await j(await fetch(`${t.server.url}${PATHS.info}`));
    expect(info).toEqual({ protocol: 1, serverPublicKey: t.server.serverPublicKey, network: "100.64.0.0/10", version: "test" });
  });
});
