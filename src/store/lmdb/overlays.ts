/**
 * What the store's decisions must know beyond what LMDB answers: the effect of writes that have
 * not committed yet (a replacement of an entry enqueued a moment ago, two acks of a shared body in
 * one turn), and what reads handed out. LMDB's reads see committed data only, so decisions look
 * here first:
 *  - `pendingNew`: accepted entries not committed yet (ack() can delete them, read() does not show them);
 *  - `pendingDeleted`: seqs whose deletion is not committed (read() and ack() skip them);
 *  - `index`: replacement-index slots written or deleted, not committed yet;
 *  - `bodies`: shared-body refcounts not committed yet;
 *  - `handedOut` (./handed-out.ts): what ack needs of the entries a read handed out.
 * Each operation registers what it put in the first four in `unbatched`; ./writes.ts moves that to
 * the batch of the transaction carrying the operation's writes, and drops it here once that
 * transaction has settled (then LMDB itself answers the same), unless a later operation replaced it.
 */
import { HandedOut } from './handed-out.js';
import { PendingBySeq } from './pending.js';

/** What deleting an entry needs of it, known without reading it (accepted and not committed, or handed out). */
export interface EntryRecord {
  recipientId: string;
  expiresAt: number;
  storedAt: number;
  cost: number;
  bodyId: number;
  /** The entry's replacement-index key when it has a storage key, else null. */
  indexSlotKey: Buffer | null;
}

/** A replacement-index slot: where (recipient, sender, storageKey) points and what that entry costs. seq 0 = deleted. */
export interface IndexSlot {
  seq: number;
  expiresAt: number;
  cost: number;
  bodyId: number;
}

/** A shared body's refcount as the uncommitted writes left it; 0 = deleted. */
export interface BodySlot {
  refs: number;
}

/**
 * What the operations of one transaction registered: the overlay entries to drop once it has
 * settled, and its acknowledgements, kept for a retry if it fails (./kept-acks.ts).
 */
export interface UncommittedChanges {
  added: number[];
  deleted: number[];
  index: Array<[string, IndexSlot]>;
  bodies: Array<[number, BodySlot]>;
  /** The acks in it, flat (recipient, recipientId, seqs, ...). */
  acks: Array<Uint8Array | string | number[]>;
}

export function noChanges(): UncommittedChanges {
  return { added: [], deleted: [], index: [], bodies: [], acks: [] };
}

/** Handed-out records kept at most (a cache: a missing one makes ack read the entry). */
const HANDED_OUT_MAX = 262_144;

export class Overlays {
  readonly pendingNew = new PendingBySeq<EntryRecord>();
  readonly pendingDeleted = new Set<number>();
  readonly handedOut = new HandedOut<EntryRecord>(HANDED_OUT_MAX);
  /** By index key id (bytesId of the replacement-index key). */
  readonly index = new Map<string, IndexSlot>();
  /** By body id. */
  readonly bodies = new Map<number, BodySlot>();
  /** Registered by the operation being decided, not yet moved to its transaction's batch. */
  readonly unbatched: UncommittedChanges = noChanges();

  /** The transaction that carried `changes` has settled: LMDB answers for them from now on. */
  drop(changes: UncommittedChanges): void {
    for (const seq of changes.added) this.pendingNew.delete(seq);
    for (const seq of changes.deleted) this.pendingDeleted.delete(seq);
    for (const [id, slot] of changes.index) if (this.index.get(id) === slot) this.index.delete(id);
    for (const [id, slot] of changes.bodies) if (this.bodies.get(id) === slot) this.bodies.delete(id);
  }

  /** Forgets everything (the repair, once every write has settled, recomputes from LMDB). */
  clear(): void {
    this.pendingNew.clear();
    this.handedOut.clear();
    this.pendingDeleted.clear();
    this.index.clear();
    this.bodies.clear();
  }
}
