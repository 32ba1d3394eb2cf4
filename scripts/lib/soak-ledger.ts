// The soak's books: every message sent, each recipient's receipt outcome, every copy received
// and on which connection, and whether that connection acknowledged it before it ended. From
// them: is every storable message the relay answered for (STORED or DELIVERED) accounted for,
// and is every duplicate explained by a connection that ended before acknowledging it?
import { Code } from '../../src/protocol/constants.js';

/** One connection of one identity, from connect to close. */
export interface Epoch {
  /** Highest delivery id acknowledged on this connection (ACKs are cumulative). */
  acked: number;
  /**
   * Highest delivery id the relay has surely read an ACK for: the ACK went out before a SEND
   * whose receipt came back on this connection (the relay reads a connection's frames in order).
   */
  confirmed: number;
  /** The relay (not the client) ended it: acks sent just before may not have been read. */
  endedByRelay: boolean;
  closed: boolean;
  /** Evidence only (no rule reads them): the instance it connected to (1..N; 0 for a single relay), when it opened and closed. */
  instance: number;
  /** Evidence only: the part of `confirmed` that a storable SEND's receipt confirmed (whose recipients may have been stored on another instance). */
  confirmedStored: number;
  openedAt: number;
  closedAt: number | null;
}

export function newEpoch(instance = 0): Epoch {
  return { acked: 0, confirmed: 0, endedByRelay: false, closed: false, instance, confirmedStored: 0, openedAt: Date.now(), closedAt: null };
}

interface Copy {
  epoch: Epoch;
  deliveryId: number;
  /** Evidence only: when it arrived, and whether the relay flagged it FROM_MAILBOX. */
  at: number;
  fromMailbox: boolean;
}

/** One message as one recipient sees it. */
interface Entry {
  id: string;
  sender: number;
  recipient: number;
  /** Order of sending, over all senders (each sender sends one message at a time). */
  order: number;
  storable: boolean;
  storageKey: string | null;
  outcome: number | null;
  copies: Copy[];
  /** With a storage key: every entry of the same sender, recipient and key, in sending order. */
  group: Entry[] | null;
  /** Evidence only: the instance the sender was connected to (0 for a single relay), the body's length, when it was sent. */
  via: number;
  bytes: number;
  sentAt: number;
}

export interface LedgerReport {
  messages: number;
  /** Storable (message, recipient) pairs answered STORED or DELIVERED. */
  storableAcknowledged: number;
  storableReceived: number;
  /** Not received, but a later acknowledged message with the same storage key replaced it. */
  storableReplaced: number;
  /** Acknowledged, not received, not replaced: lost. */
  storableMissing: number;
  /** Of those, ones with a storage key of which an older message did arrive (a stale copy won). */
  storableMissingStale: number;
  missingSamples: string[];
  liveSent: number;
  liveDelivered: number;
  liveReceived: number;
  refused: number;
  unanswered: number;
  /** Extra copies after a connection that ended before acknowledging the first: allowed. */
  duplicatesAllowed: number;
  /** Extra copies after an ACK the relay had not confirmed when the connection closed (it may never have arrived). */
  duplicatesAckUnconfirmed: number;
  /** Extra copies on the same connection, or after one that had acknowledged it. */
  duplicatesUnexplained: number;
  duplicateSamples: string[];
  /** Copies of messages whose receipt refused that recipient, and copies of messages never sent. */
  receivedRefused: number;
  receivedUnknown: number;
}

const ACKNOWLEDGED = new Set<number>([Code.STORED, Code.DELIVERED]);

export class Ledger {
  readonly #entries = new Map<string, Entry>(); // `${id}>${recipient}`
  readonly #groups = new Map<string, Entry[]>(); // `${sender}>${recipient}>${storageKey}`
  readonly #messages = new Set<string>();
  #order = 0;
  #acknowledged = 0;
  #unanswered = 0;
  #unknown = 0;

