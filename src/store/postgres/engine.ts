// The PostgreSQL engine behind the mailbox contract (../mailbox.ts), for mailboxes that several
// relays share and that outlive a host. It decides only at commit: accept() copies the request into
// the open batch and returns decided: false; the batch (every SEND of a turn, up to a size cap) is
// written by one transaction in two round trips (./batch-write.ts), and its one `settled` promise
// resolves after COMMIT. Reads, acks and the admin's deletions are one statement each (functions of
// the schema, ./migrations/). The database down: stores are refused STORE_ERROR and counted, acks
// wait and retry, and a probe brings the store back by itself (./health.ts).
import pg from 'pg';
import {
  DEFAULT_MAILBOX_LIMITS, requestShapeOk, resolveLimits,
  type Accepted, type EnqueueOutcome, type EnqueueRequest, type MailboxEntry, type MailboxLimits, type MailboxStore,
  type QuotaHook, type StoreStatus, type Totals, type Usage,
} from '../mailbox.js';
import { keyIdOf } from '../../crypto/key-id.js';
import { arrayLiteral, writeBatch } from './batch-write.js';
import { Health } from './health.js';
import { migrateWith } from './migrate.js';
import type { BatchItem } from './plan.js';

export interface PostgresEngineOptions {
  /** postgres://USER@HOST:PORT/DB (the password from PGPASSWORD, a passfile or the URL). */
  url: string;
  limits?: Partial<MailboxLimits>;
  quotaFor?: QuotaHook;
  now?: () => number;
  /** Connections: one writes the batches, the others serve reads and acks. */
  poolSize?: number;
  onCommitFailure?: (error: unknown) => void;
  onProbeFailed?: (error: unknown, retryInMs: number) => void;
  onRepaired?: (problems: string[]) => void;
}

/** A batch closes at this many requests or body bytes; the next SENDs open another. */
const BATCH_MAX_REQUESTS = 2_000;
const BATCH_MAX_BYTES = 16 * 1024 * 1024;

interface Batch {
  kind: 'stores';
  items: BatchItem[];
  bytes: number;
  settled: Promise<boolean>;
  resolve: (committed: boolean) => void;
}

/** A deletion in the write order: runs once, then the next step goes. */
interface Deletion {
  kind: 'deletion';
  run: () => Promise<void>;
}

/** An acknowledgement in the write order; those queued next to each other commit together. */
interface AckStep {
  kind: 'ack';
  recipient: Buffer;
  seqs: number[];
  done: (committed: boolean) => void;
}

type Step = Batch | Deletion | AckStep;

const ACK_SQL = 'SELECT pulltab_ack($1, $2::bigint[], $3::bigint[])';

// a shared body is looked up only for the entries that have one
const READ_SQL = `SELECT e.seq, e.sender, e.storage_key, e.wrapped_key,
    CASE WHEN e.body_id = 0 THEN e.body ELSE (SELECT b.body FROM pulltab_bodies b WHERE b.id = e.body_id) END AS body, e.stored_at, e.expires_at
  FROM pulltab_entries e
  WHERE e.recipient = $1 AND e.seq > $2 AND e.expires_at > $3 ORDER BY e.seq LIMIT $4`;

interface EntryRow {
  seq: string;
  sender: Buffer;
  storage_key: Buffer | null;
  wrapped_key: Buffer;
  body: Buffer;
  stored_at: string;
  expires_at: string;
}

export class PostgresEngine implements MailboxStore {
  readonly #pool: pg.Pool;
  /** The one connection the batches of stores are written on, pipelined (./batch-write.ts). */
  readonly #writer: pg.Pool;
  readonly #clock: () => number;
  readonly #quotaFor: QuotaHook | null;
  readonly #health: Health;
  #limits: MailboxLimits;
  /**
   * The writes not yet made, in the order they were asked for: batches of stores (the last one open
   * for more requests) and deletions between them, so that an ack or a removal applies after the
   * stores accepted before it and before those accepted after it, as the contract's order says.
   */
  readonly #queue: Step[] = [];
  #writing: Promise<void> | null = null;
  #scheduled = false;
  #closing = false;
  /** Acknowledged, not yet committed (the database is away): read() no longer shows them. */
  readonly #acked = new Map<string, Set<number>>();
  readonly #acksInFlight = new Set<Promise<void>>();
  #lastTotals: Totals | null = null;

