/**
 * @module test/cmd/run-flags.test
 * `waygate run --upstream-host`: per-subnet upstream hosts parsed and validated before anything
 * starts, with errors naming the item.
 */
import { expect, test } from "bun:test";
import { upstreamHostsFrom } from "../../cmd/run.ts";

test("--upstream-host groups hosts per canonical subnet", () => {
  expect(upstreamHostsFrom(undefined)).toEqual({});
  expect(upstreamHostsFrom("172.26.0.0/20=172.26.0.10, 172.26.0.0/20=172.26.0.11:443,10.0.0.0/24=10.0.0.1")).toEqual({
    "172.26.0.0/20": ["172.26.0.10", "172.26.0.11:443"],
    "10.0.0.0/24": ["10.0.0.1"],
  });
});

test("--upstream-host rejects malformed items with the item named", () => {
  expect(() => upstreamHostsFrom("172.26.0.10")).toThrow('--upstream-host "172.26.0.10": expected SUBNET=HOST[:PORT]');
  expect(() => upstreamHostsFrom("172.26.0.0/20=")).toThrow("expected SUBNET=HOST[:PORT]");
  expect(() => upstreamHostsFrom("172.26.0.0/33=172.26.0.1")).toThrow('"172.26.0.0/33" is not a subnet');
  expect(() => upstreamHostsFrom("172.26.0.0/20=printer.local")).toThrow("expected addresses like");
});
