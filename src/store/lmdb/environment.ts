/**
 * The mailbox store's LMDB environment: opening it with the settings durability depends on, its
 * sub-databases (their layout: ./layout.ts), the check of the store format, and the migration of an
 * older format. Everything here happens once, at open.
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import type { LmdbMailboxOptions } from './mailbox.js';
import { expiryBucket, FORMAT_KEY, markKey, readU32, readU64, RECIPIENT_BYTES, STORE_FORMAT, u32Value } from './layout.js';

/** A sub-database: binary keys, binary values. */
export type Table = Database<Buffer, Buffer>;

/** The environment and its sub-databases. */
export interface MailboxTables {
  env: RootDatabase<Buffer, Buffer>;
  entries: Table;
  bodies: Table;
  refs: Table;
  index: Table;
  marks: Table;
  usage: Table;
  meta: Table;
}

/** The options of ./mailbox.ts that concern the environment. */
export type EnvironmentOptions = Pick<LmdbMailboxOptions, 'path' | 'mapSize' | 'pageSize'>;

const EMPTY = Buffer.alloc(0);
const noop = (): void => {};

/**
 * Opens the environment and its sub-databases, creating a new store or migrating an older format.
 * Throws (the environment closed again) when the store has a format this code does not know.
 * `load` reads what the store keeps in memory; if it throws, the environment is closed too.
 */
export function openTables<T>(options: EnvironmentOptions, load: (tables: MailboxTables) => T): { tables: MailboxTables; loaded: T } {
  const env = open<Buffer, Buffer>({
    path: options.path,
    maxDbs: 16,
    keyEncoding: 'binary',
    encoding: 'binary',
    pageSize: options.pageSize ?? 8192,
    // Each write's promise carries `.flushed`: receipts wait for the flush to disk, not only the commit.
    separateFlushed: true,
    ...(options.mapSize !== undefined ? { mapSize: options.mapSize } : {}),
  });
  try {
    const sub = (name: string): Table => env.openDB<Buffer, Buffer>({ name, keyEncoding: 'binary', encoding: 'binary' });
    const tables: MailboxTables = {
      env,
      entries: sub('entries'),
      bodies: sub('bodies'),
      refs: sub('refs'),
      index: sub('index'),
      marks: sub('marks'),
      usage: sub('usage'),
      meta: sub('meta'),
    };
    const format = tables.meta.getBinary(FORMAT_KEY);
    if (format === undefined) {
      tables.meta.putSync(FORMAT_KEY, u32Value(STORE_FORMAT));
    } else if (readU32(format, 0) === 1) {
      migrateFromFormat1(tables);
    } else if (readU32(format, 0) !== STORE_FORMAT) {
      throw new Error(`mailbox store at ${options.path} has format ${readU32(format, 0)}, expected ${STORE_FORMAT}`);
    }
    return { tables, loaded: load(tables) };
  } catch (err) {
    env.close().then(noop, noop);
    throw err;
  }
}

/**
 * Format 1 kept one expiry key per entry in `expiry`; format 2 keeps one mark per recipient and
 * expiry bucket in `marks`. One synchronous transaction at open: all of it happens or none.
 */
function migrateFromFormat1(t: MailboxTables): void {
  const old = t.env.openDB<Buffer, Buffer>({ name: 'expiry', keyEncoding: 'binary', encoding: 'binary' });
  t.env.transactionSync(() => {
    for (const { key, value } of t.entries.getRange({})) {
      t.marks.putSync(markKey(expiryBucket(readU64(value, 16)), key.subarray(0, RECIPIENT_BYTES)), EMPTY);
    }
    old.dropSync();
    t.meta.putSync(FORMAT_KEY, u32Value(STORE_FORMAT));
  });
}

/** Size of the data file in bytes (LMDB's last page used × page size); 0 if LMDB cannot tell. */
export function dataFileBytes(env: RootDatabase<Buffer, Buffer>): number {
  try {
    const s = env.getStats() as { lastPageNumber?: number; pageSize?: number };
    return (s.lastPageNumber ?? 0) * (s.pageSize ?? 0);
  } catch {
    return 0;
  }
}
