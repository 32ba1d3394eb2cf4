// One batch of stores as one transaction on one connection:
//   1. BEGIN; lock the meta row; read the usage of the batch's recipients and the committed entries
//      its storage keys may replace
//   2. pulltab_store(...) with the planned rows (./plan.ts); COMMIT
// Keys, wrapped keys and bodies travel as one binary blob each with offsets (no hex encoding of
// each value, as bytea[] arrays would need). Resolves with the outcomes after COMMIT; rejects if
// anything failed, and then nothing of the batch was stored.
import type pg from 'pg';
import type { EnqueueOutcome, MailboxLimits, QuotaHook, Usage } from '../mailbox.js';
import { batchRecipients, keyedLookups, keyHex, planBatch, type BatchItem, type BatchPlan, type KeyedEntry } from './plan.js';

const SLICES = (blob: string, width: number, count: string) =>
  `SELECT substring(${blob}::bytea FROM (i - 1) * ${width} + 1 FOR ${width}) AS k FROM generate_series(1, ${count}::integer) AS i`;

const META_SQL = 'SELECT last_seq, bytes FROM pulltab_meta WHERE id = 1 FOR UPDATE';
const USAGE_SQL = `SELECT recipient, count, bytes FROM pulltab_usage WHERE recipient IN (${SLICES('$1', 32, '$2')})`;
const KEYED_SQL = `SELECT e.recipient, e.sender, e.storage_key, e.seq, e.cost FROM pulltab_entries e
  JOIN (SELECT substring($1::bytea FROM (i - 1) * 32 + 1 FOR 32) AS r, substring($2::bytea FROM (i - 1) * 32 + 1 FOR 32) AS s,
               substring($3::bytea FROM (i - 1) * 16 + 1 FOR 16) AS k FROM generate_series(1, $4::integer) AS i) w
    ON e.recipient = w.r AND e.sender = w.s AND e.storage_key = w.k`;
const STORE_SQL = `SELECT pulltab_store(${Array.from({ length: 23 }, (_, i) => `$${i + 1}`).join(', ')})`;

export async function writeBatch(
  pool: pg.Pool, items: readonly BatchItem[], limits: Readonly<MailboxLimits>, quotaFor: QuotaHook | null,
): Promise<EnqueueOutcome[][]> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    const recipients = batchRecipients(items);
    const lookups = keyedLookups(items);
    await client.query('BEGIN');
    const meta = await client.query<{ last_seq: string; bytes: string }>(META_SQL);
    const usage = await client.query<{ recipient: Buffer; count: number; bytes: string }>(USAGE_SQL, [Buffer.concat(recipients), recipients.length]);
    const keyed = lookups.length === 0 ? null : await client.query<{ recipient: Buffer; sender: Buffer; storage_key: Buffer; seq: string; cost: string }>(KEYED_SQL, [
      Buffer.concat(lookups.map((l) => l[0])), Buffer.concat(lookups.map((l) => l[1])), Buffer.concat(lookups.map((l) => l[2])), lookups.length,
    ]);
    const usageMap = new Map<string, Usage>();
    for (const row of usage.rows) usageMap.set(keyHex(row.recipient), { count: row.count, bytes: Number(row.bytes) });
    const keyedRows: KeyedEntry[] = (keyed?.rows ?? []).map((row) => ({
      recipient: row.recipient, sender: row.sender, storageKey: row.storage_key, seq: Number(row.seq), cost: Number(row.cost),
    }));
    const plan = planBatch(items, { lastSeq: Number(meta.rows[0]!.last_seq), totalBytes: Number(meta.rows[0]!.bytes), usage: usageMap, keyed: keyedRows }, limits, quotaFor);
    await client.query(STORE_SQL, storeParams(plan));
    const commit = await client.query('COMMIT');
    // COMMIT of a transaction that failed answers ROLLBACK, without an error
    if (commit.command !== 'COMMIT') throw new Error(`the batch's transaction ended in ${commit.command}`);
    return plan.outcomes;
  } catch (err) {
    broken = err instanceof Error ? err : new Error(String(err));
    throw err;
  } finally {
    // a connection whose transaction failed is not reused: its state is unknown
    client.release(broken);
  }
}

function storeParams(plan: BatchPlan): unknown[] {
  const e = plan.entries;
  const wrapped = offsets(e.map((x) => x.wrappedKey));
  const inline = offsets(e.map((x) => (x.bodyId === 0 ? x.body : EMPTY)));
  const shared = offsets(plan.bodies.map((b) => b.body));
  return [
    Buffer.concat(plan.replaced.map((r) => r.recipient)), plan.replaced.map((r) => r.seq),
    Buffer.concat(e.map((x) => x.recipient)), e.map((x) => x.seq), Buffer.concat(e.map((x) => x.sender)),
    Buffer.concat(e.map((x) => x.storageKey ?? NO_STORAGE_KEY)), e.map((x) => x.storageKey !== null),
    wrapped.blob, wrapped.at, wrapped.len,
    inline.blob, inline.at, inline.len, e.map((x) => x.bodyId),
    e.map((x) => x.cost), e.map((x) => x.storedAt), e.map((x) => x.expiresAt),
    plan.bodies.map((b) => b.id), shared.blob, shared.at, shared.len, plan.bodies.map((b) => b.refs),
    plan.lastSeq,
  ];
}

function offsets(parts: Uint8Array[]): { blob: Buffer; at: number[]; len: number[] } {
  const at: number[] = [];
  const len: number[] = [];
  let o = 0;
  for (const p of parts) {
    at.push(o);
    len.push(p.length);
    o += p.length;
  }
  return { blob: Buffer.concat(parts, o), at, len };
}

const EMPTY = new Uint8Array(0);
const NO_STORAGE_KEY = new Uint8Array(16);
