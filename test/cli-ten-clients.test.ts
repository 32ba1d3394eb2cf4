// Ten CLI clients that each listen and send (the original relay's "10 clients x 101 random
// messages" case, through the CLI): every `pulltab send` is a send-only connection of a key
// whose `pulltab listen` stays connected, so all 101 arrive. Its own file: 111 processes.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { killRelay, removeDir, runCli, spawnRelay, tempDir, waitForSessions, type CliResult } from './helpers.js';

/** Lines of `listen --json` output as [from, body] pairs. */
function heard(result: CliResult): Array<[string, string]> {
  return result.stdout.split('\n').filter((l) => l !== '').map((l) => {
    const m = JSON.parse(l) as { from: string; body: string };
    return [m.from, m.body];
  });
}

// On one process, and on a relay of 2 workers (the clients spread over both).
for (const workers of [1, 2]) t.test(`ten CLI clients that each listen and send: 101 random messages, all delivered (${workers} worker${workers > 1 ? 's' : ''})`, async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relay = await spawnRelay(join(dir, 'data'), ['--port', '0', '--workers', String(workers)]);
  t.teardown(() => killRelay(relay, 'SIGTERM'));
  const CLIENTS = 10;
  const MESSAGES = 101;
  const keyFile = (i: number) => join(dir, `c${i}.key`);
  const keys = await Promise.all(Array.from({ length: CLIENTS }, async (_, i) => (await runCli(['keygen', '--out', keyFile(i)])).stdout.trim()));
  // Random sender and recipient per message; the first CLIENTS go round so every listener gets one.
  const plan = Array.from({ length: MESSAGES }, (_, n) => ({
    from: Math.floor(Math.random() * CLIENTS),
    to: n < CLIENTS ? n : Math.floor(Math.random() * CLIENTS),
    body: randomBytes(12).toString('hex'),
  }));
  const expected = keys.map((_, i) => plan.filter((m) => m.to === i).map((m): [string, string] => [keys[m.from], m.body]));
  const listeners = keys.map((_, i) => runCli(
    ['listen', '--relay', relay.address, '--key', keyFile(i), '--count', String(expected[i].length), '--timeout', '240', '--json'],
    { timeoutMs: 250_000 },
  ));
  const started = Date.now();
  await waitForSessions(relay, CLIENTS, 60_000);
  t.comment(`listeners connected after ${Date.now() - started} ms`);
  // Six sends at a time (each its own process, its sender's key also listening); on a loaded
  // machine a CLI process takes a second or more, hence the long listener timeout.
  const failures: string[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 6 }, async () => {
    while (next < plan.length) {
      const m = plan[next++];
      const sent = await runCli(['send', '--relay', relay.address, '--key', keyFile(m.from), '--to', keys[m.to], m.body], { timeoutMs: 30_000 });
      if (sent.code !== 0) failures.push(sent.stderr.trim());
    }
  }));
  t.comment(`sends done after ${Date.now() - started} ms`);
  t.same(failures, [], 'every send was delivered');
  if (failures.length > 0) t.comment(relay.output().split('\n').filter((l) => !l.includes('"level":20')).slice(-30).join('\n'));
  const results = await Promise.all(listeners);
  let delivered = 0;
  for (let i = 0; i < CLIENTS; i++) {
    t.equal(results[i].code, 0, `listener ${i}: ${results[i].stderr}`);
    const got = heard(results[i]);
    delivered += got.length;
    // One sender's messages to one recipient arrive in order; across senders any order.
    t.same(got.slice().sort(), expected[i].slice().sort(), `listener ${i} got exactly its ${expected[i].length}`);
  }
  t.equal(delivered, MESSAGES, `${MESSAGES} of ${MESSAGES} delivered`);
});
