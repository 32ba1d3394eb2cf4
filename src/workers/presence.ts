// Which worker holds which key: the Peers seam (src/server/destinations.ts) as the workers of one
// host implement it. Each worker tells the others the keys of its receiving sessions (a snapshot
// when a link comes up, then each turn's changes) with the connection's epoch.
//
// Epochs fix two old bugs (../shared/reference/scale-out.md §1): a remove names the epoch it
// removes, so a late remove never deletes a newer connection's entry; and the newest connection of
// a key wins across workers: a worker that learns of a newer epoch elsewhere for a key it holds
// closes its session with REPLACED, and one that learns of an older one ignores it (the other
// worker closes its own when our add reaches it). Epochs are the connection's time on this host's
// clock, shared by every worker, with a counter below the millisecond; ties go to the higher index.
import { keyIdOf } from '../crypto/key-id.js';
import { Code, codeMessage, KEY_LENGTH } from '../protocol/constants.js';
import type { Peer, Peers } from '../server/destinations.js';
import type { Session } from '../server/session.js';
import type { RelayStats } from '../server/stats.js';
import type { PeerLink } from './link.js';
import { PRESENCE_PER_FRAME, PRESENCE_RECORD, writeU64 } from './mesh-frames.js';

interface Held {
  link: PeerLink;
  epoch: number;
}

/** How long a store for a key no worker was known to hold is remembered (see storedUnheld). */
const RECENT_STORE_MS = 10_000;
const RECENT_STORE_MAX = 65_536;

export class Presence implements Peers {
  readonly #index: number;
  readonly #local = new Map<string, { session: Session; epoch: number }>();
  readonly #remote = new Map<string, Held>();
  readonly #links = new Set<PeerLink>();
  /** This turn's changes, sent to every link at its end. */
  #changes: Buffer[] = [];
  #scheduled = false;
  #lastEpoch = 0;
  /** Keys stored for while no one here or elsewhere held them, by time: their next holder is told. */
  readonly #storedUnheld = new Map<string, number>();
  stats: RelayStats | null = null;

  /** Sessions connected this turn, told once every link has applied the turn's changes. */
  #known: Array<() => void> = [];
  readonly #knownDeadlineMs: number;

  /** knownDeadlineMs: how long a welcome waits at most for a peer to apply a connection. */
  constructor(index: number, knownDeadlineMs: number) {
    this.#index = index;
    this.#knownDeadlineMs = knownDeadlineMs;
  }

  /** Keys other workers hold now. */
  get remoteCount(): number {
    return this.#remote.size;
  }

  holderOf(keyId: string): Peer | null {
    const held = this.#remote.get(keyId);
    return held !== undefined && held.link.up ? held.link : null;
  }

