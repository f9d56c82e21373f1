/**
 * @module test/platform/jit-fixture
 * Run by jit.test.ts without the JIT variable: prints what the re-exec'd child sees, exits 7.
 */
import { ensureJitWorkaround, JIT_ENV } from "../../platform/linux/jit.ts";

await ensureJitWorkaround();
console.log(JSON.stringify({ env: process.env[JIT_ENV], args: process.argv.slice(2) }));
process.exit(7);
