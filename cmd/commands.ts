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
  up: {
    summary: "Run a WireGuard-compatible tunnel from a wg-quick style config in the foreground (root)",
    examples: [
      "waygate up /etc/wireguard/wg0.conf",
      "waygate up ./office.conf --interface wg-office",
      "waygate up ./wg0.conf --noble",
    ],
    load: () => import("./up.ts").then((m) => m.default),
  },
  down: {
    summary: "Stop an interface started by waygate up",
    examples: ["waygate down wg0", "waygate down /etc/wireguard/wg0.conf"],
    load: () => import("./down.ts").then((m) => m.default),
  },
  show: {
    summary: "Show running interfaces and peers like wg show (handshakes, transfer, endpoints)",
    examples: ["waygate show", "waygate show wg0", "waygate show wg0 --json"],
    load: () => import("./show.ts").then((m) => m.default),
  },
  genkey: {
    summary: "Print a new private key (base64), like wg genkey",
    examples: ["waygate genkey > private.key", "waygate genkey | tee private.key | waygate pubkey > public.key"],
    load: () => import("./genkey.ts").then((m) => m.default),
  },
  pubkey: {
    summary: "Read a private key on stdin and print its public key, like wg pubkey",
    examples: ["waygate pubkey < private.key", "wg genkey | waygate pubkey"],
    load: () => import("./pubkey.ts").then((m) => m.default),
  },
};
