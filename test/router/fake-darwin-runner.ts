/**
 * @module test/router/fake-darwin-runner
 * A state-modelling fake of macOS routing for the DarwinRouter: `route -n add|delete` argv
 * becomes state, `netstat -rn` is rendered from it in the layout of the recorded macOS 14 output
 * in test/fixtures/darwin/ (BSD-abbreviated destinations included, so parseNetstat is exercised
 * on fake output too), failures answer with route(8)'s messages, and any command it does not
 * model throws.
 *
 * Modelled behaviour that matters: one route per destination (a second add fails "File exists"),
 * no metrics, `-interface` routes shown with the interface (IPv4) or link#N (IPv6) as gateway,
 * gateway routes placed on the interface whose subnet (or %scope) holds the gateway.
 */
import { parseAddress, prefixContainsAddress, type Family, type Prefix } from "../../core/net/address.ts";
import type { CommandResult, CommandRunner, RunOptions } from "../../core/runner.ts";
import { toPrefix } from "../../core/router/router.ts";
import { CommandError } from "../../platform/exec.ts";
import type { Hop } from "../contract/router.contract.ts";

export interface DarwinFakeInterface {
  name: string;
  index: number;
  v4?: string;
  v6?: string[];
}

interface Entry {
  family: Family;
  prefix: Prefix;
  /** Printed as the destination when set (scoped link-local forms); else derived from prefix. */
  destination?: string;
  gateway: string;
  flags: string;
  netif: string;
  expire: string;
}

/** BSD netname() + domask(): how netstat -rn abbreviates an IPv4 destination. */
export function darwinDestination4(p: Prefix, host: boolean): string {
  if (p.length === 0) return "default";
  const o = [...p.bytes];
  const natural = o[0]! < 128 ? 8 : o[0]! < 192 ? 16 : 24;
  let shown = 4;
  if (!host) {
    if (natural <= 8 && o[1] === 0 && o[2] === 0 && o[3] === 0) shown = 1;
    else if (natural <= 16 && o[2] === 0 && o[3] === 0) shown = 2;
    else if (o[3] === 0) shown = 3;
  }
  const text = o.slice(0, shown).join(".");
  if (host) return text;
  return p.length === natural && shown < 4 ? text : `${text}/${p.length}`;
}

export class FakeDarwin implements CommandRunner {
  entries: Entry[] = [];
  readonly log: string[][] = [];
  mutations = 0;

  constructor(readonly interfaces: DarwinFakeInterface[]) {}

  sys(family: Family, destination: string, gateway: string, flags: string, netif: string, expire = ""): void {
    const prefix =
      family === 4
        ? toPrefix(destination === "default" ? "0.0.0.0/0" : expandForFake(destination, flags.includes("H")))
        : toPrefix(destination === "default" ? "::/0" : destination.replace(/%[^/]*/, ""));
    this.entries.push({ family, prefix, destination, gateway, flags, netif, expire });
  }

  async run(argv: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    this.log.push([...argv]);
    const result = this.dispatch(argv);
    if (result.exitCode !== 0 && !options.allowFailure) throw new CommandError(argv, result.exitCode, result.stdout, result.stderr);
    return result;
  }

  private dispatch(argv: readonly string[]): CommandResult {
    if (argv.length === 2 && argv[0] === "netstat" && argv[1] === "-rn") return { stdout: this.netstat(), stderr: "", exitCode: 0 };
    if (argv[0] === "route" && argv[1] === "-n" && (argv[2] === "add" || argv[2] === "delete")) {
      this.mutations++;
      return this.route(argv);
    }
    throw new Error(`fake darwin: unexpected command: ${JSON.stringify(argv)}`);
  }

