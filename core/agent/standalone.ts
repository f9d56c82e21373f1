/**
 * @module core/agent/standalone
 * The agent half of `waygate serve --standalone`: the control plane and an agent in one process
 * on one machine, the agent being a gateway for the subnets it discovered, so a single binary on
 * a homelab router is a complete network.
 *
 *   S1 keys      the agent's key pair in `stateDir` (created 0600 when absent).
 *   S2 system    unless this key is already enrolled in `store`: ONE store transaction creates a
 *                system for this machine (approved, enabled, allowed as gateway), its discovered
 *                subnets (syncDiscoveredSubnets) and a single-use, self-approving enrolment key
 *                that claims exactly that system, expiring in 10 minutes; audited as `standalone`.
 *   S3 enrol     over HTTP like any agent (core/agent/enrol.ts, POST /v1/agent/enrol): the server
 *                allots the virtual address and spends the key. Nothing about enrolment is
 *                special-cased in the server.
 *   S4 run       the injected `startAgent` runs the agent in-process (platform/linux: TUN, Device,
 *                NetMap stream, reports — the first report re-syncs the discovered subnets through
 *                the server, which pushes the new NetMaps).
 *   S5 tell      prints how to enrol the next device.
 *
 * Platform-free: discovery, the running agent and HTTP come in as adapters (cmd/serve.ts passes
 * platform/linux/agent-adapters.ts `linuxStandaloneAdapters`).
 */
import type { Logger } from "../log.ts";
import { secretHash } from "../control/auth.ts";
import { allotSystemId } from "../store/policy-state.ts";
import type { Store } from "../store/store.ts";
import type { Crypto, RandomSource } from "../wire/crypto.ts";
import type { DiscoveredAddress } from "./agent.ts";
import type { FetchFn } from "./client.ts";
import { enrol, ensureKeys } from "./enrol.ts";
import { type Enrolment, type Identity, readIdentity } from "./state.ts";

export const STANDALONE_KEY_TTL_MS = 10 * 60_000;

export interface StandaloneAdapters {
  discoverSubnets(network: string): Promise<DiscoveredAddress[]>;
  /** Runs the agent in this process until stop(). */
  startAgent(identity: Identity & { enrolment: Enrolment }, stateDir: string): Promise<{ stop(): Promise<void> }>;
  fetch: FetchFn;
  crypto: Crypto;
  random: RandomSource;
  hostname: string;
  os: string;
  version: string;
  /** Where the enrol-the-next-device instructions go (stdout). */
  out(text: string): void;
}

export interface StandaloneOptions {
  /** The control plane's URL as the agent (and other devices) reach it. */
  serverUrl: string;
  store: Store;
  /** The admin token when the server just created it: never logged; the instructions say where it goes. */
  adminToken?: string;
  stateDir: string;
  logger: Logger;
  now: () => number;
  /** The overlay network (the server's), excluded from discovery. */
  network: string;
  adapters: StandaloneAdapters;
}

