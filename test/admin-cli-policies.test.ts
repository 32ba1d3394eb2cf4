// `pulltab admin` policies, users and refusals as an operator runs them, against a relay in its
// own process with a root key: flags, tables and --json, one-line errors and exit codes.
import t from 'tap';
import { join } from 'node:path';
import { killRelay, removeDir, runCli, spawnRelay, tempDir } from './helpers.js';

t.test('policies and users through the CLI; refusals and bad arguments', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const key = (name: string) => join(dir, `${name}.key`);
  const rootKey = (await runCli(['keygen', '--out', key('root')])).stdout.trim();
  const aliceKey = (await runCli(['keygen', '--out', key('alice')])).stdout.trim();
  const relay = await spawnRelay(join(dir, 'data'), ['--port', '0', '--root-key', rootKey]);
  t.teardown(() => killRelay(relay, 'SIGTERM'));
  const admin = (args: string[], as = 'root') => runCli(['admin', '--relay', relay.address, '--key', key(as), ...args]);

  // Policies from flags and from a file.
  const set = await admin(['policy', 'set', 'small', '--max-payload', '64KiB', '--rights', 'readUsage', '--max-ttl', '2h']);
  t.equal(set.code, 0, set.stderr);
  t.match(set.stdout, /^policy small created/);
  t.match(set.stdout, /maxPayloadBytes\s+65536 \(64 KiB\)/);
  t.match(JSON.parse((await admin(['policy', 'get', 'small', '--json'])).stdout), { policy: { maxTtlSeconds: 7200, admin: { readUsage: true, editPolicies: false } } });
  t.equal((await admin(['user', 'set', aliceKey, 'small'])).code, 0);
  t.match((await admin(['user', 'ls'])).stdout, new RegExp(`${aliceKey}\\s+small`));
  t.match((await admin(['policy', 'ls'])).stdout, /^default\*\s+yes/m);
  const conflict = await admin(['policy', 'rm', 'small']);
  t.equal(conflict.code, 1);
  t.match(conflict.stderr, /^pulltab: admin policy rm: CONFLICT: policy "small" is assigned to 1 key/);

  // Refusals and bad arguments: one line, exit 1 and 2.
  const forbidden = await admin(['block', rootKey], 'alice');
  t.equal(forbidden.code, 1);
  t.equal(forbidden.stderr, 'pulltab: admin block: FORBIDDEN: block needs the manageConnections right\n');
  t.match((await admin(['stats'], 'alice')), { code: 0 }, 'alice now has readUsage');
  const bad = await admin(['usage', '--older-than', '1h']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--older-than does not apply to usage/);
  t.equal((await admin(['frobnicate'])).code, 2);
  t.equal((await admin(['kick', 'not-a-key'])).code, 2);
  const self = await admin(['user', 'get', aliceKey], 'alice');
  t.equal(self.code, 0, 'any key may read its own policy');
  t.match(self.stdout, /^policy\s+small \(assigned\)$/m);
});
