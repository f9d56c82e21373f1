/**
 * @module test/firewall/tcp-peer
 * A tiny TCP peer for the namespace traffic tests (no nc on the machine). Run inside a namespace:
 *   bun tcp-peer.ts serve HOST PORT            prints "listening", then answers every connection
 *                                              with the source address it sees ("printer view")
 *   bun tcp-peer.ts connect HOST PORT MS       prints the first line the server sent, or
 *                                              "timeout" / "error: …" (exit 2 / 3)
 */
const [mode, host, portText, msText] = process.argv.slice(2);
const port = Number(portText);

if (mode === "serve") {
  Bun.listen({
    hostname: host!,
    port,
    socket: {
      open(socket) {
        socket.write(`${socket.remoteAddress}\n`);
        socket.end();
      },
      data() {},
    },
  });
  console.log("listening");
} else if (mode === "connect") {
  const ms = Number(msText ?? 1000);
  const timer = setTimeout(() => {
    console.log("timeout");
    process.exit(2);
  }, ms);
  let got = "";
  try {
    await Bun.connect({
      hostname: host!,
      port,
      socket: {
        data(_socket, data) {
          got += Buffer.from(data).toString();
          if (got.includes("\n")) {
            clearTimeout(timer);
            console.log(got.trim());
            process.exit(0);
          }
        },
      },
    });
  } catch (err) {
    clearTimeout(timer);
    console.log(`error: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(3);
  }
} else {
  console.error("usage: tcp-peer.ts serve HOST PORT | connect HOST PORT MS");
  process.exit(64);
}
export {};
