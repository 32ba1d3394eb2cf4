// One link of the worker mesh: a Unix-domain stream to one other worker of this relay (or, in a
// cluster, a stream over NATS to an instance on another host: src/cluster/nats-stream.ts), and the
// Peer (src/server/destinations.ts) that forwards envelopes to it.
//
// Forwarding never writes from the sender's read loop: a FORWARD goes into the link's output
// (src/protocol/outbound.ts), which leaves as one write per event-loop turn. The output is bounded:
// past half of forwardBudgetBytes the senders that feed it are not read (ReadPause.PEER) until it
// drains, as TCP would hold them back on one process; past all of it a forward misses BUSY. Each
// forward has a deadline (forwardDeadlineMs, checked on the mesh's timer: past it, or when the link
// closes, it misses GONE); the router then stores a storable message itself and refuses the others.
// Answers come back batched, a run of consecutive forwards with one outcome in one record.
//
// A forward costs no object: its waiter and tag go into two arrays in the order sent, indexed by id.
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { keyIdAt } from '../crypto/key-id.js';
import { encodeKey } from '../crypto/keys.js';
import { KEY_LENGTH, SendFlags, STORAGE_KEY_LENGTH } from '../protocol/constants.js';
import { copyBytes } from '../protocol/frames.js';
import { Outbound } from '../protocol/outbound.js';
import { FrameReader } from '../protocol/reader.js';
import { ANSWER_LATER, FORWARDED, ForwardMiss, type ForwardOrigin, type ForwardWaiter, type Peer } from '../server/destinations.js';
import { Envelope } from '../server/envelope.js';
import type { Sender } from '../server/send-answer.js';
import { ReadPause } from '../server/session.js';
import {
  FORWARD_HEADER, HELLO_LENGTH, helloFrame, MAX_OUTCOME_RUN, MeshFrame, meshMaxLength, OUTCOME_RECORD, PRESENCE_APPLIED_LENGTH, PRESENCE_RECORD, readU64,
  writeFrameHeader,
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
  /**
   * A key held, or no longer held, there. A promise returned for an add holds back this end's
   * PRESENCE_APPLIED until it settles (the ACKs this instance took for the key, committed).
   */
  presence(link: PeerLink, add: boolean, key: Buffer, epoch: number): Promise<unknown> | void;
  /**
   * An envelope to route here: returns its outcome, or ANSWER_LATER and then origin.answer(id, code)
   * once (src/server/router.ts routeForwarded).
   */
  forwarded(link: PeerLink, origin: ForwardOrigin, envelope: Envelope, flags: number, ttlSeconds: number, id: number): number;
  mailboxChanged(link: PeerLink, keyId: string): void;
  /** A sender was paused because this link passed half its budget (counted). */
  senderPaused(): void;
  down(link: PeerLink): void;
}

/**
 * A storable forward misses only after this many forward deadlines while its link is up. The other
 * instance has it and answers once its store commits; missed sooner, it would be stored here too
 * while that commit is merely slow, and the recipient would get it twice. (A link that goes down
 * misses it at once: stored here, unless that instance committed it first.)
 */
const STORABLE_DEADLINES = 15;

/** Arrays of settled forwards ahead of the oldest unanswered one are cut once this long (and half the arrays). */
const COMPACT_AFTER = 4096;


export class PeerLink implements Peer {
  /** The peer's index, once its HELLO has arrived (-1 before). */
  index = -1;
  /** The index this link was dialed to (-1: it was accepted). */
  dialedIndex = -1;
  #up = false;
  #closed = false;
  readonly #socket: Duplex;
  readonly #out: Outbound;
  readonly #reader: FrameReader;
  readonly #settings: LinkSettings;
  readonly #events: LinkEvents;
  /**
   * Forwards sent and not yet answered, in the order sent: forward #firstId + i has its waiter at
   * #waiters[i] (undefined once settled) and its tag at #tags[i]; the ones before #head are settled.
   * Ids grow without end here (exact to 2^53) and go on the wire modulo 2^32.
   */
  #waiters: Array<ForwardWaiter | undefined> = [];
  #tags: number[] = [];
  #head = 0;
  #firstId = 0;
  #nextId = 0;
  #unanswered = 0;
  /** At each tick of the mesh's timer, the next id and the time: forwards before that id were sent by then. */
  #ticks: number[] = [];
  /** Senders not read while this link is over half its budget. */
  readonly #pausedSenders = new Set<Sender>();
  /** Answers to the peer's forwards (id, code, ...), sent as one OUTCOMES frame per turn. */
  #outcomes: number[] = [];
  #outcomesScheduled = false;
  /** PRESENCE frames sent, and how many of them the peer has applied; the ones applied here. */
  #presenceSent = 0;
  #presenceAcked = 0;
  #presenceApplied = 0;
  /** Told once the peer has applied the PRESENCE frames up to upTo (or the link is gone). */
  #presenceWaiters: Array<{ upTo: number; done: () => void }> = [];
  /** Storable forwards not answered yet: id → when sent (in id order). See STORABLE_DEADLINES. */
  readonly #storable = new Map<number, number>();
  /** The PRESENCE_APPLIED held back until an add's wait settles (null: none held, answer at once). */
  #appliedAfter: Promise<void> | null = null;
  /** Reasons not to read (store-bound forwards waiting on their commits). */
  #pauses = 0;
  readonly #envelope = new Envelope();
  /** The sender of the FORWARD being routed (one object, its key pointed at each frame's). */
  readonly #origin: LinkOrigin;

