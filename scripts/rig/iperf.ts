/**
 * @module scripts/rig/iperf
 * One iperf3 TCP run between two rig namespaces: a one-off server (`-s -1`) bound to the
 * tunnel address, the client with `-J`, the figures taken from its JSON. Used by the e2e tests
 * (which assert only that it completed and moved bytes) and by scripts/bench/throughput.ts.
 */
import { lineReader, type Rig, RigError } from "./netns.ts";

export interface IperfOptions {
  serverNs: string;
  clientNs: string;
  serverAddress: string;
  seconds: number;
  port?: number;
  /** Extra client arguments (e.g. ["-R"]). */
  clientArgs?: readonly string[];
}

export interface IperfResult {
  exitCode: number;
  bytesReceived: number;
  /** Receiver-side throughput, bit/s. */
  bitsPerSecond: number;
  retransmits: number;
  /** The client's JSON, or null when it printed none. */
  json: any;
  stderr: string;
}

export async function iperf3(rig: Rig, options: IperfOptions): Promise<IperfResult> {
  const port = options.port ?? 5201;
  const server = rig.spawn(options.serverNs, ["iperf3", "-s", "-1", "--forceflush", "-B", options.serverAddress, "-p", String(port)], { stdout: "pipe", stderr: "pipe" });
  try {
    const out = lineReader(server.subprocess.stdout as ReadableStream<Uint8Array>);
    for (;;) {
      const line = await out.next(5000);
      if (line.includes("Server listening")) break;
    }
    const r = await rig.exec(
      options.clientNs,
      ["iperf3", "-c", options.serverAddress, "-p", String(port), "-t", String(options.seconds), "-J", ...(options.clientArgs ?? [])],
      { allowFailure: true },
    );
    let json: any = null;
    try {
      json = JSON.parse(r.stdout);
    } catch {
      // stays null: reported through exitCode and stderr
    }
    return {
      exitCode: r.exitCode,
      bytesReceived: Number(json?.end?.sum_received?.bytes ?? 0),
      bitsPerSecond: Number(json?.end?.sum_received?.bits_per_second ?? 0),
      retransmits: Number(json?.end?.sum_sent?.retransmits ?? 0),
      json,
      stderr: r.stderr || (json?.error ? String(json.error) : ""),
    };
  } catch (err) {
    throw new RigError(`iperf3 ${options.clientNs} -> ${options.serverAddress}: ${String(err)}`, { cause: err });
  } finally {
    await server.stop(1000);
  }
}
