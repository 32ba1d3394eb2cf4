// The router decides where each recipient's envelope of a SEND goes: to a connected session, to
// another instance of the relay that holds the key (./destinations.ts), to the recipient's
// mailbox, or back to the sender as a refusal. Sessions only read, write and account.
//
// Ordering: messages from one sender to one recipient arrive in the order sent. While a
// recipient's mailbox may hold entries (its backlog), storable messages join the mailbox behind
// them and non-storable ones wait in memory (./backlog.ts) until what came before them has gone
// out; then everything flows live again.
//
// Durability: a storable message is always written to the mailbox, also when it goes out live
// at once, and its sender is answered (DELIVERED or STORED) only after that commit is durable;
// the recipient's ACK deletes the entry. So a success RESULT survives kill -9 until the
// recipient acknowledges, and a connection that dies unacknowledged leaves nothing to put back.
// An engine that decides only at commit (a database server) cannot tell at once that a message
// is stored, so with it a storable message to a connected recipient goes through the mailbox
// (answered STORED, delivered by the drain right after the commit).
import type { Logger } from 'pino';
import { keyIdAt, keyOfId } from '../crypto/key-id.js';
import { encodeKey } from '../crypto/keys.js';
import { UNUSABLE_KEY_IDS } from '../crypto/unusable-keys.js';
import { Code, KEY_LENGTH, SendFlags } from '../protocol/constants.js';
import { newSendView, parseSendInto, peekSendSeq } from '../protocol/frames.js';
import { finalOutcome, type Accepted, type EnqueueOutcome, type EnqueueRequest, type MailboxStore, type RefusalCode } from '../store/mailbox.js';
import type { HeldMarker } from './backlog.js';
import type { RelayConfig } from './config.js';
import { ANSWER_LATER, FORWARDED, ForwardMiss, type ForwardOrigin, type ForwardWaiter, type Peer, type Peers } from './destinations.js';
import { Envelope } from './envelope.js';
import { MailboxDrain } from './mailbox-drain.js';
import { PendingStores } from './pending-stores.js';
import { answer, SendAnswer, writeResultTo, type Sender } from './send-answer.js';
import type { Session } from './session.js';
import type { RelayStats } from './stats.js';

const REFUSAL_CODES: Record<RefusalCode, number> = {
  QUOTA_COUNT: Code.QUOTA_COUNT,
  QUOTA_BYTES: Code.QUOTA_BYTES,
  STORE_FULL: Code.STORE_FULL,
  TTL_TOO_LONG: Code.TTL_TOO_LONG,
  STORE_ERROR: Code.STORE_ERROR,
};

/**
 * #routeOne's verdicts that settle later: the envelope went to the store, or to a peer; or it went
 * to a peer that answers the sender itself (a single-recipient message nothing of which is stored).
 */
const TO_STORE = -1;
const TO_PEER = -2;
const TO_PEER_ANSWERED = -3;

export type SendVerdict = 'ok' | 'close-malformed';

/** One recipient of a SEND whose entry goes to the mailbox. */
interface StoreItem {
  /** Its place among the SEND's recipients. */
  index: number;
  keyId: string;
  key: Buffer;
  wrappedKey: Buffer;
  /** Connected and keeping up: written live as well once the store accepts it (null: mailbox only). */
  liveTo: Session | null;
  /** Where it stands among held frames of a backlogged recipient. */
  marker: HeldMarker | undefined;
  /** Its pending-store ticket (0 while it is to be written live). */
  ticket: number;
}

/**
 * One recipient of a SEND forwarded to a peer: the peer calls it back with the outcome. It keeps
 * what storing the message needs should the forward miss, for storable messages only.
 */
class ForwardItem implements ForwardWaiter {
  pending: SendAnswer | null = null;
  parts: SendParts = NOT_STORABLE;
  constructor(
    readonly settled: (item: ForwardItem, code: number) => void,
    readonly index: number,
    readonly keyId: string,
    readonly key: Buffer | null,
    readonly wrappedKey: Buffer | null,
  ) {}

  forwardSettled(code: number): void {
    this.settled(this, code);
  }
}

/**
 * The outcomes of one session's forwarded single-recipient, non-storable messages: the commonest
 * forward, which needs nothing kept but its SEND's seq and receipt bit, carried in the tag
 * (seq × 2 + receipt). One per session, so such a forward allocates nothing.
 */
class SessionForwards implements ForwardWaiter {
  constructor(readonly session: Session, readonly settled: (session: Session, code: number, tag: number) => void) {}