  connected(session: Session, known: () => void): boolean {
    const epoch = this.#nextEpoch();
    this.#local.set(session.keyId, { session, epoch });
    // Older elsewhere: that worker closes it when it sees this add.
    this.#remote.delete(session.keyId);
    if (this.#links.size === 0) return false;
    this.#change(true, session.key, epoch);
    this.#known.push(known);
    return true;
  }

  disconnected(session: Session): void {
    const local = this.#local.get(session.keyId);
    if (local === undefined || local.session !== session) return;
    this.#local.delete(session.keyId);
    this.#change(false, session.key, local.epoch);
  }

  /** A link came up: it gets everything held here. */
  linkUp(link: PeerLink): void {
    this.#links.add(link);
    const records: Buffer[] = [];
    for (const { session, epoch } of this.#local.values()) records.push(record(true, session.key, epoch));
    // At least one frame, empty if nothing is held: the peer knows it has the whole snapshot once one came.
    if (records.length === 0) link.sendPresence(Buffer.alloc(0));
    for (let i = 0; i < records.length; i += PRESENCE_PER_FRAME) link.sendPresence(Buffer.concat(records.slice(i, i + PRESENCE_PER_FRAME)));
  }

  /** A link is gone (its worker died or restarted): none of its keys is held there any more. */
  linkDown(link: PeerLink): void {
    this.#links.delete(link);
    for (const [keyId, held] of this.#remote) if (held.link === link) this.#remote.delete(keyId);
  }

  peerAdded(link: PeerLink, key: Buffer, epoch: number): void {
    const keyId = keyIdOf(key);
    const local = this.#local.get(keyId);
    if (local !== undefined) {
      if (!newer(epoch, link.index, local.epoch, this.#index)) return;
      this.#local.delete(keyId);
      if (this.stats) this.stats.replaced++;
      local.session.closeConnection(Code.REPLACED, codeMessage(Code.REPLACED));
    }
    const held = this.#remote.get(keyId);
    if (held !== undefined && !newer(epoch, link.index, held.epoch, held.link.index)) return;
    this.#remote.set(keyId, { link, epoch });
    const storedAt = this.#storedUnheld.get(keyId);
    if (storedAt !== undefined) {
      this.#storedUnheld.delete(keyId);
      // It may have read its mailbox before that store committed.
      if (Date.now() - storedAt < RECENT_STORE_MS) link.mailboxChanged(keyId);
    }
  }

  peerRemoved(link: PeerLink, key: Buffer, epoch: number): void {
    const keyId = keyIdOf(key);
    const held = this.#remote.get(keyId);
    if (held !== undefined && held.link === link && held.epoch === epoch) this.#remote.delete(keyId);
  }

  /**
   * Something was stored for keyId while no worker was known to hold it. A session may be
   * connecting on another worker right now, its drain already past: when its add arrives, it is
   * told to read its mailbox again.
   */
  storedUnheld(keyId: string): void {
    const map = this.#storedUnheld;
    map.delete(keyId);
    map.set(keyId, Date.now());
    if (map.size > RECENT_STORE_MAX) {
      const cutoff = Date.now() - RECENT_STORE_MS;
      for (const [id, at] of map) {
        if (at >= cutoff && map.size <= RECENT_STORE_MAX / 2) break;
        map.delete(id);
      }
    }
  }

  #nextEpoch(): number {
    // Time on this host's clock, 1024 a millisecond; never repeats nor goes back within a worker.
    const now = Date.now() * 1024;
    this.#lastEpoch = now > this.#lastEpoch ? now : this.#lastEpoch + 1;
    return this.#lastEpoch;
  }

  #change(add: boolean, key: Buffer, epoch: number): void {
    if (this.#links.size === 0) return;
    this.#changes.push(record(add, key, epoch));
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#flush());
  }

  #flush(): void {
    this.#scheduled = false;
    const changes = this.#changes;
    this.#changes = [];
    for (let i = 0; i < changes.length; i += PRESENCE_PER_FRAME) {
      const frame = Buffer.concat(changes.slice(i, i + PRESENCE_PER_FRAME));
      for (const link of this.#links) link.sendPresence(frame);
    }
    const known = this.#known;
    this.#known = [];
    if (known.length > 0) this.#whenApplied(known);
  }

  /** Calls each of known once every link has applied what was just sent (or is gone), or at the deadline. */
  #whenApplied(known: Array<() => void>): void {
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (!allApplied && this.stats) this.stats.presenceUnconfirmed += known.length;
      for (const k of known) k();
    };
    let allApplied = false;
    const timer = setTimeout(finish, this.#knownDeadlineMs);
    let left = this.#links.size + 1;
    const applied = (): void => {
      if (--left > 0) return;
      allApplied = true;
      finish();
    };
    for (const link of this.#links) link.whenPresenceApplied(applied);
    applied();
  }
}

/** Is (epoch a, index ia) newer than (b, ib)? */
function newer(a: number, ia: number, b: number, ib: number): boolean {
  return a > b || (a === b && ia > ib);
}

function record(add: boolean, key: Buffer, epoch: number): Buffer {
  const r = Buffer.allocUnsafe(PRESENCE_RECORD);
  r[0] = add ? 1 : 0;
  key.copy(r, 1);
  writeU64(r, 1 + KEY_LENGTH, epoch);
  return r;
}
