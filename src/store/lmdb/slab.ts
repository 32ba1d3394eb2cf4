/**
 * Hands out pieces of large buffers for values written to LMDB, and reuses a buffer once every
 * write that used it has committed. lmdb-js keeps a reference to a value until its write thread
 * has copied it into the map, so a piece must stay untouched until then; reusing whole buffers
 * after the commit saves, per message, an allocation and the page faults of touching fresh
 * memory (both showed up in profiles at 100k messages/s).
 */
const KEEP_FREE = 8;

export class Slab {
  readonly #size: number;
  /** A promise that settles once every write issued so far has committed. */
  readonly #committed: () => Promise<unknown>;
  readonly #free: Buffer[] = [];
  #buf: Buffer;
  #used = 0;

  constructor(committed: () => Promise<unknown>, size = 1024 * 1024) {
    this.#committed = committed;
    this.#size = size;
    this.#buf = Buffer.allocUnsafe(size);
  }

  /** n bytes of uninitialised memory; the caller writes all of them and hands them to a write at once. */
  take(n: number): Buffer {
    if (n > this.#size >>> 3) return Buffer.allocUnsafe(n);
    if (this.#buf.length - this.#used < n) this.#next();
    const start = this.#used;
    this.#used = (start + n + 7) & ~7; // keep pieces 8-byte aligned
    return this.#buf.subarray(start, start + n);
  }

  #next(): void {
    const full = this.#buf;
    // Every piece of `full` went to a write issued before now: free once those have committed.
    // After a failed commit the buffer is simply dropped.
    this.#committed().then(() => {
      if (this.#free.length < KEEP_FREE) this.#free.push(full);
    }, () => {});
    this.#buf = this.#free.pop() ?? Buffer.allocUnsafe(this.#size);
    this.#used = 0;
  }
}
