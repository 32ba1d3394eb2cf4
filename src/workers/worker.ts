// One worker of a relay made of several processes on one host (./primary.ts starts them): a whole
// relay (src/server/relay.ts) whose store is the primary's (src/store/remote/, or a database
// server it opens itself), whose peers are the other workers (./mesh.ts), and whose port every
// worker shares (reusePort, or node:cluster's primary handing out connections). In a cluster of
// hosts each worker is also an instance over NATS (src/cluster/).
import { join } from 'node:path';
import type { Logger } from 'pino';
import { HostedMailboxStore, HostedPolicyStore, HostLink } from '../store/remote/client.js';
import { openedByEachProcess } from '../store/open.js';
import type { RelayConfig } from '../server/config.js';
import { Relay, type RelayOptions } from '../server/relay.js';
import { Mesh } from './mesh.js';
import { joinCluster } from '../cluster/join.js';
import type { NatsMesh } from '../cluster/nats-mesh.js';
import { answerAsInstance, clusterStats, clusterWideConnections } from '../cluster/cluster-admin.js';

export interface WorkerPlan {
  /** 1..count */
  index: number;
  count: number;
  /** The run directory (mode 0700): the store host's socket and the workers' sockets. */
  runDir: string;
  /** Bind the port with reusePort (Node >= 22.12); else through node:cluster. */
  reusePort: boolean;
  /** The workers serving already: linked to before this one serves. */
  serving?: number[];
  /** The id the workers of this host share in a cluster of hosts (they ignore each other there). */
  group?: Buffer;
}

/** How long a starting worker waits for its links to the workers already serving. */
const LINK_WAIT_MS = 5_000;

/** The store host's socket in the run directory. */
export function storeSocketPath(runDir: string): string {
  return join(runDir, 'store.sock');
}

/** Workers read the policy version from memory (the host pushes it), so they look often. */
const WORKER_POLICY_POLL_MS = 100;

export interface Worker {
  relay: Relay;
  mesh: Mesh;
  /** Its membership of a cluster of hosts (null outside one). */
  cluster: NatsMesh | null;
  /** Stops the relay (GOING_AWAY to its clients), then the mesh and the store link. */
  close(options?: { retryAfterMs?: number; graceMs?: number }): Promise<void>;
}

/** What a worker process adds to its relay (the admin commands' relay-wide view). */
export type WorkerRelayOptions = Pick<RelayOptions, 'adminConnections' | 'stats'>;

export async function startWorker(config: RelayConfig, plan: WorkerPlan, log: Logger, extra: WorkerRelayOptions = {}): Promise<Worker> {
  const hosted = !openedByEachProcess(config.store);
  const link = hosted ? await HostLink.open(storeSocketPath(plan.runDir)) : null;
  if (link !== null) {
    // Stores are refused STORE_ERROR from now on; the primary's exit stops this worker too.
    link.onLost = (err) => log.error({ event: 'store_host_lost', err: err.message }, 'the store host went away');
  }
  let relay: Relay | undefined;
  const mesh = new Mesh({
    index: plan.index, count: plan.count, dir: plan.runDir, log,
    forwardDeadlineMs: config.forwardDeadlineMs, forwardBudgetBytes: config.forwardBudgetBytes,
    maxBodyBytes: () => relay?.config.maxPayloadBytes ?? config.maxPayloadBytes,
  });
  await mesh.start();
  // Before it takes a client: else a client welcomed here could be unknown, for a moment, to a
  // worker this one has not linked to yet (the welcome waits only for the links that are up).
  const unlinked = await mesh.linkedTo(plan.serving ?? [], LINK_WAIT_MS);
  if (unlinked.length > 0) log.warn({ event: 'worker_links_missing', peers: unlinked }, 'serving before every link to the other workers is up');
  // In a cluster of hosts each worker is an instance of it too; this host's workers are one group.
  let cluster: NatsMesh | null = null;
  if (config.cluster !== undefined) {
    cluster = await joinCluster(config, {
      presence: mesh.presence, index: plan.index, group: plan.group,
      maxBodyBytes: () => relay?.config.maxPayloadBytes ?? config.maxPayloadBytes,
    }, log);
  }
  try {
    relay = await Relay.start({ ...config, metricsPort: -1 }, {
      ...extra,
      // In a cluster of hosts the admin commands answer for every instance (this host's workers
      // are instances too); while NATS is down, for this host (extra: the primary's view).
      ...(cluster !== null ? clusterAdmin(cluster, () => relay!, plan.index, extra) : {}),
      logger: log,
      peers: mesh.presence,
      ...(cluster !== null ? { cluster } : {}),
      sweeps: false,
      listen: { reusePort: plan.reusePort },
      eventsDir: join(config.dataDir, 'events', `worker-${plan.index}`),
      ...(link !== null ? {
        openStore: async () => new HostedMailboxStore(link),
        openPolicyStore: async () => new HostedPolicyStore(link),
        policyPollMs: WORKER_POLICY_POLL_MS,
      } : {}),
    });
  } catch (err) {
    mesh.close();
    await cluster?.close();
    link?.close();
    throw err;
  }
  const started = relay;
  mesh.attach(started.router, started.stats);
  cluster?.attach(started.router, started.stats);
  cluster?.answerWith((question) => answerAsInstance(started, cluster!, plan.index, question));
  return {
    relay: started,
    mesh,
    cluster,
    close: async (options) => {
      await started.close(options);
      mesh.close();
      await cluster?.close();
      link?.close();
    },
  };
}

function clusterAdmin(cluster: NatsMesh, relay: () => Relay, index: number, host: WorkerRelayOptions): WorkerRelayOptions {
  return {
    adminConnections: (local) => clusterWideConnections(cluster, local, index, host.adminConnections?.(local) ?? local),
    stats: () => clusterStats(cluster, () => relay().observe(), host.stats ?? (() => relay().observe())),
  };
}
