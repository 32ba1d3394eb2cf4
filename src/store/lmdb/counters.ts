/**
 * The counters the store's decisions read: usage per recipient, the relay-wide totals and the seq
 * counter. Quotas must count writes that have not committed yet (a burst of enqueues in one turn),
 * so they live in memory and change synchronously when an operation is decided. They are loaded
 * from the `usage` sub-database and `meta.seq` at open, and the changed ones are written once per
 * transaction, inside it (lmdb-js `beforecommit`): on disk they always agree with the entries
 * committed with them, also after a crash.
 */
import type { Usage } from '../mailbox.js';
import type { MailboxTables } from './environment.js';
import { absorbCommitError } from './commit-errors.js';
import { bytesId, idBytes, readU64, SEQ_KEY, u64Value, usageValue } from './layout.js';
import type { StoreStatus } from './status.js';

const noop = (): void => {};

export class Counters {
  /** Usage by recipient id (bytesId of the key); a recipient without entries has no record. */
  readonly byRecipient = new Map<string, Usage>();
  totalCount = 0;
  totalBytes = 0;
  /** The highest seq assigned so far (0 before the first). */
  lastSeq = 0;

  /** Recipients whose usage changed since the last transaction. */
  readonly #changed = new Set<string>();
  #seqChanged = false;

  constructor(private readonly tables: MailboxTables, private readonly status: StoreStatus) {
    const seq = tables.meta.getBinary(SEQ_KEY);
    this.lastSeq = seq === undefined ? 0 : readU64(seq, 0);
    for (const { key, value } of tables.usage.getRange({})) {
      const count = readU64(value, 0);
      const bytes = readU64(value, 8);
      this.byRecipient.set(bytesId(key), { count, bytes });
      this.totalCount += count;
      this.totalBytes += bytes;
    }
    tables.env.on('beforecommit', () => this.#writeChanged());
  }

  /** Adds count entries and bytes to a recipient's usage and the totals (negative to take away). */
  add(recipientId: string, count: number, bytes: number): void {
    const u = this.byRecipient.get(recipientId);
    const c = (u?.count ?? 0) + count;
    const b = (u?.bytes ?? 0) + bytes;
    if (c <= 0) this.byRecipient.delete(recipientId);
    else if (u) {
      u.count = c;
      u.bytes = b;
    } else this.byRecipient.set(recipientId, { count: c, bytes: b });
    this.totalCount += count;
    this.totalBytes += bytes;
    this.#changed.add(recipientId);
  }

  /** Assigns the next seq. */
  nextSeq(): number {
    this.#seqChanged = true;
    return ++this.lastSeq;
  }

  /**
   * Takes usage and totals as the repair recomputed them from the entries, and a seq counter at
   * least maxSeq. The repair writes the usage records itself; the seq counter is written with it.
   */
  reset(usage: Map<string, Usage>, count: number, bytes: number, maxSeq: number): void {
    this.byRecipient.clear();
    for (const [id, u] of usage) this.byRecipient.set(id, u);
    this.totalCount = count;
    this.totalBytes = bytes;
    this.#changed.clear();
    if (maxSeq > this.lastSeq) this.lastSeq = maxSeq;
    this.#seqChanged = true;
  }

  /** Runs inside each transaction, before its commit: the changed records join it. */
  #writeChanged(): void {
    if (this.status.closed) return;
    const t = this.tables;
    let last: Promise<unknown> | null = null;
    for (const id of this.#changed) {
      const u = this.byRecipient.get(id);
      last = u === undefined ? t.usage.remove(idBytes(id)) : t.usage.put(idBytes(id), usageValue(u.count, u.bytes));
    }
    this.#changed.clear();
    if (this.#seqChanged) {
      last = t.meta.put(SEQ_KEY, u64Value(this.lastSeq));
      this.#seqChanged = false;
    }
    // Same transaction (and promise) as the operations that changed them; failures reach those callers.
    if (last) last.then(noop, absorbCommitError);
  }
}
