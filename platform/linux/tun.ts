/**
 * @module platform/linux/tun
 * A Linux TUN device through bun:ffi: open /dev/net/tun, TUNSETIFF with IFF_TUN|IFF_NO_PI, then
 * plain read(2)/write(2) of whole IP packets on the fd. Blocking FFI read/write was the fastest
 * way Bun had to move TUN packets (~475k pkt/s, BUN-NOTES.md); the host makes the fd
 * non-blocking and waits in poll(2) instead, so one thread can serve TUN and UDP.
 *
 * The device lives in the network namespace of the calling thread and disappears when the last
 * fd closes (no TUNSETPERSIST): a crashed process leaves nothing behind.
 */
import { WaygateError } from "../../core/errors.ts";
import { check, cString, E, errno, ffiBuffer, libc, O_CLOEXEC, O_RDWR, setNonBlocking, SyscallError } from "./libc.ts";

export const TUNSETIFF = 0x400454ca;
export const IFF_TUN = 0x0001;
export const IFF_NO_PI = 0x1000;
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

/** Opens (creates) the TUN device `name` in the calling thread's network namespace. */
export function openTun(name: string): Tun {
  validateInterfaceName(name);
  const fd = libc.open(cString("/dev/net/tun"), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) throw tunError(`open /dev/net/tun for ${name}`, new SyscallError("open", errno(), "/dev/net/tun"));
  const ifr = ffiBuffer(IFREQ_SIZE);
  ifr.set(new TextEncoder().encode(name), 0);
  new DataView(ifr.buffer).setUint16(IFNAMSIZ, IFF_TUN | IFF_NO_PI, true);
  if (libc.ioctl(fd, TUNSETIFF, ifr) < 0) {
    const err = errno();
    libc.close(fd);
    // EBUSY: a device of that name exists and is not a free TUN; EPERM: not root / no CAP_NET_ADMIN.
    throw tunError(`create TUN ${name}`, new SyscallError("ioctl", err, `TUNSETIFF ${name}`));
  }
  const end = ifr.indexOf(0);
  const actual = new TextDecoder().decode(ifr.subarray(0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end));
  let closed = false;
  return {
    fd,
    name: actual,
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
