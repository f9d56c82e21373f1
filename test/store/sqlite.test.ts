/**
 * @module test/store/sqlite.test
 * The sqlite Store: upserts report created/updated/unchanged and touch nothing when unchanged,
 * policies are replaced exactly, foreign keys hold, a throwing transaction leaves nothing behind,
 * read-only opens write nothing; and the default database path.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { defaultDbPath } from "../../core/store/paths.ts";
import { openSqliteStore } from "../../core/store/sqlite.ts";
import type { Store, SystemInput } from "../../core/store/store.ts";
import { removeTemps, tempDir } from "../profile/helpers/fixtures.ts";

afterAll(removeTemps);

const system = (identity: string, over: Partial<SystemInput> = {}): SystemInput => ({
  identity,
  name: identity.toLowerCase(),
  description: "",
  publicKey: null,
  virtualAddress: null,
  approved: true,
  enabled: true,
  allowedAsGateway: false,
  source: "manual",
  ...over,
});

async function fresh(clock = { t: 1000 }): Promise<{ store: Store; path: string; clock: { t: number } }> {
  const path = join(tempDir("waygate-store-"), "state", "waygate.db");
  const store = await openSqliteStore(path, { now: () => clock.t });
  return { store, path, clock };
}

describe("sqlite store", () => {
  test("creates its directory 0700 and file 0600", async () => {
    const { store, path } = await fresh();
    store.close();
    expect(statSync(join(path, "..")).mode & 0o777).toBe(0o700);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  test("putSystem: created, unchanged (no timestamp churn), updated", async () => {
    const { store, clock } = await fresh();
    expect(await store.transaction((tx) => tx.putSystem(system("G982V")))).toBe("created");
    clock.t = 2000;
    expect(await store.transaction((tx) => tx.putSystem(system("G982V")))).toBe("unchanged");
    expect((await store.getSystem("G982V"))!.updatedAt).toBe(1000);
    clock.t = 3000;
    expect(await store.transaction((tx) => tx.putSystem(system("G982V", { allowedAsGateway: true })))).toBe("updated");
    const s = (await store.getSystem("G982V"))!;
    expect([s.allowedAsGateway, s.createdAt, s.updatedAt]).toEqual([true, 1000, 3000]);
    store.close();
  });

  test("the schema enforces identities, unique addresses and foreign keys", async () => {
    const { store } = await fresh();
    await expect(store.transaction((tx) => tx.putSystem(system("bad")))).rejects.toThrow("CHECK constraint failed");
    await store.transaction(async (tx) => {
      await tx.putSystem(system("G982V", { virtualAddress: "100.64.0.1" }));
    });
    await expect(store.transaction((tx) => tx.putSystem(system("Q8QW8", { virtualAddress: "100.64.0.1" })))).rejects.toThrow(
      "UNIQUE constraint failed: systems.virtual_address",
    );
    await expect(store.transaction((tx) => tx.addSystemTag("G982V", "nope"))).rejects.toThrow("tag nope does not exist");
    await expect(
      store.transaction((tx) => tx.putGatewaySubnet({ gateway: "Z9Z9Z", prefix: "10.0.0.0/8", nat: true, natAddress: null, source: "manual" })),
    ).rejects.toMatchObject({ code: "E_STORE" });
    store.close();
  });

  test("a transaction that throws leaves nothing behind", async () => {
    const { store } = await fresh();
    const before = await store.dump();
    await expect(
      store.transaction(async (tx) => {
        await tx.putSystem(system("G982V"));
        await tx.putTag({ name: "office", description: "", source: "manual" });
        throw new Error("boom");
      }),
    ).rejects.toThrow("boom");
    expect(await store.dump()).toBe(before);
    store.close();
  });

  test("writes outside a transaction are refused; transactions run one at a time", async () => {
    const { store } = await fresh();
    await expect(store.transaction(async () => undefined)).resolves.toBeUndefined();
    const writer = store as unknown as { putTag: (t: unknown) => Promise<unknown> };
    await expect(writer.putTag({ name: "x", description: "", source: "manual" })).rejects.toThrow("write outside a transaction");
    const order: string[] = [];
    await Promise.all(
      ["a", "b", "c"].map((name) =>
        store.transaction(async (tx) => {
          order.push(`begin ${name}`);
          await Bun.sleep(1);
          await tx.putTag({ name, description: "", source: "manual" });
          order.push(`end ${name}`);
        }),
      ),
    );
    expect(order).toEqual(["begin a", "end a", "begin b", "end b", "begin c", "end c"]);
    store.close();
  });

  test("gateway access policies: children replaced exactly, order-insensitive, unchanged when equal", async () => {
    const { store } = await fresh();
    await store.transaction(async (tx) => {
      await tx.putSystem(system("G982V", { allowedAsGateway: true }));
      await tx.putSystem(system("Q8QW8", { allowedAsGateway: true }));
      await tx.putTag({ name: "staff", description: "", source: "manual" });
      await tx.putTag({ name: "ops", description: "", source: "manual" });
    });
    const policy = {
      name: "staff-to-office",
      description: "",
      enabled: true,
      source: "manual" as const,
      senderTags: ["staff", "ops"],
      gateways: [
        { gateway: "Q8QW8", subnets: ["10.0.0.0/24"] },
        { gateway: "G982V", subnets: ["172.84.0.0/20", "172.26.0.0/20"] },
      ],
    };
    expect(await store.transaction((tx) => tx.putGatewayAccessPolicy(policy))).toBe("created");
    const reordered = { ...policy, senderTags: ["ops", "staff"], gateways: [...policy.gateways].reverse() };
    expect(await store.transaction((tx) => tx.putGatewayAccessPolicy(reordered))).toBe("unchanged");
    const narrowed = { ...policy, senderTags: ["staff"], gateways: [{ gateway: "G982V", subnets: ["172.26.0.0/20"] }] };
    expect(await store.transaction((tx) => tx.putGatewayAccessPolicy(narrowed))).toBe("updated");
    const got = (await store.getGatewayAccessPolicy("staff-to-office"))!;
    expect([got.senderTags, got.gateways]).toEqual([["staff"], [{ gateway: "G982V", subnets: ["172.26.0.0/20"] }]]);
    const dump = await store.dump();
    expect(dump).toContain("== gateway_access_policy_subnets (policy_id, system_id, prefix) ==\n[1,1,\"172.26.0.0/20\"]\n== ");
    store.close();
  });

  test("audit entries keep their JSON detail", async () => {
    const { store } = await fresh();
    await store.transaction((tx) => tx.appendAudit({ actor: "test", action: "system.create", subject: "G982V", detail: { a: [1] } }));
    expect(await store.listAudit()).toEqual([{ id: 1, at: 1000, actor: "test", action: "system.create", subject: "G982V", detail: { a: [1] } }]);
    store.close();
  });

  test("read-only: refuses to create a file and to write", async () => {
    const dir = tempDir("waygate-store-");
    await expect(openSqliteStore(join(dir, "none.db"), { now: () => 0, readonly: true })).rejects.toThrow("no such database");
    expect(existsSync(join(dir, "none.db"))).toBe(false);
    const { store, path } = await fresh();
    await store.transaction((tx) => tx.putSystem(system("G982V")));
    store.close();
    const ro = await openSqliteStore(path, { now: () => 0, readonly: true });
    expect((await ro.listSystems()).map((s) => s.identity)).toEqual(["G982V"]);
    await expect(ro.transaction(async () => 1)).rejects.toThrow("the store is open read-only");
    ro.close();
  });
});

describe("defaultDbPath", () => {
  test("root: /var/lib/waygate, or WAYGATE_STATE_DIR", () => {
    expect(defaultDbPath({}, 0, "/root")).toBe("/var/lib/waygate/waygate.db");
    expect(defaultDbPath({ WAYGATE_STATE_DIR: "/srv/wg" }, 0, "/root")).toBe("/srv/wg/waygate.db");
  });

  test("anyone else: ~/.local/state/waygate, XDG_STATE_HOME when absolute, WAYGATE_STATE_DIR first", () => {
    expect(defaultDbPath({}, 1000, "/home/ann")).toBe("/home/ann/.local/state/waygate/waygate.db");
    expect(defaultDbPath({ XDG_STATE_HOME: "/xdg" }, 1000, "/home/ann")).toBe("/xdg/waygate/waygate.db");
    expect(defaultDbPath({ XDG_STATE_HOME: "rel" }, 1000, "/home/ann")).toBe("/home/ann/.local/state/waygate/waygate.db");
    expect(defaultDbPath({ WAYGATE_STATE_DIR: "/srv/wg", XDG_STATE_HOME: "/xdg" }, 1000, "/home/ann")).toBe("/srv/wg/waygate.db");
  });
});
