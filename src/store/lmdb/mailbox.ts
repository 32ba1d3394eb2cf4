/**
 * The LMDB mailbox store (lmdb-js 3, embedded). Layout of every sub-database: ./keys.ts.
 *
 * Write path (strfry's, anchors §2(c) 8): one writer. Every mutation is decided synchronously on the
 * JS thread and turned into plain asynchronous `put`/`remove` calls; lmdb-js batches all writes
 * issued in one event turn into ONE transaction that its write thread executes and commits (group
 * commit). A caller's promise resolves when that transaction has committed and been flushed to disk
 * (lmdb-js overlapping sync: the flush runs while the next transaction is written; noSync is never
 * used), so what it confirms survives kill -9 and power loss. Because all writes of one logical
 * operation are issued in the same turn, each operation is atomic on disk: entries, the replacement
 * index, the expiry marks, body refcounts, per-recipient usage and the seq counter always agree
 * after a crash.
 *
 * Decisions need state that includes writes not yet committed (quota of a burst of enqueues, a
 * replacement of an entry enqueued a moment ago, two acks of a shared body in one turn). So:
 *  - per-recipient usage and the totals live in memory, updated synchronously at enqueue/ack time;
 *    they are loaded from the `usage` sub-database at open, and the changed records are written
 *    once per transaction (lmdb-js `beforecommit`), in the same transaction as the entries.
 *  - the seq counter lives in memory and is written the same way (`meta.seq`).
 *  - four small overlays hold the effect of uncommitted writes on what decisions read back:
 *    `pendingNew` (accepted entries not committed yet: ack() can delete them, read() does not show them),
 *    `pendingDeleted` (seqs whose deletion is not committed: read() and ack() skip them),
 *    `indexOverlay` (replacement-index slots written or deleted, not yet committed) and
 *    `bodyOverlay` (shared-body refcounts not yet committed). An operation drops what it put in an
 *    overlay once its transaction has committed (and only if no later operation replaced it), when
 *    LMDB itself answers the same. All operations of one lmdb-js batch share one commit promise, so
 *    one handler per batch settles them all (no per-operation promise chains); enqueueNow() +
 *    durable() hand that one promise to the router, which answers a whole turn's SENDs with it.
 *  - `handedOut` (./handed-out.ts) remembers what ack needs of the entries a read handed out.
 * If a commit ever fails (a full disk, an I/O error), the callers of that batch get STORE_ERROR and
 * the store stops writing: it is unwritable (writable() false) until it has recovered by itself.
 * While unwritable, stores are refused STORE_ERROR at once, the expiry sweep and the admin
 * deletions wait, and acknowledgements are kept in memory (their entries hidden from read()) to be
 * committed later. Recovery: a probe write of PROBE_BYTES, retried with backoff (probeMinMs doubling
 * up to probeMaxMs); once one commits, the repair (./consistency.ts: usage, refcounts and indexes
 * recomputed from the entries) runs and commits the kept acknowledgements in the same transaction,
 * and the store is writable again. Every promise lmdb-js can reject is handled (./commit-errors.ts):
 * a storage error never ends the process.
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import {
  DEFAULT_MAILBOX_LIMITS, KEY_BYTES, recipientShapeOk, requestShapeOk, resolveLimits, ttlMillis,
  type EnqueueOutcome, type EnqueueRequest, type MailboxEntry, type MailboxLimits, type MailboxStore,
  type QuotaHook, type RefusalCode, type Usage,
} from '../mailbox.js';
import {
  bytesId, encodeEntry, entryKey, ENTRY_KEY_BYTES, EXPIRY_BUCKET_MS, expiryBucket, FLAG_SHARED_BODY,
  FLAG_STORAGE_KEY, FORMAT_KEY, HEADER_BYTES, idBytes, PROBE_KEY, indexKey, INDEX_KEY_BYTES, MARK_KEY_BYTES, markKey, MAX_U53, parseHeader,
  readU32, readU64, RECIPIENT_BYTES, SENDER_BYTES, SEQ_KEY, STORE_FORMAT, u32Value, u64Value, usageValue, writeU64, type EntryMeta,
} from './keys.js';
import { absorbCommitError, closeEnv, guardOrphanCommits, reportCommitFailure } from './commit-errors.js';
import { checkConsistency } from './consistency.js';
import { Slab } from './slab.js';
import { HandedOut } from './handed-out.js';
import { PendingBySeq } from './pending.js';
import type { EmbeddedMailbox } from './embedded-api.js';

export interface LmdbMailboxOptions {
  /** Directory of the LMDB environment (created if missing). */
  path: string;
  limits?: Partial<MailboxLimits>;
  /** The store's clock, ms since the epoch. Tests inject one. */
  now?: () => number;
  /** Initial map size in bytes. lmdb-js grows the map by itself when it fills; a large value avoids remaps. */
  mapSize?: number;
  /**
   * LMDB page size for a NEW environment (an existing one keeps its own). Default 8192: measured ~10%
   * less CPU per 1 KiB message than 4096 (fewer splits; 1 KiB entries fit 7 to a page, not 3).
   */
  pageSize?: number;
  /** Period of the background expiry sweep in ms; 0 disables it. Default 60 s. A sweep always runs at open. */
  sweepIntervalMs?: number;
  /** Each recipient's own count and byte limits (its policy's); see ../mailbox.ts. */
  quotaFor?: QuotaHook;
  /** Told when a commit fails (or writes may have been left half done); a repair follows. Must not throw. */
  onCommitFailure?: (error: unknown) => void;
  /** Told when a repair after a failure has committed (the store is writable again), with what it found and fixed. Must not throw. */
  onRepaired?: (problems: string[]) => void;
  /** Told when a recovery attempt (probe write, then repair) did not commit; the next one is in retryInMs. Must not throw. */
  onProbeFailed?: (error: unknown, retryInMs: number) => void;
  /** First wait between recovery attempts while unwritable, in ms (doubling each time). Default 250. */
  probeMinMs?: number;
  /** Longest wait between recovery attempts, in ms. Default 5000. */
  probeMaxMs?: number;
}

export interface LmdbMailboxStats {
  entries: number;
  bytes: number;
  recipients: number;
  lastSeq: number;
  /** Operations whose transaction has not committed yet. */
  pendingOperations: number;
  /** Commits that failed since open (each makes the store unwritable until it has recovered). */
  commitFailures: number;
  /** false from a failed commit until the store has recovered (probe and repair committed). */
  writable: boolean;
  /** Recovery attempts that did not commit since open. */
  probeFailures: number;
  /** Acknowledged entries whose deletion waits for the store to be writable again. */
  acksWaiting: number;
  /** Entries read() had to skip because their shared body was missing (should stay 0). */
  anomalies: number;
  /** Size of the data file in bytes (LMDB last page used × page size). */
  mapBytes: number;
}

