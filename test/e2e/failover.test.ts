/**
 * @module test/e2e/failover.test
 * Gateway failover end to end, in the two-gateway office (scripts/rig/office.ts `secondGateway`):
 *
 *   laptop 198.18.0.2 ── "internet" ── gateway A .1 (serve --standalone) ── office LAN ── printer 172.26.0.250
 *                                   └─ gateway B .3 (waygate run) ────────┘  (A 172.26.0.1, B 172.26.0.2)
 *
 * One office for every case (set-up is most of the cost). The laptop starts while only A runs, so A
 * is its first working session; B then becomes a healthy standby. A 10 Hz ping (`ping -D -O -i 0.1`)
 * runs from the laptop to the printer throughout; each case measures lost replies and the longest
 * gap around its event. The bounds asserted are loose for loaded CI (the bench,
 * scripts/bench/failover.ts, reports the real figures against the 1 s target):
 *   (a) SIGKILL the active gateway A: the laptop switches to B (`active-down`), outage <= 3 s.
 *       A restarts and is healthy again: for 40 s (real time) the laptop stays on B (no-preempt:
 *       lastSwitch unchanged, no ping lost); meanwhile, concurrently, the text status, DNS's
 *       forwarding target (follows failover) and both gateways' upstream state are checked.
 *   (b) B's LAN link goes down: B withdraws the LAN in its probe replies (its status says
 *       `link-down`), the laptop moves to A (`withdrawn`, B's candidate state `withdrawn`), outage
 *       <= 3 s. The link comes back and B is a healthy candidate again (A stays active).
 *   (c) `gateways drain A`: make-before-break to B (`draining`), at most 1 ping lost (0 expected).
 *   (d) SIGTERM of B (graceful): B withdraws every subnet and keeps its data plane up 500 ms, the
 *       laptop moves back to the drained A (its only healthy gateway), at most 1 ping lost.
 *   both gone (A SIGKILLed too): no reply, the per-subnet block says no healthy gateway, the
 *       Device counts `no-healthy-gateway` drops, the OS route still points at the TUN, and not one
 *       packet to the LAN left the laptop's physical link (an iptables counter there), although the
 *       laptop has a default route via A's internet side that would have delivered them.
 */
import { describe, expect } from "bun:test";
import { INTERNET, LAN, healthyIn, type Office, startFailoverOffice, subnetOf, withOffice } from "../../scripts/rig/office.ts";
import { rootTest } from "../helpers/env.ts";

const debug = process.env.WAYGATE_E2E_DEBUG ? (m: string) => console.log(m) : () => {};
const TOOLS = ["ip", "ping", "iptables"];
/** Outage bound asserted on loaded CI machines; the target (bench) is 1 s. */
const OUTAGE_BOUND_MS = 3000;
const NO_FLAP_MS = 40_000;

async function activeOn(office: Office, id: string | null, timeoutMs = 5000): Promise<any> {
  return office.waitStatus("laptop", (s) => subnetOf(s)?.active === id, timeoutMs);
}

