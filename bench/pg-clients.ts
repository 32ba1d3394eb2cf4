// Which PostgreSQL client for the mailbox engine: `pg` and `postgres` on this workload, in one run on
// one private cluster. Batched stores (500 rows of the mailbox entries' shape per transaction, into a
// table with the same indexes) sent two ways: bytea[] arrays through unnest (text, hex-encoded),
// and one binary blob of the bodies cut by offsets in SQL; then paged reads with range deletes.
// Run: npx tsc -p bench/tsconfig.json && node dist/bench/bench/pg-clients.js
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import postgres from 'postgres';
import { startCluster } from '../test/postgres-cluster.js';

const ROWS = 500;
const BATCHES = Number(process.env.BATCHES ?? 60);
const BODY = Number(process.env.BODY ?? 256);

const TABLE = `
  CREATE TABLE e (recipient bytea NOT NULL, seq bigint NOT NULL, sender bytea NOT NULL, storage_key bytea,
    wrapped_key bytea NOT NULL, body bytea, body_id bigint, cost bigint NOT NULL, stored_at bigint NOT NULL,
    expires_at bigint NOT NULL, PRIMARY KEY (recipient, seq));
  CREATE UNIQUE INDEX ON e (recipient, sender, storage_key) WHERE storage_key IS NOT NULL;
  CREATE INDEX ON e (expires_at);`;

const UNNEST = `INSERT INTO e (recipient, seq, sender, storage_key, wrapped_key, body, cost, stored_at, expires_at)
  SELECT r, s, se, NULL, w, b, 300, 1, 2 FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bytea[], $5::bytea[]) AS u(r, s, se, w, b)`;
// bodies in one binary parameter, cut at offsets; keys fixed-width in one blob each
const BLOB = `INSERT INTO e (recipient, seq, sender, storage_key, wrapped_key, body, cost, stored_at, expires_at)
  SELECT substring($1::bytea FROM i * 32 + 1 FOR 32), $2::bigint + i, substring($3::bytea FROM i * 32 + 1 FOR 32), NULL,
    substring($4::bytea FROM i * 48 + 1 FOR 48), substring($5::bytea FROM i * $6::int + 1 FOR $6::int), 300, 1, 2
  FROM generate_series(0, $7::int - 1) AS i`;
const READ = 'SELECT seq, sender, storage_key, wrapped_key, body, stored_at, expires_at FROM e WHERE recipient = $1 AND seq > $2 AND expires_at > 0 ORDER BY seq LIMIT $3';
const DELETE = 'DELETE FROM e WHERE recipient = $1 AND seq > $2 AND seq <= $3';

interface Client {
  query(text: string, params: unknown[]): Promise<unknown[]>;
  tx(fn: () => Promise<void>): Promise<void>;
  end(): Promise<void>;
}

function pgClient(url: string): Promise<Client> {
  const client = new pg.Client({ connectionString: url });
  return client.connect().then(() => ({
    query: async (text, params) => (await client.query(text, params)).rows,
    tx: async (fn) => { await client.query('BEGIN'); await fn(); await client.query('COMMIT'); },
    end: () => client.end(),
  }));
}

async function postgresClient(url: string): Promise<Client> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  return {
    // arrays need their element type named (bytea 17, int8 20): postgres infers bytea for a list of Buffers
    query: (text, params) => sql.unsafe(text, params.map((p) => (Array.isArray(p) ? sql.array(p as never[], typeof p[0] === 'number' ? 20 : 17) : p)) as never[]) as unknown as Promise<unknown[]>,
    tx: async (fn) => { await sql.unsafe('BEGIN'); await fn(); await sql.unsafe('COMMIT'); },
    end: () => sql.end(),
  };
}

async function run(name: string, make: (url: string) => Promise<Client>, url: string, recipient: Buffer): Promise<void> {
  const c = await make(url);
  await c.query('TRUNCATE e', []);
  const senders = Array.from({ length: ROWS }, () => randomBytes(32));
  const wrapped = Array.from({ length: ROWS }, () => randomBytes(48));
  const bodies = Array.from({ length: ROWS }, () => randomBytes(BODY));
  const recipients = Array.from({ length: ROWS }, () => recipient);
  let seq = 0;
  for (const mode of ['unnest', 'blob'] as const) {
    await c.query('TRUNCATE e', []);
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let b = 0; b < BATCHES; b++) {
      await c.tx(async () => {
        if (mode === 'unnest') {
          const seqs = Array.from({ length: ROWS }, () => ++seq);
          await c.query(UNNEST, [recipients, seqs, senders, wrapped, bodies]);
        } else {
          await c.query(BLOB, [Buffer.concat(recipients), seq + 1, Buffer.concat(senders), Buffer.concat(wrapped), Buffer.concat(bodies), BODY, ROWS]);
          seq += ROWS;
        }
      });
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    console.log(`${name} store ${mode}: ${Math.round((BATCHES * ROWS) / s)} rows/s, client CPU ${(((cpu.user + cpu.system) / (BATCHES * ROWS))).toFixed(2)} µs/row`);
  }
  // drain what the blob pass stored: pages of ROWS, each deleted by range
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let after = 0;
  let read = 0;
  for (;;) {
    const rows = (await c.query(READ, [recipient, after, ROWS])) as Array<{ seq: string | number }>;
    if (rows.length === 0) break;
    const last = Number(rows[rows.length - 1]!.seq);
    await c.query(DELETE, [recipient, after, last]);
    after = last;
    read += rows.length;
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  console.log(`${name} drain: ${Math.round(read / s)} rows/s, client CPU ${((cpu.user + cpu.system) / read).toFixed(2)} µs/row`);
  await c.end();
}

const cluster = await startCluster({ settings: { fsync: 'on', full_page_writes: 'on' } });
try {
  const url = await cluster.createDatabase('clients');
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  await setup.query(TABLE);
  await setup.end();
  const recipient = randomBytes(32);
  for (let round = 0; round < 2; round++) {
    await run('pg', pgClient, url, recipient);
    await run('postgres', postgresClient, url, recipient);
  }
} finally {
  await cluster.destroy();
}
