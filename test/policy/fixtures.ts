/**
 * @module test/policy/fixtures
 * A small, readable office network for the targeted tests: a laptop (tag dev), a database
 * server (tag db), the office gateway G982V serving 172.26.0.0/20 and 10.9.0.0/16, and a
 * second gateway GW002 also serving 172.26.0.0/20 (failover).
 */
import type { GatewayAccessPolicy, PolicyState, System } from "../../core/policy/model.ts";
import { keyFor } from "./arbitrary.ts";

export const MONDAY_10 = Date.UTC(2024, 0, 1, 10, 0);
export const SATURDAY_10 = Date.UTC(2024, 0, 6, 10, 0);

export function system(id: string, n: number, patch: Partial<System> = {}): System {
  return {
    id,
    name: `${id.toLowerCase()} box`,
    publicKey: keyFor(n),
    virtualAddress: `100.64.0.${n}`,
    tags: [],
    approved: true,
    enabled: true,
    allowedAsGateway: false,
    gatewaySubnets: [],
    ...patch,
  };
}

export function office(extra: { gatewayPolicies?: GatewayAccessPolicy[] } = {}): PolicyState {
  return {
    network: "100.64.0.0/10",
    systems: [
      system("LAPT1", 1, { tags: ["dev"], publicIp: "203.0.113.9", endpoint: "203.0.113.9:41000" }),
      system("DBSRV", 2, { tags: ["db"] }),
      system("G982V", 3, {
        tags: ["gw"],
        allowedAsGateway: true,
        gatewaySubnets: [
          { prefix: "172.26.0.0/20", nat: true, source: "discovered" },
          { prefix: "10.9.0.0/16", nat: false, source: "manual", priority: 50 },
        ],
      }),
      system("GW002", 4, {
        tags: ["gw"],
        allowedAsGateway: true,
        gatewaySubnets: [{ prefix: "172.26.0.0/20", nat: true, source: "discovered", priority: 200, draining: true }],
      }),
    ],
    directAccessPolicies: [
      { id: "dev-db", name: "developers to databases", enabled: true, fromTags: ["dev"], toTags: ["db"], acls: [{ protocol: "tcp", ports: "5432" }] },
    ],
    gatewayAccessPolicies: extra.gatewayPolicies ?? [
      {
        id: "office-lan",
        name: "office LAN",
        enabled: true,
        senderTags: ["dev"],
        gateways: [{ systemId: "G982V", subnets: ["172.26.0.0/20"] }],
      },
    ],
  };
}
