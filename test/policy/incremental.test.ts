/**
 * @module test/policy/incremental.test
 * The incremental path against a full recompute: after any change (widening or narrowing, to
 * systems or policies), `recompile` reuses the old NetMap of every system outside
 * `affectedSystems` and the result is byte-equal to compiling everything from scratch.
 * Also `affectedByTime` / `nextTrustChange` for time windows.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { affectedByTime, affectedSystems, compileAll, nextTrustChange, recompile } from "../../core/policy/compile.ts";
import { checkIntegrity, type PolicyState, type System } from "../../core/policy/model.ts";
import { netMapJson } from "../../core/policy/netmap.ts";
import { directPolicyArb, gatewayPolicyArb, INSTANTS, keyFor, stateArb, SUBNETS, TAGS } from "./arbitrary.ts";

const nowArb = fc.constantFrom(...INSTANTS);

/** Any single change an admin or an agent report could make. */
const changeArb = (state: PolicyState): fc.Arbitrary<{ name: string; next: PolicyState }> => {
  const n = state.systems.length;
  const editSystem = (name: string, edit: (s: System, k: number) => System) =>
    fc.tuple(fc.nat(), fc.nat()).map(([i, k]) => {
      const target = state.systems[i % n]!;
      return { name, next: { ...state, systems: state.systems.map((s) => (s === target ? edit(s, k) : s)) } };
    });
  const options: fc.Arbitrary<{ name: string; next: PolicyState }>[] = [
    editSystem("toggle a tag", (s, k) => {
      const tag = TAGS[k % TAGS.length]!;
      return { ...s, tags: s.tags.includes(tag) ? s.tags.filter((t) => t !== tag) : [...s.tags, tag] };
    }),
    editSystem("toggle enabled", (s) => ({ ...s, enabled: !s.enabled })),
    editSystem("toggle approved", (s) => ({ ...s, approved: !s.approved })),
    editSystem("toggle gateway permission", (s) => ({ ...s, allowedAsGateway: !s.allowedAsGateway })),
    editSystem("move virtual address", (s) => ({ ...s, virtualAddress: `100.64.1.${Number(s.id.slice(1)) + 1}` })),
    editSystem("new public IP", (s, k) => ({ ...s, publicIp: k % 2 === 0 ? "203.0.113.77" : "192.0.2.1" })),
    editSystem("new endpoint", (s) => ({ ...s, endpoint: "192.0.2.9:4500" })),
    editSystem("rename", (s) => ({ ...s, name: `${s.name} renamed` })),
    editSystem("toggle a served subnet", (s, k) => {
      const prefix = SUBNETS[k % SUBNETS.length]!;
      const has = s.gatewaySubnets.some((g) => g.prefix === prefix);
      return {
        ...s,
        gatewaySubnets: has
          ? s.gatewaySubnets.filter((g) => g.prefix !== prefix)
          : [...s.gatewaySubnets, { prefix, nat: k % 3 === 0, source: "discovered" as const }],
      };
    }),
    editSystem("toggle a served subnet's health", (s) => ({
      ...s,
      gatewaySubnets: s.gatewaySubnets.map((g, j) => (j === 0 ? { ...g, healthy: g.healthy === false } : g)),
    })),
    editSystem("drain and reprioritise", (s) => ({
      ...s,
      gatewaySubnets: s.gatewaySubnets.map((g, j) => (j === 0 ? { ...g, draining: !g.draining, priority: 7 } : g)),
    })),
    fc.constant({
      name: "add a system",
      next: {
        ...state,
        systems: [
          ...state.systems,
          {
            id: "NEW01",
            name: "newcomer",
            publicKey: keyFor(200),
            virtualAddress: "100.64.2.1",
            tags: ["dev", "db"],
            approved: true,
            enabled: true,
            allowedAsGateway: true,
            gatewaySubnets: [{ prefix: "10.0.0.0/16", nat: true, source: "manual" as const }],
          },
        ],
      },
    }),
    fc.nat().map((i) => {
      const gone = state.systems[i % n]!;
      return {
        name: "remove a system",
        next: {
          ...state,
          systems: state.systems.filter((s) => s !== gone),
          gatewayAccessPolicies: state.gatewayAccessPolicies
            .map((p) => ({ ...p, gateways: p.gateways.filter((g) => g.systemId !== gone.id) }))
            .filter((p) => p.gateways.length > 0),
        },
      };
    }),
    directPolicyArb("d-new").map((p) => ({ name: "add a direct policy", next: { ...state, directAccessPolicies: [...state.directAccessPolicies, p] } })),
    gatewayPolicyArb("g-new", state.systems).map((p) => ({
      name: "add a gateway policy",
      next: { ...state, gatewayAccessPolicies: [...state.gatewayAccessPolicies, p] },
    })),
  ];
  if (state.directAccessPolicies.length > 0) {
    options.push(
      fc.tuple(fc.nat(), directPolicyArb("placeholder")).map(([i, fresh]) => {
        const old = state.directAccessPolicies[i % state.directAccessPolicies.length]!;
        return {
          name: "rewrite a direct policy",
          next: { ...state, directAccessPolicies: state.directAccessPolicies.map((p) => (p === old ? { ...fresh, id: old.id } : p)) },
        };
      }),
    );
  }
  if (state.gatewayAccessPolicies.length > 0) {
    options.push(
      fc.tuple(fc.nat(), gatewayPolicyArb("placeholder", state.systems)).map(([i, fresh]) => {
        const old = state.gatewayAccessPolicies[i % state.gatewayAccessPolicies.length]!;
        return {
          name: "rewrite a gateway policy",
          next: { ...state, gatewayAccessPolicies: state.gatewayAccessPolicies.map((p) => (p === old ? { ...fresh, id: old.id } : p)) },
        };
      }),
      fc.nat().map((i) => {
        const old = state.gatewayAccessPolicies[i % state.gatewayAccessPolicies.length]!;
        return {
          name: "remove a gateway policy",
          next: { ...state, gatewayAccessPolicies: state.gatewayAccessPolicies.filter((p) => p !== old) },
        };
      }),
    );
  }
  return fc.oneof(...options);
};

