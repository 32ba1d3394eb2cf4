// An authenticated connection as the router sees it: who it is, where its output goes, what it
// has been sent but has not acknowledged yet, and its mailbox backlog. The session writes its own
// DELIVER frames; the router decides which.
import type { Socket } from 'node:net';
import { keyIdOf } from '../crypto/key-id.js';
import { encodeKey } from '../crypto/keys.js';
import { DeliverFlags } from '../protocol/constants.js';
import { deliverHeaderLength, QUEUE_EMPTY_FRAME, writeDeliverHeader } from '../protocol/frames.js';
import { Outbound } from '../protocol/outbound.js';
import type { MailboxEntry } from '../store/mailbox.js';
import { MailboxBacklog } from './backlog.js';
import type { ForwardWaiter } from './destinations.js';
import type { Envelope } from './envelope.js';
import type { RelayStats } from './stats.js';

/**
 * One delivery of a mailbox entry the session waits to see acknowledged. A storable message
 * written live is a mailbox entry too (it is stored as it goes out), so nothing is kept here
 * but the two numbers: a connection that dies leaves its unacknowledged entries in the mailbox.
 */
interface Inflight {
  deliveryId: number;
  seq: number;
}

/**
 * Why a connection is not being read (a bit each; it is read again once none is left). TCP then
 * holds the client back: nothing is dropped, and nothing it sends is buffered beyond one read.
 */
export const ReadPause = {
  /** Over its byte or message rate (policy or configuration). */
  RATE: 1,
  /** Its own output waits unread past the outbound budget (replies to what it sends). */
  OUTPUT: 2,
  /** Its SENDs awaiting their commit pass the per-connection or the relay-wide bound. */
  STORE: 4,
  /** It used its share of this event-loop turn; read again in the next. */
  TURN: 8,
  /** The link to the instance that holds a recipient of its messages is over half its budget. */
  PEER: 16,
} as const;

/** The limits that apply to what this session sends (the policy model's); a policy change replaces them at once. */
export type { SenderLimits } from '../policy/limits.js';
import type { SenderLimits } from '../policy/limits.js';

export class Session {
  readonly key: Buffer;
  /** The key as a latin1 string: the router's map key (cheap to make from a slice of a frame). */
  readonly keyId: string;
  readonly keyText: string;
  readonly out: Outbound;
  readonly socket: Socket;
  readonly connectedAt = Date.now();
  #nextDeliveryId = 1;
  /** The mailbox backlog and what waits behind it (a send-only session has none: never active). */
  readonly backlog = new MailboxBacklog();
  closed = false;
  /**
   * Its mailbox may be read: from the start on one process; with other instances of the relay,
   * once they all know this connection (src/workers/presence.ts): any ACK one of them read for
   * this key is committed by then, so what it acknowledged never comes again here.
   */
  mailboxOpen = true;
  /** Sends CLOSE with this code and closes the connection (set by the connection). */
  closeConnection: (code: number, reason: string, retryAfterMs?: number) => void = () => {};
  messagesIn = 0;
  messagesOut = 0;
  /** Body bytes of this connection's SENDs handed to the store (or a peer) and not settled yet. */
  storeBytesPending = 0;
  /** Stops reading from the connection for a reason (a ReadPause bit; set by the connection). */
  pauseReading: (reason: number) => void = () => {};
  /** Reads again once no reason is left. */
  resumeReading: (reason: number) => void = () => {};
  /** Told the outcomes of this session's forwarded single-recipient messages (made by the router on the first). */
  forwardAnswers: ForwardWaiter | null = null;
  readonly #inflight: Inflight[] = [];
  #inflightHead = 0;

  #limits: SenderLimits;
  /** Told when the limits change (the connection re-arms its rate limiter). */
  onLimitsChanged: (limits: SenderLimits) => void = () => {};

  readonly #stats: RelayStats;

  constructor(key: Buffer, socket: Socket, limits: SenderLimits, stats: RelayStats) {
    this.#limits = limits;
    this.#stats = stats;
    this.key = key;
    this.keyId = keyIdOf(key);
    this.keyText = encodeKey(key);
    this.socket = socket;
    this.out = new Outbound(socket);
  }

  get limits(): SenderLimits {
    return this.#limits;
  }

  /** Applies new limits from the next frame on (a policy change or a reload). */
  set limits(limits: SenderLimits) {
    this.#limits = limits;
    this.onLimitsChanged(limits);
  }

  get inflightCount(): number {
    return this.#inflight.length - this.#inflightHead;
  }

  /** Writes a message straight from a SEND (a slice of the sender's chunk); returns its delivery id. */
  deliverLive(senderKey: Buffer, envelope: Envelope): number {
    const deliveryId = this.#nextDeliveryId++;
    const { buf, wrappedStart, wrappedEnd, storageKeyOffset, bodyStart, bodyEnd } = envelope;
    const flags = storageKeyOffset >= 0 ? DeliverFlags.HAS_STORAGE_KEY : 0;
    const out = this.out;
    const offset = out.writeWithBody(deliverHeaderLength(wrappedEnd - wrappedStart), buf, bodyStart, bodyEnd);
    writeDeliverHeader(out.buffer, offset, deliveryId, flags, senderKey, 0, storageKeyOffset >= 0 ? buf : null, storageKeyOffset,
      buf, wrappedStart, wrappedEnd, bodyEnd - bodyStart);
    this.messagesOut++;
    this.#stats.messagesOut++;
    return deliveryId;
  }

