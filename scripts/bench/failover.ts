/**
 * @module scripts/bench/failover
 * Gateway failover outage in the two-gateway office (scripts/rig/office.ts `secondGateway`, root):
 * a 10 Hz ping from the laptop to the printer (172.26.0.250) while the active gateway is
 *   a  SIGKILLed                                (found by the laptop's data-path probes)
 *   b  cut off from its LAN (`ip link set down`) (withdrawn in its probe replies)
 *   c  drained (`waygate gateways drain`)       (make-before-break: nothing should be lost)
 *   d  stopped gracefully (SIGTERM)             (withdraws, keeps its data plane up 500 ms)
 * and between cases the stopped or cut-off one comes back (no switch back: no-preempt). Per case it
 * prints one line per figure, `outage_ms` (the longest gap between replies minus the 100 ms
 * interval) with its ratio to the 1 s target, and `lost_pings`. The reference is the target itself:
 * a ratio below 1 meets it. Usage: bun scripts/bench/failover.ts [--keep-going]
 */
import { LAN, type Office, type PingMonitor, startFailoverOffice, subnetOf, withOffice } from "../rig/office.ts";

const TARGET_MS = 1000;
/** How long each case lets the ping run after the event before measuring. */
const SETTLE_MS = 3000;

const log = (m: string) => process.stderr.write(`bench: ${m}\n`);

interface Figures {
  outageMs: number;
  lost: number;
  reason: string | null;
}

async function activeOf(office: Office): Promise<{ active: string | null; last: any }> {
  const f = subnetOf(await office.status("laptop"));
  return { active: f?.active ?? null, last: f?.lastSwitch ?? null };
}

async function measure(office: Office, ping: PingMonitor, event: () => Promise<void>): Promise<Figures> {
  const t0 = Date.now();
  await event();
  await Bun.sleep(SETTLE_MS);
  const w = ping.window(t0 - 1000);
  const { last } = await activeOf(office);
  return { outageMs: w.outageMs, lost: w.lost, reason: last !== null && last.at >= t0 - 100 ? `${last.reason}` : null };
}

function print(name: string, f: Figures): void {
  process.stdout.write(`failover: case=${name} outage_ms=${f.outageMs} ratio_to_target=${(f.outageMs / TARGET_MS).toFixed(2)} target_ms=${TARGET_MS} switch_reason=${f.reason ?? "none"}\n`);
  process.stdout.write(`failover: case=${name} lost_pings=${f.lost}\n`);
}

async function main(): Promise<void> {
  await withOffice({ secondGateway: true }, async (office) => {
    const { a, b } = await startFailoverOffice(office, log);
    const ns = office.ns;
    const ping = await office.pingMonitor(ns.laptop, LAN.printer);
    try {
      await Bun.sleep(1500);
      const which = async () => {
        const { active } = await activeOf(office);
        if (active !== a && active !== b) throw new Error(`no active gateway (${active})`);
        return active;
      };
      const healthy = (id: string) => office.waitStatus("laptop", (s) => subnetOf(s)?.candidates?.some((c: any) => c.id === id && c.healthy), 30_000);

      // a: SIGKILL the active one, then restart it.
      const ka = await which();
      print("a-sigkill", await measure(office, ping, async () => void (ka === a ? await office.stopGateway() : await office.stopGateway2())));
      if (ka === a) await office.startGateway();
      else await office.startGateway2();
      await healthy(ka);
      log(`a: ${ka} back and healthy`);

      // b: the active one loses its LAN link, then gets it back.
      const kb = await which();
      const [bNs, bLink] = kb === a ? [ns.gateway, office.links.gatewayLan] : [ns.gateway2!, office.links.gateway2Lan];
      print("b-lan-down", await measure(office, ping, async () => void (await office.rig.exec(bNs, ["ip", "link", "set", bLink, "down"]))));
      await office.rig.exec(bNs, ["ip", "link", "set", bLink, "up"]);
      await healthy(kb);
      log(`b: ${kb} LAN back and healthy`);

      // c: drain the active one.
      const kc = await which();
      print("c-drain", await measure(office, ping, async () => void (await office.admin(["gateways", "drain", kc, LAN.prefix]))));

      // d: graceful stop (SIGTERM) of the active one; the drained one takes over.
      const kd = await which();
      print("d-sigterm", await measure(office, ping, async () => void (kd === a ? office.stopGateway({ graceful: true }) : office.stopGateway2({ graceful: true }))));
    } finally {
      await ping.stop();
    }
  });
}

await main();
