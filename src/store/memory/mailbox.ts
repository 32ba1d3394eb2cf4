/**
 * The in-memory reference model of MailboxStore: plain arrays, linear scans, no cleverness. It is the
 * oracle the property test compares the other engines against, so it favours being obviously correct
 * over being fast. Everything is applied at once; promises resolve immediately. Not durable: the
 * relay never runs on it, only tests do.
 */
import {
  compareBytes, DEFAULT_MAILBOX_LIMITS, entryCost, recipientShapeOk, requestShapeOk, resolveLimits, ttlMillis,
  type Accepted, type EnqueueOutcome, type EnqueueRequest, type MailboxEntry, type MailboxLimits, type MailboxStore,
  type QuotaHook, type StoreStatus, type Totals, type Usage,
} from '../mailbox.js';
import { quotaRefusal } from '../quota.js';

interface Body {
  bytes: Uint8Array;
}

interface ModelEntry {
  recipient: Uint8Array;
  seq: number;
  sender: Uint8Array;
  storageKey: Uint8Array | null;
  wrappedKey: Uint8Array;
  body: Body;
  storedAt: number;
  expiresAt: number;
}

function sameBytes(a: Uint8Array | null, b: Uint8Array | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && compareBytes(a, b) === 0;
}

export class MemoryMailbox implements MailboxStore {
  private entries: ModelEntry[] = [];
  private lastSeq_: number;
  private currentLimits: MailboxLimits;
  private readonly clock: () => number;

  private readonly quotaFor: QuotaHook | null;

  constructor(options: { limits?: Partial<MailboxLimits>; now?: () => number; firstSeq?: number; quotaFor?: QuotaHook } = {}) {
    this.currentLimits = resolveLimits(DEFAULT_MAILBOX_LIMITS, options.limits);
    this.quotaFor = options.quotaFor ?? null;
    this.clock = options.now ?? Date.now;
    this.lastSeq_ = (options.firstSeq ?? 1) - 1;
  }

  private usageOf(recipient: Uint8Array): Usage {
    let count = 0;
    let bytes = 0;
    for (const e of this.entries) {
      if (sameBytes(e.recipient, recipient)) {
        count++;
        bytes += entryCost(e.body.bytes.length, e.wrappedKey.length);
      }
    }
    return { count, bytes };
  }

  /** Decided and "durable" at once in the model. */
  accept(request: EnqueueRequest): Accepted {
    const outcomes = this.#decide(request);
    return { outcomes, decided: true, settled: COMMITTED };
  }

  #decide(request: EnqueueRequest): EnqueueOutcome[] {
    const recipients = Array.isArray(request.recipients) ? request.recipients : [];
    if (!requestShapeOk(request)) return recipients.map(() => ({ ok: false, code: 'STORE_ERROR' }));
    const ttlMs = ttlMillis(request.ttlSeconds);
    if (ttlMs === null) return recipients.map(() => ({ ok: false, code: 'STORE_ERROR' }));
    if (request.ttlSeconds > this.currentLimits.maxTtlSeconds) {
      return recipients.map(() => ({ ok: false, code: 'TTL_TOO_LONG' }));
    }
    const now = this.clock();
    const body: Body = { bytes: Uint8Array.from(request.body) };
    const outcomes: EnqueueOutcome[] = [];
    for (const r of recipients) {
      if (!recipientShapeOk(r)) {
        outcomes.push({ ok: false, code: 'STORE_ERROR' });
        continue;
      }
      const replaced = request.storageKey === null ? undefined : this.entries.find((e) =>
        sameBytes(e.recipient, r.key) && sameBytes(e.sender, request.sender) && sameBytes(e.storageKey, request.storageKey));
      const replacedCost = replaced ? entryCost(replaced.body.bytes.length, replaced.wrappedKey.length) : -1;
      const cost = entryCost(request.body.length, r.wrappedKey.length);
      const refusal = quotaRefusal(this.usageOf(r.key), this.#totals().bytes, cost, replacedCost, this.quotaFor?.(r.key), this.currentLimits);
      if (refusal !== null) {
        outcomes.push({ ok: false, code: refusal });
      } else {
        if (replaced) this.entries = this.entries.filter((e) => e !== replaced);
        const seq = ++this.lastSeq_;
        this.entries.push({
          recipient: Uint8Array.from(r.key),
          seq,
          sender: Uint8Array.from(request.sender),
          storageKey: request.storageKey === null ? null : Uint8Array.from(request.storageKey),
          wrappedKey: Uint8Array.from(r.wrappedKey),
          body,
          storedAt: now,
          expiresAt: now + ttlMs,
        });
        outcomes.push({ ok: true, seq });
      }
    }
    return outcomes;
  }

