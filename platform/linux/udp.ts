/**
 * @module platform/linux/udp
 * A UDP socket through bun:ffi with batched I/O: recvmmsg(2) fills up to `batchSize` slots in
 * one call, sendmmsg(2) sends what `queue` collected when `flush` runs (or a batch fills). FFI
 * sendmmsg (454k pkt/s) beat Bun.udpSocket send/sendMany (271k–423k), and FFI recvmmsg in a
 * Worker took half the CPU of the Bun.udpSocket callback (BUN-NOTES.md).
 *
 * The socket is AF_INET6 with IPV6_V6ONLY=0 (one socket for both families; IPv4 peers appear
 * as ::ffff:a.b.c.d and are reported as dotted quads), falling back to AF_INET where the kernel
 * has no IPv6. It is non-blocking; the host waits in poll(2) (`Poller`).
 *
 * Errors never escape the packet loop: EAGAIN ends a batch, anything else (ECONNREFUSED from an
 * ICMP error, ENETUNREACH, EPERM from a firewall, EMSGSIZE...) drops that datagram and is
 * counted by errno name in `counters.errors`.
 *
 * Offloads (opt-in: `gso`, `gro`; the host turns them on with its `offloads` switch):
 * - UDP GSO on send: `flush` groups consecutive queued datagrams to the same endpoint whose sizes
 *   are equal (the last may be shorter; ≤ 64 segments, < 64 KB) into one message with a
 *   UDP_SEGMENT cmsg: the kernel builds one skb for the group and segments it as late as it can
 *   (on veth/loopback: at the receiving socket, or never with UDP_GRO there). FFI send with GSO
 *   moved 2.29M segments/s vs sendmmsg's 454k (BUN-NOTES.md). Messages still go out through
 *   sendmmsg, so a batch with several endpoints or sizes is still one syscall. When the kernel
 *   refuses a GSO message (EIO: no checksum offload on the route's device; EINVAL), the socket
 *   remembers (`counters.gso` says why) and sends plain datagrams from then on.
 * - UDP GRO on receive: with the UDP_GRO socket option the kernel may hand over several
 *   datagrams of one sender as one buffer, with a UDP_GRO cmsg giving the segment size;
 *   `segmentSize(i)` returns it and the caller splits. `counters.received` counts datagrams.
 *
 * Layouts (LP64): struct mmsghdr = msghdr(56) + msg_len(u32) + pad = 64 bytes; msghdr:
 * name@0 namelen@8 iov@16 iovlen@24 control@32 controllen@40 flags@48; iovec = 16 bytes;
 * sockaddr_in6 = 28 bytes (family@0 port@2 BE, flowinfo@4, addr@8, scope@24); pollfd = 8 bytes;
 * cmsghdr = len(u64)@0 level(i32)@8 type(i32)@12 data@16, CMSG_SPACE(2 or 4) = 24.
 */
import type { Endpoint } from "../../core/dataplane/ports.ts";
import { WaygateError } from "../../core/errors.ts";
import {
  addressOf,
  AF_INET,
  AF_INET6,
  check,
  E,
  errno,
  errnoName,
  ffiBuffer,
  IPPROTO_IPV6,
  IPV6_V6ONLY,
  libc,
  MSG_DONTWAIT,
  MSG_TRUNC,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOL_SOCKET,
  SyscallError,
} from "./libc.ts";

const MMSG = 64;
const IOV = 16;
const SA = 32; // slot for a sockaddr_in6 (28) rounded up
const SOL_UDP = 17;
const UDP_SEGMENT = 103;
const UDP_GRO = 104;
const CMSG_SEND = 24; // CMSG_SPACE(sizeof(u16))
const CMSG_RECV = 64; // room for UDP_GRO (24) and anything unexpected
/** UDP_MAX_SEGMENTS on older kernels (newer ones allow 128). */
const GSO_MAX_SEGMENTS = 64;
/** A GSO message's payload must fit one IP packet's 16-bit length with headers. */
const GSO_MAX_BYTES = 65000;
/** Queue entries per flush when GSO is on: a few 64 KB TUN reads' worth of segments. */
const GSO_QUEUE = 512;
const TWO32 = 4294967296;

