/**
 * Mailboxes: durable storage of sealed messages for offline recipients, behind an interface that an
 * engine other than LMDB (PostgreSQL for scale-out) can implement without touching the server.
 *
 * Engine-neutral: nothing here imports an engine. Engines, each chosen through src/store/open.ts:
 *   - src/store/lmdb/      the embedded default (engine.ts adapts it to this contract)
 *   - src/store/memory/    an obviously-correct in-memory model, the reference for property tests
 * Quotas are decided by one pure function every engine calls (src/store/quota.ts).
 *
 * Semantics every implementation follows (the property test holds them to the model):
 *
 * Sequence numbers. Each ACCEPTED (recipient, message) pair takes a seq (refused recipients take
 * none); a recipient's seqs increase in the order of the accept() calls that made its entries (the
 * router's ordering of held messages relies on it) and are never reused,
 * also after a restart or a crash. (The LMDB engine draws them from one counter; the contract asks
 * only for per-recipient order.)
 *
 * Accounting. An entry costs `body.length + wrappedKey.length` bytes for its recipient's quota, even
 * when the body is shared with other recipients and stored once. Relay-wide bytes (`totals().bytes`,
 * checked against maxTotalBytes) are the sum of the recipients' bytes: a logical figure that
 * over-counts a fanned-out body but is exact, cheap, and never under-counts what is stored.
 *
 * Quotas are checked per recipient, in this order, counting the entry being replaced (if any) as
 * freed, and accept a message that makes usage exactly equal to the limit:
 *   count + 1 - replaced         > maxCountPerRecipient   -> QUOTA_COUNT
 *   bytes + cost - replacedBytes > maxBytesPerRecipient   -> QUOTA_BYTES
 *   total + cost - replacedBytes > maxTotalBytes          -> STORE_FULL
 * A store opened with a `quotaFor` hook asks it for each recipient's own count and byte limits
 * (its policy's) and uses them in place of maxCountPerRecipient and maxBytesPerRecipient; a hook
 * that answers undefined leaves that recipient on the store-wide limits. The hook is called on the
 * enqueue path, synchronously, once per recipient: it must be cheap and must not throw.
 * ttlSeconds > maxTtlSeconds refuses every recipient with TTL_TOO_LONG. A request that breaks the
 * documented shapes (key lengths, wrappedKey over 255 bytes, ttl not a positive finite number) is
 * refused with STORE_ERROR rather than thrown: the server validates frames before it gets here.
 *
 * Storage-key replacement. A message with a storage key replaces the stored entry with the same
 * (recipient, sender, storageKey). The replacement takes a NEW seq (it moves to the end of the queue)
 * and the old entry is deleted. It must not keep the old seq: the recipient may already hold the old
 * version and its acknowledgement, by seq, would then delete the undelivered replacement (the original
 * relay's weakness 15). The same storage key from another sender is a separate entry. Recipients are
 * processed in order, so a recipient listed twice with a storage key keeps only the second entry.
 *
 * Time. storedAt is the store's clock at enqueue; expiresAt = storedAt + round(ttlSeconds * 1000).
 * An entry is expired when now >= expiresAt: read() skips it, sweepExpired() deletes it. Until it is
 * swept it still counts against quotas. removeOlderThan(ageMs, now) deletes entries with
 * storedAt < now - ageMs.
 *
 * Durability. "Durable" means on disk: it survives a crash of the relay process and of its machine.
 * The LMDB store resolves `settled` only after the transaction holding the writes has
 * committed AND been flushed to disk (lmdb-js overlapping sync: the flush of one transaction runs
 * while the next one is written, so waiting for it costs latency, not throughput).
 *
 * Visibility. read() (and readEach()) shows committed entries only: an entry becomes readable once it is committed,
 * which may be a moment before its `settled` promise resolves (that also waits for the flush); an acknowledged entry disappears from read() at once. ack()
 * deletes the recipient's entries with those seqs, expired or not, committed or not (an accepted
 * entry exists from the moment enqueue() returns); a seq that names no such entry (unknown, another
 * recipient's, already acked or replaced) is ignored.
 */

export type RefusalCode = 'QUOTA_COUNT' | 'QUOTA_BYTES' | 'STORE_FULL' | 'TTL_TOO_LONG' | 'STORE_ERROR';

export const KEY_BYTES = 32;
export const STORAGE_KEY_BYTES = 16;
export const MAX_WRAPPED_KEY_BYTES = 255;

export interface EnqueueRequest {
  /** 32 bytes: the authenticated sender. */
  sender: Uint8Array;
  /** 16 bytes, or null for a message that never replaces another. */
  storageKey: Uint8Array | null;
  /** > 0; the caller has already applied the default; checked against maxTtlSeconds. */
  ttlSeconds: number;
  /** Opaque sealed body shared by all recipients: stored once. */
  body: Uint8Array;
  /** Per recipient: its 32-byte key and the message key wrapped for it (0..255 bytes). */
  recipients: { key: Uint8Array; wrappedKey: Uint8Array }[];
}

