// Where the router can send one recipient's envelope. Local sessions live in ./router.ts (the
// session map) and the mailbox behind the store contract (../store/mailbox.ts); this file is the
// seam for the third destination, another instance of the same relay (a worker on this host, or
// an instance on another host): presence says which instance holds a key, and forwarding carries
// the envelope one hop. The workers of one host implement it (src/workers/); the cluster will.
import type { Envelope } from './envelope.js';
import type { Sender } from './send-answer.js';
import type { Session } from './session.js';

/** A forward that did not reach the recipient (negative, never a RESULT code). */
export const ForwardMiss = {
  /** The key is no longer held there (it moved or left), or the peer is gone or timed out. */
  GONE: -1,
  /** The peer's queue is over its byte budget. */
  BUSY: -2,
} as const;

/** What Peer.forward answers when it has taken the envelope (its waiter is told the outcome later). */
export const FORWARDED = 0;

/**
 * Told the outcome of one forwarded envelope, exactly once: a RESULT outcome code or a ForwardMiss,
 * with the tag given to Peer.forward (one waiter may stand for many forwards: a session's
 * single-recipient messages share one, the tag saying which SEND).
 */
export interface ForwardWaiter {
  forwardSettled(code: number, tag: number): void;
}

/** The other instances of this relay, as the router needs them. */
export interface Peers {
  /** The instance that holds key now (the newest connection of the key), or null when none does. */
  holderOf(keyId: string): Peer | null;
  /**
   * A receiving session for its key registered here: the others learn that this instance holds
   * it. Returns false when there is no one to tell; else true, and calls known() once every other
   * instance has applied it (or is gone, or a deadline passed): the session's welcome waits for
   * that, so that a message sent to a client once it is in reaches it from anywhere.
   */
  connected?(session: Session, known: () => void): boolean;
  /** That session, still the key's here, has closed. */
  disconnected?(session: Session): void;
  /** Something was stored for keyId while no instance was known to hold it (one may be connecting). */
  storedUnheld?(keyId: string): void;
}

export interface Peer {
  /** Names the peer in logs and metrics. */
  readonly name: string;
  /**
   * Forwards one envelope (copy what is needed before returning, or keep slices: see ./envelope.ts),
   * batched with the others of this turn, never written inline. Returns FORWARDED when it took the
   * envelope: `waiter` is then told the recipient's outcome on the peer (a RESULT outcome code:
   * DELIVERED, STORED or a refusal) or a ForwardMiss, once. A miss known at once (the peer is gone,
   * its queue is full) is returned instead, and the waiter is never called. After a miss the
   * router stores a storable message itself and refuses the others. No promise and no object per
   * envelope: a forward is on the per-message path. A peer whose queue is filling may pause the
   * sender's reading (ReadPause.PEER) until it has drained.
   */
  forward(sender: Sender, envelope: Envelope, flags: number, ttlSeconds: number, waiter: ForwardWaiter, tag: number): number;
  /** Something was stored here for keyId, which the peer holds: it reads that mailbox again. */
  mailboxChanged?(keyId: string): void;
}

/** Where a forwarded envelope came from, as the instance that routes it sees it. */
export interface ForwardOrigin {
  /** The sender, valid for this call only (the router keeps persist()'s for what settles later). */
  readonly sender: Sender;
  persist(): Sender;
  /** The outcome of forward `id`, for an envelope whose outcome came later. */
  answer(id: number, code: number): void;
}

/** routeForwarded's answer when the outcome comes later, through ForwardOrigin.answer. */
export const ANSWER_LATER = -100;
