// What each key may do, as the relay applies it: admission at the handshake, the limits of what a
// session sends, the quota of a recipient's mailbox, admin rights, and pushing a change to the
// sessions already connected. The rules live here; the data lives in a PolicyStore.
import { Code } from '../protocol/constants.js';
import {
  allRights, CAPABILITIES, DEFAULT_POLICY, effectivePolicy, noRights,
  type Capability, type Policy, type PolicySource, type PolicyStore,
} from '../store/policy.js';
import type { Session, SenderLimits } from './session.js';

/** The configuration values policies fall back to and are capped by (read live: a reload changes them). */
export type PolicyDefaults = Omit<Policy, 'name' | 'canConnect' | 'admin'>;

export interface EffectivePolicy {
  policy: Policy;
  source: PolicySource;
  root: boolean;
  blocked: boolean;
}

export interface EnforceResult {
  /** Sessions closed because their key may no longer connect. */
  disconnected: number;
  /** Sessions whose sending limits changed. */
  updated: number;
}

function keyId(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
}

export class PolicyAuthority {
  readonly store: PolicyStore;
  readonly #config: PolicyDefaults;
  readonly #rootId: string | null;

  constructor(store: PolicyStore, config: PolicyDefaults, rootKey: Uint8Array | null) {
    this.store = store;
    this.#config = config;
    this.#rootId = rootKey ? keyId(rootKey) : null;
  }

  get hasRoot(): boolean {
    return this.#rootId !== null;
  }

  isRoot(key: Uint8Array): boolean {
    return this.#rootId !== null && keyId(key) === this.#rootId;
  }

  /** The policy a key gets when no `default` policy is stored: the relay configuration's defaults. */
  builtInDefault(): Policy {
    const c = this.#config;
    return {
      name: DEFAULT_POLICY,
      canConnect: true,
      admin: noRights(),
      maxPayloadBytes: c.maxPayloadBytes,
      maxRecipients: c.maxRecipients,
      maxTtlSeconds: c.maxTtlSeconds,
      mailboxMaxCount: c.mailboxMaxCount,
      mailboxMaxBytes: c.mailboxMaxBytes,
      rateBytesPerSecond: c.rateBytesPerSecond,
      rateBurstBytes: c.rateBurstBytes,
      rateMessagesPerSecond: c.rateMessagesPerSecond,
      rateBurstMessages: c.rateBurstMessages,
    };
  }

  /** The stored policy that applies to key (assigned, else `default`), or null for the built-in default. */
  #stored(key: Uint8Array): Policy | null {
    const store = this.store;
    const name = store.assignment(key);
    if (name !== undefined) {
      const assigned = store.policy(name);
      if (assigned) return assigned;
    }
    return store.policy(DEFAULT_POLICY) ?? null;
  }

  effective(key: Uint8Array): EffectivePolicy {
    const { policy, source } = effectivePolicy(this.store, key, this.builtInDefault());
    return { policy, source, root: this.isRoot(key), blocked: this.store.isBlocked(key) };
  }

  /** The root key may always connect (so an operator cannot lock themselves out); others need canConnect and no block. */
  mayConnect(key: Uint8Array): boolean {
    if (this.isRoot(key)) return true;
    if (this.store.isBlocked(key)) return false;
    return this.#stored(key)?.canConnect ?? true;
  }

  /** The handshake's admission check: OK or NOT_AUTHORIZED. */
  admit(key: Uint8Array): number {
    return this.mayConnect(key) ? Code.OK : Code.NOT_AUTHORIZED;
  }

  /**
   * A key's sending limits: its policy's, with payload size, recipients and TTL capped by the
   * relay's configuration (which sizes the frames the relay reads and the TTL its store takes).
   */
  limitsFor(key: Uint8Array): SenderLimits {
    const c = this.#config;
    const p = this.#stored(key) ?? c;
    return {
      maxPayloadBytes: Math.min(p.maxPayloadBytes, c.maxPayloadBytes),
      maxRecipients: Math.min(p.maxRecipients, c.maxRecipients),
      maxTtlSeconds: Math.min(p.maxTtlSeconds, c.maxTtlSeconds),
      rateBytesPerSecond: p.rateBytesPerSecond,
      rateBurstBytes: p.rateBurstBytes,
      rateMessagesPerSecond: p.rateMessagesPerSecond,
      rateBurstMessages: p.rateBurstMessages,
    };
  }

  /** The mailbox quota of a recipient, from its policy (the store's hook, on the enqueue path). */
  quotaFor(recipient: Uint8Array): { maxCount: number; maxBytes: number } {
    const p = this.#stored(recipient) ?? this.#config;
    return { maxCount: p.mailboxMaxCount, maxBytes: p.mailboxMaxBytes };
  }

  /** The admin rights of a key: all of them for root, else its policy's. */
  rights(key: Uint8Array): Record<Capability, boolean> {
    if (this.isRoot(key)) return allRights();
    return { ...(this.#stored(key)?.admin ?? noRights()) };
  }

  can(key: Uint8Array, capability: Capability): boolean {
    return this.isRoot(key) || this.#stored(key)?.admin[capability] === true;
  }

  /** True when the key holds every right that `rights` grants (no one hands out what they lack). */
  holdsAll(key: Uint8Array, rights: Record<Capability, boolean>): boolean {
    if (this.isRoot(key)) return true;
    const own = this.rights(key);
    return CAPABILITIES.every((c) => !rights[c] || own[c]);
  }

  /**
   * Applies the current policies to connected sessions: a key that may no longer connect is
   * closed with NOT_AUTHORIZED; changed limits apply from the session's next frame.
   */
  enforce(sessions: Iterable<Session>, only?: Uint8Array, onDisconnect?: (session: Session) => void): EnforceResult {
    const onlyId = only ? keyId(only) : null;
    let disconnected = 0;
    let updated = 0;
    for (const session of [...sessions]) {
      if (session.closed || (onlyId !== null && session.keyId !== onlyId)) continue;
      if (!this.mayConnect(session.key)) {
        session.closeConnection(Code.NOT_AUTHORIZED, 'no longer authorized to connect');
        disconnected++;
        onDisconnect?.(session);
        continue;
      }
      const next = this.limitsFor(session.key);
      if (!sameLimits(session.limits, next)) {
        session.limits = next;
        updated++;
      }
    }
    return { disconnected, updated };
  }
}

export function sameLimits(a: SenderLimits, b: SenderLimits): boolean {
  for (const k of Object.keys(b) as (keyof SenderLimits)[]) if (a[k] !== b[k]) return false;
  return true;
}
