/**
 * @module cmd/enrol
 * `waygate enrol --server URL --key KEY [--state-dir DIR] [--hostname NAME] [--force] [--json]`:
 * generates this machine's key pair if there is none (identity.json, 0600, in a 0700 state
 * directory), fetches the server's public key from /v1/info, enrols with the one-time enrolment
 * key, saves the enrolment. Running it again against the same server says so and changes
 * nothing. The private key is never printed.
 */
import { defineCommand } from "citty";
import { createConsola } from "consola";
import { randomFillSync } from "node:crypto";
import { homedir, hostname } from "node:os";
import { enrol } from "../core/agent/enrol.ts";
import { taggedLogger } from "../core/agent/log.ts";
import { agentStateDir } from "../core/agent/state.ts";
import { WaygateError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import { nobleCrypto } from "../core/wire/crypto-noble.ts";
import { waygateVersion } from "./version.ts";

export class EnrolUsageError extends WaygateError {
  constructor(message: string) {
    super("E_USAGE", message);
  }
}

export interface EnrolCommandData {
  out?: (text: string) => void;
  logger?: Logger;
  env?: Record<string, string | undefined>;
  fetch?: (input: string, init?: RequestInit) => Promise<Response>;
}

export default defineCommand({
  meta: {
    name: "enrol",
    description: "Enrol this machine with a Waygate control plane using a one-time enrolment key. Example: waygate enrol --server https://gw.example:7070 --key K-...",
  },
  args: {
    server: { type: "string", description: "Control plane URL (as printed by waygate serve)", valueHint: "URL", required: true },
    key: { type: "string", description: "Enrolment key (waygate keys create ...)", valueHint: "KEY", required: true },
    "state-dir": { type: "string", description: "Agent state directory (default: <WAYGATE_STATE_DIR or /var/lib/waygate>/agent)", valueHint: "DIR" },
    hostname: { type: "string", description: "Name to enrol under (default: this machine's host name)", valueHint: "NAME" },
    force: { type: "boolean", description: "Enrol with this server even when enrolled with another one (keeps the key pair)", default: false },
    json: { type: "boolean", description: "Print the result as JSON", default: false },
  },
  async run({ args, data }) {
    const injected = (data ?? {}) as EnrolCommandData;
    const env = injected.env ?? process.env;
    const out = injected.out ?? ((t: string) => process.stdout.write(t));
    const server = String(args.server ?? "");
    let url: URL;
    try {
      url = new URL(server);
    } catch {
      throw new EnrolUsageError(`--server ${JSON.stringify(server)} is not a URL (e.g. http://192.168.1.1:7070)`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new EnrolUsageError(`--server must be http:// or https://, got ${url.protocol}`);
    const stateDir = agentStateDir(typeof args["state-dir"] === "string" ? args["state-dir"] : undefined, env, process.getuid?.() ?? 0, homedir());
    const level = Number.parseInt(env.CONSOLA_LEVEL ?? "", 10);
    const logger = injected.logger ?? taggedLogger(createConsola({ level: Number.isNaN(level) ? 1 : level, stdout: process.stderr, stderr: process.stderr }));
    const name = typeof args.hostname === "string" && args.hostname !== "" ? args.hostname : hostname() || "waygate";
    const result = await enrol({
      stateDir,
      serverUrl: server,
      enrolmentKey: String(args.key),
      hostname: name,
      os: `${process.platform}-${process.arch}`,
      version: waygateVersion(),
      force: args.force === true,
      fetch: injected.fetch ?? ((u, i) => fetch(u, i)),
      crypto: nobleCrypto(),
      random: (n) => {
        const b = new Uint8Array(n);
        randomFillSync(b);
        return b;
      },
      now: () => Date.now(),
      logger,
    });
    const e = result.identity.enrolment!;
    if (args.json) {
      out(`${JSON.stringify({ status: result.status, stateDir, systemId: e.systemId, publicKey: result.identity.publicKey, virtualAddress: e.virtualAddress, network: e.network, tags: e.tags, approved: e.approved, serverUrl: e.serverUrl }, null, 2)}\n`);
      return;
    }
    const sd = args["state-dir"] ? ` --state-dir ${stateDir}` : "";
    if (result.status === "already-enrolled") {
      out(`already enrolled with ${e.serverUrl} as ${e.systemId} (${e.virtualAddress}); nothing changed\n`);
    } else {
      out(
        `enrolled with ${e.serverUrl} as ${e.systemId}: virtual address ${e.virtualAddress} (network ${e.network}), tags ${e.tags.join(", ") || "none"}\n` +
          (e.approved ? "" : "this system awaits approval by an administrator before it gets peers\n"),
      );
    }
    out(`public key ${result.identity.publicKey}; state in ${stateDir}\nstart the agent: waygate run${sd}\n`);
  },
});
