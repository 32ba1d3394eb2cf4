// Connection roles (CLIENT_HELLO flag SEND_ONLY, library option role: 'send'): a send-only
// connection never displaces its key's receiving connection, receives nothing, and is capped
// per key; receiving connections still replace one another, newest first.
import t from 'tap';
import { encodeKey, generateIdentity } from '../src/crypto/keys.js';
import { Code } from '../src/protocol/constants.js';
import type { ConnectError, ReceivedMessage } from '../src/client/client.js';
import { connectClient, connectCollecting, makeClient, once, removeDir, sleep, startRelay, tempDir, waitForCount } from './helpers.js';

/** How long "receives nothing" is watched for: far longer than a loopback delivery takes. */
const QUIET_MS = 300;

t.test('a send-only connection does not displace the receiver and receives nothing', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relay = await startRelay({}, dir);
  t.teardown(() => relay.close());
  const alice = generateIdentity();
  const other = await connectClient(relay);
  t.teardown(() => other.close());

  // A stored message waits for Alice; her send-only connection must not be handed it.
  t.equal((await other.send([alice.publicKey], 'stored for alice', { store: true })).outcomes[0].codeName, 'STORED');
  const sender = makeClient(relay, { identity: alice, role: 'send' });
  const senderGot: ReceivedMessage[] = [];
  let senderQueueEmpty = 0;
  const senderDisconnects: number[] = [];
  sender.on('message', (m) => senderGot.push(m));
  sender.on('queueEmpty', () => senderQueueEmpty++);
  sender.on('disconnected', (info) => senderDisconnects.push(info.code));
  await sender.connect();
  t.teardown(() => sender.close());
  await sleep(QUIET_MS);
  t.equal(senderGot.length, 0, 'the mailbox is not drained to a send-only connection');
  t.equal(senderQueueEmpty, 0, 'and it gets no QUEUE_EMPTY');

  // Alice's receiving connection comes after and gets the stored message; the sender stays.
  const { client: receiver, messages } = await connectCollecting(relay, { identity: alice });
  t.teardown(() => receiver.close());
  const receiverDisconnects: number[] = [];
  receiver.on('disconnected', (info) => receiverDisconnects.push(info.code));
  await waitForCount(messages, 1);
  t.equal(Buffer.from(messages[0].body).toString(), 'stored for alice');

  // Live messages to Alice go to the receiver only, also with the sender connected after it.
  const later = makeClient(relay, { identity: alice, role: 'send' });
  await later.connect();
  t.teardown(() => later.close());
  const live = await other.send([alice.publicKey], 'live for alice');
  t.equal(live.outcomes[0].codeName, 'DELIVERED');
  await waitForCount(messages, 2);
  t.equal(Buffer.from(messages[1].body).toString(), 'live for alice');

  // The send-only connection sends (its RESULT comes back to it) and does admin requests.
  const bobGot = await connectCollecting(relay);
  t.teardown(() => bobGot.client.close());
  const sent = await sender.send([bobGot.client.publicKey], 'from alice, send-only');
  t.equal(sent.outcomes[0].codeName, 'DELIVERED', 'its RESULT comes back to it');
  await waitForCount(bobGot.messages, 1);
  t.equal(bobGot.messages[0].fromText, sender.publicKey, 'and the message carries its key');
  t.ok((await sender.admin('stats')).status !== undefined, 'ADMIN_RESPONSEs come to it');

  await sleep(QUIET_MS);
  t.equal(senderGot.length, 0, 'nothing addressed to Alice ever went to a send-only connection');
  t.same(receiverDisconnects, [], 'the receiver was never displaced');
  t.same(senderDisconnects, [], 'nor the sender');
  t.ok(receiver.connected && sender.connected && later.connected);
  t.match(await relay.statsSnapshot(), { connections: { authenticated: 5, sendOnly: 2 } }, 'send-only connections are counted');
  t.equal(relay.stats.replaced, 0);
});

