/**
 * @module platform/linux/tun
 * A Linux TUN device through bun:ffi: open /dev/net/tun, TUNSETIFF with IFF_TUN|IFF_NO_PI, then
 * plain read(2)/write(2) of whole IP packets on the fd. Blocking FFI read/write was the fastest
 * way Bun had to move TUN packets (~475k pkt/s, BUN-NOTES.md); the host makes the fd
 * non-blocking and waits in poll(2) instead, so one thread can serve TUN and UDP.
 *
 * The device lives in the network namespace of the calling thread and disappears when the last
 * fd closes (no TUNSETPERSIST): a crashed process leaves nothing behind.
 *
 * `openTun(name, { offloads: true })` asks for IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6):
 * every read and write then carries a 10-byte virtio_net_hdr and reads may be TCP super-packets
 * up to 64 KB (platform/linux/offload.ts splits and coalesces). Two bridged offload TUNs carried
 * 10.9 Gbit/s TCP vs 2.55 without (BUN-NOTES.md). Where the kernel refuses, the device is opened
 * again plainly and `offloadOff` says why. TSO_ECN and USO are not requested: the kernel then
 * segments those packets itself before we read them.
 */
import { WaygateError } from "../../core/errors.ts";
import { check, cString, E, errno, errnoName, ffiBuffer, libc, O_CLOEXEC, O_RDWR, type Pointer, setNonBlocking, SyscallError } from "./libc.ts";

export const TUNSETIFF = 0x400454ca;
export const IFF_TUN = 0x0001;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;
export const TUNSETOFFLOAD = 0x400454d0;
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_USO4 = 0x20;
export const TUN_F_USO6 = 0x40;
/** What openTun asks for with `offloads: true`. */
export const TUN_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;

export class TunError extends WaygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("E_PLATFORM", message, options);
  }
}

export interface Tun {
  readonly fd: number;
  /** The name the kernel gave the device (the requested one, or e.g. tun0 for "tun%d"). */
  readonly name: string;
  /** True when reads and writes carry a virtio_net_hdr (offloads on). */
  readonly vnetHdr: boolean;
  /** Why offloads are off when they were asked for ("" when on or not asked for). */
  readonly offloadOff: string;
  /** One packet into `buf`; its length, 0 when a non-blocking fd has nothing, -errno on error. */
  read(buf: Uint8Array): number;
  /** One packet out; its length or -errno. */
  write(packet: Uint8Array): number;
  setNonBlocking(): void;
  close(): void;
}

function tunError(what: string, cause: SyscallError): TunError {
  return new TunError(`${what}: ${cause.message}`, { cause });
}

/** Checks a name the way the kernel will (IFNAMSIZ includes the NUL). */
export function validateInterfaceName(name: string): void {
  if (name.length === 0 || name.length > IFNAMSIZ - 1 || !/^[A-Za-z0-9_.%-]+$/.test(name) || name === "." || name === "..") {
    throw new TunError(`invalid interface name ${JSON.stringify(name)} (1-15 chars of [A-Za-z0-9_.%-])`);
  }
}

export interface OpenTunOptions {
  /** IFF_VNET_HDR + TUNSETOFFLOAD(TUN_OFFLOADS), falling back to a plain TUN (default false). */
  offloads?: boolean;
}

/** Opens (creates) the TUN device `name` in the calling thread's network namespace. */
export function openTun(name: string, options: OpenTunOptions = {}): Tun {
  validateInterfaceName(name);
  if (options.offloads === true) {
    const fd = openFd(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR);
    if (fd.fd >= 0) {
      // The ioctl takes the flags as its argument value, not a pointer to them.
      if (libc.ioctl(fd.fd, TUNSETOFFLOAD, TUN_OFFLOADS as unknown as Pointer) >= 0) return wrap(fd.fd, fd.name, true, "");
      const reason = `TUNSETOFFLOAD:${errnoName(errno())}`;
      libc.close(fd.fd);
      const plain = openFd(name, IFF_TUN | IFF_NO_PI);
      if (plain.fd < 0) throw plain.error!;
      return wrap(plain.fd, plain.name, false, reason);
    }
    if (fd.errno !== E.EINVAL) throw fd.error!;
    const plain = openFd(name, IFF_TUN | IFF_NO_PI);
    if (plain.fd < 0) throw plain.error!;
    return wrap(plain.fd, plain.name, false, "IFF_VNET_HDR:EINVAL");
  }
  const fd = openFd(name, IFF_TUN | IFF_NO_PI);
  if (fd.fd < 0) throw fd.error!;
  return wrap(fd.fd, fd.name, false, "");
}

function openFd(name: string, flags: number): { fd: number; name: string; errno: number; error?: TunError } {
  const fd = libc.open(cString("/dev/net/tun"), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    const e = errno();
    return { fd: -1, name, errno: e, error: tunError(`open /dev/net/tun for ${name}`, new SyscallError("open", e, "/dev/net/tun")) };
  }
  const ifr = ffiBuffer(IFREQ_SIZE);
  ifr.set(new TextEncoder().encode(name), 0);
  new DataView(ifr.buffer).setUint16(IFNAMSIZ, flags, true);
  if (libc.ioctl(fd, TUNSETIFF, ifr) < 0) {
    const err = errno();
    libc.close(fd);
    // EBUSY: a device of that name exists and is not a free TUN; EPERM: not root / no CAP_NET_ADMIN.
    return { fd: -1, name, errno: err, error: tunError(`create TUN ${name}`, new SyscallError("ioctl", err, `TUNSETIFF ${name}`)) };
  }
  const end = ifr.indexOf(0);
  const actual = new TextDecoder().decode(ifr.subarray(0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end));
  return { fd, name: actual, errno: 0 };
}

function wrap(fd: number, actual: string, vnetHdr: boolean, offloadOff: string): Tun {
  let closed = false;
  return {
    fd,
    name: actual,
    vnetHdr,
    offloadOff,
    read(buf: Uint8Array): number {
      const n = libc.read(fd, buf, buf.byteLength);
      if (n >= 0) return n;
      const e = errno();
      return e === E.EAGAIN ? 0 : -e;
    },
    write(packet: Uint8Array): number {
      const n = libc.write(fd, packet, packet.byteLength);
      return n >= 0 ? n : -errno();
    },
    setNonBlocking(): void {
      setNonBlocking(fd);
    },
    close(): void {
      if (closed) return;
      closed = true;
      check(libc.close(fd), "close", `tun ${actual}`);
    },
  };
}
