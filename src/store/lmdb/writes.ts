/**
 * Write batching and durability (strfry's write path, anchors §2(c) 8): one writer. Every mutation
 * is decided synchronously on the JS thread and turned into plain asynchronous `put`/`remove`
 * calls; lmdb-js batches all writes issued in one event turn into ONE transaction that its write
 * thread executes and commits (group commit), and gives all of them one promise. Because all
 * writes of one logical operation are issued in the same turn, each operation is atomic on disk.
 *
 * A caller learns its operation's outcome from the batch it joined (joinBatch()): true once the
 * transaction has committed and been flushed to disk (lmdb-js overlapping sync: the flush runs
 * while the next transaction is written; noSync is never used), so what it confirms survives
 * kill -9 and power loss; false if the commit failed. One handler per batch settles every
 * operation in it (no promise chain per operation); enqueueNow() + durable() hand that one promise
 * to the router, which answers a whole turn's SENDs with it.
 *
 * When a batch settles, the overlay entries its operations registered are dropped (./overlays.ts);
 * when it failed, its acknowledgements are kept for a retry (./kept-acks.ts) and the failure is
 * reported to the recovery (./recovery.ts). Every promise lmdb-js can reject gets a handler
 * (./commit-errors.ts): a storage error never ends the process.
 */
import type { Table } from './environment.js';
import { absorbCommitError } from './commit-errors.js';
import type { KeptAcks } from './kept-acks.js';
import { noChanges, type Overlays, type UncommittedChanges } from './overlays.js';
import { Slab } from './slab.js';

/** One logical operation being decided: how many writes it issued. */
export interface Operation {
  writes: number;
}

export function newOperation(): Operation {
  return { writes: 0 };
}

/** The operations whose writes went into one lmdb-js batch (one transaction, one commit promise). */
interface Batch extends UncommittedChanges {
  commit: Promise<unknown>;
  /** true once committed and flushed, false if the commit failed. */
  done: Promise<boolean>;
  operations: number;
}

const noop = (): void => {};

/** Throws when a batch an operation waited for did not commit. */
export function mustHaveCommitted(ok: boolean): void {
  if (!ok) throw new Error('mailbox store: the commit failed (the store repairs itself; retry)');
}

/** durable()'s answer for a write whose commit failed. */
function failedToFalse(error: unknown): false {
  absorbCommitError(error);
  return false;
}

/**
 * Resolves true once the transaction that carries `commit` has been flushed to disk. lmdb-js
 * (overlappingSync, the default on Linux) resolves a write's promise at its commit and flushes while
 * the next transaction is written; with `separateFlushed` the promise carries that flush as
 * `.flushed`. A promise without it (nothing written yet) has nothing to flush.
 */
function flushedAfter(commit: Promise<unknown>): Promise<boolean> | boolean {
  const flushed = (commit as { flushed?: PromiseLike<unknown> }).flushed;
  return flushed === undefined ? true : Promise.resolve(flushed).then(() => true);
}

/** Appends every item of from to to, and empties from (both arrays are reused). */
function moveAll<T>(from: T[], to: T[]): void {
  if (from.length === 0) return;
  for (const x of from) to.push(x);
  from.length = 0;
}

export class Writes {
  /** The promise of the latest write issued (lmdb-js gives every write of one batch the same one). */
  lastWrite: Promise<unknown> = Promise.resolve();
  /** The last transaction that settled failed (lmdb-js's close() then never finishes: closeEnv()). */
  lastCommitFailed = false;

  /** The batch of the current event turn, until it settles. */
  #batch: Batch | null = null;
  /** durable()'s answer while no batch is open: the outcome of `write`. */
  #lastWriteDurable: { write: Promise<unknown>; durable: Promise<boolean> } | null = null;
  /** Operations joined to batches that have not settled. */
  #inflight = 0;
  /** Entry values are written from slab pieces, reused once their writes have committed. */
  readonly #values = new Slab(() => this.lastWrite);
  readonly takeValue = (n: number): Buffer => this.#values.take(n);