  async readEach(recipient: Uint8Array, afterSeq: number, limit: number, visit: (entry: MailboxEntry) => void): Promise<number> {
    const entries = this.#read(recipient, afterSeq, limit);
    for (const entry of entries) visit(entry);
    return entries.length;
  }

  async read(recipient: Uint8Array, afterSeq: number, limit: number): Promise<MailboxEntry[]> {
    return this.#read(recipient, afterSeq, limit);
  }

  #read(recipient: Uint8Array, afterSeq: number, limit: number): MailboxEntry[] {
    const now = this.clock();
    return this.entries
      .filter((e) => sameBytes(e.recipient, recipient) && e.seq > afterSeq && e.expiresAt > now)
      .sort((a, b) => a.seq - b.seq)
      .slice(0, Math.max(0, limit))
      .map((e) => ({
        seq: e.seq,
        sender: Uint8Array.from(e.sender),
        storageKey: e.storageKey === null ? null : Uint8Array.from(e.storageKey),
        wrappedKey: Uint8Array.from(e.wrappedKey),
        body: Uint8Array.from(e.body.bytes),
        storedAt: e.storedAt,
        expiresAt: e.expiresAt,
      }));
  }

  async ack(recipient: Uint8Array, seqs: number[]): Promise<void> {
    this.entries = this.entries.filter((e) => !(sameBytes(e.recipient, recipient) && seqs.includes(e.seq)));
  }

  /** The highest seq given so far (the model's own counter; not part of the contract). */
  lastSeq(): number {
    return this.lastSeq_;
  }

  async usage(recipient: Uint8Array): Promise<Usage> {
    return this.usageOf(recipient);
  }

  async totals(): Promise<Totals> {
    return this.#totals();
  }

  #totals(): Totals {
    let bytes = 0;
    const recipients = new Set<string>();
    for (const e of this.entries) {
      bytes += entryCost(e.body.bytes.length, e.wrappedKey.length);
      recipients.add(Buffer.from(e.recipient).toString('hex'));
    }
    return { count: this.entries.length, bytes, recipients: recipients.size };
  }

  async top(n: number): Promise<Array<{ recipient: Uint8Array } & Usage>> {
    const keys = new Map<string, Uint8Array>();
    for (const e of this.entries) keys.set(Buffer.from(e.recipient).toString('hex'), e.recipient);
    return [...keys.values()]
      .map((recipient) => ({ recipient: Uint8Array.from(recipient), ...this.usageOf(recipient) }))
      .sort((a, b) => b.bytes - a.bytes || compareBytes(a.recipient, b.recipient))
      .slice(0, Math.max(0, n));
  }

  async removeRecipient(recipient: Uint8Array): Promise<number> {
    const before = this.entries.length;
    this.entries = this.entries.filter((e) => !sameBytes(e.recipient, recipient));
    return before - this.entries.length;
  }

  async removeOlderThan(ageMs: number, now: number = this.clock()): Promise<number> {
    const before = this.entries.length;
    this.entries = this.entries.filter((e) => !(e.storedAt < now - ageMs));
    return before - this.entries.length;
  }

  async sweepExpired(now: number = this.clock()): Promise<number> {
    const before = this.entries.length;
    this.entries = this.entries.filter((e) => !(e.expiresAt <= now));
    return before - this.entries.length;
  }

  setLimits(limits: Partial<MailboxLimits>): void {
    this.currentLimits = resolveLimits(this.currentLimits, limits);
  }

  limits(): MailboxLimits {
    return { ...this.currentLimits };
  }

  async bodyCount(): Promise<number> {
    return new Set(this.entries.map((e) => e.body)).size;
  }

  status(): StoreStatus {
    return { engine: 'memory', writable: true, commitFailures: 0, fileBytes: null };
  }

  async close(): Promise<void> {}
}

/** The model's commit: "durable" at once, one promise for every request. */
const COMMITTED: Promise<boolean> = Promise.resolve(true);
