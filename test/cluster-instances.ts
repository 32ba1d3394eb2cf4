// Instances of one relay as processes on loopback (`pulltab serve --cluster nats://...
// --store postgres://...`), for the cluster's tests and the relay suite run against a cluster
// (./relay-under-test.ts): each instance with a data directory of its own holding the same relay
// identity (docs/OPERATIONS.md, "Running a cluster"), one database, one cluster name. The
// nats-server and PostgreSQL they use are this test file's, started on first use and stopped
// when the file ends.
import tap from 'tap';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { killRelay, removeDir, spawnRelay, tempDir, type SpawnedRelay } from './helpers.js';
import { natsSkipReason, startNatsServer, type NatsServer } from './nats-server.js';
import { postgresSkipReason, startCluster, type Cluster } from './postgres-cluster.js';

/** Why the cluster's tests cannot run here (false: they can); in CI neither is missing (it throws). */
export const clusterSkip: string | false = postgresSkipReason() ?? natsSkipReason() ?? false;

export interface ClusterServices {
  nats: NatsServer;
  pg: Cluster;
}

let services: Promise<ClusterServices> | null = null;

/** This file's nats-server and PostgreSQL (started once, stopped when the file's tests end). */
export function clusterServices(): Promise<ClusterServices> {
  services ??= (async () => {
    const [nats, pg] = await Promise.all([startNatsServer(), startCluster()]);
    tap.teardown(async () => {
      await nats.stop();
      await pg.destroy();
    });
    return { nats, pg };
  })();
  return services;
}

export interface InstancesPlan {
  /** The mailbox database (default: a new one). */
  store?: string;
  /** The cluster name (default: a new one, so that no other test's instances join). */
  name?: string;
  /** The relay port of each instance (0 or missing: any). */
  ports?: number[];
  /** Where instance 1's data lives (the others' in instance-N/ inside it); default a new directory. */
  dataDir?: string;
  /** Configuration of every instance (written to a file). */
  config?: object;
  /** More arguments to every `pulltab serve`. */
  args?: string[];
  /** More arguments to instance i's (1..n), after those. */
  argsFor?: (i: number) => string[];
}

export interface StartedInstances {
  relays: SpawnedRelay[];
  store: string;
  name: string;
  dataDir: string;
}

/** Every instance started here and not yet exited: killed if this process exits first. */
const running = new Set<SpawnedRelay>();
process.once('exit', () => {
  // Still running at exit: the test did not end (tap's timeout): what they logged shows why.
  for (const relay of running) printTail(relay, 'still running when the test process exited');
  for (const relay of running) relay.proc.kill('SIGKILL');
});

/** The end of what an instance printed, on stderr (which tap shows), for a test that failed or hung. */
function printTail(relay: SpawnedRelay, why: string): void {
  const out = relay.output();
  process.stderr.write(`--- instance ${relay.address} (pid ${relay.proc.pid}), ${why}; its last output:\n${out.slice(-6000)}\n---\n`);
}

/** The defaults of the cluster's tests: a lost instance is dropped within a second. */
export const FAST_CLUSTER = { clusterHeartbeatMs: 200, forwardDeadlineMs: 1000 };

/** n instances of one relay, started one after the other (each joins the ones before it). */
export async function startInstances(n: number, plan: InstancesPlan = {}): Promise<StartedInstances> {
  const { nats, pg } = await clusterServices();
  const store = plan.store ?? await pg.createDatabase();
  const name = plan.name ?? `t${process.pid}x${Math.floor(Math.random() * 1e9)}`;
  const dataDir = plan.dataDir ?? tempDir();
  // Beside instance 1's data: removed with it.
  mkdirSync(dataDir, { recursive: true });
  const configFile = join(dataDir, 'cluster-config.json');
  writeFileSync(configFile, JSON.stringify(plan.config ?? FAST_CLUSTER));
  const relays: SpawnedRelay[] = [];
  try {
    for (let i = 1; i <= n; i++) {
      const dir = i === 1 ? dataDir : join(dataDir, `instance-${i}`);
      if (i > 1 && !existsSync(join(dir, 'relay-identity.json'))) {
        // Every instance holds the relay key: the first made it (or found it).
        mkdirSync(dir, { recursive: true });
        copyFileSync(join(dataDir, 'relay-identity.json'), join(dir, 'relay-identity.json'));
      }
      const relay = await spawnRelay(dir, ['--port', String(plan.ports?.[i - 1] ?? 0), '--store', store, '--cluster', nats.url,
        '--cluster-name', name, '--config', configFile, ...(plan.args ?? []), ...(plan.argsFor?.(i) ?? [])]);
      running.add(relay);
      relay.proc.once('exit', () => running.delete(relay));
      relays.push(relay);
    }
  } catch (err) {
    await Promise.all(relays.map((r) => killRelay(r, 'SIGKILL')));
    throw err;
  }
  return { relays, store, name, dataDir };
}

/** n instances for one test: killed, and their data removed, when it ends (their output printed if it failed). */
export async function instances(t: { teardown(fn: () => unknown): void; passing(): boolean }, n: number, plan: InstancesPlan = {}): Promise<SpawnedRelay[]> {
  const started = await startInstances(n, plan);
  t.teardown(async () => {
    if (!t.passing()) for (const relay of started.relays) printTail(relay, 'the test failed');
    await Promise.all(started.relays.map((r) => killRelay(r, 'SIGKILL')));
    if (plan.dataDir === undefined) removeDir(started.dataDir);
  });
  return started.relays;
}
