#!/usr/bin/env node
/**
 * @module scripts/setup
 * One-shot set-up used by `npm test`, `npm run demo` and `npm run build`: installs the npm
 * packages when node_modules is missing or older than package.json, and (unless --npm-only)
 * the Debian tools the root-only tests and the demo need, through apt-get, when running as
 * root and they are missing. Plain Node on purpose: on a fresh clone bun is not there yet.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const npmOnly = process.argv.includes("--npm-only");

function log(msg) {
  process.stderr.write(`setup: ${msg}\n`);
}

function needsNpmInstall() {
  const marker = join(root, "node_modules", ".package-lock.json");
  const bunBin = join(root, "node_modules", ".bin", "bun");
  if (!existsSync(marker) || !existsSync(bunBin)) return true;
  const pkg = statSync(join(root, "package.json")).mtimeMs;
  return statSync(marker).mtimeMs < pkg;
}

if (needsNpmInstall()) {
  log("installing npm packages");
  const lock = existsSync(join(root, "package-lock.json"));
  const r = spawnSync("npm", [lock ? "ci" : "install", "--no-audit", "--no-fund"], {
    cwd: root,
    stdio: "inherit",
  });
  if (r.status !== 0) {
    log(`npm install failed with status ${r.status}`);
    process.exit(r.status ?? 1);
  }
}

// Debian package -> a binary it provides (checked on PATH and in the sbin directories).
const debianTools = {
  iproute2: "ip",
  iptables: "iptables",
  nftables: "nft",
  "wireguard-go": "wireguard-go",
  "wireguard-tools": "wg",
  iperf3: "iperf3",
  "iputils-ping": "ping",
  dnsmasq: "dnsmasq",
  tcpdump: "tcpdump",
  curl: "curl",
};

function hasBinary(name) {
  const dirs = (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]);
  return dirs.some((d) => d && existsSync(join(d, name)));
}

if (!npmOnly) {
  const missing = Object.entries(debianTools)
    .filter(([, bin]) => !hasBinary(bin))
    .map(([pkg]) => pkg);
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (missing.length > 0 && isRoot && hasBinary("apt-get")) {
    log(`installing Debian packages: ${missing.join(" ")}`);
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    let r = spawnSync("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], { stdio: "inherit", env });
    if (r.status !== 0) {
      spawnSync("apt-get", ["update", "-q"], { stdio: "inherit", env });
      r = spawnSync("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], { stdio: "inherit", env });
    }
    if (r.status !== 0) log(`apt-get failed (status ${r.status}); tests needing ${missing.join(", ")} will report it`);
  } else if (missing.length > 0) {
    log(`not root or no apt-get: missing ${missing.join(", ")}; root-only tests will skip with a reason`);
  }
}

try {
  execFileSync(join(root, "node_modules", ".bin", "bun"), ["--version"], { stdio: "ignore" });
} catch (err) {
  log(`bun from node_modules does not run: ${err.message}`);
  process.exit(1);
}
