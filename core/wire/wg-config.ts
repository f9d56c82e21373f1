/**
 * @module core/wire/wg-config
 * A parser for wg-quick style configuration files: [Interface] PrivateKey, Address, ListenPort,
 * MTU, DNS (and wg-quick's Table, FwMark, SaveConfig, Pre/PostUp/Down kept verbatim), [Peer]
 * PublicKey, PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive. Keys are case-insensitive,
 * `#` starts a comment, list keys may repeat and take comma-separated values, endpoints are
 * host:port or [v6]:port. Values are validated with valibot; every error names file, line and key.
 */
import * as v from "valibot";
import { WaygateError } from "../errors.ts";
import { parseAddress, parsePrefix } from "../net/address.ts";
import { decodeKey } from "./keys.ts";
import type { PeerConfig } from "../dataplane/device.ts";

export class WgConfigError extends WaygateError {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly key: string | null,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super("E_CONFIG_INVALID", `${file}:${line}: ${key === null ? "" : `${key}: `}${reason}`, options);
  }
}

export interface WgEndpoint {
  /** An IP address (canonical text) or a host name still to resolve. */
  host: string;
  port: number;
}

export interface WgInterface {
  privateKey: string;
  /** Interface addresses with their prefix length, host bits kept ("10.0.0.1/24"). */
  addresses: string[];
  listenPort?: number;
  mtu?: number;
  /** DNS servers (IP addresses) and search domains, in file order. */
  dns: string[];
  /** wg-quick keys this parser does not interpret (Table, PostUp, ...), by canonical name. */
  extra: Record<string, string[]>;
}

export interface WgPeer {
  publicKey: string;
  presharedKey?: string;
  /** Canonical prefixes, host bits masked as wg does. */
  allowedIps: string[];
  endpoint?: WgEndpoint;
  /** Seconds; absent when off. */
  persistentKeepalive?: number;
  /** Line of the [Peer] header, for messages. */
  line: number;
}

export interface WgConfig {
  interface: WgInterface;
  peers: WgPeer[];
}

const INTERFACE_KEYS = {
  privatekey: "PrivateKey",
  address: "Address",
  listenport: "ListenPort",
  mtu: "MTU",
  dns: "DNS",
  table: "Table",
  fwmark: "FwMark",
  saveconfig: "SaveConfig",
  preup: "PreUp",
  postup: "PostUp",
  predown: "PreDown",
  postdown: "PostDown",
} as const;

const PEER_KEYS = {
  publickey: "PublicKey",
  presharedkey: "PresharedKey",
  allowedips: "AllowedIPs",
  endpoint: "Endpoint",
  persistentkeepalive: "PersistentKeepalive",
} as const;

const EXTRA_KEYS = new Set(["Table", "FwMark", "SaveConfig", "PreUp", "PostUp", "PreDown", "PostDown"]);
const LIST_KEYS = new Set(["Address", "DNS", "AllowedIPs"]);

const KeySchema = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/, "must be 44 characters of base64 (a 32-byte key, as wg genkey prints)"),
);
const PortSchema = v.pipe(
  v.string(),
  v.regex(/^\d{1,5}$/, "must be a port number"),
  v.transform(Number),
  v.number(),
  v.minValue(0, "must be 0..65535"),
  v.maxValue(65535, "must be 0..65535"),
);
const MtuSchema = v.pipe(
  v.string(),
  v.regex(/^\d{1,5}$/, "must be a number"),
  v.transform(Number),
  v.number(),
  v.minValue(576, "must be 576..65535"),
  v.maxValue(65535, "must be 576..65535"),
);
const KeepaliveSchema = v.union(
  [
    v.pipe(v.string(), v.regex(/^off$/i), v.transform(() => 0)),
    v.pipe(v.string(), v.regex(/^\d{1,5}$/), v.transform(Number), v.number(), v.maxValue(65535)),
  ],
  'must be "off" or seconds 0..65535',
);
const HostnameSchema = v.pipe(
  v.string(),
  v.regex(/^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$/, "is not an IP address or host name"),
);

function check<T>(schema: v.GenericSchema<string, T>, value: string, fail: (reason: string) => never): T {
  const r = v.safeParse(schema, value);
  if (!r.success) fail(r.issues[0]?.message ?? "is invalid");
  return r.output as T;
}

