// The router decides where each message goes: to a connected session, to the recipient's
// mailbox, or back to the sender as a refusal. Sessions only read, write and account.
//
// Ordering: messages from one sender to one recipient arrive in the order sent. While a
// recipient's mailbox may hold entries (its backlog), storable messages join the mailbox
// behind them and non-storable ones wait in memory (bounded by the outbound budget) until
// the backlog is drained; then everything flows live again.
//
// Durability: a storable message is always written to the mailbox, also when it goes out live
// at once, and its sender is answered (DELIVERED or STORED) only after that commit is durable;
// the recipient's ACK deletes the entry. So a success RESULT survives kill -9 until the
// recipient acknowledges, and a connection that dies unacknowledged leaves nothing to put back.
import type { Logger } from 'pino';
import { encodeKey } from '../crypto/keys.js';
import { UNUSABLE_KEY_IDS } from '../crypto/unusable-keys.js';
import {
  Code, DeliverFlags, FRAME_HEADER_LENGTH, KEY_LENGTH, SendFlags, STORAGE_KEY_LENGTH,
} from '../protocol/constants.js';
import {
  deliverHeaderLength, newSendView, parseSendInto, peekSendSeq, QUEUE_EMPTY_FRAME, resultFrameLength, writeDeliverHeader,
  writeResult, writeU64,
} from '../protocol/frames.js';
import type { EnqueueOutcome, MailboxEntry, MailboxStore, RefusalCode } from '../store/mailbox.js';
import type { RelayConfig } from './config.js';
import { ReadPause, type HeldMarker, type Session } from './session.js';
import type { RelayStats } from './stats.js';

const REFUSAL_CODES: Record<RefusalCode, number> = {
  QUOTA_COUNT: Code.QUOTA_COUNT,
  QUOTA_BYTES: Code.QUOTA_BYTES,
  STORE_FULL: Code.STORE_FULL,
  TTL_TOO_LONG: Code.TTL_TOO_LONG,
  STORE_ERROR: Code.STORE_ERROR,
  // Only for messages put back after a failed delivery: a newer one with its storage key is stored.
  SUPERSEDED: Code.STORED,
};

const DRAIN_BATCH = 256;
/** #routeOne's verdicts for a storable message: into the mailbox only, or stored and written live. */
const PENDING = -1;
const LIVE = -2;
const STORE_FAILED: EnqueueOutcome = { ok: false, code: 'STORE_ERROR' };

export type SendVerdict = 'ok' | 'close-malformed';

export class Router {
  /** The receiving session of each key (newest wins): where messages to the key go. */
  readonly sessions = new Map<string, Session>();
  /** Send-only sessions by key: they send and get answers, and receive no messages. */
  readonly sendOnly = new Map<string, Set<Session>>();
  sendOnlyCount = 0;
  readonly #store: MailboxStore;
  readonly #config: RelayConfig;
  readonly #log: Logger;
  readonly #stats: RelayStats;
  /** Enqueues not yet durable, per recipient: the backlog is not drained until they land. */
  readonly #pendingEnqueues = new Map<string, number>();
  /** Body bytes handed to the store and not yet durable, relay-wide (bounded: see #awaitCommit). */
  #storeBytesPending = 0;
  /** Senders not read from until their stores (or everyone's) commit. */
  readonly #storePaused = new Set<Session>();
  /** Reused for every SEND: the router handles one frame at a time. */
  readonly #view = newSendView();
  /** SENDs stored in this event turn, answered when `#commitGroupOf` (their commit) resolves. */
  #commitGroup: StoredSend[] | null = null;
  #commitGroupOf: Promise<boolean> | null = null;
  /** Markers made while routing the current SEND, by recipient, for #enqueueFor to resolve. */
  readonly #markers = new Map<string, HeldMarker>();
  /** Told of each delivery or store when logDeliveries is on (the event log). */
  onDelivery: ((event: 'delivered' | 'stored', from: string, to: string, bytes: number) => void) | null = null;