export type EnqueueOutcome = { ok: true; seq: number } | { ok: false; code: RefusalCode };

/**
 * A stored message as one recipient sees it. The byte fields may be views into one buffer the store
 * allocated for this read (no further copies): treat them as read-only.
 */
export interface MailboxEntry {
  seq: number;
  sender: Uint8Array;
  storageKey: Uint8Array | null;
  wrappedKey: Uint8Array;
  body: Uint8Array;
  /** ms since the epoch, on the store's clock */
  storedAt: number;
  /** ms since the epoch, on the store's clock */
  expiresAt: number;
}

/** bytes = sum over entries of (body length + wrappedKey length). */
export interface Usage {
  count: number;
  bytes: number;
}

export interface MailboxLimits {
  maxCountPerRecipient: number;
  maxBytesPerRecipient: number;
  maxTotalBytes: number;
  maxTtlSeconds: number;
}

/** One recipient's own mailbox limits (from its policy), overriding the per-recipient limits. */
export interface RecipientQuota {
  maxCount: number;
  maxBytes: number;
}

/** Per-recipient quota hook: undefined leaves the recipient on the store-wide limits. */
export type QuotaHook = (recipient: Uint8Array) => RecipientQuota | undefined;

export const DEFAULT_MAILBOX_LIMITS: Readonly<MailboxLimits> = Object.freeze({
  maxCountPerRecipient: 10_000,
  maxBytesPerRecipient: 50 * 1024 * 1024,
  maxTotalBytes: 10 * 1024 * 1024 * 1024,
  maxTtlSeconds: 30 * 24 * 3600,
});

/**
 * What an engine says of itself, read at once (metrics, /readyz, the admin `stats`): no I/O.
 */
export interface StoreStatus {
  /** The engine's name: 'lmdb', 'memory', ... */
  engine: string;
  /** false while the store cannot commit (stores are refused STORE_ERROR until it has recovered by itself). */
  writable: boolean;
  /** Commits that failed since open. */
  commitFailures: number;
  /** Bytes of the engine's data files in use, where it has files of its own (else null). */
  fileBytes: number | null;
}

/** One message's recipient entries handed to the store: see MailboxStore.accept. */
export interface Accepted {
  /**
   * One outcome per recipient, in order. An engine that decides at once (an embedded engine keeps
   * usage in memory) has filled them in when accept() returns (`decided`), and the router may then
   * write a storable message to a connected recipient at once; one that decides only at commit (a
   * database server) fills them in before `settled` resolves.
   */
  readonly outcomes: EnqueueOutcome[];
  readonly decided: boolean;
  /**
   * Resolves once every ok outcome is durable: true; false if their commit failed, and then every ok
   * outcome counts as STORE_ERROR (nothing was stored; finalOutcome()). Never rejects. The requests
   * accepted in one event-loop turn share one commit and one promise, so that a caller waits once
   * per commit rather than once per message (the router groups by it).
   */
  readonly settled: Promise<boolean>;
}

/** An outcome as it stands once its commit has settled: an ok one whose commit failed stored nothing. */
export function finalOutcome(outcome: EnqueueOutcome | undefined, committed: boolean): EnqueueOutcome {
  if (outcome === undefined) return COMMIT_FAILED;
  return committed || !outcome.ok ? outcome : COMMIT_FAILED;
}

const COMMIT_FAILED: EnqueueOutcome = Object.freeze({ ok: false, code: 'STORE_ERROR' });

export interface Totals extends Usage {
  recipients: number;
}

/**
 * The mailbox contract every engine implements (the contract suite and the property test run each
 * through the factory, src/store/open.ts). Asynchronous wherever a database server would need a
 * round trip; an embedded engine may answer synchronously underneath.
 *
 * Ordering is per recipient: seqs of one recipient's entries increase in the order they were
 * accepted, and read() returns them in that order. Nothing relies on a relay-wide sequence.
 */
