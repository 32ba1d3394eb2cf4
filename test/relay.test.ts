// The original relay's acceptance cases (spec §12.1), over real sockets on loopback. The relay is
// ./relay-under-test.ts's: one process, 2 workers with PULLTAB_TEST_WORKERS=2, or 2 instances of a
// cluster with PULLTAB_TEST_CLUSTER=2.
import t from 'tap';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { NotConnectedError, RelayClient } from '../src/client/client.js';
import { generateIdentity, writeIdentityFile } from '../src/crypto/keys.js';
import { formatRelayAddress } from '../src/protocol/address.js';
import { Code } from '../src/protocol/constants.js';
import { connectClient, nextMessages, once, removeDir, sleep, tempDir } from './helpers.js';
import { freePort } from './free-port.js';
import { startRelayUnderTest as startRelay, TEST_PROCESSES, type RelayUnderTest } from './relay-under-test.js';

/** Waits (bounded) until the relay counts n authenticated connections. */
async function sessionsBecome(relay: RelayUnderTest, n: number): Promise<number> {
  const deadline = Date.now() + 5000;
  let count = await relay.sessionCount();
  while (count !== n && Date.now() < deadline) {
    await sleep(20);
    count = await relay.sessionCount();
  }
  return count;
}

t.test('authentication: a client proves its key and the relay registers it', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const client = await connectClient(relay);
  t.teardown(() => client.close());
  t.ok(client.connected);
  t.equal(await sessionsBecome(relay, 1), 1, 'registered');
  await client.close();
  t.equal(await sessionsBecome(relay, 0), 0, 'closing removes the session');
});

t.test('send and reply: the recipient sees the sender\'s key', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const a = await connectClient(relay);
  const b = await connectClient(relay);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const gotB = nextMessages(b, 1);
  const result = await a.send([b.identity.publicKey], 'hello');
  t.ok(result.ok);
  t.same(result.outcomes.map((o) => o.codeName), ['DELIVERED']);
  const [m] = await gotB;
  t.equal(Buffer.from(m.body).toString(), 'hello');
  t.equal(m.fromText, a.publicKey);
  const gotA = nextMessages(a, 1);
  await b.send([m.from], 'hello client1');
  const [reply] = await gotA;
  t.equal(Buffer.from(reply.body).toString(), 'hello client1');
  t.equal(reply.fromText, b.publicKey);
});

t.test('a client started before the relay connects once it is up', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relayIdentity = generateIdentity();
  writeIdentityFile(join(dir, 'relay-identity.json'), relayIdentity);
  const port = await freePort();
  const address = formatRelayAddress({ relayKey: relayIdentity.publicKey, host: '127.0.0.1', port });
  const client = new RelayClient({ relay: address, identity: generateIdentity(), backoffBaseMs: 50, backoffCapMs: 200 });
  t.teardown(() => client.close());
  const connected = client.connect();
  await sleep(300);
  t.notOk(client.connected);
  const relay = await startRelay({ port }, dir);
  t.teardown(() => relay.close());
  await connected;
  t.ok(client.connected);
  const other = await connectClient(relay);
  t.teardown(() => other.close());
  const got = nextMessages(other, 1);
  await client.send([other.identity.publicKey], 'after the relay came up');
  t.equal(Buffer.from((await got)[0].body).toString(), 'after the relay came up');
});

t.test('relay restart: sends fail while it is down, clients reconnect, messaging resumes', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  let relay = await startRelay({}, dir);
  const port = relay.port;
  const a = await connectClient(relay, { backoffBaseMs: 50, backoffCapMs: 200 });
  const b = await connectClient(relay, { backoffBaseMs: 50, backoffCapMs: 200 });
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const down = Promise.all([once(a, 'disconnected'), once(b, 'disconnected')]);
  await relay.close();
  await down;
  await t.rejects(a.send([b.identity.publicKey], 'while down'), NotConnectedError);
  // The relay under test may be processes (workers, instances of a cluster) that take seconds to start.
  const up = Promise.all([once(a, 'connected', 30_000), once(b, 'connected', 30_000)]);
  relay = await startRelay({ port }, dir);
  t.teardown(() => relay.close());
  await up;
  const got = nextMessages(b, 1);
  const result = await a.send([b.identity.publicKey], 'after restart');
  t.ok(result.ok);
  t.equal(Buffer.from((await got)[0].body).toString(), 'after restart');
});

t.test('maximum connections: the next client is told RELAY_FULL', async (t) => {
  // With workers or instances each admits its share of maxConnections (here one each).
  const relay = await startRelay({ maxConnections: TEST_PROCESSES });
  t.teardown(() => relay.close());
  const first: RelayClient[] = [];
  for (let i = 0; i < TEST_PROCESSES; i++) first.push(await connectClient(relay));
  t.teardown(() => Promise.all(first.map((c) => c.close())));
  const next = new RelayClient({ relay: relay.address, identity: generateIdentity(), reconnect: false });
  await t.rejects(next.connect(), /RELAY_FULL/);
  t.equal(await relay.refusedFull(), 1);
  t.ok(first.every((c) => c.connected), 'the clients before it are unaffected');
});

