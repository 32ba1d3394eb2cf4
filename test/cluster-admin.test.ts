// The admin commands and /readyz of a cluster of hosts: an instance answers `connections`,
// `kick` and `stats` for every instance (it asks them over NATS), a `block` reaches a key on
// another instance through the shared policy store, and /readyz (of a single process, and of a
// relay of workers) says not ready while NATS is gone. Instances as processes on loopback over a
// real nats-server and PostgreSQL (./cluster-instances.ts).
import t from 'tap';
import { join } from 'node:path';
import { Code } from '../src/protocol/constants.js';
import { connectCollecting, httpGet, makeClient, metricsPortOf, once, removeDir, runCli, tempDir, until } from './helpers.js';
import { clusterServices, clusterSkip, FAST_CLUSTER, instances } from './cluster-instances.js';

const skip = clusterSkip;

t.test('admin commands on one instance answer for every instance', { skip }, async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const key = (name: string) => join(dir, `${name}.key`);
  const rootKey = (await runCli(['keygen', '--out', key('root')])).stdout.trim();
  const [one, two] = await instances(t, 2, { config: { ...FAST_CLUSTER, rootKey, policyPollMs: 100 } });
  const admin = (args: string[]) => runCli(['admin', '--relay', one.address, '--key', key('root'), '--json', ...args]);
  const bob = makeClient(two.address, { reconnect: false });
  await bob.connect();
  const { client: carol } = await connectCollecting(two.address);
  t.teardown(() => Promise.all([bob.close(), carol.close()]));

  const listed = await admin(['connections']);
  t.equal(listed.code, 0, listed.stderr);
  const connections = JSON.parse(listed.stdout).connections as Array<{ key: string; instance: string }>;
  const where = new Map(connections.map((c) => [c.key, c.instance]));
  t.equal(connections.length, 3, 'bob and carol on instance 2, the admin command on instance 1');
  t.equal(where.get(bob.publicKey), where.get(carol.publicKey), 'bob and carol on one instance');
  t.not(where.get(bob.publicKey), where.get(rootKey), 'the admin command on the other');
  t.match(where.get(rootKey), /^[0-9a-f]{32}$/, 'each named by its instance id');

  const stats = await admin(['stats']);
  t.equal(stats.code, 0, stats.stderr);
  t.match(JSON.parse(stats.stdout), { instances: 2, unanswered: 0, connections: { authenticated: 3 } }, 'stats sum both instances');

  const closed = once<{ code: number }>(bob, 'disconnected');
  const kicked = await admin(['kick', bob.publicKey]);
  t.equal(kicked.code, 0, kicked.stderr);
  t.equal((await closed).code, Code.KICKED, 'kicked on the instance that holds it');
  const again = await admin(['kick', bob.publicKey]);
  t.equal(again.code, 1);
  t.match(again.stderr, /NOT_FOUND/, 'a key connected nowhere is NOT_FOUND');

  const blockedClosed = once<{ code: number }>(carol, 'disconnected', 10_000);
  const blocked = await admin(['block', carol.publicKey]);
  t.equal(blocked.code, 0, blocked.stderr);
  t.equal((await blockedClosed).code, Code.NOT_AUTHORIZED, 'a block reaches the key on another instance (the shared policy store)');
});

t.test('a relay of 2 workers in a cluster: admin answers cover its workers and the other instance; /readyz follows NATS', { skip }, async (t) => {
  const { nats } = await clusterServices();
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const key = (name: string) => join(dir, `${name}.key`);
  const rootKey = (await runCli(['keygen', '--out', key('root')])).stdout.trim();
  const [single, host] = await instances(t, 2, { config: { ...FAST_CLUSTER, rootKey }, argsFor: (i) => (i === 2 ? ['--workers', '2'] : []) });
  const { client: alice } = await connectCollecting(single.address);
  const bobs = await Promise.all([0, 1].map(() => connectCollecting(host.address)));
  t.teardown(() => Promise.all([alice.close(), ...bobs.map((b) => b.client.close())]));
  for (const relay of [host, single]) {
    const listed = await runCli(['admin', '--relay', relay.address, '--key', key('root'), '--json', 'connections']);
    t.equal(listed.code, 0, listed.stderr);
    const connections = JSON.parse(listed.stdout).connections as Array<{ key: string; instance: string; worker?: number }>;
    t.equal(connections.length, 4, 'alice, both bobs and the admin command itself');
    const of = (k: string) => connections.find((c) => c.key === k)!;
    for (const b of bobs) {
      t.not(of(b.client.publicKey).instance, of(alice.publicKey).instance, 'alice on another instance than each bob');
      t.ok(of(b.client.publicKey).worker === 1 || of(b.client.publicKey).worker === 2, 'each bob on a worker');
    }
  }
  const ready = async (relay: typeof single) => (await httpGet(metricsPortOf(relay), '/readyz')).status;
  t.same([await ready(single), await ready(host)], [200, 200], 'both ready');
  await nats.kill();
  await until('both say not ready', async () => (await ready(single)) === 503 && (await ready(host)) === 503, 10_000);
  t.pass('NATS gone: not ready');
  await nats.start();
  await until('both ready again', async () => (await ready(single)) === 200 && (await ready(host)) === 200, 20_000);
  t.pass('NATS back: ready');
  for (const b of bobs) {
    const r = await alice.send([b.client.identity.publicKey], 'after NATS came back', { receipt: true });
    t.same(r.outcomes.map((o) => o.codeName), ['DELIVERED'], 'live across again');
  }
});
