// Admin requests with members named like Object.prototype's ("__proto__", "constructor",
// "prototype", "hasOwnProperty", "toString") are refused exactly like any unknown member
// ("zzz"): BAD_REQUEST, "unknown argument NAME", at the top level, in args, and in nested
// objects (policy patches and their admin rights). Issue 12, item 10. The requests are written
// as JSON text: a JavaScript object literal cannot carry an own "__proto__" member.
import t from 'tap';
import { encodeKey, generateIdentity } from '../src/crypto/keys.js';
import { Code } from '../src/protocol/constants.js';
import { adminEngine } from './admin-setup.js';
import { connectClient, removeDir, startRelay, tempDir } from './helpers.js';

const NAMES = ['zzz', '__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString'];
/** Member values that would matter if a member were read through the prototype chain. */
const VALUES = ['1', '{}', '{"top":"x","name":"p","canConnect":false}', 'null'];

async function engineWithRoot(t: { teardown(fn: () => unknown): void }) {
  const { engine, root } = await adminEngine(t);
  const handle = async (json: string) => {
    const answer = await engine.handle(root, json);
    return { status: answer.status, error: (JSON.parse(answer.json) as { error?: string }).error ?? '' };
  };
  return { handle };
}

t.test('every unknown member is refused the same way, at every level', async (t) => {
  const { handle } = await engineWithRoot(t);
  const someKey = encodeKey(generateIdentity().publicKey);
  // [label, JSON with NAME/VALUE placeholders, where the unknown member sits in the error]
  const cases: Array<[string, string, string]> = [
    ['top level', '{"command":"stats","NAME":VALUE}', ''],
    ['usage args', '{"command":"usage","args":{"NAME":VALUE}}', ''],
    ['stats args', '{"command":"stats","args":{"NAME":VALUE}}', ''],
    ['usage args beside a known member', '{"command":"usage","args":{"top":3,"NAME":VALUE}}', ''],
    ['user.get args', `{"command":"user.get","args":{"key":"${someKey}","NAME":VALUE}}`, ''],
    ['messages.rm args', '{"command":"messages.rm","args":{"olderThanSeconds":60,"NAME":VALUE}}', ''],
    ['policy.set args', '{"command":"policy.set","args":{"name":"p","NAME":VALUE}}', ''],
    ['policy.set fields', '{"command":"policy.set","args":{"name":"p","fields":{"NAME":VALUE}}}', ' in fields'],
    ['policy.set fields.admin', '{"command":"policy.set","args":{"name":"p","fields":{"admin":{"NAME":VALUE}}}}', ' in fields.admin'],
  ];
  for (const [label, template, where] of cases) {
    for (const name of NAMES) {
      for (const value of VALUES) {
        const json = template.replace('NAME', name).replace('VALUE', value);
        const answer = await handle(json);
        t.equal(answer.status, Code.BAD_REQUEST, `${label}: ${name}: ${value} is BAD_REQUEST`);
        t.ok(answer.error.includes(`unknown argument ${name}${where}`), `${label}: ${name}: ${value}: "${answer.error}" names it`);
      }
    }
  }
  t.match(await handle('{"command":"policy.get","args":{"name":"p"}}'), { status: Code.NOT_FOUND }, 'no refused policy.set created a policy');
  t.match(await handle('{"command":"usage","args":{}}'), { status: Code.OK }, 'the same command without the member is answered');
});

t.test('command names that are Object.prototype members are unknown commands', async (t) => {
  const { handle } = await engineWithRoot(t);
  for (const name of ['__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', 'valueOf']) {
    const answer = await handle(JSON.stringify({ command: name }));
    t.equal(answer.status, Code.NOT_FOUND, name);
    t.ok(answer.error.includes(`no admin command ${JSON.stringify(name)}`), answer.error);
  }
});

t.test('over the relay: usage and stats with a "__proto__" member in args are BAD_REQUEST, like "zzz"', async (t) => {
  const dir = tempDir();
  const rootId = generateIdentity();
  const relay = await startRelay({ rootKey: encodeKey(rootId.publicKey) }, dir);
  const root = await connectClient(relay, { identity: rootId, reconnect: false });
  t.teardown(async () => {
    await root.close();
    await relay.close();
    removeDir(dir);
  });
  for (const command of ['usage', 'stats']) {
    for (const name of ['zzz', '__proto__', 'constructor', 'prototype']) {
      // JSON.parse makes "__proto__" an own member, which the client's JSON.stringify sends as written.
      const answer = await root.admin(command, JSON.parse(`{"${name}":{"top":1}}`) as Record<string, unknown>);
      t.equal(answer.status, Code.BAD_REQUEST, `${command} with ${name}`);
    }
  }
});