  private route(argv: readonly string[]): CommandResult {
    const add = argv[2] === "add";
    const rest = argv.slice(3);
    let family: Family = 4;
    if (rest[0] === "-inet6") {
      family = 6;
      rest.shift();
    }
    const kind = rest.shift();
    const dest = rest.shift();
    if ((kind !== "-net" && kind !== "-host") || !dest) throw new Error(`fake darwin: expected -net|-host <dest>: ${JSON.stringify(argv)}`);
    const prefix = toPrefix(dest);
    if (prefix.family !== family || (kind === "-host") !== (prefix.length === (family === 4 ? 32 : 128)) || (kind === "-net" && !dest.includes("/"))) {
      throw new Error(`fake darwin: destination ${dest} does not fit ${kind} ${family === 6 ? "-inet6" : ""}: ${JSON.stringify(argv)}`);
    }
    let viaInterface: string | undefined;
    let gateway: string | undefined;
    if (rest[0] === "-interface" && rest.length === 2) viaInterface = rest[1];
    else if (rest.length === 1 && !rest[0]!.startsWith("-")) gateway = rest[0];
    else throw new Error(`fake darwin: expected -interface <if> or a gateway: ${JSON.stringify(argv)}`);
    const host = kind === "-host";
    const verb = `${add ? "add" : "delete"} ${host ? "host" : "net"} ${dest}`;

    if (!add) {
      const i = this.entries.findIndex((e) => e.prefix.text === prefix.text && (gateway === undefined || e.gateway === gateway) && (viaInterface === undefined || e.netif === viaInterface));
      if (i < 0) return { stdout: "", stderr: `route: writing to routing socket: not in table\n${verb}: not in table\n`, exitCode: 1 };
      this.entries.splice(i, 1);
      return { stdout: `${verb}\n`, stderr: "", exitCode: 0 };
    }
    if (this.entries.some((e) => e.prefix.text === prefix.text && !e.flags.includes("L"))) {
      return { stdout: "", stderr: `route: writing to routing socket: File exists\n${verb}: gateway ${gateway ?? viaInterface}: File exists\n`, exitCode: 1 };
    }
    let entry: Entry;
    if (viaInterface !== undefined) {
      const iface = this.interfaces.find((x) => x.name === viaInterface);
      if (!iface) return { stdout: "", stderr: `route: bad interface name: ${viaInterface}\n`, exitCode: 1 };
      const shownGateway = family === 4 && iface.name.startsWith("utun") ? iface.name : `link#${iface.index}`;
      entry = { family, prefix, gateway: shownGateway, flags: host ? "UHS" : "USc", netif: iface.name, expire: "" };
    } else {
      const bare = gateway!.replace(/%.*$/, "");
      const scope = /%(.+)$/.exec(gateway!)?.[1];
      const a = parseAddress(bare);
      const iface = scope
        ? this.interfaces.find((x) => x.name === scope)
        : this.interfaces.find((x) => [x.v4, ...(x.v6 ?? [])].some((c) => c !== undefined && prefixContainsAddress(toPrefix(c), a.bytes)));
      if (!iface) return { stdout: "", stderr: `route: writing to routing socket: Network is unreachable\n${verb}: gateway ${gateway}: Network is unreachable\n`, exitCode: 1 };
      entry = { family, prefix, gateway: gateway!, flags: host ? "UGHS" : "UGSc", netif: iface.name, expire: "" };
    }
    this.entries.push(entry);
    return { stdout: `${verb}: gateway ${gateway ?? viaInterface}\n`, stderr: "", exitCode: 0 };
  }

  private shownDestination(e: Entry): string {
    if (e.destination !== undefined) return e.destination;
    if (e.family === 4) return darwinDestination4(e.prefix, e.flags.includes("H"));
    if (e.prefix.length === 0) return "default";
    return e.prefix.length === 128 ? e.prefix.text.split("/")[0]! : e.prefix.text;
  }

  /** `netstat -rn` as macOS 14 lays it out. */
  netstat(): string {
    const out = ["Routing tables", ""];
    for (const family of [4, 6] as const) {
      const w = family === 4 ? 19 : 40;
      out.push(family === 4 ? "Internet:" : "Internet6:");
      out.push(`${"Destination".padEnd(w)}${"Gateway".padEnd(w)}${"Flags".padEnd(15)}${"Netif".padStart(10)} Expire`);
      const rows = this.entries
        .filter((e) => e.family === family)
        .sort((a, b) => {
          for (let k = 0; k < a.prefix.bytes.length; k++) if (a.prefix.bytes[k] !== b.prefix.bytes[k]) return a.prefix.bytes[k]! - b.prefix.bytes[k]!;
          return a.prefix.length - b.prefix.length;
        });
      for (const e of rows) {
        out.push(`${this.shownDestination(e).padEnd(w - 1)} ${e.gateway.padEnd(w - 1)} ${e.flags.padEnd(15)}${e.netif.padStart(10)} ${e.expire.padStart(6)}`);
      }
      out.push("");
    }
    return out.join("\n");
  }

