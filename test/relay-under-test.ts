// The relay that the client-facing suites run against: one relay in this process (the default),
// `pulltab serve --workers 2` as processes (PULLTAB_TEST_WORKERS=2, which test/*-workers.test.ts
// set before importing a suite), or a cluster of 2 instances over NATS and PostgreSQL
// (PULLTAB_TEST_CLUSTER=2, set by test/*-cluster.test.ts). The workers accept through
// node:cluster's round-robin, so consecutive clients land on alternate workers; in a cluster each
// read of `address` names the next instance (as round-robin DNS would), so consecutive clients
// land on alternate instances. Either way most pairs cross between processes.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RelayConfigInput } from '../src/server/config.js';
import type { RelayClient } from '../src/client/client.js';
import { FAST_CLUSTER, startInstances } from './cluster-instances.js';
import { connectClient, killRelay, relayMetric, spawnRelay, startRelay, tempDir, type SpawnedRelay } from './helpers.js';

/** Worker processes of the relay under test (1: a single relay in this process). */
export const TEST_WORKERS = Number(process.env.PULLTAB_TEST_WORKERS ?? '1');
/** Instances of the relay under test in a cluster of hosts (1: no cluster). */
export const TEST_INSTANCES = Number(process.env.PULLTAB_TEST_CLUSTER ?? '1');
/** Processes that accept clients, each admitting its share of maxConnections. */
export const TEST_PROCESSES = TEST_WORKERS * TEST_INSTANCES;

export interface RelayUnderTest {
  readonly address: string;
  readonly port: number;
  /** Stops it (GOING_AWAY to its clients, as SIGTERM does). */
  close(): Promise<void>;
  /** Authenticated connections now, relay-wide. */
  sessionCount(): Promise<number>;
  /** Connections refused (RELAY_FULL) so far. */
  refusedFull(): Promise<number>;
  /** Messages in every mailbox now. */
  mailboxEntries(): Promise<number>;
}

export async function startRelayUnderTest(overrides: RelayConfigInput = {}, dataDir = tempDir()): Promise<RelayUnderTest> {
  if (TEST_INSTANCES > 1) return startClusterUnderTest(overrides, dataDir);
  if (TEST_WORKERS === 1) {
    const relay = await startRelay(overrides, dataDir);
    return {
      address: relay.address,
      port: relay.port,
      close: () => relay.close(),
      sessionCount: async () => relay.router.sessions.size + relay.router.sendOnlyCount,
      refusedFull: async () => relay.stats.connectionsRefusedFull,
      mailboxEntries: async () => (await relay.store.totals()).count,
    };
  }
  const { port, ...settings } = overrides;
  const configFile = join(tempDir('pulltab-config-'), 'config.json');
  writeFileSync(configFile, JSON.stringify(settings));
  const relay = await spawnRelay(dataDir, ['--config', configFile, '--port', String(port ?? 0), '--workers', String(TEST_WORKERS)],
    { PULLTAB_WORKER_ACCEPT: 'round-robin' });
  return {
    address: relay.address,
    port: relay.port,
    close: () => killRelay(relay, 'SIGTERM'),
    sessionCount: () => relayMetric(relay, 'pulltab_connections{state="authenticated"}'),
    refusedFull: () => relayMetric(relay, 'pulltab_connections_refused_total'),
    mailboxEntries: () => relayMetric(relay, 'pulltab_mailbox_entries'),
  };
}

/**
 * The cluster under test: TEST_INSTANCES instances, their data in dataDir (the first) and
 * dataDir/instance-N. Started again on the same dataDir (a relay restart) it comes back on the same
 * database, cluster name and ports, which it keeps in dataDir/cluster-under-test.json.
 */
async function startClusterUnderTest(overrides: RelayConfigInput, dataDir: string): Promise<RelayUnderTest> {
  const { port: portSetting, maxConnections: maxSetting, ...settings } = overrides;
  const port = portSetting as number | undefined;
  const maxConnections = maxSetting as number | undefined;
  const saved = join(dataDir, 'cluster-under-test.json');
  const before = existsSync(saved) ? JSON.parse(readFileSync(saved, 'utf8')) as { store: string; name: string; ports: number[] } : null;
  const ports = before?.ports ?? [port ?? 0];
  if (port !== undefined) ports[0] = port;
  // maxConnections is the relay's, as with workers: each instance admits its share.
  const share = maxConnections === undefined ? {} : { maxConnections: Math.ceil(maxConnections / TEST_INSTANCES) };
  const started = await startInstances(TEST_INSTANCES, {
    dataDir, ports, store: before?.store, name: before?.name, config: { ...FAST_CLUSTER, ...settings, ...share },
  });
  const relays = started.relays;
  writeFileSync(saved, JSON.stringify({ store: started.store, name: started.name, ports: relays.map((r) => r.port) }));
  const sum = async (metric: string) => (await Promise.all(relays.map((r) => relayMetric(r, metric)))).reduce((a, b) => a + b, 0);
  let next = 0;
  return {
    get address() {
      return relays[next++ % relays.length].address;
    },
    port: relays[0].port,
    close: async () => {
      await Promise.all(relays.map((r: SpawnedRelay) => killRelay(r, 'SIGTERM')));
    },
    sessionCount: () => sum('pulltab_connections{state="authenticated"}'),
    refusedFull: () => sum('pulltab_connections_refused_total'),
    // The mailboxes are the shared database's: any instance counts them all.
    mailboxEntries: () => relayMetric(relays[0], 'pulltab_mailbox_entries'),
  };
}

type Teardown = { teardown(fn: () => unknown): void };

/** The relay under test, closed when the test ends. */
export async function relayUnderTest(t: Teardown, overrides: RelayConfigInput = {}): Promise<RelayUnderTest> {
  const relay = await startRelayUnderTest(overrides);
  t.teardown(() => relay.close());
  return relay;
}

/** The relay under test and a raw client connected to it, both closed when the test ends. */
export async function relayUnderTestWithSender(t: Teardown): Promise<{ relay: RelayUnderTest; alice: RelayClient }> {
  const relay = await relayUnderTest(t);
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => alice.close());
  return { relay, alice };
}
