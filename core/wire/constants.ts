/**
 * @module core/wire/constants
 * WireGuard's wire formats and protocol constants (whitepaper §5, wireguard-go device/constants.go).
 * Timer constants live in core/wire/timers.ts, where they can be overridden.
 */

export const CONSTRUCTION = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
export const IDENTIFIER = "WireGuard v1 zx2c4 Jason@zx2c4.com";
export const LABEL_MAC1 = "mac1----";
export const LABEL_COOKIE = "cookie--";

export const MESSAGE_INITIATION = 1;
export const MESSAGE_RESPONSE = 2;
export const MESSAGE_COOKIE_REPLY = 3;
export const MESSAGE_TRANSPORT = 4;

/** type(4) sender(4) ephemeral(32) static(32+16) timestamp(12+16) mac1(16) mac2(16) */
export const INITIATION_SIZE = 148;
/** type(4) sender(4) receiver(4) ephemeral(32) empty(0+16) mac1(16) mac2(16) */
export const RESPONSE_SIZE = 92;
/** type(4) receiver(4) nonce(24) cookie(16+16) */
export const COOKIE_REPLY_SIZE = 64;
/** type(4) receiver(4) counter(8) */
export const TRANSPORT_HEADER_SIZE = 16;
export const TAG_SIZE = 16;
/** An empty (keepalive) transport message. */
export const KEEPALIVE_SIZE = TRANSPORT_HEADER_SIZE + TAG_SIZE;
export const PADDING_MULTIPLE = 16;

export const INITIATION_OFFSET = {
  sender: 4,
  ephemeral: 8,
  static: 40,
  timestamp: 88,
  mac1: 116,
  mac2: 132,
} as const;

export const RESPONSE_OFFSET = {
  sender: 4,
  receiver: 8,
  ephemeral: 12,
  empty: 44,
  mac1: 60,
  mac2: 76,
} as const;

export const COOKIE_OFFSET = { receiver: 4, nonce: 8, cookie: 32 } as const;
export const TRANSPORT_OFFSET = { receiver: 4, counter: 8, content: 16 } as const;

/** REKEY_AFTER_MESSAGES = 2^60. Our send counters are JS numbers: exact far beyond this. */
export const REKEY_AFTER_MESSAGES = 2 ** 60;
/** REJECT_AFTER_MESSAGES = 2^64 - 2^13 - 1, as (hi, lo) 32-bit halves for exact comparisons. */
export const REJECT_AFTER_MESSAGES_HI = 0xffffffff;
export const REJECT_AFTER_MESSAGES_LO = 0xffffdfff;
/** The same limit as a bigint, for tests and logs. */
export const REJECT_AFTER_MESSAGES = (1n << 64n) - (1n << 13n) - 1n;
/** The highest send counter we use: sends stop (and a rekey is forced) long before 2^53. */
export const MAX_SEND_COUNTER = 2 ** 53 - 1;

/** Maximum IP packet we carry (the TUN MTU is lower; this bounds scratch buffers). */
export const MAX_CONTENT_SIZE = 65535;
