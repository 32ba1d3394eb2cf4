// A receiving session's mailbox backlog, and the ordering of what arrives while it drains.
//
// While a recipient's mailbox may hold entries, storable messages join the mailbox behind them and
// non-storable ones wait here in memory (bounded by the outbound budget) as DELIVER frames, in
// arrival order with a marker for each storable message between them: a held frame goes out only
// once every stored message that came before it has been written. The first frame held waits
// behind a barrier for every entry the mailbox holds, or is being committed to it, at that moment.
// That needs no relay-wide sequence, only the contract's per-recipient order (seqs increase in the
// order entries were accepted): the barrier is passed once the drain reaches the entry of a stored
// message routed after it (everything it waited for was accepted before that one), or once a read
// of the mailbox that started after every store pending at its making had settled reached the end.
import { FRAME_HEADER_LENGTH } from '../protocol/constants.js';
import { writeU64 } from '../protocol/frames.js';
import type { Outbound } from '../protocol/outbound.js';

/** A stored message's place among held frames: its mailbox seq once settled (0 before, -1 if not stored). */
export interface HeldMarker {
  seq: number;
}

/** The barrier before the first held frame: a marker lifted (seq -1) as described above. */
interface Barrier extends HeldMarker {
  /** Stores for this key with a ticket up to this one were pending when it was made. */
  readonly lastTicket: number;
}

export class MailboxBacklog {
  /** The mailbox may hold entries for this key: storable messages queue behind them. */
  active = true;
  /** Highest mailbox seq written to this connection: the drain reads after it. */
  cursor = 0;
  queueEmptySent = false;
  /** A mailbox read for this session is under way (one at a time). */
  reading = false;
  /** Something landed in the mailbox while a read was under way: read again before ending. */
  changedWhileReading = false;
  /** Held frames (delivery id still to fill in) and markers, in arrival order. */
  #held: Array<Buffer | HeldMarker> = [];
  #heldBytes = 0;
  #barrier: Barrier | null = null;
  /** The barrier a read under way can lift (set when it started, if it then could). */
  #liftable: Barrier | null = null;

  get heldBytes(): number {
    return this.#heldBytes;
  }

  get holding(): boolean {
    return this.#held.length > 0;
  }

  /** Keeps a DELIVER frame until what came before it has gone out; `lastTicket` is the newest store ticket issued. */
  holdFrame(frame: Buffer, lastTicket: number): void {
    if (this.#held.length === 0) {
      const barrier: Barrier = { seq: 0, lastTicket };
      this.#barrier = barrier;
      this.#held.push(barrier);
    }
    this.#held.push(frame);
    this.#heldBytes += frame.length;
  }

  /** A storable message routed to this key while backlogged: the marker its settled store fills in. */
  markStored(): HeldMarker {
    const marker: HeldMarker = { seq: 0 };
    this.#held.push(marker);
    return marker;
  }

  /** A read is starting; `oldestPendingTicket` is the oldest store still pending for the key (Infinity: none). */
  readStarting(oldestPendingTicket: number): void {
    const barrier = this.#barrier;
    this.#liftable = barrier !== null && oldestPendingTicket > barrier.lastTicket ? barrier : null;
  }

  /** The read that started last reached the mailbox's end: lifts the barrier it could lift. */
  reachedEnd(): void {
    const barrier = this.#liftable;
    this.#liftable = null;
    if (barrier === null) return;
    barrier.seq = -1;
    if (this.#barrier === barrier) this.#barrier = null;
  }

  /**
   * Writes held frames from the front up to the first marker still ahead of `upToSeq` (not settled,
   * or not delivered yet); returns how many frames went out.
   */
  release(out: Outbound, upToSeq: number, nextDeliveryId: number): number {
    const held = this.#held;
    let i = 0;
    let written = 0;
    for (; i < held.length; i++) {
      const item = held[i];
      if (Buffer.isBuffer(item)) {
        writeU64(item, FRAME_HEADER_LENGTH, nextDeliveryId + written);
        out.writeFrame(item);
        this.#heldBytes -= item.length;
        written++;
      } else if (item === this.#barrier && item.seq === 0 && this.#passed(i, upToSeq)) {
        item.seq = -1;
        this.#barrier = null;
      } else if (item.seq === 0 || item.seq > upToSeq) {
        break;
      }
    }
    if (i > 0) held.splice(0, i);
    if (held.length === 0) this.#barrier = null;
    return written;
  }

  /** Whether the drain, about to write or past entry upToSeq + 1, has reached a stored message held after the barrier at `at`. */
  #passed(at: number, upToSeq: number): boolean {
    const held = this.#held;
    for (let j = at + 1; j < held.length; j++) {
      const item = held[j];
      if (!Buffer.isBuffer(item) && item.seq > 0) return item.seq <= upToSeq + 1;
    }
    return false;
  }

  /** The backlog ends (the mailbox is drained, nothing pending): the barrier is passed. */
  liftBarrier(): void {
    if (this.#barrier !== null) this.#barrier.seq = -1;
    this.#barrier = null;
  }

  /** Forgets what is held (the connection closed); returns how many frames were dropped. */
  dropHeld(): number {
    let frames = 0;
    for (const item of this.#held) if (Buffer.isBuffer(item)) frames++;
    this.#held = [];
    this.#heldBytes = 0;
    this.#barrier = null;
    this.#liftable = null;
    return frames;
  }
}
