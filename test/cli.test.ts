// The `pulltab` command end to end: a relay in its own process, keygen/id/send/listen as
// separate processes, as a user would run them (dist/ is built by `npm test`).
import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { killRelay, removeDir, runCli, spawnRelay, tempDir, waitForSessions } from './helpers.js';

t.test('keygen, id, send and listen through a relay', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relay = await spawnRelay(join(dir, 'data'), ['--port', '0']);
  t.teardown(() => killRelay(relay, 'SIGTERM'));
  t.match(relay.address, /^pulltab:\/\/[1-9A-HJ-NP-Za-km-z]{43,44}@127\.0\.0\.1:\d+$/);

  const alice = await runCli(['keygen', '--out', join(dir, 'alice.key')]);
  const bob = await runCli(['keygen', '--out', join(dir, 'bob.key')]);
  t.equal(alice.code, 0);
  t.equal(statSync(join(dir, 'alice.key')).mode & 0o777, 0o600, 'identity written 0600');
  const aliceKey = alice.stdout.trim();
  const bobKey = bob.stdout.trim();
  t.equal((await runCli(['id', '--key', join(dir, 'bob.key')])).stdout.trim(), bobKey, 'id prints the keygen key');
  t.equal((await runCli(['keygen', '--out', join(dir, 'bob.key')])).code, 1, 'keygen never overwrites');

  // Generous bounds: on a loaded machine each CLI process takes seconds to start.
  const listening = runCli(['listen', '--relay', relay.address, '--key', join(dir, 'bob.key'), '--count', '2', '--timeout', '60', '--json'], { timeoutMs: 70_000 });
  await waitForSessions(relay, 1);
  const sent = await runCli(['send', '--relay', relay.address, '--key', join(dir, 'alice.key'), '--to', bobKey, 'hello Bob']);
  t.equal(sent.code, 0, sent.stderr);
  t.match(sent.stderr, /delivered/);
  const piped = await runCli(['send', '--relay', relay.address, '--key', join(dir, 'alice.key'), '--to', bobKey, '-'], { input: 'line one\nline two' });
  t.equal(piped.code, 0, piped.stderr);
  const heard = await listening;
  t.equal(heard.code, 0, heard.stderr);
  const lines = heard.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.same(lines.map((l) => [l.from, l.body]), [[aliceKey, 'hello Bob'], [aliceKey, 'line one\nline two']]);
});

t.test('send --store to an offline recipient survives kill -9; listen prints it once', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const data = join(dir, 'data');
  let relay = await spawnRelay(data, ['--port', '0']);
  const port = relay.port;
  await runCli(['keygen', '--out', join(dir, 'a.key')]);
  const bobKey = (await runCli(['keygen', '--out', join(dir, 'b.key')])).stdout.trim();
  const sent = await runCli(['send', '--relay', relay.address, '--key', join(dir, 'a.key'), '--to', bobKey, '--store', 'while you were out']);
  t.equal(sent.code, 0, sent.stderr);
  t.match(sent.stderr, /stored/);
  await killRelay(relay, 'SIGKILL');
  relay = await spawnRelay(data, ['--port', String(port)]);
  t.teardown(() => killRelay(relay, 'SIGTERM'));
  const first = await runCli(['listen', '--relay', relay.address, '--key', join(dir, 'b.key'), '--until-empty', '--timeout', '10']);
  t.equal(first.code, 0, first.stderr);
  t.equal(first.stdout.trim().split('\n').length, 1);
  t.match(first.stdout, /: while you were out\n$/);
  const second = await runCli(['listen', '--relay', relay.address, '--key', join(dir, 'b.key'), '--until-empty', '--timeout', '10']);
  t.equal(second.code, 0, second.stderr);
  t.equal(second.stdout, '', 'an acknowledged message is never delivered again');
});

t.test('a sealed marker never appears in the relay\'s data or logs, but reaches the recipient', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const data = join(dir, 'data');
  const relay = await spawnRelay(data, ['--port', '0'], { PULLTAB_LOG_LEVEL: 'trace', PULLTAB_LOG_DELIVERIES: 'true' });
  t.teardown(() => killRelay(relay, 'SIGTERM'));
  await runCli(['keygen', '--out', join(dir, 'a.key')]);
  const bobKey = (await runCli(['keygen', '--out', join(dir, 'b.key')])).stdout.trim();
  const marker = 'MARKER-7f3a9c1e-do-not-leak';
  const sent = await runCli(['send', '--relay', relay.address, '--key', join(dir, 'a.key'), '--to', bobKey, '--store', marker]);
  t.equal(sent.code, 0, sent.stderr);
  const needle = Buffer.from(marker);
  for (const file of walk(data)) t.equal(readFileSync(file).indexOf(needle), -1, `${file} does not contain the marker`);
  t.equal(relay.output().indexOf(marker), -1, 'the logs do not contain the marker');
  t.match(relay.output(), /"event":"stored"/, 'delivery logging was on and saw the message');
  const heard = await runCli(['listen', '--relay', relay.address, '--key', join(dir, 'b.key'), '--count', '1', '--timeout', '10']);
  t.match(heard.stdout, marker);
});

t.test('bad arguments and a refused connection end in one clear line', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  await runCli(['keygen', '--out', join(dir, 'a.key')]);
  const noRelay = await runCli(['send', '--key', join(dir, 'a.key'), '--to', 'x', 'hi']);
  t.equal(noRelay.code, 2);
  t.match(noRelay.stderr, /^pulltab: send: --relay is required/);
  const badKey = await runCli(['send', '--relay', 'pulltab://11111111111111111111111111111111@127.0.0.1:1', '--key', join(dir, 'a.key'), '--to', 'notakey', 'hi']);
  t.equal(badKey.code, 2);
  t.match(badKey.stderr, /--to: not a base58 key|a key is 32 bytes/);
  const relayKey = (await runCli(['id', '--key', join(dir, 'a.key')])).stdout.trim();
  const refused = await runCli(['send', '--relay', `pulltab://${relayKey}@127.0.0.1:1`, '--key', join(dir, 'a.key'), '--to', relayKey, 'hi']);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /connection refused/);
  t.notMatch(refused.stderr, /\n\s+at /, 'no stack trace');
  t.equal(refused.stderr.trim().split('\n').length, 1);
  const unknown = await runCli(['frobnicate']);
  t.equal(unknown.code, 2);
  const help = await runCli(['send', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /Usage: pulltab send/);
  const version = await runCli(['--version']);
  t.equal(version.code, 0, version.stderr);
  t.equal(version.stdout, JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version + '\n', '--version prints package.json\'s version');
  const badConfig = await runCli(['serve', '--port', 'seventy']);
  t.equal(badConfig.code, 2);
  t.match(badConfig.stderr, /port/);
});

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...walk(path));
    else out.push(path);
  }
  return out;
}
