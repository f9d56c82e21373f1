/**
 * @module cmd/status
 * `waygate status [--state-dir DIR] [--json]`: Enclave-style local status. Asks the running agent
 * over <state-dir>/agent.sock (platform/linux/control.ts); when no agent runs, shows the
 * enrolment and the NetMap saved on disk, with every peer's state "unknown". The text form is
 * core/agent/status.ts renderStatus; --json prints the same AgentStatus object. No private key
 * is ever part of either.
 */
import { defineCommand } from "citty";
import { homedir } from "node:os";
import * as v from "valibot";
import { type AgentStatus, buildStatus, renderStatus } from "../core/agent/status.ts";
import { agentStateDir, publicIdentity, readIdentity, readSavedNetMap, socketPathIn } from "../core/agent/state.ts";
import { NotEnrolledError } from "../core/agent/errors.ts";
import { WaygateError } from "../core/errors.ts";
import { ControlError, controlRequest, probeSocket } from "../platform/linux/control.ts";
import { waygateVersion } from "./version.ts";

export interface StatusCommandData {
  out?: (text: string) => void;
  env?: Record<string, string | undefined>;
}

/** The shape checked on what the socket answers (a local, root-only boundary, still checked). */
const StatusShape = v.looseObject({
  now: v.number(),
  running: v.boolean(),
  self: v.looseObject({ publicKey: v.string() }),
  peers: v.array(v.looseObject({ id: v.string(), publicKey: v.string(), gatewayFor: v.array(v.string()) })),
});

export class StatusError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_PLATFORM", message, options);
  }
}

/** Status from the running agent, or from disk when none runs. */
export async function loadStatus(stateDir: string, now: () => number = () => Date.now()): Promise<AgentStatus> {
  const socket = socketPathIn(stateDir);
  if ((await probeSocket(socket)) === "live") {
    let replies: Record<string, unknown>[];
    try {
      replies = await controlRequest(socket, { op: "show" }, { timeoutMs: 5000 });
    } catch (err) {
      if (!(err instanceof ControlError)) throw err;
      replies = [];
    }
    const show = replies[0]?.show;
    if (show !== undefined) {
      const parsed = v.safeParse(StatusShape, show);
      if (!parsed.success) throw new StatusError(`${socket}: the agent answered an unexpected status (${parsed.issues[0].message})`);
      return show as AgentStatus;
    }
  }
  const identity = readIdentity(stateDir);
  if (identity === null) throw new NotEnrolledError(`${stateDir}: no identity here: run waygate enrol --server URL --key KEY first`);
  const saved = readSavedNetMap(stateDir);
  return buildStatus({
    now: now(),
    running: false,
    version: waygateVersion(),
    identity: publicIdentity(identity),
    interfaceName: null,
    listenPort: null,
    netmap: saved ? { revision: saved.revision, netmap: saved.netmap, source: "disk", appliedAt: saved.savedAt } : null,
    stats: null,
    sync: null,
    discoveredSubnets: [],
  });
}

export default defineCommand({
  meta: {
    name: "status",
    description: "Show this machine's identity, virtual address and every peer (state, endpoint, transfer, Gateway for, ACLs). Example: waygate status --json",
  },
  args: {
    "state-dir": { type: "string", description: "Agent state directory (default: <WAYGATE_STATE_DIR or /var/lib/waygate>/agent)", valueHint: "DIR" },
    json: { type: "boolean", description: "Print the status as JSON", default: false },
  },
  async run({ args, data }) {
    const injected = (data ?? {}) as StatusCommandData;
    const env = injected.env ?? process.env;
    const out = injected.out ?? ((t: string) => process.stdout.write(t));
    const stateDir = agentStateDir(typeof args["state-dir"] === "string" ? args["state-dir"] : undefined, env, process.getuid?.() ?? 0, homedir());
    const status = await loadStatus(stateDir);
    out(args.json ? `${JSON.stringify(status, null, 2)}\n` : renderStatus(status));
  },
});