t.test('maximum payload size: an oversize body is refused and the connection stays open', async (t) => {
  const relay = await startRelay({ maxPayloadBytes: 1024 });
  t.teardown(() => relay.close());
  const a = await connectClient(relay, { raw: true });
  const b = await connectClient(relay, { raw: true });
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const refused = await a.send([b.identity.publicKey], Buffer.alloc(2048, 1));
  t.equal(refused.codeName, 'PAYLOAD_TOO_LARGE');
  t.notOk(refused.ok);
  const exact = await a.send([b.identity.publicKey], Buffer.alloc(1024, 2));
  t.ok(exact.ok, `a body of exactly the maximum is accepted (${exact.codeName}: ${exact.outcomes.map((o) => o.codeName).join(', ')})`);
  t.ok(a.connected);
});

t.test('one message to several recipients: each gets it, each sees only its own wrapped key', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const sender = await connectClient(relay);
  const rs = await Promise.all([0, 1, 2].map(() => connectClient(relay)));
  t.teardown(() => Promise.all([sender, ...rs].map((c) => c.close())));
  const got = Promise.all(rs.map((r) => nextMessages(r, 1)));
  const result = await sender.send(rs.map((r) => r.identity.publicKey), 'to all three');
  t.same(result.outcomes.map((o) => o.codeName), ['DELIVERED', 'DELIVERED', 'DELIVERED']);
  for (const [m] of await got) {
    t.equal(Buffer.from(m.body).toString(), 'to all three');
    t.equal(m.fromText, sender.publicKey);
    t.equal(m.recipients?.length, 3, 'the sealed recipient list is inside the ciphertext');
  }
});

t.test('10 clients sending 101 random messages concurrently: all delivered', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const clients = await Promise.all(Array.from({ length: 10 }, () => connectClient(relay)));
  t.teardown(() => Promise.all(clients.map((c) => c.close())));
  const expected = new Map<string, number>();
  const received = new Map<string, number>();
  for (const c of clients) c.on('message', (m) => received.set(Buffer.from(m.body).toString(), (received.get(Buffer.from(m.body).toString()) ?? 0) + 1));
  const sends = [];
  for (let i = 0; i < 101; i++) {
    const from = clients[Math.floor(Math.random() * 10)];
    const to = clients[Math.floor(Math.random() * 10)];
    const body = randomUUID();
    expected.set(body, 1);
    sends.push(from.send([to.identity.publicKey], body));
  }
  const results = await Promise.all(sends);
  t.ok(results.every((r) => r.ok), 'every send accepted');
  const deadline = Date.now() + 10_000;
  while (received.size < 101 && Date.now() < deadline) await sleep(20);
  t.same(received, expected, 'each message delivered exactly once');
});

t.test('opening one client twice fails', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const client = await connectClient(relay);
  t.teardown(() => client.close());
  await t.rejects(client.connect(), /already open/);
});

t.test('newest connection wins: the older one is told REPLACED and messages go to the newer', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const identity = generateIdentity();
  const old = await connectClient(relay, { identity });
  const replaced = once<{ code: number; willRetry: boolean }>(old, 'disconnected');
  const newer = await connectClient(relay, { identity });
  const sender = await connectClient(relay);
  t.teardown(() => Promise.all([old.close(), newer.close(), sender.close()]));
  const info = await replaced;
  t.equal(info.code, Code.REPLACED);
  t.notOk(info.willRetry, 'a replaced client does not fight back');
  const got = nextMessages(newer, 1);
  await sender.send([identity.publicKey], 'to the newest');
  t.equal(Buffer.from((await got)[0].body).toString(), 'to the newest');
  t.equal(await sessionsBecome(relay, 2), 2);
});

t.test('a message to oneself is delivered to one\'s own connection', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const me = await connectClient(relay);
  t.teardown(() => me.close());
  const got = nextMessages(me, 1);
  const result = await me.send([me.identity.publicKey], 'note to self');
  t.same(result.outcomes.map((o) => o.codeName), ['DELIVERED']);
  t.equal(Buffer.from((await got)[0].body).toString(), 'note to self');
});

t.test('a recipient offline without --store is refused with RECIPIENT_OFFLINE', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const a = await connectClient(relay);
  t.teardown(() => a.close());
  const result = await a.send([generateIdentity().publicKey], 'nobody home');
  t.equal(result.codeName, 'RECIPIENT_OFFLINE');
  const refused = once<[number]>(a, 'refused');
  await a.send([generateIdentity().publicKey], 'no receipt asked', { receipt: false });
  await refused;
  t.pass('a refusal is reported even without a receipt');
});

t.test('a wrong pinned key: the client refuses to go on', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const wrong = formatRelayAddress({ relayKey: generateIdentity().publicKey, host: '127.0.0.1', port: relay.port });
  const client = new RelayClient({ relay: wrong, identity: generateIdentity() });
  await t.rejects(client.connect(), /relay key does not match/);
  t.equal(await relay.sessionCount(), 0);
  t.notOk(client.connected);
});
