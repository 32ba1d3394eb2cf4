/**
 * One stored entry, as the operations that change entries see it (./accept.ts, ./deletes.ts,
 * ./kept-acks.ts): looked up through the overlays first (./overlays.ts), then LMDB; deleted with
 * everything derived from it (its share of a body, its replacement-index slot, its usage); its
 * recipient marked for the expiry sweep.
 */
import type { Counters } from './counters.js';
import type { MailboxTables } from './environment.js';
import {
  bytesId, ENTRY_KEY_BYTES, entryKey, expiryBucket, FLAG_STORAGE_KEY, INDEX_KEY_BYTES, MARK_KEY_BYTES, markKey,
  parseHeader, readU32, readU64, RECIPIENT_BYTES, SENDER_BYTES, u32Value, writeU64, type EntryMeta,
} from './layout.js';
import type { BodySlot, IndexSlot, Overlays } from './overlays.js';
import type { Operation, Writes } from './writes.js';

const EMPTY = Buffer.alloc(0);
/** Recipients whose last expiry bucket is remembered, at most. */
const MARK_CACHE_MAX = 100_000;

export class StoredEntries {
  /**
   * The expiry bucket each recipient was last marked for, so a burst of messages to one recipient
   * writes its mark once. Only a cache: a miss costs one idempotent put.
   */
  readonly #lastMarkedBucket = new Map<string, number>();
  // Scratch key buffers: lmdb-js copies keys into its instruction buffer, so they can be reused.
  readonly #entryKey = Buffer.allocUnsafe(ENTRY_KEY_BYTES);
  readonly #markKey = Buffer.allocUnsafe(MARK_KEY_BYTES);
  readonly #indexKey = Buffer.allocUnsafe(INDEX_KEY_BYTES);
  readonly #bodyKey = Buffer.allocUnsafe(8);

  constructor(
    private readonly tables: MailboxTables,
    private readonly overlays: Overlays,
    private readonly counters: Counters,
    private readonly writes: Writes,
  ) {}

  /** The live slot of (recipient, sender, storageKey) whose index key is `key` (its id: `id`), or undefined. */
  liveIndexSlot(id: string, key: Buffer, recipient: Uint8Array): IndexSlot | undefined {
    const slot = this.overlays.index.get(id);
    if (slot !== undefined) return slot.seq === 0 ? undefined : slot;
    const value = this.tables.index.getBinaryFast(key);
    if (value === undefined) return undefined;
    const seq = readU64(value, 0);
    const meta = this.#entryMeta(recipient, seq);
    if (meta === undefined) return undefined; // dangling: verify() reports it, repair() drops it
    return { seq, expiresAt: meta.expiresAt, cost: meta.bodyLength + meta.wrappedKeyLength, bodyId: meta.bodyId };
  }

