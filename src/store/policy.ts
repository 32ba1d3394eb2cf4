/**
 * Policies: what a key may do on the relay (connect, administer), the limits on what it sends and
 * the quota of its mailbox; which keys are assigned which policy; and which keys are blocked.
 * Engine-neutral: nothing here imports an engine. Implementation: src/store/lmdb/policy.ts.
 *
 * Rules every implementation follows:
 *  - Reads are synchronous and answer from what the store holds after the last write that was
 *    ISSUED (the relay reads on its handshake and enqueue paths); writes resolve once durable.
 *  - A policy is persisted with every field explicit (no field falls back to a code default when
 *    read), so changing a default in the code never changes a stored policy.
 *  - A key is assigned at most one policy, and only one that exists; a policy still assigned to a
 *    key cannot be removed (IN_USE). `default` may be removed: keys without an assignment then get
 *    the relay configuration's defaults again (see effectivePolicy).
 */
import { z } from 'zod';

/** Administrative rights, each granted separately. */
export const CAPABILITIES = ['editPolicies', 'assignUsers', 'readUsage', 'manageConnections', 'manageMessages'] as const;
export type Capability = (typeof CAPABILITIES)[number];

/** The policy that applies to every key not assigned another one. */
export const DEFAULT_POLICY = 'default';

export const POLICY_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export interface Policy {
  name: string;
  /** May authenticate at all (blocked keys may not, whatever their policy). */
  canConnect: boolean;
  admin: Record<Capability, boolean>;
  /** Largest message body this key may send (capped by the relay's maxPayloadBytes). */
  maxPayloadBytes: number;
  /** Most recipients per message (capped by the relay's maxRecipients). */
  maxRecipients: number;
  /** Longest TTL this key may ask for (capped by the relay's maxTtlSeconds). */
  maxTtlSeconds: number;
  /** Quota of this key's own mailbox (as a recipient): messages and bytes. */
  mailboxMaxCount: number;
  mailboxMaxBytes: number;
  /** Inbound rate limits of this key's connection; 0 means unlimited. */
  rateBytesPerSecond: number;
  rateBurstBytes: number;
  rateMessagesPerSecond: number;
  rateBurstMessages: number;
}

export const LIMIT_FIELDS = [
  'maxPayloadBytes', 'maxRecipients', 'maxTtlSeconds', 'mailboxMaxCount', 'mailboxMaxBytes',
  'rateBytesPerSecond', 'rateBurstBytes', 'rateMessagesPerSecond', 'rateBurstMessages',
] as const satisfies readonly (keyof Policy)[];
export type LimitField = (typeof LIMIT_FIELDS)[number];

const count = (min: number) => z.number().int().min(min).max(Number.MAX_SAFE_INTEGER);

export const adminRightsSchema = z.object(
  Object.fromEntries(CAPABILITIES.map((c) => [c, z.boolean()])) as Record<Capability, z.ZodBoolean>,
).strict();

/** A complete policy: every field present. Used for what is stored and for `--file` input. */
export const policySchema = z.object({
  name: z.string().regex(POLICY_NAME, 'a policy name is 1 to 64 letters, digits, _ . or -, starting with a letter or digit'),
  canConnect: z.boolean(),
  admin: adminRightsSchema,
  maxPayloadBytes: count(1),
  maxRecipients: count(1).max(255),
  maxTtlSeconds: count(1),
  mailboxMaxCount: count(0),
  mailboxMaxBytes: count(0),
  rateBytesPerSecond: count(0),
  rateBurstBytes: count(0),
  rateMessagesPerSecond: count(0),
  rateBurstMessages: count(0),
}).strict();

/** A change to a policy: any subset of the fields, admin rights one by one. */
export const policyPatchSchema = policySchema.omit({ name: true, admin: true }).partial().extend({
  admin: adminRightsSchema.partial().optional(),
}).strict();
export type PolicyPatch = z.infer<typeof policyPatchSchema>;

/** Applies a patch to a complete policy; the result is complete and validated. */
export function applyPatch(base: Policy, name: string, patch: PolicyPatch): Policy {
  const { admin, ...limits } = patch;
  return policySchema.parse({ ...base, ...limits, name, admin: { ...base.admin, ...(admin ?? {}) } });
}

export function noRights(): Record<Capability, boolean> {
  return Object.fromEntries(CAPABILITIES.map((c) => [c, false])) as Record<Capability, boolean>;
}

export function allRights(): Record<Capability, boolean> {
  return Object.fromEntries(CAPABILITIES.map((c) => [c, true])) as Record<Capability, boolean>;
}

export function rightsOf(policy: Policy): Capability[] {
  return CAPABILITIES.filter((c) => policy.admin[c]);
}

export class PolicyStoreError extends Error {
  override name = 'PolicyStoreError';
  constructor(readonly code: 'NOT_FOUND' | 'IN_USE' | 'INVALID' | 'CLOSED', message: string) {
    super(message);
  }
}

export interface Assignment {
  user: Uint8Array;
  policy: string;
}

export interface PolicyStore {
  policy(name: string): Policy | undefined;
  /** Every stored policy, by name. */
  policies(): Policy[];
  /** The policy name assigned to user, if any. */
  assignment(user: Uint8Array): string | undefined;
  /** Every assignment, by key bytes. */
  assignments(): Assignment[];
  /** How many keys are assigned this policy. */
  assignedCount(name: string): number;
  isBlocked(user: Uint8Array): boolean;
  blocked(): Uint8Array[];
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
  close(): Promise<void>;
}

export type PolicySource = 'assigned' | 'default' | 'built-in';

/**
 * The policy that applies to a key: its assigned policy; else the stored `default`; else
 * `builtIn` (the relay configuration's defaults).
 */
export function effectivePolicy(store: PolicyStore, user: Uint8Array, builtIn: Policy): { policy: Policy; source: PolicySource } {
  const name = store.assignment(user);
  if (name !== undefined) {
    const assigned = store.policy(name);
    if (assigned) return { policy: assigned, source: 'assigned' };
  }
  const stored = store.policy(DEFAULT_POLICY);
  if (stored) return { policy: stored, source: 'default' };
  return { policy: builtIn, source: 'built-in' };
}
