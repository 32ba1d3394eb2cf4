// One batch of stores as one transaction in two round trips, pipelined on the engine's writer
// connection (pg's pipeline mode: the queries of a step go out together):
//   1. BEGIN; lock the meta row; read the usage of the batch's recipients and the committed entries
//      its storage keys may replace
//   2. pulltab_store(...) with the planned rows (./plan.ts); COMMIT
// Keys, wrapped keys and bodies travel as one binary blob each with offsets (no hex encoding of
// each value, as bytea[] arrays would need). Resolves with the outcomes after COMMIT; rejects if
// anything failed, and then nothing of the batch was stored.
import type pg from 'pg';
import type { EnqueueOutcome, MailboxLimits, QuotaHook, Usage } from '../mailbox.js';
import { keyIdOf } from '../../crypto/key-id.js';
import { batchRecipients, keyedLookups, planBatch, type BatchItem, type BatchPlan, type KeyedEntry } from './plan.js';

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
    // pipelined: the four go out together and come back in one round trip
    const [, meta, usage, keyed] = await Promise.all([
      client.query('BEGIN'),
      client.query<{ last_seq: string; bytes: string }>({ name: 'pulltab_meta_lock', text: META_SQL }),
      client.query<{ recipient: Buffer; count: number; bytes: string }>({ name: 'pulltab_usage_of', text: USAGE_SQL, values: [Buffer.concat(recipients), recipients.length] }),
      lookups.length === 0 ? null : client.query<{ recipient: Buffer; sender: Buffer; storage_key: Buffer; seq: string; cost: string }>({
        name: 'pulltab_keyed', text: KEYED_SQL,
        values: [Buffer.concat(lookups.map((l) => l[0])), Buffer.concat(lookups.map((l) => l[1])), Buffer.concat(lookups.map((l) => l[2])), lookups.length],
      }),
    ]);
    const usageMap = new Map<string, Usage>();
    for (const row of usage.rows) usageMap.set(keyIdOf(row.recipient), { count: row.count, bytes: Number(row.bytes) });
    const keyedRows: KeyedEntry[] = (keyed?.rows ?? []).map((row) => ({
      recipient: row.recipient, sender: row.sender, storageKey: row.storage_key, seq: Number(row.seq), cost: Number(row.cost),
    }));
    const plan = planBatch(items, { lastSeq: Number(meta.rows[0]!.last_seq), totalBytes: Number(meta.rows[0]!.bytes), usage: usageMap, keyed: keyedRows }, limits, quotaFor);
    const [, commit] = await Promise.all([client.query({ name: 'pulltab_store', text: STORE_SQL, values: storeParams(plan) }), client.query('COMMIT')]);
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
    Buffer.concat(plan.replaced.map((r) => r.recipient)), arrayLiteral(plan.replaced.map((r) => r.seq)),
    Buffer.concat(e.map((x) => x.recipient)), arrayLiteral(e.map((x) => x.seq)), Buffer.concat(e.map((x) => x.sender)),
    Buffer.concat(e.map((x) => x.storageKey ?? NO_STORAGE_KEY)), `{${e.map((x) => (x.storageKey !== null ? 't' : 'f')).join(',')}}`,
    wrapped.blob, arrayLiteral(wrapped.at), arrayLiteral(wrapped.len),
    inline.blob, arrayLiteral(inline.at), arrayLiteral(inline.len), arrayLiteral(e.map((x) => x.bodyId)),
    arrayLiteral(e.map((x) => x.cost)), arrayLiteral(e.map((x) => x.storedAt)), arrayLiteral(e.map((x) => x.expiresAt)),
    arrayLiteral(plan.bodies.map((b) => b.id)), shared.blob, arrayLiteral(shared.at), arrayLiteral(shared.len), arrayLiteral(plan.bodies.map((b) => b.refs)),
    plan.lastSeq,
  ];
}

/** An array of integers as PostgreSQL's text form, made at once (pg escapes each element on its own: measured at 5% of the relay's time). */
export function arrayLiteral(values: readonly number[]): string {
  return `{${values.join(',')}}`;
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
