/**
 * @module test/helpers/env
 * Gates for root-only and tool-needing tests. Outside CI they skip with a clear reason; under
 * CI=true nothing skips: a missing privilege or tool makes the test fail with that reason.
 */
import { test } from "bun:test";

const SBIN = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

export function hasTool(name: string): boolean {
  if (Bun.which(name)) return true;
  return SBIN.some((d) => Bun.which(name, { PATH: d }) !== null);
}

export const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
export const inCI = process.env.CI === "true" || process.env.CI === "1";

/** Why a test that needs root and these tools cannot run here, or null when it can. */
export function missingRequirement(tools: readonly string[] = []): string | null {
  if (!isRoot) return "needs root (network namespaces, TUN, iptables)";
  const missing = tools.filter((t) => !hasTool(t));
  if (missing.length > 0) return `needs ${missing.join(", ")} on PATH (npm test installs them via apt-get as root)`;
  return null;
}

/**
 * `test` for root-only work: skipped with a reason outside CI when requirements are missing,
 * failing with that reason under CI=true.
 */
export function rootTest(
  name: string,
  tools: readonly string[],
  fn: () => Promise<void> | void,
  timeoutMs?: number,
): void {
  const missing = missingRequirement(tools);
  if (missing === null) {
    test(name, fn, timeoutMs);
  } else if (inCI) {
    test(name, () => {
      throw new Error(`cannot run under CI=true: ${missing}`);
    });
  } else {
    test.skip(`${name} [skipped: ${missing}]`, () => {});
  }
}
