// Cheap randomness for the fuzz and soak runs (not for keys): Math.random, and random bytes as
// views of one pool filled once from node:crypto.
import { randomFillSync } from 'node:crypto';

const POOL = randomFillSync(Buffer.allocUnsafe(2 << 20));

export const int = (n: number) => Math.floor(Math.random() * n);
export const chance = (p: number) => Math.random() < p;
export const pick = <T>(items: readonly T[]): T => items[int(items.length)];

/** n random bytes (n up to 2 MiB): a view of the shared pool, so copy it before changing it. */
export function randomBytes(n: number): Buffer {
  const at = int(POOL.length - n);
  return POOL.subarray(at, at + n);
}
