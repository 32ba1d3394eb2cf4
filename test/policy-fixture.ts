// A complete policy for tests: small limits, no admin rights, every field explicit.
import { generateIdentity } from '../src/crypto/keys.js';
import { noRights } from '../src/policy/capabilities.js';
import type { Policy } from '../src/policy/policy.js';

export function testPolicy(name: string, over: Partial<Policy> = {}): Policy {
  return {
    name, canConnect: true, admin: noRights(), maxPayloadBytes: 1000, maxRecipients: 10, maxTtlSeconds: 3600,
    mailboxMaxCount: 5, mailboxMaxBytes: 5000, rateBytesPerSecond: 0, rateBurstBytes: 0, rateMessagesPerSecond: 0, rateBurstMessages: 0,
    ...over,
  };
}

/** A fresh public key. */
export const testKey = (): Buffer => Buffer.from(generateIdentity().publicKey);