export interface LmdbMailboxStore extends EmbeddedMailbox {
  /** Resolves when the sweep run at open has committed. */
  readonly ready: Promise<void>;
  /** Resolves when every write issued so far has committed (or failed). */
  idle(): Promise<void>;
  /** Checks usage, refcounts and indexes against the entries; returns the problems found (none: []). */
  verify(): Promise<string[]>;
  /** Like verify(), then rewrites everything derived from the entries to agree with them. */
  repair(): Promise<string[]>;
  /** false while the store cannot commit (from a failed commit until it has recovered by itself). */
  writable(): boolean;
  stats(): LmdbMailboxStats;
}

type Bin = Database<Buffer, Buffer>;

/** A replacement-index slot: where (recipient, sender, storageKey) points and what that entry costs. seq 0 = deleted. */
interface IndexSlot {
  seq: number;
  expiresAt: number;
  cost: number;
  bodyId: number;
}

/** A shared body's refcount as the uncommitted writes left it; 0 = deleted. */
interface BodySlot {
  refs: number;
}

/** An accepted entry whose transaction has not committed yet (ack can delete it before it is readable). */
interface PendingEntry {
  rid: string;
  expiresAt: number;
  storedAt: number;
  cost: number;
  bodyId: number;
  idxKey: Buffer | null;
}

/** One logical operation in progress: how many writes it issued. */
interface Op {
  writes: number;
}

/** Overlay entries registered by operations, dropped once the transaction that carries them commits. */
interface Regs {
  added: number[];
  deleted: number[];
  index: Array<[string, IndexSlot]>;
  bodies: Array<[number, BodySlot]>;
  /** The acks in it, flat (recipient, rid, seqs, ...), kept for a retry if its commit fails. */
  acks: Array<Uint8Array | string | number[]>;
}

/** Acknowledged entries of one recipient whose deletion has not committed yet. */
interface KeptAcks {
  key: Uint8Array;
  seqs: number[];
}

/** The promise every ack() kept for a retry waits on: settled when the retry commits, or at close. */
interface AckRound {
  promise: Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
}

/** The operations whose writes went into one lmdb-js batch (one transaction, one commit promise). */
interface Batch extends Regs {
  commit: Promise<unknown>;
  /** true once committed, false if the commit failed. */
  done: Promise<boolean>;
  ops: number;
}

/** A recipient accepted by enqueue, until its entry is written. */
interface Accepted {
  rid: string;
  cost: number;
  idxKey: Buffer | null;
  key: Uint8Array;
  wrappedKey: Uint8Array;
  seq: number;
  slot: IndexSlot | null;
  dead: boolean;
}

const EMPTY = Buffer.alloc(0);
const CHUNK = 4096;
const CHUNK_WRITES = 16_384;
const MARK_CACHE_MAX = 100_000;
const HANDED_OUT_MAX = 262_144;
/** Acknowledgements kept for a retry while the store is unwritable, at most (a Set of seqs: ~40 bytes each). */
const ACKS_KEPT_MAX = 1_000_000;
/**
 * Size of the probe write: a store that can commit this much again is called writable. Big enough
 * that the pages an acknowledgement freed do not make a still full disk look writable for one
 * small transaction, small enough to fit once an operator has freed a little space.
 */
const PROBE_BYTES = 512 * 1024;

const noop = (): void => {};

function newOp(): Op {
  return { writes: 0 };
}

function newRegs(): Regs {
  return { added: [], deleted: [], index: [], bodies: [], acks: [] };
}

/** durable()'s answer for a write whose commit failed. */
function failedToFalse(error: unknown): false {
  absorbCommitError(error);
  return false;
}

const ACKS_NOT_KEPT = 'mailbox store: the acknowledgement could not be committed, and too many already wait for the disk to be kept (its messages will be delivered again)';
const UNWRITABLE = 'mailbox store: cannot write since a commit failed (the disk may be full); try again once it has recovered';

function commitFailed(ok: boolean): void {
  if (!ok) throw new Error('mailbox store: the commit failed (the store repairs itself; retry)');
}

