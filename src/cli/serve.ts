// pulltab serve: start a relay (one process, or a primary and its workers: src/workers/).
import cluster from 'node:cluster';
import type { Logger } from 'pino';
import { ConfigError, configFromEnv, readConfigFile, resolveConfig, type RelayConfig } from '../server/config.js';
import { createLogger } from '../server/log.js';
import { formatRelayAddress, parseRelayAddress } from '../protocol/address.js';
import { Relay } from '../server/relay.js';
import { startClusterRelay } from '../cluster/join.js';
import { startPrimary, workerCount, type Primary } from '../workers/primary.js';
import { runWorkerProcess } from '../workers/worker-process.js';
import { CliError, parseCommand, stringOption, type CommandSpec } from './args.js';

/** How long SIGTERM may take before the process exits regardless. */
const SHUTDOWN_DEADLINE_MS = 15_000;

const spec = {
  name: 'serve',
  usage: 'serve [--config FILE] [--host H] [--port P] [--data DIR] [--workers N|auto] [--cluster nats://H:P,... --store postgres://...] [--tls-cert FILE --tls-key FILE | --tls-self-signed] [--root-key KEY] [--metrics-host H] [--metrics-port P]',
  description: 'Starts the relay and prints its address (pulltab://KEY@HOST:PORT, pulltabs:// with TLS) on a line of its own.\n'
    + 'Settings come from defaults, then the JSON config file, then PULLTAB_* environment variables,\n'
    + 'then these flags; each overrides the one before. docs/OPERATIONS.md lists every setting.\n'
    + 'SIGTERM drains and exits; SIGHUP reloads the file and environment (limits apply at once) and the TLS certificate.',
  options: {
    config: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    data: { type: 'string' },
    store: { type: 'string' },
    workers: { type: 'string' },
    cluster: { type: 'string' },
    'cluster-name': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'tls-self-signed': { type: 'boolean' },
    'root-key': { type: 'string' },
    'metrics-host': { type: 'string' },
    'metrics-port': { type: 'string' },
  },
  help: {
    '--config FILE': 'JSON configuration file',
    '--host H': 'address to listen on (default 0.0.0.0)',
    '--port P': 'TCP port (default 2652)',
    '--data DIR': 'data directory: relay identity and LMDB store (default ./data)',
    '--store ENGINE': 'mailbox engine: lmdb (embedded in DIR/mailbox, the default) or a PostgreSQL URL postgres://USER@HOST:PORT/DB',
    '--workers N': 'worker processes that make one relay on this host (auto: one per core; default 1)',
    '--cluster URLS': 'one relay on several hosts: the NATS servers its instances meet through (nats://HOST:PORT,...); needs --store postgres://...',
    '--cluster-name NAME': 'the same on every instance of this relay (default pulltab)',
    '--tls-cert FILE': 'TLS on the relay port: PEM certificate (chain), reread on SIGHUP',
    '--tls-key FILE': 'its PEM private key',
    '--tls-self-signed': 'TLS with a certificate the relay makes once in DIR/tls/ (clients pin the relay key, not the certificate)',
    '--root-key KEY': 'public key (base58) with every admin right (pulltab admin)',
    '--metrics-host H': 'address of the /metrics, /healthz, /readyz listener (default 127.0.0.1)',
    '--metrics-port P': 'its port (default 9652; 0 picks a free one; off, or =-1, turns it off)',
  },
} satisfies CommandSpec<Record<string, { type: 'string' | 'boolean' }>>;

