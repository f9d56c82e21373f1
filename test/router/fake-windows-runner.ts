/**
 * @module test/router/fake-windows-runner
 * A state-modelling fake of Windows routing for the WindowsRouter: it parses `route print`,
 * `route ADD|DELETE` and `netsh interface ipv6 add|delete route` argv into a route table, renders
 * `route print` from that state in the column layout of the recorded outputs in
 * test/fixtures/windows/ (so parseRoutePrint is exercised on fake output too), answers failures
 * with route.exe's own messages, and throws on any command it does not model.
 *
 * Modelled behaviour that matters to the router: shown metric = route metric + interface metric;
 * system routes carry route metric 256; `0.0.0.0` as gateway with `IF n` makes an On-link route;
 * a gateway route without IF goes to the interface whose subnet holds the gateway; duplicates
 * and missing routes fail.
 */
import { formatAddress, parseAddress, prefixContainsAddress, prefixCovers, type Prefix } from "../../core/net/address.ts";
import type { CommandResult, CommandRunner, RunOptions } from "../../core/runner.ts";
import { lengthOfMask, maskOfLength, toPrefix } from "../../core/router/router.ts";
import { CommandError } from "../../platform/exec.ts";
import type { Hop } from "../contract/router.contract.ts";

export interface WinFakeInterface {
  index: number;
  mac: string | null;
  description: string;
  /** CIDR, e.g. "192.168.7.2/24". */
  v4?: string;
  v6?: string[];
  ifMetric: number;
}

interface Row {
  prefix: Prefix;
  gateway: string | null;
  ifIndex: number;
  /** The route's own metric; `route print` adds the interface metric. */
  metric: number;
  persistent?: boolean;
}

function pad(s: string | number, width: number): string {
  return String(s).padStart(width);
}

export class FakeWindows implements CommandRunner {
  readonly interfaces: WinFakeInterface[];
  rows4: Row[] = [];
  rows6: Row[] = [];
  readonly log: string[][] = [];
  mutations = 0;

  constructor(interfaces: WinFakeInterface[]) {
    this.interfaces = interfaces;
    for (const i of interfaces) this.addSystemRoutes(i);
  }

  private iface(index: number): WinFakeInterface {
    const i = this.interfaces.find((x) => x.index === index);
    if (!i) throw new Error(`fake windows: no interface ${index}`);
    return i;
  }

  private addSystemRoutes(i: WinFakeInterface): void {
    if (i.v4) {
      const p = toPrefix(i.v4);
      const addr = i.v4.split("/")[0]!;
      const sys = (prefix: string) => this.rows4.push({ prefix: toPrefix(prefix), gateway: null, ifIndex: i.index, metric: 256 });
      sys(p.text);
      if (p.length < 32) sys(`${addr}/32`);
      if (p.length < 31) {
        const b = p.bytes.slice();
        for (let bit = p.length; bit < 32; bit++) b[bit >> 3]! |= 0x80 >> (bit & 7);
        sys(`${formatAddress(b)}/32`);
      }
      sys("224.0.0.0/4");
      sys("255.255.255.255/32");
    }
    const sys6 = (prefix: string) => this.rows6.push({ prefix: toPrefix(prefix), gateway: null, ifIndex: i.index, metric: 256 });
    for (const cidr of i.v6 ?? []) {
      const p = toPrefix(cidr);
      if (!cidr.startsWith("fe80:") && p.length < 128) sys6(p.text);
      sys6(`${cidr.split("/")[0]}/128`);
      if (cidr.startsWith("fe80:")) sys6("fe80::/64");
    }
    if (i.v6) sys6("ff00::/8");
  }

  /** A route someone else added (the user, DHCP): `route -p ADD` style, shown as persistent too. */
  addForeign4(prefix: string, gateway: string, ifIndex: number, metric: number, persistent = false): void {
    this.rows4.push({ prefix: toPrefix(prefix), gateway, ifIndex, metric, persistent });
  }

