// The operators' HTTP listener, apart from the relay port and bound to loopback by default:
//   GET /metrics   Prometheus text format (prom-client)
//   GET /healthz   200 while the process serves HTTP at all
//   GET /readyz    200 while the relay accepts connections and can store, 503 before it does, once it
//                  stops, and while its mailbox store cannot write (a full disk)
// Counting costs the relay's paths a plain increment (RelayStats); the values are read here, when
// a scrape asks, through prom-client collect() callbacks. Nothing here logs or exposes an address.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { RelayStats } from './stats.js';

export interface Traffic {
  framesIn: number;
  bytesIn: number;
  framesOut: number;
  bytesOut: number;
}

/** What the metrics read, each when scraped. */
export interface MetricsSource {
  readonly stats: RelayStats;
  /** Open connections: still in the handshake, and authenticated (of which send-only). */
  connections(): { handshake: number; authenticated: number; sendOnly?: number };
  traffic(): Traffic;
  /** Refused handshakes by outcome (auth_failed, unsupported_version, not_authorized). */
  handshakeRefusals(): Record<string, number>;
  /** Sessions closed by policy: not_authorized (a block or a withdrawn right), kicked. */
  policyDisconnects(): Record<string, number>;
  mailbox(): Promise<{ count: number; bytes: number; recipients: number }>;
  /** Bytes of the LMDB data files in use. */
  storeFileBytes(): number;
  /** Mailbox commits that failed since start (each answered STORE_ERROR; the store is unwritable until it recovers). */
  storeCommitFailures(): number;
  /** false while the mailbox store cannot commit (stores are refused STORE_ERROR; /readyz says not ready). */
  storeWritable(): boolean;
  eventLog(): { written: number; dropped: number; errors: number } | null;
  /** Admin answers by status name. */
  adminAnswers(): Record<string, number>;
  ready(): boolean;
}

export interface MetricsServer {
  readonly port: number;
  readonly registry: Registry;
  close(): Promise<void>;
}

