// Store-and-forward through a real relay: receipts after commit, kill -9, acknowledgements,
// ordering across the switch from mailbox to live, replacement by storage key. The relay is
// ./relay-under-test.ts's: one process, or 2 workers with PULLTAB_TEST_WORKERS=2.
import t from 'tap';
import { generateIdentity } from '../src/crypto/keys.js';
import type { ReceivedMessage, RelayClient } from '../src/client/client.js';
import type { LmdbEngine } from '../src/store/lmdb/engine.js';
import { connectClient, connectCollecting, killRelay, once, removeDir, sleep, spawnRelay, startRelay, tempDir, waitForCount } from './helpers.js';
import { relayUnderTest, relayUnderTestWithSender as relayWithSender, TEST_WORKERS } from './relay-under-test.js';

/** `serve`'s arguments for the relay under test. */
const WORKER_ARGS = TEST_WORKERS > 1 ? ['--workers', String(TEST_WORKERS)] : [];
/**
 * What a storable message to a connected recipient is answered: DELIVERED on one process (written
 * live, kept until acknowledged); STORED with workers, where only the store's owner knows what it
 * decided, and it reaches the recipient from its mailbox right after the commit.
 */
const LIVE_STORABLE = TEST_WORKERS > 1 ? 'STORED' : 'DELIVERED';

t.test('crash: every message with a STORED receipt survives kill -9 and is delivered once, in order', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  let relay = await spawnRelay(dir, ['--port', '0', ...WORKER_ARGS]);
  const port = relay.port;
  const bob = generateIdentity();
  const alice = await connectClient(relay.address, { reconnect: false, raw: true });
  alice.on('error', () => {});
  const stored: number[] = [];
  let sending = true;
  // Stream storable messages with receipts; kill the relay while they are in flight.
  const stream = (async () => {
    for (let i = 0; sending && i < 200_000; i++) {
      const body = Buffer.alloc(64);
      body.writeUInt32BE(i, 0);
      alice.send([bob.publicKey], body, { store: true }).then((r) => {
        if (r.outcomes[0]?.codeName === 'STORED') stored.push(i);
      }, () => {});
      if (i % 200 === 199) await sleep(1);
    }
  })();
  await sleep(700);
  await killRelay(relay, 'SIGKILL');
  sending = false;
  await stream;
  await alice.close();
  t.ok(stored.length > 100, `${stored.length} messages were acknowledged as stored before the kill`);

  relay = await spawnRelay(dir, ['--port', String(port), ...WORKER_ARGS]);
  t.teardown(() => killRelay(relay, 'SIGTERM'));
  const received: number[] = [];
  const { RelayClient } = await import('../src/client/client.js');
  const bobClient = new RelayClient({ relay: relay.address, identity: bob, raw: true });
  bobClient.on('message', (m: ReceivedMessage) => received.push(Buffer.from(m.body).readUInt32BE(0)));
  const empty = once(bobClient, 'queueEmpty', 20_000);
  await bobClient.connect();
  await empty;
  await bobClient.close();
  const receivedSet = new Set(received);
  t.equal(receivedSet.size, received.length, 'nothing delivered twice');
  const missing = stored.filter((i) => !receivedSet.has(i));
  t.same(missing.slice(0, 10), [], `every message with a STORED receipt is delivered (${missing.length} of ${stored.length} missing; ${received.length} received)`);
  t.ok(received.every((v, i) => i === 0 || v > received[i - 1]), 'in the order sent');
});

t.test('ack: a recipient that disconnects before acknowledging gets those messages again, never the acknowledged ones', async (t) => {
  const { relay, alice } = await relayWithSender(t);
  const bob = generateIdentity();
  for (let i = 0; i < 10; i++) {
    const r = await alice.send([bob.publicKey], `m${i}`, { store: true });
    t.equal(r.outcomes[0].codeName, 'STORED');
  }
  const { client: first, messages: firstMessages } = await connectCollecting(relay, { identity: bob, raw: true, autoAck: false });
  const firstBatch = await waitForCount(firstMessages, 10);
  t.same(firstBatch.map((m) => Buffer.from(m.body).toString()), Array.from({ length: 10 }, (_, i) => `m${i}`));
  t.ok(firstBatch.every((m) => m.fromMailbox));
  first.ack(firstBatch[3].deliveryId); // m0..m3 acknowledged
  await sleep(100);
  await first.close();
  await sleep(100);
  const { client: second, messages: secondMessages } = await connectCollecting(relay, { identity: bob, raw: true });
  t.teardown(() => second.close());
  const again = await waitForCount(secondMessages, 6);
  await sleep(100);
  t.equal(secondMessages.length, 6, 'and nothing else');
  t.same(again.map((m) => Buffer.from(m.body).toString()), ['m4', 'm5', 'm6', 'm7', 'm8', 'm9']);
  await sleep(200);
  t.equal(await relay.mailboxEntries(), 0, 'acknowledged by the second connection: the mailbox is empty');
});

