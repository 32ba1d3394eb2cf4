// `pulltab admin` and `pulltab events` as an operator runs them: a relay in its own process with a
// root key, listeners as separate processes, tables and --json, exit codes, and the event log.
import t from 'tap';
import { join } from 'node:path';
import { killRelay, removeDir, runCli, spawnRelay, tempDir, waitForSessions } from './helpers.js';

t.test('block, kick, usage and stats through the CLI; the event log summarised', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const data = join(dir, 'data');
  const key = (name: string) => join(dir, `${name}.key`);
  const rootKey = (await runCli(['keygen', '--out', key('root')])).stdout.trim();
  const aliceKey = (await runCli(['keygen', '--out', key('alice')])).stdout.trim();
  const bobKey = (await runCli(['keygen', '--out', key('bob')])).stdout.trim();
  const relay = await spawnRelay(data, ['--port', '0', '--root-key', rootKey]);
  let stopped = false;
  t.teardown(() => (stopped ? undefined : killRelay(relay, 'SIGTERM')));
  const admin = (args: string[], as = 'root') => runCli(['admin', '--relay', relay.address, '--key', key(as), ...args]);

  // Bob listens; blocking him disconnects him, and he cannot come back.
  const bobListening = runCli(['listen', '--relay', relay.address, '--key', key('bob'), '--timeout', '20']);
  await waitForSessions(relay, 1);
  const conns = await admin(['connections', '--json']);
  t.equal(conns.code, 0, conns.stderr);
  t.same(JSON.parse(conns.stdout).connections.map((c: { key: string }) => c.key), [bobKey, rootKey], 'bob, and the admin command itself');
  const blocked = await admin(['block', bobKey, '--json']);
  t.equal(blocked.code, 0, blocked.stderr);
  t.match(JSON.parse(blocked.stdout), { key: bobKey, blocked: true, changed: true, disconnected: 1 });
  const bobOut = await bobListening;
  t.equal(bobOut.code, 1);
  t.match(bobOut.stderr, /NOT_AUTHORIZED/, 'bob sees why');
  const bobAgain = await runCli(['listen', '--relay', relay.address, '--key', key('bob'), '--timeout', '5']);
  t.match(bobAgain.stderr, /NOT_AUTHORIZED/, 'a blocked key is refused at the handshake');
  t.match((await admin(['blocked'])).stdout, bobKey);
  t.equal((await admin(['unblock', bobKey])).stdout, `unblocked ${bobKey}\n`);

  // Alice listens and is kicked.
  const aliceListening = runCli(['listen', '--relay', relay.address, '--key', key('alice'), '--timeout', '20']);
  await waitForSessions(relay, 1);
  const kicked = await admin(['kick', aliceKey]);
  t.equal(kicked.code, 0, kicked.stderr);
  t.equal(kicked.stdout, `kicked ${aliceKey}\n`);
  t.match((await aliceListening).stderr, /KICKED/);

  // Stored messages show in the usage table and in --json.
  for (let i = 0; i < 2; i++) {
    const sent = await runCli(['send', '--relay', relay.address, '--key', key('alice'), '--to', bobKey, '--store', `stored ${i}`]);
    t.equal(sent.code, 0, sent.stderr);
  }
  const table = await admin(['usage']);
  t.equal(table.code, 0, table.stderr);
  t.match(table.stdout, /^KEY\s+MESSAGES\s+BYTES\n/);
  t.match(table.stdout, new RegExp(`${bobKey}\\s+2\\s+\\d+`));
  t.match(table.stdout, /TOTAL \(1 recipient\)\s+2\s+/);
  const usage = JSON.parse((await admin(['usage', '--top', '5', '--json'])).stdout);
  t.match(usage, { totals: { count: 2, recipients: 1 }, top: [{ key: bobKey, count: 2 }] });
  t.match((await admin(['messages', 'rm', '--older-than', '1h'])).stdout, 'removed 0 stored messages');
  t.match((await admin(['messages', 'rm', '--user', bobKey])).stdout, 'removed 2 stored messages');

  const stats = JSON.parse((await admin(['stats', '--json'])).stdout);
  t.match(stats, { handshakes: { notAuthorized: 1 }, messages: { in: 2, stored: 2 }, disconnects: { kicked: 1, notAuthorized: 1 } });
  t.match((await admin(['stats'])).stdout, /^messages\.stored\s+2$/m, 'a readable table by default');

  await killRelay(relay, 'SIGTERM');
  stopped = true;
  const events = await runCli(['events', '--data', data, '--json']);
  t.equal(events.code, 0, events.stderr);
  const summary = JSON.parse(events.stdout);
  t.equal(summary.counts.relay_started, 1);
  t.equal(summary.counts.relay_stopped, 1);
  t.equal(summary.counts.auth_failed, 1, 'the blocked key\'s attempt');
  t.ok(summary.counts.admin >= 10, `admin actions recorded (${summary.counts.admin})`);
  t.equal(summary.counts.disconnected, 2, 'the block and the kick');
  const text = await runCli(['events', '--data', data, '--since', '1h']);
  t.match(text.stdout, /^EVENT\s+COUNT\n/);
  t.match(text.stdout, /^admin\s+\d+$/m);
  t.match(text.stdout, /^auth_failed\s+1$/m);
  t.equal((await runCli(['events', '--data', join(dir, 'nowhere')])).code, 1);
  t.equal((await runCli(['events', '--data', data, '--since', 'whenever'])).code, 2);
});
