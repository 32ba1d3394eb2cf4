/**
 * Acknowledgements whose deletion could not commit (the store is unwritable since a failed commit,
 * or the commit carrying them failed). Acknowledged is acknowledged: their entries are hidden from
 * reads at once, and the repair that ends the recovery deletes them in its own transaction
 * (./recovery.ts, ./repair.ts); the ack() calls waiting on them resolve then. If the store closes
 * first they reject, and the entries stay to be delivered again.
 */
import type { Operation } from './writes.js';
import type { StoredEntries } from './entries.js';

/** Acknowledgements kept at most (a Set of seqs: ~40 bytes each). */
const ACKS_KEPT_MAX = 1_000_000;

/** Kept acknowledgements of one recipient. */
interface KeptForRecipient {
  key: Uint8Array;
  seqs: number[];
}

/** The promise every ack() that was kept waits on: settled when the retry commits, or at close. */
interface AckRound {
  promise: Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
}

const noop = (): void => {};

export class KeptAcks {
  /** Every kept seq: reads skip them. */
  readonly seqs = new Set<number>();
  readonly #byRecipient = new Map<string, KeptForRecipient>();
  #round: AckRound | null = null;

  /** Keeps acknowledged seqs of a recipient; false if too many are kept already. */
  keep(recipient: Uint8Array, recipientId: string, seqs: readonly number[]): boolean {
    let kept = this.#byRecipient.get(recipientId);
    for (const seq of seqs) {
      if (!Number.isSafeInteger(seq) || seq <= 0 || this.seqs.has(seq)) continue;
      if (this.seqs.size >= ACKS_KEPT_MAX) return false;
      if (kept === undefined) this.#byRecipient.set(recipientId, (kept = { key: Buffer.from(recipient), seqs: [] }));
      kept.seqs.push(seq);
      this.seqs.add(seq);
    }
    return true;
  }

  /** Keeps the acks of a batch whose commit failed (flat: recipient, recipientId, seqs, ...). */
  keepFlat(acks: ReadonlyArray<Uint8Array | string | number[]>): void {
    for (let i = 0; i + 2 < acks.length; i += 3) this.keep(acks[i] as Uint8Array, acks[i + 1] as string, acks[i + 2] as number[]);
  }

  /** Resolves once the kept acknowledgements have committed; rejects if the store closes first. */
  committed(): Promise<void> {
    if (this.seqs.size === 0) return Promise.resolve();
    if (this.#round === null) {
      let resolve = noop;
      let reject: (error: Error) => void = noop;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.#round = { promise, resolve, reject };
    }
    return this.#round.promise;
  }

  /** Issues the deletion of every kept acknowledgement into op (the repair's transaction). */
  deleteAll(storedEntries: StoredEntries, op: Operation): void {
    for (const [recipientId, kept] of this.#byRecipient) {
      for (const seq of kept.seqs) storedEntries.delete(kept.key, recipientId, seq, op);
    }
  }

  /** The deletions issued by deleteAll() have committed: forget them and answer their ack() calls. */
  done(): void {
    this.#byRecipient.clear();
    this.seqs.clear();
    const round = this.#round;
    this.#round = null;
    round?.resolve();
  }

  /** The store closes before they could commit: their ack() calls reject. */
  abandon(): void {
    const round = this.#round;
    this.#round = null;
    round?.reject(new Error('mailbox store closed before these acknowledgements could be committed (their messages will be delivered again)'));
  }
}
