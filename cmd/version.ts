/**
 * @module cmd/version
 * The version string: stamped by scripts/build.ts (`git describe`) into the compiled binary
 * through a build-time define; from source it is package.json's version with "-dev".
 */
import pkg from "../package.json" with { type: "json" };

declare const WAYGATE_BUILD_VERSION: string | undefined;

export function waygateVersion(): string {
  if (typeof WAYGATE_BUILD_VERSION === "string" && WAYGATE_BUILD_VERSION.length > 0) return WAYGATE_BUILD_VERSION;
  return `${pkg.version}-dev`;
}
