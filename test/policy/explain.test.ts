/**
 * @module test/policy/explain.test
 * explain() names the policy, gateway and rule that allow a packet, or says why nothing does,
 * in the words an operator reads: "no policy grants tag ...", trust failures, time windows,
 * "gateway G982V does not serve ...", disabled systems, denies.
 */
import { describe, expect, test } from "bun:test";
import { explain } from "../../core/policy/evaluate.ts";
import type { GatewayAccessPolicy, PolicyState } from "../../core/policy/model.ts";
import { MONDAY_10, office, SATURDAY_10 } from "./fixtures.ts";

const now = MONDAY_10;
const gp = (patch: Partial<GatewayAccessPolicy>): GatewayAccessPolicy => ({
  id: "lan",
  name: "office LAN",
  enabled: true,
  senderTags: ["dev"],
  gateways: [{ systemId: "G982V", subnets: ["172.26.0.0/20"] }],
  ...patch,
});

describe("explain", () => {
  test("allowed through a gateway: policy, gateway and rule", () => {
    const e = explain(office(), "LAPT1", "172.26.0.250", 443, "tcp", now);
    expect(e.allowed).toBe(true);
    expect(e.decision).toMatchObject({ path: "gateway", via: "G982V", policy: "office-lan", rule: "any to 172.26.0.0/20" });
    expect(e.text.split("\n")[0]).toBe("ALLOWED LAPT1 -> 172.26.0.250 tcp/443 through gateway G982V by policy office-lan (rule any to 172.26.0.0/20)");
  });

  test("allowed directly, and the receiver cannot initiate back", () => {
    expect(explain(office(), "LAPT1", "100.64.0.2", 5432, "tcp", now).text.split("\n")[0]).toBe(
      "ALLOWED LAPT1 -> 100.64.0.2 tcp/5432 directly by policy dev-db (rule tcp/5432)",
    );
    expect(explain(office(), "LAPT1", "100.64.0.2", 22, "tcp", now).decision.reason).toBe("policy dev-db allows only tcp/5432, not tcp/22");
    expect(explain(office(), "DBSRV", "100.64.0.1", 5432, "tcp", now).decision.reason).toBe(
      "no direct access policy lets tags db reach LAPT1 (tags dev); LAPT1 may only originate traffic to DBSRV, not receive it",
    );
  });

  test("no policy grants the sender's tags", () => {
    expect(explain(office(), "DBSRV", "172.26.0.250", 443, "tcp", now).decision.reason).toBe("no gateway access policy grants tags db");
  });

  test("trust requirement: public IP", () => {
    const state = office({ gatewayPolicies: [gp({ trust: { publicIpWithin: ["198.51.100.0/24"] } })] });
    const e = explain(state, "LAPT1", "172.26.0.250", 443, "tcp", now);
    expect(e.allowed).toBe(false);
    expect(e.decision.reason).toBe("trust requirement: public IP 203.0.113.9 not within 198.51.100.0/24");
    expect(e.text).toContain('- lan "office LAN" (allow) [gateway G982V, subnet 172.26.0.0/20]: trust requirement');
  });

  test("outside a time window", () => {
    const state = office({
      gatewayPolicies: [gp({ trust: { timeWindows: [{ days: ["mon", "tue", "wed", "thu", "fri"], start: "08:00", end: "18:00", utcOffsetMinutes: 0 }] } })],
    });
    expect(explain(state, "LAPT1", "172.26.0.250", 443, "tcp", SATURDAY_10).decision.reason).toBe("outside time window mon-fri 08:00-18:00");
    expect(explain(state, "LAPT1", "172.26.0.250", 443, "tcp", MONDAY_10).allowed).toBe(true);
  });

  test("the gateway does not serve the subnet the policy names", () => {
    const state = office({ gatewayPolicies: [gp({ gateways: [{ systemId: "G982V", subnets: ["10.8.0.0/16"] }] })] });
    expect(explain(state, "LAPT1", "10.8.0.1", 80, "tcp", now).decision.reason).toBe("gateway G982V does not serve 10.8.0.0/16");
  });

  test("disabled systems, on either end", () => {
    const off = (id: string): PolicyState => ({ ...office(), systems: office().systems.map((s) => (s.id === id ? { ...s, enabled: false } : s)) });
    expect(explain(off("LAPT1"), "LAPT1", "172.26.0.250", 443, "tcp", now).decision.reason).toBe("system LAPT1 is disabled");
    expect(explain(off("G982V"), "LAPT1", "172.26.0.250", 443, "tcp", now).decision.reason).toBe("gateway G982V is disabled");
    expect(explain(off("DBSRV"), "LAPT1", "100.64.0.2", 5432, "tcp", now).decision.reason).toBe("system DBSRV is disabled");
  });

  test("a deny names the policy and rule that won", () => {
    const state = office({
      gatewayPolicies: [gp({}), gp({ id: "no-ssh", name: "no ssh", action: "deny", subnetFilter: [{ destination: "172.26.0.0/24", protocol: "tcp", ports: "22" }] })],
    });
    const e = explain(state, "LAPT1", "172.26.0.9", 22, "tcp", now);
    expect(e.allowed).toBe(false);
    expect(e.decision).toMatchObject({ policy: "no-ssh", rule: "tcp/22 to 172.26.0.0/24" });
    expect(e.decision.reason).toBe("denied by policy no-ssh (tcp/22 to 172.26.0.0/24) through gateway G982V");
    expect(explain(state, "LAPT1", "172.26.0.9", 80, "tcp", now).allowed).toBe(true);
  });

  test("subnet filter mismatch and destinations nobody owns", () => {
    const state = office({ gatewayPolicies: [gp({ subnetFilter: [{ destination: "172.26.0.5", protocol: "tcp", ports: "22" }] })] });
    expect(explain(state, "LAPT1", "172.26.0.5", 80, "tcp", now).decision.reason).toBe(
      "subnet filter of policy lan (tcp/22 to 172.26.0.5) does not match tcp/80 to 172.26.0.5",
    );
    expect(explain(office(), "LAPT1", "100.64.9.9", undefined, "icmp", now).decision.reason).toBe("no system has virtual address 100.64.9.9");
    expect(explain(office(), "LAPT1", "192.168.7.7", 80, "tcp", now).decision.reason).toBe("no gateway access policy for tags dev covers 192.168.7.7");
  });
});
