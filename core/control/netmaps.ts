/**
 * @module core/control/netmaps
 * The control plane's in-memory view: the PolicyState loaded from the store, every system's
 * compiled NetMap with a revision, and the open NetMap streams. Admin writes and agent reports
 * call `invalidate()`; a refresh follows within `debounceMs` (25 ms by default), reloads the
 * state, recompiles only the affected systems (compile.ts `recompile`) and pushes to a stream
 * only when that system's NetMap text actually changed. Trust time windows are honoured with a
 * timer at compile.ts `nextTrustChange`.
 *
 * Revisions start at the clock's value when the server starts and only grow, so an agent never
 * sees a revision go backwards across a server restart.
 *
 * The state is read inside a store transaction: the store is one connection, and a read between
 * the awaits of another caller's open transaction would see writes that may yet roll back.
 */
import type { Logger } from "../log.ts";
import { compileAll, nextTrustChange, recompile } from "../policy/compile.ts";
import { emptyPolicyState, type PolicyState } from "../policy/model.ts";
import { netMapJson, type NetMap } from "../policy/netmap.ts";
import type { Clock } from "../runner.ts";
import { loadPolicyState } from "../store/policy-state.ts";
import type { Store } from "../store/store.ts";

export interface Subscriber {
  send(envelopeJson: string): void;
  /** The system went away (deleted): end the stream. */
  close(): void;
}

interface Compiled {
  netmap: NetMap;
  json: string;
  revision: number;
}

export interface NetMapHubOptions {
  store: Store;
  now: Clock;
  logger: Logger;
  debounceMs?: number;
}

export class NetMapHub {
  readonly #store: Store;
  readonly #now: Clock;
  readonly #log: Logger;
  readonly #debounceMs: number;
  #state: PolicyState = emptyPolicyState();
  #compiledAt = 0;
  #compiled = new Map<string, Compiled>();
  #revision: number;
  readonly #subscribers = new Map<string, Set<Subscriber>>();
  #debounce: ReturnType<typeof setTimeout> | undefined;
  #trustTimer: ReturnType<typeof setTimeout> | undefined;
  #running: Promise<void> | null = null;
  #again = false;
  #stopped = false;
  #ready: Promise<void>;

  constructor(options: NetMapHubOptions) {
    this.#store = options.store;
    this.#now = options.now;
    this.#log = options.logger;
    this.#debounceMs = options.debounceMs ?? 25;
    this.#revision = Math.max(1, Math.floor(options.now()));
    this.#ready = this.refresh();
  }

  /** Resolves once the first state is loaded. */
  ready(): Promise<void> {
    return this.#ready;
  }

  get state(): PolicyState {
    return this.#state;
  }

  /** The current envelope of one system, or null when it is not in the policy state. */
  envelope(systemId: string): { revision: number; netmap: NetMap; json: string } | null {
    const c = this.#compiled.get(systemId);
    if (c === undefined) return null;
    return { revision: c.revision, netmap: c.netmap, json: envelopeJson(c) };
  }

  isConnected(systemId: string): boolean {
    return (this.#subscribers.get(systemId)?.size ?? 0) > 0;
  }

  subscribe(systemId: string, sub: Subscriber): () => void {
    let set = this.#subscribers.get(systemId);
    if (set === undefined) this.#subscribers.set(systemId, (set = new Set()));
    set.add(sub);
    return () => {
      set.delete(sub);
      if (set.size === 0 && this.#subscribers.get(systemId) === set) this.#subscribers.delete(systemId);
    };
  }

  /** Something in the store changed: refresh soon (coalescing bursts of writes). */
  invalidate(): void {
    if (this.#stopped || this.#debounce !== undefined) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      void this.refresh().catch((err) => this.#log.error(`control: refresh failed error=${JSON.stringify(String(err))}`));
    }, this.#debounceMs);
  }

  /** Reloads and recompiles now; concurrent calls coalesce into one more run. */
  refresh(): Promise<void> {
    if (this.#running !== null) {
      this.#again = true;
      return this.#running;
    }
    const run = async () => {
      try {
        do {
          this.#again = false;
          await this.#refreshOnce();
        } while (this.#again && !this.#stopped);
      } finally {
        this.#running = null;
      }
    };
    this.#running = run();
    return this.#running;
  }

  async #refreshOnce(): Promise<void> {
    if (this.#stopped) return;
    const next = await this.#store.transaction((tx) => loadPolicyState(tx, { logger: this.#log }));
    const now = this.#now();
    const previous = new Map([...this.#compiled].map(([id, c]) => [id, c.netmap]));
    // recompile() assumes one `now` for both states; when a trust boundary passed in between,
    // everyone's NetMap may differ, so compile all of them.
    const boundary = nextTrustChange(this.#state, this.#compiledAt);
    const fresh = this.#compiled.size === 0 || (boundary !== null && boundary <= now);
    const netmaps = fresh ? compileAll(next, { now }) : recompile(previous, this.#state, next, { now }).netmaps;
    this.#apply(next, netmaps, now);
  }

  #apply(state: PolicyState, netmaps: Map<string, NetMap>, now: number): void {
    const compiled = new Map<string, Compiled>();
    const changed: string[] = [];
    for (const [id, netmap] of netmaps) {
      const before = this.#compiled.get(id);
      if (before !== undefined && before.netmap === netmap) {
        compiled.set(id, before);
        continue;
      }
      const json = netMapJson(netmap);
      if (before !== undefined && before.json === json) {
        compiled.set(id, { netmap, json, revision: before.revision });
        continue;
      }
      compiled.set(id, { netmap, json, revision: ++this.#revision });
      changed.push(id);
    }
    const gone = [...this.#compiled.keys()].filter((id) => !compiled.has(id));
    this.#state = state;
    this.#compiled = compiled;
    this.#compiledAt = now;
    if (changed.length > 0 || gone.length > 0) {
      this.#log.info(`control: netmaps systems=${compiled.size} changed=${changed.length} removed=${gone.length}`);
    }
    for (const id of changed) {
      const c = compiled.get(id)!;
      const text = envelopeJson(c);
      for (const sub of this.#subscribers.get(id) ?? []) sub.send(text);
    }
    for (const id of gone) for (const sub of this.#subscribers.get(id) ?? []) sub.close();
    this.#scheduleTrust(now);
  }

  #scheduleTrust(now: number): void {
    if (this.#trustTimer !== undefined) clearTimeout(this.#trustTimer);
    this.#trustTimer = undefined;
    const at = nextTrustChange(this.#state, now);
    if (at === null || this.#stopped) return;
    // setTimeout caps near 24.8 days; a later boundary is re-checked when the timer fires.
    const delay = Math.min(Math.max(0, at - now) + 5, 2 ** 31 - 1);
    this.#trustTimer = setTimeout(() => {
      this.#trustTimer = undefined;
      this.#log.info("control: trust window boundary, recompiling");
      void this.refresh().catch((err) => this.#log.error(`control: refresh failed error=${JSON.stringify(String(err))}`));
    }, delay);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#debounce !== undefined) clearTimeout(this.#debounce);
    if (this.#trustTimer !== undefined) clearTimeout(this.#trustTimer);
    for (const set of this.#subscribers.values()) for (const sub of set) sub.close();
    this.#subscribers.clear();
  }
}

function envelopeJson(c: Compiled): string {
  return `{"revision":${c.revision},"netmap":${c.json}}`;
}
