/**
 * @module test/cmd/large-output.test
 * A command whose output is several megabytes, read through a pipe, arrives whole: the CLI waits
 * for stdout to drain before it exits (a bare process.exit cut such output at ~200 KB).
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSqliteStore } from "../../core/store/sqlite.ts";

const work = mkdtempSync(join(tmpdir(), "waygate-large-out-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

test("store show --json with 30,000 long tags is complete, valid JSON through a pipe", async () => {
  const db = join(work, "waygate.db");
  const store = await openSqliteStore(db, { now: () => 1000 });
  await store.transaction(async (tx) => {
    for (let i = 0; i < 30_000; i++) {
      await tx.putTag({ name: `tag-${String(i).padStart(5, "0")}-${"x".repeat(50)}`, description: "", source: "manual" });
    }
  });
  store.close();
  // A reader that starts late fills the pipe first, as a slow consumer (jq, ssh) does.
  const cli = `${process.execPath} ${join(import.meta.dir, "..", "..", "cmd", "main.ts")} store show --db ${db} --json`;
  const proc = Bun.spawn(["sh", "-c", `${cli} | (sleep 1; cat)`], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const text = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  expect(text.length).toBeGreaterThan(1_700_000);
  const doc = JSON.parse(text) as { tags: string[] };
  expect(doc.tags.length).toBe(30_000);
  expect(doc.tags.at(-1)).toStartWith("tag-29999-");
}, 60_000);
