// What the policy rules read: the policies, the keys assigned them and the blocked keys, answered
// at once. The relay's cache of its policy store (src/server/policies.ts) is one; so is the
// in-memory table an engine keeps (src/store/policy-table.ts).
import type { Policy } from './policy.js';

export interface Assignment {
  user: Uint8Array;
  policy: string;
}

export interface PolicyView {
  policy(name: string): Policy | undefined;
  /** Every policy, by name. */
  policies(): Policy[];
  /** The policy name assigned to user, if any. On the path of every stored message: cheap. */
  assignment(user: Uint8Array): string | undefined;
  /** Every assignment, by key bytes. */
  assignments(): Assignment[];
  /** How many keys are assigned this policy. */
  assignedCount(name: string): number;
  isBlocked(user: Uint8Array): boolean;
  /** Every blocked key, by key bytes. */
  blocked(): Uint8Array[];
}
