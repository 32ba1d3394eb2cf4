/**
 * Deleting entries: acknowledgements (exactly these seqs of one recipient), the admin deletions
 * (a whole mailbox, everything older than an age) and the expiry sweep (at open and periodically).
 * The bulk deletions go in chunks, each chunk one transaction awaited before the next scan, so a
 * big deletion neither holds one huge transaction nor meets its own uncommitted deletions.
 */
import type { MailboxTables, Table } from './environment.js';
import type { StoredEntries } from './entries.js';
import type { KeptAcks } from './kept-acks.js';
import { bytesId, entryKey, EXPIRY_BUCKET_MS, isRecipientKey, MAX_U53, readU64, RECIPIENT_BYTES, u64Value } from './layout.js';
import type { Overlays } from './overlays.js';
import { CLOSED, UNWRITABLE, type StoreStatus } from './status.js';
import { mustHaveCommitted, newOperation, type Operation, type Writes } from './writes.js';

/** Keys a chunk of a bulk deletion scans at most. */
const CHUNK = 4096;
/** Writes a chunk issues at most (it ends early once it has). */
const CHUNK_WRITES = 16_384;

const ACKS_NOT_KEPT = 'mailbox store: the acknowledgement could not be committed, and too many already wait for the disk to be kept (its messages will be delivered again)';

const noop = (): void => {};

/** The smallest key greater than `key`: key followed by a zero byte. */
function nextKey(key: Buffer): Buffer {
  return Buffer.concat([key, Buffer.from([0])]);
}

export class Deletes {
  #sweepTimer: NodeJS.Timeout | null = null;
  /** ack()'s continuation: nothing once committed, else wait for the retry (the failed batch kept the acks). */
  readonly #ackSettled = (ok: boolean): Promise<void> | undefined => (ok ? undefined : this.keptAcks.committed());

  constructor(
    private readonly tables: MailboxTables,
    private readonly status: StoreStatus,
    private readonly overlays: Overlays,
    private readonly writes: Writes,
    private readonly storedEntries: StoredEntries,
    private readonly keptAcks: KeptAcks,
    private readonly clock: () => number,
  ) {}

  ack(recipient: Uint8Array, seqs: number[]): Promise<void> {
    const status = this.status;
    if (status.repairRunning) return status.repairRunning.then(() => this.ack(recipient, seqs));
    if (status.closingOrClosed) return Promise.reject(new Error(CLOSED));
    if (!isRecipientKey(recipient)) return Promise.resolve();
    const recipientId = bytesId(recipient);
    if (!status.writable) {
      // Nothing can commit now: kept (hidden from read()) and deleted by the repair once it can.
      if (!this.keptAcks.keep(recipient, recipientId, seqs)) return Promise.reject(new Error(ACKS_NOT_KEPT));
      return this.keptAcks.committed();
    }
    const op = newOperation();
    try {
      for (const seq of seqs) {
        if (!Number.isSafeInteger(seq) || seq <= 0) continue;
        this.storedEntries.delete(recipient, recipientId, seq, op);
      }
    } catch (err) {
      this.writes.abandon(op, err);
      return Promise.reject(err);
    }
    // Nothing to delete (unknown, or already being deleted): still resolve after earlier deletions commit.
    if (op.writes === 0) return this.writes.settled();
    // If this commit fails, the batch keeps the acks and #ackSettled waits for their retry.
    this.overlays.unbatched.acks.push(recipient, recipientId, seqs);
    return this.writes.joinBatch().then(this.#ackSettled);
  }

  async removeRecipient(recipient: Uint8Array): Promise<number> {
    if (this.status.closingOrClosed) throw new Error(CLOSED);
    if (!this.status.writable) throw new Error(UNWRITABLE);
    if (!isRecipientKey(recipient)) return 0;
    await this.writes.settled();
    const recipientId = bytesId(recipient);
    return this.#deleteInChunks(this.tables.entries, entryKey(recipient, 0), entryKey(recipient, MAX_U53), (key, op) =>
      Number(this.storedEntries.delete(recipient, recipientId, readU64(key, RECIPIENT_BYTES), op)));
  }

