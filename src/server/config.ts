// Relay configuration: defaults, then a JSON file, then PULLTAB_* environment variables,
// then command-line flags (each overrides the one before). Validated once at start; a bad
// value stops the relay with a message naming the key.
import { readFileSync } from 'node:fs';
import type { MailboxLimits } from '../store/mailbox.js';
import { openedByEachProcess, storeSettingError } from '../store/open.js';
import { z } from 'zod';
import { decodeKey } from '../crypto/keys.js';
import { MAX_PAYLOAD_BYTES_SETTING } from '../protocol/constants.js';

const MiB = 1024 * 1024;
const DAY = 24 * 3600;

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max);
const bool = z.union([z.boolean(), z.enum(['true', 'false', '1', '0', 'yes', 'no'])])
  .transform((v) => v === true || v === 'true' || v === '1' || v === 'yes');

const configShape = z.object({
  /** Address the relay listens on. */
  host: z.string().min(1).default('0.0.0.0'),
  port: int(0, 65535).default(2652),
  /** Directory for the relay's identity and its LMDB store. */
  dataDir: z.string().min(1).default('./data'),
  /** The mailbox engine (src/store/open.ts): lmdb, embedded in dataDir. */
  store: z.string().min(1).default('lmdb').superRefine((value, ctx) => {
    const error = storeSettingError(value);
    if (error !== null) ctx.addIssue({ code: 'custom', message: error });
  }),
  /**
   * TLS on the relay port: a PEM certificate (chain) and its private key, read at start and again
   * at SIGHUP; or tlsSelfSigned, a certificate the relay makes once and keeps in its data
   * directory. Clients pin the relay key, not the certificate, so a self-signed one is enough.
   */
  tlsCert: z.string().min(1).optional(),
  tlsKey: z.string().min(1).optional(),
  tlsSelfSigned: bool.default(false),
  /** Connections at once (authenticated or not); more get RELAY_FULL. */
  maxConnections: int(1).default(10_000),
  /** Send-only connections one key may have open at once; more get TOO_MANY_CONNECTIONS. */
  maxSendOnlyPerKey: int(1).default(16),
  /** Connections still in the handshake at once; more get RELAY_FULL. */
  maxHandshakes: int(1).default(1_000),
  handshakeTimeoutMs: int(100).default(10_000),
  /** Largest message body. */
  maxPayloadBytes: int(1, MAX_PAYLOAD_BYTES_SETTING).default(MiB),
  maxRecipients: int(1, 255).default(64),
  /** Bytes queued to one connection before its messages spill to its mailbox or are refused. */
  outboundBudgetBytes: int(64 * 1024).default(4 * MiB),
  /**
   * Body bytes of one connection's storable SENDs awaiting their commit, and of all connections',
   * past which the relay stops reading from the sender until commits catch up (memory bound).
   */
  storePendingBytesPerConnection: int(64 * 1024).default(4 * MiB),
  storePendingBytesTotal: int(64 * 1024).default(256 * MiB),
  /** Frames read from one connection in one event-loop turn before the others get theirs (fairness). */
  readFramesPerTurn: int(1).default(1024),
  /** Messages written to a connection and not yet acknowledged, before the relay waits for acks. */
  inflightWindow: int(1, 1_000_000).default(4096),
  /** Seconds a stored message lives when the sender gives no TTL. */
  defaultTtlSeconds: int(1).default(7 * DAY),
  maxTtlSeconds: int(1).default(30 * DAY),
  mailboxMaxCount: int(1).default(10_000),
  mailboxMaxBytes: int(1).default(50 * MiB),
  storeMaxBytes: int(1).default(10 * 1024 * MiB),
  /** How often expired stored messages are swept. */
  sweepIntervalMs: int(1000).default(60_000),
  /** On a store that several relays share (PostgreSQL): how often to look for their policy changes. */
  policyPollMs: int(100).default(2_000),
  /** A connection with output pending that writes nothing for this long is closed (SLOW_CONSUMER). */
  writeDeadlineMs: int(100).default(10_000),
  /** A connection silent this long is pinged... */
  pingIntervalMs: int(100).default(30_000),
  /** ...and closed (IDLE_TIMEOUT) if still silent this long after the ping. */
  pingTimeoutMs: int(100).default(15_000),
  /** New connections accepted per second (token bucket); more get RELAY_FULL. */
  acceptRatePerSecond: int(1).default(5_000),
  acceptBurst: int(1).default(5_000),
  /** Per-connection inbound limits, enforced by pausing reads; 0 means unlimited. Reloaded on SIGHUP. */
  rateBytesPerSecond: int(0).default(0),
  rateBurstBytes: int(0).default(0),
  rateMessagesPerSecond: int(0).default(0),
  rateBurstMessages: int(0).default(0),
  /** The key with every admin right (base58); none by default. */
  rootKey: z.string().trim().refine((k) => {
    try { decodeKey(k); return true; } catch { return false; }
  }, 'must be a base58 Ed25519 public key (pulltab id prints one)').optional(),
  /** The operators' HTTP listener (/metrics, /healthz, /readyz); port -1 turns it off, 0 picks a free one. */
  metricsHost: z.string().min(1).default('127.0.0.1'),
  metricsPort: int(-1, 65535).default(9652),
  /** The event log under <dataDir>/events: on or off, rotation size, rotated files kept. */
  eventLog: bool.default(true),
  eventLogMaxBytes: int(1024).default(10 * MiB),
  eventLogFiles: int(0, 1000).default(5),
  /**
   * Worker processes that make up the relay on this host (\`auto\`: one per core). 1 is a single
   * process; more share one address, relay key, data directory and metrics endpoint (src/workers/).
   */
  workers: z.union([z.literal('auto'), int(1, 1024)]).default(1),
  /**
   * How workers share the port: reuse-port (each binds it, the kernel spreads connections; Node >=
   * 22.12 on Linux), round-robin (the primary accepts and hands them out in turn: node:cluster), or
   * auto (reuse-port where Node has it).
   */
  workerAccept: z.enum(['auto', 'reuse-port', 'round-robin']).default('auto'),
  /** Between workers: a forward without an answer for this long misses (stored if storable, else refused). */
  forwardDeadlineMs: int(100).default(2_000),
  /** Between workers: bytes queued on one link before forwards on it miss as busy. */
  forwardBudgetBytes: int(64 * 1024).default(16 * MiB),
  /**
   * One relay on several hosts (src/cluster/): the NATS servers its instances meet through, as a
   * comma-separated list of nats://HOST:PORT (tls://HOST:PORT for TLS to NATS). Needs a store every
   * instance shares (PostgreSQL).
   */
  cluster: z.string().min(1).optional().superRefine((value, ctx) => {
    const error = value === undefined ? null : clusterServersError(value);
    if (error !== null) ctx.addIssue({ code: 'custom', message: error });
  }),
  /** The cluster's name: every instance of one relay gives the same, and no other relay on those NATS servers. */
  clusterName: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and - (at most 64)').default('pulltab'),
  /** NATS authentication: a file holding a token, or a user's credentials file (.creds); read at start, never logged. */
  clusterTokenFile: z.string().min(1).optional(),
  clusterCredentialsFile: z.string().min(1).optional(),
  /** How often each instance tells the others it is there; three missed and it is dropped with its keys. */
  clusterHeartbeatMs: int(50, 60_000).default(1_000),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Log one line per delivery (sender and recipient keys, sizes); off by default. */
  logDeliveries: bool.default(false),
}).strict();