  constructor(store: MailboxStore, config: RelayConfig, log: Logger, stats: RelayStats) {
    this.#store = store;
    this.#config = config;
    this.#log = log;
    this.#stats = stats;
  }

  /** Makes session the live connection for its key; returns the one it replaces, if any. */
  register(session: Session): Session | undefined {
    const previous = this.sessions.get(session.keyId);
    this.sessions.set(session.keyId, session);
    return previous;
  }

  /**
   * Adds a send-only connection (CLIENT_HELLO flag SEND_ONLY): it is never the key's receiving
   * session, so it replaces nothing, is never replaced, and nothing addressed to the key nor the
   * key's mailbox is ever written to it. Its own RESULTs and ADMIN_RESPONSEs still are.
   */
  registerSendOnly(session: Session): void {
    // No backlog: ACKs and drains on this session never read the key's mailbox.
    session.backlog = false;
    let set = this.sendOnly.get(session.keyId);
    if (set === undefined) this.sendOnly.set(session.keyId, set = new Set());
    set.add(session);
    this.sendOnlyCount++;
  }

  /** How many send-only connections this key (latin1 id) has open now. */
  sendOnlyCountOf(keyId: string): number {
    return this.sendOnly.get(keyId)?.size ?? 0;
  }

  /** Every authenticated session, receiving and send-only (policy, kick, reload act on all). */
  *allSessions(): IterableIterator<Session> {
    yield* this.sessions.values();
    for (const set of this.sendOnly.values()) yield* set;
  }

  /**
   * Called when a session's connection has closed. Its unacknowledged stored messages (from the
   * mailbox or written live) are still in the mailbox: the key's next connection gets them.
   */
  unregister(session: Session): void {
    const senders = this.sendOnly.get(session.keyId);
    if (senders !== undefined && senders.delete(session)) {
      this.sendOnlyCount--;
      if (senders.size === 0) this.sendOnly.delete(session.keyId);
    }
    // A late close of a replaced connection must not evict its successor.
    if (this.sessions.get(session.keyId) === session) this.sessions.delete(session.keyId);
    for (const item of session.held) if (Buffer.isBuffer(item)) this.#stats.droppedHeld++;
    session.held = [];
    session.heldBytes = 0;
    // A successor that connected meanwhile read the committed ones in its own drain; one still
    // being committed reaches it when its commit settles (#enqueueSettled).
    session.clearInflight();
    this.#storePaused.delete(session);
  }

