// The schema, created and migrated at open: one migration file per version (./migrations/), applied
// in order, each in its own transaction with its version row. A session advisory lock makes relays
// that start together against one database take turns: the first migrates, the others then find
// the schema current. A database whose schema is newer than this relay knows is refused (a relay
// must not write a layout it does not understand).
import type pg from 'pg';
import * as mailboxes from './migrations/0001-mailboxes.js';
import * as policies from './migrations/0002-policies.js';

interface Migration {
  version: number;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [mailboxes, policies];
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** pg_advisory_lock key: "pulltab" as an int64, shared by every relay on the database. */
const MIGRATION_LOCK = '31654317004698978';

/** Brings the database's schema to SCHEMA_VERSION; resolves with the versions it applied. */
export async function migrate(client: pg.ClientBase): Promise<number[]> {
  await client.query(`SELECT pg_advisory_lock(${MIGRATION_LOCK})`);
  try {
    await client.query('CREATE TABLE IF NOT EXISTS pulltab_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
    const { rows } = await client.query<{ version: number | null }>('SELECT max(version) AS version FROM pulltab_schema');
    const current = rows[0]?.version ?? 0;
    if (current > SCHEMA_VERSION) {
      throw new Error(`the database's pulltab schema is version ${current}, newer than this relay's ${SCHEMA_VERSION}: upgrade the relay`);
    }
    const applied: number[] = [];
    for (const migration of MIGRATIONS) {
      if (migration.version <= current) continue;
      await client.query('BEGIN');
      try {
        await client.query(migration.sql);
        await client.query('INSERT INTO pulltab_schema (version) VALUES ($1)', [migration.version]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      }
      applied.push(migration.version);
    }
    return applied;
  } finally {
    await client.query(`SELECT pg_advisory_unlock(${MIGRATION_LOCK})`).catch(() => {});
  }
}

/** migrate() on a connection of the pool, given back afterwards. */
export async function migrateWith(pool: pg.Pool): Promise<number[]> {
  const client = await pool.connect();
  try {
    return await migrate(client);
  } finally {
    client.release();
  }
}
