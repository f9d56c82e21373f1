/**
 * @module test/helpers/netns
 * The namespace rig for tests (scripts/rig/netns.ts), plus `withRig`: creates a rig, runs the
 * body, destroys the rig also when the body throws.
 */
import { createRig, type Rig, type RigOptions } from "../../scripts/rig/netns.ts";

export * from "../../scripts/rig/netns.ts";

export async function withRig<T>(body: (rig: Rig) => Promise<T>, options?: RigOptions): Promise<T> {
  const rig = await createRig(options);
  try {
    return await body(rig);
  } finally {
    await rig.destroy();
  }
}
