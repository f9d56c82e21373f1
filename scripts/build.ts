/**
 * @module scripts/build
 * `npm run build`: compiles cmd/main.ts into the single executable dist/waygate with
 * `bun build --compile --minify --bytecode` (BUN-NOTES: ~10 ms start), the version stamped from
 * `git describe`. `--target bun-linux-arm64` etc. pass through for cross builds.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import pkg from "../package.json" with { type: "json" };

const root = join(import.meta.dir, "..");

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
    join(root, "cmd", "main.ts"),
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
