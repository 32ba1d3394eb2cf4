/**
 * Accepting messages: the quota decision for each recipient (../mailbox.ts says the rules and their
 * order), the replacement of an older entry with the same storage key, and the writes of what was
 * accepted: one body stored once (inline in the entry when one entry holds it, else in `bodies`
 * with a refcount), an entry per recipient, the replacement-index slot, the expiry mark.
 * Everything is decided synchronously against the counters and overlays, which already include
 * the writes not yet committed.
 */
import {
  recipientShapeOk, requestShapeOk, ttlMillis,
  type EnqueueOutcome, type EnqueueRequest, type MailboxLimits, type QuotaHook, type RefusalCode,
} from '../mailbox.js';
import { quotaRefusal } from '../quota.js';
import type { Counters } from './counters.js';
import type { MailboxTables } from './environment.js';
import type { StoredEntries } from './entries.js';
import { bytesId, encodeEntry, ENTRY_KEY_BYTES, entryKey, indexKey, u32Value, u64Value, writeU64 } from './layout.js';
import type { BodySlot, IndexSlot, Overlays } from './overlays.js';
import type { StoreStatus } from './status.js';
import { newOperation, type Operation, type Writes } from './writes.js';

/** A recipient accepted by a request, until its entry is written. */
interface Accepted {
  recipientId: string;
  cost: number;
  indexSlotKey: Buffer | null;
  key: Uint8Array;
  wrappedKey: Uint8Array;
  seq: number;
  slot: IndexSlot | null;
  /** Listed again later in the same request with the same storage key: that listing replaced this one. */
  replacedInRequest: boolean;
}