  forwardSettled(code: number, tag: number): void {
    this.settled(this.session, code, tag);
  }
}

/** An element of a commit group's flat list (Accepted, SendAnswer, StoreItem[] per SEND). */
type CommitWaiter = Accepted | SendAnswer | StoreItem[];

/** What a StoreItem's key views become once the store has taken them. */
const RELEASED = Buffer.alloc(0);

/** The SEND-wide parts of a SEND whose outcomes settle later (slices of its chunk). */
interface SendParts {
  storable: boolean;
  storageKey: Buffer | null;
  body: Buffer;
  ttlSeconds: number;
}

/** A SEND that is not storable needs none of its parts after routing (nothing of it is stored). */
const NOT_STORABLE: SendParts = Object.freeze({ storable: false, storageKey: null, body: Buffer.alloc(0), ttlSeconds: 0 });

export interface RouterOptions {
  /** Other instances of this relay (workers, cluster), or none. */
  peers?: Peers | null;
}

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
  readonly #peers: Peers | null;
  readonly #pending: PendingStores;
  readonly #drain: MailboxDrain;
  /** Reused for every SEND and recipient: the router handles one frame at a time. */
  readonly #view = newSendView();
  readonly #envelope = new Envelope();
  /** Per SEND being routed (cleared before each): its recipients bound for the store and for peers. */
  readonly #toStore: StoreItem[] = [];
  readonly #toPeers: ForwardItem[] = [];
  /** Every ForwardItem's callback (one function, not one per forward). */
  readonly #forwardDone = (item: ForwardItem, code: number): void => this.#forwardSettled(item.pending!, item.parts, item, code);
  readonly #sessionForwardDone = (session: Session, code: number, tag: number): void => this.#sessionForwardSettled(session, code, tag);
  /** While routing a single-recipient SEND from a session: its tag for SessionForwards (else -1). */
  #singleTag = -1;
  /** SENDs waiting on the commit `#commitGroupOf` (flat: accepted, answer, items per SEND). */
  #commitGroup: CommitWaiter[] | null = null;
  #commitGroupOf: Promise<boolean> | null = null;
  /** Told of each delivery or store when logDeliveries is on (the event log). */
  onDelivery: ((event: 'delivered' | 'stored', from: string, to: string, bytes: number) => void) | null = null;

  constructor(store: MailboxStore, config: RelayConfig, log: Logger, stats: RelayStats, options: RouterOptions = {}) {
    this.#store = store;
    this.#config = config;
    this.#log = log;
    this.#stats = stats;
    this.#peers = options.peers ?? null;
    this.#pending = new PendingStores(config, stats);
    this.#drain = new MailboxDrain(store, config, this.#pending, log);
  }

  /**
   * Makes session the live connection for its key; returns the one it replaces, if any. known()
   * is called once the relay's other instances know it is here (at once when there are none).
   */
  register(session: Session, known: () => void = NOTHING): Session | undefined {
    const previous = this.sessions.get(session.keyId);
    this.sessions.set(session.keyId, session);
    if (!(this.#peers?.connected?.(session, known) ?? false)) known();
    return previous;
  }

  /**
   * Adds a send-only connection (CLIENT_HELLO flag SEND_ONLY): it is never the key's receiving
   * session, so it replaces nothing, is never replaced, and nothing addressed to the key nor the
   * key's mailbox is ever written to it. Its own RESULTs and ADMIN_RESPONSEs still are.
   */
  registerSendOnly(session: Session): void {
    // No backlog: ACKs and drains on this session never read the key's mailbox.
    session.backlog.active = false;
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
    if (this.sessions.get(session.keyId) === session) {
      this.sessions.delete(session.keyId);
      this.#peers?.disconnected?.(session);
    }
    // A successor that connected meanwhile read the committed ones in its own drain; one still
    // being committed reaches it when its commit settles (#storeSettled).
    this.#stats.droppedHeld += session.closedDown();
    this.#pending.forget(session);
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
      return this.#refuse(sender, seq, Code.MALFORMED_SEND);
    }
    const { seq, flags, recipientCount: n, bodyStart, bodyEnd } = view;
    const limits = sender.limits;
    if (n === 0) return this.#refuse(sender, seq, Code.NO_RECIPIENTS);
    if (n > limits.maxRecipients) return this.#refuse(sender, seq, Code.TOO_MANY_RECIPIENTS);
    if (bodyEnd - bodyStart > limits.maxPayloadBytes) return this.#refuse(sender, seq, Code.PAYLOAD_TOO_LARGE);
    const storable = (flags & SendFlags.STORE) !== 0;
    const wantReceipt = (flags & SendFlags.RECEIPT) !== 0;
    const ttlSeconds = view.ttlSeconds === 0 ? Math.min(this.#config.defaultTtlSeconds, limits.maxTtlSeconds) : view.ttlSeconds;
    if (storable && ttlSeconds > limits.maxTtlSeconds) return this.#refuse(sender, seq, Code.TTL_TOO_LONG);
    const envelope = this.#envelope;

    if (n === 1) {
      // The common case, kept free of per-message arrays.
      const o = view.recipientOffsets[0];
      const keyId = keyIdAt(buf, o);
      // A small-order or non-canonical key: no one can connect as it, so nothing is kept for it.
      if (UNUSABLE_KEY_IDS.has(keyId)) return this.#refuse(sender, seq, Code.BAD_RECIPIENT);
      this.#singleTag = seq * 2 + (wantReceipt ? 1 : 0);
      const outcome = this.#routeOne(sender, envelope.pointAt(buf, view, 0, keyId), 0, storable, flags, ttlSeconds);
      this.#singleTag = -1;
      if (outcome >= 0) answer(sender, seq, wantReceipt, outcome);
      else if (outcome !== TO_PEER_ANSWERED) this.#awaitOutcomes(sender, seq, wantReceipt, [outcome], envelope, storable, ttlSeconds);
      return 'ok';
    }

    const keyIds: string[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const o = view.recipientOffsets[i];
      keyIds[i] = keyIdAt(buf, o);
    }
    if (new Set(keyIds).size !== n) return this.#refuse(sender, seq, Code.DUPLICATE_RECIPIENT);
    for (let i = 0; i < n; i++) if (UNUSABLE_KEY_IDS.has(keyIds[i])) return this.#refuse(sender, seq, Code.BAD_RECIPIENT);
    const outcomes: number[] = new Array(n);
    let later = false;
    for (let i = 0; i < n; i++) {
      outcomes[i] = this.#routeOne(sender, envelope.pointAt(buf, view, i, keyIds[i]), i, storable, flags, ttlSeconds);
      if (outcomes[i] < 0) later = true;
    }
    if (later) this.#awaitOutcomes(sender, seq, wantReceipt, outcomes, envelope, storable, ttlSeconds);
    else answer(sender, seq, wantReceipt, outcomes);
    return 'ok';
  }

  /**
   * Decides one recipient's envelope: delivered or refused now (a RESULT outcome code), or
   * TO_STORE / TO_PEER (queued in #toStore / #toPeers, settled later).
   */
  #routeOne(sender: Sender, envelope: Envelope, index: number, storable: boolean, flags: number, ttlSeconds: number): number {
    const target = this.sessions.get(envelope.keyId);
    // A session that is closing is as good as offline: what is written to it now would be lost.
    if (target === undefined || target.closed) {
      const peer = this.#peers?.holderOf(envelope.keyId) ?? null;
      if (peer !== null) return this.#forward(sender, envelope, index, peer, flags, ttlSeconds);
      if (storable) return this.#toMailbox(envelope, index, null, undefined);
      this.#stats.dropped.offline++;
      return Code.RECIPIENT_OFFLINE;
    }
    const backlog = target.backlog;
    if (backlog.active) {
      if (storable) return this.#toMailbox(envelope, index, null, backlog.markStored());
      if (target.hold(sender.key, envelope, this.#config.outboundBudgetBytes, this.#pending.lastTicket)) return Code.DELIVERED;
      this.#stats.dropped.busy++;
      return Code.RECIPIENT_BUSY;
    }
    if (target.out.pendingBytes >= this.#config.outboundBudgetBytes || (storable && target.inflightCount >= this.#config.inflightWindow)) {
      if (storable) {
        // Spill: the connection is behind, so the mailbox takes this and what follows.
        backlog.active = true;
        this.#stats.spilled++;
        return this.#toMailbox(envelope, index, null, undefined);
      }
      this.#stats.dropped.busy++;
      return Code.RECIPIENT_BUSY;
    }
    if (storable) return this.#toMailbox(envelope, index, target, undefined);
    target.deliverLive(sender.key, envelope);
    if (this.#config.logDeliveries) this.#logDelivery(sender.keyText, target.keyText, envelope.bodyLength, 'live');
    return Code.DELIVERED;
  }

  /** Queues a recipient's entry for the SEND's store (one request for all its stored recipients: the body once). */
  #toMailbox(envelope: Envelope, index: number, liveTo: Session | null, marker: HeldMarker | undefined): number {
    this.#toStore.push({
      index, keyId: envelope.keyId, key: envelope.recipientKey(), wrappedKey: envelope.wrappedKey(), liveTo, marker,
      ticket: liveTo === null ? this.#pending.storeStarted(envelope.keyId) : 0,
    });
    return TO_STORE;
  }

  #forward(sender: Sender, envelope: Envelope, index: number, peer: Peer, flags: number, ttlSeconds: number): number {
    const storable = (flags & SendFlags.STORE) !== 0;
    let taken: number;
    if (!storable && this.#singleTag >= 0) {
      // The SEND has this recipient alone (and came from a session): its answer is written when
      // the peer's comes, with nothing kept here but the tag.
      const session = sender as Session;
      const waiter = session.forwardAnswers ??= new SessionForwards(session, this.#sessionForwardDone);
      taken = peer.forward(sender, envelope, flags, ttlSeconds, waiter, this.#singleTag);
      if (taken === FORWARDED) return TO_PEER_ANSWERED;
    } else {
      const item = new ForwardItem(this.#forwardDone, index, envelope.keyId,
        storable ? envelope.recipientKey() : null, storable ? envelope.wrappedKey() : null);
      taken = peer.forward(sender, envelope, flags, ttlSeconds, item, 0);
      if (taken === FORWARDED) {
        this.#toPeers.push(item);
        return TO_PEER;
      }
    }
    // A miss the peer knew at once: decided here and now, as one that comes later would be.
    const busy = this.#countMiss(taken);
    if (storable) return this.#toMailbox(envelope, index, null, undefined);
    return busy ? Code.RECIPIENT_BUSY : Code.RECIPIENT_OFFLINE;
  }

  /** Counts a forward that missed; true if it was for want of room (BUSY). */
  #countMiss(code: number): boolean {
    const busy = code === ForwardMiss.BUSY;
    if (busy) this.#stats.forwardMisses.busy++;
    else this.#stats.forwardMisses.gone++;
    return busy;
  }

  /**
   * The SEND has recipients whose outcomes settle later: stores its mailbox-bound ones (writing
   * those live that may go live), and answers once every part has settled.
   */
  #awaitOutcomes(
    sender: Sender, seq: number, wantReceipt: boolean, outcomes: number[], envelope: Envelope, storable: boolean, ttlSeconds: number,
    reply: ((outcomes: number[]) => void) | null = null,
  ): void {
    const parts: SendParts = storable ? { storable, storageKey: envelope.storageKey(), body: envelope.body(), ttlSeconds } : NOT_STORABLE;
    const pending = new SendAnswer(sender, seq, wantReceipt, envelope.bodyLength, outcomes);
    pending.reply = reply;
    this.#pending.bytesPending(sender, pending.bytes);
    const toStore = this.#toStore;
    if (toStore.length > 0) {
      const items = toStore.slice();
      toStore.length = 0;
      this.#storeItems(pending, parts, items);
    }
    const toPeers = this.#toPeers;
    if (toPeers.length > 0) {
      for (const item of toPeers) {
        pending.waiting++;
        item.pending = pending;
        item.parts = parts;
      }
      toPeers.length = 0;
    }
  }

  /** Hands a SEND's mailbox-bound recipients to the store as one request. */
  #storeItems(pending: SendAnswer, parts: SendParts, items: StoreItem[]): void {
    pending.waiting++;
    const request: EnqueueRequest = {
      sender: pending.sender.key, storageKey: parts.storageKey, ttlSeconds: parts.ttlSeconds, body: parts.body, recipients: items,
    };
    const accepted = this.#store.accept(request);
    const decided = accepted.decided;
    for (let j = 0; j < items.length; j++) {
      const item = items[j];
      // Views of the socket chunk: not kept until the commit (the engine copied what it needs).
      item.key = item.wrappedKey = RELEASED;
      const target = item.liveTo;
      if (target === null) continue;
      const outcome = accepted.outcomes[j];
      if (!decided) {
        // The engine decides only at commit: through the mailbox, with what follows queued behind it.
        item.liveTo = null;
        item.ticket = this.#pending.storeStarted(item.keyId);
        target.backlog.active = true;
      } else if (outcome.ok) {
        // Only from handleSend (a forward's miss stores nothing live): the envelope and the view
        // still describe this SEND, so it can point at this recipient again.
        const envelope = this.#envelope.pointAt(this.#envelope.buf, this.#view, item.index, item.keyId);
        target.deliverStoredLive(pending.sender.key, envelope, outcome.seq);
      }
    }
    this.#awaitCommit(accepted, pending, items);
  }

  /**
   * Joins the SEND to the group waiting on the same commit: one reaction per commit, not per
   * SEND (an engine gives every request of one commit the same promise). A promise seen again
   * after its group settled starts a new group.
   */
  #awaitCommit(accepted: Accepted, pending: SendAnswer, items: StoreItem[]): void {
    let group = this.#commitGroup;
    if (group === null || this.#commitGroupOf !== accepted.settled) {
      const fresh: CommitWaiter[] = [];
      group = this.#commitGroup = fresh;
      this.#commitGroupOf = accepted.settled;
      accepted.settled.then((committed) => this.#commitSettled(fresh, committed));
    }
    group.push(accepted, pending, items);
  }

  #commitSettled(group: CommitWaiter[], committed: boolean): void {
    if (this.#commitGroup === group) {
      this.#commitGroup = null;
      this.#commitGroupOf = null;
    }
    for (let i = 0; i < group.length; i += 3) {
      this.#storeSettled(group[i] as Accepted, group[i + 1] as SendAnswer, group[i + 2] as StoreItem[], committed);
    }
  }

  #storeSettled(accepted: Accepted, pending: SendAnswer, items: StoreItem[], committed: boolean): void {
    const { sender, outcomes } = pending;
    // Every marker is set before any recipient is drained: a drain releases held frames up to them.
    for (let j = 0; j < items.length; j++) {
      const item = items[j];
      const result = finalOutcome(accepted.outcomes[j], committed);
      if (item.marker) item.marker.seq = result.ok ? result.seq : -1;
      outcomes[item.index] = this.#recordStored(sender, item, result, pending.bytes);
    }
    for (let j = 0; j < items.length; j++) this.#entrySettled(items[j], finalOutcome(accepted.outcomes[j], committed));
    this.#partSettled(pending);
  }

  #forwardSettled(pending: SendAnswer, parts: SendParts, item: ForwardItem, code: number): void {
    if (code >= 0) {
      this.#stats.forwarded++;
      pending.outcomes[item.index] = code;
      this.#partSettled(pending);
      return;
    }
    const busy = this.#countMiss(code);
    if (!this.#storableMiss(pending, parts, item)) {
      pending.outcomes[item.index] = busy ? Code.RECIPIENT_BUSY : Code.RECIPIENT_OFFLINE;
    }
    this.#partSettled(pending);
  }

  /** A single-recipient, non-storable forward has settled: its RESULT as one process would write it. */
  #sessionForwardSettled(session: Session, code: number, tag: number): void {
    if (code >= 0) this.#stats.forwarded++;
    else code = this.#countMiss(code) ? Code.RECIPIENT_BUSY : Code.RECIPIENT_OFFLINE;
    if (!session.closed) answer(session, Math.floor(tag / 2), tag % 2 === 1, code);
  }

  /** A forward of a storable message missed: it goes to the mailbox instead (true), else false. */
  #storableMiss(pending: SendAnswer, parts: SendParts, item: ForwardItem): boolean {
    if (!parts.storable) return false;
    this.#storeItems(pending, parts, [{
      index: item.index, keyId: item.keyId, key: item.key!, wrappedKey: item.wrappedKey!, liveTo: null, marker: undefined,
      ticket: this.#pending.storeStarted(item.keyId),
    }]);
    return true;
  }

  #partSettled(pending: SendAnswer): void {
    if (--pending.waiting > 0) return;
    const sender = pending.sender;
    this.#pending.bytesSettled(sender, pending.bytes);
    if (pending.reply !== null) pending.reply(pending.outcomes);
    // Without a reply the SEND came from a session of this relay.
    else if (!sender.closed) answer(sender as Session, pending.seq, pending.wantReceipt, pending.outcomes.length === 1 ? pending.outcomes[0] : pending.outcomes);
  }

  /**
   * Accounts for one recipient's store outcome; returns its RESULT outcome code: DELIVERED for an
   * entry that also went out live, STORED for one that waits in the mailbox.
   */
  #recordStored(sender: Sender, item: StoreItem, result: EnqueueOutcome, bytes: number): number {
    if (result.ok) {
      if (item.liveTo !== null) {
        this.#stats.storedLive++;
        if (this.#config.logDeliveries) this.#logDelivery(sender.keyText, item.liveTo.keyText, bytes, 'live');
        return Code.DELIVERED;
      }
      this.#stats.stored++;
      if (this.#config.logDeliveries) this.#logDelivery(sender.keyText, item.keyId, bytes, 'stored');
      return Code.STORED;
    }
    this.#stats.refusedStore++;
    return REFUSAL_CODES[result.code] ?? Code.STORE_ERROR;
  }

  /** One recipient entry's store has settled. */
  #entrySettled(item: StoreItem, result: EnqueueOutcome): void {
    const live = item.liveTo !== null;
    if (!live) this.#pending.storeSettled(item.keyId, item.ticket);
    // Whatever just landed in a connected recipient's mailbox (a spill, a message stored while
    // it connected, or one written live to a connection it has since replaced) must reach it now.
    const target = this.sessions.get(item.keyId);
    if (target !== undefined && (!live || (result.ok && target !== item.liveTo))) {
      target.backlog.active = true;
      this.#drain.drain(target);
    } else if (target === undefined && result.ok) {
      // Held by another instance: it reads its mailbox again.
      const holder = this.#peers?.holderOf(item.keyId) ?? null;
      if (holder !== null) holder.mailboxChanged?.(item.keyId);
      else this.#peers?.storedUnheld?.(item.keyId);
    }
  }

  /** Another instance stored something for keyId: its session here (if any) reads its mailbox. */
  mailboxChanged(keyId: string): void {
    const target = this.sessions.get(keyId);
    if (target === undefined || target.closed) return;
    target.backlog.active = true;
    this.#drain.drain(target);
  }

  /**
   * Routes one recipient's envelope that another instance of the relay forwarded (one hop: a key not
   * held here is a miss, never forwarded again). Returns the outcome as #routeOne decides it for a
   * local sender, ForwardMiss.GONE when the key is not here, or ANSWER_LATER when it settles later
   * (a store's commit): then origin.answer(id, code) gives it.
   */
  routeForwarded(origin: ForwardOrigin, envelope: Envelope, flags: number, ttlSeconds: number, id: number): number {
    const target = this.sessions.get(envelope.keyId);
    if (target === undefined || target.closed) return ForwardMiss.GONE;
    this.#stats.forwardedIn++;
    const storable = (flags & SendFlags.STORE) !== 0;
    const outcome = this.#routeOne(origin.sender, envelope, 0, storable, flags, ttlSeconds);
    if (outcome >= 0) return outcome;
    // The sender is kept only now: it is held until the store settles.
    this.#awaitOutcomes(origin.persist(), 0, false, [outcome], envelope, storable, ttlSeconds, (outcomes) => origin.answer(id, outcomes[0]));
    return ANSWER_LATER;
  }

  /** Resolves once the acknowledgements this process took for key are committed (null: none waits). */
  acksCommitted(key: Uint8Array): Promise<unknown> | null {
    return this.#store.acksCommitted?.(key) ?? null;
  }

  /** Writes mailbox entries to a session while its window and budget allow (./mailbox-drain.ts). */
  drain(session: Session): void {
    this.#drain.drain(session);
  }

  handleAck(session: Session, deliveryId: number): void {
    const seqs = session.acknowledge(deliveryId);
    if (seqs.length > 0) {
      this.#store.ack(session.key, seqs).catch((err: Error) => {
        this.#log.error({ event: 'mailbox_ack_failed', err: err.message }, 'mailbox ack failed');
      });
    }
    if (session.backlog.active) this.#drain.drain(session);
  }

  /** The socket drained below its budget: a session behind on its backlog can take more. */
  handleWritable(session: Session): void {
    if (session.backlog.active) this.#drain.drain(session);
  }

  #refuse(sender: Session, seq: number, code: number): SendVerdict {
    this.#stats.refused++;
    writeResultTo(sender, seq, code, NO_OUTCOMES);
    return 'ok';
  }

  #logDelivery(from: string, to: string, bytes: number, how: 'live' | 'stored'): void {
    // keyIds (latin1) are turned into base58 only when delivery logging is on.
    const toText = to.length === KEY_LENGTH ? encodeKey(keyOfId(to)) : to;
    const event = how === 'live' ? 'delivered' : 'stored';
    this.#log.info({ event, from, to: toText, bytes }, how);
    this.onDelivery?.(event, from, toText, bytes);
  }
}

const NO_OUTCOMES: readonly number[] = [];
const NOTHING = (): void => {};
