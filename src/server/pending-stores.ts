// What the router has handed to the store (or to a peer) and not seen settle yet.
//
// Memory: bodies awaiting their commit are held (slices of the senders' chunks). They are bounded
// per connection and relay-wide by not reading from a sender past either bound until settles bring
// it back under (pulltab_read_pauses_total{reason="store"}).
//
// Ordering: each store of an entry that is not written live takes a ticket, kept per recipient key
// until it settles. A recipient's backlog does not end while it has one (the entry will land in
// its mailbox), and a held frame's barrier waits for the tickets older than it (./backlog.ts).
import type { Sender } from './send-answer.js';
import { ReadPause } from './session.js';
import type { RelayStats } from './stats.js';

export interface PendingBounds {
  storePendingBytesPerConnection: number;
  storePendingBytesTotal: number;
}

export class PendingStores {
  readonly #bounds: PendingBounds;
  readonly #stats: RelayStats;
  /** Body bytes pending, relay-wide. */
  #bytes = 0;
  /** Senders not read from until their stores (or everyone's) settle. */
  readonly #paused = new Set<Sender>();
  /** The tickets of stores pending per recipient key, oldest first (a pipelining sender keeps thousands in flight). */
  readonly #tickets = new Map<string, TicketQueue>();
  #lastTicket = 0;

  constructor(bounds: PendingBounds, stats: RelayStats) {
    this.#bounds = bounds;
    this.#stats = stats;
  }

  /** The newest ticket issued so far (a held frame's barrier waits for every pending one up to it). */
  get lastTicket(): number {
    return this.#lastTicket;
  }

  /** A sender's SEND of `bytes` body bytes now waits for the store or a peer. */
  bytesPending(sender: Sender, bytes: number): void {
    sender.storeBytesPending += bytes;
    this.#bytes += bytes;
    const bounds = this.#bounds;
    if ((sender.storeBytesPending > bounds.storePendingBytesPerConnection || this.#bytes > bounds.storePendingBytesTotal)
      && !this.#paused.has(sender)) {
      this.#paused.add(sender);
      this.#stats.storePauses++;
      sender.pauseReading(ReadPause.STORE);
    }
  }

  /** That SEND has settled; senders paused for their pending stores are read again once under the bounds. */
  bytesSettled(sender: Sender, bytes: number): void {
    sender.storeBytesPending -= bytes;
    this.#bytes -= bytes;
    if (this.#paused.size === 0 || this.#bytes > this.#bounds.storePendingBytesTotal) return;
    const perConnection = this.#bounds.storePendingBytesPerConnection;
    for (const session of this.#paused) {
      if (session.storeBytesPending > perConnection) continue;
      this.#paused.delete(session);
      session.resumeReading(ReadPause.STORE);
    }
  }

  /** The session has closed: it is not resumed any more. */
  forget(session: Sender): void {
    this.#paused.delete(session);
  }

  /** A store of an entry for keyId (not written live) is starting; returns its ticket. */
  storeStarted(keyId: string): number {
    const ticket = ++this.#lastTicket;
    const queue = this.#tickets.get(keyId);
    if (queue === undefined) this.#tickets.set(keyId, { tickets: [ticket], head: 0 });
    else queue.tickets.push(ticket);
    return ticket;
  }

  storeSettled(keyId: string, ticket: number): void {
    const queue = this.#tickets.get(keyId);
    if (queue === undefined) return;
    const { tickets } = queue;
    if (tickets[queue.head] === ticket) {
      // The usual case (stores commit in order): O(1), compacted now and then.
      queue.head++;
    } else {
      const i = tickets.indexOf(ticket, queue.head);
      if (i < 0) return;
      tickets.splice(i, 1);
    }
    if (queue.head === tickets.length) this.#tickets.delete(keyId);
    else if (queue.head > 1024 && queue.head * 2 > tickets.length) {
      tickets.splice(0, queue.head);
      queue.head = 0;
    }
  }

  /** Whether a store for keyId is still pending. */
  hasPending(keyId: string): boolean {
    return this.#tickets.has(keyId);
  }

  /** The oldest pending ticket for keyId, Infinity when none is. */
  oldestTicket(keyId: string): number {
    const queue = this.#tickets.get(keyId);
    return queue === undefined ? Infinity : queue.tickets[queue.head];
  }
}

/** Pending tickets in issue order; those before `head` have settled. */
interface TicketQueue {
  tickets: number[];
  head: number;
}