  constructor(
    private readonly overlays: Overlays,
    private readonly keptAcks: KeptAcks,
    /** Told of every failed commit (and of every operation abandoned half way). */
    private readonly commitFailed: (error: unknown) => void,
  ) {}

  get inflight(): number {
    return this.#inflight;
  }

  // All writes of one lmdb-js batch return one promise; a new one (once per transaction, rarely
  // twice) gets a handler at once, so that a failed commit never leaves a rejection unhandled.
  put(db: Table, key: Buffer, value: Buffer, op: Operation): void {
    const write = db.put(key, value);
    if (write !== this.lastWrite) write.then(noop, absorbCommitError);
    this.lastWrite = write;
    op.writes++;
  }

  remove(db: Table, key: Buffer, op: Operation): void {
    const write = db.remove(key);
    if (write !== this.lastWrite) write.then(noop, absorbCommitError);
    this.lastWrite = write;
    op.writes++;
  }

  /**
   * Joins the operation just decided (its writes issued, its overlay entries in
   * `overlays.unbatched`) to the batch (transaction) that carries its writes, and returns that
   * batch's outcome: true once committed and flushed, false if the commit failed.
   */
  joinBatch(): Promise<boolean> {
    const commit = this.lastWrite;
    let b = this.#batch;
    if (b === null || b.commit !== commit) {
      const nb: Batch = { ...noChanges(), commit, done: Promise.resolve(true), operations: 0 };
      // The overlays go at the commit (LMDB answers reads the same from then on); callers wait for the flush.
      const visible = commit.then(
        () => {
          this.lastCommitFailed = false;
          this.#settle(nb, true);
          return true;
        },
        (err: unknown) => {
          this.lastCommitFailed = true;
          this.#settle(nb, false);
          this.commitFailed(err);
          return false;
        },
      );
      nb.done = visible.then((ok) => ok && flushedAfter(commit));
      this.#batch = b = nb;
    }
    b.operations++;
    this.#inflight++;
    const o = this.overlays.unbatched;
    moveAll(o.added, b.added);
    moveAll(o.deleted, b.deleted);
    moveAll(o.index, b.index);
    moveAll(o.bodies, b.bodies);
    moveAll(o.acks, b.acks);
    return b.done;
  }

  #settle(b: Batch, committed: boolean): void {
    this.#inflight -= b.operations;
    if (this.#batch === b) this.#batch = null;
    this.overlays.drop(b);
    // Acknowledged is acknowledged: the deletions are kept and committed once the store can write.
    if (!committed) this.keptAcks.keepFlat(b.acks);
  }

  /**
   * Resolves once every write issued so far is durable: true, or false if the commit carrying the
   * latest writes failed. Calls in one event turn get the same promise.
   */
  durable(): Promise<boolean> {
    const b = this.#batch;
    if (b !== null && b.commit === this.lastWrite) return b.done;
    // No batch open this turn (nothing written, or its batch settled): one promise per last write.
    if (this.#lastWriteDurable === null || this.#lastWriteDurable.write !== this.lastWrite) {
      const last = this.lastWrite;
      this.#lastWriteDurable = { write: last, durable: last.then(() => flushedAfter(last), failedToFalse) };
    }
    return this.#lastWriteDurable.durable;
  }

  /**
   * An operation threw after issuing writes: they may still commit, half of what it meant to do.
   * Treated as a failed commit: the store stops writing, and the repair that ends the recovery
   * makes everything derived from the entries agree with them again.
   */
  abandon(op: Operation, error: unknown): void {
    if (op.writes === 0) return;
    void this.settled();
    this.commitFailed(error);
  }

  /** Resolves when every write issued so far has committed (commits are in order). */
  settled(): Promise<void> {
    return this.lastWrite.then(noop, absorbCommitError);
  }

  /** Resolves when no operation is in flight; only for quiescent moments (close, verify, repair, tests). */
  async idle(): Promise<void> {
    while (this.#inflight > 0) await this.settled();
  }
}
