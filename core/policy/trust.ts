/**
 * @module core/policy/trust
 * Trust requirements of gateway access policies: the sender's public IP within listed CIDRs,
 * and time-of-day windows. Pure functions of the policy, the sender and an injected `now`
 * (milliseconds since the epoch); both the compiler and the oracle call these, so they have
 * their own unit tests (test/policy/trust.test.ts).
 */
import { parseAddress, parsePrefix, prefixContainsAddress } from "../net/address.ts";
import { DAYS, type Day, type System, type TimeWindow, type TrustRequirements } from "./model.ts";

const DAY_MS = 86_400_000;
const MINUTE_MS = 60_000;

function clockMinutes(text: string): number {
  return Number(text.slice(0, 2)) * 60 + Number(text.slice(3, 5));
}

/** Whether `now` falls inside the window (model.ts rule 9). */
export function timeWindowContains(w: TimeWindow, now: number): boolean {
  const local = now + w.utcOffsetMinutes * MINUTE_MS;
  const dayIndex = Math.floor(local / DAY_MS);
  const msOfDay = local - dayIndex * DAY_MS;
  // 1970-01-01 was a Thursday (index 4 in DAYS).
  const today = DAYS[(((dayIndex + 4) % 7) + 7) % 7]!;
  const yesterday = DAYS[(((dayIndex + 3) % 7) + 7) % 7]!;
  const start = clockMinutes(w.start) * MINUTE_MS;
  const end = clockMinutes(w.end) * MINUTE_MS;
  if (start < end) return w.days.includes(today) && msOfDay >= start && msOfDay < end;
  return (w.days.includes(today) && msOfDay >= start) || (w.days.includes(yesterday) && msOfDay < end);
}

/** The first instant after `now` at which the window opens or closes, or null if it never does. */
export function nextWindowBoundary(w: TimeWindow, now: number): number | null {
  const offset = w.utcOffsetMinutes * MINUTE_MS;
  const localDay = Math.floor((now + offset) / DAY_MS);
  const start = clockMinutes(w.start);
  const endRaw = clockMinutes(w.end);
  const end = endRaw <= start ? endRaw + 1440 : endRaw;
  let best: number | null = null;
  for (let k = -1; k <= 8; k++) {
    const day = localDay + k;
    if (!w.days.includes(DAYS[(((day + 4) % 7) + 7) % 7]!)) continue;
    for (const minute of [start, end]) {
      const at = day * DAY_MS + minute * MINUTE_MS - offset;
      if (at > now && (best === null || at < best)) best = at;
    }
  }
  return best;
}

const WEEK_ORDER: readonly Day[] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

function offsetText(minutes: number): string {
  const sign = minutes < 0 ? "-" : "+";
  const abs = Math.abs(minutes);
  return `UTC${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
}

/** "mon-fri 08:00-18:00", with " UTC+01:00" when the window is not in UTC. */
export function describeTimeWindow(w: TimeWindow): string {
  const present = WEEK_ORDER.map((d) => w.days.includes(d));
  const parts: string[] = [];
  for (let i = 0; i < 7; ) {
    if (!present[i]) {
      i++;
      continue;
    }
    let j = i;
    while (j + 1 < 7 && present[j + 1]) j++;
    if (j - i >= 2) parts.push(`${WEEK_ORDER[i]}-${WEEK_ORDER[j]}`);
    else for (let k = i; k <= j; k++) parts.push(WEEK_ORDER[k]!);
    i = j + 1;
  }
  const zone = w.utcOffsetMinutes === 0 ? "" : ` ${offsetText(w.utcOffsetMinutes)}`;
  return `${parts.join(",")} ${w.start}-${w.end}${zone}`;
}

export type TrustVerdict = { ok: true } | { ok: false; reason: string };

/**
 * Whether the sender meets the trust requirements at `now`. The reason is the one explain()
 * prints: "trust requirement: public IP 203.0.113.9 not within 198.51.100.0/24" or
 * "outside time window mon-fri 08:00-18:00".
 */
export function checkTrust(trust: TrustRequirements | undefined, sender: System, now: number): TrustVerdict {
  if (trust === undefined) return { ok: true };
  if (trust.publicIpWithin !== undefined) {
    const within = trust.publicIpWithin.join(", ");
    if (sender.publicIp === undefined) {
      return { ok: false, reason: `trust requirement: public IP unknown, must be within ${within}` };
    }
    const ip = parseAddress(sender.publicIp);
    if (!trust.publicIpWithin.some((p) => prefixContainsAddress(parsePrefix(p), ip.bytes))) {
      return { ok: false, reason: `trust requirement: public IP ${ip.text} not within ${within}` };
    }
  }
  if (trust.timeWindows !== undefined && !trust.timeWindows.some((w) => timeWindowContains(w, now))) {
    return { ok: false, reason: `outside time window ${trust.timeWindows.map(describeTimeWindow).join(" or ")}` };
  }
  return { ok: true };
}