describe("gateway failover: two gateways serving one LAN", () => {
  rootTest(
    "SIGKILL, LAN down, drain, graceful stop: traffic resumes via the other; no flap for 40 s; fail closed without leaks",
    TOOLS,
    () =>
      withOffice({ secondGateway: true }, async (office) => {
        const t0 = Date.now();
        const lap = (m: string) => debug(`${((Date.now() - t0) / 1000).toFixed(1)}s ${m}`);
        const { ns, rig } = office;
        // What a leak would take: a default route via A's internet side (A forwards into the LAN).
        await rig.exec(ns.laptop, ["ip", "route", "add", "default", "via", INTERNET.gateway]);
        const leaks = await office.countLeaks(LAN.prefix);
        const { a, b } = await startFailoverOffice(office, lap);

        // The per-subnet block: A active from its first working session, B a healthy standby.
        let s = await office.status("laptop");
        let f = subnetOf(s);
        expect(f.active).toBe(a);
        expect(f.effective).toEqual({ gateway: a, via: LAN.prefix, reason: null });
        expect(f.candidates.map((c: any) => c.id).sort()).toEqual([a, b].sort());
        for (const c of f.candidates) {
          expect(c).toMatchObject({ state: "up", healthy: true, own: true, draining: false, priority: 100 });
          expect(typeof c.rttMs).toBe("number");
        }
        expect(f.candidates.find((c: any) => c.id === b).name).toBe("gateway-b");
        expect(f.lastSwitch).toMatchObject({ from: null, to: a, reason: "initial" });
        const tun = office.links.laptopTun;
        expect((await rig.exec(ns.laptop, ["ip", "-4", "route", "get", LAN.printer])).stdout).toContain(`dev ${tun}`);

        const ping = await office.pingMonitor(ns.laptop, LAN.printer);
        try {
          await Bun.sleep(1000);
          expect(ping.window(Date.now() - 1000).received).toBeGreaterThanOrEqual(5);

          // (a) SIGKILL the active gateway.
          let t = Date.now();
          expect(await office.stopGateway()).toBe(137);
          s = await activeOn(office, b);
          lap(`a: switched after ${Date.now() - t} ms (status poll included)`);
          await Bun.sleep(1500);
          let w = ping.window(t - 1000);
          lap(`a: outage_ms=${w.outageMs} lost=${w.lost}`);
          expect(w.outageMs).toBeLessThanOrEqual(OUTAGE_BOUND_MS);
          expect(ping.window(Date.now() - 1000).received).toBeGreaterThanOrEqual(5);
          expect(subnetOf(s).lastSwitch).toMatchObject({ from: a, to: b, reason: "active-down" });

          // A returns: healthy again, and the laptop stays on B for 40 s.
          await office.startGateway();
          s = await office.waitStatus("laptop", (x) => healthyIn(x, a), 30_000);
          const switched = subnetOf(s).lastSwitch;
          const tReturn = Date.now();
          lap("a: A back and healthy; no-flap window starts");
          const concurrent = (async () => {
            const text = await office.statusText("laptop");
            expect(text).toContain(`Subnet: ${LAN.prefix}`);
            expect(text).toMatch(new RegExp(`Active gateway: +${b} \\(gateway-b\\)`));
            expect(text).toMatch(new RegExp(`Last switch: +${a} \\(\\S+\\) -> ${b} \\(gateway-b\\) \\(active-down\\), \\d+ seconds? ago`));
            expect(text).toMatch(new RegExp(`${a} \\(\\S+\\): up, RTT [0-9.]+ ms, priority 100\\n`));
            // DNS forwards to the gateway failover chose.
            const st = await office.status("laptop");
            expect(st.dns?.forwardTo?.[0]).toContain(b);
            // Both gateways watch their LAN and reach it.
            for (const which of ["gateway", "gateway2"] as const) {
              const g = await office.status(which);
              expect(g.upstream).toContainEqual(expect.objectContaining({ prefix: LAN.prefix, withdrawn: false, linkUp: true }));
            }
            lap("a: concurrent checks done");
          })();
          concurrent.catch(() => {}); // awaited (and so reported) after the window
          let polls = 0;
          while (Date.now() - tReturn < NO_FLAP_MS) {
            const x = subnetOf(await office.status("laptop"));
            expect(x.active).toBe(b);
            expect(x.lastSwitch).toEqual(switched);
            expect(x.candidates.every((c: any) => c.healthy)).toBe(true);
            polls++;
            await Bun.sleep(2000);
          }
          await concurrent;
          w = ping.window(tReturn);
          lap(`a: no flap for ${Date.now() - tReturn} ms (${polls} polls), lost=${w.lost}`);
          expect(w.lost).toBeLessThanOrEqual(1);
          expect(w.received).toBeGreaterThan((NO_FLAP_MS / 100) * 0.8);

          // (b) The active gateway (B) loses its LAN link.
          t = Date.now();
          await rig.exec(ns.gateway2!, ["ip", "link", "set", office.links.gateway2Lan, "down"]);
          s = await activeOn(office, a);
          const gw2 = await office.status("gateway2");
          expect(gw2.upstream).toContainEqual(expect.objectContaining({ prefix: LAN.prefix, withdrawn: true, reason: "link-down", linkUp: false }));
          const elapsed = Date.now() - t;
          if (elapsed < 1500) await Bun.sleep(1500 - elapsed);
          w = ping.window(t - 1000);
          lap(`b: outage_ms=${w.outageMs} lost=${w.lost}`);
          expect(w.outageMs).toBeLessThanOrEqual(OUTAGE_BOUND_MS);
          f = subnetOf(s);
          expect(f.lastSwitch).toMatchObject({ from: b, to: a, reason: "withdrawn" });
          expect(f.candidates.find((c: any) => c.id === b)).toMatchObject({ state: "withdrawn", healthy: false });
          await rig.exec(ns.gateway2!, ["ip", "link", "set", office.links.gateway2Lan, "up"]);
          await office.waitStatus("laptop", (x) => healthyIn(x, b), 20_000);
          expect(subnetOf(await office.status("laptop")).active).toBe(a);
          lap("b: B's LAN back, B healthy standby, A still active");

          // (c) Drain the active gateway (A): make-before-break.
          t = Date.now();
          await office.admin(["gateways", "drain", a, LAN.prefix]);
          s = await activeOn(office, b);
          await Bun.sleep(1500);
          w = ping.window(t - 1000);
          lap(`c: outage_ms=${w.outageMs} lost=${w.lost}`);
          expect(w.lost).toBeLessThanOrEqual(1);
          f = subnetOf(s);
          expect(f.lastSwitch).toMatchObject({ from: a, to: b, reason: "draining" });
          expect(f.candidates.find((c: any) => c.id === a)).toMatchObject({ draining: true, healthy: true });

          // (d) Graceful stop of the active gateway (B): it withdraws first; the drained A takes over.
          t = Date.now();
          const stopped = office.stopGateway2({ graceful: true });
          s = await activeOn(office, a);
          expect(await stopped).toBe(0);
          await Bun.sleep(1000);
          w = ping.window(t - 1000);
          lap(`d: outage_ms=${w.outageMs} lost=${w.lost}`);
          expect(w.lost).toBeLessThanOrEqual(1);
          expect(subnetOf(s).lastSwitch).toMatchObject({ from: b, to: a, reason: "withdrawn" });

          // Both gone: fail closed, nothing leaves by the default route.
          const dropsBefore = Number((await office.status("laptop")).drops?.["no-healthy-gateway"] ?? 0);
          expect(await office.stopGateway()).toBe(137);
          s = await activeOn(office, null);
          t = Date.now();
          await Bun.sleep(2000);
          expect(ping.window(t).received).toBe(0);
          s = await office.status("laptop");
          f = subnetOf(s);
          expect(f.effective).toEqual({ gateway: null, via: null, reason: "no-healthy-gateway" });
          expect(f.lastSwitch).toMatchObject({ from: a, to: null, reason: "active-down" });
          expect(f.candidates.every((c: any) => !c.healthy)).toBe(true);
          expect(Number(s.drops["no-healthy-gateway"])).toBeGreaterThan(dropsBefore + 10);
          expect(await office.statusText("laptop")).toContain("Active gateway:   none: no healthy gateway");
          expect((await rig.exec(ns.laptop, ["ip", "-4", "route", "get", LAN.printer])).stdout).toContain(`dev ${tun}`);
          expect(await leaks()).toBe(0);
          lap("both gone: fail closed, no leak");
        } finally {
          await ping.stop();
        }
      }),
    150_000,
  );
});
