/**
 * @module test/router/fake.contract.test
 * The in-memory FakeRouter runs the Router contract: the reference every real adapter matches.
 */
import { routerContract } from "../contract/router.contract.ts";
import { fakeRouterHarness } from "./fake-router.ts";

routerContract("fake (in-memory FIB)", async () => fakeRouterHarness(), { crashCleanup: "full" });
