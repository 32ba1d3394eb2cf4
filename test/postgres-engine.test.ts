// What only the PostgreSQL engine has (the contract it shares with the others is in
// mailbox-contract.test.ts): its schema migrations, relays that share one database, and the
// relay's copy of the shared policies following another relay's changes.
import t from 'tap';
import pg from 'pg';
import { Code } from '../src/protocol/constants.js';
import { PolicyCache } from '../src/server/policies.js';
import { enqueue } from '../src/store/mailbox.js';
import { openPostgresEngine } from '../src/store/postgres/engine.js';
import { SCHEMA_VERSION } from '../src/store/postgres/migrate.js';
import { openPostgresPolicyStore } from '../src/store/postgres/policy.js';
import { postgresSkipReason, startCluster, type Cluster } from './postgres-cluster.js';
import { connectClient, once, removeDir, startRelay, tempDir } from './helpers.js';
import { testKey as key, testPolicy as policy } from './policy-fixture.js';

const skip = postgresSkipReason() ?? false;

let cluster: Cluster | null = null;
async function database(): Promise<string> {
  if (cluster === null) {
    cluster = await startCluster();
    t.teardown(() => cluster!.destroy());
  }
  return cluster.createDatabase();
}

async function sql<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

t.test('relays starting together against a new database migrate it once, and each finds it current', { skip }, async (t) => {
  const url = await database();
  const engines = await Promise.all(Array.from({ length: 4 }, () => openPostgresEngine({ url })));
  t.teardown(() => Promise.all(engines.map((e) => e.close())));
  const versions = await sql<{ version: number }>(url, 'SELECT version FROM pulltab_schema ORDER BY version');
  t.same(versions.map((v) => v.version), Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1), 'each version applied exactly once');
  const [a, b] = engines;
  const recipient = key();
  const out = await enqueue(a!, { sender: key(), storageKey: null, ttlSeconds: 60, body: Buffer.from('shared'), recipients: [{ key: recipient, wrappedKey: Buffer.alloc(0) }] });
  t.ok(out[0]!.ok, 'stored through one');
  const got = await b!.read(recipient, 0, 10);
  t.same(got.map((e) => Buffer.from(e.body).toString()), ['shared'], 'read through another');
  await b!.ack(recipient, got.map((e) => e.seq));
  t.same(await a!.read(recipient, 0, 10), [], 'acknowledged through the other: gone for both');
  t.same(await a!.usage(recipient), { count: 0, bytes: 0 });
});

t.test('a database whose schema is newer than this relay knows is refused, with the reason', { skip }, async (t) => {
  const url = await database();
  const first = await openPostgresEngine({ url });
  await first.close();
  await sql(url, `INSERT INTO pulltab_schema (version) VALUES (${SCHEMA_VERSION + 1})`);
  await t.rejects(openPostgresEngine({ url }), /newer than this relay's .*upgrade the relay/);
});

t.test('a database that cannot be reached is refused at open, without the password in the reason', { skip }, async (t) => {
  const url = (await database()).replace(/:(\d+)\//, ':1/').replace('postgres@', 'postgres:hunter2@');
  const err = await openPostgresEngine({ url }).then(() => null, (e: Error) => e);
  t.ok(err, 'refused');
  t.notMatch(String(err?.message), /hunter2/);
});

t.test('a relay\'s policy copy follows what another relay changes in the shared store', { skip }, async (t) => {
  const url = await database();
  const [mine, theirs] = [await openPostgresPolicyStore({ url }), await openPostgresPolicyStore({ url })];
  const cache = new PolicyCache(mine);
  t.teardown(() => Promise.all([cache.close(), theirs.close()]));
  await cache.load();
  t.ok(cache.shared, 'a shared store: the relay polls it');
  t.equal(await cache.refresh(), false, 'nothing changed: no reload');
  const user = key();
  await theirs.setPolicy(policy('small', { maxPayloadBytes: 64 }));
  await theirs.assign(user, 'small');
  await theirs.block(key());
  t.equal(cache.assignment(user), undefined, 'not seen before the poll');
  t.equal(await cache.refresh(), true, 'the poll sees the change');
  t.equal(cache.assignment(user), 'small');
  t.equal(cache.blocked().length, 1);
  t.equal(await cache.refresh(), false, 'and reloads only once');
});

t.test('a relay on the shared store applies a block that another relay made, within policyPollMs', { skip }, async (t) => {
  const url = await database();
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relay = await startRelay({ store: url, policyPollMs: 200 }, dir);
  t.teardown(() => relay.close({ graceMs: 0 }));
  const bob = await connectClient(relay, { reconnect: false });
  t.teardown(() => bob.close());
  const gone = once<{ code: number }>(bob, 'disconnected', 10_000);
  // another relay's write, straight to the database they share
  const other = await openPostgresPolicyStore({ url });
  t.teardown(() => other.close());
  t.equal(await other.block(bob.identity.publicKey), true);
  t.match(await gone, { code: Code.NOT_AUTHORIZED }, 'disconnected by the poll');
});
