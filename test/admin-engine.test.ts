// The admin engine over real stores (LMDB policies and mailbox): parsing, rights, answers, and the
// audit trail. Sessions and the CLI are covered end to end in admin.test.ts.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONFLICT, type AdminCaller } from '../src/admin/engine.js';
import { encodeKey, generateIdentity } from '../src/crypto/keys.js';
import { Code } from '../src/protocol/constants.js';
import { enqueue } from '../src/store/mailbox.js';
import { adminCaller as caller, adminEngine } from './admin-setup.js';

async function setup(t: { teardown(fn: () => unknown): void }) {
  const { dir, engine, root, store, policyStore, events } = await adminEngine(t, { eventLog: true });
  const run = async (who: AdminCaller, command: string, args: Record<string, unknown> = {}) => {
    const answer = await engine.handle(who, JSON.stringify({ command, args }));
    return { status: answer.status, body: JSON.parse(answer.json) };
  };
  return { dir, engine, run, root, store, events: events!, policyStore };
}

t.test('malformed requests, unknown commands and missing rights get explicit answers', async (t) => {
  const { engine, run, root } = await setup(t);
  const user = caller();
  const bad = await engine.handle(user, 'not json');
  t.equal(bad.status, Code.BAD_REQUEST);
  t.match(JSON.parse(bad.json), { error: /not JSON/ });
  t.equal((await engine.handle(user, '{"cmd":"stats"}')).status, Code.BAD_REQUEST);
  t.match(await run(user, 'exec', { command: 'ls' }), { status: Code.NOT_FOUND, body: { error: /no admin command "exec"/ } }, 'no remote shell');
  t.match(await run(user, 'policy.set', { name: 'x', fields: {} }), { status: Code.FORBIDDEN, body: { error: 'policy.set needs the editPolicies right' } });
  t.match(await run(user, 'stats'), { status: Code.FORBIDDEN });
  t.match(await run(root, 'policy.set', { name: 'x', fields: { bogus: 1 } }), { status: Code.BAD_REQUEST, body: { error: /unknown argument bogus/ } });
  t.match(await run(root, 'user.get', { key: 'not-a-key' }), { status: Code.BAD_REQUEST });
  t.match(await run(root, 'stats'), { status: Code.OK, body: { uptime: 1 } });
});

t.test('root assigns an admin policy; the user can then edit policies but not grant more than it holds', async (t) => {
  const { run, root } = await setup(t);
  const user = caller();
  t.match(await run(root, 'policy.set', { name: 'editor', fields: { admin: { editPolicies: true } } }), { status: Code.OK, body: { created: true, policy: { name: 'editor', canConnect: true } } });
  t.match(await run(root, 'user.set', { key: user.keyText, policy: 'editor' }), { status: Code.OK, body: { user: { policy: 'editor', source: 'assigned', rights: ['editPolicies'] } } });
  t.match(await run(user, 'policy.set', { name: 'default', fields: { maxPayloadBytes: 4096 } }), { status: Code.OK, body: { policy: { name: 'default', maxPayloadBytes: 4096 } } });
  t.match(await run(user, 'policy.set', { name: 'boss', fields: { admin: { assignUsers: true } } }), { status: Code.FORBIDDEN, body: { error: /cannot grant rights you do not hold: assignUsers/ } });
  t.match(await run(user, 'user.set', { key: user.keyText, policy: 'editor' }), { status: Code.FORBIDDEN }, 'editing policies is not assigning them');
  t.match(await run(user, 'user.get', { key: user.keyText }), { status: Code.OK, body: { user: { policy: 'editor' } } }, 'anyone may read their own policy');
  t.match(await run(user, 'user.get', { key: root.keyText }), { status: Code.FORBIDDEN });
  t.match(await run(root, 'user.ls'), { body: { users: [{ key: user.keyText, policy: 'editor' }] } });
  t.match(await run(root, 'policy.rm', { name: 'editor' }), { status: CONFLICT, body: { error: /assigned to 1 key/ } });
  t.match(await run(root, 'user.rm', { key: user.keyText }), { status: Code.OK, body: { removed: true, user: { policy: 'default', source: 'default', rights: [] } } }, 'falls back to default');
  t.match(await run(root, 'policy.rm', { name: 'editor' }), { status: Code.OK });
  t.match(await run(root, 'policy.get', { name: 'editor' }), { status: Code.NOT_FOUND });
  t.match(await run(root, 'policy.ls'), { body: { policies: [{ name: 'default', maxPayloadBytes: 4096 }] } });
  t.match(await run(root, 'policy.rm', { name: 'default' }), { status: Code.OK });
  t.match(await run(root, 'policy.get', { name: 'default' }), { status: Code.OK, body: { policy: { builtIn: true, maxPayloadBytes: 1048576 } } }, 'the built-in default again');
  t.match(await run(root, 'user.set', { key: user.keyText, policy: 'gone' }), { status: Code.NOT_FOUND });
});

t.test('usage and removal by user and by age', async (t) => {
  const { run, root, store } = await setup(t);
  const bob = generateIdentity().publicKey;
  const carol = generateIdentity().publicKey;
  const sender = generateIdentity().publicKey;
  const put = (to: Uint8Array, n: number) => enqueue(store, { sender, storageKey: null, ttlSeconds: 3600, body: Buffer.alloc(n), recipients: [{ key: to, wrappedKey: Buffer.alloc(1) }] });
  await put(bob, 9);
  await put(bob, 9);
  await put(bob, 9);
  await put(carol, 99);
  t.match(await run(root, 'usage', { top: 10 }), { status: Code.OK, body: {
    totals: { count: 4, bytes: 130, recipients: 2 },
    top: [{ key: encodeKey(carol), count: 1, bytes: 100 }, { key: encodeKey(bob), count: 3, bytes: 30 }],
  } });
  t.match(await run(root, 'messages.rm', { user: encodeKey(bob), olderThanSeconds: 5 }), { status: Code.BAD_REQUEST, body: { error: /exactly one/ } });
  t.match(await run(root, 'messages.rm', { user: encodeKey(bob) }), { status: Code.OK, body: { removed: 3 } });
  t.match(await run(root, 'messages.rm', { olderThanSeconds: 3600 }), { body: { removed: 0 } }, 'nothing that old');
  t.match(await run(root, 'messages.rm', { olderThanSeconds: 0 }), { body: { removed: 1 } });
  t.match(await run(root, 'usage'), { body: { totals: { count: 0 }, top: [] } });
});

t.test('the audit trail names the command, caller and targets, and nothing else', async (t) => {
  const { run, root, events, dir } = await setup(t);
  const user = caller();
  await run(root, 'policy.set', { name: 'p1', fields: { maxPayloadBytes: 123456 } });
  await run(root, 'block', { key: user.keyText });
  await run(user, 'kick', { key: root.keyText });
  t.match(await run(root, 'block', { key: root.keyText }), { status: Code.BAD_REQUEST }, 'root cannot be blocked');
  await events.flush();
  const lines = readFileSync(join(dir, 'events', 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.match(lines[0], { event: 'admin', command: 'policy.set', caller: root.keyText, policy: 'p1', status: 'OK' });
  t.notOk(JSON.stringify(lines[0]).includes('123456'), 'arguments other than keys and policy names are not recorded');
  t.match(lines[1], { command: 'block', keys: [user.keyText], status: 'OK' });
  t.match(lines[2], { command: 'kick', caller: user.keyText, status: 'FORBIDDEN' });
});
