// The relay's connected sessions as actions on the whole relay see them: the live ones, one key's,
// kicking a key, and applying a policy change to everyone connected. The admin commands use it
// (it is their AdminConnections, src/admin/host.ts); each session closed here is counted and logged.
import { keyIdOf } from '../crypto/key-id.js';
import type { PolicyAuthority } from '../policy/authority.js';
import { Code, codeMessage } from '../protocol/constants.js';
import type { EventLog } from './events.js';
import { enforcePolicies, type EnforceResult } from './policies.js';
import type { Session } from './session.js';
import type { RelayStats } from './stats.js';

/** Where the sessions are: the router's maps (a key's receiving session, and its send-only ones). */
export interface SessionDirectory {
  readonly sessions: ReadonlyMap<string, Session>;
  readonly sendOnly: ReadonlyMap<string, ReadonlySet<Session>>;
  allSessions(): Iterable<Session>;
}

export class ConnectedSessions {
  readonly #directory: SessionDirectory;
  readonly #policies: PolicyAuthority;
  readonly #stats: RelayStats;
  readonly #events: EventLog | null;

  constructor(directory: SessionDirectory, policies: PolicyAuthority, stats: RelayStats, events: EventLog | null) {
    this.#directory = directory;
    this.#policies = policies;
    this.#stats = stats;
    this.#events = events;
  }

  /** Every session not closed, receiving and send-only. */
  live(): Session[] {
    return [...this.#directory.allSessions()].filter((s) => !s.closed);
  }

  /** The live sessions of one key: the receiving one first. */
  ofKey(key: Uint8Array): Session[] {
    const id = keyIdOf(key);
    const receiving = this.#directory.sessions.get(id);
    const out = receiving && !receiving.closed ? [receiving] : [];
    for (const s of this.#directory.sendOnly.get(id) ?? []) if (!s.closed) out.push(s);
    return out;
  }

  isConnected(key: Uint8Array): boolean {
    return this.ofKey(key).length > 0;
  }

  /** Closes every session of the key with KICKED; returns how many there were. */
  kick(key: Uint8Array): number {
    const sessions = this.ofKey(key);
    for (const session of sessions) {
      session.closeConnection(Code.KICKED, codeMessage(Code.KICKED));
      this.#stats.policyDisconnects.kicked++;
      this.#events?.write('disconnected', { key: session.keyText, reason: 'kicked' });
    }
    return sessions.length;
  }

  /** Applies the current policies to every connected session, or only to one key's. */
  enforcePolicies(only?: Uint8Array): EnforceResult {
    return enforcePolicies(this.#policies, this.#directory.allSessions(), only, (session) => {
      this.#stats.policyDisconnects.notAuthorized++;
      this.#events?.write('disconnected', { key: session.keyText, reason: 'not_authorized' });
    });
  }
}
