// How an instance of the relay joins its cluster of hosts (`cluster` in the configuration): the
// NATS credentials read from their file, the NatsMesh started on the instance's presence table,
// and a wait for the other instances' snapshots before the instance serves (as a worker waits for
// its links on one host), so that a client welcomed here is known everywhere.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { clusterServers, type RelayConfig } from '../server/config.js';
import { Relay, type RelayOptions } from '../server/relay.js';
import { Presence } from '../workers/presence.js';
import { INSTANCE_ID_LENGTH } from './nats-stream.js';
import { NatsMesh } from './nats-mesh.js';
import { answerAsInstance, clusterStats, clusterWideConnections } from './cluster-admin.js';

/** How long an instance waits, at start, for NATS and the other instances' snapshots. */
export const CLUSTER_WAIT_MS = 5_000;

export interface ClusterMember {
  presence: Presence;
  /** The workers of one host share a group (they link over Unix sockets); by default its own. */
  group?: Buffer;
  /** This instance's index among the workers of its host (1 for one process): presence's tie-break. */
  index: number;
  maxBodyBytes: () => number;
}

export async function joinCluster(config: RelayConfig, member: ClusterMember, log: Logger): Promise<NatsMesh> {
  const mesh = new NatsMesh({
    servers: clusterServers(config), name: config.clusterName, heartbeatMs: config.clusterHeartbeatMs,
    group: member.group ?? randomBytes(INSTANCE_ID_LENGTH),
    ...natsAuth(config),
    presence: member.presence, log, index: member.index,
    forwardDeadlineMs: config.forwardDeadlineMs, forwardBudgetBytes: config.forwardBudgetBytes, maxBodyBytes: member.maxBodyBytes,
  });
  const synchronized = await mesh.start(CLUSTER_WAIT_MS);
  const fields = { instance: mesh.idHex, cluster: config.clusterName, servers: clusterServers(config), instances: mesh.instancesLinked };
  if (synchronized) log.info({ event: 'cluster_joined', ...fields }, 'joined the cluster');
  else log.warn({ event: 'cluster_not_synchronized', connected: mesh.connected, ...fields },
    'serving before the cluster is synchronised (NATS unreachable, or an instance slow to answer); /readyz says not ready until it is');
  return mesh;
}

/** The token or credentials the configuration names, read from their file (never logged). */
function natsAuth(config: RelayConfig): { token?: string; credentials?: string } {
  const read = (path: string, what: string): string => {
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new Error(`cannot read the NATS ${what} file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  };
  if (config.clusterTokenFile !== undefined) return { token: read(config.clusterTokenFile, 'token').trim() };
  if (config.clusterCredentialsFile !== undefined) return { credentials: read(config.clusterCredentialsFile, 'credentials') };
  return {};
}

export interface ClusterRelay {
  relay: Relay;
  mesh: NatsMesh;
  close(options?: { retryAfterMs?: number; graceMs?: number }): Promise<void>;
}

/** A single-process relay that is one instance of a cluster. */
export async function startClusterRelay(config: RelayConfig, options: RelayOptions & { logger: Logger }): Promise<ClusterRelay> {
  const presence = new Presence(1, config.forwardDeadlineMs);
  let relay: Relay | undefined;
  const mesh = await joinCluster(config, { presence, index: 1, maxBodyBytes: () => relay?.config.maxPayloadBytes ?? config.maxPayloadBytes }, options.logger);
  try {
    // The admin commands answer for every instance (./cluster-admin.ts).
    relay = await Relay.start(config, {
      ...options, peers: presence, cluster: mesh,
      adminConnections: (local) => clusterWideConnections(mesh, local, undefined, local),
      stats: () => clusterStats(mesh, () => relay!.observe(), () => relay!.observe()),
    });
  } catch (err) {
    await mesh.close();
    throw err;
  }
  const started = relay;
  mesh.attach(started.router, started.stats);
  mesh.answerWith((question) => answerAsInstance(started, mesh, undefined, question));
  return {
    relay: started,
    mesh,
    close: async (closeOptions) => {
      await started.close(closeOptions);
      await mesh.close();
    },
  };
}
