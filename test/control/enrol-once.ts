/**
 * @module test/control/enrol-once
 * A separate process that enrols once with a fresh key pair and prints the HTTP status; the
 * enrolment race test starts twenty of these at once. argv: SERVER_URL SERVER_PUBLIC_KEY KEY
 */
import { signAgentRequest } from "../../core/control/auth.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { generatePrivateKey } from "../../core/wire/keys.ts";

const [url, serverPublicKey, enrolmentKey] = process.argv.slice(2) as [string, string, string];
const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));
const body = JSON.stringify({ enrolmentKey, hostname: `proc-${process.pid}`, os: "linux", agentVersion: "test" });
const headers = signAgentRequest({
  privateKey: generatePrivateKey(random),
  serverPublicKey,
  method: "POST",
  pathWithQuery: "/v1/agent/enrol",
  body,
  now: () => Date.now(),
  random,
  crypto: nobleCrypto(),
});
const res = await fetch(`${url}/v1/agent/enrol`, { method: "POST", headers: { ...headers, "content-type": "application/json" }, body });
console.log(res.status);
