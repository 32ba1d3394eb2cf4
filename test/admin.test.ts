// Policies and administration over the relay protocol, end to end on loopback: the original
// relay's policy and admin cases (spec §12.1), and changes that reach connected sessions at once.
import t from 'tap';
import { ConnectError, RelayClient } from '../src/client/client.js';
import { encodeKey, generateIdentity, type Identity } from '../src/crypto/keys.js';
import { Code } from '../src/protocol/constants.js';
import type { Relay } from '../src/server/relay.js';
import { connectClient, nextMessages, once, removeDir, sleep, startRelay, tempDir } from './helpers.js';

const SEAL_OVERHEAD = 154 + 32; // one recipient

async function withRoot(t: { teardown(fn: () => unknown): void }, overrides = {}) {
  const dir = tempDir();
  const rootId = generateIdentity();
  const relay = await startRelay({ rootKey: encodeKey(rootId.publicKey), ...overrides }, dir);
  const root = await connectClient(relay, { identity: rootId, reconnect: false });
  t.teardown(async () => {
    await root.close();
    await relay.close();
    removeDir(dir);
  });
  const admin = async (client: RelayClient, command: string, args: Record<string, unknown> = {}) => client.admin(command, args);
  return { relay, root, rootId, admin, dir };
}

async function client(relay: Relay, identity: Identity = generateIdentity()): Promise<RelayClient> {
  return connectClient(relay, { identity, reconnect: false });
}

t.test('a policy forbidding connection refuses the handshake with NOT_AUTHORIZED; root still connects', async (t) => {
  const { relay, root, admin, rootId } = await withRoot(t);
  const user = generateIdentity();
  t.match(await admin(root, 'policy.set', { name: 'nobody', fields: { canConnect: false } }), { ok: true });
  t.match(await admin(root, 'user.set', { key: encodeKey(user.publicKey), policy: 'nobody' }), { ok: true });
  const err = await client(relay, user).then(() => null, (e: ConnectError) => e);
  t.ok(err instanceof ConnectError);
  t.equal(err?.code, Code.NOT_AUTHORIZED);
  t.equal(relay.stats.handshakesRefused.notAuthorized, 1);

  t.match(await admin(root, 'policy.set', { name: 'default', fields: { canConnect: false } }), { ok: true });
  const stranger = await client(relay).then(() => null, (e: ConnectError) => e);
  t.equal(stranger?.code, Code.NOT_AUTHORIZED, 'default forbids everyone unassigned');
  const again = await client(relay, rootId);
  t.ok(again.connected, 'root is never locked out');
  await again.close();
});

t.test('payload and mailbox limits from policies apply; a non-admin gets FORBIDDEN', async (t) => {
  const { relay, root, admin } = await withRoot(t);
  const sender = await client(relay);
  const recipient = generateIdentity();
  t.teardown(() => sender.close());
  t.match(await admin(sender, 'policy.set', { name: 'x' }), { ok: false, status: Code.FORBIDDEN, codeName: 'FORBIDDEN', body: { error: 'policy.set needs the editPolicies right' } }, 'explicit refusal, not silence');
  t.match(await admin(sender, 'stats'), { status: Code.FORBIDDEN });

  await admin(root, 'policy.set', { name: 'small', fields: { maxPayloadBytes: 1024 } });
  await admin(root, 'user.set', { key: sender.publicKey, policy: 'small' });
  await admin(root, 'policy.set', { name: 'tiny-mailbox', fields: { mailboxMaxCount: 2, mailboxMaxBytes: 100_000 } });
  await admin(root, 'user.set', { key: encodeKey(recipient.publicKey), policy: 'tiny-mailbox' });
  const ok = await sender.send([recipient.publicKey], 'x'.repeat(1024 - SEAL_OVERHEAD), { store: true });
  t.equal(ok.codeName, 'OK', 'exactly the maximum payload is stored');
  const big = await sender.send([recipient.publicKey], 'x'.repeat(1025 - SEAL_OVERHEAD), { store: true });
  t.equal(big.codeName, 'PAYLOAD_TOO_LARGE', 'one byte more is refused');
  t.equal((await sender.send([recipient.publicKey], 'two', { store: true })).codeName, 'OK');
  const third = await sender.send([recipient.publicKey], 'three', { store: true });
  t.same(third.outcomes.map((o) => o.codeName), ['QUOTA_COUNT'], 'the recipient\'s policy bounds its mailbox');
});

t.test('root assigns an admin policy, the user edits policies; removing the assignment falls back to default', async (t) => {
  const { relay, root, admin } = await withRoot(t);
  const user = await client(relay);
  t.teardown(() => user.close());
  await admin(root, 'policy.set', { name: 'admin', fields: { admin: { editPolicies: true, assignUsers: true, readUsage: true } } });
  t.match(await admin(root, 'policy.ls'), { body: { policies: [{ name: 'default', builtIn: true }, { name: 'admin', assigned: 0 }] } });
  t.match(await admin(root, 'user.set', { key: user.publicKey, policy: 'admin' }), { ok: true, body: { user: { policy: 'admin' } } });
  t.match(await admin(root, 'user.get', { key: user.publicKey }), { body: { user: { policy: 'admin', source: 'assigned', connected: true } } });
  t.match(await admin(root, 'user.ls'), { body: { users: [{ key: user.publicKey, policy: 'admin' }] } });
  t.match(await admin(user, 'policy.set', { name: 'default', fields: { maxPayloadBytes: 2048 } }), { ok: true, body: { created: true } });
  t.match(await admin(user, 'policy.get', { name: 'default' }), { body: { policy: { name: 'default', maxPayloadBytes: 2048 } } });
  t.match(await admin(user, 'policy.set', { name: 'god', fields: { admin: { manageMessages: true } } }), { status: Code.FORBIDDEN }, 'cannot grant what it lacks');
  t.match(await admin(root, 'policy.rm', { name: 'admin' }), { status: Code.CONFLICT, codeName: 'CONFLICT' }, 'an assigned policy stays');
  t.match(await admin(root, 'user.rm', { key: user.publicKey }), { ok: true, body: { removed: true, user: { policy: 'default', source: 'default' } } });
  t.match(await admin(user, 'policy.set', { name: 'default', fields: { maxPayloadBytes: 4096 } }), { status: Code.FORBIDDEN }, 'its rights went with the policy');
  t.match(await admin(root, 'user.get', { key: user.publicKey }), { body: { user: { policy: 'default', limits: { maxPayloadBytes: 2048 } } } });
  t.match(await admin(root, 'policy.rm', { name: 'admin' }), { ok: true });
});

