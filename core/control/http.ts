/**
 * @module core/control/http
 * What the control plane's handlers share: the request context server.ts builds after
 * authentication, the route shape, the dependencies, and the JSON response helper.
 */
import type * as v from "valibot";
import type { Logger } from "../log.ts";
import type { Clock } from "../runner.ts";
import type { Store } from "../store/store.ts";
import type { Crypto, RandomSource } from "../wire/crypto.ts";
import type { NetMapHub } from "./netmaps.ts";

/** What a handler gets: the request, its parsed URL, params, body and who is calling. */
export interface RequestContext {
  readonly req: Request;
  readonly url: URL;
  readonly params: Record<string, string>;
  readonly bodyBytes: Uint8Array;
  /** Agent requests: the caller's public key (base64) and, once enrolled, its system id. */
  readonly agentKey?: string;
  readonly systemId?: string;
  readonly sourceIp: string | null;
  /** Parses and validates the JSON body; 400 names the field. */
  body<S extends v.GenericSchema>(schema: S): v.InferOutput<S>;
  /** Validates the query string as an object of strings. */
  query<S extends v.GenericSchema>(schema: S): v.InferOutput<S>;
}

export interface Route {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  /** Path with `:name` parameters. */
  path: string;
  handler: (ctx: RequestContext) => Promise<Response> | Response;
  /** Streams keep their connection open (no idle timeout). */
  stream?: boolean;
}

/** Everything the handlers share. */
export interface ServerDeps {
  store: Store;
  now: Clock;
  logger: Logger;
  crypto: Crypto;
  random: RandomSource;
  hub: NetMapHub;
  network: string;
  serverPublicKey: string;
  version: string;
  pingIntervalMs: number;
}

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

