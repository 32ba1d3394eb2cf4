/**
 * The mailbox store's consistency check: everything derived from the entries (usage records and
 * counters, shared-body refcounts, the replacement index, expiry marks, the seq counter) recomputed
 * from the entries and compared with what is stored. verify() reports the problems; repair()
 * applies the fixes. Reads only; the store writes the fixes.
 */
import type { Usage } from '../mailbox.js';
import type { MailboxTables, Table } from './environment.js';
import {
  bytesId, expiryBucket, FLAG_SHARED_BODY, FLAG_STORAGE_KEY, HEADER_BYTES, idBytes, markKey, parseHeader, readU32,
  readU64, RECIPIENT_BYTES, SEQ_KEY, u32Value, u64Value, usageValue,
} from './layout.js';

/** One write that makes the stored data agree with the entries: a put, or a delete (value null). */
export interface Fix {
  db: Table;
  key: Buffer;
  value: Buffer | null;
}

export interface ConsistencyReport {
  /** At most MAX_PROBLEMS descriptions; empty when consistent. */
  problems: string[];
  fixes: Fix[];
  /** Usage per recipient (latin1 key id) and totals as the entries say. */
  usage: Map<string, Usage>;
  count: number;
  bytes: number;
  /** The highest seq of any entry (the seq counter must not be below it). */
  maxSeq: number;
}

const EMPTY = Buffer.alloc(0);
const MAX_PROBLEMS = 200;

