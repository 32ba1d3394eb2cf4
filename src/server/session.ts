// An authenticated connection as the router sees it: who it is, where its output goes, and
// what it has been sent but has not acknowledged yet.
import type { Socket } from 'node:net';
import { encodeKey } from '../crypto/keys.js';
import { Outbound } from './outbound.js';

/** A storable message written live and not yet acknowledged: put back in the mailbox if the connection dies. */
export interface UnackedLive {
  sender: Buffer;
  storageKey: Buffer | null;
  wrappedKey: Buffer;
  body: Buffer;
  expiresAt: number;
  /** The store's last seq when this was delivered: a stored namesake with a higher seq is newer. */
  acceptedSeq: number;
}

/** A storable message's place among held ones: its mailbox seq once committed (0 before, -1 if refused). */
export interface HeldMarker {
  seq: number;
}

/** One delivery the session waits to see acknowledged: a mailbox entry (seq) or a live storable message. */
interface Inflight {
  deliveryId: number;
  seq: number;
  live: UnackedLive | null;
}

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

  track(deliveryId: number, seq: number, live: UnackedLive | null): void {
    this.#inflight.push({ deliveryId, seq, live });
  }

  /** Removes every delivery up to and including deliveryId; returns the mailbox seqs acknowledged. */
  acknowledge(deliveryId: number): number[] {
    const seqs: number[] = [];
    const inflight = this.#inflight;
    let head = this.#inflightHead;
    while (head < inflight.length && inflight[head].deliveryId <= deliveryId) {
      if (inflight[head].seq > 0) seqs.push(inflight[head].seq);
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

  /** Live storable messages still unacknowledged (they go back to the mailbox on close). */
  takeUnackedLive(): UnackedLive[] {
    const out: UnackedLive[] = [];
    for (let i = this.#inflightHead; i < this.#inflight.length; i++) {
      const live = this.#inflight[i].live;
      if (live) out.push(live);
    }
    this.#inflight.length = 0;
    this.#inflightHead = 0;
    return out;
  }
}
