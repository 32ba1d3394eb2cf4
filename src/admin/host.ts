// What the admin commands need from the relay, declared here so that admin/ never imports the
// relay (src/server/): the relay implements these and hands them to the AdminEngine.
import type { Logger } from 'pino';
import type { PolicyAuthority } from '../policy/authority.js';
import type { PolicyView } from '../policy/view.js';
import type { MailboxStore } from '../store/mailbox.js';
import type { PolicyWrites } from '../store/policy-store.js';

/** A live connection, as `connections` lists it. */
export interface AdminSession {
  readonly keyText: string;
  /** When it authenticated (ms since the epoch). */
  readonly connectedAt: number;
  readonly messagesIn: number;
  readonly messagesOut: number;
  /** The worker it is on, in a relay of several workers. */
  readonly worker?: number;
  /** The instance it is on (its id, hex), in a cluster of hosts. */
  readonly instance?: string;
}

/** What changed when the current policies were applied to connected sessions. */
export interface PolicyEnforcement {
  /** Sessions closed because their key may no longer connect. */
  disconnected: number;
  /** Sessions whose sending limits changed. */
  updated: number;
}

/**
 * The relay's live connections, receiving and send-only alike. A relay of several workers answers
 * for all of them, after asking the others (so an answer may come later).
 */
export interface AdminConnections {
  /** Every live (not closed) session. */
  live(): AdminSession[] | Promise<AdminSession[]>;
  /** Whether the key has a live session. */
  isConnected(key: Uint8Array): boolean | Promise<boolean>;
  /** Closes every session of the key with KICKED; returns how many there were. */
  kick(key: Uint8Array): number | Promise<number>;
  /** Applies the current policies to connected sessions (all, or one key's): see PolicyEnforcement. */
  enforcePolicies(only?: Uint8Array): PolicyEnforcement;
}

/** The policies as the relay applies them: read at once, changed so that the relay acts on a change at once. */
export type AdminPolicyStore = PolicyView & PolicyWrites;

/** The audit trail (the relay's event log): one line per admin request. */
export interface AuditLog {
  write(event: 'admin', fields: Record<string, string | string[]>): void;
}

export interface AdminHost {
  /** What applies to a key: admission, limits, quota, rights. Reads `policyStore`. */
  readonly policies: PolicyAuthority;
  readonly policyStore: AdminPolicyStore;
  /** Stored messages: usage and removal. */
  readonly store: Pick<MailboxStore, 'totals' | 'top' | 'removeRecipient' | 'removeOlderThan'>;
  readonly connections: AdminConnections;
  /** A snapshot of the relay's counters and gauges, for `stats`. */
  stats(): Promise<object>;
  readonly events?: AuditLog | null;
  readonly log?: Pick<Logger, 'error'>;
}
