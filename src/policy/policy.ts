// A policy: what a key may do on the relay (connect, administer), the limits on what it sends and
// the quota of its mailbox. This file is its shape and its validation; what applies to a given key
// is authority.ts, a change to a policy is patch.ts, and where policies are kept is src/store/.
import { z } from 'zod';
import { CAPABILITIES, type Capability, type Rights } from './capabilities.js';

/** The policy that applies to every key not assigned another one. */
export const DEFAULT_POLICY = 'default';

export const POLICY_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export const policyNameSchema = z.string().regex(POLICY_NAME, 'a policy name is 1 to 64 letters, digits, _ . or -, starting with a letter or digit');

export interface Policy {
  name: string;
  /** May authenticate at all (blocked keys may not, whatever their policy). */
  canConnect: boolean;
  admin: Rights;
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

/** The fields of a policy that are numbers: the ones the relay configuration also sets (limits.ts). */
export const LIMIT_FIELDS = [
  'maxPayloadBytes', 'maxRecipients', 'maxTtlSeconds', 'mailboxMaxCount', 'mailboxMaxBytes',
  'rateBytesPerSecond', 'rateBurstBytes', 'rateMessagesPerSecond', 'rateBurstMessages',
] as const satisfies readonly (keyof Policy)[];
export type LimitField = (typeof LIMIT_FIELDS)[number];

/** What a field holds, so that a command line or a form reads it right: sizes (64KiB) for bytes, durations (2h) for seconds. */
export type FieldUnit = 'boolean' | 'rights' | 'bytes' | 'seconds' | 'count';

/** The unit of every field but the name (a field added to Policy without one does not compile). */
export const FIELD_UNITS = {
  canConnect: 'boolean',
  admin: 'rights',
  maxPayloadBytes: 'bytes',
  maxRecipients: 'count',
  maxTtlSeconds: 'seconds',
  mailboxMaxCount: 'count',
  mailboxMaxBytes: 'bytes',
  rateBytesPerSecond: 'bytes',
  rateBurstBytes: 'bytes',
  rateMessagesPerSecond: 'count',
  rateBurstMessages: 'count',
} as const satisfies Record<Exclude<keyof Policy, 'name'>, FieldUnit>;
export type PolicyField = keyof typeof FIELD_UNITS;

const count = (min: number) => z.number().int().min(min).max(Number.MAX_SAFE_INTEGER);

export const adminRightsSchema = z.object(
  Object.fromEntries(CAPABILITIES.map((c) => [c, z.boolean()])) as Record<Capability, z.ZodBoolean>,
).strict();

/** A complete policy: every field present. Used for what is stored and for `--file` input. */
export const policySchema = z.object({
  name: policyNameSchema,
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

/** The policy as validated (unknown fields refused), or every problem with it in one line. */
export function validatePolicy(policy: unknown): { ok: true; policy: Policy } | { ok: false; problems: string } {
  const result = policySchema.safeParse(policy);
  if (result.success) return { ok: true, policy: result.data };
  return { ok: false, problems: result.error.issues.map((i) => `${i.path.join('.') || 'policy'}: ${i.message}`).join('; ') };
}
