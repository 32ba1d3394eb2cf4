// The client library acknowledges a message only once the application has it: messages that
// arrive before a consumer is attached are held (bounded, with TCP pushing back on the relay)
// and handed over in order when one attaches; close() and `break` acknowledge exactly what was
// handed over, and nothing after it.
import t from 'tap';
import { encodeKey, generateIdentity, type Identity } from '../src/crypto/keys.js';
import type { ReceivedMessage, RelayClient } from '../src/client/client.js';
import type { Relay } from '../src/server/relay.js';
import { connectClient, makeClient, once, relayWithSender, sleep, startRelay, waitForCount } from './helpers.js';

async function store(alice: RelayClient, to: Identity, bodies: string[]): Promise<void> {
  for (const body of bodies) {
    const r = await alice.send([to.publicKey], body, { store: true });
    if (r.outcomes[0]?.codeName !== 'STORED') throw new Error(`not stored: ${r.outcomes[0]?.codeName}`);
  }
}

const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const text = (messages: ReceivedMessage[]) => messages.map((m) => Buffer.from(m.body).toString());

/** What a fresh connection receives until its mailbox is empty (a listener attached first). */
async function whatComesNext(relay: Relay, identity: Identity): Promise<string[]> {
  const client = makeClient(relay, { identity, raw: true });
  const got: ReceivedMessage[] = [];
  client.on('message', (m) => got.push(m));
  try {
    const empty = once(client, 'queueEmpty');
    await client.connect();
    await empty;
    await sleep(100);
  } finally {
    await client.close();
  }
  return text(got);
}

for (const delayMs of [0, 200]) {
  t.test(`a 'message' listener attached ${delayMs ? `${delayMs} ms` : 'in the same tick'} after connect() resolves gets every stored message`, async (t) => {
    const { relay, alice } = await relayWithSender(t);
    const bob = generateIdentity();
    await store(alice, bob, names('m', 3));
    const client = makeClient(relay, { identity: bob, raw: true });
    t.teardown(() => client.close());
    await client.connect();
    if (delayMs) await sleep(delayMs);
    const got: ReceivedMessage[] = [];
    client.on('message', (m) => got.push(m));
    await waitForCount(got, 3);
    t.same(text(got), ['m0', 'm1', 'm2'], 'all three, in order');
    await sleep(100);
    await client.close();
    t.same(await whatComesNext(relay, bob), [], 'handed over and acknowledged: nothing comes again');
    t.equal((await relay.store.usage(bob.publicKey)).count, 0, 'the mailbox is empty');
  });

  t.test(`messages() called ${delayMs ? `${delayMs} ms` : 'in the same tick'} after connect() resolves yields every stored message`, async (t) => {
    const { relay, alice } = await relayWithSender(t);
    const bob = generateIdentity();
    await store(alice, bob, names('m', 3));
    const client = makeClient(relay, { identity: bob, raw: true });
    t.teardown(() => client.close());
    await client.connect();
    if (delayMs) await sleep(delayMs);
    const got: ReceivedMessage[] = [];
    const guard = setTimeout(() => client.close(), 5000); // ends the loop if the messages never come
    for await (const m of client.messages()) {
      got.push(m);
      if (got.length === 3) break;
    }
    clearTimeout(guard);
    t.same(text(got), ['m0', 'm1', 'm2']);
    await sleep(100);
    await client.close();
    t.same(await whatComesNext(relay, bob), [], 'nothing comes again');
  });
}

t.test('a for-await loop that breaks acknowledges the message it took and nothing after it', async (t) => {
  const { relay, alice } = await relayWithSender(t);
  const bob = generateIdentity();
  await store(alice, bob, names('m', 5));
  const client = makeClient(relay, { identity: bob, raw: true });
  t.teardown(() => client.close());
  await client.connect();
  let first = '';
  const guard = setTimeout(() => client.close(), 5000); // ends the loop if the message never comes
  for await (const m of client.messages()) {
    first = Buffer.from(m.body).toString();
    break;
  }
  clearTimeout(guard);
  t.equal(first, 'm0');
  // These arrive live while nobody consumes: they must be held, not acknowledged.
  for (const body of ['live0', 'live1']) {
    t.equal((await alice.send([bob.publicKey], body, { store: true })).outcomes[0].codeName, 'DELIVERED');
  }
  await sleep(200);
  t.equal(client.heldCount, 6, 'm1..m4 and both live messages are held');
  await client.close();
  await sleep(100);
  t.same((await whatComesNext(relay, bob)).sort(), ['live0', 'live1', 'm1', 'm2', 'm3', 'm4'], 'exactly the ones not taken come again');
});

t.test('with no consumer the client holds at most holdLimit messages, then hands them all over in order', async (t) => {
  const { relay, alice } = await relayWithSender(t);
  const bob = generateIdentity();
  const total = 300;
  await Promise.all(names('m', total).map((body) => alice.send([bob.publicKey], body, { store: true })));
  const client = makeClient(relay, { identity: bob, raw: true, holdLimit: 40 });
  t.teardown(() => client.close());
  await client.connect();
  let highest = 0;
  for (let i = 0; i < 30; i++) {
    await sleep(10);
    highest = Math.max(highest, client.heldCount);
  }
  t.equal(highest, 40, 'it stopped reading at the bound');
  t.equal((await relay.store.usage(bob.publicKey)).count, total, 'nothing was acknowledged meanwhile');
  const got: ReceivedMessage[] = [];
  client.on('message', (m) => {
    got.push(m);
    highest = Math.max(highest, client.heldCount);
  });
  await waitForCount(got, total);
  t.equal(highest, 40, 'never more than the bound held while draining');
  t.same(text(got), names('m', total), 'every message, in order');
  t.equal(client.heldCount, 0);
  await sleep(200);
  t.equal((await relay.store.usage(bob.publicKey)).count, 0, 'all acknowledged once handed over');
  await client.close();
  t.same(await whatComesNext(relay, bob), []);
});

