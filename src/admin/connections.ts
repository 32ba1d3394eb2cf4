// Admin commands on connections: connections, kick, block, unblock, blocked.
import { z } from 'zod';
import { keyIdOf } from '../crypto/key-id.js';
import { Code } from '../protocol/constants.js';
import { AdminError, everySession, keyArg, keyText, sessionsOfKey, type AdminCommand } from './engine.js';

const connections: AdminCommand<Record<string, never>> = {
  name: 'connections',
  summary: 'count connected keys; list them too for callers with manageConnections',
  needs: ['readUsage', 'manageConnections'],
  args: z.object({}).strict(),
  audit: () => ({}),
  run(ctx) {
    const sessions = [...everySession(ctx.host)].filter((s) => !s.closed);
    if (!ctx.host.policies.can(ctx.caller.key, 'manageConnections')) return { count: sessions.length };
    return {
      count: sessions.length,
      connections: sessions
        .map((s) => ({ key: s.keyText, connectedAt: new Date(s.connectedAt).toISOString(), messagesIn: s.messagesIn, messagesOut: s.messagesOut }))
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
  run(ctx, args) {
    // Every connection of the key: its receiving one and its send-only ones.
    const sessions = sessionsOfKey(ctx.host, keyIdOf(args.key));
    if (sessions.length === 0) throw new AdminError(Code.NOT_FOUND, `${keyText(args.key)} is not connected`);
    for (const session of sessions) ctx.kick(session);
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
    const policies = ctx.host.policies;
    if (policies.isRoot(args.key)) throw new AdminError(Code.BAD_REQUEST, 'block: the root key cannot be blocked');
    if (Buffer.from(ctx.caller.key).equals(args.key)) throw new AdminError(Code.BAD_REQUEST, 'block: you cannot block your own key');
    const changed = await policies.store.block(args.key);
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
    const changed = await ctx.host.policies.store.unblock(args.key);
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
    return { keys: ctx.host.policies.store.blocked().map(keyText) };
  },
};

export const connectionCommands: AdminCommand[] = [connections, kick, block, unblock, blocked];
