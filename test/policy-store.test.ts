// The policy store contract (src/store/policy-store.ts), run against every engine, and the relay's
// cache in front of it (src/server/policies.ts). What the policies mean: policy-rules.test.ts.
import t from 'tap';
import { join } from 'node:path';
import { allRights } from '../src/policy/capabilities.js';
import type { Policy } from '../src/policy/policy.js';
import { PolicyCache } from '../src/server/policies.js';
import { openLmdbPolicyStore } from '../src/store/lmdb/policy.js';

import type { PostgresPolicyStore } from '../src/store/postgres/policy.js';
import { PolicyStoreError, type PolicyStore } from '../src/store/policy-store.js';
import { PolicyTable } from '../src/store/policy-table.js';
import { removeDir, tempDir } from './helpers.js';
import { testKey as key, testPolicy as policy } from './policy-fixture.js';
import { engineSkip, freshStoreSetting, openTestPolicyStore, TEST_ENGINES } from './store-engines.js';


/** Every durable engine, each opened through the factory on one setting and directory that outlive a close (a reopen finds what was written). */
const ENGINES = TEST_ENGINES.filter((name) => name !== 'memory');

async function opener(engine: string, dir: string): Promise<() => Promise<PolicyStore>> {
  const setting = await freshStoreSetting(engine);
  return () => openTestPolicyStore({ store: setting, dataDir: dir });
}

/** What a store holds, read through its snapshot. */
async function contents(store: PolicyStore): Promise<PolicyTable> {
  const table = new PolicyTable();
  table.load(await store.snapshot());
  return table;
}

for (const engine of ENGINES) {
  t.test(`${engine}: CRUD survives a reopen; every field is stored explicitly`, { skip: engineSkip(engine) }, async (t) => {
    const dir = tempDir();
    t.teardown(() => removeDir(dir));
    const open = await opener(engine, dir);
    let store = await open();
    const alice = key();
    const bob = key();
    await store.setPolicy(policy('small', { maxPayloadBytes: 64 }));
    await store.setPolicy(policy('admin', { admin: allRights() }));
    await store.assign(alice, 'small');
    await store.block(bob);
    t.equal((await contents(store)).assignment(alice), 'small');
    t.equal((await contents(store)).assignedCount('small'), 1);
    await store.close();

    store = await open();
    t.teardown(() => store.close());
    const reopened = await contents(store);
    t.same(reopened.policies().map((p) => p.name), ['admin', 'small'], 'listed by name');
    t.same(reopened.policy('small'), policy('small', { maxPayloadBytes: 64 }), 'every field back as stored');
    t.equal(reopened.assignment(alice), 'small');
    t.ok(reopened.isBlocked(bob));
    t.notOk(reopened.isBlocked(alice));
    t.same(reopened.assignments().map((a) => [Buffer.from(a.user).toString('hex'), a.policy]), [[alice.toString('hex'), 'small']]);

    await t.rejects(store.assign(bob, 'nope'), { code: 'NOT_FOUND' }, 'only an existing policy can be assigned');
    await t.rejects(store.removePolicy('small'), { code: 'IN_USE' }, 'an assigned policy cannot be removed');
    await t.rejects(store.removePolicy('nope'), { code: 'NOT_FOUND' });
    await t.rejects(store.setPolicy({ ...policy('bad'), maxRecipients: 0 }), PolicyStoreError, 'validated');
    await t.rejects(store.setPolicy({ ...policy('bad name!') }), { code: 'INVALID' });
    await t.rejects(store.setPolicy({ name: 'partial', canConnect: true } as Policy), { code: 'INVALID' }, 'no field may be missing');

    t.equal(await store.unassign(alice), true);
    t.equal(await store.unassign(alice), false);
    await store.removePolicy('small');
    t.equal((await contents(store)).policy('small'), undefined);
    t.equal(await store.unblock(bob), true);
    t.equal(await store.unblock(bob), false);
    t.equal(await store.block(bob), true);
    t.equal(await store.block(bob), false, 'blocking twice changes nothing');
    t.same((await contents(store)).blocked().map((k) => Buffer.from(k).toString('hex')), [bob.toString('hex')]);
  });

  t.test(`${engine}: a closed store refuses changes`, { skip: engineSkip(engine) }, async (t) => {
    const dir = tempDir();
    t.teardown(() => removeDir(dir));
    const store = await (await opener(engine, dir))();
    await store.close();
    await t.rejects(store.setPolicy(policy('late')), { code: 'CLOSED' });
    await t.rejects(store.block(key()), { code: 'CLOSED' });
  });
}