  /**
   * Writes a storable message live that the store has just accepted as entry `seq`, and waits for
   * its acknowledgement. Only while not backlogged: every older entry has gone out, so the drain,
   * when there is one again, starts after this one.
   */
  deliverStoredLive(senderKey: Buffer, envelope: Envelope, seq: number): void {
    this.#track(this.deliverLive(senderKey, envelope), seq);
    this.backlog.cursor = seq;
  }

  /**
   * Keeps a non-storable message, as a DELIVER frame of its own, until the backlog lets it out;
   * false (the caller answers RECIPIENT_BUSY) when it would pass the outbound budget.
   */
  hold(senderKey: Buffer, envelope: Envelope, budget: number, lastTicket: number): boolean {
    const { buf, wrappedStart, wrappedEnd, storageKeyOffset, bodyStart, bodyEnd } = envelope;
    const length = deliverHeaderLength(wrappedEnd - wrappedStart) + bodyEnd - bodyStart;
    if (this.backlog.heldBytes + this.out.pendingBytes + length > budget) return false;
    const frame = Buffer.allocUnsafe(length);
    const flags = storageKeyOffset >= 0 ? DeliverFlags.HAS_STORAGE_KEY : 0;
    const o = writeDeliverHeader(frame, 0, 0, flags, senderKey, 0, storageKeyOffset >= 0 ? buf : null, storageKeyOffset,
      buf, wrappedStart, wrappedEnd, bodyEnd - bodyStart);
    buf.copy(frame, o, bodyStart, bodyEnd);
    this.backlog.holdFrame(frame, lastTicket);
    return true;
  }

  /**
   * Writes a mailbox entry (copied: the store lends it only during the drain's visit), after the
   * held frames that came before it and before those that came after.
   */
  deliverEntry(entry: MailboxEntry): void {
    const backlog = this.backlog;
    if (backlog.holding) this.#releaseHeld(entry.seq - 1);
    const deliveryId = this.#nextDeliveryId++;
    const { body, wrappedKey } = entry;
    const flags = DeliverFlags.FROM_MAILBOX | (entry.storageKey ? DeliverFlags.HAS_STORAGE_KEY : 0);
    const out = this.out;
    const offset = out.writeWithBodyCopy(deliverHeaderLength(wrappedKey.length), body, 0, body.length);
    writeDeliverHeader(out.buffer, offset, deliveryId, flags, entry.sender, 0, entry.storageKey, 0, wrappedKey, 0, wrappedKey.length, body.length);
    this.messagesOut++;
    this.#stats.messagesOut++;
    this.#stats.deliveredFromMailbox++;
    this.#track(deliveryId, entry.seq);
    backlog.cursor = entry.seq;
    if (backlog.holding) this.#releaseHeld(entry.seq);
  }

  /** The mailbox is drained and nothing is on its way into it: everything held goes out, then QUEUE_EMPTY (once). */
  endBacklog(): void {
    const backlog = this.backlog;
    backlog.active = false;
    // Nothing is pending and nothing changed during the read that reached the end: a barrier set
    // by a frame held while that read was under way (a store engine that answers a read after a
    // round trip) has nothing left to wait for. Left up, it would keep the frames it guards back,
    // and dropHeld below would lose them.
    backlog.liftBarrier();
    this.#releaseHeld(Number.MAX_SAFE_INTEGER);
    backlog.dropHeld();
    if (!backlog.queueEmptySent) {
      backlog.queueEmptySent = true;
      this.out.writeFrame(QUEUE_EMPTY_FRAME);
    }
  }

  /** Writes the held frames nothing unwritten is ahead of any more (a barrier was lifted). */
  releaseHeld(): void {
    if (this.backlog.holding) this.#releaseHeld(this.backlog.cursor);
  }

  /** Releases held frames up to upToSeq; returns how many went out. */
  #releaseHeld(upToSeq: number): number {
    const n = this.backlog.release(this.out, upToSeq, this.#nextDeliveryId);
    this.#nextDeliveryId += n;
    this.messagesOut += n;
    this.#stats.messagesOut += n;
    return n;
  }

  #track(deliveryId: number, seq: number): void {
    this.#inflight.push({ deliveryId, seq });
  }

  /** Removes every delivery up to and including deliveryId; returns the mailbox seqs acknowledged. */
  acknowledge(deliveryId: number): number[] {
    const seqs: number[] = [];
    const inflight = this.#inflight;
    let head = this.#inflightHead;
    while (head < inflight.length && inflight[head].deliveryId <= deliveryId) {
      seqs.push(inflight[head].seq);
      head++;
    }
    if (head === inflight.length) {
      inflight.length = 0;
      head = 0;
    } else if (head > 1024 && head * 2 > inflight.length) {
      inflight.splice(0, head);
      head = 0;
    }
    this.#inflightHead = head;
    return seqs;
  }

  /**
   * The connection closed: forgets what is in flight (the entries stay in the mailbox for the key's
   * next connection) and what is held; returns how many held frames were dropped.
   */
  closedDown(): number {
    this.#inflight.length = 0;
    this.#inflightHead = 0;
    return this.backlog.dropHeld();
  }
}