function setPtr(view: DataView, off: number, addr: number): void {
  view.setUint32(off, addr % TWO32, true);
  view.setUint32(off + 4, Math.floor(addr / TWO32), true);
}

export class UdpError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_PLATFORM", message, options);
  }
}

export interface UdpSocketOptions {
  /** 0 picks an ephemeral port; `port` reports the one bound. */
  port: number;
  /** "ipv4" forces AF_INET; default: dual-stack AF_INET6, AF_INET where IPv6 is missing. */
  family?: "dual" | "ipv4";
  /** Datagrams per recvmmsg/sendmmsg (default 64). */
  batchSize?: number;
  /** Largest datagram received or sent (default 65535); longer ones are dropped as truncated. */
  maxDatagram?: number;
  /** SO_RCVBUF/SO_SNDBUF request (default 4 MiB; forced when root). */
  bufferBytes?: number;
  /** Send groups of equal-size datagrams as UDP_SEGMENT messages (default false). */
  gso?: boolean;
  /** Ask for UDP_GRO on receive (default false); callers must honour `segmentSize(i)`. */
  gro?: boolean;
}

export interface UdpCounters {
  /** Datagrams (GRO buffers count as their segments). */
  received: number;
  /** Datagrams (a GSO message counts as its segments). */
  sent: number;
  truncated: number;
  /** Messages given to sendmmsg / taken from recvmmsg (≤ the datagram counts with offloads). */
  sendMessages: number;
  receiveMessages: number;
  /** "on", "off", or "refused:<errno>" once the kernel said no. */
  gso: string;
  /** "on", "off", or "refused:<errno>" when setsockopt(UDP_GRO) failed. */
  gro: string;
  /** Datagrams dropped on send, or receive calls that failed, by errno name. */
  errors: Record<string, number>;
}

export class UdpSocket {
  readonly fd: number;
  readonly port: number;
  readonly family: "dual" | "ipv4";
  readonly batchSize: number;
  readonly maxDatagram: number;
  readonly counters: UdpCounters = { received: 0, sent: 0, truncated: 0, sendMessages: 0, receiveMessages: 0, gso: "off", gro: "off", errors: {} };

  private readonly recvHdr: Uint8Array;
  private readonly recvHdrView: DataView;
  private readonly recvNames: Uint8Array;
  private readonly recvData: Uint8Array;
  private readonly recvEndpoints: Endpoint[] = [];
  private readonly recvCtl: Uint8Array;
  private readonly recvCtlView: DataView;
  /** Per received message: its UDP_GRO segment size, 0 when none. */
  private readonly recvSeg: Int32Array;
  private readonly sendHdr: Uint8Array;
  private readonly sendHdrView: DataView;
  private readonly sendIov: Uint8Array;
  private readonly sendIovView: DataView;
  private readonly sendNames: Uint8Array;
  private readonly sendCtl: Uint8Array;
  private readonly sendCtlView: DataView;
  /** Queued datagrams, back to back. */
  private readonly sendData: Uint8Array;
  private readonly sendDataBase: number;
  private readonly sendIovBase: number;
  private readonly sendCtlBase: number;
  /** Queue entries (datagrams) and messages per flush. */
  private readonly sendCap: number;
  private readonly entOff: Int32Array;
  private readonly entLen: Int32Array;
  private readonly entSa: (Uint8Array | undefined)[];
  private readonly msgFirst: Int32Array;
  private readonly msgCount: Int32Array;
  private sendUsed = 0;
  private gsoOn: boolean;
  private readonly sockaddrCache = new WeakMap<Endpoint, Uint8Array>();
  private readonly endpointCache = new Map<number | string, Endpoint>();
  private pending = 0;
  private closed = false;
  /** Buffers only the kernel reads through pointers: kept alive with the socket. */
  private readonly keep: Uint8Array[] = [];