  addForeign6(prefix: string, gateway: string | null, ifIndex: number, metric: number): void {
    this.rows6.push({ prefix: toPrefix(prefix), gateway, ifIndex, metric });
  }

  async run(argv: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    this.log.push([...argv]);
    const result = this.dispatch(argv);
    if (result.exitCode !== 0 && !options.allowFailure) {
      throw new CommandError(argv, result.exitCode, result.stdout, result.stderr);
    }
    return result;
  }

  private dispatch(argv: readonly string[]): CommandResult {
    const [cmd, verb] = argv;
    if (cmd === "route" && argv.length === 2 && verb?.toUpperCase() === "PRINT") return ok(this.routePrint());
    if (cmd === "route" && (verb === "ADD" || verb === "DELETE")) {
      this.mutations++;
      return this.route(argv);
    }
    if (cmd === "netsh" && argv[1] === "interface" && argv[2] === "ipv6" && (argv[3] === "add" || argv[3] === "delete") && argv[4] === "route") {
      this.mutations++;
      return this.netsh(argv);
    }
    throw new Error(`fake windows: unexpected command: ${JSON.stringify(argv)}`);
  }

  private route(argv: readonly string[]): CommandResult {
    const add = argv[1] === "ADD";
    const rest = argv.slice(2);
    const dest = rest.shift();
    if (rest.shift() !== "MASK") throw new Error(`fake windows: route without MASK: ${JSON.stringify(argv)}`);
    const mask = rest.shift()!;
    let gateway: string | undefined;
    let metric: number | undefined;
    let ifIndex: number | undefined;
    while (rest.length > 0) {
      const w = rest.shift()!;
      if (w === "METRIC") metric = Number(rest.shift());
      else if (w === "IF") ifIndex = Number(rest.shift());
      else if (gateway === undefined && /^\d+\.\d+\.\d+\.\d+$/.test(w)) gateway = w;
      else throw new Error(`fake windows: unexpected route argument ${w}: ${JSON.stringify(argv)}`);
    }
    const length = lengthOfMask(mask);
    if (!dest || length === null) throw new Error(`fake windows: bad destination or mask: ${JSON.stringify(argv)}`);
    const prefix = toPrefix(`${dest}/${length}`);
    if (prefix.text.split("/")[0] !== dest) {
      return fail("The route addition failed: The specified mask parameter is invalid. (Destination & Mask) != Destination.");
    }
    if (add) {
      if (metric === undefined || gateway === undefined) throw new Error(`fake windows: ADD without METRIC or gateway: ${JSON.stringify(argv)}`);
      let row: Row;
      const own = this.interfaces.find((i) => i.v4?.split("/")[0] === gateway);
      if (gateway === "0.0.0.0") {
        if (ifIndex === undefined || !this.interfaces.some((i) => i.index === ifIndex)) {
          return fail("The route addition failed: Either the interface index is wrong or the gateway does not lie on the same network as the interface. Check the IP Address Table for the machine.");
        }
        row = { prefix, gateway: null, ifIndex, metric };
      } else if (own) {
        row = { prefix, gateway: null, ifIndex: own.index, metric };
      } else {
        const via = this.interfaces.find((i) => i.v4 && prefixContainsAddress(toPrefix(i.v4), parseAddress(gateway!).bytes) && (ifIndex === undefined || i.index === ifIndex));
        if (!via) {
          return fail("The route addition failed: Either the interface index is wrong or the gateway does not lie on the same network as the interface. Check the IP Address Table for the machine.");
        }
        row = { prefix, gateway, ifIndex: via.index, metric };
      }
      if (this.rows4.some((r) => r.prefix.text === row.prefix.text && r.gateway === row.gateway && r.ifIndex === row.ifIndex)) {
        return fail("The route addition failed: The object already exists.");
      }
      this.rows4.push(row);
      return ok(" OK!\r\n");
    }
    if (metric !== undefined) throw new Error(`fake windows: DELETE with METRIC: ${JSON.stringify(argv)}`);
    const matches = (r: Row) =>
      r.prefix.text === prefix.text &&
      (ifIndex === undefined || r.ifIndex === ifIndex) &&
      (gateway === undefined || r.gateway === gateway || (r.gateway === null && this.iface(r.ifIndex).v4?.split("/")[0] === gateway));
    const before = this.rows4.length;
    this.rows4 = this.rows4.filter((r) => !matches(r));
    return this.rows4.length === before ? fail("The route deletion failed: Element not found.") : ok(" OK!\r\n");
  }