export interface StandaloneAgent {
  readonly systemId: string;
  readonly virtualAddress: string;
  /** The subnets this machine offers as a gateway. */
  readonly subnets: string[];
  stop(): Promise<void>;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

/**
 * A URL other devices can reach: a wildcard listen address (0.0.0.0, ::) is replaced by the
 * first discovered LAN address. Loopback is kept as it is: nothing else could reach it anyway.
 */
export function advertisedUrl(serverUrl: string, found: readonly DiscoveredAddress[]): string {
  const url = new URL(serverUrl);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const lan = found.find((f) => !f.address.includes(":"));
  if ((host === "0.0.0.0" || host === "::") && lan) url.hostname = lan.address;
  return url.toString().replace(/\/+$/, "");
}

export async function startStandaloneAgent(o: StandaloneOptions): Promise<StandaloneAgent> {
  const { store, logger, adapters } = o;
  // S1
  const { identity: keys } = ensureKeys({ stateDir: o.stateDir, crypto: adapters.crypto, random: adapters.random, now: o.now, logger });
  const found = await adapters.discoverSubnets(o.network).catch((err: unknown) => {
    logger.warn(`standalone: discovery failed error=${JSON.stringify((err as Error).message)}`);
    return [] as DiscoveredAddress[];
  });
  const subnets = [...new Set(found.map((f) => f.subnet))].sort();
  const serverUrl = advertisedUrl(o.serverUrl, found);

  // S2
  const existing = await store.getSystemByPublicKey(keys.publicKey);
  let enrolmentKey: string | null = null;
  if (existing === null || keys.enrolment === undefined || keys.enrolment.serverUrl !== serverUrl) {
    const keyId = `SA${hex(adapters.random(4)).toUpperCase()}`;
    const secret = `wgs_${keyId}_${hex(adapters.random(24))}`;
    const systemId = await store.transaction(async (tx) => {
      let id = existing?.identity;
      if (id === undefined) {
        const taken = new Set((await tx.listSystems()).map((s) => s.identity));
        id = allotSystemId(keys.publicKey, taken);
        await tx.putSystem({
          identity: id,
          name: adapters.hostname.slice(0, 128),
          description: "this machine (waygate serve --standalone)",
          publicKey: null,
          virtualAddress: null,
          approved: true,
          enabled: true,
          allowedAsGateway: true,
          source: "manual",
        });
        await tx.syncDiscoveredSubnets(id, subnets, []);
        await tx.createEnrolmentKey({
          keyId,
          secretHash: secretHash(secret),
          description: "standalone self-enrolment",
          maxUses: 1,
          expiresAt: o.now() + STANDALONE_KEY_TTL_MS,
          autoApprove: true,
          tags: [],
          systemIdentity: id,
        });
        await tx.appendAudit({ actor: "standalone", action: "system.create", subject: id, detail: { allowedAsGateway: true, subnets } });
      }
      return id;
    });
    enrolmentKey = existing === null ? secret : null;
    logger.info(`standalone: system=${systemId} created=${existing === null} gateway=yes subnets=${subnets.join(",") || "none"}`);
  }

  // S3: a fresh system enrols with its claim key; an existing one re-enrols (the server
  // answers with its system without spending anything) to refresh the saved enrolment.
  const outcome = await enrol({
    stateDir: o.stateDir,
    serverUrl,
    enrolmentKey: enrolmentKey ?? "standalone-reenrol",
    hostname: adapters.hostname,
    os: adapters.os,
    version: adapters.version,
    force: true,
    refresh: true,
    fetch: adapters.fetch,
    crypto: adapters.crypto,
    random: adapters.random,
    now: o.now,
    logger,
  });
  const identity = readIdentity(o.stateDir, { crypto: adapters.crypto, logger });
  if (identity === null || identity.enrolment === undefined) throw new Error(`standalone: enrolment in ${o.stateDir} vanished`);
  const e = identity.enrolment;
  logger.info(`standalone: enrol=${outcome.status} system=${e.systemId} address=${e.virtualAddress}`);

  // S4
  const running = await adapters.startAgent(identity as Identity & { enrolment: Enrolment }, o.stateDir);

  // S5
  adapters.out(standaloneInstructions({ serverUrl, systemId: e.systemId, virtualAddress: e.virtualAddress, subnets, adminToken: o.adminToken }));
  return {
    systemId: e.systemId,
    virtualAddress: e.virtualAddress,
    subnets,
    stop: () => running.stop(),
  };
}

export function standaloneInstructions(i: { serverUrl: string; systemId: string; virtualAddress: string; subnets: readonly string[]; adminToken?: string | undefined }): string {
  return [
    `standalone: this machine is ${i.systemId} (${i.virtualAddress}), gateway for ${i.subnets.join(", ") || "no subnets (none discovered)"}`,
    "standalone: to enrol the next device:",
    `  1. here:       waygate keys create --tag <tag> --auto-approve   (prints a one-time enrolment key${i.adminToken ? "; admin token above" : ""})`,
    `  2. on device:  waygate enrol --server ${i.serverUrl} --key <key>`,
    "  3. on device:  waygate run",
    `  4. here:       waygate policies add <name> --tag <tag> --gateway ${i.systemId}${i.subnets.length > 0 ? `=${i.subnets.join(",")}` : ""}   (lets <tag> reach this gateway's subnets)`,
    "",
  ].join("\n");
}
