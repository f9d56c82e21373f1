/**
 * @module scripts/build
 * `npm run build`: compiles cmd/main.ts into the single executable dist/waygate with
 * `bun build --compile --minify --bytecode` (BUN-NOTES: ~10 ms start), the version stamped from
 * `git describe`. `--target bun-linux-arm64` etc. pass through for cross builds.
 *
 * The data plane runs in a Worker (platform/linux/host-worker.ts) that imports its engine
 * (platform/linux/device-engine.ts) by URL, so both are extra entry points of the same compile
 * (Bun docs, "Worker" in bundler/executables). `--entry-naming=[name].[ext]` puts them flat at
 * /$bunfs/root/, next to the main entry: host.ts's `new URL("./host-worker.ts", import.meta.url)`
 * and wg-quick.ts's `new URL("./device-engine.ts", import.meta.url)` are evaluated inside the
 * main bundle (import.meta.url = file:///$bunfs/root/<binary>) and resolve there; Bun maps the
 * .ts names to the embedded .js files.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import pkg from "../package.json" with { type: "json" };

const root = join(import.meta.dir, "..");

/** Modules loaded by URL at run time (Workers, engines): compiled in as extra entry points. */
export const WORKER_ENTRY_POINTS = ["platform/linux/host-worker.ts", "platform/linux/device-engine.ts"] as const;

function gitDescribe(): string {
  const r = Bun.spawnSync(["git", "describe", "--tags", "--always", "--dirty"], { cwd: root, stderr: "ignore" });
  const described = r.exitCode === 0 ? r.stdout.toString().trim() : "";
  if (!described) return pkg.version;
  // Without tags git describe gives only a hash: keep the package version in front of it.
  return /^v?\d+\.\d+/.test(described) ? described.replace(/^v/, "") : `${pkg.version}+g${described}`;
}

export async function build(options: { outfile?: string; target?: string } = {}): Promise<string> {
  const outfile = options.outfile ?? join(root, "dist", "waygate");
  mkdirSync(join(outfile, ".."), { recursive: true });
  const version = gitDescribe();
  const argv = [
    process.execPath,
    "build",
    "--compile",
    "--minify",
    "--bytecode",
    "--format=esm",
    `--define`,
    `WAYGATE_BUILD_VERSION=${JSON.stringify(version)}`,
    "--entry-naming=[name].[ext]",
    join(root, "cmd", "main.ts"),
    ...WORKER_ENTRY_POINTS.map((p) => join(root, p)),
    "--outfile",
    outfile,
  ];
  if (options.target) argv.push(`--target=${options.target}`);
  const r = Bun.spawnSync(argv, { cwd: root, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) {
    throw new Error(`bun build failed (${r.exitCode}):\n${r.stdout.toString()}${r.stderr.toString()}`);
  }
  return outfile;
}

if (import.meta.main) {
  const target = process.argv.find((a) => a.startsWith("--target="))?.slice("--target=".length);
  const out = await build({ target });
  console.log(`built ${out}`);
}
