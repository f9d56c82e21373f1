/**
 * @module test/control/enrol-race.test
 * Twenty separate processes enrol at the same moment with one single-use key: exactly one gets
 * 201, nineteen get 403, and the store holds one new system. (The same race over 20 parallel
 * fetches from one process is in server.test.ts; at the store level in test/store.)
 */
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { cleanup, createKey, startTestServer } from "./helpers.ts";

const BUN = process.execPath;

test("twenty processes racing one single-use key: exactly one enrols", async () => {
  const t = await startTestServer();
  try {
    const key = await createKey(t, {});
    const script = join(import.meta.dir, "enrol-once.ts");
    const procs = Array.from({ length: 20 }, () =>
      Bun.spawn([BUN, script, t.server.url, t.server.serverPublicKey, key], { stdout: "pipe", stderr: "pipe", env: { ...process.env } }),
    );
    const statuses = await Promise.all(procs.map(async (p) => (await new Response(p.stdout).text()).trim()));
    expect(statuses.sort()).toEqual(["201", ...Array(19).fill("403")]);
    expect((await t.store.listSystems()).length).toBe(1);
    expect((await t.store.listEnrolmentKeys())[0]!.uses).toBe(1);
  } finally {
    await t.stop();
  }
});

afterAll(cleanup);
