/**
 * @module test/store/control-plane.test
 * The 0002_control_plane part of the store: enrolment keys (hash only, guarded use counting,
 * expiry, a use spent inside a transaction that rolls back is not spent, twenty racing uses of a
 * single-use key), direct policies, gateway policy actions/filters/trust, discovered subnet
 * sync, agent info, settings redacted from dumps, virtual address and id allotment, and
 * loadPolicyState.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { allotSystemId, allotVirtualAddress, loadPolicyState } from "../../core/store/policy-state.ts";
import { openSqliteStore } from "../../core/store/sqlite.ts";
import type { Store, SystemInput } from "../../core/store/store.ts";
import { removeTemps, tempDir } from "../profile/helpers/fixtures.ts";

afterAll(removeTemps);

const key = (n: number) => Buffer.alloc(32, n).toString("base64");
const system = (identity: string, n: number, over: Partial<SystemInput> = {}): SystemInput => ({
  identity,
  name: identity.toLowerCase(),
  description: "",
  publicKey: key(n),
  virtualAddress: `100.64.0.${n}`,
  approved: true,
  enabled: true,
  allowedAsGateway: false,
  source: "manual",
  ...over,
});

async function fresh(clock = { t: 1000 }): Promise<Store> {
  return openSqliteStore(join(tempDir("waygate-cp-"), "waygate.db"), { now: () => clock.t });
}

const keyInput = (keyId: string, over: Record<string, unknown> = {}) => ({
  keyId,
  secretHash: keyId.padEnd(64, "0"),
  description: "",
  maxUses: 1 as number | null,
  expiresAt: null as number | null,
  autoApprove: false,
  tags: [] as string[],
  systemIdentity: null as string | null,
  ...over,
});

describe("enrolment keys", () => {
  test("single-use: the first use succeeds, the second is used-up; unknown and expired are told apart", async () => {
    const store = await fresh();
    await store.transaction(async (tx) => {
      await tx.putTag({ name: "staff", description: "", source: "manual" });
      await tx.createEnrolmentKey(keyInput("k1", { tags: ["staff"] }));
      await tx.createEnrolmentKey(keyInput("k2", { expiresAt: 2000, maxUses: null }));
    });
    const hash = "k1".padEnd(64, "0");
    const first = await store.transaction((tx) => tx.consumeEnrolmentKey(hash, 1500));
    expect(first.ok && first.key.tags).toEqual(["staff"]);
    expect(await store.transaction((tx) => tx.consumeEnrolmentKey(hash, 1500))).toEqual({ ok: false, reason: "used-up" });
    expect(await store.transaction((tx) => tx.consumeEnrolmentKey("f".repeat(64), 1500))).toEqual({ ok: false, reason: "unknown" });
    const k2 = "k2".padEnd(64, "0");
    expect((await store.transaction((tx) => tx.consumeEnrolmentKey(k2, 1999))).ok).toBe(true);
    expect(await store.transaction((tx) => tx.consumeEnrolmentKey(k2, 2000))).toEqual({ ok: false, reason: "expired" });
    expect((await store.getEnrolmentKey("k2"))!.uses).toBe(1);
    store.close();
  });

  test("a use spent in a transaction that throws is not spent", async () => {
    const store = await fresh();
    await store.transaction((tx) => tx.createEnrolmentKey(keyInput("k1")));
    const hash = "k1".padEnd(64, "0");
    await expect(
      store.transaction(async (tx) => {
        expect((await tx.consumeEnrolmentKey(hash, 1)).ok).toBe(true);
        await tx.putSystem(system("AAAAA", 1));
        throw new Error("later step failed");
      }),
    ).rejects.toThrow("later step failed");
    expect((await store.getEnrolmentKey("k1"))!.uses).toBe(0);
    expect(await store.getSystem("AAAAA")).toBeNull();
    expect((await store.transaction((tx) => tx.consumeEnrolmentKey(hash, 1))).ok).toBe(true);
    store.close();
  });

  test("twenty concurrent transactions racing one single-use key: exactly one wins", async () => {
    const store = await fresh();
    await store.transaction((tx) => tx.createEnrolmentKey(keyInput("race")));
    const hash = "race".padEnd(64, "0");
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        store.transaction(async (tx) => {
          const r = await tx.consumeEnrolmentKey(hash, 1);
          if (!r.ok) return false;
          await Promise.resolve(); // yield mid-transaction: others must still wait
          await tx.putSystem(system(`R${String(i).padStart(4, "0")}`, i + 1));
          return true;
        }),
      ),
    );
    expect(results.filter(Boolean).length).toBe(1);
    expect((await store.listSystems()).length).toBe(1);
    expect((await store.getEnrolmentKey("race"))!.uses).toBe(1);
    store.close();
  });

  test("the schema refuses a claim key that is not single-use, and uses beyond the limit", async () => {
    const store = await fresh();
    await expect(store.transaction((tx) => tx.createEnrolmentKey(keyInput("c", { maxUses: 2, systemIdentity: "AAAAA" })))).rejects.toThrow("CHECK constraint failed");
    store.close();
  });
});

describe("policies and gateways", () => {
  test("gateway policies keep action, subnet filter and trust, and compare unchanged when equal", async () => {
    const store = await fresh();
    const input = {
      name: "p",
      description: "",
      enabled: true,
      source: "manual" as const,
      senderTags: ["staff"],
      gateways: [{ gateway: "GGGGG", subnets: ["10.0.0.0/24"] }],
      action: "allow" as const,
      subnetFilter: [{ destination: "10.0.0.5", protocol: "tcp" as const, ports: "22" }],
      trust: { publicIpWithin: ["198.51.100.0/24"], timeWindows: [{ days: ["mon" as const, "tue" as const], start: "08:00", end: "18:00", utcOffsetMinutes: 60 }] },
    };
    await store.transaction(async (tx) => {
      await tx.putTag({ name: "staff", description: "", source: "manual" });
      await tx.putSystem(system("GGGGG", 1, { allowedAsGateway: true }));
      await tx.putGatewaySubnet({ gateway: "GGGGG", prefix: "10.0.0.0/24", nat: true, natAddress: null, source: "manual", priority: 50 });
      expect(await tx.putGatewayAccessPolicy(input)).toBe("created");
    });
    expect(await store.transaction((tx) => tx.putGatewayAccessPolicy(input))).toBe("unchanged");
    const p = (await store.getGatewayAccessPolicy("p"))!;
    expect([p.action, p.subnetFilter, p.trust]).toEqual([input.action, input.subnetFilter, input.trust]);
    expect(await store.transaction((tx) => tx.putGatewayAccessPolicy({ ...input, subnetFilter: null, trust: null }))).toBe("updated");
    expect((await store.getGatewayAccessPolicy("p"))!.subnetFilter).toBeNull();
    expect((await store.listGatewaySubnets("GGGGG"))[0]!.priority).toBe(50);
    store.close();
  });

  test("direct policies round-trip; a tag a policy names cannot be removed", async () => {
    const store = await fresh();
    await store.transaction(async (tx) => {
      for (const name of ["a", "b"]) await tx.putTag({ name, description: "", source: "manual" });
      await tx.putDirectAccessPolicy({ name: "d", description: "", enabled: true, action: "allow", source: "manual", fromTags: ["a"], toTags: ["b"], acls: [{ protocol: "tcp", ports: "22" }, { protocol: "icmp" }] });
    });
    const d = (await store.getDirectAccessPolicy("d"))!;
    expect([d.fromTags, d.toTags, d.acls]).toEqual([["a"], ["b"], [{ protocol: "tcp", ports: "22" }, { protocol: "icmp" }]]);
    await expect(store.transaction((tx) => tx.removeTag("a"))).rejects.toThrow("FOREIGN KEY");
    store.close();
  });

  test("discovered subnets: new ones added with NAT on, vanished discovered ones removed, manual ones kept, unhealthy kept and marked", async () => {
    const store = await fresh();
    await store.transaction(async (tx) => {
      await tx.putSystem(system("GGGGG", 1, { allowedAsGateway: true }));
      await tx.putGatewaySubnet({ gateway: "GGGGG", prefix: "0.0.0.0/0", nat: true, natAddress: null, source: "manual" });
      expect(await tx.syncDiscoveredSubnets("GGGGG", ["192.168.1.0/24", "10.1.0.0/16"], [])).toBe("updated");
    });
    expect(await store.transaction((tx) => tx.syncDiscoveredSubnets("GGGGG", ["192.168.1.0/24", "10.1.0.0/16"], []))).toBe("unchanged");
    await store.transaction((tx) => tx.syncDiscoveredSubnets("GGGGG", ["192.168.1.0/24"], ["192.168.1.0/24"]));
    const rows = await store.listGatewaySubnets("GGGGG");
    expect(rows.map((r) => [r.prefix, r.source, r.discovered, r.healthy])).toEqual([
      ["0.0.0.0/0", "manual", false, true],
      ["192.168.1.0/24", "discovered", true, false],
    ]);
    const state = await loadPolicyState(store);
    // Health is not policy: the unhealthy subnet stays served, marked, so its routes are kept (withdrawn).
    expect(state.systems[0]!.gatewaySubnets.map((s) => [s.prefix, s.healthy])).toEqual([
      ["0.0.0.0/0", true],
      ["192.168.1.0/24", false],
    ]);
    store.close();
  });

  test("agent info and settings: recorded, and the server key never appears in a dump", async () => {
    const store = await fresh();
    await store.transaction(async (tx) => {
      await tx.putSystem(system("AAAAA", 1));
      await tx.recordAgentInfo("AAAAA", { endpoint: "203.0.113.5:51820", publicIp: "203.0.113.5", listenPort: 51820, lastSeen: 5, agentVersion: "1.0", os: "linux" });
      await tx.putSetting("server_private_key", "SECRET-VALUE");
    });
    const s = (await store.getSystemByPublicKey(key(1)))!;
    expect([s.identity, s.endpoint, s.publicIp, s.listenPort, s.lastSeen, s.os]).toEqual(["AAAAA", "203.0.113.5:51820", "203.0.113.5", 51820, 5, "linux"]);
    expect(await store.getSetting("server_private_key")).toBe("SECRET-VALUE");
    expect(await store.dump()).not.toContain("SECRET-VALUE");
    store.close();
  });
});

describe("allotment", () => {
  test("virtual addresses skip the network address, taken ones and the broadcast", () => {
    expect(allotVirtualAddress("100.64.0.0/10", [])).toBe("100.64.0.1");
    expect(allotVirtualAddress("100.64.0.0/10", ["100.64.0.1", "100.64.0.2"])).toBe("100.64.0.3");
    expect(allotVirtualAddress("10.9.0.0/30", ["10.9.0.1"])).toBe("10.9.0.2");
    expect(() => allotVirtualAddress("10.9.0.0/30", ["10.9.0.1", "10.9.0.2"])).toThrow("no free address");
  });

  test("system ids come from the key and avoid taken ones", () => {
    const a = allotSystemId(key(7), new Set());
    expect(a).toMatch(/^[A-Z0-9]{5}$/);
    expect(allotSystemId(key(7), new Set())).toBe(a);
    const b = allotSystemId(key(7), new Set([a]));
    expect(b).not.toBe(a);
  });
});