t.test('held messages from the mailbox are dropped when the connection is lost (they come again), live ones kept', async (t) => {
  const root = generateIdentity();
  const relay = await startRelay({ rootKey: encodeKey(root.publicKey) });
  t.teardown(() => relay.close());
  const admin = await connectClient(relay, { identity: root, raw: true });
  t.teardown(() => admin.close());
  const bob = generateIdentity();
  await store(admin, bob, names('m', 3));
  const client = makeClient(relay, { identity: bob, raw: true });
  t.teardown(() => client.close());
  await client.connect();
  t.equal((await admin.send([bob.publicKey], 'live, not storable')).outcomes[0].codeName, 'DELIVERED');
  await sleep(200);
  t.equal(client.heldCount, 4);
  const reconnected = once(client, 'connected');
  t.match(await admin.admin('kick', { key: encodeKey(bob.publicKey) }), { ok: true });
  await reconnected;
  await sleep(200);
  const got: ReceivedMessage[] = [];
  client.on('message', (m) => got.push(m));
  await waitForCount(got, 4);
  await sleep(100);
  t.same(text(got), ['live, not storable', 'm0', 'm1', 'm2'], 'each once: the live one kept, the stored ones as sent again');
  await client.close();
  t.same(await whatComesNext(relay, bob), [], 'the ones from the second connection were acknowledged');
});

t.test('a connection made while the hold is full reads nothing until a consumer takes some', async (t) => {
  const root = generateIdentity();
  const relay = await startRelay({ rootKey: encodeKey(root.publicKey) });
  t.teardown(() => relay.close());
  const admin = await connectClient(relay, { identity: root, raw: true });
  t.teardown(() => admin.close());
  const bob = generateIdentity();
  const client = makeClient(relay, { identity: bob, raw: true, holdLimit: 2 });
  t.teardown(() => client.close());
  await client.connect();
  for (const body of ['live0', 'live1']) t.equal((await admin.send([bob.publicKey], body)).outcomes[0].codeName, 'DELIVERED');
  // Storable, written live to a client that has stopped reading: they go back to the mailbox with the connection.
  for (const body of ['s0', 's1', 's2']) t.equal((await admin.send([bob.publicKey], body, { store: true })).outcomes[0].codeName, 'DELIVERED');
  await sleep(200);
  t.equal(client.heldCount, 2, 'full');
  const reconnected = once(client, 'connected', 15_000);
  t.match(await admin.admin('kick', { key: encodeKey(bob.publicKey) }), { ok: true });
  // A client that has stopped reading sees the relay's CLOSE only after what it left unread;
  // a write is what tells it the connection is gone (once the relay has let go of it).
  for (let i = 0; i < 60 && client.connected; i++) {
    await client.send([root.publicKey], 'are you there?', { receipt: false }).catch(() => {});
    await sleep(100);
  }
  await reconnected;
  await sleep(300);
  t.equal(client.heldCount, 2, 'the new connection took nothing more');
  const got: ReceivedMessage[] = [];
  client.on('message', (m) => got.push(m));
  await waitForCount(got, 5);
  await sleep(100);
  t.same(text(got), ['live0', 'live1', 's0', 's1', 's2'], 'then everything, once');
});

t.test('close() inside a message listener acknowledges that message and nothing after it', async (t) => {
  const { relay, alice } = await relayWithSender(t);
  const bob = generateIdentity();
  await store(alice, bob, names('m', 10));
  const client = makeClient(relay, { identity: bob, raw: true });
  t.teardown(() => client.close());
  const got: string[] = [];
  let closing: Promise<void> | null = null;
  client.on('message', (m) => {
    got.push(Buffer.from(m.body).toString());
    if (got.length === 4) closing = client.close();
  });
  await client.connect();
  await waitForCount(got, 4);
  await closing;
  await sleep(100);
  t.same(got, ['m0', 'm1', 'm2', 'm3'], 'nothing handed over after close()');
  t.same(await whatComesNext(relay, bob), names('m', 10).slice(4), 'the second connection gets exactly the rest');
});

t.test('a message that fails to open while others are held is acknowledged only after them', async (t) => {
  const { relay, alice } = await relayWithSender(t);
  const bob = generateIdentity();
  // Raw bodies are not sealed, so a sealing client reports each as invalid and acknowledges it.
  await store(alice, bob, ['not sealed']);
  const sealer = await connectClient(relay);
  t.teardown(() => sealer.close());
  t.equal((await sealer.send([bob.publicKey], 'sealed', { store: true })).outcomes[0].codeName, 'STORED');
  await store(alice, bob, ['not sealed either']);
  const client = makeClient(relay, { identity: bob });
  t.teardown(() => client.close());
  const invalid: number[] = [];
  client.on('invalid', (_err, id) => invalid.push(id));
  await client.connect();
  await sleep(200);
  t.same(invalid, [1, 3], 'both reported at once');
  await client.close();
  await sleep(100);
  const again = makeClient(relay, { identity: bob });
  t.teardown(() => again.close());
  const bodies: string[] = [];
  again.on('message', (m) => bodies.push(Buffer.from(m.body).toString()));
  const empty = once(again, 'queueEmpty');
  await again.connect();
  await empty;
  await sleep(100);
  await again.close();
  t.same(bodies, ['sealed'], 'the held message was not acknowledged by the invalid one after it');
});
