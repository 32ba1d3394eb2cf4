// `pulltab listen` acknowledges exactly what it printed: --count N leaves the rest in the
// mailbox for the next listen, which prints each of them once.
import t from 'tap';
import { join } from 'node:path';
import { connectClient, killRelay, removeDir, runCli, spawnRelay, tempDir, type CliResult } from './helpers.js';

t.test('listen --count N prints and acknowledges exactly N; listen --until-empty then prints exactly the rest', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relay = await spawnRelay(join(dir, 'data'), ['--port', '0']);
  t.teardown(() => killRelay(relay, 'SIGTERM'));
  const bobKey = (await runCli(['keygen', '--out', join(dir, 'b.key')])).stdout.trim();
  const alice = await connectClient(relay.address);
  t.teardown(() => alice.close());
  const listen = (...args: string[]) => runCli(['listen', '--relay', relay.address, '--key', join(dir, 'b.key'), '--timeout', '10', ...args]);
  const bodies = (result: CliResult) => {
    t.equal(result.code, 0, result.stderr);
    return result.stdout.split('\n').filter((l) => l !== '').map((l) => l.slice(l.indexOf(': ') + 2));
  };
  for (const [count, total] of [[1, 3], [3, 10]]) {
    const sent = Array.from({ length: total }, (_, i) => `${count} of ${total}, message ${i}`);
    for (const body of sent) t.equal((await alice.send([bobKey], body, { store: true })).outcomes[0].codeName, 'STORED');
    t.same(bodies(await listen('--count', String(count))), sent.slice(0, count), `--count ${count} prints exactly ${count}`);
    // Anything left behind would show up in the next round's exact output, or in the last listen.
    t.same(bodies(await listen('--until-empty')), sent.slice(count), `then --until-empty prints exactly the other ${total - count}`);
  }
  t.same(bodies(await listen('--until-empty')), [], 'and then nothing');
});
