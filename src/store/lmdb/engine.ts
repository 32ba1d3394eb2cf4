// The embedded engine behind the engine-neutral mailbox contract (../mailbox.ts): a thin adapter
// over the LMDB store's own, mostly synchronous API (./mailbox.ts). It decides at once (usage lives
// in memory), so `accept` returns outcomes synchronously and the router can write a storable message
// to a connected recipient in the same turn; reads lend entries from the map without copying.
import type {
  Accepted, EnqueueOutcome, EnqueueRequest, MailboxEntry, MailboxLimits, MailboxStore, StoreStatus, Totals, Usage,
} from '../mailbox.js';
import { openLmdbMailbox, type LmdbMailboxOptions, type LmdbMailboxStore } from './mailbox.js';

export class LmdbEngine implements MailboxStore {
  /** The LMDB store itself, for what only this engine has (verify, repair, idle, its own stats). */
  readonly lmdb: LmdbMailboxStore;

  constructor(lmdb: LmdbMailboxStore) {
    this.lmdb = lmdb;
  }

  accept(request: EnqueueRequest): Accepted {
    const outcomes = this.lmdb.enqueueNow(request);
    // durable() is one promise per batch: every SEND of a turn shares it.
    return { outcomes, decided: true, settled: anyStored(outcomes) ? this.lmdb.durable() : NOTHING_TO_COMMIT };
  }

  async read(recipient: Uint8Array, afterSeq: number, limit: number): Promise<MailboxEntry[]> {
    return this.lmdb.read(recipient, afterSeq, limit);
  }

  readEach(recipient: Uint8Array, afterSeq: number, limit: number, visit: (entry: MailboxEntry) => void): Promise<number> {
    try {
      return Promise.resolve(this.lmdb.readEach(recipient, afterSeq, limit, visit));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  ack(recipient: Uint8Array, seqs: number[]): Promise<void> {
    return this.lmdb.ack(recipient, seqs);
  }

  async usage(recipient: Uint8Array): Promise<Usage> {
    return this.lmdb.usage(recipient);
  }

  async totals(): Promise<Totals> {
    return this.lmdb.totals();
  }

  async top(n: number): Promise<Array<{ recipient: Uint8Array } & Usage>> {
    return this.lmdb.top(n);
  }

  removeRecipient(recipient: Uint8Array): Promise<number> {
    return this.lmdb.removeRecipient(recipient);
  }

  removeOlderThan(ageMs: number, now?: number): Promise<number> {
    return this.lmdb.removeOlderThan(ageMs, now);
  }

  sweepExpired(now?: number): Promise<number> {
    return this.lmdb.sweepExpired(now);
  }

  setLimits(limits: Partial<MailboxLimits>): void {
    this.lmdb.setLimits(limits);
  }

  limits(): MailboxLimits {
    return this.lmdb.limits();
  }

  async bodyCount(): Promise<number> {
    return this.lmdb.bodyCount();
  }

  status(): StoreStatus {
    const s = this.lmdb.stats();
    return { engine: 'lmdb', writable: s.writable, commitFailures: s.commitFailures, fileBytes: s.mapBytes };
  }

  close(): Promise<void> {
    return this.lmdb.close();
  }
}

export function openLmdbEngine(options: LmdbMailboxOptions): LmdbEngine {
  return new LmdbEngine(openLmdbMailbox(options));
}

function anyStored(outcomes: EnqueueOutcome[]): boolean {
  for (const o of outcomes) if (o.ok) return true;
  return false;
}

/** settled for a request that wrote nothing: no commit to wait for. */
const NOTHING_TO_COMMIT: Promise<boolean> = Promise.resolve(true);
