// The LMDB store's own API: synchronous where LMDB answers from memory or its map, which is what
// makes the embedded engine fast. engine.ts adapts it to the engine-neutral contract (../mailbox.ts);
// nothing outside src/store/lmdb/ uses this shape.
import type {
  EnqueueOutcome, EnqueueRequest, MailboxEntry, MailboxLimits, Usage,
} from '../mailbox.js';

export interface EmbeddedMailbox {
  /** One outcome per recipient, in order; resolves only once ok outcomes are durable. Never rejects. */
  enqueue(request: EnqueueRequest): Promise<EnqueueOutcome[]>;
  /**
   * enqueue() in two halves: decides and returns the outcomes at once and issues the writes. Its ok
   * outcomes are durable once the promise `durable()` returns after this call resolves true; false
   * means that commit failed and they are not stored. While the store cannot write at once (closing,
   * repairing, or unwritable since a failed commit) every recipient is refused STORE_ERROR. Never throws.
   */
  enqueueNow(request: EnqueueRequest): EnqueueOutcome[];
  /** Resolves once every write issued so far is durable: true, or false if the commit carrying the latest writes failed. Never rejects. */
  durable(): Promise<boolean>;
  read(recipient: Uint8Array, afterSeq: number, limit: number): MailboxEntry[];
  /** Visits entries lent from the map (valid only during `visit`); returns how many. Throws once closed. */
  readEach(recipient: Uint8Array, afterSeq: number, limit: number, visit: (entry: MailboxEntry) => void): number;
  ack(recipient: Uint8Array, seqs: number[]): Promise<void>;
  /** The highest seq assigned so far (one counter for the whole environment). */
  lastSeq(): number;
  usage(recipient: Uint8Array): Usage;
  totals(): Usage & { recipients: number };
  top(n: number): Array<{ recipient: Uint8Array } & Usage>;
  removeRecipient(recipient: Uint8Array): Promise<number>;
  removeOlderThan(ageMs: number, now?: number): Promise<number>;
  sweepExpired(now?: number): Promise<number>;
  setLimits(limits: Partial<MailboxLimits>): void;
  limits(): MailboxLimits;
  bodyCount(): number;
  close(): Promise<void>;
}
