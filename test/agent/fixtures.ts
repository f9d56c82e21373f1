/**
 * @module test/agent/fixtures
 * NetMaps for the agent tests, built by hand in the shape core/policy/netmap.ts defines: a
 * client (ABC12) with a gateway peer (GW001, serving 192.168.50.0/24) and a plain peer (PEER2),
 * and that client's enrolled identity.
 */
import type { Enrolment, Identity } from "../../core/agent/state.ts";
import type { NetMap, NetMapPeer } from "../../core/policy/netmap.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { encodeKey, generatePrivateKey, publicKeyFrom } from "../../core/wire/keys.ts";

const crypto = nobleCrypto();

export function keyPair(seed: number): { privateKey: string; publicKey: string } {
  const sk = generatePrivateKey((n) => new Uint8Array(n).fill(seed));
  return { privateKey: encodeKey(sk), publicKey: encodeKey(publicKeyFrom(crypto, sk)) };
}

export const SELF = keyPair(1);
export const GW = keyPair(2);
export const PEER2 = keyPair(3);
export const SERVER = keyPair(9);

export function gatewayPeer(overrides: Partial<NetMapPeer> = {}): NetMapPeer {
  return {
    id: "GW001",
    name: "router",
    publicKey: GW.publicKey,
    endpoint: "10.0.0.1:51820",
    virtualAddress: "100.64.0.1",
    allowedIps: ["100.64.0.1/32", "192.168.50.0/24"],
    gatewayFor: ["192.168.50.0/24"],
    dnsNames: ["router.waygate"],
    ...overrides,
  };
}

export function plainPeer(overrides: Partial<NetMapPeer> = {}): NetMapPeer {
  return {
    id: "PEER2",
    name: "desk",
    publicKey: PEER2.publicKey,
    endpoint: "[fd00::3]:51820",
    virtualAddress: "100.64.0.3",
    allowedIps: ["100.64.0.3/32"],
    gatewayFor: [],
    dnsNames: ["desk.waygate"],
    ...overrides,
  };
}

export function sampleNetMap(peers: NetMapPeer[] = [gatewayPeer(), plainPeer()]): NetMap {
  const gw = peers.find((p) => p.id === "GW001");
  return {
    version: 1,
    self: { id: "ABC12", name: "laptop", virtualAddress: "100.64.0.2", network: "100.64.0.0/10", active: true },
    peers,
    routes: gw ? gw.gatewayFor.map((prefix) => ({ prefix, via: "GW001", priority: 100, draining: false, withdrawn: false, metricHint: 100 })) : [],
    inboundRules: [],
    outboundRules: [
      ...(gw ? [{ action: "allow" as const, peer: "GW001", src: "100.64.0.2/32", dst: "192.168.50.0/24", protocol: "tcp" as const, ports: "22", policy: "lan-ssh" }] : []),
      { action: "allow" as const, peer: "PEER2", src: "100.64.0.2/32", dst: "100.64.0.3/32", protocol: "any" as const, policy: "desk" },
    ],
    gatewayRules: [],
  };
}

/** The client's enrolled identity (state.ts identity.json), keys from SELF, server key SERVER. */
export const ENROLLED_IDENTITY: Identity & { enrolment: Enrolment } = {
  version: 1,
  privateKey: SELF.privateKey,
  publicKey: SELF.publicKey,
  createdAt: 1,
  enrolment: {
    serverUrl: "http://10.0.0.1:7070",
    serverPublicKey: SERVER.publicKey,
    systemId: "ABC12",
    virtualAddress: "100.64.0.2",
    network: "100.64.0.0/10",
    tags: ["laptops"],
    approved: true,
    hostname: "laptop",
    enrolledAt: 2,
  },
};
