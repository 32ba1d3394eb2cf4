// The relay: its identity, its listener, its store, and the connections it serves.
import { mkdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { loadOrCreateIdentityFile, Signer, type Identity } from '../crypto/keys.js';
import { formatRelayAddress } from '../protocol/address.js';
import { Code, codeMessage, FrameType } from '../protocol/constants.js';
import { encodeClose } from '../protocol/frames.js';
import { openLmdbMailbox } from '../store/lmdb/mailbox.js';
import type { MailboxStore } from '../store/mailbox.js';
import { defaultConfig, RELOADABLE_KEYS, type RelayConfig, type RelayConfigInput } from './config.js';
import { Connection, type RelayContext } from './connection.js';
import { createLogger } from './log.js';
import { Router } from './router.js';
import type { SenderLimits } from './session.js';
import { RelayStats } from './stats.js';
import { TokenBucket } from './token-bucket.js';

/** The sending limits the relay's configuration gives a key that has no policy of its own. */
export function configLimits(config: RelayConfig): SenderLimits {
  return {
    maxPayloadBytes: config.maxPayloadBytes,
    maxRecipients: config.maxRecipients,
    maxTtlSeconds: config.maxTtlSeconds,
    rateBytesPerSecond: config.rateBytesPerSecond,
    rateBurstBytes: config.rateBurstBytes,
    rateMessagesPerSecond: config.rateMessagesPerSecond,
    rateBurstMessages: config.rateBurstMessages,
  };
}

export interface RelayOptions {
  logger?: Logger;
}

/** Hint sent with RELAY_FULL: how long a client should wait before trying again. */
const RELAY_FULL_RETRY_MS = 5000;

export class Relay {
  readonly config: RelayConfig;
  readonly identity: Identity;
  readonly stats = new RelayStats();
  readonly log: Logger;
  readonly store: MailboxStore;
  readonly router: Router;
  readonly connections = new Set<Connection>();
  readonly #server: Server;
  readonly #context: RelayContext;
  #sweepTimer: NodeJS.Timeout | null = null;
  #port = 0;
  #handshaking = 0;
  #tickTimer: NodeJS.Timeout | null = null;
  readonly #acceptBucket: TokenBucket;
  #closed: Promise<void> | null = null;

  private constructor(config: RelayConfig, options: RelayOptions) {
    this.config = config;
    this.log = options.logger ?? createLogger(config.logLevel);
    mkdirSync(config.dataDir, { recursive: true });
    this.identity = loadOrCreateIdentityFile(join(config.dataDir, 'relay-identity.json'));
    this.store = openLmdbMailbox({
      path: join(config.dataDir, 'mailbox'),
      // The relay runs the sweep itself (and logs it), so the store's own timer stays off.
      sweepIntervalMs: 0,
      limits: {
        maxCountPerRecipient: config.mailboxMaxCount,
        maxBytesPerRecipient: config.mailboxMaxBytes,
        maxTotalBytes: config.storeMaxBytes,
        maxTtlSeconds: config.maxTtlSeconds,
      },
    });
    this.router = new Router(this.store, config, this.log, this.stats);
    this.#acceptBucket = new TokenBucket(config.acceptRatePerSecond, config.acceptBurst);
    const relay = this;
    this.#context = {
      config,
      signer: new Signer(this.identity),
      router: this.router,
      stats: this.stats,
      log: this.log,
      admit: () => Code.OK,
      limitsFor: () => configLimits(config),
      connectionClosed: (connection) => relay.connections.delete(connection),
      handshakeFinished: () => { relay.#handshaking--; },
      admin: async () => ({ status: Code.FORBIDDEN, json: JSON.stringify({ error: 'administration is not enabled on this relay' }) }),
    };
    this.#server = createServer({ noDelay: true }, (socket) => this.#accept(socket));
    this.#server.on('error', (err) => this.log.error({ event: 'listener_error', err: err.message }, 'listener error'));
  }

  /** Opens the store, listens, and resolves once the relay accepts connections. */
  static async start(input: RelayConfigInput = {}, options: RelayOptions = {}): Promise<Relay> {
    const config = defaultConfig(input);
    const relay = new Relay(config, options);
    await relay.store.sweepExpired();
    await new Promise<void>((resolve, reject) => {
      relay.#server.once('error', reject);
      relay.#server.listen(config.port, config.host, () => {
        relay.#server.off('error', reject);
        resolve();
      });
    });
    const address = relay.#server.address();
    relay.#port = typeof address === 'object' && address ? address.port : config.port;
    relay.#sweepTimer = setInterval(() => {
      relay.store.sweepExpired().then((n) => {
        if (n > 0) relay.log.info({ event: 'expired_swept', count: n }, 'expired messages removed');
      }, (err: Error) => relay.log.error({ event: 'sweep_failed', err: err.message }, 'expiry sweep failed'));
    }, config.sweepIntervalMs);
    relay.#sweepTimer.unref();
    relay.#startTicking();
    return relay;
  }

  /**
   * The housekeeping tick: slow consumers, idle connections. Its period follows the shortest
   * deadline it enforces, so a test can use deadlines of a few hundred milliseconds.
   */
  #startTicking(): void {
    if (this.#tickTimer) clearInterval(this.#tickTimer);
    const c = this.config;
    const period = Math.max(25, Math.min(1000, Math.floor(Math.min(c.writeDeadlineMs, c.pingIntervalMs, c.pingTimeoutMs) / 4)));
    this.#tickTimer = setInterval(() => {
      const now = Date.now();
      for (const connection of this.connections) connection.tick(now);
    }, period);
    this.#tickTimer.unref();
  }

  /**
   * Takes on new values of the reloadable settings (SIGHUP): limits apply to every connected
   * session from its next frame. Other settings need a restart and are reported as ignored.
   */
  reload(next: RelayConfig): string[] {
    const ignored: string[] = [];
    for (const key of Object.keys(next) as (keyof RelayConfig)[]) {
      if ((RELOADABLE_KEYS as readonly string[]).includes(key)) (this.config as Record<string, unknown>)[key] = next[key];
      else if (next[key] !== this.config[key]) ignored.push(key);
    }
    this.#acceptBucket.configure(this.config.acceptRatePerSecond, this.config.acceptBurst);
    for (const session of this.router.sessions.values()) session.limits = this.#context.limitsFor(session.key);
    this.#startTicking();
    this.log.info({ event: 'config_reloaded', ignored }, 'configuration reloaded');
    return ignored;
  }

  get port(): number {
    return this.#port;
  }

  /** The address clients use: pulltab://KEY@HOST:PORT (a wildcard host is shown as loopback). */
  get address(): string {
    return this.addressFor(this.config.host === '0.0.0.0' ? '127.0.0.1' : this.config.host === '::' ? '::1' : this.config.host);
  }

  addressFor(host: string): string {
    return formatRelayAddress({ relayKey: this.identity.publicKey, host, port: this.#port });
  }

  #accept(socket: Socket): void {
    const stats = this.stats;
    stats.connectionsAccepted++;
    const handshaking = this.#handshaking;
    if (this.connections.size >= this.config.maxConnections || this.#closed || handshaking >= this.config.maxHandshakes
      || !this.#acceptBucket.take(1)) {
      stats.connectionsRefusedFull++;
      const code = this.#closed ? Code.GOING_AWAY : Code.RELAY_FULL;
      socket.on('error', () => {});
      socket.end(encodeClose(FrameType.CLOSE, { code, retryAfterMs: RELAY_FULL_RETRY_MS, reason: codeMessage(code) }));
      setTimeout(() => socket.destroy(), 2000).unref();
      if (code === Code.RELAY_FULL) this.log.warn({ event: 'relay_full', connections: this.connections.size, handshaking }, 'relay full: connection refused');
      return;
    }
    this.#handshaking++;
    this.connections.add(new Connection(socket, this.#context));
  }

  /**
   * Stops accepting, tells every client the relay is going away (with a retry hint), waits for
   * connections to close (unacknowledged storable messages go back to mailboxes as they do),
   * then closes the store.
   */
  close(options: { retryAfterMs?: number; graceMs?: number } = {}): Promise<void> {
    if (this.#closed) return this.#closed;
    const retryAfterMs = options.retryAfterMs ?? 1000;
    const graceMs = options.graceMs ?? 5000;
    this.#closed = (async () => {
      if (this.#sweepTimer) clearInterval(this.#sweepTimer);
      if (this.#tickTimer) clearInterval(this.#tickTimer);
      const listening = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      for (const connection of this.connections) {
        if (connection.session) connection.session.closeConnection(Code.GOING_AWAY, codeMessage(Code.GOING_AWAY), retryAfterMs);
        else connection.close(Code.GOING_AWAY, codeMessage(Code.GOING_AWAY), true, retryAfterMs);
      }
      const deadline = Date.now() + graceMs;
      while (this.connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const connection of this.connections) connection.socket.destroy();
      await listening;
      // Let requeues started by closing sessions reach the store before it closes.
      await new Promise((r) => setImmediate(r));
      await this.store.close();
      this.log.info({ event: 'relay_stopped' }, 'relay stopped');
    })();
    return this.#closed;
  }
}
