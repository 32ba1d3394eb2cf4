// The PostgreSQL side of the `postgres` scenario (bench/run.ts drives the relay through it): the
// database's own CPU, and the baselines the engine is held to, run from this Node process against
// the same cluster: bare batched INSERT ... SELECT FROM unnest(...) of rows of the entries' shape
// into a table with the entries' indexes (the practical store limit of this database here; also
// with the values in binary blobs, as the engine sends them), and a bare paged SELECT + range
// DELETE (the practical drain limit). The drain reads both inserts' rows.
import { readdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import pg from 'pg';

const CLK_TCK = 100;

function stat(pid: number | string): string[] | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** CPU seconds of the server: the postmaster, what its exited children used, and its live children. */
export function databaseCpuSeconds(postmaster: number): number {
  const own = stat(postmaster);
  if (own === null) return NaN;
  // fields after "pid (comm) ": ppid 1, utime 11, stime 12, cutime 13, cstime 14
  let ticks = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = stat(name);
    if (f !== null && Number(f[1]) === postmaster) ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks / CLK_TCK;
}

const TABLE = `
  CREATE TABLE IF NOT EXISTS baseline (recipient bytea NOT NULL, seq bigint NOT NULL, sender bytea NOT NULL, storage_key bytea,
    wrapped_key bytea NOT NULL, body bytea, body_id bigint NOT NULL, cost bigint NOT NULL, stored_at bigint NOT NULL,
    expires_at bigint NOT NULL, PRIMARY KEY (recipient, seq));
  CREATE UNIQUE INDEX IF NOT EXISTS baseline_replace ON baseline (recipient, sender, storage_key) WHERE storage_key IS NOT NULL;
  CREATE INDEX IF NOT EXISTS baseline_expiry ON baseline (expires_at);
  CREATE INDEX IF NOT EXISTS baseline_shared ON baseline (body_id) WHERE body_id <> 0;
  TRUNCATE baseline;`;

const INSERT = `INSERT INTO baseline (recipient, seq, sender, storage_key, wrapped_key, body, body_id, cost, stored_at, expires_at)
  SELECT r, s, se, NULL, w, b, 0, c, t, t + 604800000
  FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bigint[], $7::bigint[]) AS u(r, s, se, w, b, c, t)`;
// the same rows with the keys, wrapped keys and bodies in one binary parameter each, cut in SQL (the engine's way)
const INSERT_BLOB = `INSERT INTO baseline (recipient, seq, sender, storage_key, wrapped_key, body, body_id, cost, stored_at, expires_at)
  SELECT $1::bytea, $2::bigint + i, substring($3::bytea FROM i * 32 + 1 FOR 32), NULL, ''::bytea,
    substring($4::bytea FROM i * $5::integer + 1 FOR $5::integer), 0, $5::integer, $6::bigint, $6::bigint + 604800000
  FROM generate_series(0, $7::integer - 1) AS i`;
const READ = 'SELECT seq, sender, storage_key, wrapped_key, body, stored_at, expires_at FROM baseline WHERE recipient = $1 AND seq > $2 AND expires_at > $3 ORDER BY seq LIMIT $4';
const DELETE = 'DELETE FROM baseline WHERE recipient = $1 AND seq > $2 AND seq <= $3';

export interface BaselineResult {
  rows: number;
  seconds: number;
  clientCpuSeconds: number;
  databaseCpuSeconds: number;
}

/**
 * Inserts rows of bodyBytes for one recipient in transactions of batchRows for durationMs, then
 * reads them back in pages of batchRows, deleting each page by its seq range.
 */
export async function runBaselines(url: string, postmaster: number, bodyBytes: number, batchRows: number, durationMs: number): Promise<{ insert: BaselineResult; insertBinary: BaselineResult; drain: BaselineResult }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(TABLE);
    const recipient = randomBytes(32);
    const column = <T>(make: () => T): T[] => Array.from({ length: batchRows }, make);
    const recipients = column(() => recipient);
    const senders = column(() => randomBytes(32));
    const wrapped = column(() => Buffer.alloc(0));
    const bodies = column(() => Buffer.alloc(bodyBytes, 0x62));
    const costs = column(() => bodyBytes);
    let seq = 0;
    const measure = async (work: () => Promise<number>): Promise<BaselineResult> => {
      const db0 = databaseCpuSeconds(postmaster);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const rows = await work();
      const seconds = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      return { rows, seconds, clientCpuSeconds: (cpu.user + cpu.system) / 1e6, databaseCpuSeconds: databaseCpuSeconds(postmaster) - db0 };
    };
    const insert = await measure(async () => {
      const stopAt = performance.now() + durationMs;
      let rows = 0;
      while (performance.now() < stopAt) {
        const now = Date.now();
        const seqs = column(() => ++seq);
        await client.query('BEGIN');
        await client.query(INSERT, [recipients, seqs, senders, wrapped, bodies, costs, column(() => now)]);
        await client.query('COMMIT');
        rows += batchRows;
      }
      return rows;
    });
    const insertBinary = await measure(async () => {
      const stopAt = performance.now() + durationMs;
      let rows = 0;
      const senderBlob = Buffer.concat(senders);
      const bodyBlob = Buffer.concat(bodies);
      while (performance.now() < stopAt) {
        await client.query('BEGIN');
        await client.query(INSERT_BLOB, [recipient, seq + 1, senderBlob, bodyBlob, bodyBytes, Date.now(), batchRows]);
        await client.query('COMMIT');
        seq += batchRows;
        rows += batchRows;
      }
      return rows;
    });
    const drain = await measure(async () => {
      let after = 0;
      let rows = 0;
      for (;;) {
        const page = await client.query<{ seq: string }>(READ, [recipient, after, Date.now(), batchRows]);
        if (page.rows.length === 0) return rows;
        const last = Number(page.rows[page.rows.length - 1]!.seq);
        await client.query(DELETE, [recipient, after, last]);
        after = last;
        rows += page.rows.length;
      }
    });
    await client.query('DROP TABLE baseline');
    return { insert, insertBinary, drain };
  } finally {
    await client.end();
  }
}
