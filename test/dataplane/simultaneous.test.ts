/**
 * @module test/dataplane/simultaneous
 * Both sides initiate at the same instant (two agents that get each other as peers with traffic
 * queued): the initiations cross. The side with the greater key wins and only the other answers;
 * both must hold one shared session within a few ms of fake time, never after a REKEY_TIMEOUT
 * retry. Deterministic crossing orders first, then every interleaving of the in-flight messages
 * (property), rekeys afterwards, and a peer that behaves as wireguard-go does (it forgets its own
 * initiation when it answers the other's).
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { CROSSING_WINDOW_MS } from "../../core/dataplane/device.ts";
import { icmpEcho, type Datagram, type Node, twoDevices } from "./memory.ts";

const ping = (seq = 1) => icmpEcho({ src: "10.0.0.1", dst: "10.0.0.2", seq });
const pong = (seq = 1) => icmpEcho({ src: "10.0.0.2", dst: "10.0.0.1", seq, reply: true });
const peerOf = (n: Node) => n.device.stats().peers[0]!;
const types = (q: Datagram[]) => q.map((d) => d.data[0]);

/** Both devices know each other's endpoint, have a packet queued, and have each sent an initiation. */
function crossing(seed = 1) {
  const rig = twoDevices({ bKnowsA: true, seed });
  rig.a.device.handleTunPacket(ping(1));
  rig.b.device.handleTunPacket(pong(1));
  expect(types(rig.net.queue)).toEqual([1, 1]);
  return rig;
}

