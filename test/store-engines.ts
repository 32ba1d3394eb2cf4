// The `store` setting that opens each engine the factory knows, for the tests that run one list of
// cases against every engine: the engine's name for the embedded ones, and for PostgreSQL the URL
// of a new empty database on this test file's private cluster (test/postgres-cluster.ts), started
// on first use and removed when the file's tests end.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostedPolicies, PolicyCache } from '../src/server/policies.js';
import type { MailboxStore } from '../src/store/mailbox.js';
import { ENGINE_NAMES, openMailboxStore, openPolicyStore, type MailboxSettings } from '../src/store/open.js';
import type { PolicyStore } from '../src/store/policy-store.js';
import { HostedMailboxStore, HostedPolicyStore, HostLink } from '../src/store/remote/client.js';
import { StoreHost } from '../src/store/remote/host.js';
import { postgresSkipReason, startCluster, type Cluster } from './postgres-cluster.js';

export { ENGINE_NAMES };

let cluster: Promise<Cluster> | null = null;

function theCluster(): Promise<Cluster> {
  if (cluster === null) {
    cluster = startCluster();
    const started = cluster;
    t.teardown(async () => (await started).destroy());
  }
  return cluster;
}

/** The setting that opens a fresh, empty store of this engine. */
export async function freshStoreSetting(engine: string): Promise<string> {
  if (engine !== 'postgres') return engine; // 'hosted' too: openTestMailbox knows it
  return (await theCluster()).createDatabase();
}

/** Why this engine's cases skip here (PostgreSQL not installed), or false; throws when CI requires it. */
export function engineSkip(engine: string): string | false {
  return engine === 'postgres' ? postgresSkipReason() ?? false : false;
}

/**
 * The engines the store tests run, by name: the factory's, and `hosted`, the LMDB engine served by a
 * store host over a Unix socket to its client (what the workers of one relay use, src/store/remote/).
 */
export const TEST_ENGINES: readonly string[] = [...ENGINE_NAMES, 'hosted'];

/** The factory's openMailboxStore, and for `hosted` an LMDB engine behind a host; closing closes all of it. */
export async function openTestMailbox(settings: MailboxSettings): Promise<MailboxStore> {
  if (settings.store !== 'hosted') return openMailboxStore(settings);
  const engine = await openMailboxStore({ ...settings, store: 'lmdb' });
  const policyStore = await openPolicyStore({ store: 'lmdb', dataDir: settings.dataDir });
  const { link, close } = await hostFor(engine, policyStore);
  const client = new HostedMailboxStore(link);
  const closeClient = client.close.bind(client);
  client.close = async () => {
    await closeClient();
    await close();
    await engine.close();
  };
  return client;
}

/** The factory's openPolicyStore, and for `hosted` an LMDB policy store behind a host. */
export async function openTestPolicyStore(settings: Pick<MailboxSettings, 'store' | 'dataDir'>): Promise<PolicyStore> {
  if (settings.store !== 'hosted') return openPolicyStore(settings);
  const engine = await openMailboxStore({ store: 'memory', dataDir: settings.dataDir });
  const policyStore = await openPolicyStore({ store: 'lmdb', dataDir: settings.dataDir });
  const { link, close } = await hostFor(engine, policyStore);
  const client = new HostedPolicyStore(link);
  const closeClient = client.close.bind(client);
  client.close = async () => {
    await closeClient();
    await close();
    await engine.close();
  };
  return client;
}

async function hostFor(engine: MailboxStore, policyStore: PolicyStore): Promise<{ link: HostLink; close(): Promise<void> }> {
  const cache = new PolicyCache(policyStore);
  await cache.load();
  const host = new StoreHost(engine, hostedPolicies(cache));
  const socketDir = mkdtempSync(join(tmpdir(), 'pt-host-'));
  const path = join(socketDir, 'store.sock');
  await host.listen(path);
  const link = await HostLink.open(path);
  return {
    link,
    close: async () => {
      link.close();
      await host.close();
      await cache.close();
      rmSync(socketDir, { recursive: true, force: true });
    },
  };
}
