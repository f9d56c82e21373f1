/**
 * @module core/profile/strip
 * `--strip`: rewrites a profile's ExitNode value to `{}` once the migration is in the store.
 *
 * Only the bytes of the ExitNode value change: the span comes from the JSON scanner, so every
 * other property, its order, indentation, line endings and a BOM stay exactly as they were.
 * The write is atomic (temp file in the same directory, fsync, rename, fsync of the directory)
 * and keeps `<file>.bak`, the original bytes, with the original's mode. A profile whose ExitNode
 * is already `{}` (or absent) is not touched at all, so a second run changes nothing, .bak
 * included. A .bak that holds something else is never overwritten: the next free
 * `<file>.bak.N` is used.
 *
 * The temp file has a fixed name (`.NAME.waygate-strip.tmp`) so a run killed mid-write leaves
 * at most one, and the next run removes it before writing.
 */
import { chownSync, closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync, fchmodSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { ProfileWriteError } from "./errors.ts";
import type { ProfileDocument } from "./schema.ts";

export interface StripHooks {
  /** Called with the profile path after the temp file is written and synced, before the rename. */
  readonly beforeRename?: (file: string) => void;
}

export interface StripResult {
  readonly file: string;
  readonly changed: boolean;
  /** Where the original is kept; null when nothing was changed. */
  readonly backup: string | null;
}

/** Whether --strip would rewrite this profile. */
export function needsStrip(doc: ProfileDocument): boolean {
  return doc.exitNode.present && !doc.exitNode.empty;
}

/** The profile text with ExitNode's value replaced by `{}`, or null when there is nothing to strip. */
export function strippedText(doc: ProfileDocument): string | null {
  if (!needsStrip(doc)) return null;
  const { text, exitNodeSpan } = doc.textForRewrite();
  if (exitNodeSpan === undefined) return null;
  return text.slice(0, exitNodeSpan.start) + "{}" + text.slice(exitNodeSpan.end);
}

export function tempPathFor(file: string): string {
  return join(dirname(file), `.${basename(file)}.waygate-strip.tmp`);
}

function syncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, "r");
    fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

/** Writes `bytes` to `target` atomically with `mode`, via a temp file next to it. */
function writeAtomic(target: string, temp: string, bytes: Uint8Array, mode: number, owner: { uid: number; gid: number }, beforeRename?: () => void): void {
  if (existsSync(temp)) unlinkSync(temp);
  // Created 0600 and only then given the original's mode: the bytes hold a private key.
  const fd = openSync(temp, "wx", 0o600);
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    fchmodSync(fd, mode & 0o7777);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    const st = statSync(temp);
    if (st.uid !== owner.uid || st.gid !== owner.gid) chownSync(temp, owner.uid, owner.gid);
  } catch {
    // Not root: the file keeps our ownership, as any editor's save would.
  }
  beforeRename?.();
  renameSync(temp, target);
  syncDir(dirname(target));
}

function pickBackup(file: string, original: Uint8Array): { path: string; write: boolean } {
  for (let n = 0; n < 1000; n++) {
    const path = n === 0 ? `${file}.bak` : `${file}.bak.${n}`;
    if (!existsSync(path)) return { path, write: true };
    try {
      if (Buffer.from(readFileSync(path)).equals(Buffer.from(original))) return { path, write: false };
    } catch {
      // unreadable: leave it alone and try the next name
    }
  }
  throw new Error("no free backup name");
}

/** Strips one profile. Throws ProfileWriteError (the original untouched) when it cannot. */
export function stripProfile(doc: ProfileDocument, hooks: StripHooks = {}): StripResult {
  const file = doc.file;
  const next = strippedText(doc);
  const temp = tempPathFor(file);
  if (next === null) {
    if (existsSync(temp)) unlinkSync(temp);
    return { file, changed: false, backup: null };
  }
  const { text } = doc.textForRewrite();
  try {
    const onDisk = readFileSync(file);
    const original = Buffer.from(text, "utf8");
    if (!original.equals(onDisk)) {
      throw new ProfileWriteError(file, "the file changed since it was read (or is not valid UTF-8); nothing was rewritten, run again");
    }
    const st = statSync(file);
    const owner = { uid: st.uid, gid: st.gid };
    const backup = pickBackup(file, original);
    if (backup.write) {
      writeAtomic(backup.path, join(dirname(file), `.${basename(backup.path)}.waygate-strip.tmp`), original, st.mode, owner);
    }
    writeAtomic(file, temp, Buffer.from(next, "utf8"), st.mode, owner, () => hooks.beforeRename?.(file));
    return { file, changed: true, backup: backup.path };
  } catch (err) {
    if (err instanceof ProfileWriteError) throw err;
    try {
      if (existsSync(temp)) unlinkSync(temp);
    } catch {
      // best effort; the next run removes it
    }
    const code = (err as { code?: string } | null)?.code;
    throw new ProfileWriteError(file, `cannot rewrite (${code ?? (err instanceof Error ? err.message : String(err))}); the original is untouched`, { cause: err });
  }
}
