// The effective policy: what applies to a key, from the policies as they stand. Admission, sending
// limits, mailbox quota and admin rights, for the relay (src/server/) and the admin commands
// (src/admin/) alike. It decides; it keeps nothing but the root key and reads the rest from a view.
import { keyIdOf } from '../crypto/key-id.js';
import type { RecipientQuota } from '../store/mailbox.js';
import { allRights, CAPABILITIES, noRights, type Capability, type Rights } from './capabilities.js';
import { builtInPolicy, mailboxQuota, senderLimits, type PolicyDefaults, type SenderLimits } from './limits.js';
import { DEFAULT_POLICY, type Policy } from './policy.js';
import type { PolicyView } from './view.js';

export type PolicySource = 'assigned' | 'default' | 'built-in';

/**
 * The policy that applies to a key: its assigned policy; else the stored `default`; else
 * `builtIn` (the relay configuration's defaults).
 */
export function effectivePolicy(view: PolicyView, user: Uint8Array, builtIn: Policy): { policy: Policy; source: PolicySource } {
  const stored = storedPolicy(view, user);
  if (stored === null) return { policy: builtIn, source: 'built-in' };
  return { policy: stored, source: stored.name === view.assignment(user) ? 'assigned' : 'default' };
}

/** The stored policy that applies to key (assigned, else `default`), or null for the built-in default. */
function storedPolicy(view: PolicyView, key: Uint8Array): Policy | null {
  const name = view.assignment(key);
  if (name !== undefined) {
    const assigned = view.policy(name);
    if (assigned) return assigned;
  }
  return view.policy(DEFAULT_POLICY) ?? null;
}

export interface EffectivePolicy {
  policy: Policy;
  source: PolicySource;
  root: boolean;
  blocked: boolean;
}

export class PolicyAuthority {
  readonly #view: PolicyView;
  readonly #config: PolicyDefaults;
  readonly #rootId: string | null;

  /** config is read live: a reload that changes it changes the defaults and the caps at once. */
  constructor(view: PolicyView, config: PolicyDefaults, rootKey: Uint8Array | null) {
    this.#view = view;
    this.#config = config;
    this.#rootId = rootKey ? keyIdOf(rootKey) : null;
  }

  isRoot(key: Uint8Array): boolean {
    return this.#rootId !== null && keyIdOf(key) === this.#rootId;
  }

  /** The policy a key gets when no `default` policy is stored: the relay configuration's defaults. */
  builtInDefault(): Policy {
    return builtInPolicy(this.#config);
  }

  effective(key: Uint8Array): EffectivePolicy {
    const { policy, source } = effectivePolicy(this.#view, key, this.builtInDefault());
    return { policy, source, root: this.isRoot(key), blocked: this.#view.isBlocked(key) };
  }

  /** The root key may always connect (so an operator cannot lock themselves out); others need canConnect and no block. */
  mayConnect(key: Uint8Array): boolean {
    if (this.isRoot(key)) return true;
    if (this.#view.isBlocked(key)) return false;
    return storedPolicy(this.#view, key)?.canConnect ?? true;
  }

  /** A key's sending limits (at the handshake, and when policies change). */
  limitsFor(key: Uint8Array): SenderLimits {
    return senderLimits(storedPolicy(this.#view, key) ?? this.#config, this.#config);
  }

  /** The mailbox quota of a recipient, from its policy (the store's hook, on the path of every stored message). */
  quotaFor(recipient: Uint8Array): RecipientQuota {
    return mailboxQuota(storedPolicy(this.#view, recipient) ?? this.#config);
  }

  /** The admin rights of a key: all of them for root, else its policy's. */
  rights(key: Uint8Array): Rights {
    if (this.isRoot(key)) return allRights();
    return { ...(storedPolicy(this.#view, key)?.admin ?? noRights()) };
  }

  can(key: Uint8Array, capability: Capability): boolean {
    return this.isRoot(key) || storedPolicy(this.#view, key)?.admin[capability] === true;
  }

  /** The rights that `rights` grants and the key does not hold: no one hands out what they lack. */
  lacking(key: Uint8Array, rights: Rights): Capability[] {
    if (this.isRoot(key)) return [];
    const own = this.rights(key);
    return CAPABILITIES.filter((c) => rights[c] && !own[c]);
  }

  /** True when the key holds every right that `rights` grants. */
  holdsAll(key: Uint8Array, rights: Rights): boolean {
    return this.lacking(key, rights).length === 0;
  }
}
