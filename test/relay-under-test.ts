// The relay that the client-facing suites run against: one relay in this process (the default),
// or `pulltab serve --workers 2` as processes (PULLTAB_TEST_WORKERS=2, which test/*-workers.test.ts
// // set before importing a suite). The workers accept through node:cluster's round-robin, so
// consecutive clients land on alternate workers and most pairs cross between them.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RelayConfigInput } from '../src/server/config.js';
import type { RelayClient } from '../src/client/client.js';
import { connectClient, killRelay, relayMetric, spawnRelay, startRelay, tempDir } from './helpers.js';

/** Worker processes of the relay under test (1: a single relay in this process). */
export const TEST_WORKERS = Number(process.env.PULLTAB_TEST_WORKERS ?? '1');

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
