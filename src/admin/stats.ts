// The `stats` admin command, and the list of every command the relay serves.
import { z } from 'zod';
import type { AdminCommand } from './engine.js';
import { connectionCommands } from './connections.js';
import { messageCommands } from './messages.js';
import { policyCommands } from './policies.js';
import { userCommands } from './users.js';

const stats: AdminCommand<Record<string, never>> = {
  name: 'stats',
  summary: 'the relay\'s counters: connections, handshakes, messages, drops, store',
  needs: ['readUsage'],
  args: z.object({}).strict(),
  audit: () => ({}),
  run(ctx) {
    return ctx.host.stats();
  },
};

export const statsCommands: AdminCommand[] = [stats];

/** Every admin command, in the order the docs list them. */
export function allCommands(): AdminCommand[] {
  return [...policyCommands, ...userCommands, ...connectionCommands, ...messageCommands, ...statsCommands];
}