  constructor(options: UdpSocketOptions) {
    this.batchSize = options.batchSize ?? 64;
    this.maxDatagram = options.maxDatagram ?? 65535;
    let family: "dual" | "ipv4" = options.family ?? "dual";
    let fd = -1;
    if (family === "dual") {
      fd = libc.socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        const e = errno();
        if (e !== E.EAFNOSUPPORT) throw new UdpError("socket(AF_INET6)", { cause: new SyscallError("socket", e, "AF_INET6") });
        family = "ipv4";
      } else {
        const zero = ffiBuffer(4);
        if (libc.setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, zero, 4) < 0) {
          const e = errno();
          libc.close(fd);
          throw new UdpError("setsockopt IPV6_V6ONLY=0", { cause: new SyscallError("setsockopt", e, "IPV6_V6ONLY") });
        }
      }
    }
    if (family === "ipv4") fd = check(libc.socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), "socket", "AF_INET");
    this.fd = fd;
    this.family = family;
    try {
      this.setBuffer(SO_RCVBUFFORCE, SO_RCVBUF, options.bufferBytes ?? 4 << 20);
      this.setBuffer(SO_SNDBUFFORCE, SO_SNDBUF, options.bufferBytes ?? 4 << 20);
      const sa = ffiBuffer(SA);
      const dv = new DataView(sa.buffer);
      dv.setUint16(0, family === "dual" ? AF_INET6 : AF_INET, true);
      dv.setUint16(2, options.port, false);
      const len = family === "dual" ? 28 : 16;
      if (libc.bind(fd, sa, len) < 0) {
        throw new UdpError(`bind UDP port ${options.port}`, { cause: new SyscallError("bind", errno(), `port ${options.port}`) });
      }
      const lenBuf = ffiBuffer(4);
      new DataView(lenBuf.buffer).setUint32(0, SA, true);
      check(libc.getsockname(fd, sa, lenBuf), "getsockname");
      this.port = dv.getUint16(2, false);
    } catch (err) {
      libc.close(fd);
      throw err;
    }

    const n = this.batchSize;
    const max = this.maxDatagram;
    this.gsoOn = options.gso === true;
    this.counters.gso = this.gsoOn ? "on" : "off";
    if (options.gro === true) {
      const one = ffiBuffer(4);
      new DataView(one.buffer).setInt32(0, 1, true);
      this.counters.gro = libc.setsockopt(fd, SOL_UDP, UDP_GRO, one, 4) < 0 ? `refused:${errnoName(errno())}` : "on";
    }
    // Receive side: static msghdrs pointing at per-slot sockaddr, data and control.
    this.recvHdr = ffiBuffer(n * MMSG);
    this.recvHdrView = new DataView(this.recvHdr.buffer);
    const recvIov = ffiBuffer(n * IOV);
    const recvIovView = new DataView(recvIov.buffer);
    this.recvNames = ffiBuffer(n * SA);
    this.recvData = ffiBuffer(n * max);
    this.recvCtl = ffiBuffer(n * CMSG_RECV);
    this.recvCtlView = new DataView(this.recvCtl.buffer);
    this.recvSeg = new Int32Array(n);
    this.keep.push(recvIov);
    const recvIovBase = addressOf(recvIov);
    const recvNamesBase = addressOf(this.recvNames);
    const recvDataBase = addressOf(this.recvData);
    const recvCtlBase = addressOf(this.recvCtl);
    for (let i = 0; i < n; i++) {
      setPtr(recvIovView, i * IOV, recvDataBase + i * max);
      setPtr(recvIovView, i * IOV + 8, max);
      setPtr(this.recvHdrView, i * MMSG, recvNamesBase + i * SA);
      setPtr(this.recvHdrView, i * MMSG + 16, recvIovBase + i * IOV);
      setPtr(this.recvHdrView, i * MMSG + 24, 1);
      if (this.counters.gro === "on") setPtr(this.recvHdrView, i * MMSG + 32, recvCtlBase + i * CMSG_RECV);
    }
    // Send side: datagrams back to back in sendData; messages built at flush.
    const cap = this.gsoOn ? Math.max(n, GSO_QUEUE) : n;
    this.sendCap = cap;
    this.entOff = new Int32Array(cap);
    this.entLen = new Int32Array(cap);
    this.entSa = new Array<Uint8Array | undefined>(cap).fill(undefined);
    this.msgFirst = new Int32Array(cap);
    this.msgCount = new Int32Array(cap);
    this.sendHdr = ffiBuffer(cap * MMSG);
    this.sendHdrView = new DataView(this.sendHdr.buffer);
    this.sendIov = ffiBuffer(cap * IOV);
    this.sendIovView = new DataView(this.sendIov.buffer);
    this.sendNames = ffiBuffer(cap * SA);
    this.sendCtl = ffiBuffer(cap * CMSG_SEND);
    this.sendCtlView = new DataView(this.sendCtl.buffer);
    this.sendData = ffiBuffer(n * max);
    this.sendIovBase = addressOf(this.sendIov);
    this.sendCtlBase = addressOf(this.sendCtl);
    this.sendDataBase = addressOf(this.sendData);
    const sendNamesBase = addressOf(this.sendNames);
    for (let i = 0; i < cap; i++) {
      setPtr(this.sendHdrView, i * MMSG, sendNamesBase + i * SA);
      setPtr(this.sendHdrView, i * MMSG + 16, this.sendIovBase + i * IOV);
      setPtr(this.sendHdrView, i * MMSG + 24, 1);
      // A constant UDP_SEGMENT cmsg header per message; the u16 is set per flush.
      this.sendCtlView.setUint32(i * CMSG_SEND, 18, true); // cmsg_len = CMSG_LEN(2)
      this.sendCtlView.setInt32(i * CMSG_SEND + 8, SOL_UDP, true);
      this.sendCtlView.setInt32(i * CMSG_SEND + 12, UDP_SEGMENT, true);
    }
  }

  private setBuffer(force: number, plain: number, bytes: number): void {
    const v = ffiBuffer(4);
    new DataView(v.buffer).setInt32(0, bytes, true);
    // The FORCE variant ignores rmem_max/wmem_max but needs CAP_NET_ADMIN; fall back quietly.
    if (libc.setsockopt(this.fd, SOL_SOCKET, force, v, 4) < 0) libc.setsockopt(this.fd, SOL_SOCKET, plain, v, 4);
  }

  private countError(code: number): void {
    const name = errnoName(code);
    this.counters.errors[name] = (this.counters.errors[name] ?? 0) + 1;
  }

  /**
   * Receives up to `batchSize` datagrams without blocking; returns how many. Read them with
   * `datagram(i)` and `endpoint(i)` before the next call.
   */
  receive(): number {
    const n = this.batchSize;
    const hv = this.recvHdrView;
    const gro = this.counters.gro === "on";
    for (let i = 0; i < n; i++) {
      hv.setUint32(i * MMSG + 8, 28, true); // msg_namelen in/out
      hv.setUint32(i * MMSG + 48, 0, true); // msg_flags
      if (gro) hv.setUint32(i * MMSG + 40, CMSG_RECV, true); // msg_controllen in/out
    }
    for (;;) {
      const got = libc.recvmmsg(this.fd, this.recvHdr, n, MSG_DONTWAIT, null);
      if (got >= 0) {
        this.counters.receiveMessages += got;
        if (!gro) {
          this.counters.received += got;
          return got;
        }
        let datagrams = 0;
        for (let i = 0; i < got; i++) {
          const seg = this.groSegment(i);
          this.recvSeg[i] = seg;
          const len = hv.getUint32(i * MMSG + 56, true);
          datagrams += seg > 0 && len > seg ? Math.ceil(len / seg) : 1;
        }
        this.counters.received += datagrams;
        return got;
      }
      const e = errno();
      if (e === E.EINTR) continue;
      if (e !== E.EAGAIN) this.countError(e);
      return 0;
    }
  }

  /** The UDP_GRO cmsg of received message i, 0 when there is none. */
  private groSegment(i: number): number {
    const hv = this.recvHdrView;
    const cl = hv.getUint32(i * MMSG + 40, true);
    const cv = this.recvCtlView;
    let off = 0;
    while (off + 16 <= cl) {
      const len = cv.getUint32(i * CMSG_RECV + off, true);
      if (len < 16) break;
      if (cv.getInt32(i * CMSG_RECV + off + 8, true) === SOL_UDP && cv.getInt32(i * CMSG_RECV + off + 12, true) === UDP_GRO && len >= 18) {
        return len >= 20 ? cv.getInt32(i * CMSG_RECV + off + 16, true) : cv.getUint16(i * CMSG_RECV + off + 16, true);
      }
      off += (len + 7) & ~7;
    }
    return 0;
  }

  /**
   * Segment size of received message i when the kernel coalesced several datagrams (UDP_GRO):
   * `datagram(i)` then holds them back to back, each this long but the last. 0 otherwise.
   */
  segmentSize(i: number): number {
    return this.counters.gro === "on" ? this.recvSeg[i]! : 0;
  }

  /** Length of received datagram i, or -1 when it was truncated (and must be dropped). */
  length(i: number): number {
    const flags = this.recvHdrView.getUint32(i * MMSG + 48, true);
    if ((flags & MSG_TRUNC) !== 0) {
      this.counters.truncated++;
      return -1;
    }
    return this.recvHdrView.getUint32(i * MMSG + 56, true);
  }

  /** Received datagram i (a view valid until the next `receive`), or null if truncated. */
  datagram(i: number): Uint8Array | null {
    const len = this.length(i);
    if (len < 0) return null;
    const start = i * this.maxDatagram;
    return this.recvData.subarray(start, start + len);
  }

  /** Sender of datagram i. Objects are cached and shared: never mutate one. */
  endpoint(i: number): Endpoint {
    const off = i * SA;
    const b = this.recvNames;
    const family = b[off]! | (b[off + 1]! << 8);
    const port = (b[off + 2]! << 8) | b[off + 3]!;
    let key: number | string;
    let a0: number, a1: number, a2: number, a3: number;
    if (family === AF_INET) {
      a0 = b[off + 4]!; a1 = b[off + 5]!; a2 = b[off + 6]!; a3 = b[off + 7]!;
      key = (((a0 << 24) | (a1 << 16) | (a2 << 8) | a3) >>> 0) * 65536 + port;
    } else if (isV4Mapped(b, off + 8)) {
      a0 = b[off + 20]!; a1 = b[off + 21]!; a2 = b[off + 22]!; a3 = b[off + 23]!;
      key = (((a0 << 24) | (a1 << 16) | (a2 << 8) | a3) >>> 0) * 65536 + port;
    } else {
      key = `${formatIPv6(b.subarray(off + 8, off + 24))}|${port}`;
    }
    let ep = this.endpointCache.get(key);
    if (ep === undefined) {
      const address = typeof key === "number" ? `${a0!}.${a1!}.${a2!}.${a3!}` : key.slice(0, key.lastIndexOf("|"));
      ep = Object.freeze({ address, port });
      if (this.endpointCache.size >= 4096) this.endpointCache.clear();
      this.endpointCache.set(key, ep);
    }
    return ep;
  }

  /** Copies a datagram into the send queue; sends the queue when it is full. */
  queue(data: Uint8Array, to: Endpoint): void {
    const len = data.byteLength;
    if (len > this.maxDatagram) {
      this.countError(E.EMSGSIZE);
      return;
    }
    let sa = this.sockaddrCache.get(to);
    if (sa === undefined) {
      const encoded = encodeSockaddr(to, this.family);
      if (encoded === null) {
        this.countError(E.EAFNOSUPPORT);
        return;
      }
      sa = encoded;
      this.sockaddrCache.set(to, sa);
    }
    if (this.sendUsed + len > this.sendData.byteLength) this.flush();
    const i = this.pending;
    this.entOff[i] = this.sendUsed;
    this.entLen[i] = len;
    this.entSa[i] = sa;
    this.sendData.set(data, this.sendUsed);
    // 8-byte aligned starts, unless the datagram may join a GSO group (must be contiguous).
    this.sendUsed += this.gsoOn ? len : (len + 7) & ~7;
    this.pending = i + 1;
    if (this.pending === this.sendCap) this.flush();
  }

  /** Messages for entries [from, total): GSO groups while GSO is on, else one each. */
  private build(from: number, total: number): number {
    const hv = this.sendHdrView;
    const iv = this.sendIovView;
    const gso = this.gsoOn;
    let m = 0;
    let j = from;
    while (j < total) {
      const sa = this.entSa[j]!;
      const seg = this.entLen[j]!;
      const start = this.entOff[j]!;
      let bytes = seg;
      let k = j + 1;
      if (gso && seg > 0) {
        const maxSegs = Math.min(GSO_MAX_SEGMENTS, Math.floor(GSO_MAX_BYTES / seg));
        while (k < total && k - j < maxSegs) {
          const l = this.entLen[k]!;
          const other = this.entSa[k]!;
          if (l > seg || l === 0 || this.entOff[k] !== start + bytes || (other !== sa && !sameBytes(other, sa))) break;
          bytes += l;
          k++;
          if (l < seg) break; // a shorter one ends the group
        }
      }
      this.sendNames.set(sa, m * SA);
      hv.setUint32(m * MMSG + 8, sa.byteLength, true);
      setPtr(iv, m * IOV, this.sendDataBase + start);
      iv.setUint32(m * IOV + 8, bytes, true); // iov_len, high word stays 0
      if (k - j > 1) {
        this.sendCtlView.setUint16(m * CMSG_SEND + 16, seg, true);
        setPtr(hv, m * MMSG + 32, this.sendCtlBase + m * CMSG_SEND);
        hv.setUint32(m * MMSG + 40, CMSG_SEND, true);
      } else {
        setPtr(hv, m * MMSG + 32, 0);
        hv.setUint32(m * MMSG + 40, 0, true);
      }
      this.msgFirst[m] = j;
      this.msgCount[m] = k - j;
      m++;
      j = k;
    }
    return m;
  }

  /** Sends everything queued; returns how many datagrams the kernel took. */
  flush(): number {
    const total = this.pending;
    if (total === 0) return 0;
    let messages = this.build(0, total);
    let i = 0;
    let sent = 0;
    let again = 0;
    while (i < messages) {
      const r = libc.sendmmsg(this.fd, this.sendHdr.subarray(i * MMSG), messages - i, MSG_DONTWAIT);
      if (r > 0) {
        for (let k = i; k < i + r; k++) sent += this.msgCount[k]!;
        this.counters.sendMessages += r;
        i += r;
        again = 0;
        continue;
      }
      const e = r < 0 ? errno() : E.EAGAIN;
      if (e === E.EINTR) continue;
      if (e === E.EAGAIN || e === E.ENOBUFS) {
        // Socket buffer full: wait briefly for room, a few times, then drop the rest.
        if (++again <= 3 && waitWritable(this.fd, 5)) continue;
        for (let k = i; k < messages; k++) this.countErrors(e, this.msgCount[k]!);
        break;
      }
      if (this.msgCount[i]! > 1 && (e === E.EIO || e === E.EINVAL)) {
        // The kernel will not segment for us (e.g. no checksum offload on the route's device):
        // remember, and resend from this message on as plain datagrams.
        this.gsoOn = false;
        this.counters.gso = `refused:${errnoName(e)}`;
        const first = this.msgFirst[i]!;
        messages = this.build(first, total);
        i = 0;
        continue;
      }
      // This message failed (ECONNREFUSED, ENETUNREACH, EPERM, EMSGSIZE...): drop it, go on.
      this.countErrors(e, this.msgCount[i]!);
      i++;
    }
    this.counters.sent += sent;
    this.pending = 0;
    this.sendUsed = 0;
    for (let k = 0; k < total; k++) this.entSa[k] = undefined;
    return sent;
  }

  private countErrors(code: number, n: number): void {
    const name = errnoName(code);
    this.counters.errors[name] = (this.counters.errors[name] ?? 0) + n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pending = 0;
    libc.close(this.fd);
  }
}

