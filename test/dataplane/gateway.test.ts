/**
 * @module test/dataplane/gateway
 * End to end over the in-memory Tun/Bind pair: a client Device and a gateway Device with
 * setGateway, the "printer" 172.26.0.250 on the gateway's LAN played by packets written into the
 * gateway's TUN. The client's ICMP and TCP reach the printer and the printer's answers come back;
 * the printer can never initiate; grants are exact (host and port), do not leak, and cannot be
 * widened from the client side; ICMP errors, fragments, the flow cap, the gateway's own
 * addresses (the virtual one left to the inbound ACLs), revocation on a new config, and
 * setGateway(null).
 */
import { describe, expect, test } from "bun:test";
import { Device, type PeerConfig } from "../../core/dataplane/device.ts";
import type { GatewayConfig } from "../../core/dataplane/gateway.ts";
import { GatewayConfigError } from "../../core/dataplane/filter.ts";
import { silentLogger } from "../../core/log.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { encodeKey, generatePrivateKey, publicKeyFrom } from "../../core/wire/keys.ts";
import { fakeClock, seededRandom } from "../wire/helpers.ts";
import { MemoryNetwork, MemoryTun } from "./memory.ts";
import { ACK, FIN, SYN, icmpError, ipPacket } from "./packets.ts";

const CLIENT = "100.64.0.2";
const GW = "100.64.0.1";
const PRINTER = "172.26.0.250";

function rig(options: { gateway?: Partial<GatewayConfig> | null; clientAllowedIps?: string[]; gatewayAllowsClient?: string[] } = {}) {
  const crypto = nobleCrypto();
  const clock = fakeClock();
  const random = seededRandom(17);
  const net = new MemoryNetwork();
  const make = (address: string) => {
    const privateKey = generatePrivateKey(random);
    const endpoint = { address, port: 51820 };
    const tun = new MemoryTun();
    const logs: string[] = [];
    const device = new Device({
      privateKey,
      crypto,
      now: clock.now,
      random,
      logger: { ...silentLogger, info: (m: string) => logs.push(m) },
      tun,
      bind: net.bind(endpoint),
    });
    net.attach(endpoint, device);
    return { device, tun, endpoint, logs, publicKey: encodeKey(publicKeyFrom(crypto, privateKey)) };
  };
  const client = make("192.0.2.10");
  const gateway = make("192.0.2.1");
  const clientPeers: PeerConfig[] = [
    { publicKey: gateway.publicKey, allowedIps: options.clientAllowedIps ?? [`${GW}/32`, "172.26.0.0/20"], endpoint: gateway.endpoint },
  ];
  client.device.setPeers(clientPeers);
  gateway.device.setPeers([{ publicKey: client.publicKey, allowedIps: options.gatewayAllowsClient ?? [`${CLIENT}/32`] }]);
  const config: GatewayConfig = {
    senders: [
      {
        peerPublicKey: client.publicKey,
        virtualAddresses: [CLIENT],
        allow: [
          { destination: PRINTER, protocol: "tcp", ports: "80" },
          { destination: PRINTER, protocol: "icmp" },
          { destination: "172.26.0.53", protocol: "udp", ports: "53" },
        ],
      },
    ],
    localAddresses: [GW, "172.26.0.1"],
    overlayNetwork: "100.64.0.0/10",
    ...options.gateway,
  };
  if (options.gateway !== null) gateway.device.setGateway(config);
  /** The client sends `p` into the tunnel; returns what reached the gateway's TUN. */
  const fromClient = (p: Uint8Array) => {
    client.device.handleTunPacket(p);
    net.deliver();
    return gateway.tun.take();
  };
  /** The LAN (or the gateway host) writes `p` into the gateway's TUN; returns what the client's TUN got. */
  const fromLan = (p: Uint8Array) => {
    gateway.device.handleTunPacket(p);
    net.deliver();
    return client.tun.take();
  };
  const gwPeer = () => gateway.device.stats().peers[0]!;
  return { client, gateway, net, clock, config, fromClient, fromLan, gwPeer };
}