t.test('a storable message written live to a connection that dies unacknowledged is delivered again', async (t) => {
  const { relay, alice } = await relayWithSender(t);
  const bob = generateIdentity();
  const { client: first, messages: firstMessages } = await connectCollecting(relay, { identity: bob, raw: true, autoAck: false });
  await sleep(100);
  const r = await alice.send([bob.publicKey], 'live but unacknowledged', { store: true });
  t.equal(r.outcomes[0].codeName, LIVE_STORABLE);
  await waitForCount(firstMessages, 1);
  await first.close();
  await sleep(200);
  const { client: second, messages: secondMessages } = await connectCollecting(relay, { identity: bob, raw: true });
  t.teardown(() => second.close());
  const [again] = await waitForCount(secondMessages, 1);
  t.equal(Buffer.from(again.body).toString(), 'live but unacknowledged');
  t.ok(again.fromMailbox);
});

t.test('order holds when live messages arrive while the backlog drains', async (t) => {
  const relay = await relayUnderTest(t, { inflightWindow: 16 });
  const bob = generateIdentity();
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => alice.close());
  const backlog = 500;
  await Promise.all(Array.from({ length: backlog }, (_, i) => alice.send([bob.publicKey], `${i}`, { store: true })));
  const { client: bobClient, messages } = await connectCollecting(relay, { identity: bob, raw: true });
  t.teardown(() => bobClient.close());
  const received = messages;
  // While the backlog drains (16 at a time), keep sending: storable and not.
  const live = [];
  for (let i = backlog; i < backlog + 200; i++) live.push(alice.send([bob.publicKey], `${i}`, { store: i % 2 === 0 }));
  const results = await Promise.all(live);
  t.ok(results.every((r) => r.ok), 'all accepted');
  const deadline = Date.now() + 10_000;
  while (received.length < backlog + 200 && Date.now() < deadline) await sleep(20);
  t.same(received.map((m) => Number(Buffer.from(m.body).toString())), Array.from({ length: backlog + 200 }, (_, i) => i), 'one sender\'s messages arrive in the order sent');
});

t.test('replacement by storage key: the recipient gets only the newest', async (t) => {
  const relay = await relayUnderTest(t);
  const bob = generateIdentity();
  const alice = await connectClient(relay);
  t.teardown(() => alice.close());
  await alice.send([bob.publicKey], 'status: 1', { store: true, storageKey: 'status' });
  await alice.send([bob.publicKey], 'other', { store: true });
  await alice.send([bob.publicKey], 'status: 2', { store: true, storageKey: 'status' });
  const { client: bobClient, messages } = await connectCollecting(relay, { identity: bob });
  t.teardown(() => bobClient.close());
  const got = await waitForCount(messages, 2);
  await sleep(100);
  t.equal(messages.length, 2);
  t.same(got.map((m) => Buffer.from(m.body).toString()), ['other', 'status: 2']);
});

t.test('quota and TTL refusals name their reason', async (t) => {
  const relay = await relayUnderTest(t, { mailboxMaxCount: 2, maxTtlSeconds: 60, defaultTtlSeconds: 60 });
  const bob = generateIdentity();
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => alice.close());
  t.equal((await alice.send([bob.publicKey], 'a', { store: true })).outcomes[0].codeName, 'STORED');
  t.equal((await alice.send([bob.publicKey], 'b', { store: true })).outcomes[0].codeName, 'STORED');
  const third = await alice.send([bob.publicKey], 'c', { store: true });
  t.equal(third.codeName, 'QUOTA_COUNT');
  const tooLong = await alice.send([bob.publicKey], 'd', { store: true, ttlSeconds: 61 });
  t.equal(tooLong.codeName, 'TTL_TOO_LONG');
});

t.test('messages put back by a replaced connection reach its successor', async (t) => {
  const { relay, alice } = await relayWithSender(t);
  const bob = generateIdentity();
  const { client: first, messages: firstMessages } = await connectCollecting(relay, { identity: bob, raw: true, autoAck: false });
  first.on('error', () => {});
  await sleep(100);
  for (let i = 0; i < 5; i++) await alice.send([bob.publicKey], `u${i}`, { store: true });
  await waitForCount(firstMessages, 5);
  // A second connection for the same key replaces the first, which never acknowledged.
  const { client: second, messages } = await connectCollecting(relay, { identity: bob, raw: true });
  t.teardown(() => Promise.all([first.close(), second.close()]));
  await waitForCount(messages, 5, 5000);
  t.same(messages.map((m) => Buffer.from(m.body).toString()), ['u0', 'u1', 'u2', 'u3', 'u4']);
});