function refuseAll(request: EnqueueRequest, code: RefusalCode): EnqueueOutcome[] {
  const n = Array.isArray(request?.recipients) ? request.recipients.length : 0;
  const out: EnqueueOutcome[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = { ok: false, code };
  return out;
}

function failedCommit(outcome: EnqueueOutcome): EnqueueOutcome {
  return outcome.ok ? { ok: false, code: 'STORE_ERROR' } : outcome;
}

export class Acceptor {
  // Scratch key buffers: lmdb-js copies keys into its instruction buffer, so they can be reused.
  readonly #entryKey = Buffer.allocUnsafe(ENTRY_KEY_BYTES);
  readonly #bodyKey = Buffer.allocUnsafe(8);

  constructor(
    private readonly tables: MailboxTables,
    private readonly status: StoreStatus,
    private readonly counters: Counters,
    private readonly overlays: Overlays,
    private readonly writes: Writes,
    private readonly storedEntries: StoredEntries,
    private readonly clock: () => number,
    private readonly quotaFor: QuotaHook | null,
    /** The store-wide limits (setLimits()). */
    public limits: MailboxLimits,
  ) {}

  enqueue(request: EnqueueRequest): Promise<EnqueueOutcome[]> {
    const repair = this.status.repairRunning;
    if (repair) return repair.then(() => this.enqueue(request));
    const { outcomes, done } = this.#acceptAndJoin(request);
    return done === null ? Promise.resolve(outcomes) : done.then((ok) => (ok ? outcomes : outcomes.map(failedCommit)));
  }

  enqueueNow(request: EnqueueRequest): EnqueueOutcome[] {
    if (this.status.repairRunning || !this.status.writable) return refuseAll(request, 'STORE_ERROR');
    return this.#acceptAndJoin(request).outcomes;
  }

  /** Decides and writes a request; `done` is its batch's outcome, null when it wrote nothing. */
  #acceptAndJoin(request: EnqueueRequest): { outcomes: EnqueueOutcome[]; done: Promise<boolean> | null } {
    // Closing, or unwritable since a failed commit: nothing is written, and nothing promised.
    if (this.status.closingOrClosed || !this.status.writable) return { outcomes: refuseAll(request, 'STORE_ERROR'), done: null };
    const op = newOperation();
    try {
      const outcomes = this.#accept(request, op);
      return { outcomes, done: op.writes === 0 ? null : this.writes.joinBatch() };
    } catch (err) {
      // Never throw out of enqueue. Writes issued before the throw may still commit: repair.
      this.writes.abandon(op, err);
      return { outcomes: refuseAll(request, 'STORE_ERROR'), done: null };
    }
  }

  /** The outcomes of a request, its writes issued (not yet joined to their batch). */
  #accept(request: EnqueueRequest, op: Operation): EnqueueOutcome[] {
    if (!requestShapeOk(request)) return refuseAll(request, 'STORE_ERROR');
    const ttlMs = ttlMillis(request.ttlSeconds);
    if (ttlMs === null) return refuseAll(request, 'STORE_ERROR');
    const limits = this.limits;
    if (request.ttlSeconds > limits.maxTtlSeconds) return refuseAll(request, 'TTL_TOO_LONG');

    const counters = this.counters;
    const overlays = this.overlays;
    const writes = this.writes;
    const storedEntries = this.storedEntries;
    const { sender, storageKey, body, recipients } = request;
    const storedAt = this.clock();
    const expiresAt = storedAt + ttlMs;
    const outcomes: EnqueueOutcome[] = new Array(recipients.length);
    const accepted: Accepted[] = [];
    const firstSeqOfRequest = counters.lastSeq + 1;

    for (let i = 0; i < recipients.length; i++) {
      const r = recipients[i]!;
      if (!recipientShapeOk(r)) {
        outcomes[i] = { ok: false, code: 'STORE_ERROR' };
        continue;
      }
      const recipientId = bytesId(r.key);
      const cost = body.length + r.wrappedKey.length;
      let replaced: IndexSlot | undefined;
      let indexSlotKey: Buffer | null = null;
      let indexSlotId = '';
      if (storageKey !== null) {
        indexSlotKey = indexKey(r.key, sender, storageKey);
        indexSlotId = bytesId(indexSlotKey);
        replaced = storedEntries.liveIndexSlot(indexSlotId, indexSlotKey, r.key);
      }
      const quota = this.quotaFor === null ? undefined : this.quotaFor(r.key);
      const refusal = quotaRefusal(counters.byRecipient.get(recipientId), counters.totalBytes, cost, replaced ? replaced.cost : -1, quota, limits);
      if (refusal !== null) {
        outcomes[i] = { ok: false, code: refusal };
        continue;
      }
      if (replaced) {
        // The replacement takes a NEW seq and the old entry is deleted. Keeping the old seq would let
        // an ack of the old, already delivered version delete the undelivered replacement
        // (the original relay's weakness 15).
        if (replaced.seq >= firstSeqOfRequest) {
          // Listed twice in this request: the earlier entry was never written.
          const earlier = accepted.find((a) => a.seq === replaced!.seq)!;
          earlier.replacedInRequest = true;
          counters.add(recipientId, -1, -earlier.cost);
        } else {
          storedEntries.deleteKnown(r.key, recipientId, replaced.seq, replaced.cost, replaced.bodyId, null, op);
        }
      }
      const seq = counters.nextSeq();
      counters.add(recipientId, 1, cost);
      let slot: IndexSlot | null = null;
      if (indexSlotKey !== null) {
        slot = { seq, expiresAt, cost, bodyId: 0 };
        overlays.index.set(indexSlotId, slot);
        overlays.unbatched.index.push([indexSlotId, slot]);
      }
      accepted.push({ key: r.key, recipientId, wrappedKey: r.wrappedKey, seq, cost, slot, indexSlotKey, replacedInRequest: false });
      outcomes[i] = { ok: true, seq };
    }

    let live = 0;
    let first: Accepted | null = null;
    for (const a of accepted) {
      if (!a.replacedInRequest) {
        live++;
        first ??= a;
      }
    }
    if (live > 0) {
      const t = this.tables;
      // One body stored once: inline in the entry when one entry holds it, else in `bodies` with a refcount.
      let bodyId = 0;
      if (live > 1) {
        bodyId = first!.seq;
        const bodyKey = this.#bodyKey;
        writeU64(bodyKey, 0, bodyId);
        writes.put(t.bodies, bodyKey, Buffer.from(body), op);
        writes.put(t.refs, bodyKey, u32Value(live), op);
        const bodySlot: BodySlot = { refs: live };
        overlays.bodies.set(bodyId, bodySlot);
        overlays.unbatched.bodies.push([bodyId, bodySlot]);
      }
      for (const a of accepted) {
        if (a.replacedInRequest) continue;
        writes.put(t.entries, entryKey(a.key, a.seq, this.#entryKey),
          encodeEntry(sender, storageKey, a.wrappedKey, body, storedAt, expiresAt, bodyId, writes.takeValue), op);
        storedEntries.markExpiry(a.key, a.recipientId, expiresAt, op);
        if (a.indexSlotKey !== null) {
          writes.put(t.index, a.indexSlotKey, u64Value(a.seq), op);
          a.slot!.bodyId = bodyId;
        }
        // A lean record: the request's buffers (views of a socket read) are not kept until the commit.
        overlays.pendingNew.set(a.seq, { recipientId: a.recipientId, expiresAt, storedAt, cost: a.cost, bodyId, indexSlotKey: a.indexSlotKey });
        overlays.unbatched.added.push(a.seq);
      }
    }
    return outcomes;
  }
}