/** A seeded index picker for shuffled deliveries. */
function seededOrder(seed: number): (n: number) => number {
  let x = seed * 2654435761 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

/** Whether `n`'s initiation wins a crossing (its static public key is the greater). */
function wins(rig: ReturnType<typeof twoDevices>, n: Node): boolean {
  const other = n === rig.a ? rig.b : rig.a;
  return Buffer.compare(Buffer.from(n.publicKey, "base64"), Buffer.from(other.publicKey, "base64")) > 0;
}

function deliverOne(rig: ReturnType<typeof twoDevices>, d: Datagram): void {
  const host = d.to.address === rig.a.endpoint.address ? rig.a : rig.b;
  host.device.handleDatagram(d.data, d.from);
}

/** Both ends send on one session, as after a single handshake (mirrored receiver indices). */
function expectOneSession(rig: ReturnType<typeof twoDevices>): void {
  const ia = rig.a.device.sessionInfo(rig.b.publicKey)!.currentIndices;
  const ib = rig.b.device.sessionInfo(rig.a.publicKey)!.currentIndices;
  expect(ia).not.toBeNull();
  expect(ib).toEqual([ia![1], ia![0]]);
}

/** Then both sides talk at once on the sessions they hold: no initiation, both packets delivered. */
function expectSteadyState(rig: ReturnType<typeof twoDevices>, seq: number): void {
  const { a, b, net } = rig;
  expectOneSession(rig);
  a.device.handleTunPacket(ping(seq));
  b.device.handleTunPacket(pong(seq));
  expect(types(net.queue)).toEqual([4, 4]);
  net.deliver();
  expect(b.tun.take()).toEqual([ping(seq)]);
  expect(a.tun.take()).toEqual([pong(seq)]);
  expect(types(net.queue)).toEqual([]);
}

describe("simultaneous handshake initiation", () => {
  test("initiations cross before either response: both sides converge at once, no retry", () => {
    const rig = crossing();
    const { a, b, net, clock } = rig;
    const start = clock.now();
    const [initA, initB] = net.take();
    // Both initiations arrive before any response leaves.
    b.device.handleDatagram(initA!.data, initA!.from);
    a.device.handleDatagram(initB!.data, initB!.from);
    // Only the loser of the tie answers; the winner keeps its own initiation in flight.
    expect(types(net.queue)).toEqual([2]);
    clock.advance(1);
    net.deliver();
    expect(b.tun.take()).toEqual([ping(1)]);
    expect(a.tun.take()).toEqual([pong(1)]);
    expect(clock.now() - start).toBeLessThan(5);
    for (const [n, other] of [
      [a, b],
      [b, a],
    ] as const) {
      expect(n.device.sessionInfo(other.publicKey)).toMatchObject({ current: true, staged: 0 });
      expect(peerOf(n).handshakeInitiations).toBe(1);
      expect(peerOf(n).drops).toEqual({});
      expect(n.device.stats().drops).toEqual({});
    }
    expectSteadyState(rig, 2);
    // No retransmission is pending: nothing to send for the next REKEY_TIMEOUT and more.
    for (let t = 0; t < 6_000; t += 100) {
      clock.advance(100);
      a.device.tick();
      b.device.tick();
    }
    expect(types(net.queue).filter((t) => t === 1)).toEqual([]);
  });

  test("the loser's response overtakes the loser's own initiation", () => {
    const rig = crossing(2);
    const { a, b, net } = rig;
    const [initA, initB] = net.take();
    const [win, lose, winInit, loseInit] = wins(rig, a) ? [a, b, initA!, initB!] : [b, a, initB!, initA!];
    lose.device.handleDatagram(winInit.data, winInit.from); // the loser (initiation pending) answers
    const [resp] = net.take();
    expect(types([resp!])).toEqual([2]);
    win.device.handleDatagram(resp!.data, resp!.from); // the winner completes, sends its packet
    win.device.handleDatagram(loseInit.data, loseInit.from); // then sees the loser's: a new handshake
    net.deliver();
    expect(b.tun.take()).toEqual([ping(1)]);
    expect(a.tun.take()).toEqual([pong(1)]);
    expectSteadyState(rig, 2);
  });

  test("every delivery order of the crossing messages converges without REKEY_TIMEOUT (property)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1_000_000 }), fc.array(fc.nat(), { minLength: 64, maxLength: 64 }), (seed, picks) => {
        const rig = crossing(seed);
        const { a, b, net, clock } = rig;
        const start = clock.now();
        let step = 0;
        while (net.queue.length > 0) {
          if (step > 200) throw new Error("did not settle");
          const i = picks[step % picks.length]! % net.queue.length;
          step++;
          const [d] = net.queue.splice(i, 1);
          clock.advance(1);
          deliverOne(rig, d!);
        }
        expect(b.tun.take()).toEqual([ping(1)]);
        expect(a.tun.take()).toEqual([pong(1)]);
        expect(clock.now() - start).toBeLessThan(100);
        expect(peerOf(a).drops).toEqual({});
        expect(peerOf(b).drops).toEqual({});
        expect(a.device.stats().drops).toEqual({});
        expect(b.device.stats().drops).toEqual({});
        expectSteadyState(rig, 2);
        expect(peerOf(a).handshakeInitiations + peerOf(b).handshakeInitiations).toBe(2);
      }),
      { numRuns: 300, seed: 11 },
    );
  });

  test("after a crossing, rekeys under traffic both ways lose nothing (one session, not two)", () => {
    // Were each side left sending on its own initiator session, holding the peer's only as
    // `previous`, the next rotation would delete that under the peer's in-flight packets.
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const rig = crossing(seed);
      const { a, b, net, clock } = rig;
      net.deliver();
      expect(b.tun.take().length + a.tun.take().length).toBe(2);
      let sent = 0;
      const order = seededOrder(seed);
      for (let ms = 0; ms < 400_000; ms += 1_000) {
        clock.advance(1_000);
        a.device.handleTunPacket(ping(sent));
        b.device.handleTunPacket(pong(sent));
        sent++;
        // In flight both ways at once, delivered in a shuffled order.
        while (net.queue.length > 0) {
          const [d] = net.queue.splice(order(net.queue.length), 1);
          deliverOne(rig, d!);
        }
        a.device.tick();
        b.device.tick();
      }
      net.deliver();
      expect(b.tun.take().length).toBe(sent);
      expect(a.tun.take().length).toBe(sent);
      expect(peerOf(a).handshakes).toBeGreaterThanOrEqual(3);
      for (const n of [a, b]) {
        expect(peerOf(n).drops).toEqual({});
        expect(n.device.stats().drops).toEqual({});
      }
      expectOneSession(rig);
    }
  });

  test("an initiation of ours older than CROSSING_WINDOW_MS is taken as lost: the peer's is answered at once", () => {
    // E.g. the peer restarted: our unanswered initiation went nowhere, then the peer initiates.
    for (const seed of [1, 2]) {
      const rig = twoDevices({ bKnowsA: true, seed });
      const { a, b, net, clock } = rig;
      const [win, lose] = wins(rig, a) ? [a, b] : [b, a];
      const toLoser = win === a ? ping(1) : pong(1);
      const toWinner = win === a ? pong(1) : ping(1);
      win.device.handleTunPacket(toLoser);
      net.take(); // lost
      clock.advance(CROSSING_WINDOW_MS);
      const start = clock.now();
      lose.device.handleTunPacket(toWinner);
      net.deliver();
      expect(win.tun.take()).toEqual([toWinner]);
      expect(lose.tun.take()).toEqual([toLoser]); // the winner's staged packet follows the new session
      expect(clock.now() - start).toBe(0);
      expectSteadyState(rig, 2);
    }
  });

  test("inside the window the winner ignores the loser's initiation: a lost winner's initiation costs one REKEY_TIMEOUT", () => {
    const rig = twoDevices({ bKnowsA: true, seed: 3 });
    const { a, b, net, clock } = rig;
    const [win, lose] = wins(rig, a) ? [a, b] : [b, a];
    win.device.handleTunPacket(win === a ? ping(1) : pong(1));
    net.take(); // the winner's initiation is lost
    clock.advance(10);
    lose.device.handleTunPacket(win === a ? pong(1) : ping(1));
    net.deliver(); // the winner does not answer it
    expect(types(net.queue)).toEqual([]);
    let waited = 0;
    while (a.tun.packets.length === 0 || b.tun.packets.length === 0) {
      clock.advance(100);
      waited += 100;
      a.device.tick();
      b.device.tick();
      net.deliver();
      expect(waited).toBeLessThanOrEqual(5_000 + 334 + 100);
    }
    expect(b.tun.take()).toEqual([ping(1)]);
    expect(a.tun.take()).toEqual([pong(1)]);
    expectSteadyState(rig, 2);
  });

  for (const role of ["winner", "loser"] as const) {
    test(`as the ${role}, against a peer that forgets its own initiation when it answers (wireguard-go)`, () => {
      // The peer's initiation is older than the window at the peer when ours arrives, so the
      // peer forgets it and answers ours, as wireguard-go always does; ours is fresh.
      const rig = twoDevices({ bKnowsA: true, seed: 6 });
      const { a, b, net, clock } = rig;
      const us = (role === "winner") === wins(rig, a) ? a : b;
      const peer = us === a ? b : a;
      const toPeer = us === a ? ping(1) : pong(1);
      const toUs = us === a ? pong(1) : ping(1);
      peer.device.handleTunPacket(toUs);
      const [peerInit] = net.take();
      clock.advance(CROSSING_WINDOW_MS);
      us.device.handleTunPacket(toPeer);
      const [ourInit] = net.take();
      us.device.handleDatagram(peerInit!.data, peerInit!.from); // crossing, at our end
      peer.device.handleDatagram(ourInit!.data, ourInit!.from); // the peer answers ours, forgets its own
      net.deliver();
      expect(peer.tun.take()).toEqual([toPeer]);
      expect(us.tun.take()).toEqual([toUs]);
      expect(peerOf(us).drops).toEqual({});
      expectSteadyState(rig, 2);
    });
  }
});
