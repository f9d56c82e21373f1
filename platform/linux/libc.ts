/**
 * @module platform/linux/libc
 * The libc calls the data plane needs, through bun:ffi, loaded once per thread (each Worker
 * imports this module and gets its own handle). Numbers and struct layouts are Linux LP64
 * (x86_64 and aarch64 agree on all of them). Every syscall wrapper returns the raw result;
 * callers read `errno()` right after a -1, before any other libc call.
 *
 * FFI buffers are always `new Uint8Array(new ArrayBuffer(n))`: a small `new Uint8Array(n)` may
 * live in the GC heap and move once `.buffer` is touched (BUN-NOTES.md, Traps).
 */
import { dlopen, FFIType, read as ffiRead, ptr, type Pointer } from "bun:ffi";
import { WaygateError } from "../../core/errors.ts";

const { i32, u32, u64, ptr: P, cstring } = FFIType;

const lib = dlopen("libc.so.6", {
  open: { args: [cstring, i32, u32], returns: i32 },
  close: { args: [i32], returns: i32 },
  read: { args: [i32, P, u64], returns: i32 },
  write: { args: [i32, P, u64], returns: i32 },
  ioctl: { args: [i32, u64, P], returns: i32 },
  fcntl: { args: [i32, i32, i32], returns: i32 },
  poll: { args: [P, u64, i32], returns: i32 },
  socket: { args: [i32, i32, i32], returns: i32 },
  bind: { args: [i32, P, u32], returns: i32 },
  getsockname: { args: [i32, P, P], returns: i32 },
  setsockopt: { args: [i32, i32, i32, P, u32], returns: i32 },
  recvmmsg: { args: [i32, P, u32, i32, P], returns: i32 },
  sendmmsg: { args: [i32, P, u32, i32], returns: i32 },
  eventfd: { args: [u32, i32], returns: i32 },
  setns: { args: [i32, i32], returns: i32 },
  strerror: { args: [i32], returns: cstring },
  __errno_location: { args: [], returns: P },
});

export const libc = lib.symbols;

export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const F_GETFL = 3;
export const F_SETFL = 4;

export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const IPPROTO_IPV6 = 41;
export const IPV6_V6ONLY = 26;
export const MSG_DONTWAIT = 0x40;
export const MSG_TRUNC = 0x20;

export const POLLIN = 0x001;
export const POLLOUT = 0x004;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;

export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
export const CLONE_NEWNET = 0x40000000;

export const E = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EMFILE: 24,
  EMSGSIZE: 90,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ENOBUFS: 105,
  ECONNREFUSED: 111,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
} as const;

const ERRNO_NAMES = new Map<number, string>(Object.entries(E).map(([k, v]) => [v, k]));

/** errno of the calling thread; read it immediately after the failing call. */
export function errno(): number {
  const loc = libc.__errno_location();
  return loc === null ? 0 : ffiRead.i32(loc, 0);
}

export function errnoName(code: number): string {
  return ERRNO_NAMES.get(code) ?? `errno ${code}`;
}

/** A failed syscall: `syscall` and `errno` are kept for callers that branch on them. */
export class SyscallError extends WaygateError {
  constructor(
    readonly syscall: string,
    readonly errno: number,
    context: string,
  ) {
    super("E_PLATFORM", `${syscall}(${context}) failed: ${errnoName(errno)} (${String(libc.strerror(errno))})`);
  }
}

/** Throws a SyscallError for a -1 result, else returns it. */
export function check(result: number, syscall: string, context = ""): number {
  if (result < 0) throw new SyscallError(syscall, errno(), context);
  return result;
}

/** A buffer whose address is stable for its lifetime (see module doc). */
export function ffiBuffer(size: number): Uint8Array {
  return new Uint8Array(new ArrayBuffer(size));
}

export function addressOf(buf: Uint8Array): number {
  return ptr(buf) as unknown as number;
}

export function cString(text: string): Buffer {
  return Buffer.from(`${text}\0`, "utf8");
}

export function setNonBlocking(fd: number): void {
  const flags = check(libc.fcntl(fd, F_GETFL, 0), "fcntl", "F_GETFL");
  check(libc.fcntl(fd, F_SETFL, flags | O_NONBLOCK), "fcntl", "F_SETFL");
}

export type { Pointer };
