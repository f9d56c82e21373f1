/**
 * @module test/policy/compile.property.test
 * The compiler against its oracle, on random small policy states (fixed seeds):
 * 1. the compiled NetMaps, read as agent and gateway would, let through exactly the packets
 *    evaluate.ts's brute-force `decide` allows, through exactly the same gateways;
 * 2. monotonicity: adding a deny or removing a grant never widens access;
 * 3. determinism: equal states (fresh objects, shuffled lists) give byte-equal NetMaps, and
 *    every NetMap passes its wire schema.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { compileAll } from "../../core/policy/compile.ts";
import { decide } from "../../core/policy/evaluate.ts";
import { actionOf, checkIntegrity, type PolicyState } from "../../core/policy/model.ts";
import * as v from "valibot";
import { NetMapSchema, netMapJson } from "../../core/policy/netmap.ts";
import {
  allowedCompiled,
  compiledVerdict,
  directPolicyArb,
  gatewayPolicyArb,
  INSTANTS,
  overlayStateArb,
  packetsFor,
  shuffled,
  stateArb,
  type Packet,
} from "./arbitrary.ts";

const nowArb = fc.constantFrom(...INSTANTS);

function oracleAllows(state: PolicyState, p: Packet, now: number): boolean {
  return decide(state, p.sender, p.destination, p.protocol, p.port, now).allowed;
}

describe("compile agrees with the brute-force oracle", () => {
  test("every packet: same verdict, same path, same gateways", () => {
    let allowedSeen = 0;
    let gatewaySeen = 0;
    let directSeen = 0;
    fc.assert(
      fc.property(stateArb, nowArb, (state, now) => {
        checkIntegrity(state);
        const maps = compileAll(state, { now });
        for (const p of packetsFor(state)) {
          const d = decide(state, p.sender, p.destination, p.protocol, p.port, now);
          const c = compiledVerdict(maps, p);
          const context = () => JSON.stringify({ packet: p, decision: { ...d, findings: undefined }, compiled: c });
          if (c.direct !== (d.path === "direct")) throw new Error(`direct mismatch: ${context()}`);
          const expected = d.path === "gateway" ? d.gateways : [];
          if (JSON.stringify(c.gateways) !== JSON.stringify(expected)) throw new Error(`gateway mismatch: ${context()}`);
          if (d.allowed) allowedSeen++;
          if (d.path === "gateway") gatewaySeen++;
          if (d.path === "direct") directSeen++;
        }
      }),
      { seed: 20240101, numRuns: 150 },
    );
    // The generator must actually exercise both paths, or the agreement says little.
    expect(allowedSeen).toBeGreaterThan(1000);
    expect(gatewaySeen).toBeGreaterThan(300);
    expect(directSeen).toBeGreaterThan(300);
  });
});

describe("gateways serving subnets that contain the overlay", () => {
  test("with gateway allows and (filtered) denies on them, every packet agrees with the oracle", () => {
    let overlayDirectAllowed = 0;
    let gatewayDenied = 0;
    fc.assert(
      fc.property(overlayStateArb, nowArb, (state, now) => {
        checkIntegrity(state);
        const maps = compileAll(state, { now });
        for (const p of packetsFor(state)) {
          const d = decide(state, p.sender, p.destination, p.protocol, p.port, now);
          const c = compiledVerdict(maps, p);
          const context = () => JSON.stringify({ packet: p, decision: { ...d, findings: undefined }, compiled: c });
          if (c.direct !== (d.path === "direct")) throw new Error(`direct mismatch: ${context()}`);
          const expected = d.path === "gateway" ? d.gateways : [];
          if (JSON.stringify(c.gateways) !== JSON.stringify(expected)) throw new Error(`gateway mismatch: ${context()}`);
          if (d.path === "direct" && p.destination.startsWith("100.64.0.")) overlayDirectAllowed++;
          if (!d.allowed && d.policy?.startsWith("x")) gatewayDenied++;
        }
      }),
      { seed: 20240402, numRuns: 150 },
    );
    // The generator must produce both direct traffic into the overlay and gateway denies.
    expect(overlayDirectAllowed).toBeGreaterThan(400);
    expect(gatewayDenied).toBeGreaterThan(60);
  });
});

/** Narrowing changes: each removes a grant or adds a deny. */
const narrowingArb = (state: PolicyState): fc.Arbitrary<{ name: string; next: PolicyState }> => {
  const n = state.systems.length;
  const options: fc.Arbitrary<{ name: string; next: PolicyState }>[] = [
    directPolicyArb("new-deny-d", "deny").map((p) => ({
      name: "add direct deny",
      next: { ...state, directAccessPolicies: [...state.directAccessPolicies, p] },
    })),
    gatewayPolicyArb("new-deny-g", state.systems, "deny").map((p) => ({
      name: "add gateway deny",
      next: { ...state, gatewayAccessPolicies: [...state.gatewayAccessPolicies, p] },
    })),
    fc.nat().map((i) => {
      const s = state.systems[i % n]!;
      return {
        name: "disable a system",
        next: { ...state, systems: state.systems.map((x) => (x === s ? { ...x, enabled: false } : x)) },
      };
    }),
    fc.nat().map((i) => {
      const s = state.systems[i % n]!;
      return {
        name: "revoke gateway permission",
        next: { ...state, systems: state.systems.map((x) => (x === s ? { ...x, allowedAsGateway: false } : x)) },
      };
    }),
    fc.tuple(fc.nat(), fc.nat()).map(([i, j]) => {
      const s = state.systems[i % n]!;
      const subnets = s.gatewaySubnets.filter((_, k) => k !== j % Math.max(1, s.gatewaySubnets.length));
      return {
        name: "remove a served subnet",
        next: { ...state, systems: state.systems.map((x) => (x === s ? { ...x, gatewaySubnets: subnets } : x)) },
      };
    }),
  ];
  const allowsD = state.directAccessPolicies.filter((p) => actionOf(p) === "allow");
  const allowsG = state.gatewayAccessPolicies.filter((p) => actionOf(p) === "allow");
  if (allowsD.length > 0) {
    options.push(
      fc.tuple(fc.nat(), fc.nat(), fc.constantFrom("remove", "disable", "from-tag", "to-tag", "acl")).map(([i, j, how]) => {
        const p = allowsD[i % allowsD.length]!;
        const drop = <T,>(xs: T[]) => (xs.length > 1 ? xs.filter((_, k) => k !== j % xs.length) : xs);
        const replaced =
          how === "remove"
            ? null
            : how === "disable"
              ? { ...p, enabled: false }
              : how === "from-tag"
                ? { ...p, fromTags: drop(p.fromTags) }
                : how === "to-tag"
                  ? { ...p, toTags: drop(p.toTags) }
                  : { ...p, acls: drop(p.acls) };
        const list = state.directAccessPolicies.flatMap((x) => (x === p ? (replaced === null ? [] : [replaced]) : [x]));
        return { name: `direct allow: ${how}`, next: { ...state, directAccessPolicies: list } };
      }),
    );
  }
  if (allowsG.length > 0) {
    options.push(
      fc
        .tuple(fc.nat(), fc.nat(), fc.constantFrom("remove", "disable", "sender-tag", "subnet", "gateway", "filter", "trust"))
        .map(([i, j, how]) => {
          const p = allowsG[i % allowsG.length]!;
          const drop = <T,>(xs: T[]) => (xs.length > 1 ? xs.filter((_, k) => k !== j % xs.length) : xs);
          let replaced: typeof p | null;
          switch (how) {
            case "remove":
              replaced = null;
              break;
            case "disable":
              replaced = { ...p, enabled: false };
              break;
            case "sender-tag":
              replaced = { ...p, senderTags: drop(p.senderTags) };
              break;
            case "subnet":
              replaced = { ...p, gateways: p.gateways.map((g, k) => (k === j % p.gateways.length ? { ...g, subnets: drop(g.subnets) } : g)) };
              break;
            case "gateway":
              replaced = { ...p, gateways: drop(p.gateways) };
              break;
            case "filter":
              replaced = {
                ...p,
                subnetFilter: p.subnetFilter === undefined ? [{ destination: "10.0.1.0/24", protocol: "tcp" }] : drop(p.subnetFilter),
              };
              break;
            default:
              replaced = { ...p, trust: { ...p.trust, publicIpWithin: ["203.0.113.0/25"] } };
          }
          const list = state.gatewayAccessPolicies.flatMap((x) => (x === p ? (replaced === null ? [] : [replaced]) : [x]));
          return { name: `gateway allow: ${how}`, next: { ...state, gatewayAccessPolicies: list } };
        }),
    );
  }
  return fc.oneof(...options);
};