  constructor(pool: pg.Pool, writer: pg.Pool, options: PostgresEngineOptions) {
    this.#pool = pool;
    this.#writer = writer;
    this.#clock = options.now ?? Date.now;
    this.#quotaFor = options.quotaFor ?? null;
    this.#limits = resolveLimits(DEFAULT_MAILBOX_LIMITS, options.limits);
    this.#health = new Health(pool, {
      ...(options.onCommitFailure ? { onCommitFailure: options.onCommitFailure } : {}),
      ...(options.onProbeFailed ? { onProbeFailed: options.onProbeFailed } : {}),
      ...(options.onRepaired ? { onRepaired: options.onRepaired } : {}),
    });
  }

  accept(request: EnqueueRequest): Accepted {
    const n = Array.isArray(request.recipients) ? request.recipients.length : 0;
    if (this.#closing || !this.#health.writable || !requestShapeOk(request)) {
      return { outcomes: storeErrors(n), decided: true, settled: NOTHING_TO_COMMIT };
    }
    const item: BatchItem = { request: copyOf(request), acceptedAt: this.#clock(), outcomes: [] };
    const batch = this.#openBatch();
    batch.items.push(item);
    batch.bytes += request.body.length;
    return { outcomes: item.outcomes, decided: false, settled: batch.settled };
  }

  #openBatch(): Batch {
    const last = this.#queue[this.#queue.length - 1];
    if (last?.kind === 'stores' && last.items.length < BATCH_MAX_REQUESTS && last.bytes < BATCH_MAX_BYTES) return last;
    let resolve!: (committed: boolean) => void;
    const settled = new Promise<boolean>((r) => (resolve = r));
    const batch: Batch = { kind: 'stores', items: [], bytes: 0, settled, resolve };
    this.#enqueue(batch);
    return batch;
  }

  /** A deletion after every write asked for so far; resolves (or rejects) with what `run` does. */
  #inOrder<T>(run: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#enqueue({ kind: 'deletion', run: () => run().then(resolve, reject) });
    });
  }

  #enqueue(step: Step): void {
    this.#queue.push(step);
    if (!this.#scheduled && this.#writing === null) {
      // after this turn's I/O: every SEND read in the turn joins the batch
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.#writeNext();
      });
    }
  }

  /** Makes the queued writes one at a time (one writer: the meta lock would serialize them anyway). */
  #writeNext(): void {
    if (this.#writing !== null) return;
    const step = this.#queue.shift();
    if (step === undefined) return;
    this.#writing = (step.kind === 'stores' ? this.#write(step) : step.kind === 'ack' ? this.#writeAcks(this.#acksFrom(step)) : step.run()).finally(() => {
      this.#writing = null;
      this.#writeNext();
    });
  }

  /** This ack and the acks queued right behind it: one transaction (one commit's wait) for all. */
  #acksFrom(first: AckStep): AckStep[] {
    const group = [first];
    while (this.#queue[0]?.kind === 'ack') group.push(this.#queue.shift() as AckStep);
    return group;
  }

  async #writeAcks(group: AckStep[]): Promise<void> {
    let committed = true;
    try {
      await this.#pool.query({ name: 'pulltab_ack', text: ACK_SQL, values: ackParams(group) });
    } catch (err) {
      this.#health.failed(err);
      committed = false;
    }
    for (const step of group) step.done(committed);
  }

  async #write(batch: Batch): Promise<void> {
    let committed = false;
    if (this.#health.writable) {
      try {
        const outcomes = await writeBatch(this.#writer, batch.items, this.#limits, this.#quotaFor);
        batch.items.forEach((item, i) => item.outcomes.push(...outcomes[i]!));
        committed = true;
      } catch (err) {
        this.#health.failed(err);
      }
    }
    if (!committed) for (const item of batch.items) item.outcomes.push(...storeErrors(item.request.recipients.length));
    batch.resolve(committed);
  }

  async read(recipient: Uint8Array, afterSeq: number, limit: number): Promise<MailboxEntry[]> {
    const hidden = this.#acked.get(keyIdOf(recipient));
    const max = Math.max(0, Math.floor(limit));
    if (max === 0) return [];
    // a named statement: parsed and planned once per connection. (Results stay text, bytea as hex:
    // pg reads every field of a row as a UTF-8 string, so binary results would corrupt bodies.)
    // read as many more as there are hidden entries the range could hold (acked ones are mostly behind the cursor)
    let hiddenAhead = 0;
    if (hidden) for (const seq of hidden) if (seq > afterSeq) hiddenAhead++;
    const { rows } = await this.#pool.query<EntryRow>({ name: 'pulltab_read', text: READ_SQL, values: [buf(recipient), afterSeq, this.#clock(), max + hiddenAhead] });
    const out: MailboxEntry[] = [];
    for (const row of rows) {
      const seq = Number(row.seq);
      if (hidden?.has(seq)) continue;
      if (out.length === max) break;
      out.push({
        seq, sender: row.sender, storageKey: row.storage_key, wrappedKey: row.wrapped_key, body: row.body,
        storedAt: Number(row.stored_at), expiresAt: Number(row.expires_at),
      });
    }
    return out;
  }

  async readEach(recipient: Uint8Array, afterSeq: number, limit: number, visit: (entry: MailboxEntry) => void): Promise<number> {
    const entries = await this.read(recipient, afterSeq, limit);
    for (const entry of entries) visit(entry);
    return entries.length;
  }

  ack(recipient: Uint8Array, seqs: number[]): Promise<void> {
    const wanted = seqs.filter((s) => Number.isSafeInteger(s) && s > 0);
    if (wanted.length === 0) return Promise.resolve();
    if (this.#closing) return Promise.reject(new Error('mailbox store closed before the acknowledgement was committed'));
    const id = keyIdOf(recipient);
    let hidden = this.#acked.get(id);
    if (hidden === undefined) this.#acked.set(id, (hidden = new Set()));
    for (const s of wanted) hidden.add(s);
    const key = Buffer.from(recipient);
    // In the write order once; if the database is away, retried outside it (the stores after it are refused meanwhile).
    const step: AckStep = { kind: 'ack', recipient: key, seqs: wanted, done: () => {} };
    const retry = () => this.#pool.query(ACK_SQL, ackParams([step]));
    const done = new Promise<boolean>((resolve) => this.#enqueue({ ...step, done: resolve }))
      .then((committed) => (committed ? undefined : this.#untilCommitted(retry))).finally(() => {
      for (const s of wanted) hidden.delete(s);
      if (hidden.size === 0 && this.#acked.get(id) === hidden) this.#acked.delete(id);
      this.#acksInFlight.delete(done);
    });
    this.#acksInFlight.add(done);
    return done;
  }

  acksCommitted(recipient: Uint8Array): Promise<unknown> | null {
    const hidden = this.#acked.get(keyIdOf(recipient));
    // Every ack in flight, not only this key's: they commit in order, and there are few.
    return hidden === undefined || hidden.size === 0 ? null : Promise.allSettled([...this.#acksInFlight]);
  }

  /** Runs a write until it commits: while the database is away it waits for the probe and retries; rejects only once the store closes. */
  async #untilCommitted(write: () => Promise<unknown>): Promise<void> {
    for (;;) {
      if (this.#closing) throw new Error('mailbox store closed before the acknowledgement was committed');
      try {
        await write();
        return;
      } catch (err) {
        this.#health.failed(err);
        await this.#health.recovered(() => this.#closing);
      }
    }
  }

  /** Usage and totals count acknowledged entries as gone, as read() does: wait for the acks in flight (not while the database is away). */
  async #acksSettled(): Promise<void> {
    if (this.#acksInFlight.size > 0 && this.#health.writable) await Promise.allSettled([...this.#acksInFlight]);
  }

  async usage(recipient: Uint8Array): Promise<Usage> {
    await this.#acksSettled();
    const { rows } = await this.#pool.query<{ count: number; bytes: string }>('SELECT count, bytes FROM pulltab_usage WHERE recipient = $1', [buf(recipient)]);
    return rows[0] ? { count: rows[0].count, bytes: Number(rows[0].bytes) } : { count: 0, bytes: 0 };
  }

  /**
   * While the database is away this answers the last totals it read (the metrics and the admin
   * `stats` go on answering, a little stale) instead of failing.
   */
  async totals(): Promise<Totals> {
    if (!this.#health.writable && this.#lastTotals !== null) return { ...this.#lastTotals };
    await this.#acksSettled();
    try {
      const { rows } = await this.#pool.query<{ count: string; bytes: string; recipients: string }>('SELECT count, bytes, recipients FROM pulltab_meta WHERE id = 1');
      const row = rows[0]!;
      this.#lastTotals = { count: Number(row.count), bytes: Number(row.bytes), recipients: Number(row.recipients) };
      return { ...this.#lastTotals };
    } catch (err) {
      if (this.#lastTotals === null) throw err;
      return { ...this.#lastTotals };
    }
  }

  async top(n: number): Promise<Array<{ recipient: Uint8Array } & Usage>> {
    await this.#acksSettled();
    const { rows } = await this.#pool.query<{ recipient: Buffer; count: number; bytes: string }>(
      'SELECT recipient, count, bytes FROM pulltab_usage ORDER BY bytes DESC, recipient LIMIT $1', [Math.max(0, Math.floor(n))]);
    return rows.map((r) => ({ recipient: r.recipient, count: r.count, bytes: Number(r.bytes) }));
  }

  removeRecipient(recipient: Uint8Array): Promise<number> {
    return this.#remove('recipient', 0, buf(recipient));
  }

  removeOlderThan(ageMs: number, now: number = this.#clock()): Promise<number> {
    return this.#remove('older', now - ageMs, null);
  }

  sweepExpired(now: number = this.#clock()): Promise<number> {
    return this.#remove('expired', now, null);
  }

  #remove(kind: 'recipient' | 'older' | 'expired', at: number, recipient: Buffer | null): Promise<number> {
    if (this.#closing) return Promise.reject(new Error('mailbox store is closed'));
    return this.#inOrder(async () => {
      const { rows } = await this.#pool.query<{ n: number }>('SELECT pulltab_remove($1, $2, $3) AS n', [kind, Math.floor(at), recipient]);
      return rows[0]!.n;
    });
  }

  setLimits(limits: Partial<MailboxLimits>): void {
    this.#limits = resolveLimits(this.#limits, limits);
  }

  limits(): MailboxLimits {
    return { ...this.#limits };
  }

  async bodyCount(): Promise<number> {
    const { rows } = await this.#pool.query<{ n: string }>(
      'SELECT (SELECT count(*) FROM pulltab_bodies) + (SELECT count(*) FROM pulltab_entries WHERE body_id = 0) AS n');
    return Number(rows[0]!.n);
  }

  status(): StoreStatus {
    return { engine: 'postgres', writable: this.#health.writable, commitFailures: this.#health.commitFailures, fileBytes: null };
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    // what was accepted is written (or refused) before the connections go
    while (this.#writing !== null || this.#queue.length > 0) {
      this.#writeNext();
      await this.#writing;
    }
    this.#health.stop();
    await Promise.allSettled([...this.#acksInFlight]);
    await Promise.all([this.#pool.end(), this.#writer.end()]);
  }
}

/** Connects, migrates the schema and sweeps what expired while no relay ran. */
export async function openPostgresEngine(options: PostgresEngineOptions): Promise<PostgresEngine> {
  // Reads, acks and deletions; their commits do not wait for the WAL flush (see pulltab_ack). The
  // stores have the writer connection, whose commits do.
  const pool = createPool(options.url, options.poolSize ?? 4, { asyncCommit: true });
  const writer = createPool(options.url, 1, { pipeline: true });
  try {
    await migrateWith(pool);
    const engine = new PostgresEngine(pool, writer, options);
    await engine.sweepExpired();
    await engine.totals(); // the figures to show while the database is away later
    return engine;
  } catch (err) {
    await Promise.all([pool.end().catch(() => {}), writer.end().catch(() => {})]);
    throw err;
  }
}

/** A pool whose idle connections may break (the database restarting) without taking the process down. */
export function createPool(url: string, max: number, options: { pipeline?: boolean; asyncCommit?: boolean } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url, max, application_name: 'pulltab', connectionTimeoutMillis: 10_000,
    ...(options.pipeline ? { pipeline: true } : {}),
    ...(options.asyncCommit ? { options: '-c synchronous_commit=off' } : {}),
  });
  pool.on('error', () => { /* an idle connection broke: the pool replaces it at the next checkout */ });
  return pool;
}

/**
 * The acks' seqs as ranges per recipient: each run of consecutive seqs one (recipient, first, last).
 * Exact, since every seq of a run was named; a drain's acks are mostly one run, which the database
 * deletes by one index range instead of a lookup per entry (measured 0.15 ms against 0.63 ms for 60).
 */
function ackParams(group: readonly AckStep[]): unknown[] {
  const recipients: Buffer[] = [];
  const first: number[] = [];
  const last: number[] = [];
  for (const step of group) {
    const seqs = [...new Set(step.seqs)].sort((a, b) => a - b);
    for (let i = 0; i < seqs.length;) {
      let j = i;
      while (j + 1 < seqs.length && seqs[j + 1] === seqs[j]! + 1) j++;
      recipients.push(step.recipient);
      first.push(seqs[i]!);
      last.push(seqs[j]!);
      i = j + 1;
    }
  }
  return [Buffer.concat(recipients), arrayLiteral(first), arrayLiteral(last)];
}

function copyOf(request: EnqueueRequest): EnqueueRequest {
  return {
    sender: Buffer.from(request.sender),
    storageKey: request.storageKey === null ? null : Buffer.from(request.storageKey),
    ttlSeconds: request.ttlSeconds,
    body: Buffer.from(request.body),
    recipients: request.recipients.map((r) => (r !== null && typeof r === 'object' && r.key instanceof Uint8Array && r.wrappedKey instanceof Uint8Array
      ? { key: Buffer.from(r.key), wrappedKey: Buffer.from(r.wrappedKey) }
      : r)),
  };
}

function storeErrors(n: number): EnqueueOutcome[] {
  return Array.from({ length: n }, () => STORE_ERROR);
}

function buf(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}


const STORE_ERROR: EnqueueOutcome = Object.freeze({ ok: false, code: 'STORE_ERROR' });
/** settled for a request refused at once: no commit to wait for. */
const NOTHING_TO_COMMIT: Promise<boolean> = Promise.resolve(true);
