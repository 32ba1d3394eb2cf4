// Admin commands on connections: connections, kick, block, unblock, blocked.
import { z } from 'zod';
import { Code } from '../protocol/constants.js';
import { AdminError, keyArg, keyText, type AdminCommand } from './engine.js';

const connections: AdminCommand<Record<string, never>> = {
  name: 'connections',
  summary: 'count connected keys; list them too for callers with manageConnections',
  needs: ['readUsage', 'manageConnections'],
  args: z.object({}).strict(),
  audit: () => ({}),
  async run(ctx) {
    const sessions = await ctx.host.connections.live();
    if (!ctx.host.policies.can(ctx.caller.key, 'manageConnections')) return { count: sessions.length };
    return {
      count: sessions.length,
      connections: sessions
        .map((s) => ({
          key: s.keyText, connectedAt: new Date(s.connectedAt).toISOString(), messagesIn: s.messagesIn, messagesOut: s.messagesOut,
          ...(s.instance !== undefined ? { instance: s.instance } : {}),
          ...(s.worker !== undefined ? { worker: s.worker } : {}),
        }))
        .sort((a, b) => (a.connectedAt < b.connectedAt ? -1 : a.connectedAt > b.connectedAt ? 1 : 0)),
    };
  },
};

const kick: AdminCommand<{ key: Buffer }> = {
  name: 'kick',
  summary: 'disconnect a key (CLOSE KICKED); it may connect again unless blocked',
  needs: ['manageConnections'],
  args: z.object({ key: keyArg }).strict(),
  audit: (a) => ({ keys: [keyText(a.key)] }),
  async run(ctx, args) {
    // Every connection of the key: its receiving one and its send-only ones (on every worker).
    if ((await ctx.host.connections.kick(args.key)) === 0) throw new AdminError(Code.NOT_FOUND, `${keyText(args.key)} is not connected`);
    return { kicked: keyText(args.key) };
  },
};

const block: AdminCommand<{ key: Buffer }> = {
  name: 'block',
  summary: 'refuse a key\'s connections (NOT_AUTHORIZED) and disconnect it now',
  needs: ['manageConnections'],
  args: z.object({ key: keyArg }).strict(),
  audit: (a) => ({ keys: [keyText(a.key)] }),
  async run(ctx, args) {
    const { policies, policyStore } = ctx.host;
    if (policies.isRoot(args.key)) throw new AdminError(Code.BAD_REQUEST, 'block: the root key cannot be blocked');
    if (Buffer.from(ctx.caller.key).equals(args.key)) throw new AdminError(Code.BAD_REQUEST, 'block: you cannot block your own key');
    const changed = await policyStore.block(args.key);
    const applied = ctx.enforce(args.key);
    return { key: keyText(args.key), blocked: true, changed, disconnected: applied.disconnected };
  },
};

const unblock: AdminCommand<{ key: Buffer }> = {
  name: 'unblock',
  summary: 'let a blocked key connect again',
  needs: ['manageConnections'],
  args: z.object({ key: keyArg }).strict(),
  audit: (a) => ({ keys: [keyText(a.key)] }),
  async run(ctx, args) {
    const changed = await ctx.host.policyStore.unblock(args.key);
    return { key: keyText(args.key), blocked: false, changed };
  },
};

const blocked: AdminCommand<Record<string, never>> = {
  name: 'blocked',
  summary: 'list the blocked keys',
  needs: ['manageConnections'],
  args: z.object({}).strict(),
  audit: () => ({}),
  run(ctx) {
    return { keys: ctx.host.policyStore.blocked().map(keyText) };
  },
};

export const connectionCommands: AdminCommand[] = [connections, kick, block, unblock, blocked];
