// The relay: its identity, its listener, its store, and the connections it serves.
import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { AdminEngine } from '../admin/engine.js';
import type { AdminConnections } from '../admin/host.js';
import { allCommands } from '../admin/stats.js';
import { decodeKey, encodeKey, loadOrCreateIdentityFile, Signer, type Identity } from '../crypto/keys.js';
import { PolicyAuthority } from '../policy/authority.js';
import { formatRelayAddress } from '../protocol/address.js';
import { Code, codeMessage, codeName } from '../protocol/constants.js';
import type { MailboxStore } from '../store/mailbox.js';
import { openMailboxStore, openPolicyStore, redactUrl, type MailboxSettings, type StoreEvents } from '../store/open.js';
import type { PolicyStore } from '../store/policy-store.js';
import { defaultConfig, mailboxLimitsOf, RELOADABLE_KEYS, tlsEnabled, type RelayConfig, type RelayConfigInput } from './config.js';
import { Admission } from './admission.js';
import { ConnectedSessions } from './connected-sessions.js';
import type { Connection, RelayContext } from './connection.js';
import { EventLog } from './events.js';
import { createLogger } from './log.js';
import { startMetricsServer, type MetricsServer } from './metrics.js';
import { observe, type ClusterObservation, type Observation, type ObservationSource, type Traffic } from './observation.js';
import type { Peers } from './destinations.js';
import { admissionCode, PolicyCache } from './policies.js';
import { Router } from './router.js';
import { RelayStats } from './stats.js';
import { loadTlsMaterial, secureContextFor, TlsAcceptor } from './tls.js';

export interface RelayOptions {
  logger?: Logger;
  /** The other instances of this relay (workers on this host, hosts of a cluster); none by default. */
  peers?: Peers;
  /**
   * Opens the mailbox engine instead of the factory (tests run the relay on an engine double);
   * the relay closes it. The configuration's `store` names the engine otherwise.
   */
  openStore?: (settings: MailboxSettings) => Promise<MailboxStore>;
  /** Opens the policy store instead of the factory (a worker's is served by the primary). */
  openPolicyStore?: () => Promise<PolicyStore>;
  /** Runs the expiry sweep (default true; a relay of several workers sweeps once, in the primary). */
  sweeps?: boolean;
  /** How the relay port is bound: reusePort lets every worker of a host bind it (Node >= 22.12). */
  listen?: { reusePort?: boolean };
  /** Where the event log goes (default <dataDir>/events; each worker has a directory of its own). */
  eventsDir?: string;
  /** How often to look for policy changes on a shared policy store (default policyPollMs). */
  policyPollMs?: number;
  /** The connections the admin commands see (a relay of workers: every worker's), given this relay's own. */
  adminConnections?: (local: ConnectedSessions) => AdminConnections;
  /** Membership of a cluster of hosts (src/cluster/): not ready while its presence is not synchronised. */
  cluster?: { synchronized: boolean; observe(): ClusterObservation };
  /** What the admin `stats` command answers (a relay of workers: the whole relay's observation). */
  stats?: () => Promise<object>;
}

/** The TLS settings: read again at SIGHUP when TLS is on (new paths included). */
const TLS_KEYS: readonly (keyof RelayConfig)[] = ['tlsCert', 'tlsKey', 'tlsSelfSigned'];


export class Relay {
  readonly config: RelayConfig;
  readonly identity: Identity;
  readonly stats = new RelayStats();
  readonly log: Logger;
  readonly store: MailboxStore;
  readonly router: Router;
  readonly connections = new Set<Connection>();
  /** Policies, the root key and blocks, as the relay applies them. */
  readonly policies: PolicyAuthority;
  readonly admin: AdminEngine;
  /** The event log under <dataDir>/events (null when eventLog is off). */
  readonly events: EventLog | null;
  /** The policy store, as the relay reads it on its hot paths and changes it (admin commands). */
  readonly #policyCache: PolicyCache;
  #metrics: MetricsServer | null = null;
  #ready = false;
  readonly #cluster: RelayOptions['cluster'] | null;
  readonly #startedAt = Date.now();
  readonly #server: Server;
  readonly #context: RelayContext;
  #sweepTimer: NodeJS.Timeout | null = null;
  #policyPollTimer: NodeJS.Timeout | null = null;
  /** The connected sessions as the policies see them (admin changes and the poll apply to them). */
  readonly #connected: ConnectedSessions;

