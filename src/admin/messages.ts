// Admin commands on stored messages: usage, messages.rm.
import { z } from 'zod';
import { keyArg, keyText, type AdminCommand } from './engine.js';

const usage: AdminCommand<{ top: number }> = {
  name: 'usage',
  summary: 'stored messages and bytes: totals, and the recipients holding the most bytes',
  needs: ['readUsage'],
  args: z.object({ top: z.number().int().min(0).max(10_000).default(20) }).strict(),
  audit: () => ({}),
  async run(ctx, args) {
    const store = ctx.host.store;
    return {
      totals: await store.totals(),
      top: (await store.top(args.top)).map((u) => ({ key: keyText(u.recipient), count: u.count, bytes: u.bytes })),
    };
  },
};

/** Exactly one of: a recipient whose mailbox to empty, or an age past which stored messages go. */
const removeArgs = z.object({
  user: keyArg.optional(),
  olderThanSeconds: z.number().min(0).max(100 * 365 * 86_400).optional(),
}).strict().refine((a) => (a.user === undefined) !== (a.olderThanSeconds === undefined), {
  message: 'give exactly one of user and olderThanSeconds',
});

const remove: AdminCommand<z.infer<typeof removeArgs>> = {
  name: 'messages.rm',
  summary: 'delete stored messages: one recipient\'s mailbox, or every message older than an age',
  needs: ['manageMessages'],
  args: removeArgs,
  audit: (a) => (a.user ? { keys: [keyText(a.user)] } : {}),
  async run(ctx, args) {
    const store = ctx.host.store;
    const removed = args.user !== undefined
      ? await store.removeRecipient(args.user)
      : await store.removeOlderThan(args.olderThanSeconds! * 1000);
    return { removed };
  },
};

export const messageCommands: AdminCommand[] = [usage, remove];
