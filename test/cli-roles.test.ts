// A key that listens can also send: `pulltab send` and `pulltab admin` connect send-only, so
// they never cut off a `pulltab listen` of the same key (separate processes, a spawned relay).
import t from 'tap';
import { join } from 'node:path';
import { killRelay, removeDir, runCli, spawnRelay, tempDir, waitForSessions, type CliResult } from './helpers.js';

/** Lines of `listen --json` output as [from, body] pairs. */
function heard(result: CliResult): Array<[string, string]> {
  return result.stdout.split('\n').filter((l) => l !== '').map((l) => {
    const m = JSON.parse(l) as { from: string; body: string };
    return [m.from, m.body];
  });
}

t.test('a listener and a sender with one key, in two processes', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const key = join(dir, 'a.key');
  const aliceKey = (await runCli(['keygen', '--out', key])).stdout.trim();
  const relay = await spawnRelay(join(dir, 'data'), ['--port', '0', '--root-key', aliceKey]);
  t.teardown(() => killRelay(relay, 'SIGTERM'));
  const listening = runCli(['listen', '--relay', relay.address, '--key', key, '--count', '2', '--timeout', '30', '--json'], { timeoutMs: 40_000 });
  await waitForSessions(relay, 1);
  // Alice sends to herself, and runs an admin command, while her listener is connected.
  const sent = await runCli(['send', '--relay', relay.address, '--key', key, '--to', aliceKey, 'note to self']);
  t.equal(sent.code, 0, sent.stderr);
  t.match(sent.stderr, /delivered/, 'delivered to her listener');
  const stats = await runCli(['admin', '--relay', relay.address, '--key', key, 'stats', '--json']);
  t.equal(stats.code, 0, stats.stderr);
  const again = await runCli(['send', '--relay', relay.address, '--key', key, '--to', aliceKey, 'still here']);
  t.equal(again.code, 0, again.stderr);
  const out = await listening;
  t.equal(out.code, 0, `the listener was never cut off: ${out.stderr}`);
  t.same(heard(out), [[aliceKey, 'note to self'], [aliceKey, 'still here']]);
});
