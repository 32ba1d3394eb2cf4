// The admin engine over real parts, wired as the relay wires it (src/server/relay.ts): an LMDB
// policy store behind the relay's cache, an LMDB mailbox, a router with no session connected.
import { join } from 'node:path';
import { AdminEngine, type AdminCaller } from '../src/admin/engine.js';
import { allCommands } from '../src/admin/stats.js';
import { encodeKey, generateIdentity } from '../src/crypto/keys.js';
import { PolicyAuthority } from '../src/policy/authority.js';
import { defaultConfig } from '../src/server/config.js';
import { ConnectedSessions } from '../src/server/connected-sessions.js';
import { EventLog } from '../src/server/events.js';
import { PolicyCache } from '../src/server/policies.js';
import { Router } from '../src/server/router.js';
import { RelayStats } from '../src/server/stats.js';
import { openMailboxStore } from '../src/store/open.js';
import { openLmdbPolicyStore } from '../src/store/lmdb/policy.js';
import { removeDir, silentLogger, tempDir } from './helpers.js';

export function adminCaller(): AdminCaller {
  const key = Buffer.from(generateIdentity().publicKey);
  return { key, keyText: encodeKey(key) };
}

/** An engine whose root key is `root`, with an event log under dir/events if asked; all closed and removed at teardown. */
export async function adminEngine(t: { teardown(fn: () => unknown): void }, options: { eventLog?: boolean } = {}) {
  const dir = tempDir();
  const events = options.eventLog ? new EventLog({ dir: join(dir, 'events') }) : null;
  const config = defaultConfig();
  const policyStore = new PolicyCache(openLmdbPolicyStore({ path: join(dir, 'policies') }));
  await policyStore.load();
  const store = await openMailboxStore({ store: 'lmdb', dataDir: dir });
  const root = adminCaller();
  const policies = new PolicyAuthority(policyStore, config, root.key);
  const stats = new RelayStats();
  const router = new Router(store, config, silentLogger, stats);
  const engine = new AdminEngine({
    policies, policyStore, store, connections: new ConnectedSessions(router, policies, stats, events),
    stats: async () => ({ uptime: 1 }), events,
  }, allCommands());
  t.teardown(async () => {
    await events?.close();
    await policyStore.close();
    await store.close();
    removeDir(dir);
  });
  return { dir, engine, root, store, policyStore, events };
}
