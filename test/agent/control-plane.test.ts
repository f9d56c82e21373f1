/**
 * @module test/agent/control-plane
 * Agents against the real control plane (core/control/server.ts on 127.0.0.1, SQLite in a temp
 * directory), data plane faked: `enrol` (idempotent, refused keys), the standalone gateway
 * (core/agent/standalone.ts: system + claim key in the store, enrolment over HTTP, discovered
 * subnets reported), NetMap streaming into two agents whose keys carry different tags, a gateway
 * access policy reaching only the permitted one, and its removal reaching both within 1 s.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomFillSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, type DiscoveredAddress } from "../../core/agent/agent.ts";
import { abortableSleep, ControlClient, makeAgentSigner, type NetMapUpdate } from "../../core/agent/client.ts";
import { enrol } from "../../core/agent/enrol.ts";
import { ControlPlaneError } from "../../core/agent/errors.ts";
import { startStandaloneAgent, type StandaloneAgent } from "../../core/agent/standalone.ts";
import { type Enrolment, type Identity, readIdentity } from "../../core/agent/state.ts";
import { type ControlServer, createControlServer } from "../../core/control/server.ts";
import type { PeerConfig } from "../../core/dataplane/device.ts";
import { silentLogger } from "../../core/log.ts";
import type { NetMap } from "../../core/policy/netmap.ts";
import { openSqliteStore } from "../../core/store/sqlite.ts";
import type { Store } from "../../core/store/store.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";

const crypto = nobleCrypto();
const random = (n: number) => {
  const b = new Uint8Array(n);
  randomFillSync(b);
  return b;
};
const now = () => Date.now();
const LAN = "192.168.50.0/24";

let root: string;
let store: Store;
let server: ControlServer;
let admin: (method: string, path: string, body?: unknown) => Promise<any>;
const running: { stop(): Promise<void> }[] = [];

interface TestAgent {
  agent: Agent;
  peersSet: PeerConfig[][];
  updates: { update: NetMapUpdate; at: number }[];
  latest(): NetMap | null;
  waitFor(pred: (m: NetMap) => boolean, timeoutMs?: number): Promise<{ map: NetMap; at: number }>;
}

function startAgent(identity: Identity & { enrolment: Enrolment }, stateDir: string, found: DiscoveredAddress[] = []): TestAgent {
  const peersSet: PeerConfig[][] = [];
  const updates: { update: NetMapUpdate; at: number }[] = [];
  const waiters = new Set<() => void>();
  const signer = makeAgentSigner({ privateKey: identity.privateKey, serverPublicKey: identity.enrolment.serverPublicKey }, { crypto, random, now });
  const agent = new Agent({
    identity,
    stateDir,
    client: new ControlClient({ serverUrl: identity.enrolment.serverUrl, fetch: (u, i) => fetch(u, i), logger: silentLogger, signer }),
    dataplane: {
      setPeers: (p) => void peersSet.push(p),
      stats: async () => null,
    },
    discoverSubnets: async () => found,
    logger: silentLogger,
    now,
    sleep: abortableSleep,
    random: Math.random,
    interfaceName: "wg-test",
    listenPort: 51820,
    version: "test",
    os: "linux-test",
    onApplied: (update) => {
      updates.push({ update, at: performance.now() });
      for (const w of waiters) w();
    },
  });
  agent.start();
  running.push(agent);
  const latest = () => updates.at(-1)?.update.netmap ?? null;
  return {
    agent,
    peersSet,
    updates,
    latest,
    waitFor(pred, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const last = updates.at(-1);
          if (last && pred(last.update.netmap)) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve({ map: last.update.netmap, at: last.at });
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`condition not met within ${timeoutMs} ms; last NetMap: ${JSON.stringify(latest()?.peers.map((p) => [p.id, p.gatewayFor]))}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
}

async function enrolIn(name: string, key: string): Promise<{ identity: Identity & { enrolment: Enrolment }; dir: string }> {
  const dir = join(root, name);
  const outcome = await enrol({ stateDir: dir, serverUrl: server.url, enrolmentKey: key, hostname: name, os: "linux", version: "test", fetch: (u, i) => fetch(u, i), crypto, random, now, logger: silentLogger });
  expect(outcome.status).toBe("enrolled");
  return { identity: readIdentity(dir) as Identity & { enrolment: Enrolment }, dir };
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "wg-agent-cp-"));
  store = await openSqliteStore(join(root, "server", "waygate.db"), { now, logger: silentLogger });
  server = await createControlServer({ store, now, logger: silentLogger, crypto, random, port: 0, hostname: "127.0.0.1" });
  admin = async (method, path, body) => {
    const res = await fetch(`${server.url}/v1/admin${path}`, {
      method,
      headers: { authorization: `Bearer ${server.adminToken}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text === "" ? null : JSON.parse(text);
  };
  await admin("POST", "/tags", { name: "alpha" });
  await admin("POST", "/tags", { name: "beta" });
});

afterAll(async () => {
  for (const r of running.reverse()) await r.stop().catch(() => {});
  await server?.stop();
  store?.close();
  rmSync(root, { recursive: true, force: true });
});

describe("agents against the control plane", () => {
  let gateway: StandaloneAgent;
  let gwAgent: TestAgent | null = null;
  let a: TestAgent;
  let b: TestAgent;
  const printed: string[] = [];

  test("standalone: creates its gateway system, enrols over HTTP, prints how to enrol the next device", async () => {
    const gwDir = join(root, "gw");
    gateway = await startStandaloneAgent({
      serverUrl: server.url,
      store,
      stateDir: gwDir,
      logger: silentLogger,
      now,
      network: server.network,
      adapters: {
        discoverSubnets: async () => [{ interface: "eth1", address: "192.168.50.1", subnet: LAN }],
        startAgent: async (identity, dir) => {
          gwAgent = startAgent(identity, dir, [{ interface: "eth1", address: "192.168.50.1", subnet: LAN }]);
          return gwAgent.agent;
        },
        fetch: (u, i) => fetch(u, i),
        crypto,
        random,
        hostname: "router",
        os: "linux",
        version: "test",
        out: (t) => void printed.push(t),
      },
    });
    running.push(gateway);
    expect(gateway.subnets).toEqual([LAN]);
    const sys = await store.getSystem(gateway.systemId);
    expect(sys).toMatchObject({ allowedAsGateway: true, approved: true, enabled: true, virtualAddress: gateway.virtualAddress });
    expect((await store.listGatewaySubnets(gateway.systemId)).map((s) => s.prefix)).toEqual([LAN]);
    expect(printed.join("")).toContain(`waygate enrol --server ${server.url} --key <key>`);
    expect(printed.join("")).toContain(`gateway for ${LAN}`);
    const { map } = await gwAgent!.waitFor((m) => m.self.gateway?.subnets.some((s) => s.prefix === LAN) === true);
    expect(map.self.id).toBe(gateway.systemId);
    // The one-time claim key is spent.
    const keys = await store.listEnrolmentKeys();
    expect(keys.every((k) => k.maxUses === null || k.uses >= k.maxUses || k.systemIdentity !== gateway.systemId)).toBe(true);
  });

  test("a restarted standalone agent keeps its system (no second one)", async () => {
    const before = (await store.listSystems()).length;
    const again = await startStandaloneAgent({
      serverUrl: server.url,
      store,
      stateDir: join(root, "gw"),
      logger: silentLogger,
      now,
      network: server.network,
      adapters: {
        discoverSubnets: async () => [{ interface: "eth1", address: "192.168.50.1", subnet: LAN }],
        startAgent: async () => ({ stop: async () => {} }),
        fetch: (u, i) => fetch(u, i),
        crypto,
        random,
        hostname: "router",
        os: "linux",
        version: "test",
        out: () => {},
      },
    });
    expect(again.systemId).toBe(gateway.systemId);
    expect((await store.listSystems()).length).toBe(before);
  });

  test("enrol: tagged keys; idempotent; a wrong key is refused with the server's reason", async () => {
    const keyA = (await admin("POST", "/keys", { tags: ["alpha"], autoApprove: true })).key as string;
    const keyB = (await admin("POST", "/keys", { tags: ["beta"], autoApprove: true })).key as string;
    const ea = await enrolIn("client-a", keyA);
    const eb = await enrolIn("client-b", keyB);
    expect(ea.identity.enrolment.tags).toEqual(["alpha"]);
    expect(eb.identity.enrolment.tags).toEqual(["beta"]);
    const again = await enrol({ stateDir: ea.dir, serverUrl: `${server.url}/`, enrolmentKey: keyA, hostname: "client-a", os: "linux", version: "test", fetch: (u, i) => fetch(u, i), crypto, random, now, logger: silentLogger });
    expect(again.status).toBe("already-enrolled");
    const refused = await enrol({ stateDir: join(root, "client-c"), serverUrl: server.url, enrolmentKey: "wgk_nope_nope", hostname: "c", os: "linux", version: "test", fetch: (u, i) => fetch(u, i), crypto, random, now, logger: silentLogger }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ControlPlaneError);
    expect((refused as ControlPlaneError).serverCode).toBe("E_ENROLMENT_KEY");
    a = startAgent(ea.identity, ea.dir);
    b = startAgent(eb.identity, eb.dir);
    await a.waitFor(() => true);
    await b.waitFor(() => true);
  });

  test("a gateway policy for alpha reaches A (and the gateway) only; deleting it reaches both within 1 s", async () => {
    const gw = gwAgent!;
    await admin("POST", "/policies", { name: "alpha-lan", senderTags: ["alpha"], gateways: [{ gateway: gateway.systemId, subnets: [LAN] }] });
    const { map: mapA } = await a.waitFor((m) => m.peers.some((p) => p.id === gateway.systemId && p.gatewayFor.includes(LAN)));
    expect(mapA.routes.map((r) => [r.prefix, r.via])).toEqual([[LAN, gateway.systemId]]);
    const gwPeer = a.peersSet.at(-1)!.find((p) => p.allowedIps.includes(LAN));
    expect(gwPeer?.endpoint).toEqual({ address: "127.0.0.1", port: 51820 });
    const aId = mapA.self.id;
    await gw.waitFor((m) => m.gatewayRules.some((r) => r.sender === aId && r.subnet === LAN));
    await Bun.sleep(200); // whatever this change brought B has arrived by now
    expect(b.latest()!.peers.some((p) => p.gatewayFor.includes(LAN))).toBe(false);
    expect(b.latest()!.routes).toEqual([]);

    const countB = b.updates.length;
    const t0 = performance.now();
    await admin("DELETE", "/policies/alpha-lan");
    const [ra, rg] = await Promise.all([
      a.waitFor((m) => !m.peers.some((p) => p.gatewayFor.includes(LAN)), 2000),
      gw.waitFor((m) => !m.gatewayRules.some((r) => r.sender === aId), 2000),
    ]);
    expect(ra.at - t0).toBeLessThan(1000);
    expect(rg.at - t0).toBeLessThan(1000);
    expect(a.latest()!.routes).toEqual([]);
    // B's NetMap never held the grant, so revoking it does not change (or push) B's.
    expect(b.updates.length).toBe(countB);
  });
});
