/**
 * @module cmd/commands
 * The command table: name -> one-line summary, examples, lazy loader. Modules load only when a
 * command runs or its help is shown, so `waygate --version` and `--help` import no data plane
 * or SQLite.
 */
import type { CommandDef } from "citty";

export interface CommandEntry {
  summary: string;
  examples: string[];
  load: () => Promise<CommandDef<any>>;
}

export const commands: Record<string, CommandEntry> = {
  "migrate-profile": {
    summary: "Migrate Enclave ExitNode profiles into managed gateways and gateway access policies",
    examples: [
      "waygate migrate-profile ./fleet",
      "waygate migrate-profile ./fleet --iptables-save G982V=g982v.rules --apply --strip",
      "waygate migrate-profile ./laptop/Universe.profile --identity Y7299 --json",
    ],
    load: () => import("./migrate-profile.ts").then((m) => m.default),
  },
  store: {
    summary: "Inspect the local policy store (systems, gateways, gateway access policies)",
    examples: ["waygate store show --db /var/lib/waygate/waygate.db", "waygate store show --json"],
    load: () => import("./store.ts").then((m) => m.default),
  },
};
