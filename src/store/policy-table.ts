// Policies, assignments and blocked keys in memory, with the rules of the policy store contract
// (policy-store.ts): validation, a key assigned only a policy that exists, no removing a policy
// still assigned. An engine may keep its data in one (the LMDB engine does); the relay's cache is
// one (src/server/policies.ts). Each change is checked and applied at once, synchronously.
import { keyIdOf, keyOfId } from '../crypto/key-id.js';
import { validatePolicy, type Policy } from '../policy/policy.js';
import type { Assignment, PolicyView } from '../policy/view.js';
import { PolicyStoreError, type PolicySnapshot } from './policy-store.js';

const KEY_BYTES = 32;

/** INVALID unless a 32-byte key: every policy store checks its keys with this. */
export function checkKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) throw new PolicyStoreError('INVALID', 'a key is 32 bytes');
}

function byId<T>(a: [string, T], b: [string, T]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

export class PolicyTable implements PolicyView {
  readonly #byName = new Map<string, Policy>();
  /** keyId (latin1 of the 32 bytes) → policy name */
  readonly #users = new Map<string, string>();
  readonly #blocked = new Set<string>();

  /** Replaces everything with what a snapshot holds (trusted: it comes from a store). */
  load(snapshot: PolicySnapshot): void {
    this.#byName.clear();
    this.#users.clear();
    this.#blocked.clear();
    for (const policy of snapshot.policies) this.#byName.set(policy.name, policy);
    for (const { user, policy } of snapshot.assignments) this.#users.set(keyIdOf(user), policy);
    for (const key of snapshot.blocked) this.#blocked.add(keyIdOf(key));
  }

  snapshot(): PolicySnapshot {
    return { policies: this.policies(), assignments: this.assignments(), blocked: this.blocked() };
  }

  policy(name: string): Policy | undefined {
    return this.#byName.get(name);
  }

  policies(): Policy[] {
    return [...this.#byName].sort(byId).map(([, policy]) => policy);
  }

  assignment(user: Uint8Array): string | undefined {
    // On every stored message's path (quotas): skip the key conversion when nobody is assigned.
    return this.#users.size === 0 ? undefined : this.#users.get(keyIdOf(user));
  }

  assignments(): Assignment[] {
    return [...this.#users].sort(byId).map(([id, policy]) => ({ user: keyOfId(id), policy }));
  }

  assignedCount(name: string): number {
    let n = 0;
    for (const policy of this.#users.values()) if (policy === name) n++;
    return n;
  }

  isBlocked(user: Uint8Array): boolean {
    return this.#blocked.size > 0 && this.#blocked.has(keyIdOf(user));
  }

  blocked(): Uint8Array[] {
    return [...this.#blocked].sort().map((id) => keyOfId(id));
  }

  /** Creates or replaces a policy; returns it as validated (INVALID when it is not). */
  setPolicy(policy: Policy): Policy {
    const checked = validatePolicy(policy);
    if (!checked.ok) throw new PolicyStoreError('INVALID', `invalid policy: ${checked.problems}`);
    this.#byName.set(checked.policy.name, checked.policy);
    return checked.policy;
  }

  /** NOT_FOUND when there is no such policy, IN_USE while a key is assigned it. */
  removePolicy(name: string): void {
    if (!this.#byName.has(name)) throw new PolicyStoreError('NOT_FOUND', `no policy named ${JSON.stringify(name)}`);
    const users = this.assignedCount(name);
    if (users > 0) throw new PolicyStoreError('IN_USE', `policy ${JSON.stringify(name)} is assigned to ${users} key${users === 1 ? '' : 's'}; assign them another policy first`);
    this.#byName.delete(name);
  }

  /** NOT_FOUND when there is no such policy. Replaces an earlier assignment. */
  assign(user: Uint8Array, name: string): void {
    checkKey(user);
    if (!this.#byName.has(name)) throw new PolicyStoreError('NOT_FOUND', `no policy named ${JSON.stringify(name)}`);
    this.#users.set(keyIdOf(user), name);
  }

  /** False when the key had no assignment. */
  unassign(user: Uint8Array): boolean {
    checkKey(user);
    return this.#users.delete(keyIdOf(user));
  }

  /** False when the key was already blocked. */
  block(user: Uint8Array): boolean {
    checkKey(user);
    const id = keyIdOf(user);
    if (this.#blocked.has(id)) return false;
    this.#blocked.add(id);
    return true;
  }

  /** False when the key was not blocked. */
  unblock(user: Uint8Array): boolean {
    checkKey(user);
    return this.#blocked.delete(keyIdOf(user));
  }
}
