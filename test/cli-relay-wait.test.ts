// The CLI waits for its relay: `pulltab listen` started before the relay is up keeps trying
// (within --timeout) and reconnects after a relay restart; a fatal refusal still ends it at once.
import t from 'tap';
import { join } from 'node:path';
import { generateIdentity, encodeKey } from '../src/crypto/keys.js';
import { killRelay, removeDir, runCli, sleep, spawnRelay, tempDir, waitForSessions } from './helpers.js';

t.test('a listener started before the relay receives, and keeps receiving across a relay restart', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const data = join(dir, 'data');
  // Start once to learn the relay's address (its key lives in the data dir), then stop it.
  let relay = await spawnRelay(data, ['--port', '0']);
  const { address, port } = relay;
  await killRelay(relay, 'SIGTERM');
  await runCli(['keygen', '--out', join(dir, 'a.key')]);
  const bobKey = (await runCli(['keygen', '--out', join(dir, 'b.key')])).stdout.trim();

  const listening = runCli(['listen', '--relay', address, '--key', join(dir, 'b.key'), '--count', '2', '--timeout', '60', '--json'], { timeoutMs: 70_000 });
  // Long enough for several refused attempts (the old listen exited on the first).
  await sleep(1500);
  relay = await spawnRelay(data, ['--port', String(port)]);
  t.teardown(() => killRelay(relay, 'SIGTERM'));
  await waitForSessions(relay, 1, 20_000);
  const first = await runCli(['send', '--relay', address, '--key', join(dir, 'a.key'), '--to', bobKey, 'before the restart'], { timeoutMs: 40_000 });
  t.equal(first.code, 0, first.stderr);

  // kill -9 and start again on the same port: the listener reconnects by itself.
  await killRelay(relay, 'SIGKILL');
  relay = await spawnRelay(data, ['--port', String(port)]);
  await waitForSessions(relay, 1, 20_000);
  const second = await runCli(['send', '--relay', address, '--key', join(dir, 'a.key'), '--to', bobKey, 'after the restart'], { timeoutMs: 40_000 });
  t.equal(second.code, 0, second.stderr);

  const out = await listening;
  t.equal(out.code, 0, out.stderr);
  t.same(out.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { body: string }).body), ['before the restart', 'after the restart'], { timeoutMs: 40_000 });
});

t.test('listen gives up at --timeout when the relay never comes, and at once on a wrong relay key', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  await runCli(['keygen', '--out', join(dir, 'b.key')]);
  const relay = await spawnRelay(join(dir, 'data'), ['--port', '0']);
  t.teardown(() => killRelay(relay, 'SIGTERM'));
  const started = Date.now();
  const nobody = await runCli(['listen', '--relay', relay.address.replace(/:\d+$/, ':1'), '--key', join(dir, 'b.key'), '--timeout', '2']);
  t.equal(nobody.code, 1);
  t.equal(nobody.stdout, '', 'nothing on stdout');
  t.match(nobody.stderr, /never reached \(.*connection refused\)/, 'says why');
  t.ok(Date.now() - started >= 2000, 'kept trying until the timeout');
  // The right host and port, the wrong pinned key: retrying cannot help, so it ends at once.
  const wrongKey = relay.address.replace(/^pulltab:\/\/[^@]+@/, `pulltab://${encodeKey(generateIdentity().publicKey)}@`);
  const wrong = await runCli(['listen', '--relay', wrongKey, '--key', join(dir, 'b.key'), '--timeout', '30'], { timeoutMs: 20_000 });
  t.equal(wrong.code, 1);
  t.match(wrong.stderr, /relay key does not match/);
});