function parseEndpoint(text: string, fail: (reason: string) => never): WgEndpoint {
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") fail('must be "[IPv6]:port"');
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    try {
      host = parseAddress(host, { family: 6 }).text;
    } catch (cause) {
      fail(`${JSON.stringify(host)} is not an IPv6 address`);
    }
  } else {
    const colon = text.lastIndexOf(":");
    if (colon <= 0) fail('must be "host:port" or "[IPv6]:port"');
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(":")) fail('an IPv6 endpoint must be bracketed: "[IPv6]:port"');
    if (/^[\d.]+$/.test(host)) {
      try {
        host = parseAddress(host, { family: 4 }).text;
      } catch {
        fail(`${JSON.stringify(host)} is not an IPv4 address`);
      }
    } else {
      host = check(HostnameSchema, host, fail);
    }
  }
  const port = check(PortSchema, portText, fail);
  if (port === 0) fail("port must be 1..65535");
  return { host, port };
}

/** Parses the text of a wg-quick config; `file` names it in errors. */
export function parseWgConfig(text: string, file = "<config>"): WgConfig {
  type Section = { kind: "interface" | "peer"; line: number; values: Map<string, { value: string; line: number }[]> };
  const sections: Section[] = [];
  let current: Section | null = null;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const lineNo = i + 1;
    const hash = raw.indexOf("#");
    const line = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    if (line === "") return;
    const header = /^\[\s*([A-Za-z]+)\s*\]$/.exec(line);
    if (header) {
      const name = header[1]!.toLowerCase();
      if (name !== "interface" && name !== "peer") {
        throw new WgConfigError(file, lineNo, null, `unknown section [${header[1]}] (expected [Interface] or [Peer])`);
      }
      if (name === "interface" && sections.some((s) => s.kind === "interface")) {
        throw new WgConfigError(file, lineNo, null, "a second [Interface] section");
      }
      current = { kind: name, line: lineNo, values: new Map() };
      sections.push(current);
      return;
    }
    const eq = line.indexOf("=");
    if (eq < 0) throw new WgConfigError(file, lineNo, null, `expected "Key = Value", got ${JSON.stringify(line)}`);
    const keyRaw = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    const section = current as Section | null;
    if (section === null) throw new WgConfigError(file, lineNo, keyRaw, "appears before any [Interface] or [Peer] section");
    const table: Record<string, string> = section.kind === "interface" ? INTERFACE_KEYS : PEER_KEYS;
    const key = table[keyRaw.toLowerCase()];
    if (key === undefined) {
      throw new WgConfigError(file, lineNo, keyRaw, `is not a key of [${section.kind === "interface" ? "Interface" : "Peer"}]`);
    }
    const list = section.values.get(key) ?? [];
    if (list.length > 0 && !LIST_KEYS.has(key) && !EXTRA_KEYS.has(key)) {
      throw new WgConfigError(file, lineNo, key, `is given twice (first on line ${list[0]!.line})`);
    }
    list.push({ value, line: lineNo });
    section.values.set(key, list);
  });

  const iface = sections.find((s) => s.kind === "interface");
  if (iface === undefined) throw new WgConfigError(file, 1, null, "no [Interface] section");

  const failer = (line: number, key: string) => (reason: string): never => {
    throw new WgConfigError(file, line, key, reason);
  };
  const one = (s: Section, key: string) => s.values.get(key)?.[0];
  const items = (s: Section, key: string) =>
    (s.values.get(key) ?? []).flatMap(({ value, line }) =>
      value.split(",").map((item) => ({ item: item.trim(), line })),
    );
  const keyValue = (s: Section, key: string): string | undefined => {
    const e = one(s, key);
    if (e === undefined) return undefined;
    const fail = failer(e.line, key);
    const text = check(KeySchema, e.value, fail);
    try {
      decodeKey(text, key);
    } catch (cause) {
      fail(cause instanceof Error ? cause.message : String(cause));
    }
    return text;
  };

  const privateKey = keyValue(iface, "PrivateKey");
  if (privateKey === undefined) throw new WgConfigError(file, iface.line, "PrivateKey", "is missing from [Interface]");
  const addresses = items(iface, "Address").map(({ item, line }) => {
    const fail = failer(line, "Address");
    if (item === "") fail("has an empty item");
    const slash = item.indexOf("/");
    try {
      const address = parseAddress(slash < 0 ? item : item.slice(0, slash));
      const max = address.family === 4 ? 32 : 128;
      const lenText = slash < 0 ? String(max) : item.slice(slash + 1);
      if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > max) fail(`${JSON.stringify(item)}: prefix length must be 0..${max}`);
      return `${address.text}/${Number(lenText)}`;
    } catch (cause) {
      if (cause instanceof WgConfigError) throw cause;
      throw new WgConfigError(file, line, "Address", `${JSON.stringify(item)} is not an address`, { cause });
    }
  });
  const lp = one(iface, "ListenPort");
  const mtu = one(iface, "MTU");
  const dns = items(iface, "DNS").map(({ item, line }) => {
    const fail = failer(line, "DNS");
    if (item === "") fail("has an empty item");
    try {
      return parseAddress(item).text;
    } catch {
      return check(HostnameSchema, item, fail); // a search domain
    }
  });
  const extra: Record<string, string[]> = {};
  for (const key of EXTRA_KEYS) {
    const list = iface.values.get(key);
    if (list) extra[key] = list.map((e) => e.value);
  }

  const seenKeys = new Map<string, number>();
  const peers: WgPeer[] = sections
    .filter((s) => s.kind === "peer")
    .map((s) => {
      const publicKey = keyValue(s, "PublicKey");
      if (publicKey === undefined) throw new WgConfigError(file, s.line, "PublicKey", "is missing from [Peer]");
      const dup = seenKeys.get(publicKey);
      if (dup !== undefined) {
        throw new WgConfigError(file, one(s, "PublicKey")!.line, "PublicKey", `same peer as the [Peer] on line ${dup}`);
      }
      seenKeys.set(publicKey, s.line);
      const peer: WgPeer = {
        publicKey,
        allowedIps: items(s, "AllowedIPs")
          .filter(({ item }) => item !== "")
          .map(({ item, line }) => {
            try {
              return parsePrefix(item, { allowBareAddress: true, mask: true }).text;
            } catch (cause) {
              throw new WgConfigError(file, line, "AllowedIPs", `${JSON.stringify(item)} is not a prefix`, { cause });
            }
          }),
        line: s.line,
      };
      const psk = keyValue(s, "PresharedKey");
      if (psk !== undefined) peer.presharedKey = psk;
      const ep = one(s, "Endpoint");
      if (ep !== undefined) peer.endpoint = parseEndpoint(ep.value, failer(ep.line, "Endpoint"));
      const ka = one(s, "PersistentKeepalive");
      if (ka !== undefined) {
        const seconds = check(KeepaliveSchema, ka.value, failer(ka.line, "PersistentKeepalive"));
        if (seconds > 0) peer.persistentKeepalive = seconds;
      }
      return peer;
    });

  const result: WgConfig = { interface: { privateKey, addresses, dns, extra }, peers };
  if (lp !== undefined) result.interface.listenPort = check(PortSchema, lp.value, failer(lp.line, "ListenPort"));
  if (mtu !== undefined) result.interface.mtu = check(MtuSchema, mtu.value, failer(mtu.line, "MTU"));
  return result;
}

