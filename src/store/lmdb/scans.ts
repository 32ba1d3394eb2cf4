/**
 * Reads: a recipient's live entries (read() copies them, readEach() lends them, the drain's path),
 * and the figures the admin and the metrics read (usage, totals, top, bodyCount). Reads show
 * committed entries only, minus those whose deletion is not committed yet or whose acknowledgement
 * is kept for a retry, and never expired ones.
 */
import type { MailboxEntry, Usage } from '../mailbox.js';
import type { Counters } from './counters.js';
import type { MailboxTables } from './environment.js';
import type { KeptAcks } from './kept-acks.js';
import {
  bytesId, entryKey, FLAG_SHARED_BODY, FLAG_STORAGE_KEY, HEADER_BYTES, idBytes, INDEX_KEY_BYTES, isRecipientKey, MAX_U53, readU32, readU64,
  RECIPIENT_BYTES, SENDER_BYTES, writeU64,
} from './layout.js';
import type { Overlays } from './overlays.js';
import { CLOSED, type StoreStatus } from './status.js';

/** The first `size` bytes of a value lmdb-js lent (its buffer is reused by the next read), as a Buffer of their own. */
function ownCopy(lent: Buffer, size: number): Buffer {
  // Not lent.copy(): lmdb-js sets the lent buffer's `length` to the value's size, which Buffer#copy trusts.
  const own = Buffer.allocUnsafe(size);
  own.set(lent.subarray(0, size));
  return own;
}

export class Scans {
  /** Entries a read had to skip because their shared body was missing (should stay 0). */
  anomalies = 0;

  /** Scratch key buffer (lmdb-js copies keys, so it can be reused). */
  readonly #bodyKey = Buffer.allocUnsafe(8);

  constructor(
    private readonly tables: MailboxTables,
    private readonly status: StoreStatus,
    private readonly counters: Counters,
    private readonly overlays: Overlays,
    private readonly keptAcks: KeptAcks,
    private readonly clock: () => number,
  ) {}

  read(recipient: Uint8Array, afterSeq: number, limit: number): MailboxEntry[] {
    const out: MailboxEntry[] = [];
    this.#scan(recipient, afterSeq, limit, true, (entry) => out.push(entry));
    return out;
  }

  readEach(recipient: Uint8Array, afterSeq: number, limit: number, visit: (entry: MailboxEntry) => void): number {
    return this.#scan(recipient, afterSeq, limit, false, visit);
  }

  /**
   * Visits the live entries of `recipient` after `afterSeq`, at most `limit`. Values come from
   * lmdb-js's getBinaryFast, which lends them in a buffer the next read overwrites: with `copy`
   * each entry gets its own bytes (read()), else the views are only good during `visit` (readEach(),
   * the drain, where copying every value showed in profiles).
   */
  #scan(recipient: Uint8Array, afterSeq: number, limit: number, copy: boolean,
    visit: (entry: MailboxEntry) => void): number {
    if (this.status.closed) throw new Error(CLOSED);
    if (!isRecipientKey(recipient) || !(limit >= 1)) return 0;
    const from = Math.max(0, Math.floor(afterSeq)) + 1;
    if (!(from < MAX_U53)) return 0;
    const now = this.clock();
    const pendingDeleted = this.overlays.pendingDeleted;
    const keptSeqs = this.keptAcks.seqs;
    const checkDeleted = pendingDeleted.size > 0 || keptSeqs.size > 0;
    const { entries, bodies } = this.tables;
    const recipientId = bytesId(recipient);
    let visited = 0;
    for (const key of entries.getKeys({ start: entryKey(recipient, from), end: entryKey(recipient, MAX_U53) })) {
      const seq = readU64(key, RECIPIENT_BYTES);
      // Deleted but not committed yet, or acknowledged and kept for a retry: gone for the recipient.
      if (checkDeleted && (pendingDeleted.has(seq) || keptSeqs.has(seq))) continue;
      let value = entries.getBinaryFast(key);
      if (value === undefined) continue;
      const expiresAt = readU64(value, 16);
      if (expiresAt <= now) continue;
      const flags = value[1]!;
      const wkEnd = HEADER_BYTES + value[2]!;
      const shared = (flags & FLAG_SHARED_BODY) !== 0;
      // Reading a shared body reuses the buffer the entry was lent in: the entry needs its own copy then.
      if (copy || shared) value = ownCopy(value, shared ? wkEnd : wkEnd + readU32(value, 4));
      let body: Uint8Array;
      if (shared) {
        const bodyKey = this.#bodyKey;
        writeU64(bodyKey, 0, readU64(value, 72));
        const stored = copy ? bodies.getBinary(bodyKey) : bodies.getBinaryFast(bodyKey);
        if (stored === undefined) {
          this.anomalies++;
          continue;
        }
        // A lent buffer's `length` is the value's size but its real extent is lmdb-js's whole read
        // buffer: hand out a proper view of exactly the value.
        body = copy ? stored : stored.subarray(0, stored.length);
      } else {
        body = value.subarray(wkEnd, wkEnd + readU32(value, 4));
      }
      this.#noteHandedOut(recipient, recipientId, seq, value, expiresAt);
      visit({
        seq,
        sender: value.subarray(24, 56),
        storageKey: flags & FLAG_STORAGE_KEY ? value.subarray(56, 72) : null,
        wrappedKey: value.subarray(HEADER_BYTES, wkEnd),
        body,
        storedAt: readU64(value, 8),
        expiresAt,
      });
      if (++visited >= limit) break;
    }
    return visited;
  }

  /** Remembers what ack will need of an entry a read hands out (value: its header and fields, still valid). */
  #noteHandedOut(recipient: Uint8Array, recipientId: string, seq: number, value: Uint8Array, expiresAt: number): void {
    let indexSlotKey: Buffer | null = null;
    if (value[1]! & FLAG_STORAGE_KEY) {
      indexSlotKey = Buffer.allocUnsafe(INDEX_KEY_BYTES);
      indexSlotKey.set(recipient, 0);
      indexSlotKey.set(value.subarray(24, 24 + SENDER_BYTES + 16), RECIPIENT_BYTES);
    }
    this.overlays.handedOut.add(recipientId, seq, {
      recipientId, expiresAt, storedAt: readU64(value, 8), cost: readU32(value, 4) + value[2]!, bodyId: readU64(value, 72), indexSlotKey,
    });
  }

  usage(recipient: Uint8Array): Usage {
    const u = isRecipientKey(recipient) ? this.counters.byRecipient.get(bytesId(recipient)) : undefined;
    return { count: u?.count ?? 0, bytes: u?.bytes ?? 0 };
  }

  totals(): Usage & { recipients: number } {
    const c = this.counters;
    return { count: c.totalCount, bytes: c.totalBytes, recipients: c.byRecipient.size };
  }

  top(n: number): Array<{ recipient: Uint8Array } & Usage> {
    const all = [...this.counters.byRecipient];
    all.sort((a, b) => b[1].bytes - a[1].bytes || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return all.slice(0, Math.max(0, n)).map(([id, u]) => ({ recipient: idBytes(id), count: u.count, bytes: u.bytes }));
  }

  bodyCount(): number {
    const { entries, bodies } = this.tables;
    // Shared bodies have a record each; every other entry carries its own body inline.
    let n = bodies.getKeysCount({});
    for (const key of entries.getKeys({})) {
      const seq = readU64(key, RECIPIENT_BYTES);
      if (this.overlays.pendingDeleted.has(seq)) continue;
      const value = entries.getBinaryFast(key);
      if (value !== undefined && !(value[1]! & FLAG_SHARED_BODY)) n++;
    }
    return n;
  }
}
