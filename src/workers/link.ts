// One link of the worker mesh: a Unix-domain stream to one other worker of this relay, and the
// Peer (src/server/destinations.ts) that forwards envelopes to it.
//
// Forwarding never writes from the sender's read loop: a FORWARD goes into the link's output
// (src/protocol/outbound.ts), which leaves as one write per event-loop turn. The output is bounded
// (forwardBudgetBytes: past it a forward misses BUSY) and each forward has a deadline
// (forwardDeadlineMs: past it, or when the link closes, it misses GONE); the router then stores a
// storable message itself and refuses the others. Answers come back batched, one per envelope.
import type { Socket } from 'node:net';
import { keyIdAt } from '../crypto/key-id.js';
import { encodeKey } from '../crypto/keys.js';
import { KEY_LENGTH, STORAGE_KEY_LENGTH } from '../protocol/constants.js';
import { Outbound } from '../protocol/outbound.js';
import { FrameReader } from '../protocol/reader.js';
import { ANSWER_LATER, FORWARDED, ForwardMiss, type ForwardOrigin, type ForwardWaiter, type Peer } from '../server/destinations.js';
import { Envelope } from '../server/envelope.js';
import type { Sender } from '../server/send-answer.js';
import {
  FORWARD_HEADER, HELLO_LENGTH, helloFrame, MeshFrame, meshMaxLength, OUTCOME_RECORD, PRESENCE_RECORD, readU64, writeFrameHeader,
} from './mesh-frames.js';

export interface LinkSettings {
  /** This worker's index. */
  index: number;
  forwardDeadlineMs: number;
  forwardBudgetBytes: number;
  /** The largest body a SEND may carry (the frame reader's bound for FORWARD). */
  maxBodyBytes: () => number;
}

/** What a link hands to the mesh (./mesh.ts). */
export interface LinkEvents {
  /** HELLO arrived: the link is up and knows the peer's index. */
  up(link: PeerLink): void;
  presence(link: PeerLink, add: boolean, key: Buffer, epoch: number): void;
  /**
   * An envelope to route here: returns its outcome, or ANSWER_LATER and then origin.answer(id, code)
   * once (src/server/router.ts routeForwarded).
   */
  forwarded(link: PeerLink, origin: ForwardOrigin, envelope: Envelope, flags: number, ttlSeconds: number, id: number): number;
  mailboxChanged(link: PeerLink, keyId: string): void;
  down(link: PeerLink): void;
}


export class PeerLink implements Peer {
  /** The peer's index, once its HELLO has arrived (-1 before). */
  index = -1;
  /** The index this link was dialed to (-1: it was accepted). */
  dialedIndex = -1;
  #up = false;
  #closed = false;
  readonly #socket: Socket;
  readonly #out: Outbound;
  readonly #reader: FrameReader;
  readonly #settings: LinkSettings;
  readonly #events: LinkEvents;
  /** Forwards waiting for their outcome, by id. */
  readonly #pending = new Map<number, ForwardWaiter>();
  /** Their deadlines, in the order sent: id, deadline, id, deadline, ... from #deadlinesHead. */
  #deadlines: number[] = [];
  #deadlinesHead = 0;
  #nextId = 1;
  /** Answers to the peer's forwards, sent as one OUTCOMES frame per turn. */
  #outcomes: number[] = [];
  #outcomesScheduled = false;
  /** Reasons not to read (store-bound forwards waiting on their commits). */
  #pauses = 0;
  readonly #envelope = new Envelope();
  /** The sender of the FORWARD being routed (one object, its key pointed at each frame's). */
  readonly #origin: LinkOrigin;