  resolve(dst: string, tunnel: string): Hop {
    const a = parseAddress(dst);
    const best = this.entries
      .filter((e) => !e.flags.includes("L") && prefixContainsAddress(e.prefix, a.bytes))
      .sort((x, y) => y.prefix.length - x.prefix.length)[0];
    if (!best || best.flags.includes("B") || best.flags.includes("R")) return { kind: "blackhole" };
    if (best.netif === tunnel) return { kind: "tunnel" };
    const gw = best.gateway.replace(/%.*$/, "");
    if (best.flags.includes("G")) return { kind: "gateway", gateway: gw };
    return { kind: "link" };
  }
}

function expandForFake(destination: string, host: boolean): string {
  const [net, len] = destination.split("/");
  const o = net!.split(".");
  while (o.length < 4) o.push("0");
  const first = Number(o[0]);
  const length = len !== undefined ? Number(len) : host || net!.split(".").length === 4 ? 32 : first < 128 ? 8 : first < 192 ? 16 : 24;
  return `${o.join(".")}/${length}`;
}

/** The contract topology on macOS, shaped like the recorded macOS 14 table: en0 LAN, utun3 tunnel. */
export function darwinFakeSystem(): FakeDarwin {
  const d = new FakeDarwin([
    { name: "lo0", index: 1, v4: "127.0.0.1/8", v6: ["::1/128"] },
    { name: "en0", index: 13, v4: "192.168.7.2/24", v6: ["fd07::2/64", "fe80::1012:95fb:c33d:89c9/64"] },
    { name: "utun3", index: 20, v4: "100.64.0.2/32", v6: ["fe80::92d5:d17a:444d:d284/64"] },
  ]);
  d.sys(4, "default", "192.168.7.1", "UGScg", "en0");
  d.sys(4, "10.20/16", "192.168.7.254", "UGSc", "en0");
  d.sys(4, "100.64.0.2", "100.64.0.2", "UH", "utun3");
  d.sys(4, "127", "127.0.0.1", "UCS", "lo0");
  d.sys(4, "127.0.0.1", "127.0.0.1", "UH", "lo0");
  d.sys(4, "169.254", "link#13", "UCS", "en0", "!");
  d.sys(4, "192.168.7", "link#13", "UCS", "en0", "!");
  d.sys(4, "192.168.7.1/32", "link#13", "UCS", "en0", "!");
  d.sys(4, "192.168.7.1", "58:ef:68:58:68:20", "UHLWIir", "en0", "1199");
  d.sys(4, "192.168.7.2/32", "link#13", "UCS", "en0", "!");
  d.sys(4, "224.0.0/4", "link#13", "UmCS", "en0", "!");
  d.sys(4, "255.255.255.255/32", "link#13", "UCS", "en0", "!");
  d.sys(6, "default", "fe80::1%en0", "UGcg", "en0");
  d.sys(6, "::1", "::1", "UHL", "lo0");
  d.sys(6, "fd07::/64", "link#13", "UC", "en0");
  d.sys(6, "fe80::%lo0/64", "fe80::1%lo0", "UcI", "lo0");
  d.sys(6, "fe80::1%lo0", "link#1", "UHLI", "lo0");
  d.sys(6, "fe80::%en0/64", "link#13", "UCI", "en0");
  d.sys(6, "fe80::%utun3/64", "fe80::92d5:d17a:444d:d284%utun3", "UcI", "utun3");
  d.sys(6, "fe80::92d5:d17a:444d:d284%utun3", "link#20", "UHLI", "lo0");
  d.sys(6, "ff00::/8", "::1", "UmCI", "lo0");
  d.sys(6, "ff00::/8", "link#13", "UmCI", "en0");
  return d;
}