t.test('the cap refuses the (N+1)th send-only connection of a key with TOO_MANY_CONNECTIONS', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relay = await startRelay({ maxSendOnlyPerKey: 2 }, dir);
  t.teardown(() => relay.close());
  const alice = generateIdentity();
  const first = await connectClient(relay, { identity: alice, role: 'send' });
  const second = await connectClient(relay, { identity: alice, role: 'send' });
  t.teardown(() => Promise.all([first.close(), second.close()]));
  const third = makeClient(relay, { identity: alice, role: 'send', reconnect: false });
  const refused = await third.connect().then(() => null, (err: ConnectError) => err);
  t.equal(refused?.code, Code.TOO_MANY_CONNECTIONS, 'refused at the handshake with its code');
  t.match(refused?.message, /TOO_MANY_CONNECTIONS/);
  t.match(await relay.statsSnapshot(), { handshakes: { tooManyConnections: 1 } });
  // The cap is per key and for send-only connections only.
  const receiver = await connectClient(relay, { identity: alice });
  const bob = await connectClient(relay, { role: 'send' });
  t.teardown(() => Promise.all([receiver.close(), bob.close()]));
  t.ok(receiver.connected && bob.connected, 'a receiving connection of the key, and another key, still get in');
  // A freed place can be taken again; a retrying client gets in once it is.
  const retrying = makeClient(relay, { identity: alice, role: 'send' });
  const turnedAway = once<{ code: number; willRetry: boolean }>(retrying, 'disconnected');
  const connecting = retrying.connect();
  t.teardown(() => retrying.close());
  t.match(await turnedAway, { code: Code.TOO_MANY_CONNECTIONS, willRetry: true }, 'the library retries after the hint');
  await first.close();
  await connecting;
  t.ok(retrying.connected, 'a retrying client takes the freed place');
});

t.test('newest-wins still holds between receiving connections, and send-only ones stay out of it', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relay = await startRelay({}, dir);
  t.teardown(() => relay.close());
  const alice = generateIdentity();
  const older = await connectCollecting(relay, { identity: alice });
  t.teardown(() => older.client.close());
  const sender = await connectClient(relay, { identity: alice, role: 'send' });
  t.teardown(() => sender.close());
  const senderDisconnects: number[] = [];
  sender.on('disconnected', (info) => senderDisconnects.push(info.code));
  const olderGone = once<{ code: number }>(older.client, 'disconnected');
  const newer = await connectCollecting(relay, { identity: alice });
  t.teardown(() => newer.client.close());
  t.equal((await olderGone).code, Code.REPLACED, 'the older receiving connection is replaced');
  const other = await connectClient(relay);
  t.teardown(() => other.close());
  t.equal((await other.send([alice.publicKey], 'to the newest')).outcomes[0].codeName, 'DELIVERED');
  await waitForCount(newer.messages, 1);
  t.equal(older.messages.length, 0);
  await sleep(QUIET_MS);
  t.same(senderDisconnects, [], 'the send-only connection was neither replaced nor replacing');
  t.ok(sender.connected);
  t.equal(relay.stats.replaced, 1);
});

t.test('kick and block reach a key\'s send-only connections too', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const root = generateIdentity();
  const relay = await startRelay({ rootKey: encodeKey(root.publicKey) }, dir);
  t.teardown(() => relay.close());
  const admin = await connectClient(relay, { identity: root, role: 'send' });
  t.teardown(() => admin.close());
  const alice = generateIdentity();
  // No reconnecting after the kick: a kicked client may come back, and would then be counted below.
  const receiver = await connectClient(relay, { identity: alice, reconnect: false });
  const sender = await connectClient(relay, { identity: alice, role: 'send', reconnect: false });
  t.teardown(() => Promise.all([receiver.close(), sender.close()]));
  const kicks = Promise.all([once<{ code: number }>(receiver, 'disconnected'), once<{ code: number }>(sender, 'disconnected')]);
  t.match(await admin.admin('kick', { key: encodeKey(alice.publicKey) }), { ok: true });
  t.match(await kicks, [{ code: Code.KICKED }, { code: Code.KICKED }], 'kick closes both');
  // Alone, a send-only connection is still "connected" for kick and block.
  const lone = await connectClient(relay, { identity: alice, role: 'send', reconnect: false });
  t.teardown(() => lone.close());
  const blocked = once<{ code: number }>(lone, 'disconnected');
  t.match(await admin.admin('block', { key: encodeKey(alice.publicKey) }), { ok: true, body: { disconnected: 1 } });
  t.match(await blocked, { code: Code.NOT_AUTHORIZED }, 'block closes it');
});