  async removeOlderThan(ageMs: number, now: number = this.clock()): Promise<number> {
    if (this.status.closingOrClosed) throw new Error(CLOSED);
    if (!this.status.writable) throw new Error(UNWRITABLE);
    await this.writes.settled();
    const cutoff = now - ageMs;
    return this.#deleteInChunks(this.tables.entries, undefined, undefined, (key, op) => {
      const recipient = key.subarray(0, RECIPIENT_BYTES);
      return Number(this.storedEntries.delete(recipient, bytesId(recipient), readU64(key, RECIPIENT_BYTES), op,
        (meta) => !(meta.storedAt < cutoff)));
    });
  }

  async sweepExpired(now: number = this.clock()): Promise<number> {
    if (this.status.closingOrClosed) throw new Error(CLOSED);
    // Unwritable: expired entries stay (read() skips them) until a sweep after the recovery.
    if (!this.status.writable) return 0;
    // Every entry with expiresAt <= now has a mark whose bucket starts at or before now, and marks
    // sort by bucket first: they are all below this 8-byte bound. A recipient with several such
    // marks is scanned once; a mark is deleted once its whole bucket has passed.
    const end = u64Value(Math.min(Math.floor(now) + 1, MAX_U53));
    const scanned = new Set<string>();
    const { entries, marks } = this.tables;
    return this.#deleteInChunks(marks, undefined, end, (key, op) => {
      const bucket = readU64(key, 0);
      const recipient = key.subarray(8, 8 + RECIPIENT_BYTES);
      const recipientId = bytesId(recipient);
      let removed = 0;
      if (!scanned.has(recipientId)) {
        scanned.add(recipientId);
        for (const entry of entries.getKeys({ start: entryKey(recipient, 0), end: entryKey(recipient, MAX_U53) })) {
          if (this.storedEntries.delete(recipient, recipientId, readU64(entry, RECIPIENT_BYTES), op, (meta) => meta.expiresAt > now)) removed++;
        }
      }
      if (bucket + EXPIRY_BUCKET_MS <= now) {
        this.writes.remove(marks, key, op);
        this.storedEntries.markDeleted(recipientId, bucket);
      }
      return removed;
    });
  }

  /** Sweeps every `everyMs` (0: never) until stopSweeps(). */
  startSweeps(everyMs: number): void {
    if (everyMs <= 0) return;
    this.#sweepTimer = setInterval(() => {
      if (!this.status.closingOrClosed) this.sweepExpired().catch(noop);
    }, everyMs);
    this.#sweepTimer.unref();
  }

  stopSweeps(): void {
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
  }

  /**
   * Runs `visit` over keys of `db` in [start, end) in chunks (at most CHUNK keys, and no more keys
   * once CHUNK_WRITES writes were issued), each chunk's writes in one transaction awaited before
   * the next scan, so a scan never meets its own uncommitted deletions. Every chunk starts after
   * all writes issued before it have committed, so it sees what concurrent operations wrote.
   * Returns the sum of what `visit` returned (the entries it deleted).
   */
  async #deleteInChunks(db: Table, start: Buffer | undefined, end: Buffer | undefined,
    visit: (key: Buffer, op: Operation) => number): Promise<number> {
    const status = this.status;
    let removed = 0;
    let from = start;
    for (;;) {
      if (status.repairRunning) await status.repairRunning;
      await this.writes.settled();
      if (status.closed) return removed;
      if (!status.writable) throw new Error(UNWRITABLE);
      const op = newOperation();
      let seen = 0;
      let full = false;
      let lastKey: Buffer | undefined;
      try {
        const range = { limit: CHUNK, ...(from ? { start: from } : {}), ...(end ? { end } : {}) };
        for (const key of db.getKeys(range)) {
          seen++;
          lastKey = key;
          removed += visit(key, op);
          if (op.writes >= CHUNK_WRITES) {
            full = true;
            break;
          }
        }
      } catch (err) {
        this.writes.abandon(op, err);
        throw err;
      }
      if (op.writes > 0) mustHaveCommitted(await this.writes.joinBatch());
      if ((seen < CHUNK && !full) || lastKey === undefined) return removed;
      from = nextKey(lastKey);
    }
  }
}