  private netsh(argv: readonly string[]): CommandResult {
    const add = argv[3] === "add";
    const kv = new Map<string, string>();
    for (const a of argv.slice(5)) {
      const m = /^(prefix|interface|nexthop|metric|store)=(.+)$/.exec(a);
      if (!m || kv.has(m[1]!)) throw new Error(`fake windows: unexpected netsh argument ${a}: ${JSON.stringify(argv)}`);
      kv.set(m[1]!, m[2]!);
    }
    if (kv.get("store") !== "active" || !kv.has("prefix") || !kv.has("interface")) {
      throw new Error(`fake windows: netsh route needs prefix, interface, store=active: ${JSON.stringify(argv)}`);
    }
    const prefix = toPrefix(kv.get("prefix")!);
    const ifIndex = Number(kv.get("interface"));
    if (!this.interfaces.some((i) => i.index === ifIndex)) return fail("The filename, directory name, or volume label syntax is incorrect.");
    const gateway = kv.get("nexthop") ?? null;
    const same = (r: Row) => r.prefix.text === prefix.text && r.ifIndex === ifIndex && r.gateway === gateway;
    if (add) {
      if (!kv.has("metric")) throw new Error(`fake windows: netsh add route without metric: ${JSON.stringify(argv)}`);
      if (this.rows6.some(same)) return fail("The object already exists.");
      this.rows6.push({ prefix, gateway, ifIndex, metric: Number(kv.get("metric")) });
      return ok("Ok.\r\n\r\n");
    }
    if (kv.has("metric")) throw new Error(`fake windows: netsh delete route with metric: ${JSON.stringify(argv)}`);
    const before = this.rows6.length;
    this.rows6 = this.rows6.filter((r) => !same(r));
    return this.rows6.length === before ? fail("Element not found.") : ok("Ok.\r\n\r\n");
  }

  private sorted(rows: Row[]): Row[] {
    return [...rows].sort((a, b) => {
      for (let k = 0; k < a.prefix.bytes.length; k++) if (a.prefix.bytes[k] !== b.prefix.bytes[k]) return a.prefix.bytes[k]! - b.prefix.bytes[k]!;
      return a.prefix.length - b.prefix.length || this.shown(a) - this.shown(b);
    });
  }

  private shown(r: Row): number {
    return r.metric + this.iface(r.ifIndex).ifMetric;
  }

