/**
 * Where the mailbox store is in its life. Every operation reads it before it starts: whether the
 * store is open, whether it can write (not since a failed commit, until it has recovered), and
 * whether a repair is running (the operations that write wait for it).
 */
export class StoreStatus {
  /** close() has begun: nothing new is accepted. Settles once the environment is closed. */
  closing: Promise<void> | null = null;
  /** close() has waited for every write: the environment is (being) closed, nothing may touch it. */
  closed = false;
  /** A repair is running (./repair.ts); settles when it ends. Operations that write wait for it. */
  repairRunning: Promise<void> | null = null;
  /** false from a failed commit until a recovery attempt has committed (./recovery.ts). */
  writable = true;

  /** close() has begun or finished. */
  get closingOrClosed(): boolean {
    return this.closed || this.closing !== null;
  }
}

export const CLOSED = 'mailbox store is closed';
export const UNWRITABLE = 'mailbox store: cannot write since a commit failed (the disk may be full); try again once it has recovered';
