// What applies to a key (src/policy/): the effective policy, admission, sending limits capped by
// the configuration, mailbox quotas, admin rights, patches. Over the relay's own parts: an LMDB
// policy store behind the relay's cache.
import t from 'tap';
import { join } from 'node:path';
import { effectivePolicy, PolicyAuthority } from '../src/policy/authority.js';
import { allRights, noRights } from '../src/policy/capabilities.js';
import { applyPatch } from '../src/policy/patch.js';
import { Code } from '../src/protocol/constants.js';
import { defaultConfig } from '../src/server/config.js';
import { admissionCode, PolicyCache } from '../src/server/policies.js';
import { openLmdbPolicyStore } from '../src/store/lmdb/policy.js';
import { removeDir, tempDir } from './helpers.js';
import { testKey as key, testPolicy as policy } from './policy-fixture.js';

async function policies(t: { teardown(fn: () => unknown): void }): Promise<PolicyCache> {
  const dir = tempDir();
  const cache = new PolicyCache(openLmdbPolicyStore({ path: join(dir, 'policies') }));
  await cache.load();
  t.teardown(async () => {
    await cache.close();
    removeDir(dir);
  });
  return cache;
}

t.test('an unknown user gets `default`: stored if there is one, else the built-in one', async (t) => {
  const store = await policies(t);
  const builtIn = policy('default', { maxPayloadBytes: 777 });
  const stranger = key();
  t.same(effectivePolicy(store, stranger, builtIn), { policy: builtIn, source: 'built-in' });
  await store.setPolicy(policy('default', { maxPayloadBytes: 555 }));
  t.same(effectivePolicy(store, stranger, builtIn), { policy: policy('default', { maxPayloadBytes: 555 }), source: 'default' });
  await store.setPolicy(policy('vip'));
  await store.assign(stranger, 'vip');
  t.equal(effectivePolicy(store, stranger, builtIn).source, 'assigned');
  await store.assign(stranger, 'default');
  t.equal(effectivePolicy(store, stranger, builtIn).source, 'assigned', 'assigned `default` by name');
  await store.unassign(stranger);
  t.equal(effectivePolicy(store, stranger, builtIn).policy.name, 'default', 'removing the assignment falls back to default');
  t.equal(effectivePolicy(store, stranger, builtIn).source, 'default');
  await store.removePolicy('default');
  t.equal(effectivePolicy(store, stranger, builtIn).source, 'built-in', 'removing default brings back the built-in one');
});

t.test('the authority: admission, limits capped by the configuration, quotas, rights', async (t) => {
  const store = await policies(t);
  const config = defaultConfig({ maxPayloadBytes: 4096, maxRecipients: 8, mailboxMaxCount: 100 });
  const root = key();
  const auth = new PolicyAuthority(store, config, root);
  const user = key();

  t.equal(admissionCode(auth, user), Code.OK, 'no policies at all: everyone may connect');
  t.same(auth.limitsFor(user), {
    maxPayloadBytes: 4096, maxRecipients: 8, maxTtlSeconds: config.maxTtlSeconds,
    rateBytesPerSecond: 0, rateBurstBytes: 0, rateMessagesPerSecond: 0, rateBurstMessages: 0,
  }, 'the configuration gives the defaults');
  t.same(auth.quotaFor(user), { maxCount: 100, maxBytes: config.mailboxMaxBytes });
  t.same(auth.rights(user), noRights());
  t.same(auth.rights(root), allRights(), 'root holds every right');

  await store.setPolicy(policy('default', { canConnect: false }));
  t.equal(admissionCode(auth, user), Code.NOT_AUTHORIZED, 'default forbids connecting');
  t.equal(admissionCode(auth, root), Code.OK, 'root may always connect');
  await store.setPolicy(policy('big', { maxPayloadBytes: 1 << 30, maxRecipients: 200, mailboxMaxCount: 1_000_000, rateMessagesPerSecond: 50 }));
  await store.assign(user, 'big');
  t.equal(admissionCode(auth, user), Code.OK);
  const limits = auth.limitsFor(user);
  t.equal(limits.maxPayloadBytes, 4096, 'a policy cannot raise the payload past the configuration (frames are sized by it)');
  t.equal(limits.maxRecipients, 8);
  t.equal(limits.rateMessagesPerSecond, 50, 'rate limits come from the policy');
  t.equal(auth.quotaFor(user).maxCount, 1_000_000, 'a policy may give a bigger mailbox');
  await store.block(user);
  t.equal(admissionCode(auth, user), Code.NOT_AUTHORIZED, 'a blocked key is refused whatever its policy');

  await store.setPolicy(policy('editor', { admin: { ...noRights(), editPolicies: true } }));
  const editor = key();
  await store.assign(editor, 'editor');
  t.ok(auth.can(editor, 'editPolicies'));
  t.notOk(auth.can(editor, 'assignUsers'));
  t.ok(auth.holdsAll(editor, { ...noRights(), editPolicies: true }));
  t.notOk(auth.holdsAll(editor, allRights()), 'cannot hand out rights it lacks');
  t.same(auth.lacking(editor, allRights()), ['assignUsers', 'readUsage', 'manageConnections', 'manageMessages'], 'and says which');
  t.ok(auth.holdsAll(root, allRights()));

  config.maxPayloadBytes = 2048; // a reload lowers the ceiling: read live
  t.equal(auth.limitsFor(editor).maxPayloadBytes, 1000);
  t.equal(auth.builtInDefault().maxPayloadBytes, 2048);
  t.same(applyPatch(policy('x'), 'y', { admin: { readUsage: true }, maxRecipients: 3 }).admin, { ...noRights(), readUsage: true });
});
