/**
 * @module scripts/rig/measure-host
 * A quick figure, not a test: how many packets per second platform/linux/host.ts moves with
 * the trivial forward engine (test/platform/forward-engine.ts). Two namespaces, a host in
 * each, then iperf3 TCP (10.77.2.1 → 10.77.2.2) and a UDP flood through the tunnel; packet
 * rates come from the hosts' own counters. Run as root: `bun scripts/rig/measure-host.ts [seconds]`.
 * For comparison it also runs iperf3 TCP over the bare veth.
 */
import { spawnHost } from "./host.ts";
import { createRig, lineReader } from "./netns.ts";

const seconds = Number(process.argv[2] ?? 5);
const engine = `${import.meta.dir}/../../test/platform/forward-engine.ts`;
const rig = await createRig();
try {
  const a = await rig.addNamespace("a");
  const b = await rig.addNamespace("b");
  await rig.addVeth({ ns: a, addresses: ["10.77.1.1/24"] }, { ns: b, addresses: ["10.77.1.2/24"] });
  const mk = (ns: string, tun: string, peer: string, addr: string) =>
    spawnHost(rig, ns, {
      tunName: rig.linkName(tun),
      listenPort: 51820,
      engineModule: engine,
      engineConfig: { peer: { address: peer, port: 51820 } },
      link: { addresses: [addr], mtu: 1420 },
    });
  const [ha, hb] = await Promise.all([mk(a, "ta", "10.77.1.2", "10.77.2.1/24"), mk(b, "tb", "10.77.1.1", "10.77.2.2/24")]);
  const server = rig.spawn(b, ["iperf3", "-s", "-B", "10.77.2.2"], { stdout: "pipe" });
  const server2 = rig.spawn(b, ["iperf3", "-s", "-B", "10.77.1.2", "-p", "5202"], { stdout: "pipe" });
  await Bun.sleep(300);
  void lineReader;

  const iperf = async (args: string[]) => {
    const r = await rig.exec(a, ["iperf3", "-J", "-t", String(seconds), ...args], { allowFailure: true });
    return JSON.parse(r.stdout) as { end: { sum_received?: { bits_per_second: number }; sum?: { bits_per_second: number; lost_percent: number; packets: number } } };
  };
  const rate = async (fn: () => Promise<unknown>) => {
    const [s0a, s0b] = await Promise.all([ha.stats(), hb.stats()]);
    const t0 = performance.now();
    const result = await fn();
    const dt = (performance.now() - t0) / 1000;
    const [s1a, s1b] = await Promise.all([ha.stats(), hb.stats()]);
    return {
      result,
      aTunReadPps: Math.round((s1a.host.tunRead - s0a.host.tunRead) / dt),
      bTunWrittenPps: Math.round((s1b.host.tunWritten - s0b.host.tunWritten) / dt),
      bUdpRecvPps: Math.round(((s1b.host.udp?.received ?? 0) - (s0b.host.udp?.received ?? 0)) / dt),
      errors: { a: s1a.host.udp?.errors, b: s1b.host.udp?.errors, aTun: s1a.host.tunErrors, bTun: s1b.host.tunErrors },
    };
  };

  const tcp = await rate(() => iperf(["-c", "10.77.2.2"]));
  const tcpBps = (tcp.result as Awaited<ReturnType<typeof iperf>>).end.sum_received?.bits_per_second ?? 0;
  console.log(`tunnel TCP: ${(tcpBps / 1e6).toFixed(0)} Mbit/s; host A reads ${tcp.aTunReadPps} pkt/s from its TUN, host B writes ${tcp.bTunWrittenPps} pkt/s`, tcp.errors);

  const udp = await rate(() => iperf(["-c", "10.77.2.2", "-u", "-b", "0", "-l", "1372"]));
  const u = (udp.result as Awaited<ReturnType<typeof iperf>>).end.sum;
  console.log(
    `tunnel UDP flood (1372 B payload): sender ${(u?.bits_per_second ?? 0) / 1e6 | 0} Mbit/s, loss ${u?.lost_percent?.toFixed(1)}%; host A TUN→UDP ${udp.aTunReadPps} pkt/s, host B UDP→TUN ${udp.bUdpRecvPps} pkt/s`,
    udp.errors,
  );

  const small = await rate(() => iperf(["-c", "10.77.2.2", "-u", "-b", "0", "-l", "64"]));
  console.log(`tunnel UDP flood (64 B payload): host A TUN→UDP ${small.aTunReadPps} pkt/s, host B UDP→TUN ${small.bUdpRecvPps} pkt/s`);

  const veth = await iperf(["-c", "10.77.1.2", "-p", "5202"]);
  console.log(`bare veth TCP: ${((veth.end.sum_received?.bits_per_second ?? 0) / 1e6).toFixed(0)} Mbit/s`);
  await Promise.all([server.stop(), server2.stop(), ha.stop(), hb.stop()]);
} finally {
  await rig.destroy();
}
