// The numbers a policy sets, and the relay configuration's values they fall back to and are capped
// by: a key's sending limits, its mailbox quota, and the built-in `default` policy.
import type { RecipientQuota } from '../store/mailbox.js';
import { noRights } from './capabilities.js';
import { DEFAULT_POLICY, LIMIT_FIELDS, type Policy } from './policy.js';

/** The configuration values policies fall back to and are capped by (read live: a reload changes them). */
export type PolicyDefaults = Pick<Policy, (typeof LIMIT_FIELDS)[number]>;

/** The limits on what a key's connection sends; a policy change replaces them at once. */
export type SenderLimits = Pick<Policy,
  'maxPayloadBytes' | 'maxRecipients' | 'maxTtlSeconds'
  | 'rateBytesPerSecond' | 'rateBurstBytes' | 'rateMessagesPerSecond' | 'rateBurstMessages'>;

/** The policy a key gets when no `default` policy is stored: may connect, no admin rights, the configuration's limits. */
export function builtInPolicy(defaults: PolicyDefaults): Policy {
  const policy = { name: DEFAULT_POLICY, canConnect: true, admin: noRights() } as Policy;
  for (const field of LIMIT_FIELDS) policy[field] = defaults[field];
  return policy;
}

/**
 * Sending limits: the policy's (or the configuration's, for a key without a stored policy), with
 * payload size, recipients and TTL capped by the configuration, which sizes the frames the relay
 * reads and the TTL its store takes.
 */
export function senderLimits(policy: PolicyDefaults, caps: PolicyDefaults): SenderLimits {
  return {
    maxPayloadBytes: Math.min(policy.maxPayloadBytes, caps.maxPayloadBytes),
    maxRecipients: Math.min(policy.maxRecipients, caps.maxRecipients),
    maxTtlSeconds: Math.min(policy.maxTtlSeconds, caps.maxTtlSeconds),
    rateBytesPerSecond: policy.rateBytesPerSecond,
    rateBurstBytes: policy.rateBurstBytes,
    rateMessagesPerSecond: policy.rateMessagesPerSecond,
    rateBurstMessages: policy.rateBurstMessages,
  };
}

/** The quota of a recipient's mailbox: its policy's (a policy may give more than the configuration). */
export function mailboxQuota(policy: PolicyDefaults): RecipientQuota {
  return { maxCount: policy.mailboxMaxCount, maxBytes: policy.mailboxMaxBytes };
}