t.test('usage counts stored messages; removal by user and by age', async (t) => {
  const { relay, root, admin } = await withRoot(t);
  const sender = await client(relay);
  t.teardown(() => sender.close());
  const bob = generateIdentity();
  const carol = generateIdentity();
  for (let i = 0; i < 3; i++) t.equal((await sender.send([bob.publicKey], `hello ${i}`, { store: true })).codeName, 'OK');
  await sender.send([carol.publicKey], 'for carol', { store: true });
  const usage = await admin(root, 'usage', { top: 5 });
  t.match(usage.body, { totals: { count: 4, recipients: 2 } });
  t.match((usage.body as { top: unknown[] }).top, [{ key: encodeKey(bob.publicKey), count: 3 }, { key: encodeKey(carol.publicKey), count: 1 }]);
  t.match(await admin(root, 'messages.rm', { user: encodeKey(bob.publicKey) }), { body: { removed: 3 } });
  t.match(await admin(root, 'messages.rm', { olderThanSeconds: 3600 }), { body: { removed: 0 } }, 'carol\'s message is young');
  await sleep(50);
  t.match(await admin(root, 'messages.rm', { olderThanSeconds: 0.01 }), { body: { removed: 1 } });
  t.match(await admin(root, 'usage'), { body: { totals: { count: 0, bytes: 0, recipients: 0 } } });
});

t.test('live changes: a lowered limit applies to the next frame; a withdrawn right, a block and a kick disconnect', async (t) => {
  const { relay, root, admin } = await withRoot(t);
  const sender = await client(relay);
  const other = await client(relay);
  t.teardown(() => Promise.all([sender.close(), other.close()]));
  const got = nextMessages(other, 1);
  t.equal((await sender.send([other.identity.publicKey], 'x'.repeat(600))).codeName, 'OK');
  await got;
  await admin(root, 'policy.set', { name: 'default', fields: { maxPayloadBytes: 512 } });
  t.equal((await sender.send([other.identity.publicKey], 'x'.repeat(600))).codeName, 'PAYLOAD_TOO_LARGE', 'the connected session has the new limit');

  // Withdraw the right to connect: the session is closed with NOT_AUTHORIZED.
  const goneSender = once<{ code: number; willRetry: boolean }>(sender, 'disconnected');
  await admin(root, 'policy.set', { name: 'muted', fields: { canConnect: false } });
  t.match(await admin(root, 'user.set', { key: sender.publicKey, policy: 'muted' }), { body: { applied: { disconnected: 1 } } });
  t.match(await goneSender, { code: Code.NOT_AUTHORIZED, willRetry: false });

  // Block: disconnected at once and refused afterwards; unblock lets it back.
  const goneOther = once<{ code: number }>(other, 'disconnected');
  t.match(await admin(root, 'block', { key: other.publicKey }), { ok: true, body: { blocked: true, disconnected: 1 } });
  t.match(await goneOther, { code: Code.NOT_AUTHORIZED });
  const refused = await client(relay, other.identity).then(() => null, (e: ConnectError) => e);
  t.equal(refused?.code, Code.NOT_AUTHORIZED);
  t.match(await admin(root, 'blocked'), { body: { keys: [other.publicKey] } });
  t.match(await admin(root, 'unblock', { key: other.publicKey }), { body: { changed: true } });
  const back = await client(relay, other.identity);
  t.teardown(() => back.close());

  // Kick: CLOSE KICKED.
  const kicked = once<{ code: number }>(back, 'disconnected');
  t.match(await admin(root, 'kick', { key: back.publicKey }), { ok: true });
  t.match(await kicked, { code: Code.KICKED });
  await sleep(50);
  t.match(await admin(root, 'kick', { key: back.publicKey }), { status: Code.NOT_FOUND });
  t.match(await admin(root, 'connections'), { body: { count: 1, connections: [{ key: root.publicKey }] } }, 'only root is left');
  t.same(relay.stats.policyDisconnects, { kicked: 1, notAuthorized: 2 });
});

t.test('connections: the count for readUsage, the keys for manageConnections', async (t) => {
  const { relay, root, admin } = await withRoot(t);
  const reader = await client(relay);
  t.teardown(() => reader.close());
  await admin(root, 'policy.set', { name: 'reader', fields: { admin: { readUsage: true } } });
  await admin(root, 'user.set', { key: reader.publicKey, policy: 'reader' });
  const answer = await admin(reader, 'connections');
  t.same(answer.body, { count: 2 }, 'no keys without manageConnections');
  t.match(await admin(reader, 'kick', { key: root.publicKey }), { status: Code.FORBIDDEN });
  t.match(await admin(reader, 'stats'), { ok: true, body: { connections: { authenticated: 2 }, messages: { in: 0 } } });
});
