// `pulltab serve --workers N`: the primary process of a relay made of N worker processes on one
// host. It makes the run directory (mode 0700) for the sockets, owns the embedded store
// (./store-owner.ts), starts the workers (node:cluster) one after the other, prints the relay's
// address once all of them serve, restarts a worker that dies, serves /metrics for the whole
// relay, and passes SIGTERM and SIGHUP on. It serves no client itself.
//
// Accepting: on Node >= 22.12 each worker binds the port itself with reusePort and the kernel
// spreads connections; on older Node the primary accepts and hands connections round-robin
// (node:cluster's default).
import { randomBytes } from 'node:crypto';
import cluster, { type Worker as ClusterWorker } from 'node:cluster';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { loadOrCreateIdentityFile } from '../crypto/keys.js';
import type { RelayConfig } from '../server/config.js';
import { startMetricsServer, type MetricsServer } from '../server/metrics.js';
import { mergeObservations, type Observation, type WorkerShare } from '../server/observation.js';
import { openedByEachProcess } from '../store/open.js';
import { openStoreOwner, type StoreOwner } from './store-owner.js';

/** What a worker and the primary say to each other over node:cluster's channel (rare, small). */
export type ToWorker =
  | { type: 'stop' }
  | { type: 'reload' }
  /** A question about this worker alone (for the primary, or for the relay-wide answer to another worker). */
  | { type: 'local'; id: number; what: LocalQuestion; key?: string }
  /** The relay-wide answer to the worker's 'ask'. */
  | { type: 'answer'; id: number; value: unknown };
export type ToPrimary =
  /** synchronized: in a cluster of hosts, whether its presence is synchronised (see 'synchronized'). */
  | { type: 'ready'; port: number; address: string; synchronized: boolean }
  /** In a cluster of hosts: its presence became synchronised, or stopped being (NATS lost, say). */
  | { type: 'synchronized'; value: boolean }
  | { type: 'failed'; message: string }
  | { type: 'local-answer'; id: number; value: unknown }
  /** An admin command on this worker needs the whole relay: every worker's sessions, a kick everywhere, the stats. */
  | { type: 'ask'; id: number; what: RelayQuestion; key?: string };
/** observe: the worker's Observation; sessions: its live AdminSessions; kick: how many it kicked (key: hex). */
export type LocalQuestion = 'observe' | 'sessions' | 'kick';
export type RelayQuestion = 'stats' | 'sessions' | 'kick';

/** The environment a worker is started with (beside the primary's own). */
export const WORKER_ENV = { index: 'PULLTAB_WORKER_INDEX', count: 'PULLTAB_WORKER_COUNT', runDir: 'PULLTAB_RUN_DIR',
  reusePort: 'PULLTAB_REUSE_PORT', port: 'PULLTAB_WORKER_PORT', serving: 'PULLTAB_WORKERS_SERVING',
  group: 'PULLTAB_WORKERS_GROUP' } as const;

const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 5_000;
/** A worker that lived this long before dying is restarted at once again (not crash-looping). */
const STABLE_MS = 10_000;
const OBSERVE_TIMEOUT_MS = 2_000;

/** Whether this Node binds one port from several processes (net reusePort: 22.12+, 23.1+, Linux). */
export function supportsReusePort(): boolean {
  const [major, minor] = process.versions.node.split('.').map(Number);
  const version = major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
  return version && process.platform === 'linux';
}

export function workerCount(setting: RelayConfig['workers']): number {
  return setting === 'auto' ? availableParallelism() : setting;
}

interface Slot {
  index: number;
  worker: ClusterWorker | null;
  up: boolean;
  /** In a cluster of hosts: its presence is synchronised (always true outside one). */
  synchronized: boolean;
  restarts: number;
  startedAt: number;
  backoffMs: number;
}

export interface Primary {
  /** The address clients use (the first worker's, as all of them share it). */
  address: string;
  port: number;
  metricsPort: number | null;
  /** Stops every worker (GOING_AWAY to their clients), then the store; resolves when done. */
  stop(): Promise<void>;
  /** SIGHUP: every worker reads its configuration again. */
  reload(): void;
}