  constructor(socket: Socket, settings: LinkSettings, events: LinkEvents) {
    this.#socket = socket;
    this.#settings = settings;
    this.#events = events;
    this.#out = new Outbound(socket);
    this.#origin = new LinkOrigin(this);
    this.#reader = new FrameReader({
      maxLength: (type) => meshMaxLength(type, settings.maxBodyBytes()),
      onFrame: (type, buf, start, end) => this.#frame(type, buf, start, end),
      onError: () => this.close(),
    });
    socket.setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.#reader.push(chunk));
    socket.on('error', () => {});
    socket.on('close', () => this.#closedDown());
    this.#out.writeFrame(helloFrame(settings.index, process.pid));
  }

  get name(): string {
    return `worker-${this.index}`;
  }

  get up(): boolean {
    return this.#up && !this.#closed;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes queued toward the peer and not yet taken by the kernel. */
  get queuedBytes(): number {
    return this.#out.pendingBytes;
  }

  forward(sender: Buffer, envelope: Envelope, flags: number, ttlSeconds: number, waiter: ForwardWaiter): number {
    if (!this.up) return ForwardMiss.GONE;
    const wrappedLength = envelope.wrappedEnd - envelope.wrappedStart;
    const payload = FORWARD_HEADER + wrappedLength + envelope.bodyLength;
    if (this.#out.pendingBytes + payload > this.#settings.forwardBudgetBytes) return ForwardMiss.BUSY;
    const id = this.#nextId;
    this.#nextId = id >= 0xffff_ffff ? 1 : id + 1;
    const headerLength = 5 + FORWARD_HEADER + wrappedLength;
    const out = this.#out;
    const offset = out.writeWithBody(headerLength, envelope.buf, envelope.bodyStart, envelope.bodyEnd);
    const b = out.buffer;
    let o = writeFrameHeader(b, offset, MeshFrame.FORWARD, payload);
    b.writeUInt32BE(id, o);
    b[o + 4] = flags;
    b.writeUInt32BE(ttlSeconds >>> 0, o + 5);
    o += 9;
    sender.copy(b, o);
    o += KEY_LENGTH;
    envelope.buf.copy(b, o, envelope.recipientOffset, envelope.recipientOffset + KEY_LENGTH);
    o += KEY_LENGTH;
    if (envelope.storageKeyOffset >= 0) {
      b[o] = 1;
      envelope.buf.copy(b, o + 1, envelope.storageKeyOffset, envelope.storageKeyOffset + STORAGE_KEY_LENGTH);
    } else {
      b[o] = 0;
      b.fill(0, o + 1, o + 1 + STORAGE_KEY_LENGTH);
    }
    o += 1 + STORAGE_KEY_LENGTH;
    b[o] = wrappedLength;
    envelope.buf.copy(b, o + 1, envelope.wrappedStart, envelope.wrappedEnd);
    this.#pending.set(id, waiter);
    this.#deadlines.push(id, Date.now() + this.#settings.forwardDeadlineMs);
    return FORWARDED;
  }

  mailboxChanged(keyId: string): void {
    if (!this.up) return;
    const out = this.#out;
    const offset = out.reserve(5 + KEY_LENGTH);
    writeFrameHeader(out.buffer, offset, MeshFrame.MAILBOX, KEY_LENGTH);
    out.buffer.write(keyId, offset + 5, KEY_LENGTH, 'latin1');
  }

  /** Sends presence records (each PRESENCE_RECORD bytes, already encoded) as one frame. */
  sendPresence(records: Buffer): void {
    if (this.#closed || records.length === 0) return;
    const out = this.#out;
    const offset = out.writeWithBody(5, records, 0, records.length);
    writeFrameHeader(out.buffer, offset, MeshFrame.PRESENCE, records.length);
  }

  /** Forwards past their deadline miss GONE (called by the mesh's timer). */
  expire(now: number): void {
    const deadlines = this.#deadlines;
    let head = this.#deadlinesHead;
    // Deadlines grow in the order sent: the first one still in time ends the search.
    while (head < deadlines.length && deadlines[head + 1] <= now) {
      const id = deadlines[head];
      head += 2;
      const waiter = this.#pending.get(id);
      if (waiter === undefined) continue; // answered in time
      this.#pending.delete(id);
      waiter.forwardSettled(ForwardMiss.GONE);
    }
    // Answered ones ahead of the first in time are dropped as well: the queue stays as long as the wait.
    while (head < deadlines.length && !this.#pending.has(deadlines[head])) head += 2;
    if (head === deadlines.length) {
      deadlines.length = 0;
      head = 0;
    } else if (head > 4096 && head * 2 > deadlines.length) {
      deadlines.splice(0, head);
      head = 0;
    }
    this.#deadlinesHead = head;
  }

  pauseReading(): void {
    if (this.#pauses++ === 0) this.#socket.pause();
  }

  resumeReading(): void {
    if (--this.#pauses === 0 && !this.#closed) this.#socket.resume();
  }

  close(): void {
    if (this.#closed) return;
    this.#out.flushNow();
    this.#socket.end();
    this.#socket.destroy();
    this.#closedDown();
  }

  #closedDown(): void {
    if (this.#closed) {
      this.#failPending();
      return;
    }
    this.#closed = true;
    this.#reader.stop();
    this.#out.close();
    this.#failPending();
    this.#events.down(this);
  }

  #failPending(): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    this.#deadlines = [];
    this.#deadlinesHead = 0;
    for (const waiter of pending) waiter.forwardSettled(ForwardMiss.GONE);
  }

  #frame(type: number, buf: Buffer, start: number, end: number): void {
    if (this.#closed) return;
    if (!this.#up) {
      if (type !== MeshFrame.HELLO || end - start !== HELLO_LENGTH) return this.close();
      this.index = buf.readUInt16BE(start);
      this.#up = true;
      this.#events.up(this);
      return;
    }
    switch (type) {
      case MeshFrame.PRESENCE: return this.#presence(buf, start, end);
      case MeshFrame.FORWARD: return this.#forwarded(buf, start, end);
      case MeshFrame.OUTCOMES: return this.#answered(buf, start, end);
      case MeshFrame.MAILBOX:
        for (let o = start; o + KEY_LENGTH <= end; o += KEY_LENGTH) this.#events.mailboxChanged(this, keyIdAt(buf, o));
        return;
      default: return; // a newer worker's frame: ignored
    }
  }

  #presence(buf: Buffer, start: number, end: number): void {
    for (let o = start; o + PRESENCE_RECORD <= end; o += PRESENCE_RECORD) {
      this.#events.presence(this, buf[o] === 1, buf.subarray(o + 1, o + 1 + KEY_LENGTH), readU64(buf, o + 1 + KEY_LENGTH));
    }
  }

  #forwarded(buf: Buffer, start: number, end: number): void {
    if (end - start < FORWARD_HEADER) return this.close();
    const id = buf.readUInt32BE(start);
    const flags = buf[start + 4];
    const ttlSeconds = buf.readUInt32BE(start + 5);
    const senderAt = start + 9;
    const recipientAt = senderAt + KEY_LENGTH;
    const storageFlagAt = recipientAt + KEY_LENGTH;
    const wrappedLengthAt = storageFlagAt + 1 + STORAGE_KEY_LENGTH;
    const wrappedStart = wrappedLengthAt + 1;
    const wrappedEnd = wrappedStart + buf[wrappedLengthAt];
    if (wrappedEnd > end) return this.close();
    const e = this.#envelope;
    e.buf = buf;
    e.keyId = keyIdAt(buf, recipientAt);
    e.recipientOffset = recipientAt;
    e.wrappedStart = wrappedStart;
    e.wrappedEnd = wrappedEnd;
    e.storageKeyOffset = buf[storageFlagAt] === 1 ? storageFlagAt + 1 : -1;
    e.bodyStart = wrappedEnd;
    e.bodyEnd = end;
    const origin = this.#origin;
    origin.point(buf, senderAt);
    const code = this.#events.forwarded(this, origin, e, flags, ttlSeconds, id);
    if (code !== ANSWER_LATER) this.answer(id, code);
  }

  /** Sends the outcome of the peer's forward `id` (batched: one OUTCOMES frame per turn). */
  answer(id: number, code: number): void {
    if (this.#closed) return;
    this.#outcomes.push(id, code);
    if (this.#outcomesScheduled) return;
    this.#outcomesScheduled = true;
    setImmediate(() => this.#sendOutcomes());
  }

  #sendOutcomes(): void {
    this.#outcomesScheduled = false;
    const outcomes = this.#outcomes;
    this.#outcomes = [];
    if (this.#closed || outcomes.length === 0) return;
    const n = outcomes.length / 2;
    const out = this.#out;
    const offset = out.reserve(5 + n * OUTCOME_RECORD);
    const b = out.buffer;
    let o = writeFrameHeader(b, offset, MeshFrame.OUTCOMES, n * OUTCOME_RECORD);
    for (let i = 0; i < outcomes.length; i += 2) {
      b.writeUInt32BE(outcomes[i], o);
      b.writeInt16BE(outcomes[i + 1], o + 4);
      o += OUTCOME_RECORD;
    }
  }

  #answered(buf: Buffer, start: number, end: number): void {
    for (let o = start; o + OUTCOME_RECORD <= end; o += OUTCOME_RECORD) {
      const id = buf.readUInt32BE(o);
      const waiter = this.#pending.get(id);
      if (waiter === undefined) continue; // past its deadline: already answered GONE
      this.#pending.delete(id);
      waiter.forwardSettled(buf.readInt16BE(o + 4));
    }
  }
}

/**
 * Where the FORWARD being routed came from (the router's ForwardOrigin): its sender's key, read in
 * place, and a sender of its own for one whose outcome comes later.
 */
class LinkOrigin implements ForwardOrigin, Sender {
  storeBytesPending = 0;
  #buf: Buffer = Buffer.alloc(0);
  #at = 0;
  readonly #link: PeerLink;

  constructor(link: PeerLink) {
    this.#link = link;
  }

  point(buf: Buffer, at: number): void {
    this.#buf = buf;
    this.#at = at;
  }

  get sender(): Sender {
    return this;
  }

  get key(): Buffer {
    return this.#buf.subarray(this.#at, this.#at + KEY_LENGTH);
  }

  get keyText(): string {
    return encodeKey(this.key);
  }

  get closed(): boolean {
    return this.#link.closed;
  }

  persist(): Sender {
    return new ForwardedSender(this.key, this.#link);
  }

  answer(id: number, code: number): void {
    this.#link.answer(id, code);
  }

  pauseReading(): void {
    this.#link.pauseReading();
  }

  resumeReading(): void {
    this.#link.resumeReading();
  }
}

/** The sender of a forwarded envelope kept until its store settles: its key, and the link to hold back. */
class ForwardedSender implements Sender {
  storeBytesPending = 0;
  readonly key: Buffer;
  readonly #link: PeerLink;

  constructor(key: Buffer, link: PeerLink) {
    this.key = key;
    this.#link = link;
  }

  /** base58 only when asked (delivery logging). */
  get keyText(): string {
    return encodeKey(this.key);
  }

  get closed(): boolean {
    return this.#link.closed;
  }

  pauseReading(): void {
    this.#link.pauseReading();
  }

  resumeReading(): void {
    this.#link.resumeReading();
  }
}