t.test('postgres: two relays on one database see each other\'s changes (the version they poll moves)', { skip: engineSkip('postgres') }, async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const open = await opener('postgres', dir);
  const [one, two] = [await open(), await open()];
  t.teardown(() => Promise.all([one.close(), two.close()]));
  const version = (store: PolicyStore) => (store as PostgresPolicyStore).version();
  const before = await version(two);
  await one.setPolicy(policy('shared', { maxPayloadBytes: 128 }));
  t.ok((await version(two)) > before, 'a write moves the version every relay reads');
  t.same((await contents(two)).policy('shared'), policy('shared', { maxPayloadBytes: 128 }));
  const alice = key();
  await two.assign(alice, 'shared');
  await t.rejects(one.removePolicy('shared'), { code: 'IN_USE' }, 'the database refuses, whatever the other relay knew');
  const unchanged = await version(one);
  t.equal(await one.unblock(alice), false);
  t.equal(await version(one), unchanged, 'a write that changed nothing leaves the version');
});

/** An engine whose next write fails and is forgotten, as a commit that fails on a full disk. */
class FailingWrites implements PolicyStore {
  failNext = false;
  constructor(readonly inner: PolicyStore) {}
  snapshot() { return this.inner.snapshot(); }
  close() { return this.inner.close(); }
  setPolicy(p: Policy) { return this.#write(() => this.inner.setPolicy(p)); }
  removePolicy(name: string) { return this.#write(() => this.inner.removePolicy(name)); }
  assign(user: Uint8Array, name: string) { return this.#write(() => this.inner.assign(user, name)); }
  unassign(user: Uint8Array) { return this.#write(() => this.inner.unassign(user)); }
  block(user: Uint8Array) { return this.#write(() => this.inner.block(user)); }
  unblock(user: Uint8Array) { return this.#write(() => this.inner.unblock(user)); }
  #write<T>(write: () => Promise<T>): Promise<T> {
    if (!this.failNext) return write();
    this.failNext = false;
    return Promise.reject(new Error('commit failed'));
  }
}

t.test('the relay\'s cache: a change is seen at once and durable when it resolves; a refused one changes nothing', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const store = openLmdbPolicyStore({ path: join(dir, 'policies') });
  const cache = new PolicyCache(store);
  t.teardown(() => cache.close());
  await store.setPolicy(policy('before'));
  await cache.load();
  t.same(cache.policies().map((p) => p.name), ['before'], 'load() reads what the store holds');

  const alice = key();
  const writing = cache.setPolicy(policy('vip'));
  t.ok(cache.policy('vip'), 'seen at once, before the store has committed it');
  const assigning = cache.assign(alice, 'vip');
  t.equal(cache.assignment(alice), 'vip', 'a change may build on one not yet durable');
  await writing;
  await assigning;
  t.same((await contents(store)).assignment(alice), 'vip', 'the store has both');

  await t.rejects(cache.removePolicy('vip'), { code: 'IN_USE' });
  await t.rejects(cache.assign(alice, 'nope'), { code: 'NOT_FOUND' });
  await t.rejects(cache.setPolicy({ ...policy('bad'), maxRecipients: 0 }), { code: 'INVALID' });
  await t.rejects(cache.block(Buffer.alloc(5)), { code: 'INVALID' });
  t.same(cache.policies().map((p) => p.name), ['before', 'vip'], 'refusals change nothing');
  t.same(cache.policies(), (await contents(store)).policies(), 'the cache and the store agree');
  t.equal(await cache.unassign(alice), true);
  t.equal(await cache.unassign(alice), false, 'the store\'s answer');
});

t.test('the relay\'s cache: a failed write rejects and the cache is read again from the store', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const inner = openLmdbPolicyStore({ path: join(dir, 'policies') });
  const store = new FailingWrites(inner);
  const cache = new PolicyCache(store);
  t.teardown(() => cache.close());
  await cache.load();
  const bob = key();
  await cache.setPolicy(policy('kept'));
  store.failNext = true;
  const blocking = cache.block(bob);
  t.ok(cache.isBlocked(bob), 'applied at once');
  await t.rejects(blocking, /commit failed/);
  t.notOk(cache.isBlocked(bob), 'after the failure, the cache holds what the store holds');
  t.ok(cache.policy('kept'), 'and everything else');
  await cache.close();
  await t.rejects(cache.setPolicy(policy('late')), { code: 'CLOSED' }, 'a closed cache refuses changes');
  t.ok(cache.policy('kept'), 'and still answers reads');
});