const pollOne = ffiBuffer(8);
const pollOneView = new DataView(pollOne.buffer);
function waitWritable(fd: number, ms: number): boolean {
  pollOneView.setInt32(0, fd, true);
  pollOneView.setInt16(4, 0x004, true);
  pollOneView.setInt16(6, 0, true);
  return libc.poll(pollOne, 1, ms) > 0;
}

/** poll(2) over a fixed set of fds. */
export class Poller {
  private readonly fds: Uint8Array;
  private readonly view: DataView;
  constructor(readonly fdList: readonly number[], events = 0x001) {
    this.fds = ffiBuffer(fdList.length * 8);
    this.view = new DataView(this.fds.buffer);
    fdList.forEach((fd, i) => {
      this.view.setInt32(i * 8, fd, true);
      this.view.setInt16(i * 8 + 4, events, true);
    });
  }
  /** Waits up to `timeoutMs` (-1: forever); number of ready fds, 0 on timeout or EINTR. */
  wait(timeoutMs: number): number {
    for (let i = 0; i < this.fdList.length; i++) this.view.setInt16(i * 8 + 6, 0, true);
    const r = libc.poll(this.fds, this.fdList.length, timeoutMs);
    if (r >= 0) return r;
    const e = errno();
    if (e === E.EINTR) return 0;
    throw new SyscallError("poll", e, this.fdList.join(","));
  }
  revents(i: number): number {
    return this.view.getInt16(i * 8 + 6, true);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let k = 0; k < a.byteLength; k++) if (a[k] !== b[k]) return false;
  return true;
}

