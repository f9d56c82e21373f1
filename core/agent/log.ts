/**
 * @module core/agent/log
 * Component tags for the agent's log: lines are written as `component: key=value ...` (agent,
 * control, engine, router, discover, state, ...); `taggedLogger` sends each to a logger tagged
 * with its component (consola's withTag), so `waygate run -v 5` shows `[agent] peer=add ...`,
 * `[engine] drop ...` and filtering by component is a grep for the tag. Lines without a
 * component prefix go to the base logger unchanged.
 */
import type { Logger } from "../log.ts";

export interface Taggable extends Logger {
  withTag(tag: string): Logger;
}

export function taggedLogger(base: Taggable): Logger {
  const tagged = new Map<string, Logger>();
  const forTag = (tag: string): Logger => {
    let l = tagged.get(tag);
    if (l === undefined) {
      l = base.withTag(tag);
      tagged.set(tag, l);
    }
    return l;
  };
  const route =
    (level: keyof Logger) =>
    (message: string, ...args: unknown[]): void => {
      const m = /^([a-z][a-z0-9-]{0,15})(?:\([^)]*\))?: (.*)$/s.exec(message);
      if (m) forTag(m[1]!)[level](m[2]!, ...args);
      else base[level](message, ...args);
    };
  return { debug: route("debug"), info: route("info"), warn: route("warn"), error: route("error") };
}

/** `-v LEVEL` -> consola level (0 errors only ... 3 info ... 4 debug, 5 trace: everything). */
export function verbosityLevel(text: string | undefined, fallback = 3): number {
  if (text === undefined || text === "") return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 5) return Number.NaN;
  return n;
}
