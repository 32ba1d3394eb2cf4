// Writes a connected recipient's mailbox entries to its connection while its window (messages not
// acknowledged) and its outbound budget allow. One read at a time per session, through the
// engine-neutral contract (an embedded engine answers at once, a database after a round trip).
// When a read reaches the mailbox's end and nothing is on its way into it, the backlog ends:
// held frames go out, then QUEUE_EMPTY.
import type { Logger } from 'pino';
import type { MailboxEntry, MailboxStore } from '../store/mailbox.js';
import type { PendingStores } from './pending-stores.js';
import type { Session } from './session.js';

const READ_BATCH = 256;

export interface DrainLimits {
  inflightWindow: number;
  outboundBudgetBytes: number;
}

export class MailboxDrain {
  readonly #store: MailboxStore;
  readonly #limits: DrainLimits;
  readonly #pending: PendingStores;
  readonly #log: Logger;

  constructor(store: MailboxStore, limits: DrainLimits, pending: PendingStores, log: Logger) {
    this.#store = store;
    this.#limits = limits;
    this.#pending = pending;
    this.#log = log;
  }

  /** Writes what the session can take now; called again on an ACK, a drained socket, or a settled store. */
  drain(session: Session): void {
    const backlog = session.backlog;
    if (session.closed || !backlog.active || !session.mailboxOpen) return;
    if (backlog.reading) {
      backlog.changedWhileReading = true;
      return;
    }
    if (session.out.pendingBytes >= this.#limits.outboundBudgetBytes) return;
    const room = this.#limits.inflightWindow - session.inflightCount;
    if (room > 0) {
      this.#read(session, Math.min(READ_BATCH, room), true);
    } else if (!backlog.queueEmptySent && !this.#pending.hasPending(session.keyId)) {
      // The window is full. When that took the last entry, say so now rather than after the next
      // ACK: a client may wait for QUEUE_EMPTY before it acknowledges. One entry further tells.
      this.#read(session, 1, false);
    }
  }

  #read(session: Session, limit: number, deliver: boolean): void {
    const backlog = session.backlog;
    backlog.reading = true;
    backlog.changedWhileReading = false;
    backlog.readStarting(this.#pending.oldestTicket(session.keyId));
    // Entries are lent by the store for the duration of the visit: written out (copied) at once.
    const visit = deliver ? (entry: MailboxEntry) => { if (!session.closed) session.deliverEntry(entry); } : ignoreEntry;
    this.#store.readEach(session.key, backlog.cursor, limit, visit).then(
      (visited) => this.#readDone(session, visited, limit, deliver),
      (err: Error) => {
        backlog.reading = false;
        this.#log.error({ event: 'mailbox_read_failed', err: err.message }, 'mailbox read failed');
      },
    );
  }

  #readDone(session: Session, visited: number, limit: number, delivered: boolean): void {
    const backlog = session.backlog;
    backlog.reading = false;
    if (session.closed || !backlog.active) return;
    const changed = backlog.changedWhileReading;
    if (visited < limit) {
      // The end of the mailbox as it was when the read started.
      backlog.reachedEnd();
      if (!changed && !this.#pending.hasPending(session.keyId)) {
        session.endBacklog();
        return;
      }
      // More is on its way in: its settle (or the change seen meanwhile) drains again. Held frames
      // the lifted barrier was keeping back go out now.
      session.releaseHeld();
      if (!changed) return;
    } else if (!delivered && !changed) {
      // Looked one further with the window full: there is more, so the next ACK drains.
      return;
    }
    this.drain(session);
  }
}

const ignoreEntry = (): void => {};
