/**
 * @module core/agent/enrol
 * `waygate enrol`'s logic, platform-free: make sure there is a key pair in the state directory
 * (generated and saved 0600 before anything is sent, so a crash after the server accepted the
 * key never loses it), fetch GET /v1/info for the server's public key, POST /v1/agent/enrol
 * signed with the new key, save the enrolment. Idempotent: already enrolled with the same server
 * (URL and public key) is a success that sends nothing ("already-enrolled"). Enrolled with
 * another server: refused unless `force`, which keeps the key pair and replaces the enrolment.
 */
import type { Logger } from "../log.ts";
import type { Crypto, RandomSource } from "../wire/crypto.ts";
import { encodeKey, generatePrivateKey, publicKeyFrom } from "../wire/keys.ts";
import { ControlClient, type FetchFn, makeAgentSigner, normalizeServerUrl } from "./client.ts";
import { NotEnrolledError } from "./errors.ts";
import { type Identity, type PublicIdentity, STATE_VERSION, ensureStateDir, publicIdentity, readIdentity, writeIdentity } from "./state.ts";

export interface EnrolOptions {
  stateDir: string;
  serverUrl: string;
  enrolmentKey: string;
  hostname: string;
  os: string;
  version: string;
  force?: boolean;
  /** POST /enrol even when already enrolled with this server (refreshes the saved enrolment). */
  refresh?: boolean;
  fetch: FetchFn;
  crypto: Crypto;
  random: RandomSource;
  now: () => number;
  logger: Logger;
}

export interface EnrolOutcome {
  status: "enrolled" | "already-enrolled";
  /** True when this run created the key pair. */
  generatedKey: boolean;
  identity: PublicIdentity;
}

/** Loads the identity, creating a fresh key pair when there is none. */
export function ensureKeys(o: Pick<EnrolOptions, "stateDir" | "crypto" | "random" | "now" | "logger">): { identity: Identity; generated: boolean } {
  ensureStateDir(o.stateDir, o.logger);
  const existing = readIdentity(o.stateDir, { crypto: o.crypto, logger: o.logger });
  if (existing) return { identity: existing, generated: false };
  const privateKey = generatePrivateKey(o.random);
  const identity: Identity = {
    version: STATE_VERSION,
    privateKey: encodeKey(privateKey),
    publicKey: encodeKey(publicKeyFrom(o.crypto, privateKey)),
    createdAt: o.now(),
  };
  writeIdentity(o.stateDir, identity, o.logger);
  o.logger.info(`enrol: key generated public_key=${identity.publicKey} dir=${o.stateDir}`);
  return { identity, generated: true };
}

export async function enrol(o: EnrolOptions): Promise<EnrolOutcome> {
  const serverUrl = normalizeServerUrl(o.serverUrl);
  const { identity, generated } = ensureKeys(o);
  const info = await new ControlClient({ serverUrl, fetch: o.fetch, logger: o.logger }).info();
  const current = identity.enrolment;
  if (current && !o.refresh && current.serverUrl === serverUrl && current.serverPublicKey === info.serverPublicKey) {
    o.logger.info(`enrol: already enrolled system=${current.systemId} server=${serverUrl}`);
    return { status: "already-enrolled", generatedKey: generated, identity: publicIdentity(identity) };
  }
  if (current && !o.force && !(o.refresh && current.serverUrl === serverUrl)) {
    const why = current.serverUrl !== serverUrl ? `with ${current.serverUrl}` : `with a server whose key changed (was ${current.serverPublicKey}, now ${info.serverPublicKey})`;
    throw new NotEnrolledError(`already enrolled ${why} as ${current.systemId}; pass --force to enrol with ${serverUrl} instead (the key pair is kept)`);
  }
  const signer = makeAgentSigner({ privateKey: identity.privateKey, serverPublicKey: info.serverPublicKey }, o);
  const client = new ControlClient({ serverUrl, fetch: o.fetch, logger: o.logger, signer });
  const res = await client.enrol({ enrolmentKey: o.enrolmentKey, hostname: o.hostname, os: o.os.slice(0, 64), agentVersion: o.version.slice(0, 64) });
  const next: Identity = {
    ...identity,
    enrolment: {
      serverUrl,
      serverPublicKey: info.serverPublicKey,
      systemId: res.systemId,
      virtualAddress: res.virtualAddress,
      network: res.network,
      tags: [...res.tags].sort(),
      approved: res.approved,
      hostname: o.hostname,
      enrolledAt: o.now(),
    },
  };
  writeIdentity(o.stateDir, next, o.logger);
  o.logger.info(`enrol: enrolled system=${res.systemId} address=${res.virtualAddress} network=${res.network} approved=${res.approved} tags=${res.tags.join(",") || "none"}`);
  return { status: "enrolled", generatedKey: generated, identity: publicIdentity(next) };
}
