/**
 * The policy store contract: where the policies, the keys assigned them and the blocked keys are
 * kept. Engine-neutral: nothing here imports an engine. The LMDB engine is src/store/lmdb/policy.ts;
 * a PostgreSQL engine implements the same interface. What a policy is and what applies to a key
 * is src/policy/.
 *
 * Rules every engine follows:
 *  - Every call is asynchronous: an engine may answer from memory (LMDB does) or over a network.
 *    The relay never reads a store on its handshake or message paths: it reads a cache that it
 *    fills from snapshot() and changes through (src/server/policies.ts).
 *  - snapshot() answers with what the store holds after the last write that was ISSUED; writes
 *    resolve once durable.
 *  - A policy is persisted with every field explicit (no field falls back to a code default when
 *    read), so changing a default in the code never changes a stored policy.
 *  - A key is assigned at most one policy, and only one that exists; a policy still assigned to a
 *    key cannot be removed (IN_USE). `default` may be removed: keys without an assignment then get
 *    the relay configuration's defaults again (src/policy/authority.ts).
 *  - The store checks these rules itself, whatever a cache in front of it checked first: a store
 *    that several relays share is the one place that sees every write.
 */
import type { Policy } from '../policy/policy.js';
import type { Assignment } from '../policy/view.js';

export class PolicyStoreError extends Error {
  override name = 'PolicyStoreError';
  constructor(readonly code: 'NOT_FOUND' | 'IN_USE' | 'INVALID' | 'CLOSED', message: string) {
    super(message);
  }
}

/** Everything a policy store holds, each list in order (policies by name, keys by their bytes). */
export interface PolicySnapshot {
  policies: Policy[];
  assignments: Assignment[];
  blocked: Uint8Array[];
}

/** The changes: each resolves once durable, and rejects with a PolicyStoreError when a rule refuses it. */
export interface PolicyWrites {
  /** Creates or replaces the policy with this name (validated: INVALID). */
  setPolicy(policy: Policy): Promise<void>;
  /** NOT_FOUND when there is no such policy, IN_USE while a key is assigned it. */
  removePolicy(name: string): Promise<void>;
  /** NOT_FOUND when there is no such policy. Replaces an earlier assignment. */
  assign(user: Uint8Array, name: string): Promise<void>;
  /** False when the key had no assignment. */
  unassign(user: Uint8Array): Promise<boolean>;
  /** False when the key was already blocked. */
  block(user: Uint8Array): Promise<boolean>;
  /** False when the key was not blocked. */
  unblock(user: Uint8Array): Promise<boolean>;
}

export interface PolicyStore extends PolicyWrites {
  snapshot(): Promise<PolicySnapshot>;
  /**
   * Only a store that several relays share (PostgreSQL): a number that every write, by any relay,
   * changes. A relay polls it and reloads its copy when it moves (src/server/policies.ts).
   */
  version?(): Promise<number>;
  close(): Promise<void>;
}
