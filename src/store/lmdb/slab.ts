/**
 * Hands out pieces of large buffers for values written to LMDB. lmdb-js keeps a reference to a
 * value until its write thread has copied it into the map, so a piece must not be reused: the
 * slab only saves allocating (and registering with lmdb-js) a new backing buffer for every few
 * values, which at 100k messages/s showed up in profiles. A piece keeps its slab alive while
 * referenced; slabs are dropped, never recycled.
 */
export class Slab {
  readonly #size: number;
  #buf: Buffer;
  #used = 0;

  constructor(size = 1024 * 1024) {
    this.#size = size;
    this.#buf = Buffer.allocUnsafe(size);
  }

  /** n bytes of uninitialised memory; the caller writes all of them. */
  take(n: number): Buffer {
    if (n > this.#size >>> 3) return Buffer.allocUnsafe(n);
    if (this.#buf.length - this.#used < n) {
      this.#buf = Buffer.allocUnsafe(this.#size);
      this.#used = 0;
    }
    const start = this.#used;
    this.#used = (start + n + 7) & ~7; // keep pieces 8-byte aligned
    return this.#buf.subarray(start, start + n);
  }
}
