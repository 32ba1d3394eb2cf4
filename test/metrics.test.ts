// The relay's operator listener with real traffic: /metrics moves as messages flow, /healthz and
// /readyz answer, and it can be turned off.
import t from 'tap';
import { generateIdentity } from '../src/crypto/keys.js';
import { connectClient, httpGet, nextMessages, removeDir, startRelay, tempDir } from './helpers.js';

function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? NaN : Number(line.slice(series.length + 1));
}

t.test('/metrics lists the counters and they move when messages flow', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relay = await startRelay({}, dir);
  t.teardown(() => relay.close());
  t.ok(relay.metricsPort! > 0, 'an ephemeral metrics port');
  t.not(relay.metricsPort, relay.port);

  const before = (await httpGet(relay.metricsPort!, '/metrics')).body;
  for (const name of [
    'pulltab_connections', 'pulltab_handshakes_total', 'pulltab_frames_in_total', 'pulltab_bytes_in_total',
    'pulltab_frames_out_total', 'pulltab_bytes_out_total', 'pulltab_messages_delivered_total', 'pulltab_messages_stored_total',
    'pulltab_messages_dropped_total', 'pulltab_mailbox_entries', 'pulltab_mailbox_bytes', 'pulltab_store_file_bytes',
    'nodejs_eventloop_lag_seconds', 'pulltab_slow_consumer_disconnects_total', 'pulltab_rate_limit_pauses_total',
  ]) t.match(before, new RegExp(`^# TYPE ${name} `, 'm'), name);

  const a = await connectClient(relay);
  const b = await connectClient(relay);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const got = nextMessages(b, 3);
  for (let i = 0; i < 3; i++) await a.send([b.identity.publicKey], `m${i}`);
  await got;
  await a.send([generateIdentity().publicKey], 'for later', { store: true });
  await a.send([generateIdentity().publicKey], 'nobody home');
  const after = (await httpGet(relay.metricsPort!, '/metrics')).body;
  t.equal(value(after, 'pulltab_connections{state="authenticated"}'), 2);
  t.equal(value(after, 'pulltab_handshakes_total{outcome="ok"}'), 2);
  t.equal(value(after, 'pulltab_messages_in_total'), 5);
  t.equal(value(after, 'pulltab_messages_delivered_total{source="live"}'), 3);
  t.equal(value(after, 'pulltab_messages_stored_total'), 1);
  t.equal(value(after, 'pulltab_messages_dropped_total{reason="offline"}'), 1);
  t.equal(value(after, 'pulltab_mailbox_entries'), 1);
  t.ok(value(after, 'pulltab_mailbox_bytes') > 0);
  t.ok(value(after, 'pulltab_frames_in_total') >= 2 + 5 + 3, 'hellos, sends and acks');
  t.ok(value(after, 'pulltab_bytes_in_total') > value(before, 'pulltab_bytes_in_total'));
  t.ok(value(after, 'pulltab_bytes_out_total') > 0);
  t.ok(value(after, 'pulltab_store_file_bytes') > 0);
  t.notMatch(after, /127\.0\.0\.1/, 'no address in the metrics');

  t.equal((await httpGet(relay.metricsPort!, '/healthz')).status, 200);
  t.equal((await httpGet(relay.metricsPort!, '/readyz')).status, 200);
});

t.test('metricsPort -1 turns the listener off', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relay = await startRelay({ metricsPort: -1 }, dir);
  t.teardown(() => relay.close());
  t.equal(relay.metricsPort, null);
});

t.test('a metrics port in use stops the start with a clear error', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const first = await startRelay({}, dir + '-a');
  t.teardown(async () => {
    await first.close();
    removeDir(dir + '-a');
  });
  await t.rejects(startRelay({ metricsPort: first.metricsPort! }, dir), { code: 'METRICS_LISTEN', message: /cannot listen for metrics on 127\.0\.0\.1:\d+: address already in use/ });
});
