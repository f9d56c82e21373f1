/**
 * @module scripts/rig/udp-tool
 * A raw UDP sender/listener run inside a rig namespace (`ip netns exec <ns> bun
 * scripts/rig/udp-tool.ts '<json>'`) for the attack e2e tests. argv[2] is a ToolRequest; the
 * result is one JSON line on stdout.
 *
 *   send   sends the given datagrams (hex) from one socket, then listens `waitMs` and reports
 *          every datagram that came back (the malformed-input and replay cases expect none).
 *   flood  sends handshake initiations of the right size with a valid mac1 for the responder's
 *          public key (core/wire/cookie.ts) and junk elsewhere, from one source port, at
 *          `rate` per second for `durationMs`; counts the cookie replies (type 3, 64 bytes).
 */
import { randomFillSync } from "node:crypto";
import { INITIATION_SIZE, MESSAGE_COOKIE_REPLY, MESSAGE_INITIATION, COOKIE_REPLY_SIZE } from "../../core/wire/constants.ts";
import { MAC_SIZE, mac1Key } from "../../core/wire/cookie.ts";
import { nobleCrypto } from "../../core/wire/crypto-noble.ts";
import { decodeKey } from "../../core/wire/keys.ts";

export type ToolRequest =
  | { mode: "send"; to: { address: string; port: number }; datagrams: string[]; waitMs: number; bindPort?: number }
  | { mode: "flood"; to: { address: string; port: number }; responderPublicKey: string; rate: number; durationMs: number; waitMs?: number; bindPort?: number };

export interface ToolResult {
  sent: number;
  replies: { len: number; type: number }[];
  cookieReplies: number;
  localPort: number;
}

/** Flood messages: valid size, type and mac1; garbage ephemeral/static/timestamp; mac2 zero. */
export function floodInitiations(responderPublicKey: string, count: number): Uint8Array[] {
  const crypto = nobleCrypto();
  const key = mac1Key(crypto, decodeKey(responderPublicKey, "responder public key"));
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const msg = new Uint8Array(INITIATION_SIZE);
    randomFillSync(msg, 4, INITIATION_SIZE - 4 - 2 * MAC_SIZE);
    msg[0] = MESSAGE_INITIATION;
    const smac1 = INITIATION_SIZE - 2 * MAC_SIZE;
    msg.set(crypto.mac(key, MAC_SIZE, msg.subarray(0, smac1)), smac1);
    out.push(msg);
  }
  return out;
}

async function main(request: ToolRequest): Promise<ToolResult> {
  const replies: { len: number; type: number }[] = [];
  let cookieReplies = 0;
  const sock = await Bun.udpSocket({
    port: request.bindPort ?? 0,
    socket: {
      data(_s, buf) {
        const type = buf.length > 0 ? buf[0]! : -1;
        if (type === MESSAGE_COOKIE_REPLY && buf.length === COOKIE_REPLY_SIZE) cookieReplies++;
        if (replies.length < 1000) replies.push({ len: buf.length, type });
      },
    },
  });
  const { address, port } = request.to;
  let sent = 0;
  const send = (d: Uint8Array) => {
    try {
      if (sock.send(d, port, address)) sent++;
    } catch {
      // ECONNREFUSED from an earlier ICMP: the target is gone; keep counting what went out
    }
  };
  if (request.mode === "send") {
    for (const hex of request.datagrams) send(Buffer.from(hex, "hex"));
    await Bun.sleep(request.waitMs);
  } else {
    const messages = floodInitiations(request.responderPublicKey, 64);
    const tickMs = 5;
    const perTick = Math.max(1, Math.round((request.rate * tickMs) / 1000));
    const end = Date.now() + request.durationMs;
    let i = 0;
    while (Date.now() < end) {
      for (let k = 0; k < perTick; k++) send(messages[i++ % messages.length]!);
      await Bun.sleep(tickMs);
    }
    await Bun.sleep(request.waitMs ?? 200);
  }
  const localPort = sock.port;
  sock.close();
  return { sent, replies, cookieReplies, localPort };
}

if (import.meta.main) {
  const request = JSON.parse(process.argv[2] ?? "{}") as ToolRequest;
  const result = await main(request);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
