// The policy store (LMDB) and the rules that turn it into what each key may do.
import t from 'tap';
import { join } from 'node:path';
import { generateIdentity } from '../src/crypto/keys.js';
import { Code } from '../src/protocol/constants.js';
import { defaultConfig } from '../src/server/config.js';
import { PolicyAuthority } from '../src/server/policies.js';
import { openLmdbPolicyStore } from '../src/store/lmdb/policy.js';
import { allRights, applyPatch, effectivePolicy, noRights, PolicyStoreError, type Policy } from '../src/store/policy.js';
import { removeDir, tempDir } from './helpers.js';

const key = () => Buffer.from(generateIdentity().publicKey);

function policy(name: string, over: Partial<Policy> = {}): Policy {
  return {
    name, canConnect: true, admin: noRights(), maxPayloadBytes: 1000, maxRecipients: 10, maxTtlSeconds: 3600,
    mailboxMaxCount: 5, mailboxMaxBytes: 5000, rateBytesPerSecond: 0, rateBurstBytes: 0, rateMessagesPerSecond: 0, rateBurstMessages: 0,
    ...over,
  };
}

t.test('CRUD survives a reopen; every field is stored explicitly', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const path = join(dir, 'policies');
  let store = openLmdbPolicyStore({ path });
  const alice = key();
  const bob = key();
  await store.setPolicy(policy('small', { maxPayloadBytes: 64 }));
  await store.setPolicy(policy('admin', { admin: allRights() }));
  await store.assign(alice, 'small');
  await store.block(bob);
  t.equal(store.assignment(alice), 'small');
  t.equal(store.assignedCount('small'), 1);
  await store.close();

  store = openLmdbPolicyStore({ path });
  t.teardown(() => store.close());
  t.same(store.policies().map((p) => p.name), ['admin', 'small'], 'listed by name');
  t.same(store.policy('small'), policy('small', { maxPayloadBytes: 64 }), 'every field back as stored');
  t.equal(store.assignment(alice), 'small');
  t.ok(store.isBlocked(bob));
  t.notOk(store.isBlocked(alice));
  t.same(store.assignments().map((a) => [Buffer.from(a.user).toString('hex'), a.policy]), [[alice.toString('hex'), 'small']]);

  await t.rejects(store.assign(bob, 'nope'), { code: 'NOT_FOUND' }, 'only an existing policy can be assigned');
  await t.rejects(store.removePolicy('small'), { code: 'IN_USE' }, 'an assigned policy cannot be removed');
  await t.rejects(store.removePolicy('nope'), { code: 'NOT_FOUND' });
  await t.rejects(store.setPolicy({ ...policy('bad'), maxRecipients: 0 }), PolicyStoreError, 'validated');
  await t.rejects(store.setPolicy({ ...policy('bad name!') }), { code: 'INVALID' });
  await t.rejects(store.setPolicy({ name: 'partial', canConnect: true } as Policy), { code: 'INVALID' }, 'no field may be missing');

  t.equal(await store.unassign(alice), true);
  t.equal(await store.unassign(alice), false);
  await store.removePolicy('small');
  t.equal(store.policy('small'), undefined);
  t.equal(await store.unblock(bob), true);
  t.equal(await store.unblock(bob), false);
  t.equal(await store.block(bob), true);
  t.equal(await store.block(bob), false, 'blocking twice changes nothing');
  t.same(store.blocked().map((k) => Buffer.from(k).toString('hex')), [bob.toString('hex')]);
});

t.test('an unknown user gets `default`: stored if there is one, else the built-in one', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const store = openLmdbPolicyStore({ path: join(dir, 'policies') });
  t.teardown(() => store.close());
  const builtIn = policy('default', { maxPayloadBytes: 777 });
  const stranger = key();
  t.same(effectivePolicy(store, stranger, builtIn), { policy: builtIn, source: 'built-in' });
  await store.setPolicy(policy('default', { maxPayloadBytes: 555 }));
  t.same(effectivePolicy(store, stranger, builtIn), { policy: policy('default', { maxPayloadBytes: 555 }), source: 'default' });
  await store.setPolicy(policy('vip'));
  await store.assign(stranger, 'vip');
  t.equal(effectivePolicy(store, stranger, builtIn).source, 'assigned');
  await store.unassign(stranger);
  t.equal(effectivePolicy(store, stranger, builtIn).policy.name, 'default', 'removing the assignment falls back to default');
  await store.removePolicy('default');
  t.equal(effectivePolicy(store, stranger, builtIn).source, 'built-in', 'removing default brings back the built-in one');
});

t.test('the authority: admission, limits capped by the configuration, quotas, rights', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const store = openLmdbPolicyStore({ path: join(dir, 'policies') });
  t.teardown(() => store.close());
  const config = defaultConfig({ maxPayloadBytes: 4096, maxRecipients: 8, mailboxMaxCount: 100 });
  const root = key();
  const auth = new PolicyAuthority(store, config, root);
  const user = key();

  t.equal(auth.admit(user), Code.OK, 'no policies at all: everyone may connect');
  t.same(auth.limitsFor(user), {
    maxPayloadBytes: 4096, maxRecipients: 8, maxTtlSeconds: config.maxTtlSeconds,
    rateBytesPerSecond: 0, rateBurstBytes: 0, rateMessagesPerSecond: 0, rateBurstMessages: 0,
  }, 'the configuration gives the defaults');
  t.same(auth.quotaFor(user), { maxCount: 100, maxBytes: config.mailboxMaxBytes });
  t.same(auth.rights(user), noRights());
  t.same(auth.rights(root), allRights(), 'root holds every right');

  await store.setPolicy(policy('default', { canConnect: false }));
  t.equal(auth.admit(user), Code.NOT_AUTHORIZED, 'default forbids connecting');
  t.equal(auth.admit(root), Code.OK, 'root may always connect');
  await store.setPolicy(policy('big', { maxPayloadBytes: 1 << 30, maxRecipients: 200, mailboxMaxCount: 1_000_000, rateMessagesPerSecond: 50 }));
  await store.assign(user, 'big');
  t.equal(auth.admit(user), Code.OK);
  const limits = auth.limitsFor(user);
  t.equal(limits.maxPayloadBytes, 4096, 'a policy cannot raise the payload past the configuration (frames are sized by it)');
  t.equal(limits.maxRecipients, 8);
  t.equal(limits.rateMessagesPerSecond, 50, 'rate limits come from the policy');
  t.equal(auth.quotaFor(user).maxCount, 1_000_000, 'a policy may give a bigger mailbox');
  await store.block(user);
  t.equal(auth.admit(user), Code.NOT_AUTHORIZED, 'a blocked key is refused whatever its policy');

  await store.setPolicy(policy('editor', { admin: { ...noRights(), editPolicies: true } }));
  const editor = key();
  await store.assign(editor, 'editor');
  t.ok(auth.can(editor, 'editPolicies'));
  t.notOk(auth.can(editor, 'assignUsers'));
  t.ok(auth.holdsAll(editor, { ...noRights(), editPolicies: true }));
  t.notOk(auth.holdsAll(editor, allRights()), 'cannot hand out rights it lacks');
  t.ok(auth.holdsAll(root, allRights()));

  config.maxPayloadBytes = 2048; // a reload lowers the ceiling: read live
  t.equal(auth.limitsFor(editor).maxPayloadBytes, 1000);
  t.equal(auth.builtInDefault().maxPayloadBytes, 2048);
  t.same(applyPatch(policy('x'), 'y', { admin: { readUsage: true }, maxRecipients: 3 }).admin, { ...noRights(), readUsage: true });
});
