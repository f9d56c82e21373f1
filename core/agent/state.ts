/**
 * @module core/agent/state
 * The agent's state directory (agentStateDir: `--state-dir`, else <store state dir>/agent), mode 0700:
 *
 *   identity.json  0600  { version, privateKey, publicKey, createdAt, enrolment? }: the WireGuard key
 *                        pair (created by `waygate enrol` when absent) and, once enrolled, the server
 *                        URL and public key, system id, virtual address, network, tags.
 *   netmap.json    0600  { version, serverUrl, revision, savedAt, netmap }: the last NetMap applied,
 *                        so a restart works while the control plane is down.
 *   agent.sock     0600  the running agent's control socket (`waygate status`).
 *
 * Writes are atomic (temp file created 0600 in the same directory, fsync, rename, fsync of the
 * directory): a crash leaves the old file or the new one, never half of either. Reads are
 * validated with valibot; a bad file is an AgentStateError naming the file and the field.
 * The private key never leaves this module in anything meant for logs or status output:
 * `publicIdentity` is what everything else shows.
 */
import { closeSync, chmodSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import * as v from "valibot";
import type { Logger } from "../log.ts";
import { defaultStateDir } from "../store/paths.ts";
import { NetMapSchema, type NetMap } from "../policy/netmap.ts";
import { decodeKey, encodeKey, publicKeyFrom } from "../wire/keys.ts";
import type { Crypto } from "../wire/crypto.ts";
import { AgentStateError, NotEnrolledError } from "./errors.ts";

export const STATE_VERSION = 1;
export const IDENTITY_FILE = "identity.json";
export const NETMAP_FILE = "netmap.json";
export const SOCKET_FILE = "agent.sock";

const Key = v.pipe(v.string(), v.regex(/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/, "must be a base64 WireGuard key (44 characters)"));

export const EnrolmentSchema = v.object({
  serverUrl: v.pipe(v.string(), v.url("must be a URL")),
  serverPublicKey: Key,
  systemId: v.pipe(v.string(), v.regex(/^[A-Z0-9]{5}$/, "must be 5 characters A-Z 0-9")),
  virtualAddress: v.string(),
  network: v.string(),
  tags: v.array(v.string()),
  approved: v.boolean(),
  hostname: v.string(),
  enrolledAt: v.number(),
});
export type Enrolment = v.InferOutput<typeof EnrolmentSchema>;

export const IdentitySchema = v.object({
  version: v.literal(STATE_VERSION),
  privateKey: Key,
  publicKey: Key,
  createdAt: v.number(),
  enrolment: v.optional(EnrolmentSchema),
});
export type Identity = v.InferOutput<typeof IdentitySchema>;

export const SavedNetMapSchema = v.object({
  version: v.literal(STATE_VERSION),
  serverUrl: v.string(),
  revision: v.number(),
  savedAt: v.number(),
  netmap: NetMapSchema,
});
export type SavedNetMap = v.InferOutput<typeof SavedNetMapSchema>;

/** An identity without its private key: what logs, status and reports may show. */
export type PublicIdentity = Omit<Identity, "privateKey">;

export function publicIdentity(identity: Identity): PublicIdentity {
  const { privateKey: _secret, ...rest } = identity;
  return rest;
}

export function identityPath(dir: string): string {
  return join(dir, IDENTITY_FILE);
}
export function netMapPath(dir: string): string {
  return join(dir, NETMAP_FILE);
}
export function socketPathIn(dir: string): string {
  return join(dir, SOCKET_FILE);
}

/** Creates the state directory 0700, or tightens an existing one that is wider (logged). */
export function ensureStateDir(dir: string, logger?: Logger): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const mode = statSync(dir).mode & 0o777;
    if (mode !== 0o700) {
      chmodSync(dir, 0o700);
      logger?.warn(`state: dir=${dir} mode=${mode.toString(8)} tightened=700`);
    }
  } catch (cause) {
    throw new AgentStateError(dir, `cannot create the state directory: ${(cause as Error).message}`, { cause });
  }
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

