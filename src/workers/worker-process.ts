// A worker process of `pulltab serve --workers N` (node:cluster runs the same command again with
// the plan in its environment: ./primary.ts WORKER_ENV). It starts its relay (./worker.ts), tells
// the primary its port, and does what the primary asks: stop, reload, observe. SIGTERM and SIGINT
// stop it too (systemd signals every process of the unit). If the primary goes, it goes.
import type { Logger } from 'pino';
import type { RelayConfig } from '../server/config.js';
import { WORKER_ENV, type ToWorker } from './primary.js';
import { answerLocal, PrimaryChannel, relayWideConnections, tell } from './relay-wide.js';
import { startWorker, type WorkerPlan } from './worker.js';

/** How often a worker in a cluster of hosts looks whether its presence is still synchronised. */
const SYNC_REPORT_MS = 250;

function planFromEnv(env: NodeJS.ProcessEnv): WorkerPlan & { port: number } {
  const index = Number(env[WORKER_ENV.index]);
  const count = Number(env[WORKER_ENV.count]);
  const runDir = env[WORKER_ENV.runDir];
  if (!Number.isInteger(index) || !Number.isInteger(count) || !runDir) throw new Error('worker started without its plan');
  const serving = (env[WORKER_ENV.serving] ?? '').split(',').filter((i) => i !== '').map(Number);
  const group = /^[0-9a-f]{32}$/.test(env[WORKER_ENV.group] ?? '') ? Buffer.from(env[WORKER_ENV.group]!, 'hex') : undefined;
  return { index, count, runDir, reusePort: env[WORKER_ENV.reusePort] === '1', port: Number(env[WORKER_ENV.port]), serving, group };
}

/** Runs until stopped; resolves with the exit status. */
export async function runWorkerProcess(load: () => RelayConfig, baseLog: Logger): Promise<number> {
  const plan = planFromEnv(process.env);
  const log = baseLog.child({ worker: plan.index });
  // maxConnections is the relay's: each worker admits its share (rounded up), so N workers
  // together admit about what one process would.
  const configOf = (): RelayConfig => {
    const config = load();
    return { ...config, port: plan.port, maxConnections: Math.ceil(config.maxConnections / plan.count) };
  };
  const channel = new PrimaryChannel();
  // Answers may come while the worker starts (an admin request cannot, before it listens).
  process.on('message', (message: ToWorker) => {
    if (message.type === 'answer') channel.answered(message);
  });
  let worker;
  try {
    worker = await startWorker(configOf(), plan, log, {
      adminConnections: (local) => relayWideConnections(channel, local),
      stats: () => channel.ask('stats') as Promise<object>,
    });
  } catch (err) {
    tell({ type: 'failed', message: (err as Error).message });
    throw err;
  }
  const { relay, cluster } = worker;
  tell({ type: 'ready', port: relay.port, address: relay.address, synchronized: cluster?.synchronized ?? true });
  if (cluster !== null) {
    // The primary's /readyz is not ready while any worker's cluster presence is not synchronised.
    let said = cluster.synchronized;
    setInterval(() => {
      if (cluster.synchronized === said) return;
      said = cluster.synchronized;
      tell({ type: 'synchronized', value: said });
    }, SYNC_REPORT_MS).unref();
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = () => {
      if (stopping) return;
      stopping = true;
      const exit = (code: number) => {
        // The channel to the primary would keep this process alive: close it, and leave at once
        // should anything else still hold the event loop (the primary waits for this exit).
        process.disconnect?.();
        setTimeout(() => process.exit(code), 500).unref();
        resolve(code);
      };
      worker.close({ retryAfterMs: 1000, graceMs: 5000 }).then(() => exit(0), () => exit(1));
    };
    process.on('message', (message: ToWorker) => {
      if (message.type === 'stop') stop();
      else if (message.type === 'reload') {
        try {
          relay.reload(configOf());
        } catch (err) {
          log.error({ event: 'config_reload_failed', err: (err as Error).message }, 'configuration not reloaded');
        }
      } else if (message.type === 'local') {
        answerLocal(relay, plan.index, message.what, message.key).then((value) => tell({ type: 'local-answer', id: message.id, value }),
          () => tell({ type: 'local-answer', id: message.id, value: null }));
      }
    });
    // The primary is gone (it died): nothing supervises this worker nor owns the store any more.
    process.on('disconnect', () => {
      log.error({ event: 'primary_gone' }, 'the primary process is gone: stopping');
      stop();
    });
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    // The primary reloads every worker on SIGHUP; one sent here directly is taken the same way.
    process.on('SIGHUP', () => relay.reload(configOf()));
  });
}