export const configSchema = configShape.refine((c) => c.defaultTtlSeconds <= c.maxTtlSeconds, {
  message: 'defaultTtlSeconds must not exceed maxTtlSeconds', path: ['defaultTtlSeconds'],
}).refine((c) => (c.tlsCert === undefined) === (c.tlsKey === undefined), {
  message: 'tlsCert and tlsKey go together: give both, or neither', path: ['tlsCert'],
}).refine((c) => !(c.tlsSelfSigned && c.tlsCert !== undefined), {
  message: 'tlsSelfSigned makes its own certificate: give it or tlsCert and tlsKey, not both', path: ['tlsSelfSigned'],
}).refine((c) => c.cluster === undefined || openedByEachProcess(c.store), {
  message: 'a cluster needs a store that every instance shares: store postgres://USER@HOST:PORT/DB', path: ['cluster'],
}).refine((c) => !(c.clusterTokenFile !== undefined && c.clusterCredentialsFile !== undefined), {
  message: 'give clusterTokenFile or clusterCredentialsFile, not both', path: ['clusterTokenFile'],
});

/** Why a `cluster` setting is not a list of NATS server URLs (null: it is). */
function clusterServersError(value: string): string | null {
  for (const server of value.split(',').map((s) => s.trim())) {
    let url: URL;
    try {
      url = new URL(server);
    } catch {
      return `"${server}" is not a URL: give nats://HOST:PORT[,nats://HOST:PORT...]`;
    }
    if (url.protocol !== 'nats:' && url.protocol !== 'tls:') return `"${url.protocol}//${url.host}" is not a NATS server: give nats://HOST:PORT`;
    if (url.username !== '' || url.password !== '') return 'put NATS credentials in clusterTokenFile or clusterCredentialsFile, not in the URL (it is logged)';
  }
  return null;
}

