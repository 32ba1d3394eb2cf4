// Admin commands on policies: policy.set, policy.get, policy.ls, policy.rm.
import { z } from 'zod';
import { applyPatch, policyPatchSchema, type PolicyPatch } from '../policy/patch.js';
import { DEFAULT_POLICY, policyNameSchema, type Policy } from '../policy/policy.js';
import { Code } from '../protocol/constants.js';
import { AdminError, type AdminCommand } from './engine.js';

/** A policy as answers show it: every field, and how many keys are assigned it. */
export function policyView(policy: Policy, assigned: number, builtIn = false): Record<string, unknown> {
  return { ...policy, assigned, ...(builtIn ? { builtIn: true } : {}) };
}

const set: AdminCommand<{ name: string; fields: PolicyPatch }> = {
  name: 'policy.set',
  summary: 'create a policy, or change some of its fields',
  needs: ['editPolicies'],
  args: z.object({ name: policyNameSchema, fields: policyPatchSchema.default({}) }).strict(),
  audit: (a) => ({ policy: a.name }),
  async run(ctx, args) {
    const { policies, policyStore } = ctx.host;
    const existing = policyStore.policy(args.name);
    // A new policy starts from the relay configuration's defaults: connect, no admin rights, config limits.
    const base = existing ?? { ...policies.builtInDefault(), name: args.name };
    const next = applyPatch(base, args.name, args.fields);
    const missing = policies.lacking(ctx.caller.key, next.admin);
    if (missing.length > 0) throw new AdminError(Code.FORBIDDEN, `policy.set: cannot grant rights you do not hold: ${missing.join(', ')}`);
    await policyStore.setPolicy(next);
    const applied = ctx.enforce();
    return { policy: policyView(next, policyStore.assignedCount(next.name)), created: !existing, applied };
  },
};

const get: AdminCommand<{ name: string }> = {
  name: 'policy.get',
  summary: 'show a policy (`default` shows the configuration\'s defaults while none is stored)',
  needs: ['editPolicies', 'assignUsers'],
  args: z.object({ name: policyNameSchema }).strict(),
  audit: (a) => ({ policy: a.name }),
  run(ctx, args) {
    const { policies, policyStore } = ctx.host;
    const stored = policyStore.policy(args.name);
    if (stored) return { policy: policyView(stored, policyStore.assignedCount(stored.name)) };
    if (args.name === DEFAULT_POLICY) return { policy: policyView(policies.builtInDefault(), 0, true) };
    throw new AdminError(Code.NOT_FOUND, `no policy named ${JSON.stringify(args.name)}`);
  },
};

const ls: AdminCommand<Record<string, never>> = {
  name: 'policy.ls',
  summary: 'list the policies (with the built-in default while no `default` is stored)',
  needs: ['editPolicies', 'assignUsers'],
  args: z.object({}).strict(),
  audit: () => ({}),
  run(ctx) {
    const { policies, policyStore } = ctx.host;
    const list = policyStore.policies().map((p) => policyView(p, policyStore.assignedCount(p.name)));
    if (!policyStore.policy(DEFAULT_POLICY)) list.unshift(policyView(policies.builtInDefault(), 0, true));
    return { policies: list };
  },
};

const rm: AdminCommand<{ name: string }> = {
  name: 'policy.rm',
  summary: 'remove a policy no key is assigned (removing `default` brings back the configuration\'s defaults)',
  needs: ['editPolicies'],
  args: z.object({ name: policyNameSchema }).strict(),
  audit: (a) => ({ policy: a.name }),
  async run(ctx, args) {
    await ctx.host.policyStore.removePolicy(args.name);
    return { removed: args.name, applied: ctx.enforce() };
  },
};

export const policyCommands: AdminCommand[] = [set, get, ls, rm];
