// The relay under test as a cluster, for the soak: a private nats-server and PostgreSQL
// (test/nats-server.ts, test/postgres-cluster.ts), one database, and N instances of one relay
// (`serve --store postgres://... --cluster nats://... --cluster-name NAME`), each a child process
// with its own data directory holding a copy of instance 1's relay-identity.json, as
// test/cluster.test.ts starts them; all of it stopped and removed at the end.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { natsSkipReason, startNatsServer, type NatsServer } from '../../test/nats-server.js';
import { postgresSkipReason, startCluster, type Cluster } from '../../test/postgres-cluster.js';
import { freePort } from '../../test/free-port.js';
import { startRelayProcess, type RelayProcess } from './relay-process.js';

export interface SoakCluster {
  /** Instance i + 1 is instances[i]. */
  instances: RelayProcess[];
  natsUrl: string;
  storeUrl: string;
  stop(): Promise<void>;
}

/** Why a cluster cannot be had here (nats-server or PostgreSQL missing), or null. Throws where PULLTAB_REQUIRE_* demand them. */
export function clusterSkipReason(): string | null {
  return postgresSkipReason() ?? natsSkipReason();
}

/** The settings test/cluster.test.ts gives its instances: a lost instance is dropped within a second. */
const CLUSTER_CONFIG = { clusterHeartbeatMs: 200, forwardDeadlineMs: 1000 };

/**
 * Starts the servers and n instances. With evidenceDir, every instance logs at info with
 * logDeliveries on, into evidenceDir/instance-<i>.log.
 */
export async function startSoakCluster(n: number, env: Record<string, string>, log: (line: string) => void = () => {}, evidenceDir?: string): Promise<SoakCluster> {
  const reason = clusterSkipReason();
  if (reason !== null) throw new Error(`--instances needs nats-server and PostgreSQL: ${reason}`);
  const dir = mkdtempSync(join(tmpdir(), 'pulltab-soak-cluster-'));
  if (evidenceDir !== undefined) mkdirSync(evidenceDir, { recursive: true });
  const instances: RelayProcess[] = [];
  let nats: NatsServer | null = null;
  let pg: Cluster | null = null;
  // If this process goes (Ctrl-C), the servers go with it (the instances see to themselves):
  // nats-server killed, the postmaster told to stop at once (SIGQUIT). Only synchronous work here.
  const onExit = () => {
    void nats?.kill();
    try {
      if (pg !== null) process.kill(pg.pid(), 'SIGQUIT');
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);
  const stop = async () => {
    // The instances first (their stores and NATS clients close cleanly), then what they used.
    await Promise.all(instances.map((r) => r.stop()));
    await nats?.stop();
    await pg?.destroy();
    process.off('exit', onExit);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    nats = await startNatsServer();
    pg = await startCluster();
    const storeUrl = await pg.createDatabase();
    const name = `soak${process.pid}x${Math.floor(Math.random() * 1e9)}`;
    const configPath = join(dir, 'config.json');
    writeFileSync(configPath, JSON.stringify(evidenceDir === undefined ? CLUSTER_CONFIG : { ...CLUSTER_CONFIG, logDeliveries: true }));
    for (let i = 1; i <= n; i++) {
      const dataDir = join(dir, `instance-${i}`);
      mkdirSync(dataDir, { recursive: true });
      // Every instance holds the relay key (docs/OPERATIONS.md, "Running a cluster"): instance 1 made it.
      if (i > 1) copyFileSync(join(dir, 'instance-1', 'relay-identity.json'), join(dataDir, 'relay-identity.json'));
      instances.push(await startRelayProcess(evidenceDir === undefined ? env : { ...env, PULLTAB_LOG_LEVEL: 'info' }, {
        dataDir, metricsPort: await freePort(), logFile: evidenceDir === undefined ? undefined : join(evidenceDir, `instance-${i}.log`),
        args: ['--store', storeUrl, '--cluster', nats.url, '--cluster-name', name, '--config', configPath],
      }));
    }
    // Every instance linked to every other before the clients come (bounded: 20 s).
    const deadline = Date.now() + 20_000;
    for (;;) {
      const linked = await Promise.all(instances.map((r) => metric(r, 'pulltab_cluster_instances').catch(() => NaN)));
      if (linked.every((l) => l === n - 1)) break;
      if (Date.now() > deadline) throw new Error(`the instances did not all link within 20 s (instances each sees: ${linked.join(', ')})`);
      await new Promise((r) => setTimeout(r, 100));
    }
    log(`cluster of ${n} instances over ${nats.url}, store ${storeUrl}: ${instances.map((r, i) => `${i + 1}: port ${r.port} pid ${r.pid}`).join('; ')}`);
    return { instances, natsUrl: nats.url, storeUrl, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The text of a relay process's /metrics (bounded: 5 s). */
export function metricsText(relay: RelayProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    if (relay.metricsPort === null) return reject(new Error('no metrics port'));
    const req = get({ host: '127.0.0.1', port: relay.metricsPort, path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('metrics timed out')));
    req.on('error', reject);
  });
}

/** Sum of a metric's samples (a name, or a name with its labels) in /metrics text. */
export function metricFrom(text: string, name: string): number {
  let total = 0;
  for (const line of text.split('\n')) if (line.startsWith(name + ' ') || line.startsWith(name + '{')) total += Number(line.split(' ').pop());
  return total;
}

export async function metric(relay: RelayProcess, name: string): Promise<number> {
  return metricFrom(await metricsText(relay), name);
}

/** What the instances say about the cluster's traffic at the end (from each one's /metrics), for the report. */
export interface InstanceCounters {
  forwards: number;
  forwardsReceived: number;
  /** Forwards that missed (the key had moved, the link was full or past forwardDeadlineMs): stored at the sender's instance if storable. */
  forwardMisses: Record<string, number>;
  linkGaps: number;
  sessionsReplaced: number;
}

export async function instanceCounters(relay: RelayProcess): Promise<InstanceCounters | null> {
  let text: string;
  try {
    text = await metricsText(relay);
  } catch {
    return null;
  }
  const misses: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^pulltab_forward_misses_total\{reason="([^"]+)"\} (\S+)/.exec(line);
    if (m) misses[m[1]] = Number(m[2]);
  }
  return {
    forwards: metricFrom(text, 'pulltab_forwards_total'),
    forwardsReceived: metricFrom(text, 'pulltab_forwards_received_total'),
    forwardMisses: misses,
    linkGaps: metricFrom(text, 'pulltab_cluster_link_gaps_total'),
    sessionsReplaced: metricFrom(text, 'pulltab_sessions_replaced_total'),
  };
}