  /** This relay's connected sessions (a worker answers the others' admin questions from them). */
  get connectedSessions(): ConnectedSessions {
    return this.#connected;
  }
  #port = 0;
  #tickTimer: NodeJS.Timeout | null = null;
  readonly #admission: Admission;
  #closed: Promise<void> | null = null;
  /** TLS on the relay port (null: plain TCP). */
  readonly #tls: TlsAcceptor | null = null;

  private constructor(config: RelayConfig, log: Logger, store: MailboxStore, policyStore: PolicyStore, options: RelayOptions) {
    this.config = config;
    this.log = log;
    this.#cluster = options.cluster ?? null;
    this.identity = loadOrCreateIdentityFile(join(config.dataDir, 'relay-identity.json'));
    if (tlsEnabled(config)) {
      const material = loadTlsMaterial(config);
      this.#tls = new TlsAcceptor(secureContextFor(material));
      this.log.info({ event: 'tls_enabled', certificate: material.source, created: material.created }, material.created ? 'TLS on: self-signed certificate created' : 'TLS on');
    }
    this.#policyCache = new PolicyCache(policyStore);
    this.policies = new PolicyAuthority(this.#policyCache, config, config.rootKey ? decodeKey(config.rootKey) : null);
    this.events = config.eventLog
      ? new EventLog({ dir: options.eventsDir ?? join(config.dataDir, 'events'), maxFileBytes: config.eventLogMaxBytes, keepFiles: config.eventLogFiles })
      : null;
    const policies = this.policies;
    this.store = store;
    this.router = new Router(this.store, config, this.log, this.stats, { peers: options.peers ?? null });
    const events = this.events;
    if (events) this.router.onDelivery = (event, from, to, bytes) => events.write(event, { from, to, bytes });
    this.admin = new AdminEngine({
      policies,
      policyStore: this.#policyCache,
      store: this.store,
      connections: (options.adminConnections ?? ((local) => local))(this.#connected = new ConnectedSessions(this.router, policies, this.stats, events)),
      stats: options.stats ?? (() => this.statsSnapshot()),
      events,
      log: this.log,
    }, allCommands());
    const admission = this.#admission = new Admission(config, this.stats, this.log, this.connections, this.#tls);
    const relay = this;
    this.#context = {
      config,
      signer: new Signer(this.identity),
      router: this.router,
      stats: this.stats,
      log: this.log,
      admit: (key) => admissionCode(policies, key),
      limitsFor: (key) => policies.limitsFor(key),
      connectionClosed: (connection) => {
        relay.connections.delete(connection);
        const session = connection.session;
        if (session) {
          relay.stats.framesOutClosed += session.out.framesOut;
          relay.stats.bytesOutClosed += session.out.bytesOut;
        }
      },
      handshakeFinished: () => admission.handshakeFinished(),
      admin: (caller, json) => relay.admin.handle(caller, json),
      handshakeRefused: (code, key, tls) => {
        const refused = relay.stats.handshakesRefused;
        if (code === Code.AUTH_FAILED && tls) relay.stats.tlsAuthFailed++;
        if (code === Code.AUTH_FAILED) refused.authFailed++;
        else if (code === Code.UNSUPPORTED_VERSION) refused.unsupportedVersion++;
        else if (code === Code.NOT_AUTHORIZED) refused.notAuthorized++;
        else if (code === Code.TOO_MANY_CONNECTIONS) refused.tooManyConnections++;
        // The key only when it proved itself: an unproven one could be anybody's.
        relay.events?.write('auth_failed', { code: codeName(code), ...(key ? { key: encodeKey(key) } : {}), ...(tls ? { tls } : {}) });
      },
      transportMismatch: (what) => admission.transportMismatch(what),
    };
    admission.context = this.#context;
    this.#server = createServer({ noDelay: true }, (socket) => admission.accept(socket));
    this.#server.on('error', (err) => this.log.error({ event: 'listener_error', err: err.message }, 'listener error'));
  }

  /** Opens the store, listens, and resolves once the relay accepts connections. */
  static async start(input: RelayConfigInput = {}, options: RelayOptions = {}): Promise<Relay> {
    const config = defaultConfig(input);
    const log = options.logger ?? createLogger(config.logLevel);
    mkdirSync(config.dataDir, { recursive: true });
    // Each recipient's mailbox quota comes from its policy; nothing is stored before the relay exists.
    let policies: PolicyAuthority | null = null;
    const policyStore = await (options.openPolicyStore ?? (() => openPolicyStore({ store: config.store, dataDir: config.dataDir })))();
    const store = await (options.openStore ?? openMailboxStore)({
      store: config.store,
      dataDir: config.dataDir,
      limits: mailboxLimitsOf(config),
      quotaFor: (recipient) => policies?.quotaFor(recipient),
      events: storeEvents(log),
    }).catch(async (err: unknown) => {
      await policyStore.close();
      throw err;
    });
    log.debug({ event: 'store_opened', store: redactUrl(config.store) }, 'mailbox store opened');
    let relay: Relay;
    try {
      relay = new Relay(config, log, store, policyStore, options);
    } catch (err) {
      await Promise.all([store.close(), policyStore.close()]);
      throw err;
    }
    policies = relay.policies;
    try {
      await relay.#policyCache.load();
    } catch (err) {
      await relay.close({ graceMs: 0 });
      throw err;
    }
    // A sweep that cannot commit (a full disk) leaves the store unwritable, not the relay stopped:
    // it serves live traffic and drains, and says not ready until the store has recovered.
    const sweeps = options.sweeps ?? true;
    if (sweeps) await relay.store.sweepExpired().catch((err: Error) => relay.log.error({ event: 'sweep_failed', err: err.message }, 'expiry sweep failed'));
    await new Promise<void>((resolve, reject) => {
      relay.#server.once('error', reject);
      const reusePort = options.listen?.reusePort === true;
      // With reusePort each worker binds the port itself (exclusive: not through node:cluster's primary).
      relay.#server.listen({ port: config.port, host: config.host, ...(reusePort ? { reusePort, exclusive: true } : {}) }, () => {
        relay.#server.off('error', reject);
        resolve();
      });
    });
    const address = relay.#server.address();
    relay.#port = typeof address === 'object' && address ? address.port : config.port;
    if (sweeps) relay.#sweepTimer = startSweeping(relay.store, config.sweepIntervalMs, relay.log);
    if (relay.#policyCache.shared) relay.#pollPolicies(options.policyPollMs ?? config.policyPollMs);
    relay.#startTicking();
    if (config.metricsPort >= 0) {
      try {
        relay.#metrics = await startMetricsServer({ host: config.metricsHost, port: config.metricsPort, source: { observe: () => relay.observe(), ready: () => relay.ready } });
      } catch (err) {
        await relay.close({ graceMs: 0 });
        const e = err as NodeJS.ErrnoException;
        const why = e.code === 'EADDRINUSE' ? 'address already in use' : e.code === 'EACCES' ? 'permission denied' : e.message;
        throw Object.assign(new Error(`cannot listen for metrics on ${config.metricsHost}:${config.metricsPort}: ${why}`), { code: 'METRICS_LISTEN' });
      }
    }
    relay.#ready = true;
    relay.events?.write('relay_started', { relayKey: encodeKey(relay.identity.publicKey), port: relay.#port, rootKey: config.rootKey !== undefined, tls: relay.tls });
    return relay;
  }

  /** The port of the operators' HTTP listener (/metrics), or null when it is off. */
  get metricsPort(): number | null {
    return this.#metrics?.port ?? null;
  }

  /** Other relays on the shared store change policies too: reload them when they have, and apply them to the connected sessions. */
  #pollPolicies(intervalMs: number): void {
    let polling = false;
    this.#policyPollTimer = setInterval(() => {
      if (polling) return;
      polling = true;
      this.#policyCache.refresh().then((changed) => {
        if (!changed) return;
        const { disconnected, updated } = this.#connected.enforcePolicies();
        this.log.info({ event: 'policies_reloaded', disconnected, updated }, 'policies changed by another relay reloaded');
      }, (err: Error) => this.log.warn({ event: 'policy_poll_failed', err: err.message }, 'could not read the shared policy store')).finally(() => (polling = false));
    }, intervalMs);
    this.#policyPollTimer.unref();
  }

  /** Ready (/readyz): accepting connections (started, not closing), able to store messages, and in a cluster, synchronised with it. */
  get ready(): boolean {
    return this.#ready && this.#closed === null && this.storeWritable && (this.#cluster?.synchronized ?? true);
  }

  /** false while the mailbox store cannot commit (from a failed commit until it has recovered by itself). */
  get storeWritable(): boolean {
    return this.store.status().writable;
  }

  /** Frames and bytes read and written so far (written: closed connections plus live ones). */
  traffic(): Traffic {
    let framesOut = this.stats.framesOutClosed;
    let bytesOut = this.stats.bytesOutClosed;
    for (const connection of this.connections) {
      const session = connection.session;
      if (session) {
        framesOut += session.out.framesOut;
        bytesOut += session.out.bytesOut;
      }
    }
    return { framesIn: this.stats.framesIn, bytesIn: this.stats.bytesIn, framesOut, bytesOut };
  }

  /** One observation of the relay: what /metrics and the admin `stats` command both read. */
  observe(): Promise<Observation> {
    return observe(this.#observationSource);
  }

  /** What the admin `stats` command answers: the observation. */
  statsSnapshot(): Promise<Observation> {
    return this.observe();
  }

  get #observationSource(): ObservationSource {
    const relay = this;
    return {
      stats: relay.stats,
      startedAt: relay.#startedAt,
      handshaking: () => relay.#admission.handshaking,
      sessions: () => ({ authenticated: relay.router.sessions.size + relay.router.sendOnlyCount, sendOnly: relay.router.sendOnlyCount }),
      traffic: () => relay.traffic(),
      storeStatus: () => relay.store.status(),
      storeTotals: () => relay.store.totals(),
      cluster: () => relay.#cluster?.observe() ?? null,
      eventLog: () => (relay.events ? { written: relay.events.written, dropped: relay.events.dropped, errors: relay.events.errors } : null),
      adminAnswers: () => relay.admin.answers,
      ready: () => relay.ready,
    };
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
      else if (this.#tls !== null && TLS_KEYS.includes(key)) continue; // #reloadTls takes these
      else if (next[key] !== this.config[key]) ignored.push(key);
    }
    this.#admission.reconfigure();
    for (const session of this.router.allSessions()) session.limits = this.#context.limitsFor(session.key);
    this.#startTicking();
    this.#reloadTls(next, ignored);
    this.log.info({ event: 'config_reloaded', ignored }, 'configuration reloaded');
    return ignored;
  }

  /**
   * Reads the certificate and key again (a renewed certificate at the same paths, or new paths):
   * new connections get it, open ones keep theirs. A pair that cannot be read or does not match
   * leaves the old one in use. Turning TLS on or off takes a restart (the address changes).
   */
  #reloadTls(next: RelayConfig, ignored: string[]): void {
    if (!this.#tls) return;
    if (!tlsEnabled(next)) {
      ignored.push('tls (turning TLS off takes a restart)');
      return;
    }
    (this.config as Record<string, unknown>).tlsCert = next.tlsCert;
    (this.config as Record<string, unknown>).tlsKey = next.tlsKey;
    (this.config as Record<string, unknown>).tlsSelfSigned = next.tlsSelfSigned;
    try {
      const material = loadTlsMaterial(next);
      this.#tls.context = secureContextFor(material);
      this.log.info({ event: 'tls_reloaded', certificate: material.source }, 'TLS certificate reloaded');
    } catch (err) {
      this.log.error({ event: 'tls_reload_failed', err: errorText(err) }, 'TLS certificate not reloaded; the previous one stays in use');
    }
  }

  /** Whether the relay port runs TLS (its address is pulltabs://). */
  get tls(): boolean {
    return this.#tls !== null;
  }

  get port(): number {
    return this.#port;
  }

  /** The address clients use: pulltab://KEY@HOST:PORT (a wildcard host is shown as loopback). */
  get address(): string {
    return this.addressFor(this.config.host === '0.0.0.0' ? '127.0.0.1' : this.config.host === '::' ? '::1' : this.config.host);
  }

  addressFor(host: string): string {
    return formatRelayAddress({ relayKey: this.identity.publicKey, host, port: this.#port, tls: this.#tls !== null });
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
    this.#admission.stopAccepting();
    this.#closed = (async () => {
      if (this.#sweepTimer) clearInterval(this.#sweepTimer);
      if (this.#policyPollTimer) clearInterval(this.#policyPollTimer);
      if (this.#tickTimer) clearInterval(this.#tickTimer);
      const listening = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      for (const connection of this.connections) {
        if (connection.session) connection.session.closeConnection(Code.GOING_AWAY, codeMessage(Code.GOING_AWAY), retryAfterMs);
        else connection.close(Code.GOING_AWAY, codeMessage(Code.GOING_AWAY), true, retryAfterMs);
      }
      const deadline = Date.now() + graceMs;
      while (this.connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const connection of this.connections) connection.socket.destroy();
      this.#admission.dropPending();
      await listening;
      // Let requeues started by closing sessions reach the store before it closes.
      await new Promise((r) => setImmediate(r));
      await this.store.close();
      await this.#policyCache.close();
      if (this.#metrics) await this.#metrics.close();
      this.events?.write('relay_stopped', {});
      await this.events?.close();
      this.log.info({ event: 'relay_stopped' }, 'relay stopped');
    })();
    return this.#closed;
  }
}

/** Sweeps expired messages every intervalMs (logged), from now on. */
export function startSweeping(store: MailboxStore, intervalMs: number, log: Logger): NodeJS.Timeout {
  const timer = setInterval(() => {
    store.sweepExpired().then((n) => {
      if (n > 0) log.info({ event: 'expired_swept', count: n }, 'expired messages removed');
    }, (err: Error) => log.error({ event: 'sweep_failed', err: err.message }, 'expiry sweep failed'));
  }, intervalMs);
  timer.unref();
  return timer;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** What the mailbox engine reports, logged (never a secret: an error's message only). */
export function storeEvents(log: Logger): StoreEvents {
  return {
    commitFailed: (err) => {
      log.error({ event: 'mailbox_commit_failed', err: errorText(err) },
        'a mailbox write failed; its senders got STORE_ERROR, and stores are refused until the store has recovered by itself');
    },
    probeFailed: (err, retryInMs) => {
      log.warn({ event: 'mailbox_probe_failed', err: errorText(err), retryInMs }, 'the mailbox store still cannot write');
    },
    repaired: (problems) => {
      log.warn({ event: 'mailbox_repaired', problems: problems.length, first: problems.slice(0, 5) }, 'mailbox store repaired and writable again');
    },
  };
}
