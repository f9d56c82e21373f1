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
  enrol: {
    summary: "Enrol this machine with a control plane using a one-time enrolment key",
    examples: [
      "waygate enrol --server http://192.168.1.1:7070 --key K-3F9A...",
      "waygate enrol --server https://waygate.example.com --key K-3F9A... --state-dir /srv/waygate-agent",
    ],
    load: () => import("./enrol.ts").then((m) => m.default),
  },
  run: {
    summary: "Run the agent in the foreground (root): stream the NetMap and apply it to the tunnel",
    examples: ["waygate run", "waygate run -v 4", "waygate run --interface wg-office --listen-port 51821 --state-dir /srv/waygate-agent"],
    load: () => import("./run.ts").then((m) => m.default),
  },
  status: {
    summary: "Show this machine's identity, virtual address and peers (state, endpoint, Gateway for, ACLs)",
    examples: ["waygate status", "waygate status --json", "waygate status --state-dir /srv/waygate-agent"],
    load: () => import("./status.ts").then((m) => m.default),
  },
  cleanup: {
    summary: "Remove what a crashed agent left: firewall rules (every backend), routes, its TUN; restore IP forwarding",
    examples: ["waygate cleanup", "waygate cleanup --state-dir /var/lib/waygate/agent --json"],
    load: () => import("./cleanup.ts").then((m) => m.default),
  },
  serve: {
    summary: "Run the control plane: admin API, enrolment and NetMap streaming (prints the admin token once)",
    examples: [
      "waygate serve",
      "waygate serve --listen 0.0.0.0:7070 --db /var/lib/waygate/waygate.db",
      "waygate serve --tls-cert /etc/waygate/cert.pem --tls-key /etc/waygate/key.pem --admin-token-file /etc/waygate/admin-token",
      "waygate serve --standalone",
    ],
    load: () => import("./serve.ts").then((m) => m.default),
  },
  systems: {
    summary: "List, show, approve, enable/disable, edit and remove systems on the control plane",
    examples: [
      "waygate systems list",
      "waygate systems list --json",
      "waygate systems show G982V",
      "waygate systems approve G982V",
      "waygate systems edit G982V --add-tag servers --description 'office router'",
      "waygate systems disable Y7299",
      "waygate systems remove Y7299",
    ],
    load: () => import("./systems.ts").then((m) => m.default),
  },
  keys: {
    summary: "Create, list and revoke enrolment keys (single-use or multi-use, expiry, tags, auto-approve)",
    examples: [
      "waygate keys create --tag staff --auto-approve",
      "waygate keys create --uses 20 --expires 7d --tag servers --description 'rack 4'",
      "waygate keys create --system G982V --auto-approve   # claim a migrated system",
      "waygate keys list --json",
      "waygate keys remove 3fa91c0d2e",
    ],
    load: () => import("./keys.ts").then((m) => m.default),
  },
  tags: {
    summary: "List, add and remove tags",
    examples: ["waygate tags list", "waygate tags add staff --description 'office laptops'", "waygate tags remove contractors", "waygate tags list --json"],
    load: () => import("./tags.ts").then((m) => m.default),
  },
  gateways: {
    summary: "Allow systems to act as gateways; add/remove subnets, NAT on/off, drain, priority",
    examples: [
      "waygate gateways list",
      "waygate gateways enable G982V",
      "waygate gateways subnet-add G982V 172.26.0.0/20",
      "waygate gateways subnet-add Q8QW8 0.0.0.0/0 --priority 50",
      "waygate gateways nat G982V 172.26.0.0/20 off",
      "waygate gateways drain G982V 172.26.0.0/20",
      "waygate gateways subnet-remove G982V 172.26.0.0/20",
    ],
    load: () => import("./gateways.ts").then((m) => m.default),
  },
  policies: {
    summary: "Manage gateway access policies (--direct: direct access policies between tags)",
    examples: [
      "waygate policies list",
      "waygate policies add staff-office --tag staff --gateway G982V=172.26.0.0/20",
      "waygate policies add db-only --tag contractors --gateway Q8QW8 --filter '10.0.0.5 tcp 5432' --window 'mon-fri 08:00-18:00 +01:00'",
      "waygate policies add ssh --direct --from staff --to servers --acl tcp/22",
      "waygate policies edit staff-office --disable",
      "waygate policies remove staff-office",
      "waygate policies list --direct --json",
    ],
    load: () => import("./policies.ts").then((m) => m.default),
  },
  policy: {
    summary: "Explain whether a system may reach a destination, and which policy decides",
    examples: [
      "waygate policy explain --system Y7299 --destination 172.26.0.250 --port 443",
      "waygate policy explain --system Y7299 --destination 100.64.0.7 --protocol icmp --json",
    ],
    load: () => import("./policy.ts").then((m) => m.default),
  },
};