/** Compares what is stored (and the store's in-memory usage, `memory`) with what the entries say. */
export function checkConsistency(t: MailboxTables, memory: { usage: Map<string, Usage>; count: number; bytes: number }): ConsistencyReport {
  const problems: string[] = [];
  const problem = (s: string): void => {
    if (problems.length < MAX_PROBLEMS) problems.push(s);
  };
  const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex').slice(0, 16);
  const usage = new Map<string, Usage>();
  const refCount = new Map<number, number>();
  const indexWant = new Map<string, number>();
  const marksWant = new Set<string>();
  let maxSeq = 0;
  for (const { key, value } of t.entries.getRange({})) {
    const recipientId = bytesId(key, 0, RECIPIENT_BYTES);
    const seq = readU64(key, RECIPIENT_BYTES);
    maxSeq = Math.max(maxSeq, seq);
    const meta = parseHeader(value);
    const u = usage.get(recipientId) ?? { count: 0, bytes: 0 };
    u.count++;
    u.bytes += meta.bodyLength + meta.wrappedKeyLength;
    usage.set(recipientId, u);
    if (meta.flags & FLAG_SHARED_BODY) refCount.set(meta.bodyId, (refCount.get(meta.bodyId) ?? 0) + 1);
    else if (value.length !== HEADER_BYTES + meta.wrappedKeyLength + meta.bodyLength) problem(`entry ${hex(key)}/${seq}: inline body length mismatch`);
    if (meta.flags & FLAG_STORAGE_KEY) {
      const id = bytesId(key, 0, RECIPIENT_BYTES) + bytesId(value, 24, 72);
      const had = indexWant.get(id);
      if (had !== undefined) problem(`entries ${had} and ${seq} share recipient, sender and storage key`);
      indexWant.set(id, Math.max(had ?? 0, seq));
    }
    marksWant.add(bytesId(markKey(expiryBucket(meta.expiresAt), key.subarray(0, RECIPIENT_BYTES))));
  }
  const storedSeq = t.meta.getBinary(SEQ_KEY);
  if (maxSeq > (storedSeq ? readU64(storedSeq, 0) : 0)) problem(`seq counter below the highest stored seq ${maxSeq}`);

  const fixes: Fix[] = [];
  // usage records and the in-memory counters
  const usageStored = new Map<string, Usage>();
  for (const { key, value } of t.usage.getRange({})) usageStored.set(bytesId(key), { count: readU64(value, 0), bytes: readU64(value, 8) });
  for (const [recipientId, want] of usage) {
    const got = usageStored.get(recipientId);
    if (!got || got.count !== want.count || got.bytes !== want.bytes) {
      problem(`usage record of ${hex(idBytes(recipientId))}: ${JSON.stringify(got ?? null)}, entries say ${JSON.stringify(want)}`);
      fixes.push({ db: t.usage, key: idBytes(recipientId), value: usageValue(want.count, want.bytes) });
    }
    const mem = memory.usage.get(recipientId);
    if (!mem || mem.count !== want.count || mem.bytes !== want.bytes) problem(`in-memory usage of ${hex(idBytes(recipientId))} disagrees with the entries`);
  }
  for (const recipientId of usageStored.keys()) {
    if (!usage.has(recipientId)) {
      problem(`usage record of ${hex(idBytes(recipientId))} without entries`);
      fixes.push({ db: t.usage, key: idBytes(recipientId), value: null });
    }
  }
  for (const recipientId of memory.usage.keys()) if (!usage.has(recipientId)) problem(`in-memory usage of ${hex(idBytes(recipientId))} without entries`);
  let count = 0;
  let bytes = 0;
  for (const u of usage.values()) {
    count += u.count;
    bytes += u.bytes;
  }
  if (count !== memory.count || bytes !== memory.bytes) problem(`totals ${memory.count}/${memory.bytes}, entries say ${count}/${bytes}`);

  // shared bodies and their refcounts
  for (const { key, value } of t.refs.getRange({})) {
    const id = readU64(key, 0);
    const want = refCount.get(id) ?? 0;
    const got = readU32(value, 0);
    if (want === 0) {
      problem(`refcount of body ${id} without entries`);
      fixes.push({ db: t.refs, key, value: null });
    } else if (got !== want) {
      problem(`refcount of body ${id} is ${got}, entries say ${want}`);
      fixes.push({ db: t.refs, key, value: u32Value(want) });
    }
  }
  for (const [id, want] of refCount) {
    if (t.refs.getBinary(u64Value(id)) === undefined) {
      problem(`body ${id} has no refcount`);
      fixes.push({ db: t.refs, key: u64Value(id), value: u32Value(want) });
    }
    if (t.bodies.getBinary(u64Value(id)) === undefined) problem(`body ${id} is missing (its entries cannot be delivered)`);
  }
  for (const key of t.bodies.getKeys({})) {
    const id = readU64(key, 0);
    if (!refCount.has(id)) {
      problem(`body ${id} is not referenced`);
      fixes.push({ db: t.bodies, key, value: null });
    }
  }

  // replacement index
  for (const { key, value } of t.index.getRange({})) {
    const id = bytesId(key);
    const want = indexWant.get(id);
    const got = readU64(value, 0);
    if (want === undefined) {
      problem(`index slot for seq ${got} without its entry`);
      fixes.push({ db: t.index, key: idBytes(id), value: null });
    } else if (want !== got) {
      problem(`index slot points at ${got}, newest entry is ${want}`);
      fixes.push({ db: t.index, key: idBytes(id), value: u64Value(want) });
    }
  }
  for (const [id, want] of indexWant) {
    if (t.index.getBinary(idBytes(id)) === undefined) {
      problem(`entry ${want} has a storage key but no index slot`);
      fixes.push({ db: t.index, key: idBytes(id), value: u64Value(want) });
    }
  }

  // expiry marks: every entry needs its recipient's mark for its bucket. A mark without entries
  // is normal (they were acknowledged); the sweep deletes it once its bucket has passed.
  for (const id of marksWant) {
    if (t.marks.getBinary(idBytes(id)) === undefined) {
      const mark = idBytes(id);
      problem(`recipient ${hex(mark.subarray(8))} has entries expiring from ${new Date(readU64(mark, 0)).toISOString()} but no expiry mark`);
      fixes.push({ db: t.marks, key: mark, value: EMPTY });
    }
  }

  return { problems, fixes, usage, count, bytes, maxSeq };
}
