// The operators' HTTP listener on its own: /metrics reads its source when scraped, /healthz and
// /readyz answer, anything else is 404. (Counters moving with real traffic: metrics.test.ts.)
import t from 'tap';
import { startMetricsServer, type MetricsSource } from '../src/server/metrics.js';
import { observe } from '../src/server/observation.js';
import { RelayStats } from '../src/server/stats.js';
import { httpGet } from './helpers.js';

t.test('scrapes read the counters at scrape time', async (t) => {
  const stats = new RelayStats();
  let ready = false;
  stats.handshakesRefused.authFailed = 3;
  stats.handshakesRefused.notAuthorized = 4;
  stats.policyDisconnects.kicked = 1;
  const source: MetricsSource = {
    observe: () => observe({
      stats,
      startedAt: Date.now(),
      handshaking: () => 1,
      sessions: () => ({ authenticated: 2, sendOnly: 0 }),
      traffic: () => ({ framesIn: 10, bytesIn: 1000, framesOut: 20, bytesOut: 2000 }),
      storeStatus: () => ({ engine: 'lmdb', writable: true, commitFailures: 3, fileBytes: 65536 }),
      storeTotals: async () => ({ count: 5, bytes: 500, recipients: 2 }),
      eventLog: () => ({ written: 7, dropped: 1, errors: 0 }),
      cluster: () => null,
      adminAnswers: () => ({ OK: 2, FORBIDDEN: 1 }),
      ready: () => ready,
    }),
    ready: () => ready,
  };
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0, source });
  t.teardown(() => server.close());
  t.ok(server.port > 0, 'an ephemeral port');

  stats.messagesIn = 42;
  stats.messagesOut = 30;
  stats.deliveredFromMailbox = 10;
  stats.dropped.offline = 6;
  const first = await httpGet(server.port, '/metrics');
  t.equal(first.status, 200);
  t.match(first.type, /text\/plain/);
  for (const line of [
    'pulltab_connections{state="authenticated"} 2',
    'pulltab_messages_in_total 42',
    'pulltab_messages_delivered_total{source="live"} 20',
    'pulltab_messages_delivered_total{source="mailbox"} 10',
    'pulltab_messages_dropped_total{reason="offline"} 6',
    'pulltab_handshakes_total{outcome="not_authorized"} 4',
    'pulltab_bytes_out_total 2000',
    'pulltab_mailbox_bytes 500',
    'pulltab_store_file_bytes 65536',
    'pulltab_store_commit_failures_total 3',
    'pulltab_admin_requests_total{status="FORBIDDEN"} 1',
    'pulltab_event_log_lines_total{outcome="dropped"} 1',
    'pulltab_ready 0',
  ]) t.ok(first.body.includes(line + '\n'), line);
  t.match(first.body, /# TYPE pulltab_messages_in_total counter/);
  t.match(first.body, /nodejs_eventloop_lag_seconds/);
  stats.messagesIn = 43;
  t.match((await httpGet(server.port, '/metrics')).body, /pulltab_messages_in_total 43\n/, 'a later scrape sees the new value');

  t.same(await httpGet(server.port, '/healthz'), { status: 200, body: 'ok\n', type: 'text/plain; charset=utf-8' });
  t.equal((await httpGet(server.port, '/readyz')).status, 503);
  ready = true;
  t.equal((await httpGet(server.port, '/readyz')).status, 200);
  t.equal((await httpGet(server.port, '/nope')).status, 404);
  t.equal((await httpGet(server.port, '/metrics', 'POST')).status, 405);
  t.equal((await httpGet(server.port, '/healthz', 'HEAD')).body, '');
});

t.test('a port in use is an error at start', async (t) => {
  const stats = new RelayStats();
  const source: MetricsSource = {
    observe: () => observe({
      stats, startedAt: Date.now(), handshaking: () => 0, sessions: () => ({ authenticated: 0, sendOnly: 0 }),
      traffic: () => ({ framesIn: 0, bytesIn: 0, framesOut: 0, bytesOut: 0 }),
      storeStatus: () => ({ engine: 'lmdb', writable: true, commitFailures: 0, fileBytes: 0 }),
      storeTotals: async () => ({ count: 0, bytes: 0, recipients: 0 }),
      eventLog: () => null, cluster: () => null, adminAnswers: () => ({}), ready: () => true,
    }),
    ready: () => true,
  };
  const a = await startMetricsServer({ host: '127.0.0.1', port: 0, source });
  t.teardown(() => a.close());
  await t.rejects(startMetricsServer({ host: '127.0.0.1', port: a.port, source }), { code: 'EADDRINUSE' });
});
