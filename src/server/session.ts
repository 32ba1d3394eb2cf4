// An authenticated connection as the router sees it: who it is, where its output goes, and
// what it has been sent but has not acknowledged yet.
import type { Socket } from 'node:net';
import { encodeKey } from '../crypto/keys.js';
import { Outbound } from '../protocol/outbound.js';

/** A storable message's place among held ones: its mailbox seq once committed (0 before, -1 if refused). */
export interface HeldMarker {
  seq: number;
}

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
} as const;

/** The limits that apply to what this session sends; a policy change replaces them at once. */
export interface SenderLimits {
  maxPayloadBytes: number;
  maxRecipients: number;
  maxTtlSeconds: number;
  /** Inbound rate limits, enforced by pausing reads; 0 means unlimited. */
  rateBytesPerSecond: number;
  rateBurstBytes: number;
  rateMessagesPerSecond: number;
  rateBurstMessages: number;
}

export class Session {
  readonly key: Buffer;
  /** The key as a latin1 string: the router's map key (cheap to make from a slice of a frame). */
  readonly keyId: string;
  readonly keyText: string;
  readonly out: Outbound;
  readonly socket: Socket;
  readonly connectedAt = Date.now();
  nextDeliveryId = 1;
  /** The mailbox may hold entries for this key: storable messages queue behind them. */
  backlog = true;
  /** Highest mailbox seq written to this connection. */
  lastMailboxSeq = 0;
  queueEmptySent = false;
  closed = false;
  /**
   * What arrived while the backlog drained, in arrival order: non-storable messages as DELIVER
   * frames (id still to fill in), and for each storable one a marker of its mailbox entry, so
   * a held frame goes out only after the stored messages that came before it.
   */
  held: Array<Buffer | HeldMarker> = [];
  heldBytes = 0;
  /** Sends CLOSE with this code and closes the connection (set by the connection). */
  closeConnection: (code: number, reason: string, retryAfterMs?: number) => void = () => {};
  messagesIn = 0;
  messagesOut = 0;
  /** Body bytes of this connection's SENDs handed to the store and not yet durable. */
  storeBytesPending = 0;
  /** Stops reading from the connection for a reason (a ReadPause bit; set by the connection). */
  pauseReading: (reason: number) => void = () => {};
  /** Reads again once no reason is left. */
  resumeReading: (reason: number) => void = () => {};
  readonly #inflight: Inflight[] = [];
  #inflightHead = 0;

  #limits: SenderLimits;
  /** Told when the limits change (the connection re-arms its rate limiter). */
  onLimitsChanged: (limits: SenderLimits) => void = () => {};

  constructor(key: Buffer, socket: Socket, limits: SenderLimits) {
    this.#limits = limits;
    this.key = key;
    this.keyId = key.toString('latin1');
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

  track(deliveryId: number, seq: number): void {
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

  /** Forgets what is in flight (the connection closed: the entries stay in the mailbox). */
  clearInflight(): void {
    this.#inflight.length = 0;
    this.#inflightHead = 0;
  }
}