function refuseAll(request: EnqueueRequest, code: RefusalCode): EnqueueOutcome[] {
  const n = Array.isArray(request?.recipients) ? request.recipients.length : 0;
  const out: EnqueueOutcome[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = { ok: false, code };
  return out;
}

/**
 * Resolves true once the transaction that carries `commit` has been flushed to disk. lmdb-js
 * (overlappingSync, the default on Linux) resolves a write's promise at its commit and flushes while
 * the next transaction is written; with `separateFlushed` the promise carries that flush as
 * `.flushed`. A promise without it (nothing written yet) has nothing to flush.
 */
function flushedAfter(commit: Promise<unknown>): Promise<boolean> | boolean {
  const flushed = (commit as { flushed?: PromiseLike<unknown> }).flushed;
  return flushed === undefined ? true : Promise.resolve(flushed).then(() => true);
}

function failedCommit(outcome: EnqueueOutcome): EnqueueOutcome {
  return outcome.ok ? { ok: false, code: 'STORE_ERROR' } : outcome;
}

function isKey(recipient: unknown): recipient is Uint8Array {
  return recipient instanceof Uint8Array && recipient.length === KEY_BYTES;
}

class LmdbMailbox implements LmdbMailboxStore {
  readonly ready: Promise<void>;

  private readonly env: RootDatabase<Buffer, Buffer>;
  private readonly entries: Bin;
  private readonly bodies: Bin;
  private readonly refs: Bin;
  private readonly index: Bin;
  private readonly marks: Bin;
  private readonly usageDb: Bin;
  private readonly meta: Bin;
  private readonly clock: () => number;
  private currentLimits: MailboxLimits;
  private readonly quotaFor: QuotaHook | null;
  private readonly hooks: Pick<LmdbMailboxOptions, 'onCommitFailure' | 'onRepaired' | 'onProbeFailed'>;
  private readonly probeMinMs: number;
  private readonly probeMaxMs: number;

  private readonly usageMap = new Map<string, Usage>();
  private totalCount = 0;
  private totalBytes = 0;
  private seqCounter = 0;
  private readonly dirtyUsage = new Set<string>();
  private seqDirty = false;

  private readonly pendingNew = new PendingBySeq<PendingEntry>();
  private readonly pendingDeleted = new Set<number>();
  /** What ack needs of the entries reads handed out, so that it need not read them again. */
  private readonly handedOut = new HandedOut<PendingEntry>(HANDED_OUT_MAX);
  private readonly indexOverlay = new Map<string, IndexSlot>();
  private readonly bodyOverlay = new Map<number, BodySlot>();

  private lastWrite: Promise<unknown> = Promise.resolve();
  /** durable()'s answer while no batch is open: the outcome of lastWrite `of`. */
  private quietDurable: { of: Promise<unknown>; done: Promise<boolean> } | null = null;
  private open: Regs = newRegs();
  private batch: Batch | null = null;
  private inflight = 0;
  private gate: Promise<void> | null = null;
  /** false from a failed commit until a recovery attempt has committed. */
  private canWrite = true;
  /** A recovery attempt is running: the failures of its commits are probe failures. */
  private recovering = false;
  private recoveryTimer: NodeJS.Timeout | null = null;
  /** The wait before the next recovery attempt (0: the first comes at once). */
  private probeDelay = 0;
  private probeFailures = 0;
  /** The last transaction that settled failed (lmdb-js's close() then never finishes: closeEnv()). */
  private lastCommitFailed = false;
  /** What made the last failed commit of a recovery attempt fail (reported with the attempt). */
  private probeError: unknown = null;
  /** Acknowledgements whose deletion did not commit, by recipient, and their seqs (hidden from read()). */
  private readonly acksKept = new Map<string, KeptAcks>();
  private readonly ackedSeqs = new Set<number>();
  private ackRound: AckRound | null = null;
  /** ack()'s continuation: nothing once committed, else wait for the retry (the batch kept the acks). */
  private readonly ackSettled = (ok: boolean): Promise<void> | undefined => (ok ? undefined : this.keptAcksCommitted());
  private closed = false;
  private closing: Promise<void> | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private commitFailures = 0;
  private anomalies = 0;

  // Scratch key buffers: lmdb-js copies keys into its instruction buffer, so they can be reused.
  private readonly kEntry = Buffer.allocUnsafe(ENTRY_KEY_BYTES);
  private readonly kMark = Buffer.allocUnsafe(MARK_KEY_BYTES);
  /**
   * The expiry bucket each recipient was last marked for, so a burst of messages to one recipient
   * writes its mark once. Only a cache: a miss costs one idempotent put.
   */
  private readonly markCache = new Map<string, number>();
  private readonly kIndex = Buffer.allocUnsafe(INDEX_KEY_BYTES);
  private readonly kBody = Buffer.allocUnsafe(8);
  private readonly values = new Slab(() => this.lastWrite);
  private readonly takeValue = (n: number): Buffer => this.values.take(n);

  constructor(options: LmdbMailboxOptions) {
    this.clock = options.now ?? Date.now;
    this.currentLimits = resolveLimits(DEFAULT_MAILBOX_LIMITS, options.limits);
    this.quotaFor = options.quotaFor ?? null;
    this.hooks = { onCommitFailure: options.onCommitFailure, onRepaired: options.onRepaired, onProbeFailed: options.onProbeFailed };
    this.probeMinMs = Math.max(1, options.probeMinMs ?? 250);
    this.probeMaxMs = Math.max(this.probeMinMs, options.probeMaxMs ?? 5000);
    this.env = open<Buffer, Buffer>({
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
      const sub = (name: string): Bin => this.env.openDB<Buffer, Buffer>({ name, keyEncoding: 'binary', encoding: 'binary' });
      this.entries = sub('entries');
      this.bodies = sub('bodies');
      this.refs = sub('refs');
      this.index = sub('index');
      this.marks = sub('marks');
      this.usageDb = sub('usage');
      this.meta = sub('meta');

      const format = this.meta.getBinary(FORMAT_KEY);
      if (format === undefined) {
        this.meta.putSync(FORMAT_KEY, u32Value(STORE_FORMAT));
      } else if (readU32(format, 0) === 1) {
        this.migrateFromFormat1();
      } else if (readU32(format, 0) !== STORE_FORMAT) {
        throw new Error(`mailbox store at ${options.path} has format ${readU32(format, 0)}, expected ${STORE_FORMAT}`);
      }
      const seq = this.meta.getBinary(SEQ_KEY);
      this.seqCounter = seq === undefined ? 0 : readU64(seq, 0);
      for (const { key, value } of this.usageDb.getRange({})) {
        const count = readU64(value, 0);
        const bytes = readU64(value, 8);
        this.usageMap.set(bytesId(key), { count, bytes });
        this.totalCount += count;
        this.totalBytes += bytes;
      }
    } catch (err) {
      this.env.close().then(noop, noop);
      throw err;
    }
    // Usage records and the seq counter are written once per transaction, inside it.
    this.env.on('beforecommit', () => this.flushDirty());
    guardOrphanCommits(this.env);

    this.ready = this.sweepExpired().then(noop, noop);
    const every = options.sweepIntervalMs ?? 60_000;
    if (every > 0) {
      this.sweepTimer = setInterval(() => {
        if (!this.closed && !this.closing) this.sweepExpired().catch(noop);
      }, every);
      this.sweepTimer.unref();
    }
  }

  /**
   * Format 1 kept one expiry key per entry in `expiry`; format 2 keeps one mark per recipient and
   * expiry bucket in `marks`. One synchronous transaction at open: all of it happens or none.
   */
  private migrateFromFormat1(): void {
    const old = this.env.openDB<Buffer, Buffer>({ name: 'expiry', keyEncoding: 'binary', encoding: 'binary' });
    this.env.transactionSync(() => {
      for (const { key, value } of this.entries.getRange({})) {
        this.marks.putSync(markKey(expiryBucket(readU64(value, 16)), key.subarray(0, RECIPIENT_BYTES)), EMPTY);
      }
      old.dropSync();
      this.meta.putSync(FORMAT_KEY, u32Value(STORE_FORMAT));
    });
  }

  // ---------------------------------------------------------------- write plumbing

  // All writes of one lmdb-js batch return one promise; a new one (once per transaction, rarely
  // twice) gets a handler at once, so that a failed commit never leaves a rejection unhandled.
  private put(db: Bin, key: Buffer, value: Buffer, op: Op): void {
    const write = db.put(key, value);
    if (write !== this.lastWrite) write.then(noop, absorbCommitError);
    this.lastWrite = write;
    op.writes++;
  }

  private remove(db: Bin, key: Buffer, op: Op): void {
    const write = db.remove(key);
    if (write !== this.lastWrite) write.then(noop, absorbCommitError);
    this.lastWrite = write;
    op.writes++;
  }

  private flushDirty(): void {
    if (this.closed) return;
    let last: Promise<unknown> | null = null;
    for (const rid of this.dirtyUsage) {
      const u = this.usageMap.get(rid);
      last = u === undefined ? this.usageDb.remove(idBytes(rid)) : this.usageDb.put(idBytes(rid), usageValue(u.count, u.bytes));
    }
    this.dirtyUsage.clear();
    if (this.seqDirty) {
      last = this.meta.put(SEQ_KEY, u64Value(this.seqCounter));
      this.seqDirty = false;
    }
    // Same transaction (and promise) as the operations that dirtied them; failures reach those callers.
    if (last) last.then(noop, absorbCommitError);
  }

  /**
   * Attaches the overlay entries registered since the last call to the batch (transaction) that
   * carries the operation's writes, and returns that batch's outcome: true once committed, false if
   * the commit failed. All writes issued in one event turn share one commit promise, so one handler
   * per batch settles every operation in it.
   */
  private bind(): Promise<boolean> {
    const commit = this.lastWrite;
    let b = this.batch;
    if (b === null || b.commit !== commit) {
      const nb: Batch = { ...newRegs(), commit, done: Promise.resolve(true), ops: 0 };
      // The overlays go at the commit (LMDB answers reads the same from then on); callers wait for the flush.
      const visible = commit.then(
        () => {
          this.lastCommitFailed = false;
          this.settle(nb, true);
          return true;
        },
        (err: unknown) => {
          this.lastCommitFailed = true;
          this.settle(nb, false);
          this.noteFailure(err);
          return false;
        },
      );
      nb.done = visible.then((ok) => ok && flushedAfter(commit));
      this.batch = b = nb;
    }
    b.ops++;
    this.inflight++;
    const o = this.open;
    moveAll(o.added, b.added);
    moveAll(o.deleted, b.deleted);
    moveAll(o.index, b.index);
    moveAll(o.bodies, b.bodies);
    moveAll(o.acks, b.acks);
    return b.done;
  }

  private settle(b: Batch, committed: boolean): void {
    this.inflight -= b.ops;
    if (this.batch === b) this.batch = null;
    for (const seq of b.added) this.pendingNew.delete(seq);
    for (const seq of b.deleted) this.pendingDeleted.delete(seq);
    for (const [id, slot] of b.index) if (this.indexOverlay.get(id) === slot) this.indexOverlay.delete(id);
    for (const [id, slot] of b.bodies) if (this.bodyOverlay.get(id) === slot) this.bodyOverlay.delete(id);
    if (!committed) {
      // Acknowledged is acknowledged: the deletions are kept and committed once the store can write.
      const acks = b.acks;
      for (let i = 0; i + 2 < acks.length; i += 3) this.keepAcks(acks[i] as Uint8Array, acks[i + 1] as string, acks[i + 2] as number[]);
    }
  }

  /** A commit failed: the store stops writing and recovers by itself (recover()). */
  private noteFailure(error: unknown): void {
    absorbCommitError(error);
    if (this.recovering) {
      this.probeFailures++;
      this.probeError = error;
      return;
    }
    this.commitFailures++;
    this.canWrite = false;
    const hook = this.hooks.onCommitFailure;
    if (hook) reportCommitFailure(error, hook);
    this.scheduleRecovery();
  }

  private scheduleRecovery(): void {
    if (this.recoveryTimer !== null || this.recovering || this.closed || this.closing) return;
    this.recoveryTimer = setTimeout(() => {
      this.recoveryTimer = null;
      void this.recover();
    }, this.probeDelay);
    // Not unref()'d: a recovery is work in progress (close() stops it).
  }

  /**
   * One recovery attempt: a probe write of PROBE_BYTES (cheap, and it fails at once while the disk
   * is still full), then the repair, which also removes the probe and commits the kept
   * acknowledgements. Either failing schedules the next attempt, later each time.
   */
  private async recover(): Promise<void> {
    if (this.closed || this.closing) return;
    this.recovering = true;
    this.probeError = null;
    let problems: string[] | null = null;
    let failure: unknown = null;
    try {
      const op = newOp();
      this.put(this.meta, PROBE_KEY, Buffer.alloc(PROBE_BYTES), op);
      commitFailed(await this.bind());
      problems = await this.repair();
    } catch (err) {
      failure = err;
    } finally {
      this.recovering = false;
    }
    if (problems !== null) {
      this.probeDelay = 0;
      this.hooks.onRepaired?.(problems);
      return;
    }
    if (this.closed || this.closing) return;
    this.canWrite = false;
    this.probeDelay = Math.min(this.probeMaxMs, Math.max(this.probeMinMs, this.probeDelay * 2));
    const hook = this.hooks.onProbeFailed;
    const retryInMs = this.probeDelay;
    if (hook) reportCommitFailure(this.probeError ?? failure, (reason) => hook(reason, retryInMs));
    this.scheduleRecovery();
  }

  /** Keeps acknowledged seqs of a recipient for the next repair to delete; read() no longer shows them. */
  private keepAcks(recipient: Uint8Array, rid: string, seqs: readonly number[]): boolean {
    let kept = this.acksKept.get(rid);
    for (const seq of seqs) {
      if (!Number.isSafeInteger(seq) || seq <= 0 || this.ackedSeqs.has(seq)) continue;
      if (this.ackedSeqs.size >= ACKS_KEPT_MAX) return false;
      if (kept === undefined) this.acksKept.set(rid, (kept = { key: Buffer.from(recipient), seqs: [] }));
      kept.seqs.push(seq);
      this.ackedSeqs.add(seq);
    }
    return true;
  }

  /** Resolves once the kept acknowledgements have committed; rejects if the store closes first. */
  private keptAcksCommitted(): Promise<void> {
    if (this.ackedSeqs.size === 0) return Promise.resolve();
    if (this.ackRound === null) {
      let resolve = noop;
      let reject: (error: Error) => void = noop;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.ackRound = { promise, resolve, reject };
    }
    return this.ackRound.promise;
  }

  /** Issues the deletions of every kept acknowledgement into op (the repair's transaction). */
  private retryKeptAcks(op: Op): void {
    for (const [rid, kept] of this.acksKept) {
      for (const seq of kept.seqs) this.deleteStored(kept.key, rid, seq, op);
    }
  }

  /** The kept acknowledgements have committed: forget them and answer their ack() calls. */
  private keptAcksDone(): void {
    this.acksKept.clear();
    this.ackedSeqs.clear();
    const round = this.ackRound;
    this.ackRound = null;
    round?.resolve();
  }

  /** Resolves when every write issued so far has committed (commits are in order). */
  private settled(): Promise<void> {
    return this.lastWrite.then(noop, absorbCommitError);
  }

  /** Resolves when no operation is in flight; only for quiescent moments (close, verify, repair, tests). */
  async idle(): Promise<void> {
    while (this.inflight > 0) await this.settled();
  }

  // ---------------------------------------------------------------- accounting

  private addUsage(rid: string, count: number, bytes: number): void {
    const u = this.usageMap.get(rid);
    const c = (u?.count ?? 0) + count;
    const b = (u?.bytes ?? 0) + bytes;
    if (c <= 0) this.usageMap.delete(rid);
    else if (u) {
      u.count = c;
      u.bytes = b;
    } else this.usageMap.set(rid, { count: c, bytes: b });
    this.totalCount += count;
    this.totalBytes += bytes;
    this.dirtyUsage.add(rid);
  }

  // ---------------------------------------------------------------- lookups (overlay first, then LMDB)

  private entryMeta(recipient: Uint8Array, seq: number): EntryMeta | undefined {
    if (this.pendingDeleted.has(seq)) return undefined;
    const value = this.entries.getBinaryFast(entryKey(recipient, seq, this.kEntry));
    return value === undefined ? undefined : parseHeader(value);
  }

  /** The live slot of (recipient, sender, storageKey) whose key is in `key`, or undefined. */
  private lookupIndex(id: string, key: Buffer, recipient: Uint8Array): IndexSlot | undefined {
    const slot = this.indexOverlay.get(id);
    if (slot !== undefined) return slot.seq === 0 ? undefined : slot;
    const value = this.index.getBinaryFast(key);
    if (value === undefined) return undefined;
    const seq = readU64(value, 0);
    const meta = this.entryMeta(recipient, seq);
    if (meta === undefined) return undefined; // dangling: verify() reports it, repair() drops it
    return { seq, expiresAt: meta.expiresAt, cost: meta.bodyLength + meta.wrappedKeyLength, bodyId: meta.bodyId };
  }

  private releaseBody(bodyId: number, op: Op): void {
    const overlay = this.bodyOverlay.get(bodyId);
    let refs: number;
    if (overlay !== undefined) refs = overlay.refs;
    else {
      const value = this.refs.getBinaryFast(u64Into(this.kBody, bodyId));
      refs = value === undefined ? 0 : readU32(value, 0);
    }
    const key = u64Into(this.kBody, bodyId);
    let slot: BodySlot;
    if (refs <= 1) {
      this.remove(this.bodies, key, op);
      this.remove(this.refs, key, op);
      slot = { refs: 0 };
    } else {
      this.put(this.refs, key, u32Value(refs - 1), op);
      slot = { refs: refs - 1 };
    }
    this.bodyOverlay.set(bodyId, slot);
    this.open.bodies.push([bodyId, slot]);
  }

  /** Makes sure the sweep will visit `recipient` once `expiresAt` has passed. */
  private mark(recipient: Uint8Array, rid: string, expiresAt: number, op: Op): void {
    const bucket = expiryBucket(expiresAt);
    if (this.markCache.get(rid) === bucket) return;
    if (this.markCache.size >= MARK_CACHE_MAX) this.markCache.clear();
    this.markCache.set(rid, bucket);
    this.put(this.marks, markKey(bucket, recipient, this.kMark), EMPTY, op);
  }

  /**
   * Deletes a stored entry: the entry, its share of a body, its usage (its expiry mark stays until
   * the sweep passes the mark's bucket). When
   * `indexKeyBuf` is given (the entry had a storage key and is not being replaced) the index slot is
   * deleted too if it still points at this entry.
   */
  private deleteEntry(recipient: Uint8Array, rid: string, seq: number, cost: number,
    bodyId: number, indexKeyBuf: Buffer | null, op: Op): void {
    this.remove(this.entries, entryKey(recipient, seq, this.kEntry), op);
    this.pendingNew.delete(seq);
    if (this.handedOut.size > 0) this.handedOut.take(rid, seq);
    this.pendingDeleted.add(seq);
    this.open.deleted.push(seq);
    if (bodyId !== 0) this.releaseBody(bodyId, op);
    if (indexKeyBuf !== null) {
      const id = bytesId(indexKeyBuf);
      const current = this.indexOverlay.get(id);
      let points: boolean;
      if (current !== undefined) points = current.seq === seq;
      else {
        const value = this.index.getBinaryFast(indexKeyBuf);
        points = value !== undefined && readU64(value, 0) === seq;
      }
      if (points) {
        this.remove(this.index, indexKeyBuf, op);
        const tomb: IndexSlot = { seq: 0, expiresAt: 0, cost: 0, bodyId: 0 };
        this.indexOverlay.set(id, tomb);
        this.open.index.push([id, tomb]);
      }
    }
    this.addUsage(rid, -1, -cost);
  }

  /** Deletes the committed entry (recipient, seq) if it exists and is not already being deleted. */
  private deleteStored(recipient: Uint8Array, rid: string, seq: number, op: Op,
    keep?: (meta: EntryMeta) => boolean): boolean {
    if (this.pendingDeleted.has(seq)) return false;
    // Known without reading it: not committed yet, or handed out by a read (the drain, then its ack).
    // (deleteEntry forgets the handed-out record; one kept here stays for the next ack.)
    const known = this.pendingNew.get(seq) ?? this.handedOut.get(rid, seq);
    if (known !== undefined) {
      if (known.rid !== rid) return false;
      if (keep && keep({ flags: 0, wrappedKeyLength: 0, bodyLength: known.cost, storedAt: known.storedAt, expiresAt: known.expiresAt, bodyId: known.bodyId })) return false;
      this.deleteEntry(recipient, rid, seq, known.cost, known.bodyId, known.idxKey, op);
      return true;
    }
    const value = this.entries.getBinaryFast(entryKey(recipient, seq, this.kEntry));
    if (value === undefined) return false;
    const meta = parseHeader(value);
    if (keep && keep(meta)) return false;
    let idx: Buffer | null = null;
    if (meta.flags & FLAG_STORAGE_KEY) {
      // Copy sender and storage key out of the volatile buffer before any other read.
      idx = this.kIndex;
      idx.set(recipient, 0);
      idx.set(value.subarray(24, 24 + SENDER_BYTES + 16), RECIPIENT_BYTES);
    }
    this.deleteEntry(recipient, rid, seq, meta.bodyLength + meta.wrappedKeyLength, meta.bodyId, idx, op);
    return true;
  }

  // ---------------------------------------------------------------- MailboxStore

  enqueue(request: EnqueueRequest): Promise<EnqueueOutcome[]> {
    if (this.gate) return this.gate.then(() => this.enqueue(request));
    const { outcomes, done } = this.acceptAndBind(request);
    return done === null ? Promise.resolve(outcomes) : done.then((ok) => (ok ? outcomes : outcomes.map(failedCommit)));
  }

  enqueueNow(request: EnqueueRequest): EnqueueOutcome[] {
    if (this.gate || !this.canWrite) return refuseAll(request, 'STORE_ERROR');
    return this.acceptAndBind(request).outcomes;
  }

  durable(): Promise<boolean> {
    const b = this.batch;
    if (b !== null && b.commit === this.lastWrite) return b.done;
    // No batch open this turn (nothing written, or its batch settled): one promise per last write.
    if (this.quietDurable === null || this.quietDurable.of !== this.lastWrite) {
      const last = this.lastWrite;
      this.quietDurable = { of: last, done: last.then(() => flushedAfter(last), failedToFalse) };
    }
    return this.quietDurable.done;
  }

  /** Decides and writes a request; `done` is its batch's outcome, null when it wrote nothing. */
  private acceptAndBind(request: EnqueueRequest): { outcomes: EnqueueOutcome[]; done: Promise<boolean> | null } {
    // Closing, or unwritable since a failed commit: nothing is written, and nothing promised.
    if (this.closed || this.closing || !this.canWrite) return { outcomes: refuseAll(request, 'STORE_ERROR'), done: null };
    const op = newOp();
    try {
      const outcomes = this.accept(request, op);
      return { outcomes, done: op.writes === 0 ? null : this.bind() };
    } catch (err) {
      // Never throw out of enqueue. Writes issued before the throw may still commit: repair.
      if (op.writes > 0) {
        void this.settled();
        this.noteFailure(err);
      }
      return { outcomes: refuseAll(request, 'STORE_ERROR'), done: null };
    }
  }

  /** The outcomes of a request, its writes issued (not yet bound to their batch). */
  private accept(request: EnqueueRequest, op: Op): EnqueueOutcome[] {
    if (!requestShapeOk(request)) return refuseAll(request, 'STORE_ERROR');
    const ttlMs = ttlMillis(request.ttlSeconds);
    if (ttlMs === null) return refuseAll(request, 'STORE_ERROR');
    const limits = this.currentLimits;
    if (request.ttlSeconds > limits.maxTtlSeconds) return refuseAll(request, 'TTL_TOO_LONG');

    const { sender, storageKey, body, recipients } = request;
    const storedAt = this.clock();
    const expiresAt = storedAt + ttlMs;
    const outcomes: EnqueueOutcome[] = new Array(recipients.length);
    const accepted: Accepted[] = [];
    const firstSeqOfRequest = this.seqCounter + 1;

    for (let i = 0; i < recipients.length; i++) {
      const r = recipients[i]!;
      if (!recipientShapeOk(r)) {
        outcomes[i] = { ok: false, code: 'STORE_ERROR' };
        continue;
      }
      const rid = bytesId(r.key);
      const cost = body.length + r.wrappedKey.length;
      let replaced: IndexSlot | undefined;
      let idxKey: Buffer | null = null;
      let idxId = '';
      if (storageKey !== null) {
        idxKey = indexKey(r.key, sender, storageKey);
        idxId = bytesId(idxKey);
        replaced = this.lookupIndex(idxId, idxKey, r.key);
        if (replaced && request.keepNewerThan !== undefined && replaced.seq > request.keepNewerThan) {
          outcomes[i] = { ok: false, code: 'SUPERSEDED' };
          continue;
        }
      }
      const u = this.usageMap.get(rid);
      const freedCount = replaced ? 1 : 0;
      const freedBytes = replaced ? replaced.cost : 0;
      const quota = this.quotaFor === null ? undefined : this.quotaFor(r.key);
      if ((u?.count ?? 0) + 1 - freedCount > (quota?.maxCount ?? limits.maxCountPerRecipient)) {
        outcomes[i] = { ok: false, code: 'QUOTA_COUNT' };
        continue;
      }
      if ((u?.bytes ?? 0) + cost - freedBytes > (quota?.maxBytes ?? limits.maxBytesPerRecipient)) {
        outcomes[i] = { ok: false, code: 'QUOTA_BYTES' };
        continue;
      }
      if (this.totalBytes + cost - freedBytes > limits.maxTotalBytes) {
        outcomes[i] = { ok: false, code: 'STORE_FULL' };
        continue;
      }
      if (replaced) {
        // The replacement takes a NEW seq and the old entry is deleted. Keeping the old seq would let
        // an ack of the old, already delivered version delete the undelivered replacement
        // (the original relay's weakness 15).
        if (replaced.seq >= firstSeqOfRequest) {
          // Listed twice in this request: the earlier entry was never written.
          const earlier = accepted.find((a) => a.seq === replaced!.seq)!;
          earlier.dead = true;
          this.addUsage(rid, -1, -earlier.cost);
        } else {
          this.deleteEntry(r.key, rid, replaced.seq, replaced.cost, replaced.bodyId, null, op);
        }
      }
      const seq = ++this.seqCounter;
      this.seqDirty = true;
      this.addUsage(rid, 1, cost);
      let slot: IndexSlot | null = null;
      if (idxKey !== null) {
        slot = { seq, expiresAt, cost, bodyId: 0 };
        this.indexOverlay.set(idxId, slot);
        this.open.index.push([idxId, slot]);
      }
      accepted.push({ key: r.key, rid, wrappedKey: r.wrappedKey, seq, cost, slot, idxKey, dead: false });
      outcomes[i] = { ok: true, seq };
    }

    let live = 0;
    let first: Accepted | null = null;
    for (const a of accepted) {
      if (!a.dead) {
        live++;
        first ??= a;
      }
    }
    if (live > 0) {
      // One body stored once: inline in the entry when one entry holds it, else in `bodies` with a refcount.
      let bodyId = 0;
      if (live > 1) {
        bodyId = first!.seq;
        const bkey = u64Into(this.kBody, bodyId);
        this.put(this.bodies, bkey, Buffer.from(body), op);
        this.put(this.refs, bkey, u32Value(live), op);
        const bslot: BodySlot = { refs: live };
        this.bodyOverlay.set(bodyId, bslot);
        this.open.bodies.push([bodyId, bslot]);
      }
      for (const a of accepted) {
        if (a.dead) continue;
        this.put(this.entries, entryKey(a.key, a.seq, this.kEntry),
          encodeEntry(sender, storageKey, a.wrappedKey, body, storedAt, expiresAt, bodyId, this.takeValue), op);
        this.mark(a.key, a.rid, expiresAt, op);
        if (a.idxKey !== null) {
          this.put(this.index, a.idxKey, u64Value(a.seq), op);
          a.slot!.bodyId = bodyId;
        }
        // A lean record: the request's buffers (views of a socket read) are not kept until the commit.
        this.pendingNew.set(a.seq, { rid: a.rid, expiresAt, storedAt, cost: a.cost, bodyId, idxKey: a.idxKey });
        this.open.added.push(a.seq);
      }
    }
    return outcomes;
  }

  read(recipient: Uint8Array, afterSeq: number, limit: number): MailboxEntry[] {
    const out: MailboxEntry[] = [];
    this.scan(recipient, afterSeq, limit, true, (entry) => out.push(entry));
    return out;
  }

  readEach(recipient: Uint8Array, afterSeq: number, limit: number, visit: (entry: MailboxEntry) => void): number {
    return this.scan(recipient, afterSeq, limit, false, visit);
  }

  /**
   * Visits the live entries of `recipient` after `afterSeq`, at most `limit`. Values come from
   * lmdb-js's getBinaryFast, which lends them in a buffer the next read overwrites: with `copy`
   * each entry gets its own bytes (read()), else the views are only good during `visit` (readEach(),
   * the drain, where copying every value showed in profiles).
   */
  private scan(recipient: Uint8Array, afterSeq: number, limit: number, copy: boolean,
    visit: (entry: MailboxEntry) => void): number {
    if (this.closed) throw new Error('mailbox store is closed');
    if (!isKey(recipient) || !(limit >= 1)) return 0;
    const from = Math.max(0, Math.floor(afterSeq)) + 1;
    if (!(from < MAX_U53)) return 0;
    const now = this.clock();
    const checkDeleted = this.pendingDeleted.size > 0 || this.ackedSeqs.size > 0;
    const rid = bytesId(recipient);
    let visited = 0;
    for (const key of this.entries.getKeys({ start: entryKey(recipient, from), end: entryKey(recipient, MAX_U53) })) {
      const seq = readU64(key, RECIPIENT_BYTES);
      // Deleted but not committed yet, or acknowledged and kept for a retry: gone for the recipient.
      if (checkDeleted && (this.pendingDeleted.has(seq) || this.ackedSeqs.has(seq))) continue;
      let value = this.entries.getBinaryFast(key);
      if (value === undefined) continue;
      const expiresAt = readU64(value, 16);
      if (expiresAt <= now) continue;
      const flags = value[1]!;
      const wkEnd = HEADER_BYTES + value[2]!;
      const shared = (flags & FLAG_SHARED_BODY) !== 0;
      // Reading a shared body reuses the buffer the entry was lent in: the entry needs its own copy then.
      if (copy || shared) value = ownCopy(value, shared ? wkEnd : wkEnd + readU32(value, 4));
      let body: Uint8Array;
      if (shared) {
        const bodyKey = u64Into(this.kBody, readU64(value, 72));
        const stored = copy ? this.bodies.getBinary(bodyKey) : this.bodies.getBinaryFast(bodyKey);
        if (stored === undefined) {
          this.anomalies++;
          continue;
        }
        // A lent buffer's `length` is the value's size but its real extent is lmdb-js's whole read
        // buffer: hand out a proper view of exactly the value.
        body = copy ? stored : stored.subarray(0, stored.length);
      } else {
        body = value.subarray(wkEnd, wkEnd + readU32(value, 4));
      }
      this.noteHandedOut(recipient, rid, seq, value, expiresAt);
      visit({
        seq,
        sender: value.subarray(24, 56),
        storageKey: flags & FLAG_STORAGE_KEY ? value.subarray(56, 72) : null,
        wrappedKey: value.subarray(HEADER_BYTES, wkEnd),
        body,
        storedAt: readU64(value, 8),
        expiresAt,
      });
      if (++visited >= limit) break;
    }
    return visited;
  }

  /** Remembers what ack will need of an entry a read hands out (value: its header and fields, still valid). */
  private noteHandedOut(recipient: Uint8Array, rid: string, seq: number, value: Uint8Array, expiresAt: number): void {
    let idxKey: Buffer | null = null;
    if (value[1]! & FLAG_STORAGE_KEY) {
      idxKey = Buffer.allocUnsafe(INDEX_KEY_BYTES);
      idxKey.set(recipient, 0);
      idxKey.set(value.subarray(24, 24 + SENDER_BYTES + 16), RECIPIENT_BYTES);
    }
    this.handedOut.add(rid, seq, {
      rid, expiresAt, storedAt: readU64(value, 8), cost: readU32(value, 4) + value[2]!, bodyId: readU64(value, 72), idxKey,
    });
  }

  ack(recipient: Uint8Array, seqs: number[]): Promise<void> {
    if (this.gate) return this.gate.then(() => this.ack(recipient, seqs));
    if (this.closed || this.closing) return Promise.reject(new Error('mailbox store is closed'));
    if (!isKey(recipient)) return Promise.resolve();
    const rid = bytesId(recipient);
    if (!this.canWrite) {
      // Nothing can commit now: kept (hidden from read()) and deleted by the repair once it can.
      if (!this.keepAcks(recipient, rid, seqs)) return Promise.reject(new Error(ACKS_NOT_KEPT));
      return this.keptAcksCommitted();
    }
    const op = newOp();
    try {
      for (const seq of seqs) {
        if (!Number.isSafeInteger(seq) || seq <= 0) continue;
        this.deleteStored(recipient, rid, seq, op);
      }
    } catch (err) {
      if (op.writes > 0) {
        void this.settled();
        this.noteFailure(err);
      }
      return Promise.reject(err);
    }
    // Nothing to delete (unknown, or already being deleted): still resolve after earlier deletions commit.
    if (op.writes === 0) return this.settled();
    // If this commit fails, settle() keeps the acks and ackSettled waits for their retry.
    this.open.acks.push(recipient, rid, seqs);
    return this.bind().then(this.ackSettled);
  }

  lastSeq(): number {
    return this.seqCounter;
  }

  usage(recipient: Uint8Array): Usage {
    const u = isKey(recipient) ? this.usageMap.get(bytesId(recipient)) : undefined;
    return { count: u?.count ?? 0, bytes: u?.bytes ?? 0 };
  }

  totals(): Usage & { recipients: number } {
    return { count: this.totalCount, bytes: this.totalBytes, recipients: this.usageMap.size };
  }

  top(n: number): Array<{ recipient: Uint8Array } & Usage> {
    const all = [...this.usageMap];
    all.sort((a, b) => b[1].bytes - a[1].bytes || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return all.slice(0, Math.max(0, n)).map(([rid, u]) => ({ recipient: idBytes(rid), count: u.count, bytes: u.bytes }));
  }

  /**
   * Runs `visit` over keys of `db` in [start, end) in chunks (at most CHUNK keys, and no more keys
   * once CHUNK_WRITES writes were issued), each chunk's writes in one transaction awaited before
   * the next scan, so a scan never meets its own uncommitted deletions. Every chunk starts after
   * all writes issued before it have committed, so it sees what concurrent operations wrote.
   * Returns the sum of what `visit` returned (the entries it deleted).
   */
  private async chunked(db: Bin, start: Buffer | undefined, end: Buffer | undefined,
    visit: (key: Buffer, op: Op) => number): Promise<number> {
    let removed = 0;
    let from = start;
    for (;;) {
      if (this.gate) await this.gate;
      await this.settled();
      if (this.closed) return removed;
      if (!this.canWrite) throw new Error(UNWRITABLE);
      const op = newOp();
      let seen = 0;
      let full = false;
      let lastKey: Buffer | undefined;
      try {
        const range = { limit: CHUNK, ...(from ? { start: from } : {}), ...(end ? { end } : {}) };
        for (const key of db.getKeys(range)) {
          seen++;
          lastKey = key;
          removed += visit(key, op);
          if (op.writes >= CHUNK_WRITES) {
            full = true;
            break;
          }
        }
      } catch (err) {
        if (op.writes > 0) {
          void this.settled();
          this.noteFailure(err);
        }
        throw err;
      }
      if (op.writes > 0) commitFailed(await this.bind());
      if ((seen < CHUNK && !full) || lastKey === undefined) return removed;
      from = nextKey(lastKey);
    }
  }

  async removeRecipient(recipient: Uint8Array): Promise<number> {
    if (this.closed || this.closing) throw new Error('mailbox store is closed');
    if (!this.canWrite) throw new Error(UNWRITABLE);
    if (!isKey(recipient)) return 0;
    await this.settled();
    const rid = bytesId(recipient);
    return this.chunked(this.entries, entryKey(recipient, 0), entryKey(recipient, MAX_U53), (key, op) =>
      Number(this.deleteStored(recipient, rid, readU64(key, RECIPIENT_BYTES), op)));
  }

  async removeOlderThan(ageMs: number, now: number = this.clock()): Promise<number> {
    if (this.closed || this.closing) throw new Error('mailbox store is closed');
    if (!this.canWrite) throw new Error(UNWRITABLE);
    await this.settled();
    const cutoff = now - ageMs;
    return this.chunked(this.entries, undefined, undefined, (key, op) => {
      const recipient = key.subarray(0, RECIPIENT_BYTES);
      return Number(this.deleteStored(recipient, bytesId(recipient), readU64(key, RECIPIENT_BYTES), op,
        (meta) => !(meta.storedAt < cutoff)));
    });
  }

  async sweepExpired(now: number = this.clock()): Promise<number> {
    if (this.closed || this.closing) throw new Error('mailbox store is closed');
    // Unwritable: expired entries stay (read() skips them) until a sweep after the recovery.
    if (!this.canWrite) return 0;
    // Every entry with expiresAt <= now has a mark whose bucket starts at or before now, and marks
    // sort by bucket first: they are all below this 8-byte bound. A recipient with several such
    // marks is scanned once; a mark is deleted once its whole bucket has passed.
    const end = u64Value(Math.min(Math.floor(now) + 1, MAX_U53));
    const scanned = new Set<string>();
    return this.chunked(this.marks, undefined, end, (key, op) => {
      const bucket = readU64(key, 0);
      const recipient = key.subarray(8, 8 + RECIPIENT_BYTES);
      const rid = bytesId(recipient);
      let removed = 0;
      if (!scanned.has(rid)) {
        scanned.add(rid);
        for (const entry of this.entries.getKeys({ start: entryKey(recipient, 0), end: entryKey(recipient, MAX_U53) })) {
          if (this.deleteStored(recipient, rid, readU64(entry, RECIPIENT_BYTES), op, (meta) => meta.expiresAt > now)) removed++;
        }
      }
      if (bucket + EXPIRY_BUCKET_MS <= now) {
        this.remove(this.marks, key, op);
        if (this.markCache.get(rid) === bucket) this.markCache.delete(rid);
      }
      return removed;
    });
  }

  writable(): boolean {
    return this.canWrite;
  }

  setLimits(limits: Partial<MailboxLimits>): void {
    this.currentLimits = resolveLimits(this.currentLimits, limits);
  }

  limits(): MailboxLimits {
    return { ...this.currentLimits };
  }

  bodyCount(): number {
    // Shared bodies have a record each; every other entry carries its own body inline.
    let n = this.bodies.getKeysCount({});
    for (const key of this.entries.getKeys({})) {
      const seq = readU64(key, RECIPIENT_BYTES);
      if (this.pendingDeleted.has(seq)) continue;
      const value = this.entries.getBinaryFast(key);
      if (value !== undefined && !(value[1]! & FLAG_SHARED_BODY)) n++;
    }
    return n;
  }

  stats(): LmdbMailboxStats {
    let mapBytes = 0;
    try {
      const s = this.env.getStats() as { lastPageNumber?: number; pageSize?: number };
      mapBytes = (s.lastPageNumber ?? 0) * (s.pageSize ?? 0);
    } catch {
      mapBytes = 0;
    }
    return {
      entries: this.totalCount,
      bytes: this.totalBytes,
      recipients: this.usageMap.size,
      lastSeq: this.seqCounter,
      pendingOperations: this.inflight,
      commitFailures: this.commitFailures,
      writable: this.canWrite,
      probeFailures: this.probeFailures,
      acksWaiting: this.ackedSeqs.size,
      anomalies: this.anomalies,
      mapBytes,
    };
  }

  // ---------------------------------------------------------------- consistency

  private recompute(): { problems: string[]; fix: (op: Op) => void } {
    const tables = { entries: this.entries, bodies: this.bodies, refs: this.refs, index: this.index, marks: this.marks, usage: this.usageDb, meta: this.meta };
    const report = checkConsistency(tables, { usage: this.usageMap, count: this.totalCount, bytes: this.totalBytes });
    return {
      problems: report.problems,
      fix: (op) => {
        for (const f of report.fixes) {
          if (f.value === null) this.remove(f.db, f.key, op);
          else this.put(f.db, f.key, f.value, op);
        }
        this.usageMap.clear();
        for (const [rid, u] of report.usage) this.usageMap.set(rid, u);
        this.totalCount = report.count;
        this.totalBytes = report.bytes;
        this.dirtyUsage.clear();
        if (report.maxSeq > this.seqCounter) this.seqCounter = report.maxSeq;
        this.seqDirty = true;
        this.put(this.meta, SEQ_KEY, u64Value(this.seqCounter), op);
      },
    };
  }

  async verify(): Promise<string[]> {
    if (this.closed) throw new Error('mailbox store is closed');
    await this.idle();
    while (this.inflight > 0) await this.idle();
    return this.recompute().problems;
  }

  async repair(): Promise<string[]> {
    if (this.closed) throw new Error('mailbox store is closed');
    while (this.gate) await this.gate;
    let release = noop;
    this.gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    try {
      await this.idle();
      this.pendingNew.clear();
      this.handedOut.clear();
      this.pendingDeleted.clear();
      this.indexOverlay.clear();
      this.bodyOverlay.clear();
      this.markCache.clear();
      const { problems, fix } = this.recompute();
      const op = newOp();
      fix(op);
      if (this.meta.getBinary(PROBE_KEY) !== undefined) this.remove(this.meta, PROBE_KEY, op);
      this.retryKeptAcks(op);
      commitFailed(await this.bind());
      this.keptAcksDone();
      this.canWrite = true;
      return problems;
    } finally {
      this.gate = null;
      release();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.closing) return this.closing;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.recoveryTimer) clearTimeout(this.recoveryTimer);
    this.recoveryTimer = null;
    this.closing = (async () => {
      while (this.gate) await this.gate;
      await this.idle();
      // Acknowledgements that never committed: their entries stay and are delivered again.
      const round = this.ackRound;
      this.ackRound = null;
      round?.reject(new Error('mailbox store closed before these acknowledgements could be committed (their messages will be delivered again)'));
      this.closed = true;
      await closeEnv(this.env, this.lastCommitFailed);
    })();
    return this.closing;
  }
}

/** The first `size` bytes of a value lmdb-js lent (its buffer is reused by the next read), as a Buffer of their own. */
function ownCopy(lent: Buffer, size: number): Buffer {
  // Not lent.copy(): lmdb-js sets the lent buffer's `length` to the value's size, which Buffer#copy trusts.
  const own = Buffer.allocUnsafe(size);
  own.set(lent.subarray(0, size));
  return own;
}

/** Appends every item of from to to, and empties from (both arrays are reused). */
function moveAll<T>(from: T[], to: T[]): void {
  if (from.length === 0) return;
  for (const x of from) to.push(x);
  from.length = 0;
}

function u64Into(out: Buffer, value: number): Buffer {
  writeU64(out, 0, value);
  return out;
}

/** The smallest key greater than `key`: key followed by a zero byte. */
function nextKey(key: Buffer): Buffer {
  return Buffer.concat([key, Buffer.from([0])]);
}

export function openLmdbMailbox(options: LmdbMailboxOptions): LmdbMailboxStore {
  return new LmdbMailbox(options);
}