  /** Routes one SEND frame whose payload is buf[start, end). */
  handleSend(sender: Session, buf: Buffer, start: number, end: number): SendVerdict {
    const stats = this.#stats;
    stats.messagesIn++;
    sender.messagesIn++;
    const view = this.#view;
    if (!parseSendInto(buf, start, end, view)) {
      const seq = peekSendSeq(buf, start, end);
      if (seq < 0) return 'close-malformed';
      this.#refuse(sender, seq, Code.MALFORMED_SEND);
      return 'ok';
    }
    const { seq, flags, recipientCount: n, recipientOffsets, bodyStart, bodyEnd, storageKeyOffset } = view;
    const config = this.#config;
    const limits = sender.limits;
    if (n === 0) return this.#refuse(sender, seq, Code.NO_RECIPIENTS);
    if (n > limits.maxRecipients) return this.#refuse(sender, seq, Code.TOO_MANY_RECIPIENTS);
    if (bodyEnd - bodyStart > limits.maxPayloadBytes) return this.#refuse(sender, seq, Code.PAYLOAD_TOO_LARGE);
    const storable = (flags & SendFlags.STORE) !== 0;
    const wantReceipt = (flags & SendFlags.RECEIPT) !== 0;
    const ttlSeconds = view.ttlSeconds === 0 ? Math.min(config.defaultTtlSeconds, limits.maxTtlSeconds) : view.ttlSeconds;
    if (storable && ttlSeconds > limits.maxTtlSeconds) return this.#refuse(sender, seq, Code.TTL_TOO_LONG);

    if (n === 1) {
      // The common case, kept free of per-message arrays.
      const o = recipientOffsets[0];
      const keyId = buf.toString('latin1', o, o + KEY_LENGTH);
      // A small-order or non-canonical key: no one can connect as it, so nothing is kept for it.
      if (UNUSABLE_KEY_IDS.has(keyId)) return this.#refuse(sender, seq, Code.BAD_RECIPIENT);
      const outcome = this.#routeOne(sender, keyId, buf, o, storageKeyOffset, bodyStart, bodyEnd, storable);
      if (outcome === PENDING || outcome === LIVE) {
        this.#enqueueOne(sender, seq, wantReceipt, keyId, buf, o, storageKeyOffset, bodyStart, bodyEnd, ttlSeconds, outcome === LIVE);
      } else if (wantReceipt || (outcome !== Code.DELIVERED)) {
        this.#sendResult(sender, seq, overallCode(outcome), outcome);
      }
      return 'ok';
    }

    const keyIds: string[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const o = recipientOffsets[i];
      keyIds[i] = buf.toString('latin1', o, o + KEY_LENGTH);
    }
    if (new Set(keyIds).size !== n) return this.#refuse(sender, seq, Code.DUPLICATE_RECIPIENT);
    for (let i = 0; i < n; i++) if (UNUSABLE_KEY_IDS.has(keyIds[i])) return this.#refuse(sender, seq, Code.BAD_RECIPIENT);
    const offsets = recipientOffsets.slice(0, n);
    const outcomes: number[] = new Array(n);
    const toStore: number[] = [];
    for (let i = 0; i < n; i++) {
      outcomes[i] = this.#routeOne(sender, keyIds[i], buf, offsets[i], storageKeyOffset, bodyStart, bodyEnd, storable);
      if (outcomes[i] === PENDING || outcomes[i] === LIVE) toStore.push(i);
    }
    if (toStore.length > 0) {
      this.#enqueueFor(sender, seq, wantReceipt, toStore, outcomes, buf, storageKeyOffset, bodyStart, bodyEnd, ttlSeconds, offsets);
    } else if (wantReceipt || outcomes.some((c) => c !== Code.DELIVERED)) {
      this.#sendResult(sender, seq, overallCode(outcomes), outcomes);
    }
    return 'ok';
  }

