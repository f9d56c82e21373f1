/**
 * @module core/dns/errors
 * The DNS errors. `DnsFormatError` is thrown for every malformed message (and for a message we
 * were asked to encode that DNS cannot carry); callers count it by `reason` and answer FORMERR
 * when the header was readable, else drop. It never escapes a server loop.
 *
 * Code: core/errors.ts has no DNS code yet and this change may not touch it, so both classes use
 * E_CONFIG_INVALID for now. Lead: append `E_DNS_FORMAT` (and `E_DNS` for DnsConfigError) to
 * EXIT_STATUS and switch the two `super` calls below; nothing else depends on the code.
 */
import { WaygateError } from "../errors.ts";

export class DnsFormatError extends WaygateError {
  constructor(
    /** A short stable reason, usable as a counter key ("name-loop", "rdata-past-end", ...). */
    readonly reason: string,
    /** Byte offset where decoding gave up, when known. */
    readonly offset?: number,
  ) {
    super("E_DNS_FORMAT", `malformed DNS message: ${reason}${offset === undefined ? "" : ` at offset ${offset}`}`);
  }
}

/** A bad resolv.conf/hosts text or forwarder/stub configuration; `source` names the file. */
export class DnsConfigError extends WaygateError {
  constructor(
    readonly source: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super("E_DNS", `${source}: ${message}`, options);
  }
}