/**
 * Writes `text` to `file` atomically, mode 0600: a temp file beside it (created 0600, so the
 * bytes are never readable by others, not even for a moment), fsync, rename, fsync the directory.
 */
export function writeFileAtomic(file: string, text: string): void {
  const temp = join(dirname(file), `.${file.slice(dirname(file).length + 1)}.${process.pid}.tmp`);
  try {
    if (existsSync(temp)) unlinkSync(temp);
    const fd = openSync(temp, "wx", 0o600);
    try {
      const bytes = new TextEncoder().encode(text);
      let off = 0;
      while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(temp, 0o600);
    renameSync(temp, file);
  } catch (cause) {
    try {
      unlinkSync(temp);
    } catch {
      // never created, or already renamed
    }
    throw new AgentStateError(file, `cannot write: ${(cause as Error).message}`, { cause });
  }
  syncDir(dirname(file));
}

function readJson<S extends v.GenericSchema>(file: string, schema: S, what: string, logger?: Logger): v.InferOutput<S> | null {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new AgentStateError(file, `cannot read ${what}: ${(cause as Error).message}`, { cause });
  }
  try {
    const mode = statSync(file).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      chmodSync(file, 0o600);
      logger?.warn(`state: file=${file} mode=${mode.toString(8)} tightened=600`);
    }
  } catch {
    // best effort: the content check below still runs
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new AgentStateError(file, `${what} is not JSON (${(cause as Error).message}); remove it to start over`, { cause });
  }
  const parsed = v.safeParse(schema, raw);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const path = v.getDotPath(issue) ?? "(top level)";
    throw new AgentStateError(file, `${what} is invalid at ${path}: ${issue.message}`);
  }
  return parsed.output;
}

/** The identity, or null when the file does not exist. With `crypto`, checks the key pair matches. */
export function readIdentity(dir: string, options: { crypto?: Crypto; logger?: Logger } = {}): Identity | null {
  const file = identityPath(dir);
  const identity = readJson(file, IdentitySchema, "the agent identity", options.logger);
  if (identity && options.crypto) {
    const derived = encodeKey(publicKeyFrom(options.crypto, decodeKey(identity.privateKey, "privateKey")));
    if (derived !== identity.publicKey) throw new AgentStateError(file, "publicKey does not belong to privateKey");
  }
  return identity;
}

export function writeIdentity(dir: string, identity: Identity, logger?: Logger): void {
  ensureStateDir(dir, logger);
  writeFileAtomic(identityPath(dir), `${JSON.stringify(identity, null, 2)}\n`);
}

/** The last NetMap saved, or null when there is none. */
export function readSavedNetMap(dir: string, logger?: Logger): SavedNetMap | null {
  return readJson(netMapPath(dir), SavedNetMapSchema, "the saved NetMap", logger);
}

export function writeSavedNetMap(dir: string, saved: { serverUrl: string; revision: number; savedAt: number; netmap: NetMap }, logger?: Logger): void {
  ensureStateDir(dir, logger);
  const doc: SavedNetMap = { version: STATE_VERSION, ...saved };
  writeFileAtomic(netMapPath(dir), `${JSON.stringify(doc)}\n`);
}

/** The enrolled identity, or NotEnrolledError naming the state directory. */
export function requireEnrolment(dir: string, identity: Identity | null): Identity & { enrolment: Enrolment } {
  if (identity === null || identity.enrolment === undefined) {
    throw new NotEnrolledError(`${identityPath(dir)}: this machine is not enrolled yet: run waygate enrol --server URL --key KEY first`);
  }
  return identity as Identity & { enrolment: Enrolment };
}

/**
 * The agent's state directory: `--state-dir` when given, else `<store state dir>/agent`
 * (core/store/paths.ts: WAYGATE_STATE_DIR, /var/lib/waygate for root, XDG state otherwise),
 * so one WAYGATE_STATE_DIR moves both the server's database and the agent's identity.
 */
export function agentStateDir(explicit: string | undefined, env: Readonly<Record<string, string | undefined>>, uid: number, home: string): string {
  if (explicit !== undefined && explicit !== "") return explicit;
  return join(defaultStateDir(env, uid, home), "agent");
}
