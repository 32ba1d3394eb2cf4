// Admin commands on users (keys) and their policies: user.set, user.get, user.ls, user.rm.
import { z } from 'zod';
import { grantedRights } from '../policy/capabilities.js';
import { POLICY_NAME } from '../policy/policy.js';
import { Code } from '../protocol/constants.js';
import { AdminError, keyArg, keyText, type AdminCommand, type CommandContext } from './engine.js';

const policyName = z.string().regex(POLICY_NAME, 'not a policy name');

/** What applies to a key: its policy (and where it comes from), rights, limits and mailbox quota. */
export async function userView(ctx: CommandContext, key: Uint8Array): Promise<Record<string, unknown>> {
  const { policies, connections } = ctx.host;
  const e = policies.effective(key);
  return {
    key: keyText(key),
    policy: e.policy.name,
    source: e.root ? 'root' : e.source,
    root: e.root,
    blocked: e.blocked,
    canConnect: policies.mayConnect(key),
    rights: grantedRights(policies.rights(key)),
    limits: policies.limitsFor(key),
    quota: policies.quotaFor(key),
    connected: await connections.isConnected(key),
  };
}

const set: AdminCommand<{ key: Buffer; policy: string }> = {
  name: 'user.set',
  summary: 'assign a policy to a key (replacing its earlier one)',
  needs: ['assignUsers'],
  args: z.object({ key: keyArg, policy: policyName }).strict(),
  audit: (a) => ({ keys: [keyText(a.key)], policy: a.policy }),
  async run(ctx, args) {
    const { policies, policyStore } = ctx.host;
    const target = policyStore.policy(args.policy);
    if (!target) throw new AdminError(Code.NOT_FOUND, `no policy named ${JSON.stringify(args.policy)}`);
    const missing = policies.lacking(ctx.caller.key, target.admin);
    if (missing.length > 0) {
      throw new AdminError(Code.FORBIDDEN, `user.set: policy ${JSON.stringify(args.policy)} grants rights you do not hold: ${missing.join(', ')}`);
    }
    await policyStore.assign(args.key, args.policy);
    const applied = ctx.enforce(args.key);
    return { user: await userView(ctx, args.key), applied };
  },
};

const get: AdminCommand<{ key: Buffer }> = {
  name: 'user.get',
  summary: 'show the policy, rights and limits that apply to a key (any key may ask about itself)',
  needs: ['assignUsers'],
  args: z.object({ key: keyArg }).strict(),
  allowWithout: (caller, args) => Buffer.from(caller.key).equals(args.key),
  audit: (a) => ({ keys: [keyText(a.key)] }),
  async run(ctx, args) {
    return { user: await userView(ctx, args.key) };
  },
};

const ls: AdminCommand<Record<string, never>> = {
  name: 'user.ls',
  summary: 'list the keys assigned a policy',
  needs: ['assignUsers'],
  args: z.object({}).strict(),
  audit: () => ({}),
  run(ctx) {
    return { users: ctx.host.policyStore.assignments().map((a) => ({ key: keyText(a.user), policy: a.policy })) };
  },
};

const rm: AdminCommand<{ key: Buffer }> = {
  name: 'user.rm',
  summary: 'remove a key\'s assignment: it falls back to `default`',
  needs: ['assignUsers'],
  args: z.object({ key: keyArg }).strict(),
  audit: (a) => ({ keys: [keyText(a.key)] }),
  async run(ctx, args) {
    const removed = await ctx.host.policyStore.unassign(args.key);
    const applied = ctx.enforce(args.key);
    return { removed, user: await userView(ctx, args.key), applied };
  },
};

export const userCommands: AdminCommand[] = [set, get, ls, rm];
