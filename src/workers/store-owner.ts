// The primary's share of a relay of workers on an embedded store: it owns the mailbox engine and
// the policy store (one process opens LMDB, so what the engine keeps in memory stays exact for the
// whole relay), serves them to the workers (src/store/remote/host.ts), and runs the expiry sweep.
// Quotas come from the policies as the primary's own cache holds them; the workers change
// policies through it.
import type { Logger } from 'pino';
import { decodeKey } from '../crypto/keys.js';
import { PolicyAuthority } from '../policy/authority.js';
import { mailboxLimitsOf, type RelayConfig } from '../server/config.js';
import { hostedPolicies, PolicyCache } from '../server/policies.js';
import { startSweeping, storeEvents } from '../server/relay.js';
import type { MailboxStore } from '../store/mailbox.js';
import { openMailboxStore, openPolicyStore } from '../store/open.js';
import { StoreHost } from '../store/remote/host.js';
import { storeSocketPath } from './worker.js';

export interface StoreOwner {
  store: MailboxStore;
  close(): Promise<void>;
}

export async function openStoreOwner(config: RelayConfig, runDir: string, log: Logger): Promise<StoreOwner> {
  const policyStore = await openPolicyStore({ store: config.store, dataDir: config.dataDir });
  const cache = new PolicyCache(policyStore);
  await cache.load();
  const authority = new PolicyAuthority(cache, config, config.rootKey ? decodeKey(config.rootKey) : null);
  let store: MailboxStore;
  try {
    store = await openMailboxStore({
      store: config.store, dataDir: config.dataDir, limits: mailboxLimitsOf(config),
      quotaFor: (recipient) => authority.quotaFor(recipient), events: storeEvents(log),
    });
  } catch (err) {
    await cache.close();
    throw err;
  }
  await store.sweepExpired().catch((err: Error) => log.error({ event: 'sweep_failed', err: err.message }, 'expiry sweep failed'));
  const host = new StoreHost(store, hostedPolicies(cache));
  await host.listen(storeSocketPath(runDir));
  const sweeper = startSweeping(store, config.sweepIntervalMs, log);
  return {
    store,
    close: async () => {
      clearInterval(sweeper);
      await host.close();
      await store.close();
      await cache.close();
    },
  };
}