  /** `route print` as Windows 10/11 lays it out (CRLF line ends). */
  routePrint(): string {
    const rule = "=".repeat(75);
    const out: string[] = [rule, "Interface List"];
    for (const i of this.interfaces) {
      const mac = i.mac ? `${i.mac} ` : "";
      out.push(`${pad(i.index, 3)}...${mac}${".".repeat(Math.max(0, 24 - mac.length))}${i.description}`);
    }
    out.push(rule, "", "IPv4 Route Table", rule, "Active Routes:");
    out.push("Network Destination        Netmask          Gateway       Interface  Metric");
    for (const r of this.sorted(this.rows4)) {
      const [net] = r.prefix.text.split("/");
      const ifAddr = this.iface(r.ifIndex).v4!.split("/")[0]!;
      // As recorded: an address gateway is right-aligned in 17 columns, "On-link" in 16 with the
      // interface column one wider.
      const gw = r.gateway === null ? `${pad("On-link", 16)}${pad(ifAddr, 18)}` : `${pad(r.gateway, 17)}${pad(ifAddr, 17)}`;
      out.push(`${pad(net!, 17)}${pad(maskOfLength(r.prefix.length), 17)}${gw}${pad(this.shown(r), 7)}`);
    }
    out.push(rule, "Persistent Routes:");
    const persistent = this.rows4.filter((r) => r.persistent);
    if (persistent.length === 0) out.push("  None");
    else {
      out.push("  Network Address          Netmask  Gateway Address  Metric");
      for (const r of persistent) {
        out.push(`${pad(r.prefix.text.split("/")[0]!, 17)}${pad(maskOfLength(r.prefix.length), 17)}${pad(r.gateway ?? "On-link", 17)}${pad(r.metric, 8)}`);
      }
      out.push(rule);
    }
    out.push("", "IPv6 Route Table", rule, "Active Routes:", " If Metric Network Destination      Gateway");
    for (const r of this.sorted(this.rows6)) {
      const head = `${pad(r.ifIndex, 3)}${pad(this.shown(r), 7)} `;
      const gw = r.gateway ?? "On-link";
      if (r.prefix.text.length <= 24) out.push(`${head}${r.prefix.text.padEnd(25)}${gw}`);
      else out.push(`${head}${r.prefix.text}`, `${" ".repeat(36)}${gw}`);
    }
    out.push(rule, "Persistent Routes:", "  None", "");
    return out.join("\r\n");
  }

  /** Where a packet to dst goes: longest prefix, then lowest shown metric. */
  resolve(dst: string, tunnelIndex: number): Hop {
    const a = parseAddress(dst);
    const rows = a.family === 4 ? this.rows4 : this.rows6;
    const best = rows
      .filter((r) => prefixContainsAddress(r.prefix, a.bytes))
      .sort((x, y) => y.prefix.length - x.prefix.length || this.shown(x) - this.shown(y))[0];
    if (!best) return { kind: "blackhole" };
    if (best.ifIndex === tunnelIndex) return { kind: "tunnel" };
    if (best.gateway) return { kind: "gateway", gateway: best.gateway };
    return { kind: "link" };
  }

  /** Routes covering `prefix` exactly, for assertions. */
  rowsFor(prefix: string): Row[] {
    const p = toPrefix(prefix);
    return [...this.rows4, ...this.rows6].filter((r) => r.prefix.text === p.text && prefixCovers(r.prefix, p));
  }
}

function ok(stdout: string): CommandResult {
  return { stdout, stderr: "", exitCode: 0 };
}

function fail(message: string): CommandResult {
  return { stdout: `${message}\r\n`, stderr: "", exitCode: 1 };
}

/** The contract topology on Windows: Wi-Fi LAN (index 12), WireGuard-style tunnel (index 23). */
export function windowsFakeSystem(): FakeWindows {
  const w = new FakeWindows([
    { index: 12, mac: "a8 7e ea 36 46 60", description: "Intel(R) Wi-Fi 6 AX200 160MHz", v4: "192.168.7.2/24", v6: ["fd07::2/64", "fe80::4fae:1380:5a1b:8b6b/64"], ifMetric: 35 },
    { index: 23, mac: null, description: "Waygate Tunnel", v4: "100.64.0.2/32", v6: ["fe80::a5b3:39f7:2165:7b03/64"], ifMetric: 5 },
    { index: 1, mac: null, description: "Software Loopback Interface 1", v4: "127.0.0.1/8", v6: ["::1/128"], ifMetric: 75 },
  ]);
  w.addForeign4("0.0.0.0/0", "192.168.7.1", 12, 0);
  w.addForeign4("10.20.0.0/16", "192.168.7.254", 12, 1, true);
  w.addForeign6("::/0", "fe80::1", 12, 0);
  return w;
}
