/**
 * @module core/store/paths
 * Where the embedded database lives by default. Core does not read the environment: callers
 * pass it (cmd/ passes process.env, the uid and the home directory).
 *
 *   WAYGATE_STATE_DIR set   -> $WAYGATE_STATE_DIR/waygate.db (root or not: an explicit choice wins)
 *   root                    -> /var/lib/waygate/waygate.db
 *   anyone else             -> ${XDG_STATE_HOME:-~/.local/state}/waygate/waygate.db
 */
import { join } from "node:path";

export const DB_FILE_NAME = "waygate.db";
export const SYSTEM_STATE_DIR = "/var/lib/waygate";

export function defaultStateDir(env: Readonly<Record<string, string | undefined>>, uid: number, home: string): string {
  const explicit = env.WAYGATE_STATE_DIR;
  if (explicit !== undefined && explicit !== "") return explicit;
  if (uid === 0) return SYSTEM_STATE_DIR;
  const xdg = env.XDG_STATE_HOME;
  // XDG says relative values are invalid and must be ignored.
  const base = xdg !== undefined && xdg.startsWith("/") ? xdg : join(home, ".local", "state");
  return join(base, "waygate");
}

export function defaultDbPath(env: Readonly<Record<string, string | undefined>>, uid: number, home: string): string {
  return join(defaultStateDir(env, uid, home), DB_FILE_NAME);
}