export async function startPrimary(config: RelayConfig, log: Logger): Promise<Primary> {
  const count = workerCount(config.workers);
  mkdirSync(config.dataDir, { recursive: true });
  // Made here once, so that no two workers race to create it.
  loadOrCreateIdentityFile(join(config.dataDir, 'relay-identity.json'));
  const runDir = mkdtempSync(join(tmpdir(), 'pulltab-run-'));
  chmodSync(runDir, 0o700);
  const removeRunDir = () => rmSync(runDir, { recursive: true, force: true });
  let owner: StoreOwner | null = null;
  try {
    if (!openedByEachProcess(config.store)) owner = await openStoreOwner(config, runDir, log);
  } catch (err) {
    removeRunDir();
    throw err;
  }
  const reusePort = config.workerAccept === 'round-robin' ? false : supportsReusePort();
  if (config.workerAccept === 'reuse-port' && !reusePort) {
    await owner?.close();
    removeRunDir();
    throw new Error(`workerAccept reuse-port needs Node 22.12 or later on Linux (this is Node ${process.versions.node} on ${process.platform})`);
  }
  const startedAt = Date.now();
  // In a cluster of hosts: this host's workers, which reach each other over the Unix-socket mesh.
  const group = randomBytes(16).toString('hex');
  const slots: Slot[] = [];
  let stopping = false;
  let port = config.port;
  let address = '';
  const localAnswers = new Map<number, (value: unknown) => void>();
  let nextQuestion = 1;
  /** Asks one worker about itself; null when it does not answer in time. */
  const askWorker = (slot: Slot, what: LocalQuestion, key?: string): Promise<unknown> => new Promise((resolve) => {
    const id = nextQuestion++;
    const timer = setTimeout(() => finish(null), OBSERVE_TIMEOUT_MS);
    const finish = (value: unknown) => {
      clearTimeout(timer);
      localAnswers.delete(id);
      resolve(value);
    };
    localAnswers.set(id, finish);
    if (slot.worker === null) finish(null);
    else send(slot.worker, { type: 'local', id, what, ...(key !== undefined ? { key } : {}) });
  });
  const upSlots = () => slots.filter((s) => s.up && s.worker !== null);
  /** What a worker asked for, over the whole relay. */
  const relayAnswer = async (what: RelayQuestion, key?: string): Promise<unknown> => {
    if (what === 'stats') return observe();
    const answers = await Promise.all(upSlots().map((slot) => askWorker(slot, what, key)));
    if (what === 'kick') return answers.reduce<number>((n, a) => n + (typeof a === 'number' ? a : 0), 0);
    return answers.flatMap((a) => (Array.isArray(a) ? a : []));
  };

  const fork = (slot: Slot): Promise<void> => new Promise((resolve, reject) => {
    const worker = cluster.fork({
      [WORKER_ENV.index]: String(slot.index), [WORKER_ENV.count]: String(count), [WORKER_ENV.runDir]: runDir,
      [WORKER_ENV.reusePort]: reusePort ? '1' : '0',
      // With reusePort every worker binds the port the first one got; through node:cluster they share the handle.
      [WORKER_ENV.port]: String(reusePort ? port : config.port),
      // It links to these before it serves (./worker.ts).
      [WORKER_ENV.serving]: slots.filter((s) => s.up && s !== slot).map((s) => s.index).join(','),
      [WORKER_ENV.group]: group,
    });
    slot.worker = worker;
    slot.startedAt = Date.now();
    worker.on('message', (message: ToPrimary) => {
      if (message.type === 'ready') {
        slot.up = true;
        slot.synchronized = message.synchronized;
        port = message.port;
        address ||= message.address;
        log.info({ event: 'worker_started', worker: slot.index, pid: worker.process.pid }, 'worker started');
        resolve();
      } else if (message.type === 'synchronized') {
        slot.synchronized = message.value;
      } else if (message.type === 'local-answer') {
        localAnswers.get(message.id)?.(message.value);
      } else if (message.type === 'ask') {
        relayAnswer(message.what, message.key).then((value) => send(worker, { type: 'answer', id: message.id, value }),
          (err: Error) => send(worker, { type: 'answer', id: message.id, value: { error: err.message } }));
      } else if (message.type === 'failed') {
        reject(new Error(message.message));
      }
    });
    worker.on('exit', (code, signal) => {
      const wasUp = slot.up;
      slot.up = false;
      slot.worker = null;
      if (!wasUp) reject(new Error(`worker ${slot.index} exited before it served (${signal ?? `code ${code}`})`));
      if (stopping) return;
      const lived = Date.now() - slot.startedAt;
      slot.backoffMs = lived > STABLE_MS ? RESTART_MIN_MS : Math.min(RESTART_MAX_MS, slot.backoffMs * 2);
      log.error({ event: 'worker_died', worker: slot.index, code, signal, restartInMs: slot.backoffMs },
        'worker died; its clients reconnect to the others, and it is started again');
      setTimeout(() => {
        if (stopping) return;
        slot.restarts++;
        fork(slot).catch((err: Error) => log.error({ event: 'worker_restart_failed', worker: slot.index, err: err.message }, 'worker did not start again'));
      }, slot.backoffMs).unref();
    });
  });

  const stopWorkers = async (): Promise<void> => {
    stopping = true;
    const exits = slots.map((slot) => slot.worker === null ? Promise.resolve() : new Promise<void>((resolve) => {
      slot.worker!.once('exit', () => resolve());
      send(slot.worker!, { type: 'stop' });
    }));
    await Promise.all(exits);
  };

  try {
    for (let index = 1; index <= count; index++) {
      const slot: Slot = { index, worker: null, up: false, synchronized: true, restarts: 0, startedAt: 0, backoffMs: RESTART_MIN_MS / 2 };
      slots.push(slot);
      await fork(slot);
    }
  } catch (err) {
    await stopWorkers();
    await owner?.close();
    removeRunDir();
    throw err;
  }

  async function observe(): Promise<Observation> {
    const live = upSlots();
    const parts = (await Promise.all(live.map((slot) => askWorker(slot, 'observe')))) as Array<Observation | null>;
    const got = parts.filter((o): o is Observation => o !== null);
    const shares: WorkerShare[] = slots.map((slot) => {
      const i = live.indexOf(slot);
      const o = i >= 0 ? parts[i] : null;
      return { worker: slot.index, up: slot.up && o !== null, restarts: slot.restarts,
        authenticated: o?.connections.authenticated ?? 0, messagesIn: o?.messages.in ?? 0 };
    });
    if (got.length === 0) throw new Error('no worker answered');
    return mergeObservations(got, shares, Math.round((Date.now() - startedAt) / 1000));
  }

  let metrics: MetricsServer | null = null;
  if (config.metricsPort >= 0) {
    try {
      metrics = await startMetricsServer({ host: config.metricsHost, port: config.metricsPort,
        source: { observe, ready: () => !stopping && slots.every((s) => s.up && s.synchronized) && (owner?.store.status().writable ?? true) } });
    } catch (err) {
      await stopWorkers();
      await owner?.close();
      removeRunDir();
      const e = err as NodeJS.ErrnoException;
      throw Object.assign(new Error(`cannot listen for metrics on ${config.metricsHost}:${config.metricsPort}: ${e.code === 'EADDRINUSE' ? 'address already in use' : e.message}`), { code: 'METRICS_LISTEN' });
    }
  }

  let stopped: Promise<void> | null = null;
  return {
    address,
    port,
    metricsPort: metrics?.port ?? null,
    reload: () => {
      for (const slot of slots) if (slot.worker !== null) send(slot.worker, { type: 'reload' });
    },
    stop: () => {
      stopped ??= (async () => {
        await stopWorkers();
        await metrics?.close();
        await owner?.close();
        removeRunDir();
      })();
      return stopped;
    },
  };
}

function send(worker: ClusterWorker, message: ToWorker): void {
  try {
    worker.send(message);
  } catch { /* it is exiting: its exit is handled */ }
}
