// A change to a policy (admin policy.set, pulltab admin policy set): any subset of its fields,
// admin rights one by one. The result is always a complete, validated policy.
import { z } from 'zod';
import { adminRightsSchema, policySchema, type Policy } from './policy.js';

export const policyPatchSchema = policySchema.omit({ name: true, admin: true }).partial().extend({
  admin: adminRightsSchema.partial().optional(),
}).strict();
export type PolicyPatch = z.infer<typeof policyPatchSchema>;

/** Applies a patch to a complete policy; the result is complete and validated. */
export function applyPatch(base: Policy, name: string, patch: PolicyPatch): Policy {
  const { admin, ...limits } = patch;
  return policySchema.parse({ ...base, ...limits, name, admin: { ...base.admin, ...(admin ?? {}) } });
}
