// Admin commands on policies: policy.set, policy.get, policy.ls, policy.rm.
import { z } from 'zod';
import { Code } from '../protocol/constants.js';
import {
  applyPatch, CAPABILITIES, DEFAULT_POLICY, POLICY_NAME, policyPatchSchema, type Policy,
} from '../store/policy.js';
import { AdminError, type AdminCommand } from './engine.js';

const name = z.string().regex(POLICY_NAME, 'a policy name is 1 to 64 letters, digits, _ . or -, starting with a letter or digit');

/** A policy as answers show it: every field, and how many keys are assigned it. */
export function policyView(policy: Policy, assigned: number, builtIn = false): Record<string, unknown> {
  return { ...policy, assigned, ...(builtIn ? { builtIn: true } : {}) };
}

const set: AdminCommand<{ name: string; fields: z.infer<typeof policyPatchSchema> }> = {
  name: 'policy.set',
  summary: 'create a policy, or change some of its fields',
  needs: ['editPolicies'],
  args: z.object({ name, fields: policyPatchSchema.default({}) }).strict(),
  audit: (a) => ({ policy: a.name }),
  async run(ctx, args) {
    const policies = ctx.host.policies;
    const existing = policies.store.policy(args.name);
    // A new policy starts from the relay configuration's defaults: connect, no admin rights, config limits.
    const base = existing ?? { ...policies.builtInDefault(), name: args.name };
    const next = applyPatch(base, args.name, args.fields);
    if (!policies.holdsAll(ctx.caller.key, next.admin)) {
      const missing = CAPABILITIES.filter((c) => next.admin[c] && !policies.can(ctx.caller.key, c));
      throw new AdminError(Code.FORBIDDEN, `policy.set: cannot grant rights you do not hold: ${missing.join(', ')}`);
    }
    await policies.store.setPolicy(next);
    const applied = ctx.enforce();
    return { policy: policyView(next, policies.store.assignedCount(next.name)), created: !existing, applied };
  },
};

const get: AdminCommand<{ name: string }> = {
  name: 'policy.get',
  summary: 'show a policy (`default` shows the configuration\'s defaults while none is stored)',
  needs: ['editPolicies', 'assignUsers'],
  args: z.object({ name }).strict(),
  audit: (a) => ({ policy: a.name }),
  run(ctx, args) {
    const policies = ctx.host.policies;
    const stored = policies.store.policy(args.name);
    if (stored) return { policy: policyView(stored, policies.store.assignedCount(stored.name)) };
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
    const policies = ctx.host.policies;
    const list = policies.store.policies().map((p) => policyView(p, policies.store.assignedCount(p.name)));
    if (!policies.store.policy(DEFAULT_POLICY)) list.unshift(policyView(policies.builtInDefault(), 0, true));
    return { policies: list };
  },
};

const rm: AdminCommand<{ name: string }> = {
  name: 'policy.rm',
  summary: 'remove a policy no key is assigned (removing `default` brings back the configuration\'s defaults)',
  needs: ['editPolicies'],
  args: z.object({ name }).strict(),
  audit: (a) => ({ policy: a.name }),
  async run(ctx, args) {
    await ctx.host.policies.store.removePolicy(args.name);
    return { removed: args.name, applied: ctx.enforce() };
  },
};

export const policyCommands: AdminCommand[] = [set, get, ls, rm];