export async function serve(argv: string[]): Promise<number> {
  const parsed = parseCommand(spec, argv);
  if (!parsed) return 0;
  const { values } = parsed;
  const configFile = stringOption(values, 'config');
  const load = () => resolveConfig([
    { source: configFile ?? 'file', values: configFile ? readConfigFile(configFile) : {} },
    { source: 'env', values: configFromEnv(process.env) },
    { source: 'flags', values: {
      host: values.host, port: values.port, dataDir: values.data, store: values.store, workers: values.workers,
      cluster: values.cluster, clusterName: values['cluster-name'],
      tlsCert: values['tls-cert'], tlsKey: values['tls-key'], tlsSelfSigned: values['tls-self-signed'] === true ? true : undefined,
      rootKey: values['root-key'], metricsHost: values['metrics-host'],
      metricsPort: values['metrics-port'] === 'off' ? -1 : values['metrics-port'],
    } },
  ]);
  let config;
  try {
    config = load();
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, 2);
    throw err;
  }
  // A closed stdout (a pipe whose reader went away) must cost the logs, not the relay.
  process.stdout.on('error', () => {});
  const logger = createLogger(config.logLevel);
  if (cluster.isWorker) return runWorkerProcess(load, logger);
  if (workerCount(config.workers) > 1) return servePrimary(config, load, logger);
  let relay: Relay;
  let close = (options: { retryAfterMs: number; graceMs: number }) => relay.close(options);
  try {
    if (config.cluster !== undefined) {
      const member = await startClusterRelay(config, { logger });
      relay = member.relay;
      close = member.close;
    } else {
      relay = await Relay.start(config, { logger });
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE') throw new CliError(`cannot listen on ${config.host}:${config.port}: address already in use`);
    if (e.code === 'EACCES') throw new CliError(`cannot listen on ${config.host}:${config.port}: permission denied`);
    if (e.code === 'METRICS_LISTEN') throw new CliError(e.message);
    throw new CliError(`cannot start the relay: ${e.message}`);
  }
  // The address first, on a line of its own, so scripts and people can take it as it is.
  process.stdout.write(relay.address + '\n');
  hintAddress(config, logger, (host) => relay.addressFor(host));
  logger.info({ event: 'relay_started', address: relay.address, port: relay.port, tls: relay.tls, metricsPort: relay.metricsPort }, 'relay started');
  // SIGHUP: read the file and environment again and apply the reloadable settings.
  return untilStopped(logger, 'shutting down', () => close({ retryAfterMs: 1000, graceMs: 5000 }), () => relay.reload(load()));
}

function hintAddress(config: RelayConfig, logger: Logger, addressFor: (host: string) => string): void {
  if (config.host === '0.0.0.0' || config.host === '::') {
    logger.info({ event: 'address_hint' }, `listening on all interfaces; remote clients use ${addressFor('<this-host>')}`);
  }
}

/** A relay of several worker processes (src/workers/primary.ts): the primary's part. */
async function servePrimary(config: RelayConfig, load: () => RelayConfig, logger: Logger): Promise<number> {
  let primary: Primary;
  try {
    primary = await startPrimary(config, logger);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'METRICS_LISTEN') throw new CliError(e.message);
    throw new CliError(`cannot start the relay: ${e.message}`);
  }
  process.stdout.write(primary.address + '\n');
  hintAddress(config, logger, (host) => formatRelayAddress({ ...parseRelayAddress(primary.address), host }));
  logger.info({ event: 'relay_started', address: primary.address, port: primary.port, workers: workerCount(config.workers), metricsPort: primary.metricsPort },
    'relay started');
  return untilStopped(logger, 'shutting down every worker', () => primary.stop(), () => {
    load(); // a bad file is reported here, once, and no worker reloads it
    primary.reload();
  });
}

/**
 * Runs until SIGTERM or SIGINT: then stop() (with a deadline past which the process exits anyway:
 * LMDB commits are durable), and a second signal exits at once. SIGHUP calls reload(); a reload
 * that throws is logged and changes nothing. Resolves with the exit status.
 */
function untilStopped(logger: Logger, shutdownMessage: string, stop: () => Promise<void>, reload: () => void): Promise<number> {
  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: string) => {
      if (stopping) {
        logger.warn({ event: 'forced_exit', signal }, 'second signal: exiting now');
        process.exit(1);
      }
      stopping = true;
      logger.info({ event: 'shutdown', signal }, shutdownMessage);
      setTimeout(() => {
        logger.error({ event: 'shutdown_deadline' }, 'shutdown took too long: exiting');
        process.exit(1);
      }, SHUTDOWN_DEADLINE_MS).unref();
      stop().then(() => resolve(0), (err: Error) => {
        logger.error({ event: 'shutdown_failed', err: err.message }, 'shutdown failed');
        resolve(1);
      });
    };
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGHUP', () => {
      try {
        reload();
      } catch (err) {
        logger.error({ event: 'config_reload_failed', err: (err as Error).message }, 'configuration not reloaded');
      }
    });
  });
}
