/**
 * @module test/profile/plan.test
 * planMigration on the guide's examples and the sample fleets, one test per conflict kind, the
 * SNAT mapping, and a property test against a brute-force oracle on random fleets: every
 * requested (client, gateway, subnet) ends up in exactly one place, a policy or an error.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { join } from "node:path";
import { parsePrefix, prefixCovers, prefixesOverlap } from "../../core/net/address.ts";
import { silentLogger } from "../../core/log.ts";
import { parseIptablesSave } from "../../core/profile/iptables.ts";
import { loadProfiles, type LoadedProfile } from "../../core/profile/load.ts";
import { planMigration, type Plan, type SnatInput } from "../../core/profile/plan.ts";
import { parseProfile } from "../../core/profile/schema.ts";
import { IPTABLES, PROFILES } from "./helpers/fixtures.ts";
import { readFileSync } from "node:fs";

function mk(identity: string, exitNode: unknown, name = identity.toLowerCase()): LoadedProfile {
  const text = JSON.stringify({ Name: name, Identity: { Certificate: { SubjectDistinguishedName: identity } }, ExitNode: exitNode }, null, 2);
  return { doc: parseProfile(text, `${identity}.profile`), identity, sources: ["certificate"] };
}

const load = (...rel: string[]) => loadProfiles({ paths: rel.map((r) => join(PROFILES, r)) }, { logger: silentLogger });
const kinds = (plan: Plan) => plan.conflicts.map((c) => `${c.severity} ${c.kind}`);
const policies = (plan: Plan) => plan.policies.map((p) => `${p.name}: ${p.senderTag} -> ${p.gateway} ${p.subnets.map((s) => s.text).join(",")}`);

function snatFile(name: string, gateway: string | null = null): SnatInput {
  const save = parseIptablesSave(readFileSync(join(IPTABLES, name), "utf8"), name);
  return { file: name, gateway, rules: save.rules, nearMisses: save.nearMisses };
}

describe("planMigration", () => {
  test("the guide: G982V becomes a gateway; the client's G982V routes become a policy; Q8QW8 is unknown", async () => {
    const plan = planMigration({ profiles: await load("guide/gateway", "guide/client") });
    expect(plan.gateways.map((g) => [g.identity, g.subnets.map((s) => `${s.prefix.text} nat=${s.nat} to=${s.natAddress}`)])).toEqual([
      ["G982V", ["172.26.0.0/20 nat=true to=null", "172.84.0.0/20 nat=true to=null"]],
    ]);
    expect(policies(plan)).toEqual(["migrated-Y7299-via-G982V: migrated-Y7299 -> G982V 172.26.0.0/20"]);
    expect(plan.tags).toEqual([{ name: "migrated-Y7299", system: "Y7299", description: expect.stringContaining("regroup") }]);
    expect(plan.systems.map((s) => [s.identity, s.allowedAsGateway, s.client])).toEqual([
      ["G982V", true, false],
      ["Y7299", false, true],
    ]);
    expect(kinds(plan)).toEqual(["error unknown-gateway"]);
    const c = plan.conflicts[0]!;
    expect(c.message).toBe(
      "Y7299 (client) uses gateway Q8QW8 (ExitNode.AvailableRoutes.Q8QW8), but no profile given is Q8QW8 and the store has no such gateway; add its profile",
    );
    expect(c.at).toMatch(/guide\/client\/Universe\.profile:\d+:\d+$/);
    expect([plan.errors, plan.warnings]).toEqual([1, 0]);
  });

  test("fleet-clean: no conflicts; a subnet inside a provided one is a subnet filter", async () => {
    const plan = planMigration({ profiles: await load("fleet-clean") });
    expect(plan.conflicts).toEqual([]);
    expect(policies(plan)).toEqual([
      "migrated-M5T3K-via-G982V: migrated-M5T3K -> G982V 172.26.4.0/24,172.84.0.0/20",
      "migrated-Y7299-via-G982V: migrated-Y7299 -> G982V 172.26.0.0/20",
      "migrated-Y7299-via-Q8QW8: migrated-Y7299 -> Q8QW8 10.0.0.0/24",
    ]);
    expect(plan.tags.map((t) => `${t.name}@${t.system}`)).toEqual(["migrated-M5T3K@M5T3K", "migrated-Y7299@Y7299"]);
  });

  test("the demo fleet: a partly provided subnet (error) and two gateways sharing a subnet (failover warning)", async () => {
    const plan = planMigration({ profiles: await load("fleet") });
    expect(kinds(plan)).toEqual(["warning failover-candidates", "error subnet-partly-provided"]);
    expect(plan.conflicts[0]!.message).toBe(
      "G982V and Q8QW8: both provide 172.84.0.0/20; they become failover candidates for 172.84.0.0/20 (check both really reach the same network)",
    );
    expect(plan.conflicts[1]!.message).toBe(
      "K4M2P (desktop-bob) asks for 172.84.0.0/19 via G982V, but G982V provides only part of it (172.84.0.0/20); ask for what it provides or add the rest to its ProvidesRoutes",
    );
    expect(plan.conflicts[1]!.at).toMatch(/desktop-bob\/Universe\.profile:51:9$/);
    // The client with no valid grant gets no tag and no policy.
    expect(plan.tags.map((t) => t.system)).toEqual(["Y7299"]);
  });

  test("a subnet the gateway does not provide at all", () => {
    const plan = planMigration({
      profiles: [mk("G982V", { ProvidesRoutes: ["172.26.0.0/20"] }), mk("Y7299", { AvailableRoutes: { G982V: ["172.26.0.0/20", "10.9.0.0/24"] } })],
    });
    expect(kinds(plan)).toEqual(["error subnet-not-provided"]);
    expect(plan.conflicts[0]!.message).toBe("Y7299 (y7299) asks for 10.9.0.0/24 via G982V, but G982V provides 172.26.0.0/20");
    expect(plan.conflicts[0]!.at).toBe("Y7299.profile:12:9"); // the "10.9.0.0/24" element
    // The valid part still shows in the plan (apply refuses anyway while errors remain).
    expect(policies(plan)).toEqual(["migrated-Y7299-via-G982V: migrated-Y7299 -> G982V 172.26.0.0/20"]);
  });

  test("a gateway that is in the fleet but provides nothing; a client naming itself", () => {
    const plan = planMigration({
      profiles: [mk("G982V", {}), mk("Y7299", { AvailableRoutes: { G982V: ["172.26.0.0/20"], Y7299: ["10.0.0.0/8"] } })],
    });
    expect(kinds(plan)).toEqual(["error not-a-gateway", "error self-gateway"]);
    expect(plan.conflicts[0]!.message).toBe(
      "Y7299 (y7299) uses G982V as a gateway (ExitNode.AvailableRoutes.G982V), but G982V's profile (G982V.profile) provides no routes",
    );
    expect(plan.policies).toEqual([]);
    expect(plan.tags).toEqual([]);
  });

  test("duplicates are migrated once and empty lists create nothing (warnings)", () => {
    const plan = planMigration({
      profiles: [
        mk("G982V", { ProvidesRoutes: ["172.26.0.0/20", "172.26.0.0/20"] }),
        mk("Y7299", { AvailableRoutes: { G982V: ["172.26.0.0/20", "172.26.0.0/20"] } }),
        mk("K4M2P", { AvailableRoutes: { G982V: [] } }),
      ],
    });
    // Gateways' lists first, then clients in identity order (K4M2P before Y7299).
    expect(kinds(plan)).toEqual(["warning duplicate-route", "warning empty-route-list", "warning duplicate-route"]);
    expect(plan.gateways[0]!.subnets.map((s) => s.prefix.text)).toEqual(["172.26.0.0/20"]);
    expect(policies(plan)).toEqual(["migrated-Y7299-via-G982V: migrated-Y7299 -> G982V 172.26.0.0/20"]);
    expect(plan.errors).toBe(0);
  });

  test("partly overlapping gateway subnets are failover candidates for the shared part", () => {
    const plan = planMigration({ profiles: [mk("G982V", { ProvidesRoutes: ["172.26.0.0/20"] }), mk("Q8QW8", { ProvidesRoutes: ["172.26.8.0/21", "10.0.0.0/24"] })] });
    expect(plan.conflicts.map((c) => c.message)).toEqual([
      "G982V and Q8QW8: G982V provides 172.26.0.0/20 and Q8QW8 provides 172.26.8.0/21, which overlap in 172.26.8.0/21; they become failover candidates for 172.26.8.0/21 (check both really reach the same network)",
    ]);
  });

  test("a client can be migrated after its gateway: gateways already in the store resolve", () => {
    const plan = planMigration({
      profiles: [mk("Y7299", { AvailableRoutes: { G982V: ["172.26.4.0/24"] } }), mk("Q8QW8", { ProvidesRoutes: ["172.26.0.0/22"] })],
      storeGateways: [{ identity: "G982V", name: "office", subnets: [parsePrefix("172.26.0.0/20")] }],
    });
    expect(policies(plan)).toEqual(["migrated-Y7299-via-G982V: migrated-Y7299 -> G982V 172.26.4.0/24"]);
    expect(plan.policies[0]!.gatewayFromStore).toBe(true);
    expect(plan.gateways.map((g) => g.identity)).toEqual(["Q8QW8"]); // the stored one is not rewritten
    expect(kinds(plan)).toEqual(["warning failover-candidates"]);
  });

  test("manual SNAT: the file's owner is the one gateway all its rules fit; each subnet gets its LAN address", async () => {
    const plan = planMigration({ profiles: await load("fleet"), snat: [snatFile("gateway-office.iptables-save"), snatFile("gateway-dc.iptables-save")] });
    const subnets = plan.gateways.flatMap((g) => g.subnets.map((s) => `${g.identity} ${s.prefix.text} to=${s.natAddress} rule=${s.manualRule?.line ?? "-"}`));
    expect(subnets).toEqual([
      "G982V 172.26.0.0/20 to=172.26.0.1 rule=30",
      "G982V 172.84.0.0/20 to=172.84.0.1 rule=31",
      "Q8QW8 10.0.0.0/24 to=null rule=7",
      "Q8QW8 172.84.0.0/20 to=null rule=-",
    ]);
    expect(plan.snat.map((s) => `${s.gateway} ${s.prefixes.join(",")} ${s.rule.target}`)).toEqual([
      "G982V 172.26.0.0/20 SNAT",
      "G982V 172.84.0.0/20 SNAT",
      "Q8QW8 10.0.0.0/24 MASQUERADE",
    ]);
    expect(kinds(plan)).toEqual([
      "warning failover-candidates",
      "warning snat-not-recognised",
      "warning snat-unmatched",
      "warning snat-missing",
      "error subnet-partly-provided",
    ]);
    expect(plan.conflicts.find((c) => c.kind === "snat-missing")!.message).toBe(
      "gateway-dc.iptables-save has no SNAT rule for Q8QW8's 172.84.0.0/20; Waygate will NAT it to the gateway's LAN address (turn NAT off for this subnet if the LAN routes the overlay back to Q8QW8)",
    );
  });

  test("manual SNAT: ambiguous files, pinned owners, unknown owners, partial rules", () => {
    const profiles = [mk("G982V", { ProvidesRoutes: ["172.84.0.0/20"] }), mk("Q8QW8", { ProvidesRoutes: ["172.84.0.0/20"] })];
    const text = "*nat\n-A POSTROUTING -s 100.64.0.0/10 -d 172.84.0.0/20 -j SNAT --to-source 172.84.0.1\n-A POSTROUTING -s 100.64.0.0/10 -d 172.84.1.0/24 -j SNAT --to-source 172.84.1.1\nCOMMIT\n";
    const save = parseIptablesSave(text, "x.rules");
    const input = (gateway: string | null): SnatInput => ({ file: "x.rules", gateway, rules: save.rules, nearMisses: [] });

    const ambiguous = planMigration({ profiles, snat: [input(null)] });
    expect(ambiguous.conflicts.filter((c) => c.kind.startsWith("snat")).map((c) => c.message)).toEqual([
      "its SNAT rules fit G982V and Q8QW8 equally; pass --iptables-save IDENTITY=x.rules to say whose output it is",
    ]);
    expect(ambiguous.snat).toEqual([]);

    const pinned = planMigration({ profiles, snat: [input("Q8QW8")] });
    expect(pinned.gateways.map((g) => `${g.identity} ${g.subnets[0]!.natAddress}`)).toEqual(["G982V null", "Q8QW8 172.84.0.1"]);
    expect(pinned.conflicts.filter((c) => c.kind.startsWith("snat")).map((c) => `${c.kind} ${c.at}`)).toEqual(["snat-partial x.rules:3"]);

    const unknown = planMigration({ profiles, snat: [input("Z0Z0Z")] });
    expect(kinds(unknown)).toContain("error snat-unknown-gateway");
  });

  test("the plan does not depend on the order profiles come in", async () => {
    const profiles = await load("fleet", "guide/gateway/../../fleet-clean/M5T3K.profile");
    const reference = JSON.stringify(planMigration({ profiles }));
    fc.assert(
      fc.property(fc.shuffledSubarray(profiles, { minLength: profiles.length, maxLength: profiles.length }), (shuffled) => {
        expect(JSON.stringify(planMigration({ profiles: shuffled }))).toBe(reference);
      }),
      { numRuns: 30 },
    );
  });

  test("oracle: on random fleets every requested subnet lands in exactly one policy or one error", () => {
    const universe = ["10.0.0.0/8", "10.0.0.0/16", "10.1.0.0/16", "10.0.0.0/24", "10.0.1.0/24", "10.1.2.0/24", "192.168.0.0/16", "192.168.1.0/24"];
    const gatewayIds = ["G0000", "G1111", "G2222"];
    const fleet = fc.record({
      provides: fc.tuple(...gatewayIds.map(() => fc.uniqueArray(fc.constantFrom(...universe), { maxLength: 3 }))),
      clients: fc.array(
        fc.dictionary(fc.constantFrom(...gatewayIds, "X9X9X"), fc.uniqueArray(fc.constantFrom(...universe), { minLength: 1, maxLength: 3 }), { maxKeys: 3 }),
        { minLength: 1, maxLength: 3 },
      ),
    });
    fc.assert(
      fc.property(fleet, ({ provides, clients }) => {
        const profiles = [
          ...gatewayIds.map((id, i) => mk(id, { ProvidesRoutes: provides[i] })),
          ...clients.map((routes, i) => mk(`C000${i}`, { AvailableRoutes: routes })),
        ];
        const plan = planMigration({ profiles });
        const provided = new Map(gatewayIds.map((id, i) => [id, provides[i]!.map((p) => parsePrefix(p))]));
        clients.forEach((routes, i) => {
          const client = `C000${i}`;
          for (const [gw, subnets] of Object.entries(routes)) {
            const policy = plan.policies.find((p) => p.client === client && p.gateway === gw);
            for (const s of subnets) {
              const p = parsePrefix(s);
              const gwPrefixes = provided.get(gw);
              const inPolicy = policy?.subnets.some((x) => x.text === s) ?? false;
              const errors = plan.conflicts.filter(
                (c) =>
                  c.severity === "error" &&
                  c.identities[0] === client &&
                  c.identities[1] === gw &&
                  // Subnet conflicts lead with the requested subnet; gateway-level ones list them all.
                  (c.prefixes[0] === s || ((c.kind === "unknown-gateway" || c.kind === "not-a-gateway") && c.prefixes.includes(s))),
              );
              const oughtToPass = gwPrefixes !== undefined && gwPrefixes.some((g) => prefixCovers(g, p));
              expect(inPolicy).toBe(oughtToPass);
              expect(errors.length).toBe(oughtToPass ? 0 : 1);
              if (!oughtToPass) {
                const kind =
                  gwPrefixes === undefined
                    ? "unknown-gateway"
                    : gwPrefixes.length === 0
                      ? "not-a-gateway"
                      : gwPrefixes.some((g) => prefixesOverlap(g, p))
                        ? "subnet-partly-provided"
                        : "subnet-not-provided";
                expect(errors[0]!.kind).toBe(kind);
              }
            }
          }
        });
        // Failover warnings: exactly the overlapping pairs of subnets of different gateways.
        let pairs = 0;
        for (let a = 0; a < gatewayIds.length; a++)
          for (let b = a + 1; b < gatewayIds.length; b++)
            for (const pa of provided.get(gatewayIds[a]!)!) for (const pb of provided.get(gatewayIds[b]!)!) if (prefixesOverlap(pa, pb)) pairs++;
        expect(plan.conflicts.filter((c) => c.kind === "failover-candidates")).toHaveLength(pairs);
        expect(plan.errors).toBe(plan.conflicts.filter((c) => c.severity === "error").length);
      }),
      { numRuns: 200 },
    );
  });
});

describe("planMigration: addresses", () => {
  test("two profiles with one VirtualAddress is an error", () => {
    const a = parseProfile('{"Identity": {"Certificate": {"SubjectDistinguishedName": "A0000"}}, "VirtualAddress": "100.64.1.1"}', "a.profile");
    const b = parseProfile('{"Identity": {"Certificate": {"SubjectDistinguishedName": "B0000"}},\n "VirtualAddress": "100.64.1.1"}', "b.profile");
    const plan = planMigration({
      profiles: [
        { doc: a, identity: "A0000", sources: ["certificate"] },
        { doc: b, identity: "B0000", sources: ["certificate"] },
      ],
    });
    expect(plan.conflicts.map((c) => [c.kind, c.at, c.message])).toEqual([
      ["duplicate-virtual-address", "b.profile:2:20", "A0000 (a.profile) and B0000 (b.profile) both have VirtualAddress 100.64.1.1"],
    ]);
  });
});
