/**
 * @module test/firewall/detect.test
 * The backend detector, each branch over a state-modelling fake runner whose outputs are real
 * recordings (test/firewall/fixtures/, taken inside a namespace with iptables 1.8.9 and
 * nftables 1.0.6): the fake knows which binaries exist and what each *-save / `nft list tables`
 * prints, throws on any command it does not model and on anything that is not a read. Then the
 * real thing in namespaces seeded like each case. Every decision is logged exactly once.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { recordingLogger } from "../../core/log.ts";
import type { CommandResult, CommandRunner } from "../../core/runner.ts";
import { FirewallPlatformError } from "../../core/firewall/firewall.ts";
import { detectFirewallBackend } from "../../platform/linux/firewall/detect.ts";
import { rootTest } from "../helpers/env.ts";
import { withRig } from "../helpers/netns.ts";
import { seedForeign } from "./harness.ts";

const fixture = (name: string) => readFileSync(`${import.meta.dir}/fixtures/${name}`, "utf8");

interface FakeSystem {
  /** Installed binaries → their version line. */
  binaries: Record<string, string>;
  /** Tool → what it prints (missing: empty output, as on a system with no tables). */
  saves?: Record<string, string>;
  nftTables?: string;
}

const DEBIAN_BINARIES: Record<string, string> = {
  nft: fixture("nft-version.txt"),
  iptables: fixture("iptables-V.txt"),
  "iptables-legacy": fixture("iptables-legacy-V.txt"),
  "iptables-nft": fixture("iptables-nft-V.txt"),
  "iptables-legacy-save": "",
  "ip6tables-legacy-save": "",
  "iptables-nft-save": "",
  "ip6tables-nft-save": "",
  "iptables-save": "",
  "ip6tables-save": "",
};

function fakeRunner(sys: FakeSystem): CommandRunner & { commands: string[] } {
  const commands: string[] = [];
  return {
    commands,
    async run(argv, options): Promise<CommandResult> {
      commands.push(argv.join(" "));
      const [bin, ...args] = argv;
      const fail = (exitCode: number, stderr: string): CommandResult => {
        if (options?.allowFailure) return { stdout: "", stderr, exitCode };
        throw new Error(`fake: ${argv.join(" ")} failed: ${stderr}`);
      };
      if (!(bin! in sys.binaries)) return fail(127, `ENOENT: ${bin}`);
      const key = args.join(" ");
      if (key === "-V" || key === "--version") return { stdout: sys.binaries[bin!]!, stderr: "", exitCode: 0 };
      if (bin!.endsWith("-save") && key === "") return { stdout: sys.saves?.[bin!] ?? "", stderr: "", exitCode: 0 };
      if (bin === "nft" && key === "list tables") return { stdout: sys.nftTables ?? "", stderr: "", exitCode: 0 };
      throw new Error(`fake: unexpected command ${argv.join(" ")}`);
    },
  };
}

async function detect(sys: FakeSystem, explicit?: Parameters<typeof detectFirewallBackend>[0]["explicit"]) {
  const logger = recordingLogger();
  const runner = fakeRunner(sys);
  const choice = await detectFirewallBackend({ runner, logger, explicit });
  const lines = logger.lines.filter((l) => l.message.startsWith("firewall: "));
  expect(lines.length).toBe(1);
  expect(lines[0]!.message).toBe(choice.line);
  return { choice, commands: runner.commands };
}