/**
 * The Device's peer list for a parsed config. `resolved` maps each endpoint host that is a name
 * (not an IP address) to the address it resolved to; the caller resolves (core does no I/O).
 * A host name missing from `resolved` is an E_CONFIG_INVALID error naming the [Peer] line.
 */
export function wgPeerConfigs(config: WgConfig, resolved: ReadonlyMap<string, string> = new Map(), file = "<config>"): PeerConfig[] {
  return config.peers.map((peer) => {
    const out: PeerConfig = { publicKey: peer.publicKey, allowedIps: [...peer.allowedIps] };
    if (peer.presharedKey !== undefined) out.presharedKey = peer.presharedKey;
    if (peer.persistentKeepalive !== undefined) out.persistentKeepalive = peer.persistentKeepalive;
    if (peer.endpoint !== undefined) {
      const { host, port } = peer.endpoint;
      const address = isIpText(host) ? host : resolved.get(host);
      if (address === undefined) throw new WgConfigError(file, peer.line, "Endpoint", `host ${JSON.stringify(host)} was not resolved`);
      out.endpoint = { address, port };
    }
    return out;
  });
}

/** Endpoint hosts of a parsed config that are names to resolve (not IP addresses), deduplicated. */
export function wgEndpointHostnames(config: WgConfig): string[] {
  return [...new Set(config.peers.flatMap((p) => (p.endpoint && !isIpText(p.endpoint.host) ? [p.endpoint.host] : [])))];
}

function isIpText(host: string): boolean {
  try {
    parseAddress(host);
    return true;
  } catch {
    return false;
  }
}
