// What the running relay does with policies: it keeps them in memory for its handshake and
// message paths (PolicyCache), answers the handshake's admission check, and applies a change to
// the sessions already connected. What applies to a key is decided in src/policy/; where policies
// are kept is a PolicyStore (src/store/policy-store.ts).
import { keyIdOf } from '../crypto/key-id.js';
import type { PolicyAuthority } from '../policy/authority.js';
import type { Policy } from '../policy/policy.js';
import type { Assignment, PolicyView } from '../policy/view.js';
import { Code } from '../protocol/constants.js';
import { PolicyStoreError, type PolicyStore, type PolicyWrites } from '../store/policy-store.js';
import { PolicyTable } from '../store/policy-table.js';
import type { HostedPolicies } from '../store/remote/host.js';
import type { Session, SenderLimits } from './session.js';

/**
 * The relay's copy of its policy store, read synchronously (at every handshake, for every stored
 * message) and changed through: a change is checked and applied here at once, so the relay acts
 * on it from the next frame, and resolves when the store has it durably. A change the store
 * refuses or fails reloads this copy from the store. load() fills it before the relay serves.
 */
export class PolicyCache implements PolicyView, PolicyWrites {
  readonly #store: PolicyStore;
  readonly #table = new PolicyTable();
  #closed = false;
  /** The shared store's version as of the last load (null: the store is this relay's alone). */
  #version: number | null = null;

  constructor(store: PolicyStore) {
    this.#store = store;
  }

  /** Whether other relays can change the store (then refresh() is worth polling). */
  get shared(): boolean {
    return this.#store.version !== undefined;
  }

  /** Reads everything from the store again. */
  async load(): Promise<void> {
    // the version first: a write that lands between the two reads is seen again at the next refresh
    const version = this.#store.version ? await this.#store.version() : null;
    this.#table.load(await this.#store.snapshot());
    this.#version = version;
  }

  /** Reloads when another relay has changed a shared store since the last load; true if it did. */
  async refresh(): Promise<boolean> {
    if (this.#closed || !this.#store.version) return false;
    if ((await this.#store.version()) === this.#version) return false;
    await this.load();
    return true;
  }

  policy(name: string): Policy | undefined {
    return this.#table.policy(name);
  }

  policies(): Policy[] {
    return this.#table.policies();
  }

  assignment(user: Uint8Array): string | undefined {
    return this.#table.assignment(user);
  }

  assignments(): Assignment[] {
    return this.#table.assignments();
  }

  assignedCount(name: string): number {
    return this.#table.assignedCount(name);
  }

  isBlocked(user: Uint8Array): boolean {
    return this.#table.isBlocked(user);
  }

  blocked(): Uint8Array[] {
    return this.#table.blocked();
  }

  async setPolicy(policy: Policy): Promise<void> {
    this.#live();
    this.#table.setPolicy(policy);
    await this.#written(this.#store.setPolicy(policy));
  }

  async removePolicy(name: string): Promise<void> {
    this.#live();
    this.#table.removePolicy(name);
    await this.#written(this.#store.removePolicy(name));
  }

  async assign(user: Uint8Array, name: string): Promise<void> {
    this.#live();
    this.#table.assign(user, name);
    await this.#written(this.#store.assign(user, name));
  }

  // The store's answer, not this copy's: a store shared with other relays may know better.
  async unassign(user: Uint8Array): Promise<boolean> {
    this.#live();
    this.#table.unassign(user);
    return this.#written(this.#store.unassign(user));
  }

  async block(user: Uint8Array): Promise<boolean> {
    this.#live();
    this.#table.block(user);
    return this.#written(this.#store.block(user));
  }

  async unblock(user: Uint8Array): Promise<boolean> {
    this.#live();
    this.#table.unblock(user);
    return this.#written(this.#store.unblock(user));
  }

  /** Closes the store; changes are refused from now on (reads still answer). */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#store.close();
  }

  #live(): void {
    if (this.#closed) throw new PolicyStoreError('CLOSED', 'policy store is closed');
  }

  async #written<T>(write: Promise<T>): Promise<T> {
    try {
      return await write;
    } catch (err) {
      if (!this.#closed) {
        try { await this.load(); } catch { /* keep this copy; the store reports its own problem */ }
      }
      throw err;
    }
  }
}

/** The handshake's admission check: OK, or NOT_AUTHORIZED for a key that may not connect. */
export function admissionCode(policies: PolicyAuthority, key: Uint8Array): number {
  return policies.mayConnect(key) ? Code.OK : Code.NOT_AUTHORIZED;
}

export interface EnforceResult {
  /** Sessions closed because their key may no longer connect. */
  disconnected: number;
  /** Sessions whose sending limits changed. */
  updated: number;
}

/**
 * Applies the current policies to connected sessions (all of them, or only's): a key that may no
 * longer connect is closed with NOT_AUTHORIZED; changed limits apply from the session's next frame.
 */
export function enforcePolicies(policies: PolicyAuthority, sessions: Iterable<Session>, only?: Uint8Array,
  onDisconnect?: (session: Session) => void): EnforceResult {
  const onlyId = only ? keyIdOf(only) : null;
  let disconnected = 0;
  let updated = 0;
  for (const session of [...sessions]) {
    if (session.closed || (onlyId !== null && session.keyId !== onlyId)) continue;
    if (!policies.mayConnect(session.key)) {
      session.closeConnection(Code.NOT_AUTHORIZED, 'no longer authorized to connect');
      disconnected++;
      onDisconnect?.(session);
      continue;
    }
    const next = policies.limitsFor(session.key);
    if (!sameLimits(session.limits, next)) {
      session.limits = next;
      updated++;
    }
  }
  return { disconnected, updated };
}

export function sameLimits(a: SenderLimits, b: SenderLimits): boolean {
  for (const k of Object.keys(b) as (keyof SenderLimits)[]) if (a[k] !== b[k]) return false;
  return true;
}

/** The cache as a store host serves it to the workers (src/store/remote/host.ts): writes go through it. */
export function hostedPolicies(cache: PolicyCache): HostedPolicies {
  return {
    snapshot: () => ({ policies: cache.policies(), assignments: cache.assignments(), blocked: cache.blocked() }),
    setPolicy: (policy) => cache.setPolicy(policy),
    removePolicy: (name) => cache.removePolicy(name),
    assign: (user, name) => cache.assign(user, name),
    unassign: (user) => cache.unassign(user),
    block: (user) => cache.block(user),
    unblock: (user) => cache.unblock(user),
  };
}