describe("detectFirewallBackend (fake system, recorded outputs)", () => {
  test("explicit setting wins without probing anything else", async () => {
    const { choice, commands } = await detect({ binaries: DEBIAN_BINARIES, saves: { "iptables-legacy-save": fixture("docker-iptables-legacy-save.txt") } }, "nftables");
    expect(choice.line).toBe("firewall: backend=nftables reason=explicit");
    expect(commands).toEqual(["nft --version"]);
    const legacy = await detect({ binaries: DEBIAN_BINARIES }, "iptables-legacy");
    expect(legacy.choice.line).toBe("firewall: backend=iptables variant=legacy reason=explicit");
    const plain = await detect({ binaries: DEBIAN_BINARIES }, "iptables");
    expect(plain.choice).toMatchObject({ backend: "iptables", variant: "system", reason: "explicit" });
  });

  test("an explicit backend whose tool is missing is an error, not a fallback", async () => {
    const { nft: _, ...noNft } = DEBIAN_BINARIES;
    const err = await detectFirewallBackend({ runner: fakeRunner({ binaries: noNft }), explicit: "nftables" }).catch((e) => e);
    expect(err).toBeInstanceOf(FirewallPlatformError);
    expect(err.code).toBe("E_PLATFORM");
    expect(err.message).toContain("nft --version");
  });

  test("rules in the legacy tables (Docker on a legacy host) → iptables legacy", async () => {
    const { choice } = await detect({
      binaries: DEBIAN_BINARIES,
      saves: {
        "iptables-legacy-save": fixture("docker-iptables-legacy-save.txt"),
        "iptables-nft-save": fixture("docker-legacy-then-iptables-nft-save.txt"),
      },
    });
    expect(choice.line).toBe("firewall: backend=iptables variant=legacy reason=legacy-rules legacy_rules=9 nft_rules=0 nft_tables=0");
  });

  test("rules under iptables-nft (Docker on a current distribution) → iptables nft, its tables not counted as native", async () => {
    const { choice } = await detect({
      binaries: DEBIAN_BINARIES,
      saves: { "iptables-nft-save": fixture("docker-iptables-nft-save.txt") },
      nftTables: fixture("docker-iptables-nft-list-tables.txt"),
    });
    expect(choice.line).toBe("firewall: backend=iptables variant=nft reason=iptables-nft-rules legacy_rules=0 nft_rules=3 nft_tables=0");
  });

  test("native nftables tables (firewalld, nftables.conf) → nftables", async () => {
    const { choice } = await detect({ binaries: DEBIAN_BINARIES, nftTables: fixture("firewalld-nft-list-tables.txt") });
    expect(choice.line).toBe("firewall: backend=nftables reason=nft-tables legacy_rules=0 nft_rules=0 nft_tables=2");
  });

  test("an empty system → nftables by default; Waygate's own leftovers do not steer the choice", async () => {
    const empty = await detect({ binaries: DEBIAN_BINARIES });
    expect(empty.choice.line).toBe("firewall: backend=nftables reason=default legacy_rules=0 nft_rules=0 nft_tables=0");
    const leftovers = await detect({
      binaries: DEBIAN_BINARIES,
      saves: {
        "iptables-legacy-save":
          "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:WAYGATE-FORWARD - [0:0]\n-A FORWARD -j WAYGATE-FORWARD\n-A WAYGATE-FORWARD ! -i wg0 -o wg0 -j DROP\nCOMMIT\n",
      },
      nftTables: "table inet waygate\n",
    });
    expect(leftovers.choice.reason).toBe("default");
  });

  test("no nft binary → iptables in the variant `iptables -V` reports; nothing at all → error", async () => {
    const old = await detect({ binaries: { iptables: "iptables v1.6.1\n", "iptables-save": "", "ip6tables-save": "" } });
    expect(old.choice.line).toBe("firewall: backend=iptables variant=system reason=no-nft legacy_rules=0 nft_rules=0 nft_tables=0");
    const err = await detectFirewallBackend({ runner: fakeRunner({ binaries: {} }) }).catch((e) => e);
    expect(err).toBeInstanceOf(FirewallPlatformError);
  });
});

describe("detectFirewallBackend (real tools, in a namespace)", () => {
  const cases = [
    { seed: null, want: "firewall: backend=nftables reason=default" },
    { seed: "iptables-legacy", want: "firewall: backend=iptables variant=legacy reason=legacy-rules" },
    { seed: "iptables-nft", want: "firewall: backend=iptables variant=nft reason=iptables-nft-rules" },
    { seed: "nftables", want: "firewall: backend=nftables reason=nft-tables" },
  ] as const;
  rootTest("each branch on a seeded namespace; the probe itself creates no tables", ["ip", "nft", "iptables-legacy", "iptables-nft"], () =>
    withRig(async (rig) => {
      for (const [i, c] of cases.entries()) {
        const ns = await rig.addNamespace(`d${i}`);
        const runner = rig.runnerIn(ns);
        if (c.seed) await seedForeign(c.seed, runner);
        const before = `${(await runner.run(["nft", "list", "ruleset"])).stdout}${(await runner.run(["iptables-legacy-save"])).stdout}`;
        const logger = recordingLogger();
        const choice = await detectFirewallBackend({ runner, logger });
        expect(choice.line.startsWith(c.want)).toBe(true);
        expect(logger.lines.map((l) => l.message)).toEqual([choice.line]);
        const after = `${(await runner.run(["nft", "list", "ruleset"])).stdout}${(await runner.run(["iptables-legacy-save"])).stdout}`;
        expect(after.replace(/on .*\d{4}/g, "")).toBe(before.replace(/on .*\d{4}/g, ""));
      }
    }),
  );
});
