// A bounded least-recently-used map for public-key conversions (a node:crypto KeyObject
// built from 32 key bytes, an Ed25519 key's X25519 form). Building one costs as much as a
// signature check or more, and a client meets the same few peers again and again; the
// bound keeps a client that meets many from growing without limit (DESIGN.md, principle 4).
//
// Entries are found by key id (keyIdOf, key-id.ts): the key's bytes as a string.

/** Default capacity: a few thousand peers, about 1 MB of KeyObjects and strings. */
export const KEY_CACHE_CAPACITY = 4096;

export class KeyCache<V> {
  readonly capacity: number;
  readonly #map = new Map<string, V>();

  constructor(capacity: number = KEY_CACHE_CAPACITY) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('a KeyCache holds at least one entry');
    this.capacity = capacity;
  }

  get size(): number {
    return this.#map.size;
  }

  /** The cached value for id, made recently used; undefined when absent. */
  get(id: string): V | undefined {
    const hit = this.#map.get(id);
    if (hit !== undefined) {
      // A Map iterates in insertion order: re-inserting moves id to the young end.
      this.#map.delete(id);
      this.#map.set(id, hit);
    }
    return hit;
  }

  /** Adds id, evicting the least recently used entry when full. */
  set(id: string, value: V): void {
    this.#map.delete(id);
    if (this.#map.size >= this.capacity) {
      const oldest = this.#map.keys().next().value;
      if (oldest !== undefined) this.#map.delete(oldest);
    }
    this.#map.set(id, value);
  }

  /** The cached value for id, or make(id)'s, cached (make may throw: nothing is cached then). */
  getOrMake(id: string, make: (id: string) => V): V {
    const hit = this.get(id);
    if (hit !== undefined) return hit;
    const value = make(id);
    this.set(id, value);
    return value;
  }

  clear(): void {
    this.#map.clear();
  }
}
