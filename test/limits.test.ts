// Holding up under load and misbehaving peers: rate limits that pause reads, slow consumers,
// idle connections, accept floods, and a graceful shutdown that loses nothing.
import t from 'tap';
import { keyIdOf } from '../src/crypto/key-id.js';
import { generateIdentity } from '../src/crypto/keys.js';
import { Code, FrameType } from '../src/protocol/constants.js';
import { parseClose } from '../src/protocol/frames.js';
import { defaultConfig } from '../src/server/config.js';
import { connectClient, connectCollecting, once, RawPeer, removeDir, sleep, startRelay, tempDir, waitForCount } from './helpers.js';

t.test('a message rate limit pauses reads: nothing is dropped, the client is told once', async (t) => {
  const relay = await startRelay({ rateMessagesPerSecond: 100, rateBurstMessages: 100 });
  t.teardown(() => relay.close());
  const { client: bob, messages } = await connectCollecting(relay, { raw: true });
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => Promise.all([alice.close(), bob.close()]));
  const notices: number[] = [];
  alice.on('notice', (code) => notices.push(code));
  const started = Date.now();
  for (let i = 0; i < 300; i++) await alice.send([bob.identity.publicKey], `m${i}`, { receipt: false });
  await waitForCount(messages, 300, 10_000);
  const elapsed = Date.now() - started;
  t.same(messages.map((m) => Buffer.from(m.body).toString()), Array.from({ length: 300 }, (_, i) => `m${i}`), 'all delivered, in order');
  t.ok(elapsed >= 1500, `300 messages at 100/s with a burst of 100 took ${elapsed} ms (at least ~2 s expected)`);
  t.same(notices, [Code.RATE_LIMITED], 'one RATE_LIMITED notice');
  t.ok(relay.stats.rateLimitPauses > 0);
});

t.test('a byte rate limit pauses reads and a reload lifts it for connected sessions', async (t) => {
  const relay = await startRelay({ rateBytesPerSecond: 64 * 1024, rateBurstBytes: 64 * 1024 });
  t.teardown(() => relay.close());
  const { client: bob, messages } = await connectCollecting(relay, { raw: true });
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => Promise.all([alice.close(), bob.close()]));
  for (let i = 0; i < 32; i++) await alice.send([bob.identity.publicKey], Buffer.alloc(8 * 1024, i), { receipt: false });
  await waitForCount(messages, 32, 10_000);
  t.ok(relay.stats.rateLimitPauses > 0, 'reads were paused');
  relay.reload(defaultConfig({ ...relay.config, rateBytesPerSecond: 0, rateBurstBytes: 0 }));
  for (const session of relay.router.sessions.values()) t.equal(session.limits.rateBytesPerSecond, 0, 'the new limit applies to a connected session');
});

t.test('a slow consumer: its budget bounds memory, storable messages spill, others keep flowing, then it is closed', async (t) => {
  const budget = 64 * 1024;
  const relay = await startRelay({ outboundBudgetBytes: budget, writeDeadlineMs: 500, pingIntervalMs: 60_000 });
  t.teardown(() => relay.close());
  const stuckIdentity = generateIdentity();
  const stuck = new RawPeer(relay.port);
  t.equal((await stuck.handshake(stuckIdentity)).status, Code.OK);
  stuck.socket.pause(); // stops reading: the kernel buffers fill, then the relay's budget
  const sender = await connectClient(relay, { raw: true });
  const { client: goodB, messages: goodMessages } = await connectCollecting(relay, { raw: true });
  const goodA = await connectClient(relay, { raw: true });
  t.teardown(() => Promise.all([sender.close(), goodA.close(), goodB.close()]));

  const outcomes = new Map<string, number>();
  let peakPending = 0;
  const stuckSession = relay.router.sessions.get(keyIdOf(stuckIdentity.publicKey))!;
  for (let i = 0; i < 4000; i++) {
    const r = await sender.send([stuckIdentity.publicKey], Buffer.alloc(4096, 7), { store: i % 2 === 0 });
    const name = r.outcomes[0]?.codeName ?? r.codeName;
    outcomes.set(name, (outcomes.get(name) ?? 0) + 1);
    peakPending = Math.max(peakPending, stuckSession.out.pendingBytes);
    if (i % 500 === 0) await goodA.send([goodB.identity.publicKey], `good ${i}`, { receipt: false });
    if ((outcomes.get('STORED') ?? 0) > 50 && (outcomes.get('RECIPIENT_BUSY') ?? 0) > 50) break;
  }
  t.ok((outcomes.get('STORED') ?? 0) > 0, `storable messages spilled to the mailbox (${JSON.stringify([...outcomes])})`);
  t.ok((outcomes.get('RECIPIENT_BUSY') ?? 0) > 0, 'non-storable ones were refused RECIPIENT_BUSY');
  t.ok(peakPending <= budget + 4096 + 128, `the relay held at most the budget plus one message for it (${peakPending} bytes)`);
  await waitForCount(goodMessages, 1, 5000);
  t.ok(goodMessages.length >= 1, 'the good pair kept talking');
  // The stuck peer does not read, so it cannot notice; the relay's side shows the close.
  const stuckId = keyIdOf(stuckIdentity.publicKey);
  const deadline = Date.now() + 5000;
  while (relay.router.sessions.has(stuckId) && Date.now() < deadline) await sleep(20);
  t.notOk(relay.router.sessions.has(stuckId), 'the slow consumer was disconnected');
  stuck.close();
  t.ok(relay.stats.slowConsumers >= 1);
  t.ok((await relay.store.usage(stuckIdentity.publicKey)).count > 0, 'its storable messages wait in its mailbox');
});