describe("monotonicity", () => {
  test("adding a deny or removing a grant never widens access (compiled and oracle)", () => {
    let narrowed = 0;
    fc.assert(
      fc.property(
        stateArb.chain((state) => fc.tuple(fc.constant(state), narrowingArb(state), nowArb)),
        ([state, change, now]) => {
          checkIntegrity(change.next);
          const before = compileAll(state, { now });
          const after = compileAll(change.next, { now });
          for (const p of packetsFor(state)) {
            const wasAllowed = allowedCompiled(before, p);
            const isAllowed = allowedCompiled(after, p);
            if (isAllowed && !wasAllowed) throw new Error(`${change.name} widened access: ${JSON.stringify(p)}`);
            if (oracleAllows(change.next, p, now) && !oracleAllows(state, p, now)) {
              throw new Error(`${change.name} widened the oracle: ${JSON.stringify(p)}`);
            }
            if (wasAllowed && !isAllowed) narrowed++;
          }
        },
      ),
      { seed: 7, numRuns: 150 },
    );
    expect(narrowed).toBeGreaterThan(100);
  });
});

describe("determinism", () => {
  test("fresh objects and shuffled lists give byte-equal NetMaps", () => {
    fc.assert(
      fc.property(stateArb, nowArb, fc.array(fc.nat(), { minLength: 1, maxLength: 8 }), (state, now, order) => {
        const clone: PolicyState = structuredClone(state);
        const reordered: PolicyState = {
          ...clone,
          systems: shuffled(clone.systems, order).map((s) => ({
            ...s,
            tags: shuffled(s.tags, order),
            gatewaySubnets: shuffled(s.gatewaySubnets, order),
          })),
          directAccessPolicies: shuffled(clone.directAccessPolicies, order).map((p) => ({ ...p, acls: shuffled(p.acls, order) })),
          gatewayAccessPolicies: shuffled(clone.gatewayAccessPolicies, order),
        };
        const a = compileAll(state, { now });
        const b = compileAll(reordered, { now });
        for (const s of state.systems) {
          expect(netMapJson(b.get(s.id)!)).toBe(netMapJson(a.get(s.id)!));
          expect(v.is(NetMapSchema, a.get(s.id))).toBe(true);
        }
      }),
      { seed: 99, numRuns: 100 },
    );
  });
});