describe("incremental recompile", () => {
  test("only affected systems change, and the result equals a full recompute", () => {
    let reused = 0;
    fc.assert(
      fc.property(
        stateArb.chain((state) => fc.tuple(fc.constant(state), changeArb(state), nowArb)),
        ([state, change, now]) => {
          checkIntegrity(change.next);
          const before = compileAll(state, { now });
          const full = compileAll(change.next, { now });
          const affected = affectedSystems(state, change.next);
          for (const s of change.next.systems) {
            if (affected.has(s.id)) continue;
            const old = before.get(s.id);
            if (old === undefined || netMapJson(old) !== netMapJson(full.get(s.id)!)) {
              throw new Error(`${change.name}: ${s.id} changed but is not in affectedSystems`);
            }
          }
          const { netmaps, recompiled } = recompile(before, state, change.next, { now });
          expect([...netmaps.keys()]).toEqual([...full.keys()]);
          for (const [id, map] of full) expect(netMapJson(netmaps.get(id)!)).toBe(netMapJson(map));
          reused += change.next.systems.length - recompiled.length;
        },
      ),
      { seed: 1234, numRuns: 1000 },
    );
    expect(reused).toBeGreaterThan(50);
  });

  test("an unchanged state affects nobody; a new network affects everyone", () => {
    fc.assert(
      fc.property(stateArb, (state) => {
        expect(affectedSystems(state, structuredClone(state)).size).toBe(0);
        const moved = { ...state, network: "100.64.0.0/9" };
        expect(affectedSystems(state, moved).size).toBe(state.systems.length);
      }),
      { seed: 5, numRuns: 30 },
    );
  });

  test("time: affectedByTime covers every NetMap a window change alters; nextTrustChange finds the boundary", () => {
    fc.assert(
      fc.property(stateArb, fc.constantFrom(...INSTANTS), fc.constantFrom(...INSTANTS), (state, then, now) => {
        const before = compileAll(state, { now: then });
        const after = compileAll(state, { now });
        const affected = affectedByTime(state, then, now);
        for (const [id, map] of after) {
          if (!affected.has(id)) expect(netMapJson(map)).toBe(netMapJson(before.get(id)!));
        }
        const next = nextTrustChange(state, then);
        if (next !== null) {
          expect(next).toBeGreaterThan(then);
          // Nothing changes strictly before the boundary.
          expect(affectedByTime(state, then, next - 1).size).toBe(0);
        }
      }),
      { seed: 77, numRuns: 100 },
    );
  });
});