  /** Makes sure the sweep will visit `recipient` once `expiresAt` has passed. */
  markExpiry(recipient: Uint8Array, recipientId: string, expiresAt: number, op: Operation): void {
    const bucket = expiryBucket(expiresAt);
    const marked = this.#lastMarkedBucket;
    if (marked.get(recipientId) === bucket) return;
    if (marked.size >= MARK_CACHE_MAX) marked.clear();
    marked.set(recipientId, bucket);
    this.writes.put(this.tables.marks, markKey(bucket, recipient, this.#markKey), EMPTY, op);
  }

  /** The sweep deleted the mark of this bucket: a later entry in it must write it again. */
  markDeleted(recipientId: string, bucket: number): void {
    if (this.#lastMarkedBucket.get(recipientId) === bucket) this.#lastMarkedBucket.delete(recipientId);
  }

  /** Forgets which marks were written (the repair recomputes them). */
  forgetMarks(): void {
    this.#lastMarkedBucket.clear();
  }

  /**
   * Deletes an entry whose cost and body are known: the entry, its share of a body, its usage (its
   * expiry mark stays until the sweep passes the mark's bucket). When `indexSlotKey` is given (the
   * entry had a storage key and is not being replaced) the index slot is deleted too if it still
   * points at this entry.
   */
  deleteKnown(recipient: Uint8Array, recipientId: string, seq: number, cost: number,
    bodyId: number, indexSlotKey: Buffer | null, op: Operation): void {
    const overlays = this.overlays;
    this.writes.remove(this.tables.entries, entryKey(recipient, seq, this.#entryKey), op);
    overlays.pendingNew.delete(seq);
    if (overlays.handedOut.size > 0) overlays.handedOut.take(recipientId, seq);
    overlays.pendingDeleted.add(seq);
    overlays.unbatched.deleted.push(seq);
    if (bodyId !== 0) this.#releaseBody(bodyId, op);
    if (indexSlotKey !== null) {
      const id = bytesId(indexSlotKey);
      const current = overlays.index.get(id);
      let points: boolean;
      if (current !== undefined) points = current.seq === seq;
      else {
        const value = this.tables.index.getBinaryFast(indexSlotKey);
        points = value !== undefined && readU64(value, 0) === seq;
      }
      if (points) {
        this.writes.remove(this.tables.index, indexSlotKey, op);
        const tomb: IndexSlot = { seq: 0, expiresAt: 0, cost: 0, bodyId: 0 };
        overlays.index.set(id, tomb);
        overlays.unbatched.index.push([id, tomb]);
      }
    }
    this.counters.add(recipientId, -1, -cost);
  }

  /**
   * Deletes the entry (recipient, seq) if it exists and is not already being deleted, unless
   * `keep` says to keep it; true if it was deleted.
   */
  delete(recipient: Uint8Array, recipientId: string, seq: number, op: Operation,
    keep?: (meta: EntryMeta) => boolean): boolean {
    const overlays = this.overlays;
    if (overlays.pendingDeleted.has(seq)) return false;
    // Known without reading it: not committed yet, or handed out by a read (the drain, then its ack).
    // (deleteKnown forgets the handed-out record; one kept here stays for the next ack.)
    const known = overlays.pendingNew.get(seq) ?? overlays.handedOut.get(recipientId, seq);
    if (known !== undefined) {
      if (known.recipientId !== recipientId) return false;
      if (keep && keep({ flags: 0, wrappedKeyLength: 0, bodyLength: known.cost, storedAt: known.storedAt, expiresAt: known.expiresAt, bodyId: known.bodyId })) return false;
      this.deleteKnown(recipient, recipientId, seq, known.cost, known.bodyId, known.indexSlotKey, op);
      return true;
    }
    const value = this.tables.entries.getBinaryFast(entryKey(recipient, seq, this.#entryKey));
    if (value === undefined) return false;
    const meta = parseHeader(value);
    if (keep && keep(meta)) return false;
    let indexSlotKey: Buffer | null = null;
    if (meta.flags & FLAG_STORAGE_KEY) {
      // Copy sender and storage key out of the volatile buffer before any other read.
      indexSlotKey = this.#indexKey;
      indexSlotKey.set(recipient, 0);
      indexSlotKey.set(value.subarray(24, 24 + SENDER_BYTES + 16), RECIPIENT_BYTES);
    }
    this.deleteKnown(recipient, recipientId, seq, meta.bodyLength + meta.wrappedKeyLength, meta.bodyId, indexSlotKey, op);
    return true;
  }

  #entryMeta(recipient: Uint8Array, seq: number): EntryMeta | undefined {
    if (this.overlays.pendingDeleted.has(seq)) return undefined;
    const value = this.tables.entries.getBinaryFast(entryKey(recipient, seq, this.#entryKey));
    return value === undefined ? undefined : parseHeader(value);
  }

  /** One entry less holds a shared body: its refcount goes down, or the body goes with its last entry. */
  #releaseBody(bodyId: number, op: Operation): void {
    const overlay = this.overlays.bodies.get(bodyId);
    let refs: number;
    const key = this.#bodyKey;
    writeU64(key, 0, bodyId);
    if (overlay !== undefined) refs = overlay.refs;
    else {
      const value = this.tables.refs.getBinaryFast(key);
      refs = value === undefined ? 0 : readU32(value, 0);
    }
    let slot: BodySlot;
    if (refs <= 1) {
      this.writes.remove(this.tables.bodies, key, op);
      this.writes.remove(this.tables.refs, key, op);
      slot = { refs: 0 };
    } else {
      this.writes.put(this.tables.refs, key, u32Value(refs - 1), op);
      slot = { refs: refs - 1 };
    }
    this.overlays.bodies.set(bodyId, slot);
    this.overlays.unbatched.bodies.push([bodyId, slot]);
  }
}