  /**
   * Delivers a non-storable message to one recipient now (or refuses it); for a storable one says
   * LIVE when it is to be stored and written to the recipient's connection at once, PENDING when
   * it goes to the mailbox only.
   */
  #routeOne(
    sender: Session, keyId: string, buf: Buffer, recipientOffset: number, storageKeyOffset: number,
    bodyStart: number, bodyEnd: number, storable: boolean,
  ): number {
    const target = this.sessions.get(keyId);
    // A session that is closing is as good as offline: what is written to it now would be lost.
    if (target === undefined || target.closed) {
      if (storable) return PENDING;
      this.#stats.dropped.offline++;
      return Code.RECIPIENT_OFFLINE;
    }
    const budget = this.#config.outboundBudgetBytes;
    if (target.backlog) {
      if (storable) {
        const marker: HeldMarker = { seq: 0 };
        target.held.push(marker);
        this.#markers.set(keyId, marker);
        return PENDING;
      }
      return this.#hold(target, sender, buf, recipientOffset, storageKeyOffset, bodyStart, bodyEnd);
    }
    if (target.out.pendingBytes >= budget || (storable && target.inflightCount >= this.#config.inflightWindow)) {
      if (storable) {
        // Spill: the connection is behind, so the mailbox takes this and what follows.
        target.backlog = true;
        this.#stats.spilled++;
        return PENDING;
      }
      this.#stats.dropped.busy++;
      return Code.RECIPIENT_BUSY;
    }
    if (storable) return LIVE;
    this.#writeDeliver(target, sender.key, buf, recipientOffset, storageKeyOffset, bodyStart, bodyEnd, 0);
    if (this.#config.logDeliveries) this.#logDelivery(sender.keyText, target.keyText, bodyEnd - bodyStart, 'live');
    return Code.DELIVERED;
  }

  /**
   * Writes a storable message, just accepted by the store as entry `seq`, to the recipient's live
   * connection (#routeOne said LIVE, in this same SEND). Returns the session it went to.
   */
  #writeLiveStored(
    sender: Session, keyId: string, seq: number, buf: Buffer, recipientOffset: number, storageKeyOffset: number,
    bodyStart: number, bodyEnd: number,
  ): Session {
    const target = this.sessions.get(keyId)!;
    const deliveryId = this.#writeDeliver(target, sender.key, buf, recipientOffset, storageKeyOffset, bodyStart, bodyEnd, 0);
    target.track(deliveryId, seq);
    // Not in backlog, so every older entry of this mailbox has been written out: the drain, when
    // there is one again, starts after this entry instead of sending it a second time.
    target.lastMailboxSeq = seq;
    return target;
  }

  /** Writes a DELIVER for a recipient entry of a SEND; returns its delivery id. */
  #writeDeliver(
    target: Session, senderKey: Buffer, buf: Buffer, recipientOffset: number, storageKeyOffset: number,
    bodyStart: number, bodyEnd: number, extraFlags: number,
  ): number {
    const wStart = recipientOffset + KEY_LENGTH + 1;
    const wEnd = wStart + buf[recipientOffset + KEY_LENGTH];
    const deliveryId = target.nextDeliveryId++;
    const flags = extraFlags | (storageKeyOffset >= 0 ? DeliverFlags.HAS_STORAGE_KEY : 0);
    const offset = target.out.writeWithBody(deliverHeaderLength(wEnd - wStart), buf, bodyStart, bodyEnd);
    writeDeliverHeader(target.out.buffer, offset, deliveryId, flags, senderKey, 0, storageKeyOffset >= 0 ? buf : null, storageKeyOffset, buf, wStart, wEnd, bodyEnd - bodyStart);
    target.messagesOut++;
    this.#stats.messagesOut++;
    return deliveryId;
  }

  /** Keeps a non-storable message in memory until the recipient's backlog is drained. */
  #hold(target: Session, sender: Session, buf: Buffer, recipientOffset: number, storageKeyOffset: number, bodyStart: number, bodyEnd: number): number {
    const wStart = recipientOffset + KEY_LENGTH + 1;
    const wEnd = wStart + buf[recipientOffset + KEY_LENGTH];
    const length = deliverHeaderLength(wEnd - wStart) + bodyEnd - bodyStart;
    if (target.heldBytes + target.out.pendingBytes + length > this.#config.outboundBudgetBytes) {
      this.#stats.dropped.busy++;
      return Code.RECIPIENT_BUSY;
    }
    // The first held message waits for every entry already in the mailbox (all have seqs up to lastSeq).
    if (target.held.length === 0) {
      const lastSeq = this.#store.lastSeq();
      if (lastSeq > 0) target.held.push({ seq: lastSeq });
    }
    const frame = Buffer.allocUnsafe(length);
    const flags = storageKeyOffset >= 0 ? DeliverFlags.HAS_STORAGE_KEY : 0;
    const o = writeDeliverHeader(frame, 0, 0, flags, sender.key, 0, storageKeyOffset >= 0 ? buf : null, storageKeyOffset, buf, wStart, wEnd, bodyEnd - bodyStart);
    buf.copy(frame, o, bodyStart, bodyEnd);
    target.held.push(frame);
    target.heldBytes += length;
    return Code.DELIVERED;
  }

  /**
   * Stores a SEND's one recipient entry (buf[o..]), and writes it to the recipient's connection
   * too when `live`; the sender is answered once it is durable.
   */
  #enqueueOne(
    sender: Session, seq: number, wantReceipt: boolean, keyId: string, buf: Buffer, o: number,
    storageKeyOffset: number, bodyStart: number, bodyEnd: number, ttlSeconds: number, live: boolean,
  ): void {
    const marker = this.#takeMarker(keyId);
    if (!live) this.#enqueueStarted(keyId);
    const wStart = o + KEY_LENGTH + 1;
    const results = this.#store.enqueueNow({
      sender: sender.key,
      storageKey: storageKeyOffset >= 0 ? buf.subarray(storageKeyOffset, storageKeyOffset + STORAGE_KEY_LENGTH) : null,
      ttlSeconds,
      body: buf.subarray(bodyStart, bodyEnd),
      recipients: [{ key: buf.subarray(o, o + KEY_LENGTH), wrappedKey: buf.subarray(wStart, wStart + buf[o + KEY_LENGTH]) }],
    });
    const result = results[0] ?? STORE_FAILED;
    const deliveredTo = live && result.ok ? this.#writeLiveStored(sender, keyId, result.seq, buf, o, storageKeyOffset, bodyStart, bodyEnd) : null;
    this.#awaitCommit(new StoredSend(sender, seq, wantReceipt, bodyEnd - bodyStart, keyId, marker, result, live, deliveredTo, null));
  }

  /**
   * Stores the recipient entries of a SEND listed in `indexes` (the body once for all of them), and
   * writes those #routeOne said LIVE for to their connections; the sender is answered once they are durable.
   */
  #enqueueFor(
    sender: Session, seq: number, wantReceipt: boolean, indexes: number[], outcomes: number[],
    buf: Buffer, storageKeyOffset: number, bodyStart: number, bodyEnd: number, ttlSeconds: number,
    offsets: number[],
  ): void {
    const recipients = indexes.map((i) => {
      const o = offsets[i];
      const wStart = o + KEY_LENGTH + 1;
      return { key: buf.subarray(o, o + KEY_LENGTH), wrappedKey: buf.subarray(wStart, wStart + buf[o + KEY_LENGTH]), keyId: buf.toString('latin1', o, o + KEY_LENGTH) };
    });
    const keyIds = recipients.map((r) => r.keyId);
    const markers = keyIds.map((keyId) => this.#markers.get(keyId));
    this.#markers.clear();
    const live = indexes.map((i) => outcomes[i] === LIVE);
    for (let j = 0; j < keyIds.length; j++) if (!live[j]) this.#enqueueStarted(keyIds[j]);
    const storageKey = storageKeyOffset >= 0 ? buf.subarray(storageKeyOffset, storageKeyOffset + STORAGE_KEY_LENGTH) : null;
    const results = this.#store.enqueueNow({ sender: sender.key, storageKey, ttlSeconds, body: buf.subarray(bodyStart, bodyEnd), recipients });
    const deliveredTo = indexes.map((i, j) => {
      const result = results[j];
      return live[j] && result !== undefined && result.ok
        ? this.#writeLiveStored(sender, keyIds[j], result.seq, buf, offsets[i], storageKeyOffset, bodyStart, bodyEnd)
        : null;
    });
    this.#awaitCommit(new StoredSend(sender, seq, wantReceipt, bodyEnd - bodyStart, '', undefined, STORE_FAILED, false, null,
      { outcomes, indexes, keyIds, markers, results, live, deliveredTo }));
  }

  /**
   * Adds a stored SEND to the group of those waiting for the same commit. Every SEND stored in one
   * event turn (a socket read) shares one commit, so one handler answers them all, in order.
   */
  #awaitCommit(item: StoredSend): void {
    // Bodies waiting for their commit are held in memory: bounded per connection and relay-wide
    // by not reading from a sender past either bound until commits bring it back under.
    const sender = item.sender;
    sender.storeBytesPending += item.bytes;
    this.#storeBytesPending += item.bytes;
    if ((sender.storeBytesPending > this.#config.storePendingBytesPerConnection || this.#storeBytesPending > this.#config.storePendingBytesTotal)
      && !this.#storePaused.has(sender)) {
      this.#storePaused.add(sender);
      this.#stats.storePauses++;
      sender.pauseReading(ReadPause.STORE);
    }
    const commit = this.#store.durable();
    let group = this.#commitGroup;
    if (group === null || this.#commitGroupOf !== commit) {
      const fresh: StoredSend[] = [];
      group = this.#commitGroup = fresh;
      this.#commitGroupOf = commit;
      commit.then((ok) => this.#settleGroup(fresh, ok), () => this.#settleGroup(fresh, false));
    }
    group.push(item);
  }

  #settleGroup(group: StoredSend[], committed: boolean): void {
    if (this.#commitGroup === group) {
      this.#commitGroup = null;
      this.#commitGroupOf = null;
    }
    for (const item of group) {
      const { sender, many } = item;
      sender.storeBytesPending -= item.bytes;
      this.#storeBytesPending -= item.bytes;
      let code: number;
      let outcomes: number[] | number;
      if (many === null) {
        outcomes = this.#recordStored(sender, item.keyId, item.marker, committed ? item.result : failedCommit(item.result), item.bytes, item.deliveredTo);
        this.#enqueueSettled(item.keyId, item.live, item.deliveredTo);
        code = overallCode(outcomes);
      } else {
        // Every marker is set before any recipient is drained: a drain releases held messages up to them.
        const { indexes, keyIds, markers, results, live, deliveredTo } = many;
        outcomes = many.outcomes;
        for (let j = 0; j < indexes.length; j++) {
          const result = results[j] ?? STORE_FAILED;
          outcomes[indexes[j]] = this.#recordStored(sender, keyIds[j], markers[j], committed ? result : failedCommit(result), item.bytes, deliveredTo[j]);
        }
        for (let j = 0; j < keyIds.length; j++) this.#enqueueSettled(keyIds[j], live[j], deliveredTo[j]);
        code = overallCode(outcomes);
      }
      if (!sender.closed && (item.wantReceipt || code !== Code.OK)) this.#sendResult(sender, item.seq, code, outcomes);
    }
    if (this.#storePaused.size > 0) this.#resumeStorePaused();
  }

  /** Reads again from senders paused for their pending stores, once they and the relay are under the bounds. */
  #resumeStorePaused(): void {
    if (this.#storeBytesPending > this.#config.storePendingBytesTotal) return;
    const perConnection = this.#config.storePendingBytesPerConnection;
    for (const session of this.#storePaused) {
      if (session.storeBytesPending > perConnection) continue;
      this.#storePaused.delete(session);
      session.resumeReading(ReadPause.STORE);
    }
  }

  /** The marker #routeOne left for keyId while routing the current SEND, if any (then forgets all). */
  #takeMarker(keyId: string): HeldMarker | undefined {
    if (this.#markers.size === 0) return undefined;
    const marker = this.#markers.get(keyId);
    this.#markers.clear();
    return marker;
  }

  /**
   * Accounts for one recipient's store outcome; returns its RESULT outcome code: DELIVERED for an
   * entry that also went out live (to `deliveredTo`), STORED for one that waits in the mailbox.
   */
  #recordStored(sender: Session, keyId: string, marker: HeldMarker | undefined, result: EnqueueOutcome, bytes: number,
    deliveredTo: Session | null): number {
    if (marker) marker.seq = result.ok ? result.seq : -1;
    if (result.ok) {
      if (deliveredTo !== null) {
        this.#stats.storedLive++;
        if (this.#config.logDeliveries) this.#logDelivery(sender.keyText, deliveredTo.keyText, bytes, 'live');
        return Code.DELIVERED;
      }
      this.#stats.stored++;
      if (this.#config.logDeliveries) this.#logDelivery(sender.keyText, keyId, bytes, 'stored');
      return Code.STORED;
    }
    this.#stats.refusedStore++;
    return REFUSAL_CODES[result.code] ?? Code.STORE_ERROR;
  }

  #enqueueStarted(keyId: string): void {
    this.#pendingEnqueues.set(keyId, (this.#pendingEnqueues.get(keyId) ?? 0) + 1);
  }

  /**
   * One recipient entry's commit has settled (`live`: it was meant to go out live too, and went
   * to `deliveredTo` unless the store refused it).
   */
  #enqueueSettled(keyId: string, live: boolean, deliveredTo: Session | null): void {
    if (!live) {
      const left = (this.#pendingEnqueues.get(keyId) ?? 1) - 1;
      if (left > 0) this.#pendingEnqueues.set(keyId, left);
      else this.#pendingEnqueues.delete(keyId);
    }
    // Whatever just landed in a connected recipient's mailbox (a spill, a message stored while
    // it connected, or one written live to a connection it has since replaced) must reach it now.
    const target = this.sessions.get(keyId);
    if (target !== undefined && (!live || (deliveredTo !== null && target !== deliveredTo))) {
      target.backlog = true;
      this.drain(target);
    }
  }

  /**
   * Writes mailbox entries to a session while its window and budget allow; when the mailbox
   * is empty and nothing is on its way into it, ends the backlog and releases held messages.
   */
  drain(session: Session): void {
    if (session.closed || !session.backlog) return;
    const window = this.#config.inflightWindow;
    const budget = this.#config.outboundBudgetBytes;
    // Entries are lent by the store for the duration of the call: written out (copied) at once.
    const deliver = (entry: MailboxEntry): void => {
      // Held messages that came before this entry go first.
      if (session.held.length > 0) this.#releaseHeld(session, entry.seq - 1);
      const deliveryId = this.#writeStored(session, entry);
      session.track(deliveryId, entry.seq);
      session.lastMailboxSeq = entry.seq;
      if (session.held.length > 0) this.#releaseHeld(session, entry.seq);
    };
    while (session.inflightCount < window && session.out.pendingBytes < budget) {
      let delivered: number;
      try {
        delivered = this.#store.readEach(session.key, session.lastMailboxSeq, Math.min(DRAIN_BATCH, window - session.inflightCount), deliver);
      } catch (err) {
        this.#log.error({ event: 'mailbox_read_failed', err: (err as Error).message }, 'mailbox read failed');
        return;
      }
      if (delivered === 0) {
        if (this.#pendingEnqueues.has(session.keyId)) return;
        this.#endBacklog(session);
        return;
      }
    }
    // The window is full. When that took the last entry, say so now rather than after the next
    // ACK: a client may wait for QUEUE_EMPTY before it acknowledges.
    if (session.inflightCount >= window && !session.queueEmptySent && !this.#pendingEnqueues.has(session.keyId)) {
      let more: number;
      try {
        more = this.#store.readEach(session.key, session.lastMailboxSeq, 1, ignoreEntry);
      } catch {
        return;
      }
      if (more === 0) this.#endBacklog(session);
    }
  }

  #writeStored(session: Session, entry: MailboxEntry): number {
    const body = entry.body;
    const wrapped = entry.wrappedKey;
    const deliveryId = session.nextDeliveryId++;
    const flags = DeliverFlags.FROM_MAILBOX | (entry.storageKey ? DeliverFlags.HAS_STORAGE_KEY : 0);
    // Copied, never referenced: the store lends the entry only for the duration of the drain's visit.
    const offset = session.out.writeWithBodyCopy(deliverHeaderLength(wrapped.length), body, 0, body.length);
    writeDeliverHeader(session.out.buffer, offset, deliveryId, flags, entry.sender, 0, entry.storageKey, 0, wrapped, 0, wrapped.length, body.length);
    session.messagesOut++;
    this.#stats.messagesOut++;
    this.#stats.deliveredFromMailbox++;
    return deliveryId;
  }

  /**
   * Sends held frames from the front of the held list up to the first stored message that has
   * not been delivered yet (a marker whose seq is still ahead of upToSeq).
   */
  #releaseHeld(session: Session, upToSeq: number): void {
    const held = session.held;
    let i = 0;
    for (; i < held.length; i++) {
      const item = held[i];
      if (Buffer.isBuffer(item)) {
        const deliveryId = session.nextDeliveryId++;
        writeU64(item, FRAME_HEADER_LENGTH, deliveryId);
        session.out.writeFrame(item);
        session.heldBytes -= item.length;
        session.messagesOut++;
        this.#stats.messagesOut++;
      } else if (item.seq === 0 || item.seq > upToSeq) {
        break;
      }
    }
    if (i > 0) held.splice(0, i);
  }

  #endBacklog(session: Session): void {
    session.backlog = false;
    this.#releaseHeld(session, Number.MAX_SAFE_INTEGER);
    session.held = [];
    session.heldBytes = 0;
    if (!session.queueEmptySent) {
      session.queueEmptySent = true;
      session.out.writeFrame(QUEUE_EMPTY_FRAME);
    }
  }

  handleAck(session: Session, deliveryId: number): void {
    const seqs = session.acknowledge(deliveryId);
    if (seqs.length > 0) {
      this.#store.ack(session.key, seqs).catch((err: Error) => {
        this.#log.error({ event: 'mailbox_ack_failed', err: err.message }, 'mailbox ack failed');
      });
    }
    if (session.backlog) this.drain(session);
  }

  /** The socket drained below its budget: a session behind on its backlog can take more. */
  handleWritable(session: Session): void {
    if (session.backlog) this.drain(session);
  }

  #refuse(sender: Session, seq: number, code: number): SendVerdict {
    this.#stats.refused++;
    this.#sendResult(sender, seq, code, NO_OUTCOMES);
    return 'ok';
  }

  /** Writes a RESULT straight into the sender's output (outcomes: one code, or one per recipient). */
  #sendResult(sender: Session, seq: number, code: number, outcomes: readonly number[] | number): void {
    const out = sender.out;
    const offset = out.reserve(resultFrameLength(typeof outcomes === 'number' ? 1 : outcomes.length));
    writeResult(out.buffer, offset, seq, code, outcomes);
  }

  #logDelivery(from: string, to: string, bytes: number, how: 'live' | 'stored'): void {
    // keyIds (latin1) are turned into base58 only when delivery logging is on.
    const toText = to.length === KEY_LENGTH ? encodeKeyId(to) : to;
    const event = how === 'live' ? 'delivered' : 'stored';
    this.#log.info({ event, from, to: toText, bytes }, how);
    this.onDelivery?.(event, from, toText, bytes);
  }
}