  /** A message about to be sent; returns its id (to put in the body, before `padding` bytes). */
  sent(sender: number, recipients: number[], storable: boolean, storageKey: string | null, via = 0, padding = 0): string {
    const order = this.#order++;
    const id = `${sender}.${order}`;
    // The body is `${id};` and the padding.
    const bytes = id.length + 1 + padding;
    this.#messages.add(id);
    for (const recipient of recipients) {
      let group: Entry[] | null = null;
      if (storageKey !== null) {
        const k = `${sender}>${recipient}>${storageKey}`;
        group = this.#groups.get(k) ?? [];
        this.#groups.set(k, group);
      }
      const entry: Entry = { id, sender, recipient, order, storable, storageKey, outcome: null, copies: [], group, via, bytes, sentAt: Date.now() };
      group?.push(entry);
      this.#entries.set(`${id}>${recipient}`, entry);
    }
    return id;
  }

  /** Cheap running totals, for progress lines. */
  get counts(): { messages: number; storableAcknowledged: number } {
    return { messages: this.#messages.size, storableAcknowledged: this.#acknowledged };
  }

  /** The receipt: one outcome per recipient, in order (none for a whole-message refusal). */
  answered(id: string, recipients: number[], outcomes: number[], code: number): void {
    recipients.forEach((r, i) => {
      const entry = this.#entries.get(`${id}>${r}`)!;
      entry.outcome = outcomes[i] ?? code;
      if (entry.storable && ACKNOWLEDGED.has(entry.outcome)) this.#acknowledged++;
    });
  }

  unanswered(): void {
    this.#unanswered++;
  }

  received(id: string, recipient: number, epoch: Epoch, deliveryId: number, fromMailbox = false): void {
    const entry = this.#entries.get(`${id}>${recipient}`);
    if (entry === undefined) this.#unknown++;
    else entry.copies.push({ epoch, deliveryId, at: Date.now(), fromMailbox });
  }

  /** Storable (message, recipient) pairs acknowledged and not received yet, by recipient. */
  outstanding(): Map<number, number> {
    const out = new Map<number, number>();
    for (const e of this.#required()) if (e.copies.length === 0) out.set(e.recipient, (out.get(e.recipient) ?? 0) + 1);
    return out;
  }

  /** Acknowledged storable entries that must arrive: all but those a later one with the same storage key replaced. */
  #required(): Set<Entry> {
    const latest = new Map<Entry[], number>();
    for (const group of this.#groups.values()) {
      let last = -1;
      for (const o of group) if (isAcknowledged(o)) last = o.order;
      latest.set(group, last);
    }
    const out = new Set<Entry>();
    for (const e of this.#entries.values()) {
      if (e.storable && isAcknowledged(e) && (e.group === null || e.copies.length > 0 || latest.get(e.group) === e.order)) out.add(e);
    }
    return out;
  }

  #describeMissing(key: string, e: Entry): string {
    let text = `message ${key.replace('>', ' to recipient ')} (sender.order), outcome ${e.outcome === Code.STORED ? 'STORED' : 'DELIVERED'}${e.via > 0 ? `, sent through instance ${e.via}` : ''}`;
    if (e.storageKey === null) return text;
    text += `, storage key "${e.storageKey}"`;
    const older = this.#olderArrived(e);
    return older.length > 0 ? `${text}; older messages with that storage key did arrive: ${older.slice(-3).join(', ')}` : text;
  }