/** The NATS servers of a `cluster` setting. */
export function clusterServers(config: RelayConfig): string[] {
  return (config.cluster ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
}

/** TLS is on when a certificate is configured or the relay makes its own. */
export function tlsEnabled(config: RelayConfig): boolean {
  return config.tlsCert !== undefined || config.tlsSelfSigned;
}

export type RelayConfig = z.infer<typeof configSchema>;
export type RelayConfigInput = z.input<typeof configSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const CONFIG_KEYS = Object.keys(configShape.shape) as (keyof RelayConfig)[];

/** maxPayloadBytes → PULLTAB_MAX_PAYLOAD_BYTES */
export function envName(key: string): string {
  return 'PULLTAB_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();
}

export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  try {
    const parsed = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
    return parsed as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`config file ${path} is not a JSON object: ${(err as Error).message}`);
  }
}

export function configFromEnv(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of CONFIG_KEYS) {
    const value = env[envName(key)];
    if (value !== undefined && value !== '') out[key] = value;
  }
  return out;
}

/** Merges the layers (later wins) and validates; throws ConfigError naming the first bad key. */
export function resolveConfig(layers: Array<{ source: string; values: Record<string, unknown> }>): RelayConfig {
  const merged: Record<string, unknown> = {};
  const sourceOf: Record<string, string> = {};
  for (const layer of layers) {
    for (const [key, value] of Object.entries(layer.values)) {
      if (value === undefined) continue;
      merged[key] = value;
      sourceOf[key] = layer.source;
    }
  }
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0];
    const key = issue.path.join('.') || (issue.code === 'unrecognized_keys' ? (issue as { keys?: string[] }).keys?.join(', ') : '') || '(config)';
    const from = sourceOf[String(issue.path[0])];
    const where = from ? ` (from ${from === 'env' ? envName(key) : from})` : '';
    throw new ConfigError(`invalid configuration: ${key}${where}: ${issue.message}`);
  }
  return result.data;
}

/** Settings a running relay takes on at SIGHUP without a restart. */
export const RELOADABLE_KEYS = [
  'maxConnections', 'maxSendOnlyPerKey', 'maxHandshakes', 'handshakeTimeoutMs', 'maxPayloadBytes', 'maxRecipients', 'outboundBudgetBytes',
  'inflightWindow', 'defaultTtlSeconds', 'maxTtlSeconds', 'writeDeadlineMs', 'pingIntervalMs', 'pingTimeoutMs',
  'acceptRatePerSecond', 'acceptBurst', 'rateBytesPerSecond', 'rateBurstBytes', 'rateMessagesPerSecond',
  'rateBurstMessages', 'logDeliveries', 'storePendingBytesPerConnection', 'storePendingBytesTotal', 'readFramesPerTurn',
] as const satisfies readonly (keyof RelayConfig)[];

/** The store-wide mailbox limits a configuration sets (the engine's MailboxLimits). */
export function mailboxLimitsOf(config: RelayConfig): MailboxLimits {
  return {
    maxCountPerRecipient: config.mailboxMaxCount,
    maxBytesPerRecipient: config.mailboxMaxBytes,
    maxTotalBytes: config.storeMaxBytes,
    maxTtlSeconds: config.maxTtlSeconds,
  };
}

export function defaultConfig(overrides: RelayConfigInput = {}): RelayConfig {
  return resolveConfig([{ source: 'code', values: overrides as Record<string, unknown> }]);
}