const syn = (dst: string, dport: number, sport = 40000) => ipPacket({ src: CLIENT, dst, proto: "tcp", sport, dport, flags: SYN });
const synAck = (src: string, sport: number, dport = 40000) => ipPacket({ src, dst: CLIENT, proto: "tcp", sport, dport, flags: SYN | ACK });

describe("client -> gateway -> printer", () => {
  test("ICMP echo and a TCP SYN reach the printer; its answers come back to the client", () => {
    const r = rig();
    const ping = ipPacket({ src: CLIENT, dst: PRINTER, proto: "icmp", icmpId: 9 });
    expect(r.fromClient(ping)).toEqual([ping]);
    const pong = ipPacket({ src: PRINTER, dst: CLIENT, proto: "icmp", icmpType: 0, icmpId: 9 });
    expect(r.fromLan(pong)).toEqual([pong]);

    expect(r.fromClient(syn(PRINTER, 80))).toEqual([syn(PRINTER, 80)]);
    expect(r.fromLan(synAck(PRINTER, 80))).toEqual([synAck(PRINTER, 80)]);
    const data = ipPacket({ src: CLIENT, dst: PRINTER, proto: "tcp", sport: 40000, dport: 80, flags: ACK, payload: new Uint8Array(100) });
    expect(r.fromClient(data)).toEqual([data]);
    expect(r.gwPeer().drops).toEqual({});
    const gs = r.gateway.device.stats().gateway!;
    expect(gs).toMatchObject({ flows: 2, maxFlows: 65_536, drops: {}, senders: 1, rules: 3 });
    expect(r.client.device.stats().gateway).toBeNull();
    expect(r.gateway.logs.some((l) => l.startsWith("device: gateway on senders=1 rules=3"))).toBe(true);
  });

  test("the printer can never initiate: an unsolicited SYN is dropped and counted", () => {
    const r = rig();
    r.fromClient(syn(PRINTER, 80)); // a session exists, so a forwarded packet would be sent at once
    r.net.take();
    expect(r.fromLan(ipPacket({ src: PRINTER, dst: CLIENT, proto: "tcp", sport: 5000, dport: 22, flags: SYN }))).toEqual([]);
    expect(r.net.log.filter((d) => d.from.address === "192.0.2.1" && d.data[0] === 4).length).toBe(0);
    // Right addresses, wrong ports: still no flow.
    expect(r.fromLan(synAck(PRINTER, 81))).toEqual([]);
    // An echo request from the LAN opens nothing either.
    expect(r.fromLan(ipPacket({ src: PRINTER, dst: CLIENT, proto: "icmp", icmpId: 9 }))).toEqual([]);
    expect(r.gwPeer().drops).toEqual({ "gateway-unsolicited": 3 });
    expect(r.gateway.device.stats().gateway!.drops).toEqual({ "gateway-unsolicited": 3 });
  });

  test("a filter allowing only 172.26.0.250:80 blocks .251 and .250:22", () => {
    const r = rig();
    expect(r.fromClient(syn(PRINTER, 80))).toHaveLength(1);
    expect(r.fromClient(syn("172.26.0.251", 80))).toEqual([]);
    expect(r.fromClient(syn(PRINTER, 22))).toEqual([]);
    expect(r.fromClient(ipPacket({ src: CLIENT, dst: PRINTER, proto: "udp", dport: 80 }))).toEqual([]);
    expect(r.gwPeer().drops).toEqual({ "gateway-no-grant": 3 });
    // The blocked SYN opened no flow: the "answer" is unsolicited.
    expect(r.fromLan(synAck("172.26.0.251", 80))).toEqual([]);
    expect(r.gwPeer().drops["gateway-unsolicited"]).toBe(1);
  });

  test("a client that adds routes or allowed IPs by hand gains nothing", () => {
    const r = rig({ clientAllowedIps: ["0.0.0.0/0"] });
    expect(r.fromClient(syn("10.99.0.5", 80))).toEqual([]);
    expect(r.fromClient(syn("172.26.0.7", 443))).toEqual([]);
    expect(r.fromClient(syn("100.64.0.9", 80))).toEqual([]); // another overlay address: no relaying
    // Spoofing a LAN source fails cryptokey routing first ...
    expect(r.fromClient(ipPacket({ src: "172.26.0.7", dst: PRINTER, proto: "tcp", dport: 80 }))).toEqual([]);
    expect(r.gwPeer().drops).toEqual({ "gateway-no-grant": 3, "source-not-allowed": 1 });
  });

  test("... and a peer given a subnet of its own still forwards only from its virtual address", () => {
    const r = rig({ gatewayAllowsClient: [`${CLIENT}/32`, "192.168.50.0/24"] });
    expect(r.fromClient(ipPacket({ src: "192.168.50.3", dst: PRINTER, proto: "tcp", dport: 80 }))).toEqual([]);
    expect(r.gwPeer().drops).toEqual({ "gateway-source-spoofed": 1 });
  });

  test("the gateway's own addresses: its LAN address is never reached; its virtual one by its inbound ACL", () => {
    const r = rig();
    r.gateway.device.setInboundRules([{ peerPublicKey: r.client.publicKey, allow: [{ source: CLIENT, destination: GW, protocol: "icmp" }] }]);
    expect(r.fromClient(syn("172.26.0.1", 22))).toEqual([]);
    expect(r.fromClient(syn(GW, 22))).toEqual([]);
    const ping = ipPacket({ src: CLIENT, dst: GW, proto: "icmp" });
    expect(r.fromClient(ping)).toEqual([ping]);
    expect(r.gwPeer().drops).toEqual({ "gateway-local-address": 1, "acl-denied": 1 });
    // The gateway's own connection to the client gets its answer back in.
    const own = ipPacket({ src: GW, dst: CLIENT, proto: "tcp", sport: 50000, dport: 8080, flags: SYN });
    expect(r.fromLan(own)).toEqual([own]);
    const answer = ipPacket({ src: CLIENT, dst: GW, proto: "tcp", sport: 8080, dport: 50000, flags: SYN | ACK });
    expect(r.fromClient(answer)).toEqual([answer]);
    // Without inbound ACLs (null, the default), traffic to the virtual address passes as before.
    const open = rig();
    expect(open.fromClient(syn(GW, 22))).toHaveLength(1);
  });

  test("ICMP errors quoting a flow's packet come back; others are unsolicited", () => {
    const r = rig();
    const query = ipPacket({ src: CLIENT, dst: "172.26.0.53", proto: "udp", sport: 5353, dport: 53 });
    expect(r.fromClient(query)).toHaveLength(1);
    const unreachable = icmpError("172.26.0.53", CLIENT, query);
    expect(r.fromLan(unreachable)).toEqual([unreachable]);
    // From a router on the way, too (the quote is what counts).
    const fromRouter = icmpError("172.26.0.254", CLIENT, query, 11, 0);
    expect(r.fromLan(fromRouter)).toEqual([fromRouter]);
    const other = ipPacket({ src: CLIENT, dst: "172.26.0.53", proto: "udp", sport: 5354, dport: 53 });
    expect(r.fromLan(icmpError("172.26.0.53", CLIENT, other))).toEqual([]);
    expect(r.gwPeer().drops).toEqual({ "gateway-unsolicited": 1 });
  });

  test("fragments: later ones follow a first fragment that passed; strays are dropped", () => {
    const r = rig();
    const first = ipPacket({ src: CLIENT, dst: "172.26.0.53", proto: "udp", dport: 53, moreFragments: true, fragId: 77, payload: new Uint8Array(64) });
    const later = ipPacket({ src: CLIENT, dst: "172.26.0.53", proto: "udp", fragOffset: 9, fragId: 77, payload: new Uint8Array(32) });
    const stray = ipPacket({ src: CLIENT, dst: "172.26.0.53", proto: "udp", fragOffset: 9, fragId: 78, payload: new Uint8Array(32) });
    expect(r.fromClient(first)).toHaveLength(1);
    expect(r.fromClient(later)).toEqual([later]);
    expect(r.fromClient(stray)).toEqual([]);
    expect(r.gwPeer().drops).toEqual({ "gateway-fragment": 1 });
  });

  test("the flow table's cap: new flows beyond it are dropped and counted; old ones keep working", () => {
    const r = rig({ gateway: { maxFlows: 2 } });
    expect(r.fromClient(syn(PRINTER, 80, 1))).toHaveLength(1);
    expect(r.fromClient(syn(PRINTER, 80, 2))).toHaveLength(1);
    expect(r.fromClient(syn(PRINTER, 80, 3))).toEqual([]);
    expect(r.gwPeer().drops).toEqual({ "flow-table-full": 1 });
    expect(r.fromLan(synAck(PRINTER, 80, 2))).toHaveLength(1);
    // Unanswered flows expire (30 s); the tick's sweep frees room.
    r.clock.advance(31_000);
    r.gateway.device.tick();
    expect(r.fromClient(syn(PRINTER, 80, 3))).toHaveLength(1);
  });

  test("a new config revokes flows its rules no longer allow; setGateway(null) turns it all off", () => {
    const r = rig();
    r.fromClient(syn(PRINTER, 80));
    r.fromClient(ipPacket({ src: CLIENT, dst: PRINTER, proto: "icmp", icmpId: 3 }));
    const icmpOnly = { ...r.config, senders: [{ ...r.config.senders[0]!, allow: [{ destination: PRINTER, protocol: "icmp" as const }] }] };
    r.gateway.device.setGateway(icmpOnly);
    expect(r.gateway.logs.at(-1)).toContain("flows_revoked=1");
    expect(r.fromLan(synAck(PRINTER, 80))).toEqual([]);
    expect(r.fromLan(ipPacket({ src: PRINTER, dst: CLIENT, proto: "icmp", icmpType: 0, icmpId: 3 }))).toHaveLength(1);
    // Same config again: nothing changes.
    r.gateway.device.setGateway(icmpOnly);
    expect(r.gateway.logs.at(-1)).toContain("flows_revoked=0");
    // Bad config: rejected, the old one stays.
    expect(() => r.gateway.device.setGateway({ ...icmpOnly, overlayNetwork: "100.64.0.1/10" })).toThrow(GatewayConfigError);
    expect(r.fromClient(syn(PRINTER, 80))).toEqual([]);
    r.gateway.device.setGateway(null);
    expect(r.gateway.device.stats().gateway).toBeNull();
    const unsolicited = ipPacket({ src: PRINTER, dst: CLIENT, proto: "tcp", sport: 5000, dport: 22, flags: SYN });
    expect(r.fromLan(unsolicited)).toEqual([unsolicited]);
    expect(r.fromClient(syn("172.26.0.251", 80))).toHaveLength(1);
  });

  test("a peer without a sender entry forwards nothing, and TCP close shortens the flow", () => {
    const r = rig({ gateway: { senders: [] } });
    expect(r.fromClient(syn(PRINTER, 80))).toEqual([]);
    expect(r.gwPeer().drops).toEqual({ "gateway-no-grant": 1 });
    const t = rig();
    t.fromClient(syn(PRINTER, 80));
    t.fromLan(synAck(PRINTER, 80));
    t.fromClient(ipPacket({ src: CLIENT, dst: PRINTER, proto: "tcp", sport: 40000, dport: 80, flags: FIN | ACK }));
    t.clock.advance(61_000);
    expect(t.fromLan(ipPacket({ src: PRINTER, dst: CLIENT, proto: "tcp", sport: 80, dport: 40000, flags: FIN | ACK }))).toEqual([]);
  });
});