/** Builds the registry: every metric reads its source at scrape time. */
export function createRegistry(source: MetricsSource): Registry {
  const registry = new Registry();
  const registers = [registry];
  const s = source.stats;

  const counter = (name: string, help: string, read: () => number): void => {
    new Counter({
      name, help, registers,
      collect() {
        this.reset();
        this.inc(Math.max(0, read()));
      },
    });
  };
  const labelled = <L extends string>(name: string, help: string, label: L, read: () => Record<string, number>): void => {
    new Counter({
      name, help, registers, labelNames: [label],
      collect() {
        this.reset();
        for (const [value, n] of Object.entries(read())) this.inc({ [label]: value } as Record<L, string>, Math.max(0, n));
      },
    });
  };
  const gauge = (name: string, help: string, read: () => number): void => {
    new Gauge({ name, help, registers, collect() { this.set(read()); } });
  };

  new Gauge({
    name: 'pulltab_connections', help: 'Open connections, by state', registers, labelNames: ['state'],
    collect() {
      const c = source.connections();
      this.set({ state: 'handshake' }, c.handshake);
      this.set({ state: 'authenticated' }, c.authenticated);
    },
  });
  new Gauge({
    name: 'pulltab_send_only_connections', help: 'Authenticated connections that are send-only (counted in pulltab_connections{state="authenticated"} too)', registers,
    collect() { this.set(source.connections().sendOnly ?? 0); },
  });
  counter('pulltab_connections_accepted_total', 'TCP connections accepted', () => s.connectionsAccepted);
  counter('pulltab_connections_refused_total', 'Connections refused at the connection or handshake limit, the accept rate, or shutdown (RELAY_FULL, GOING_AWAY)', () => s.connectionsRefusedFull);
  labelled('pulltab_handshakes_total', 'Handshakes, by outcome', 'outcome', () => ({
    ok: s.handshakesOk, timeout: s.handshakesTimedOut, ...source.handshakeRefusals(),
  }));
  counter('pulltab_tls_auth_failures_total', 'AUTH_FAILED handshakes over TLS: a forged signature or a TLS-terminating proxy between client and relay (channel binding mismatch)', () => s.tlsAuthFailed);
  counter('pulltab_sessions_replaced_total', 'Sessions replaced by a newer connection of the same key', () => s.replaced);
  counter('pulltab_protocol_errors_total', 'Connections closed for a protocol error', () => s.protocolErrors);
  labelled('pulltab_policy_disconnects_total', 'Sessions closed by an administrator or a policy change, by reason', 'reason', () => source.policyDisconnects());
  counter('pulltab_slow_consumer_disconnects_total', 'Connections closed because they stopped reading (SLOW_CONSUMER)', () => s.slowConsumers);
  counter('pulltab_idle_timeouts_total', 'Connections closed because they stopped answering pings (IDLE_TIMEOUT)', () => s.idleTimeouts);
  counter('pulltab_rate_limit_pauses_total', 'Times a connection\'s reads were paused by its rate limit', () => s.rateLimitPauses);

  counter('pulltab_frames_in_total', 'Frames read from clients', () => source.traffic().framesIn);
  counter('pulltab_bytes_in_total', 'Bytes read from clients', () => source.traffic().bytesIn);
  counter('pulltab_frames_out_total', 'Frames written to clients', () => source.traffic().framesOut);
  counter('pulltab_bytes_out_total', 'Bytes written to clients', () => source.traffic().bytesOut);

  counter('pulltab_messages_in_total', 'SEND frames received', () => s.messagesIn);
  labelled('pulltab_messages_delivered_total', 'DELIVER frames written, by where the message came from', 'source', () => ({
    live: s.messagesOut - s.deliveredFromMailbox, mailbox: s.deliveredFromMailbox,
  }));
  counter('pulltab_messages_stored_total', 'Messages committed to a mailbox (per recipient)', () => s.stored);
  counter('pulltab_messages_stored_live_total', 'Storable messages written live and kept in the mailbox until acknowledged (per recipient)', () => s.storedLive);
  labelled('pulltab_read_pauses_total', 'Times reading from a connection was paused for a bound other than its rate limit, by reason', 'reason', () => ({
    output: s.outputPauses, store: s.storePauses, turn: s.turnYields,
  }));
  counter('pulltab_messages_spilled_total', 'Times a connected recipient fell behind and its messages went to its mailbox', () => s.spilled);
  labelled('pulltab_messages_dropped_total', 'Messages not delivered nor stored, by reason', 'reason', () => ({
    offline: s.dropped.offline, busy: s.dropped.busy, held: s.droppedHeld,
    refused: s.refused, store_refused: s.refusedStore,
  }));

  // One read of the store's totals per scrape (a database engine answers them with a query).
  let totals: Promise<{ count: number; bytes: number; recipients: number }> | null = null;
  const mailbox = async <K extends 'count' | 'bytes' | 'recipients'>(name: K): Promise<number> => {
    totals ??= source.mailbox().finally(() => setImmediate(() => { totals = null; }));
    return (await totals)[name];
  };
  const asyncGauge = (name: string, help: string, read: () => Promise<number>): void => {
    new Gauge({ name, help, registers, async collect() { this.set(await read()); } });
  };
  asyncGauge('pulltab_mailbox_entries', 'Stored messages (per recipient)', () => mailbox('count'));
  asyncGauge('pulltab_mailbox_bytes', 'Stored bytes (body plus wrapped key, per recipient)', () => mailbox('bytes'));
  asyncGauge('pulltab_mailbox_recipients', 'Recipients with stored messages', () => mailbox('recipients'));
  gauge('pulltab_lmdb_file_bytes', 'Bytes of the LMDB mailbox data file in use', () => source.storeFileBytes());
  counter('pulltab_store_commit_failures_total', 'Mailbox commits that failed (answered STORE_ERROR; unwritable until recovered)', () => source.storeCommitFailures());
  gauge('pulltab_store_writable', '1 while the mailbox store can commit, 0 from a failed commit until it has recovered', () => (source.storeWritable() ? 1 : 0));

  labelled('pulltab_admin_requests_total', 'Admin requests answered, by status', 'status', () => source.adminAnswers());
  labelled('pulltab_event_log_lines_total', 'Event log lines, by outcome', 'outcome', (): Record<string, number> => {
    const e = source.eventLog();
    return e ? { written: e.written, dropped: e.dropped } : {};
  });
  gauge('pulltab_ready', '1 while ready: accepting connections and able to store', () => (source.ready() ? 1 : 0));

  // process_* and nodejs_* (CPU, memory, handles, GC, and nodejs_eventloop_lag_seconds).
  collectDefaultMetrics({ register: registry });
  return registry;
}

export interface MetricsOptions {
  host: string;
  /** 0 for an ephemeral port. */
  port: number;
  source: MetricsSource;
}

/** Starts the listener; resolves once it is bound (rejects with the listen error, e.g. EADDRINUSE). */
export async function startMetricsServer(options: MetricsOptions): Promise<MetricsServer> {
  const registry = createRegistry(options.source);
  const server: Server = createServer((req, res) => {
    handle(req, res, registry, options.source).catch(() => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('error\n');
    });
  });
  server.maxConnections = 64;
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 5_000;
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', () => { /* a listener error after start costs the metrics, never the relay */ });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  return {
    port,
    registry,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

async function handle(req: IncomingMessage, res: ServerResponse, registry: Registry, source: MetricsSource): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' });
    res.end('method not allowed\n');
    return;
  }
  let status = 200;
  let type = 'text/plain; charset=utf-8';
  let body: string;
  switch (path) {
    case '/metrics':
      body = await registry.metrics();
      type = registry.contentType;
      break;
    case '/healthz':
      body = 'ok\n';
      break;
    case '/readyz':
      if (source.ready()) body = 'ready\n';
      else {
        status = 503;
        body = 'not ready\n';
      }
      break;
    default:
      status = 404;
      body = 'not found: try /metrics, /healthz or /readyz\n';
  }
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : body);
}
