// `pulltab admin` argument handling: words and flags into { command, args }, --file merged under
// the flags, and usage errors (exit 2) before anything is sent.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildRequest } from '../src/cli/admin.js';
import { CliError } from '../src/cli/args.js';
import { encodeKey, generateIdentity } from '../src/crypto/keys.js';
import { removeDir, tempDir } from './helpers.js';

t.test('requests built from words and flags', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const key = encodeKey(generateIdentity().publicKey);
  const file = join(dir, 'p.json');
  writeFileSync(file, JSON.stringify({ name: 'p', maxRecipients: 9, mailboxMaxBytes: 1000, admin: { readUsage: true } }));
  t.same(buildRequest(['policy', 'set', 'p'], { file, 'max-recipients': '3', 'can-connect': 'false', 'rate-bytes': '1MiB' }).args, {
    name: 'p', fields: { maxRecipients: 3, mailboxMaxBytes: 1000, admin: { readUsage: true }, canConnect: false, rateBytesPerSecond: 1048576 },
  }, 'flags override the file');
  t.same(buildRequest(['policy', 'set', 'p'], { rights: 'all' }).args, {
    name: 'p', fields: { admin: { editPolicies: true, assignUsers: true, readUsage: true, manageConnections: true, manageMessages: true } },
  });
  t.same(buildRequest(['user', 'set', key, 'p'], {}), { command: 'user.set', args: { key, policy: 'p' }, label: 'user set' });
  t.same(buildRequest(['messages', 'rm'], { 'older-than': '7d' }).args, { olderThanSeconds: 604800 });
  t.same(buildRequest(['usage'], { top: '3' }).args, { top: 3 });

  const usage = (positionals: string[], values: Record<string, string> = {}) => {
    try {
      buildRequest(positionals, values);
      return 'accepted';
    } catch (err) {
      t.ok(err instanceof CliError);
      t.equal((err as CliError).exitCode, 2);
      return (err as Error).message;
    }
  };
  t.match(usage(['policy', 'set', 'p'], { file: join(dir, 'missing.json') }), /cannot read it \(ENOENT\)/);
  writeFileSync(file, JSON.stringify({ name: 'other' }));
  t.match(usage(['policy', 'set', 'p'], { file }), /names policy "other"/);
  t.match(usage(['policy', 'set', 'p'], { rights: 'root' }), /--rights must be a comma-separated list/);
  t.match(usage(['policy', 'set', 'p'], { 'max-payload': 'big' }), /--max-payload must be a size/);
  t.match(usage(['policy', 'get', 'p'], { 'max-payload': '1' }), /--max-payload does not apply to policy get/);
  t.match(usage(['messages', 'rm'], {}), /exactly one of --user KEY and --older-than/);
  t.match(usage(['user', 'set', key]), /usage: user set KEY POLICY/);
  t.match(usage(['kick', 'xyz']), /KEY: a key is 32 bytes/);
  t.match(usage([]), /give a COMMAND/);
});
