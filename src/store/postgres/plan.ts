// One batch of stores, decided in the relay: given what the database holds for the batch's
// recipients (read under the meta row's lock, in the batch's transaction), the same decisions the
// model makes one request at a time (quotas through src/store/quota.ts, replacement, seqs from the
// one counter), and the rows to write: pure, no I/O. engine.ts reads, plans, writes, commits.
import {
  compareBytes, entryCost, recipientShapeOk, ttlMillis,
  type EnqueueOutcome, type EnqueueRequest, type MailboxLimits, type QuotaHook, type Usage,
} from '../mailbox.js';
import { keyIdOf } from '../../crypto/key-id.js';
import { quotaRefusal } from '../quota.js';

/** A request in a batch: the engine's own copy, and the store's clock when it was accepted. */
export interface BatchItem {
  request: EnqueueRequest;
  acceptedAt: number;
  /** Filled in by the engine once the batch has committed. */
  outcomes: EnqueueOutcome[];
}

/** A committed entry that a request of the batch may replace. */
export interface KeyedEntry {
  recipient: Uint8Array;
  sender: Uint8Array;
  storageKey: Uint8Array;
  seq: number;
  cost: number;
}

/** What the database holds, as the batch's transaction read it. */
export interface BatchState {
  lastSeq: number;
  totalBytes: number;
  /** by recipient key id (keyIdOf) */
  usage: Map<string, Usage>;
  keyed: KeyedEntry[];
}

export interface NewEntry {
  recipient: Uint8Array;
  seq: number;
  sender: Uint8Array;
  storageKey: Uint8Array | null;
  wrappedKey: Uint8Array;
  body: Uint8Array;
  /** 0: the body is stored in the entry; else the shared body's id. */
  bodyId: number;
  cost: number;
  storedAt: number;
  expiresAt: number;
}

export interface SharedBody {
  id: number;
  body: Uint8Array;
  refs: number;
}

export interface BatchPlan {
  /** One list per item, as the model would answer it. */
  outcomes: EnqueueOutcome[][];
  /** Committed entries replaced by the batch: delete them first. */
  replaced: Array<{ recipient: Uint8Array; seq: number }>;
  entries: NewEntry[];
  bodies: SharedBody[];
  lastSeq: number;
}

/** Map key of a (recipient, sender, storage key): their key ids, of fixed lengths, one after another. */
const keyOf = (recipient: Uint8Array, sender: Uint8Array, storageKey: Uint8Array): string => keyIdOf(recipient) + keyIdOf(sender) + keyIdOf(storageKey);

const refused = (n: number, code: 'STORE_ERROR' | 'TTL_TOO_LONG'): EnqueueOutcome[] => Array.from({ length: n }, () => ({ ok: false, code }));

/** The keys whose committed entries the batch may replace: (recipient, sender, storage key) of every keyed request. */
export function keyedLookups(items: readonly BatchItem[]): Array<[Uint8Array, Uint8Array, Uint8Array]> {
  const seen = new Set<string>();
  const out: Array<[Uint8Array, Uint8Array, Uint8Array]> = [];
  for (const { request } of items) {
    if (request.storageKey === null) continue;
    for (const r of request.recipients) {
      if (!recipientShapeOk(r)) continue;
      const k = keyOf(r.key, request.sender, request.storageKey);
      if (seen.has(k)) continue;
      seen.add(k);
      out.push([r.key, request.sender, request.storageKey]);
    }
  }
  return out;
}

/** The distinct recipients of the batch (for the usage read). */
export function batchRecipients(items: readonly BatchItem[]): Uint8Array[] {
  const seen = new Map<string, Uint8Array>();
  for (const { request } of items) {
    for (const r of request.recipients) if (recipientShapeOk(r)) seen.set(keyIdOf(r.key), r.key);
  }
  return [...seen.values()].sort(compareBytes);
}

interface Live {
  /** index into entries, or -1 for a committed one */
  index: number;
  seq: number;
  cost: number;
  recipient: Uint8Array;
}

export function planBatch(items: readonly BatchItem[], state: BatchState, limits: Readonly<MailboxLimits>, quotaFor: QuotaHook | null): BatchPlan {
  const usage = new Map<string, Usage>();
  for (const [k, u] of state.usage) usage.set(k, { count: u.count, bytes: u.bytes });
  const keyed = new Map<string, Live>();
  for (const e of state.keyed) keyed.set(keyOf(e.recipient, e.sender, e.storageKey), { index: -1, seq: e.seq, cost: e.cost, recipient: e.recipient });
  let totalBytes = state.totalBytes;
  let lastSeq = state.lastSeq;
  const outcomes: EnqueueOutcome[][] = [];
  const replaced: BatchPlan['replaced'] = [];
  const entries: Array<NewEntry | null> = [];
  /** per item: the indexes of its entries */
  const byItem: number[][] = [];

  for (const { request, acceptedAt } of items) {
    const mine: number[] = [];
    byItem.push(mine);
    const ttlMs = ttlMillis(request.ttlSeconds);
    if (ttlMs === null) {
      outcomes.push(refused(request.recipients.length, 'STORE_ERROR'));
      continue;
    }
    if (request.ttlSeconds > limits.maxTtlSeconds) {
      outcomes.push(refused(request.recipients.length, 'TTL_TOO_LONG'));
      continue;
    }
    const out: EnqueueOutcome[] = [];
    for (const r of request.recipients) {
      if (!recipientShapeOk(r)) {
        out.push({ ok: false, code: 'STORE_ERROR' });
        continue;
      }
      const id = keyIdOf(r.key);
      const k = request.storageKey === null ? null : keyOf(r.key, request.sender, request.storageKey);
      const old = k === null ? undefined : keyed.get(k);
      const cost = entryCost(request.body.length, r.wrappedKey.length);
      const mailbox = usage.get(id);
      const refusal = quotaRefusal(mailbox, totalBytes, cost, old ? old.cost : -1, quotaFor?.(r.key), limits);
      if (refusal !== null) {
        out.push({ ok: false, code: refusal });
        continue;
      }
      const now = mailbox ?? { count: 0, bytes: 0 };
      if (old) {
        if (old.index < 0) replaced.push({ recipient: old.recipient, seq: old.seq });
        else entries[old.index] = null;
        now.count -= 1;
        now.bytes -= old.cost;
        totalBytes -= old.cost;
      }
      const seq = ++lastSeq;
      now.count += 1;
      now.bytes += cost;
      totalBytes += cost;
      usage.set(id, now);
      const index = entries.length;
      entries.push({
        recipient: r.key, seq, sender: request.sender, storageKey: request.storageKey, wrappedKey: r.wrappedKey,
        body: request.body, bodyId: 0, cost, storedAt: acceptedAt, expiresAt: acceptedAt + ttlMs,
      });
      mine.push(index);
      if (k !== null) keyed.set(k, { index, seq, cost, recipient: r.key });
      out.push({ ok: true, seq });
    }
    outcomes.push(out);
  }

  // A body kept by two or more entries of its request is stored once, under its first entry's seq.
  const bodies: SharedBody[] = [];
  for (const mine of byItem) {
    const kept = mine.map((i) => entries[i]).filter((e): e is NewEntry => e !== null);
    if (kept.length < 2) continue;
    const id = kept[0]!.seq;
    bodies.push({ id, body: kept[0]!.body, refs: kept.length });
    for (const e of kept) e.bodyId = id;
  }
  return { outcomes, replaced, entries: entries.filter((e): e is NewEntry => e !== null), bodies, lastSeq };
}

