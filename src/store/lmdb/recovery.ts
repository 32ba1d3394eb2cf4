/**
 * What the store does when a commit fails (a full disk, an I/O error): the callers of that batch
 * get STORE_ERROR or a rejection, and the store stops writing. It is unwritable (status.writable
 * false) until it has recovered by itself: stores are refused STORE_ERROR at once, the expiry sweep
 * and the admin deletions wait, and acknowledgements are kept in memory (./kept-acks.ts).
 *
 * Recovery: a probe write of PROBE_BYTES, retried with backoff (probeMinMs doubling up to
 * probeMaxMs); once one commits, the repair (./repair.ts: everything derived from the entries
 * recomputed) runs, removes the probe and commits the kept acknowledgements in the same
 * transaction, and the store is writable again.
 */
import type { MailboxTables } from './environment.js';
import { absorbCommitError, reportCommitFailure } from './commit-errors.js';
import { PROBE_KEY } from './layout.js';
import type { LmdbMailboxOptions } from './mailbox.js';
import type { Repair } from './repair.js';
import type { StoreStatus } from './status.js';
import { mustHaveCommitted, newOperation, type Writes } from './writes.js';

/**
 * Size of the probe write: a store that can commit this much again is called writable. Big enough
 * that the pages an acknowledgement freed do not make a still full disk look writable for one
 * small transaction, small enough to fit once an operator has freed a little space.
 */
const PROBE_BYTES = 512 * 1024;

/** The options of ./mailbox.ts that concern recovery. */
export type RecoveryOptions = Pick<LmdbMailboxOptions, 'onCommitFailure' | 'onRepaired' | 'onProbeFailed' | 'probeMinMs' | 'probeMaxMs'>;

export class Recovery {
  /** Commits that failed since open (each makes the store unwritable until it has recovered). */
  commitFailures = 0;
  /** Recovery attempts that did not commit since open. */
  probeFailures = 0;

  readonly #hooks: Pick<RecoveryOptions, 'onCommitFailure' | 'onRepaired' | 'onProbeFailed'>;
  readonly #probeMinMs: number;
  readonly #probeMaxMs: number;
  /** An attempt is running: the failures of its commits are probe failures. */
  #attempting = false;
  #timer: NodeJS.Timeout | null = null;
  /** The wait before the next attempt (0: the first comes at once). */
  #delay = 0;
  /** What made the last failed commit of an attempt fail (reported with the attempt). */
  #probeError: unknown = null;

  constructor(
    private readonly status: StoreStatus,
    private readonly tables: MailboxTables,
    private readonly writes: Writes,
    private readonly repair: Repair,
    options: RecoveryOptions,
  ) {
    this.#hooks = { onCommitFailure: options.onCommitFailure, onRepaired: options.onRepaired, onProbeFailed: options.onProbeFailed };
    this.#probeMinMs = Math.max(1, options.probeMinMs ?? 250);
    this.#probeMaxMs = Math.max(this.#probeMinMs, options.probeMaxMs ?? 5000);
  }

  /** A commit failed: the store stops writing and recovers by itself. */
  commitFailed(error: unknown): void {
    absorbCommitError(error);
    if (this.#attempting) {
      this.probeFailures++;
      this.#probeError = error;
      return;
    }
    this.commitFailures++;
    this.status.writable = false;
    const hook = this.#hooks.onCommitFailure;
    if (hook) reportCommitFailure(error, hook);
    this.#schedule();
  }

  /** No further attempts (close). */
  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #schedule(): void {
    if (this.#timer !== null || this.#attempting || this.status.closingOrClosed) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#attempt();
    }, this.#delay);
    // Not unref()'d: a recovery is work in progress (close() stops it).
  }

  /**
   * One recovery attempt: a probe write of PROBE_BYTES (cheap, and it fails at once while the disk
   * is still full), then the repair, which also removes the probe and commits the kept
   * acknowledgements. Either failing schedules the next attempt, later each time.
   */
  async #attempt(): Promise<void> {
    if (this.status.closingOrClosed) return;
    this.#attempting = true;
    this.#probeError = null;
    let problems: string[] | null = null;
    let failure: unknown = null;
    try {
      const op = newOperation();
      this.writes.put(this.tables.meta, PROBE_KEY, Buffer.alloc(PROBE_BYTES), op);
      mustHaveCommitted(await this.writes.joinBatch());
      problems = await this.repair.repair();
    } catch (err) {
      failure = err;
    } finally {
      this.#attempting = false;
    }
    if (problems !== null) {
      this.#delay = 0;
      this.#hooks.onRepaired?.(problems);
      return;
    }
    if (this.status.closingOrClosed) return;
    this.status.writable = false;
    this.#delay = Math.min(this.#probeMaxMs, Math.max(this.#probeMinMs, this.#delay * 2));
    const hook = this.#hooks.onProbeFailed;
    const retryInMs = this.#delay;
    if (hook) reportCommitFailure(this.#probeError ?? failure, (reason) => hook(reason, retryInMs));
    this.#schedule();
  }
}