function isV4Mapped(b: Uint8Array, off: number): boolean {
  for (let k = 0; k < 10; k++) if (b[off + k] !== 0) return false;
  return b[off + 10] === 0xff && b[off + 11] === 0xff;
}

/** Canonical (RFC 5952) text of 16 address bytes. */
export function formatIPv6(bytes: Uint8Array): string {
  const words: number[] = [];
  for (let k = 0; k < 16; k += 2) words.push((bytes[k]! << 8) | bytes[k + 1]!);
  let bestStart = -1;
  let bestLen = 0;
  for (let k = 0; k < 8; ) {
    if (words[k] !== 0) {
      k++;
      continue;
    }
    let j = k;
    while (j < 8 && words[j] === 0) j++;
    if (j - k > bestLen && j - k >= 2) {
      bestStart = k;
      bestLen = j - k;
    }
    k = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(":");
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLen))}`;
}

export function parseIPv4(text: string): Uint8Array | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (m === null) return null;
  const out = new Uint8Array(4);
  for (let k = 0; k < 4; k++) {
    const v = Number(m[k + 1]);
    if (v > 255) return null;
    out[k] = v;
  }
  return out;
}

export function parseIPv6(text: string): Uint8Array | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const part = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    const groups = s.split(":");
    for (let k = 0; k < groups.length; k++) {
      const g = groups[k]!;
      if (k === groups.length - 1 && g.includes(".")) {
        const v4 = parseIPv4(g);
        if (v4 === null) return null;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const head = part(halves[0]!);
  const tail = halves.length === 2 ? part(halves[1]!) : [];
  if (head === null || tail === null) return null;
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return null;
  const words = [...head, ...new Array<number>(halves.length === 2 ? fill : 0).fill(0), ...tail];
  const out = new Uint8Array(16);
  words.forEach((w, k) => {
    out[2 * k] = w >> 8;
    out[2 * k + 1] = w & 0xff;
  });
  return out;
}

/** sockaddr bytes for an endpoint on a socket of this family; null if it cannot be reached. */
export function encodeSockaddr(to: Endpoint, family: "dual" | "ipv4"): Uint8Array | null {
  const v4 = parseIPv4(to.address);
  if (family === "ipv4") {
    if (v4 === null) return null;
    const sa = new Uint8Array(16);
    sa[0] = AF_INET & 0xff;
    sa[2] = to.port >> 8;
    sa[3] = to.port & 0xff;
    sa.set(v4, 4);
    return sa;
  }
  let addr: Uint8Array | null;
  if (v4 !== null) {
    addr = new Uint8Array(16);
    addr[10] = 0xff;
    addr[11] = 0xff;
    addr.set(v4, 12);
  } else {
    addr = parseIPv6(to.address);
    if (addr === null) return null;
  }
  const sa = new Uint8Array(28);
  sa[0] = AF_INET6 & 0xff;
  sa[2] = to.port >> 8;
  sa[3] = to.port & 0xff;
  sa.set(addr, 8);
  return sa;
}
