/**
 * @module test/preload
 * Loaded before every test file: the JIT setting BUN-NOTES.md found necessary for FFI hot loops
 * must be in the environment of any Bun process a test starts.
 */
process.env.BUN_JSC_useOSREntryToDFG = "false";