t.test('a message put back after a lost connection never replaces a newer one with its storage key', async (t) => {
  const relay = await relayUnderTest(t, { inflightWindow: 2 });
  const bob = generateIdentity();
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => alice.close());
  const { client: first, messages: firstMessages } = await connectCollecting(relay, { identity: bob, raw: true, autoAck: false });
  await sleep(100);
  const outcome = async (body: string, storageKey?: string) => (await alice.send([bob.publicKey], body, { store: true, storageKey })).outcomes[0].codeName;
  t.equal(await outcome('M1 old', 'x'), LIVE_STORABLE);
  t.equal(await outcome('f1'), LIVE_STORABLE);
  t.equal(await outcome('f2'), 'STORED', 'the window of unacknowledged deliveries is full');
  t.equal(await outcome('M2 new', 'x'), 'STORED');
  await waitForCount(firstMessages, 2);
  await first.close();
  await sleep(200);
  const { client: second, messages } = await connectCollecting(relay, { identity: bob, raw: true });
  t.teardown(() => second.close());
  await sleep(500);
  const bodies = messages.map((m) => Buffer.from(m.body).toString());
  t.ok(bodies.includes('M2 new'), `the newer message arrives (${bodies.join(', ')})`);
  t.notOk(bodies.includes('M1 old'), 'the older one it superseded does not');
  t.ok(bodies.includes('f1') && bodies.includes('f2'));
});

t.test('close() delivers the final acknowledgement: nothing acknowledged comes again', async (t) => {
  const { relay, alice } = await relayWithSender(t);
  const bob = generateIdentity();
  await Promise.all(Array.from({ length: 400 }, (_, i) => alice.send([bob.publicKey], Buffer.alloc(2000, i % 256), { store: true })));
  const { client: first, messages: firstMessages } = await connectCollecting(relay, { identity: bob, raw: true, autoAck: false });
  await waitForCount(firstMessages, 50);
  first.ack(firstMessages[49].deliveryId);
  await first.close();
  await sleep(300);
  const { client: second, messages } = await connectCollecting(relay, { identity: bob, raw: true });
  t.teardown(() => second.close());
  await waitForCount(messages, 350, 10_000);
  await sleep(200);
  t.equal(messages.length, 350, 'exactly the 350 unacknowledged messages come again');
});

// Reaches into this process's LMDB engine: with workers the store is the primary's (its failures
// are src/store/remote/'s tests).
if (TEST_WORKERS === 1) t.test('a failed commit answers STORE_ERROR for the messages it carried, and the relay goes on storing', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => alice.close());
  const bob = generateIdentity();
  const carol = generateIdentity();
  // The store's commit outcome, as the router sees it, says "failed" for one batch.
  const store = (relay.store as LmdbEngine).lmdb as { durable: () => Promise<boolean> };
  const real = store.durable;
  store.durable = () => Promise.resolve(false);
  const one = alice.send([bob.publicKey], 'one', { store: true });
  const two = alice.send([bob.publicKey, carol.publicKey], 'two', { store: true });
  const [r1, r2] = await Promise.all([one, two]);
  store.durable = real;
  t.same(r1.outcomes.map((o) => o.codeName), ['STORE_ERROR'], 'one recipient');
  t.same(r2.outcomes.map((o) => o.codeName), ['STORE_ERROR', 'STORE_ERROR'], 'two recipients');
  const r3 = await alice.send([bob.publicKey], 'three', { store: true });
  t.same(r3.outcomes.map((o) => o.codeName), ['STORED'], 'the next commit stores again');
});

t.test('RESULTs of stored messages come in SEND order, one- and two-recipient messages mixed', async (t) => {
  const { alice } = await relayWithSender(t);
  const bob = generateIdentity();
  const carol = generateIdentity();
  const answered: number[] = [];
  const sends: Array<Promise<unknown>> = [];
  for (let i = 0; i < 300; i++) {
    const to = i % 3 === 1 ? [bob.publicKey, carol.publicKey] : [bob.publicKey];
    sends.push(alice.send(to, `m${i}`, { store: true }).then((r) => {
      if (r.outcomes.every((o) => o.codeName === 'STORED')) answered.push(i);
    }));
  }
  await Promise.all(sends);
  t.equal(answered.length, 300, 'every message stored');
  t.same(answered, Array.from({ length: 300 }, (_, i) => i), 'answered in the order sent');
});