  /** Ids of older messages with e's sender, recipient and storage key that arrived. */
  #olderArrived(e: Entry): string[] {
    return (e.group ?? []).filter((o) => o.order < e.order && o.copies.length > 0).map((o) => o.id);
  }

  report(): LedgerReport {
    const r: LedgerReport = {
      messages: this.#messages.size, storableAcknowledged: 0, storableReceived: 0, storableReplaced: 0, storableMissing: 0, storableMissingStale: 0, missingSamples: [],
      liveSent: 0, liveDelivered: 0, liveReceived: 0, refused: 0, unanswered: this.#unanswered,
      duplicatesAllowed: 0, duplicatesAckUnconfirmed: 0, duplicatesUnexplained: 0, duplicateSamples: [], receivedRefused: 0, receivedUnknown: this.#unknown,
    };
    const required = this.#required();
    for (const [key, e] of this.#entries) {
      const acknowledged = isAcknowledged(e);
      if (e.outcome !== null && !acknowledged) r.refused++;
      if (e.outcome !== null && !acknowledged && e.copies.length > 0) r.receivedRefused++;
      if (e.storable && acknowledged) {
        r.storableAcknowledged++;
        if (e.copies.length > 0) r.storableReceived++;
        else if (required.has(e)) {
          r.storableMissing++;
          if (this.#olderArrived(e).length > 0) r.storableMissingStale++;
          if (r.missingSamples.length < 10) r.missingSamples.push(this.#describeMissing(key, e));
        } else r.storableReplaced++;
      }
      if (!e.storable) {
        r.liveSent++;
        if (e.outcome === Code.DELIVERED) r.liveDelivered++;
        if (e.copies.length > 0) r.liveReceived++;
      }
      for (let i = 1; i < e.copies.length; i++) {
        const verdict = classifyDuplicate(e.copies[i - 1], e.copies[i]);
        if (verdict === 'allowed') r.duplicatesAllowed++;
        else if (verdict === 'ack-unconfirmed') r.duplicatesAckUnconfirmed++;
        else {
          r.duplicatesUnexplained++;
          if (r.duplicateSamples.length < 10) r.duplicateSamples.push(`${key}: copy ${i + 1} ${verdict}; ${describeCopies(e, e.copies[i - 1], e.copies[i])}`);
        }
      }
    }
    return r;
  }
}

/** Why a message came again after copy `before`: allowed, after an ACK that may not have arrived, or what is wrong. */
function isAcknowledged(e: Entry): boolean {
  return e.outcome !== null && ACKNOWLEDGED.has(e.outcome);
}

/** Where and when the message went and the two copies came: which instance, which connection, how far apart (the evidence for a report). */
function describeCopies(e: Entry, before: Copy, after: Copy): string {
  const where = (c: Copy) => (c.epoch.instance > 0 ? `instance ${c.epoch.instance}, ` : '');
  const how = (c: Copy) => `delivery ${c.deliveryId}${c.fromMailbox ? ' FROM_MAILBOX' : ''}, ${c.at - e.sentAt} ms after the SEND`;
  const sent = `${e.storable ? 'storable' : 'live'}${e.storageKey === null ? '' : ` (storage key "${e.storageKey}")`}, ${e.bytes}-byte body, sent${e.via > 0 ? ` through instance ${e.via}` : ''}, outcome ${e.outcome}`;
  const b = before.epoch;
  const closed = before.epoch === after.epoch ? 'the same connection'
    : `acked ${b.acked}, confirmed ${b.confirmed} (${b.confirmedStored} by a storable receipt)${b.endedByRelay ? ', ended by the relay' : ''}, ${b.closedAt === null ? 'still open' : `closed ${after.epoch.openedAt - b.closedAt} ms before the next one opened`}`;
  return `${sent}; earlier copy: ${where(before)}${how(before)} (${closed}); this copy: ${where(after)}${how(after)}`;
}

function classifyDuplicate(before: Copy, after: Copy): 'allowed' | 'ack-unconfirmed' | string {
  const epoch = before.epoch;
  if (epoch === after.epoch) return 'on the same connection';
  if (epoch.endedByRelay || epoch.acked < before.deliveryId) return 'allowed';
  if (epoch.confirmed < before.deliveryId) return 'ack-unconfirmed';
  return `after a connection whose ACK up to ${epoch.confirmed} the relay had read (a later SEND on it got its receipt)`;
}
