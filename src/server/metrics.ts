// The operators' HTTP listener, apart from the relay port and bound to loopback by default:
//   GET /metrics   Prometheus text format (prom-client)
//   GET /healthz   200 while the process serves HTTP at all
//   GET /readyz    200 while the relay accepts connections and can store, 503 before it does, once it
//                  stops, and while its mailbox store cannot write (a full disk)
// Counting costs the relay's paths a plain increment (RelayStats); the values are read here, when
// a scrape asks, through prom-client collect() callbacks. Nothing here logs or exposes an address.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { Observation } from './observation.js';

export type { Traffic } from './observation.js';

/** What the metrics read: one observation per scrape (the admin `stats` command reads the same). */
export interface MetricsSource {
  observe(): Promise<Observation>;
  /** /readyz: cheaper than a whole observation. */
  ready(): boolean;
}

export interface MetricsServer {
  readonly port: number;
  readonly registry: Registry;
  close(): Promise<void>;
}

/** Builds the registry: every metric reads the scrape's observation (made once, shared by all of them). */
export function createRegistry(source: MetricsSource): Registry {
  const registry = new Registry();
  const registers = [registry];
  // prom-client collects every metric of a scrape together: they share one observation.
  let current: Promise<Observation> | null = null;
  const scrape = (): Promise<Observation> => {
    current ??= source.observe().finally(() => setImmediate(() => { current = null; }));
    return current;
  };

  const counter = (name: string, help: string, read: (o: Observation) => number): void => {
    new Counter({
      name, help, registers,
      async collect() {
        const o = await scrape();
        this.reset();
        this.inc(Math.max(0, read(o)));
      },
    });
  };
  const labelled = <L extends string>(name: string, help: string, label: L, read: (o: Observation) => Record<string, number>): void => {
    new Counter({
      name, help, registers, labelNames: [label],
      async collect() {
        const o = await scrape();
        this.reset();
        for (const [value, n] of Object.entries(read(o))) this.inc({ [label]: value } as Record<L, string>, Math.max(0, n));
      },
    });
  };
  const gauge = (name: string, help: string, read: (o: Observation) => number): void => {
    new Gauge({ name, help, registers, async collect() { this.set(read(await scrape())); } });
  };

  new Gauge({
    name: 'pulltab_connections', help: 'Open connections, by state', registers, labelNames: ['state'],
    async collect() {
      const c = (await scrape()).connections;
      this.set({ state: 'handshake' }, c.handshake);
      this.set({ state: 'authenticated' }, c.authenticated);
    },
  });
  gauge('pulltab_send_only_connections', 'Authenticated connections that are send-only (counted in pulltab_connections{state="authenticated"} too)', (o) => o.connections.sendOnly);
  counter('pulltab_connections_accepted_total', 'TCP connections accepted', (o) => o.connections.accepted);
  counter('pulltab_connections_refused_total', 'Connections refused at the connection or handshake limit, the accept rate, or shutdown (RELAY_FULL, GOING_AWAY)', (o) => o.connections.refusedFull);
  labelled('pulltab_handshakes_total', 'Handshakes, by outcome', 'outcome', ({ handshakes: h }) => ({
    ok: h.ok, timeout: h.timedOut, auth_failed: h.authFailed, unsupported_version: h.unsupportedVersion, not_authorized: h.notAuthorized,
    too_many_connections: h.tooManyConnections, transport_mismatch: h.transportMismatch, tls_failed: h.tlsFailed,
  }));
  counter('pulltab_tls_auth_failures_total', 'AUTH_FAILED handshakes over TLS: a forged signature or a TLS-terminating proxy between client and relay (channel binding mismatch)', (o) => o.handshakes.tlsAuthFailed);
  counter('pulltab_sessions_replaced_total', 'Sessions replaced by a newer connection of the same key', (o) => o.disconnects.replaced);
  counter('pulltab_protocol_errors_total', 'Connections closed for a protocol error', (o) => o.disconnects.protocolErrors);
  labelled('pulltab_policy_disconnects_total', 'Sessions closed by an administrator or a policy change, by reason', 'reason', (o) => ({
    kicked: o.disconnects.kicked, not_authorized: o.disconnects.notAuthorized,
  }));
  counter('pulltab_slow_consumer_disconnects_total', 'Connections closed because they stopped reading (SLOW_CONSUMER)', (o) => o.disconnects.slowConsumers);
  counter('pulltab_idle_timeouts_total', 'Connections closed because they stopped answering pings (IDLE_TIMEOUT)', (o) => o.disconnects.idleTimeouts);
  counter('pulltab_rate_limit_pauses_total', 'Times a connection\'s reads were paused by its rate limit', (o) => o.rateLimitPauses);

  counter('pulltab_frames_in_total', 'Frames read from clients', (o) => o.traffic.framesIn);
  counter('pulltab_bytes_in_total', 'Bytes read from clients', (o) => o.traffic.bytesIn);
  counter('pulltab_frames_out_total', 'Frames written to clients', (o) => o.traffic.framesOut);
  counter('pulltab_bytes_out_total', 'Bytes written to clients', (o) => o.traffic.bytesOut);

  counter('pulltab_messages_in_total', 'SEND frames received', (o) => o.messages.in);
  labelled('pulltab_messages_delivered_total', 'DELIVER frames written, by where the message came from', 'source', (o) => ({
    live: o.messages.deliveredLive, mailbox: o.messages.deliveredFromMailbox,
  }));
  counter('pulltab_messages_stored_total', 'Messages committed to a mailbox (per recipient)', (o) => o.messages.stored);
  counter('pulltab_messages_stored_live_total', 'Storable messages written live and kept in the mailbox until acknowledged (per recipient)', (o) => o.messages.storedLive);
  labelled('pulltab_read_pauses_total', 'Times reading from a connection was paused for a bound other than its rate limit, by reason', 'reason', (o) => ({ ...o.readPauses }));
  counter('pulltab_messages_spilled_total', 'Times a connected recipient fell behind and its messages went to its mailbox', (o) => o.messages.spilled);
  labelled('pulltab_messages_dropped_total', 'Messages not delivered nor stored, by reason', 'reason', ({ messages: m }) => ({
    offline: m.dropped.offline, busy: m.dropped.busy, held: m.dropped.held, refused: m.refused, store_refused: m.refusedStore,
  }));
  counter('pulltab_forwards_total', 'Envelopes handed to another instance of the relay (per recipient)', (o) => o.forwards.forwarded);
  counter('pulltab_forwards_received_total', 'Envelopes another instance of the relay forwarded here for a key held here (per recipient)', (o) => o.forwards.received);
  gauge('pulltab_cluster_connected', 'Instances of this relay here connected to NATS (a cluster of hosts; 0 when not in one)', (o) => o.cluster?.connected ?? 0);
  gauge('pulltab_cluster_instances', 'Instances on other hosts linked to (their presence snapshot read), per instance here', (o) => o.cluster?.instances ?? 0);
  gauge('pulltab_presence_remote_keys', 'Keys held by other instances of the relay, as each instance here knows them', (o) => o.cluster?.remoteKeys ?? 0);
  labelled('pulltab_cluster_link_messages_total', 'NATS messages between instances on links to other hosts (each a batch of one turn\'s frames), by direction', 'direction', (o): Record<string, number> => (
    o.cluster ? { out: o.cluster.link.messagesOut, in: o.cluster.link.messagesIn } : {}
  ));
  labelled('pulltab_cluster_link_bytes_total', 'Bytes of frames carried on links to other hosts, by direction', 'direction', (o): Record<string, number> => (
    o.cluster ? { out: o.cluster.link.bytesOut, in: o.cluster.link.bytesIn } : {}
  ));
  counter('pulltab_cluster_window_waits_total', 'Writes on a link to another host that waited for its acknowledgements (half of forwardBudgetBytes in flight)', (o) => o.cluster?.link.windowWaits ?? 0);
  counter('pulltab_cluster_malformed_total', 'NATS messages on the cluster\'s subjects that could not be read (ignored)', (o) => o.cluster?.malformed ?? 0);
  counter('pulltab_cluster_link_gaps_total', 'Links between instances started afresh because a NATS message between them was lost', (o) => o.cluster?.linkGaps ?? 0);
  counter('pulltab_cluster_message_failures_total', 'NATS messages from other instances whose handling failed (a bug: see the cluster_message_failed log line)', (o) => o.cluster?.failures ?? 0);
  counter('pulltab_presence_unconfirmed_total', 'Connections welcomed before every other instance confirmed it knew them (one was slower than forwardDeadlineMs)', (o) => o.forwards.presenceUnconfirmed);
  labelled('pulltab_forward_misses_total', 'Forwards that missed (stored here when storable, else refused), by reason', 'reason', (o) => ({ ...o.forwards.missed }));

  gauge('pulltab_mailbox_entries', 'Stored messages (per recipient)', (o) => o.mailbox.count);
  gauge('pulltab_mailbox_bytes', 'Stored bytes (body plus wrapped key, per recipient)', (o) => o.mailbox.bytes);
  gauge('pulltab_mailbox_recipients', 'Recipients with stored messages', (o) => o.mailbox.recipients);
  gauge('pulltab_store_file_bytes', 'Bytes of the store engine\'s data files in use (an embedded engine; 0 for a database server)', (o) => o.mailbox.fileBytes ?? 0);
  counter('pulltab_store_commit_failures_total', 'Mailbox commits that failed (answered STORE_ERROR; unwritable until recovered)', (o) => o.mailbox.commitFailures);
  gauge('pulltab_store_writable', '1 while the mailbox store can commit, 0 from a failed commit until it has recovered', (o) => (o.mailbox.writable ? 1 : 0));

  labelled('pulltab_admin_requests_total', 'Admin requests answered, by status', 'status', (o) => o.adminAnswers);
  labelled('pulltab_event_log_lines_total', 'Event log lines, by outcome', 'outcome', (o): Record<string, number> => (
    o.eventLog ? { written: o.eventLog.written, dropped: o.eventLog.dropped } : {}
  ));
  gauge('pulltab_ready', '1 while ready: accepting connections and able to store', (o) => (o.ready ? 1 : 0));
  // A relay of workers: each worker's share (the metrics above are their sums).
  const perWorker = (name: string, help: string, read: (w: NonNullable<Observation['workers']>[number]) => number): void => {
    new Gauge({
      name, help, registers, labelNames: ['worker'],
      async collect() {
        const o = await scrape();
        this.reset();
        for (const w of o.workers ?? []) this.set({ worker: String(w.worker) }, read(w));
      },
    });
  };
  perWorker('pulltab_worker_up', '1 while the worker runs (a relay of workers)', (w) => (w.up ? 1 : 0));
  perWorker('pulltab_worker_restarts', 'Times the worker was started again after it died', (w) => w.restarts);
  perWorker('pulltab_worker_connections', 'Authenticated connections on the worker', (w) => w.authenticated);
  perWorker('pulltab_worker_messages_in', 'SEND frames the worker has received since it started', (w) => w.messagesIn);

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