const NO_OUTCOMES: readonly number[] = [];
const ignoreEntry = (): void => {};

/** A SEND whose recipient entries were handed to the store, waiting for their commit. */
class StoredSend {
  constructor(
    readonly sender: Session,
    readonly seq: number,
    readonly wantReceipt: boolean,
    readonly bytes: number,
    /** One recipient: its key id, held-message marker and store outcome. */
    readonly keyId: string,
    readonly marker: HeldMarker | undefined,
    readonly result: EnqueueOutcome,
    /** One recipient: it was connected and keeping up, so the entry went out live (to deliveredTo) unless refused. */
    readonly live: boolean,
    readonly deliveredTo: Session | null,
    /** Several recipients: the SEND's outcomes so far, and those of the stored ones (at `indexes`). */
    readonly many: {
      outcomes: number[]; indexes: number[]; keyIds: string[]; markers: (HeldMarker | undefined)[]; results: EnqueueOutcome[];
      live: boolean[]; deliveredTo: (Session | null)[];
    } | null,
  ) {}
}

/** A stored outcome whose commit failed: nothing was stored. */
function failedCommit(result: EnqueueOutcome): EnqueueOutcome {
  return result.ok ? STORE_FAILED : result;
}

/** A RESULT's code: OK when every recipient was delivered or stored, else the first other outcome. */
function overallCode(outcomes: readonly number[] | number): number {
  if (typeof outcomes === 'number') return outcomes === Code.DELIVERED || outcomes === Code.STORED ? Code.OK : outcomes;
  for (const c of outcomes) if (c !== Code.DELIVERED && c !== Code.STORED) return c;
  return Code.OK;
}

function encodeKeyId(keyId: string): string {
  return encodeKey(Buffer.from(keyId, 'latin1'));
}