  constructor(socket: Socket | Duplex, settings: LinkSettings, events: LinkEvents) {
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
    (socket as Partial<Socket>).setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.#reader.push(chunk));
    socket.on('drain', () => this.#resumeSenders());
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

  forward(sender: Sender, envelope: Envelope, flags: number, ttlSeconds: number, waiter: ForwardWaiter, tag: number): number {
    if (!this.up) return ForwardMiss.GONE;
    const wrappedLength = envelope.wrappedEnd - envelope.wrappedStart;
    const payload = FORWARD_HEADER + wrappedLength + envelope.bodyLength;
    const budget = this.#settings.forwardBudgetBytes;
    const queued = this.#out.pendingBytes;
    if (queued + payload > budget) return ForwardMiss.BUSY;
    if (queued * 2 > budget && !this.#pausedSenders.has(sender)) {
      // Checked again after this turn's write (scheduled before this): what the kernel took at
      // once sends no 'drain'; what it did not, does.
      if (this.#pausedSenders.size === 0) setImmediate(this.#resumeCallback);
      this.#pausedSenders.add(sender);
      this.#events.senderPaused();
      sender.pauseReading(ReadPause.PEER);
    }
    const id = this.#nextId++;
    const headerLength = 5 + FORWARD_HEADER + wrappedLength;
    const out = this.#out;
    const offset = out.writeWithBody(headerLength, envelope.buf, envelope.bodyStart, envelope.bodyEnd);
    const b = out.buffer;
    let o = writeFrameHeader(b, offset, MeshFrame.FORWARD, payload);
    b.writeUInt32BE(id >>> 0, o);
    b[o + 4] = flags;
    b.writeUInt32BE(ttlSeconds >>> 0, o + 5);
    o += 9;
    // Short copies loop (copyBytes): Buffer.copy costs more to call than 32 bytes cost to move.
    const from = envelope.buf;
    copyBytes(sender.key, 0, KEY_LENGTH, b, o);
    o += KEY_LENGTH;
    copyBytes(from, envelope.recipientOffset, envelope.recipientOffset + KEY_LENGTH, b, o);
    o += KEY_LENGTH;
    if (envelope.storageKeyOffset >= 0) {
      b[o] = 1;
      copyBytes(from, envelope.storageKeyOffset, envelope.storageKeyOffset + STORAGE_KEY_LENGTH, b, o + 1);
    } else {
      for (let i = o, end = o + 1 + STORAGE_KEY_LENGTH; i < end; i++) b[i] = 0;
    }
    o += 1 + STORAGE_KEY_LENGTH;
    b[o] = wrappedLength;
    copyBytes(from, envelope.wrappedStart, envelope.wrappedEnd, b, o + 1);
    this.#waiters.push(waiter);
    this.#tags.push(tag);
    if ((flags & SendFlags.STORE) !== 0) this.#storable.set(id, Date.now());
    this.#unanswered++;
    return FORWARDED;
  }

  mailboxChanged(keyId: string): void {
    if (!this.up) return;
    const out = this.#out;
    const offset = out.reserve(5 + KEY_LENGTH);
    writeFrameHeader(out.buffer, offset, MeshFrame.MAILBOX, KEY_LENGTH);
    out.buffer.write(keyId, offset + 5, KEY_LENGTH, 'latin1');
  }

  /** Sends presence records (each PRESENCE_RECORD bytes, already encoded) as one frame (an empty snapshot: none). */
  sendPresence(records: Buffer): void {
    if (this.#closed) return;
    const out = this.#out;
    const offset = out.writeWithBody(5, records, 0, records.length);
    writeFrameHeader(out.buffer, offset, MeshFrame.PRESENCE, records.length);
    this.#presenceSent++;
  }

  /** The peer's snapshot of its keys has arrived (its first PRESENCE frame, empty if it held none). */
  get synced(): boolean {
    return this.#presenceApplied > 0;
  }

  /** Calls done once the peer has applied every PRESENCE frame sent so far, or the link is gone. */
  whenPresenceApplied(done: () => void): void {
    if (this.#closed || this.#presenceAcked >= this.#presenceSent) done();
    else this.#presenceWaiters.push({ upTo: this.#presenceSent, done });
  }

  /**
   * The mesh's timer (every 1/8 of the deadline): forwards sent before a tick at least a deadline
   * ago miss GONE, so a forward waits from one deadline to one deadline and a tick; a storable one
   * STORABLE_DEADLINES deadlines.
   */
  expire(now: number): void {
    const ticks = this.#ticks;
    const sentBy = now - this.#settings.forwardDeadlineMs;
    let t = 0;
    let before = -1;
    while (t < ticks.length && ticks[t + 1] <= sentBy) {
      before = ticks[t];
      t += 2;
    }
    if (t > 0) ticks.splice(0, t);
    if (before >= 0) {
      const waiters = this.#waiters;
      const storable = this.#storable;
      for (let i = this.#head; i < waiters.length && this.#firstId + i < before && !this.#closed; i++) {
        if (!storable.has(this.#firstId + i)) this.#settle(i, ForwardMiss.GONE);
      }
      this.#trim();
    }
    if (this.#storable.size > 0) {
      const storableBy = now - this.#settings.forwardDeadlineMs * STORABLE_DEADLINES;
      let missed = false;
      for (const [id, sentAt] of this.#storable) {
        if (sentAt > storableBy || this.#closed) break;
        this.#settle(id - this.#firstId, ForwardMiss.GONE);
        missed = true;
      }
      if (missed) this.#trim();
    }
    if (this.#unanswered > 0 && (ticks.length === 0 || ticks[ticks.length - 2] < this.#nextId)) ticks.push(this.#nextId, now);
    // A link whose queue never passed the socket's high-water mark sends no 'drain'.
    if (this.#pausedSenders.size > 0) this.#resumeSenders();
  }

  /** Settles forward #firstId + i with code, unless settled already. */
  #settle(i: number, code: number): void {
    const waiter = this.#waiters[i];
    if (this.#storable.size > 0) this.#storable.delete(this.#firstId + i);
    if (waiter === undefined) return;
    this.#waiters[i] = undefined;
    this.#unanswered--;
    waiter.forwardSettled(code, this.#tags[i]);
  }

  /** Drops settled forwards from the front of the arrays. */
  #trim(): void {
    const waiters = this.#waiters;
    let head = this.#head;
    if (this.#unanswered === 0) {
      waiters.length = 0;
      this.#tags.length = 0;
      this.#firstId = this.#nextId;
      this.#head = 0;
      return;
    }
    while (head < waiters.length && waiters[head] === undefined) head++;
    if (head > COMPACT_AFTER && head * 2 > waiters.length) {
      waiters.splice(0, head);
      this.#tags.splice(0, head);
      this.#firstId += head;
      head = 0;
    }
    this.#head = head;
  }

  readonly #resumeCallback = (): void => this.#resumeSenders();

  /** Reads the paused senders again once the link is back under half its budget. */
  #resumeSenders(): void {
    if (this.#pausedSenders.size === 0) return;
    if (!this.#closed && this.#out.pendingBytes * 2 > this.#settings.forwardBudgetBytes) return;
    const senders = [...this.#pausedSenders];
    this.#pausedSenders.clear();
    for (const sender of senders) sender.resumeReading(ReadPause.PEER);
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
    const waiters = this.#waiters;
    const tags = this.#tags;
    const head = this.#head;
    this.#waiters = [];
    this.#tags = [];
    this.#head = 0;
    this.#firstId = this.#nextId;
    this.#unanswered = 0;
    this.#ticks = [];
    this.#storable.clear();
    for (let i = head; i < waiters.length; i++) waiters[i]?.forwardSettled(ForwardMiss.GONE, tags[i]);
    this.#resumeSenders();
    const presenceWaiters = this.#presenceWaiters;
    this.#presenceWaiters = [];
    for (const w of presenceWaiters) w.done();
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
      case MeshFrame.PRESENCE_APPLIED: return this.#presenceAppliedThere(buf, start, end);
      default: return; // a newer worker's frame: ignored
    }
  }

  #presence(buf: Buffer, start: number, end: number): void {
    let waits: Array<Promise<unknown>> | null = null;
    for (let o = start; o + PRESENCE_RECORD <= end; o += PRESENCE_RECORD) {
      const wait = this.#events.presence(this, buf[o] === 1, buf.subarray(o + 1, o + 1 + KEY_LENGTH), readU64(buf, o + 1 + KEY_LENGTH));
      if (wait) (waits ??= []).push(wait);
    }
    const applied = ++this.#presenceApplied;
    if (waits === null && this.#appliedAfter === null) return this.#writePresenceApplied(applied);
    // In order: this frame's count goes out after the ones before it, once its waits have settled.
    const after: Promise<void> = (this.#appliedAfter ?? Promise.resolve()).then(() => Promise.allSettled(waits ?? [])).then(() => {
      if (this.#appliedAfter === after) this.#appliedAfter = null;
      if (!this.#closed) this.#writePresenceApplied(applied);
    });
    this.#appliedAfter = after;
  }

  #writePresenceApplied(applied: number): void {
    const out = this.#out;
    const offset = out.reserve(5 + PRESENCE_APPLIED_LENGTH);
    writeFrameHeader(out.buffer, offset, MeshFrame.PRESENCE_APPLIED, PRESENCE_APPLIED_LENGTH);
    out.buffer.writeUInt32BE(applied >>> 0, offset + 5);
  }

  #presenceAppliedThere(buf: Buffer, start: number, end: number): void {
    if (end - start !== PRESENCE_APPLIED_LENGTH) return this.close();
    // The count modulo 2^32, as far behind what was sent as the peer is.
    const sent = this.#presenceSent;
    this.#presenceAcked = sent - (((sent >>> 0) - buf.readUInt32BE(start)) >>> 0);
    const waiters = this.#presenceWaiters;
    let n = 0;
    while (n < waiters.length && waiters[n].upTo <= this.#presenceAcked) n++;
    if (n === 0) return;
    for (const w of waiters.splice(0, n)) w.done();
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
    // Consecutive ids with one code make one run (most turns: one run of DELIVERED): id, count, code.
    const runs: number[] = [];
    for (let i = 0; i < outcomes.length; i += 2) {
      const last = runs.length - 3;
      const id = outcomes[i];
      const code = outcomes[i + 1];
      if (last >= 0 && runs[last + 2] === code && runs[last + 1] < MAX_OUTCOME_RUN && ((runs[last] + runs[last + 1]) >>> 0) === id) runs[last + 1]++;
      else runs.push(id, 1, code);
    }
    const length = (runs.length / 3) * OUTCOME_RECORD;
    const out = this.#out;
    const offset = out.reserve(5 + length);
    const b = out.buffer;
    let o = writeFrameHeader(b, offset, MeshFrame.OUTCOMES, length);
    for (let r = 0; r < runs.length; r += 3, o += OUTCOME_RECORD) {
      b.writeUInt32BE(runs[r], o);
      b.writeUInt16BE(runs[r + 1], o + 4);
      b.writeInt16BE(runs[r + 2], o + 6);
    }
  }

  #answered(buf: Buffer, start: number, end: number): void {
    for (let o = start; o + OUTCOME_RECORD <= end && !this.#closed; o += OUTCOME_RECORD) {
      // Forwards past their deadline were settled GONE already; #settle skips them.
      const first = (buf.readUInt32BE(o) - this.#firstId) >>> 0;
      const last = Math.min(first + buf.readUInt16BE(o + 4), this.#waiters.length);
      const code = buf.readInt16BE(o + 6);
      for (let i = Math.max(first, this.#head); i < last && !this.#closed; i++) this.#settle(i, code);
    }
    this.#trim();
  }
}

/**
 * Where the FORWARD being routed came from (the router's ForwardOrigin): its sender's key, copied
 * into one reused buffer, and a sender of its own for one whose outcome comes later.
 */
class LinkOrigin implements ForwardOrigin, Sender {
  storeBytesPending = 0;
  /** The sender key of the FORWARD being routed, copied into one buffer (no view made per frame). */
  readonly key = Buffer.alloc(KEY_LENGTH);
  readonly #link: PeerLink;

  constructor(link: PeerLink) {
    this.#link = link;
  }

  point(buf: Buffer, at: number): void {
    copyBytes(buf, at, at + KEY_LENGTH, this.key, 0);
  }

  get sender(): Sender {
    return this;
  }

  get keyText(): string {
    return encodeKey(this.key);
  }

  get closed(): boolean {
    return this.#link.closed;
  }

  persist(): Sender {
    return new ForwardedSender(Buffer.from(this.key), this.#link);
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