export interface MailboxStore {
  /**
   * Stores one message for its recipients (writes batched by the engine: the messages of one event
   * turn share a commit). Accepted entries exist at once for ack() (which can delete them before they
   * commit); read() shows them once committed. While the store cannot write (closing, or unwritable
   * since a failed commit until it has recovered) every recipient is refused STORE_ERROR. Never throws.
   * The request is the caller's again once accept() returns (its buffers are views of a received
   * chunk, and the router lets go of them): an engine that writes later copies what it needs.
   */
  accept(request: EnqueueRequest): Accepted;
  /** Entries of `recipient` with seq > afterSeq, in seq order, at most `limit`, never expired ones; each its own copy. */
  read(recipient: Uint8Array, afterSeq: number, limit: number): Promise<MailboxEntry[]>;
  /**
   * The entries read() would return, handed to `visit` one at a time instead of collected; resolves
   * with how many were visited. The entry and its byte views are valid only during the call (an
   * embedded engine lends them from its map without copying), and `visit` must not call the store.
   * Rejects if the store cannot be read.
   */
  readEach(recipient: Uint8Array, afterSeq: number, limit: number, visit: (entry: MailboxEntry) => void): Promise<number>;
  /**
   * Deletes exactly these entries of recipient (acknowledged). Unknown seqs are ignored. Resolves
   * after commit. A store that cannot commit now (the LMDB one on a full disk) keeps them, no longer
   * shows them to read(), and commits them once it can, then resolves; it rejects only if the store
   * closes first (then they were not deleted).
   */
  ack(recipient: Uint8Array, seqs: number[]): Promise<void>;

  /**
   * Resolves once every acknowledgement this process has taken for recipient is committed, or null
   * when none is waiting. Only a store other processes read directly needs it (PostgreSQL: another
   * instance must not read, and deliver again, what an ACK here removed): see Session.mailboxOpen.
   */
  acksCommitted?(recipient: Uint8Array): Promise<unknown> | null;
  usage(recipient: Uint8Array): Promise<Usage>;
  totals(): Promise<Totals>;
  /** The n recipients with the most bytes (ties: lower key first), for the admin `usage --top N`. */
  top(n: number): Promise<Array<{ recipient: Uint8Array } & Usage>>;
  /** Admin: delete a user's mailbox; returns the number of entries removed. */
  removeRecipient(recipient: Uint8Array): Promise<number>;
  /** Admin: delete entries with storedAt < now - ageMs; returns the number removed. */
  removeOlderThan(ageMs: number, now?: number): Promise<number>;
  /** Deletes entries with expiresAt <= now (background and at start); returns the number removed. */
  sweepExpired(now?: number): Promise<number>;
  setLimits(limits: Partial<MailboxLimits>): void;
  limits(): MailboxLimits;
  /** Distinct bodies held (a body shared by several entries counts once). For tests and stats. */
  bodyCount(): Promise<number>;
  status(): StoreStatus;
  close(): Promise<void>;
}

/** Stores one message and resolves with its final outcomes (accept() for callers that only wait). */
export async function enqueue(store: MailboxStore, request: EnqueueRequest): Promise<EnqueueOutcome[]> {
  const accepted = store.accept(request);
  const committed = await accepted.settled;
  return accepted.outcomes.map((outcome) => finalOutcome(outcome, committed));
}

/** Limits merged over the defaults, each checked to be a non-negative finite number. */
export function resolveLimits(base: MailboxLimits, patch: Partial<MailboxLimits> | undefined): MailboxLimits {
  const out: MailboxLimits = { ...base };
  if (patch) {
    for (const name of Object.keys(DEFAULT_MAILBOX_LIMITS) as (keyof MailboxLimits)[]) {
      const value = patch[name];
      if (value === undefined) continue;
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
        throw new RangeError(`mailbox limit ${name} must be a non-negative finite number, got ${String(value)}`);
      }
      out[name] = value;
    }
  }
  return out;
}

/** Entry cost for quotas: body length + wrapped key length (documented above). */
export function entryCost(bodyLength: number, wrappedKeyLength: number): number {
  return bodyLength + wrappedKeyLength;
}

/** TTL in ms, or null if ttlSeconds is not a positive finite number. */
export function ttlMillis(ttlSeconds: number): number | null {
  if (typeof ttlSeconds !== 'number' || !Number.isFinite(ttlSeconds) || ttlSeconds <= 0) return null;
  const ms = Math.round(ttlSeconds * 1000);
  return ms > 0 ? ms : null;
}

/** Shape checks shared by the implementations: does the request-wide part conform? */
export function requestShapeOk(request: EnqueueRequest): boolean {
  return (
    request.sender instanceof Uint8Array &&
    request.sender.length === KEY_BYTES &&
    (request.storageKey === null ||
      (request.storageKey instanceof Uint8Array && request.storageKey.length === STORAGE_KEY_BYTES)) &&
    request.body instanceof Uint8Array &&
    Array.isArray(request.recipients)
  );
}

/** Shape check for one recipient of a request. */
export function recipientShapeOk(recipient: { key: Uint8Array; wrappedKey: Uint8Array }): boolean {
  return (
    recipient !== null &&
    typeof recipient === 'object' &&
    recipient.key instanceof Uint8Array &&
    recipient.key.length === KEY_BYTES &&
    recipient.wrappedKey instanceof Uint8Array &&
    recipient.wrappedKey.length <= MAX_WRAPPED_KEY_BYTES
  );
}

/** Bytewise comparison, for deterministic tie-breaks. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}