t.test('an idle connection is pinged, and closed when it does not answer', async (t) => {
  const relay = await startRelay({ pingIntervalMs: 200, pingTimeoutMs: 200 });
  t.teardown(() => relay.close());
  const silent = new RawPeer(relay.port);
  await silent.handshake();
  const answering = await connectClient(relay);
  t.teardown(() => answering.close());
  let frame = await silent.next(3000);
  const types: number[] = [];
  while (frame && frame.type !== FrameType.CLOSE) {
    types.push(frame.type);
    frame = await silent.next(3000);
  }
  t.ok(types.includes(FrameType.PING), 'the relay pinged');
  t.equal(frame && parseClose(frame.payload, 0, frame.payload.length)?.code, Code.IDLE_TIMEOUT);
  await sleep(300);
  t.ok(answering.connected, 'a client that answers pings stays connected');
});

t.test('an accept flood past the accept rate gets RELAY_FULL, and the relay keeps serving', async (t) => {
  const relay = await startRelay({ acceptRatePerSecond: 5, acceptBurst: 5 });
  t.teardown(() => relay.close());
  const peers = Array.from({ length: 20 }, () => new RawPeer(relay.port));
  const first = await Promise.all(peers.map((p) => p.next(3000)));
  const full = first.filter((f) => f?.type === FrameType.CLOSE && parseClose(f.payload, 0, f.payload.length)?.code === Code.RELAY_FULL).length;
  const hello = first.filter((f) => f?.type === FrameType.SERVER_HELLO).length;
  for (const p of peers) p.close();
  t.ok(full >= 10, `${full} of 20 refused RELAY_FULL`);
  t.ok(hello >= 5, `${hello} of 20 served`);
  await sleep(1100);
  const later = await connectClient(relay);
  t.ok(later.connected, 'after a second the relay accepts again');
  await later.close();
});

t.test('graceful shutdown: GOING_AWAY with a retry hint, unacknowledged storable messages back in the mailbox', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  let relay = await startRelay({}, dir);
  const port = relay.port;
  const bob = generateIdentity();
  const { client: bobClient, messages } = await connectCollecting(relay, { identity: bob, raw: true, autoAck: false, backoffBaseMs: 5000 });
  const alice = await connectClient(relay, { raw: true, reconnect: false });
  alice.on('error', () => {});
  const r = await alice.send([bob.publicKey], 'in flight at shutdown', { store: true });
  t.equal(r.outcomes[0].codeName, 'DELIVERED');
  await waitForCount(messages, 1);
  const gone = once<{ code: number; willRetry: boolean }>(bobClient, 'disconnected');
  await relay.close();
  const info = await gone;
  t.equal(info.code, Code.GOING_AWAY);
  t.ok(info.willRetry, 'the client will come back');
  await bobClient.close();
  await alice.close();
  relay = await startRelay({ port }, dir);
  t.teardown(() => relay.close());
  const { client: again, messages: againMessages } = await connectCollecting(relay, { identity: bob, raw: true });
  t.teardown(() => again.close());
  const [m] = await waitForCount(againMessages, 1);
  t.equal(Buffer.from(m.body).toString(), 'in flight at shutdown');
  t.ok(m.fromMailbox);
});
