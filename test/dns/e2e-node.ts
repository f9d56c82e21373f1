/**
 * @module test/dns/e2e-node
 * The processes test/e2e/dns-e2e.test.ts runs inside its namespaces (one per role, started with
 * `ip netns exec NS bun test/dns/e2e-node.ts ROLE JSON`):
 * - gateway: the forwarder on its tunnel-side address, upstreams from a resolv.conf file and a
 *   hosts file (temp files the test wrote), policy from NetMap-like gatewayRules;
 * - stub: the client stub on 127.0.0.1:53, forwarding to the gateway's forwarder over UDP (the
 *   lead later swaps this transport for the tunnel);
 * - query: a small DNS client (no `dig` here): one JSON line per query, then exit.
 * Servers print `ready` once listening and run until killed.
 */
import { readFileSync } from "node:fs";
import { decodeMessage, encodeMessage, makeQuery, rcodeName, TYPE } from "../../core/dns/codec.ts";
import { parseHosts, parseResolvConf } from "../../core/dns/config.ts";
import { createGatewayForwarder, policyFromNetMap } from "../../core/dns/forwarder.ts";
import { createStub, type StubPeer } from "../../core/dns/stub.ts";
import type { Logger } from "../../core/log.ts";
import { formatAddress } from "../../core/net/address.ts";
import type { NetMapGatewayRule } from "../../core/policy/netmap.ts";
import { createExchange, startDnsServer, tcpQuery } from "../../platform/linux/dns.ts";

const stderrLogger: Logger = {
  debug: (m) => console.error(m),
  info: (m) => console.error(m),
  warn: (m) => console.error(m),
  error: (m) => console.error(m),
};

export interface GatewayConfig {
  listen: string;
  resolvConfPath: string;
  hostsPath: string;
  gatewayRules: NetMapGatewayRule[];
}

export interface StubConfig {
  listen: string;
  gateway: string;
  peers: StubPeer[];
}

export interface QueryConfig {
  server: string;
  queries: { name: string; type: "A" | "AAAA"; tcp?: boolean }[];
}

export interface QueryResult {
  name: string;
  type: string;
  rcode: string;
  answers: string[];
  tc: boolean;
}

const [role, json] = process.argv.slice(2);
const config = JSON.parse(json ?? "{}");

if (role === "gateway") {
  const c = config as GatewayConfig;
  const resolv = parseResolvConf(readFileSync(c.resolvConfPath, "utf8"));
  const forwarder = createGatewayForwarder({
    upstreams: resolv.nameservers,
    hosts: parseHosts(readFileSync(c.hostsPath, "utf8")),
    policy: policyFromNetMap({ gatewayRules: c.gatewayRules }),
    resolve: createExchange({ timeoutMs: 2000, logger: stderrLogger }),
    logger: stderrLogger,
  });
  await startDnsServer({ listen: [{ address: c.listen, port: 53 }], handler: forwarder.handle, logger: stderrLogger });
  console.log("ready");
} else if (role === "stub") {
  const c = config as StubConfig;
  const exchange = createExchange({ timeoutMs: 2000, logger: stderrLogger });
  const stub = createStub({ peers: () => c.peers, forward: (query) => exchange(query, c.gateway), logger: stderrLogger });
  await startDnsServer({ listen: [{ address: c.listen, port: 53 }], handler: stub.handle, logger: stderrLogger });
  console.log("ready");
} else if (role === "query") {
  const c = config as QueryConfig;
  const exchange = createExchange({ timeoutMs: 3000 });
  let id = 100;
  for (const q of c.queries) {
    const query = encodeMessage(makeQuery(id++, q.name, TYPE[q.type]));
    const reply = decodeMessage(q.tcp ? await tcpQuery(query, c.server, 3000) : await exchange(query, c.server));
    const result: QueryResult = {
      name: q.name,
      type: q.type,
      rcode: rcodeName(reply.rcode),
      answers: reply.answers.map((r) => (r.data.kind === "address" ? formatAddress(r.data.address) : r.data.kind === "name" ? r.data.name : r.data.kind)),
      tc: reply.tc,
    };
    console.log(JSON.stringify(result));
  }
  process.exit(0);
} else {
  console.error(`usage: e2e-node.ts gateway|stub|query JSON`);
  process.exit(2);
}
