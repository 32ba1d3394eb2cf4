// Two workers of one relay in this process (src/workers/): each a whole relay on its own port,
// meshed over Unix sockets, on the store the "primary" (the store owner here) serves them. What a
// pair on different workers sees: live and stored messages, newest connection wins across
// workers, and presence once a worker has gone. test/workers.test.ts runs `pulltab serve --workers`.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { generateIdentity, loadOrCreateIdentityFile } from '../src/crypto/keys.js';
import { Code } from '../src/protocol/constants.js';
import { defaultConfig } from '../src/server/config.js';
import { openStoreOwner } from '../src/workers/store-owner.js';
import { startWorker, type Worker } from '../src/workers/worker.js';
import { connectClient, connectCollecting, nextMessages, once, removeDir, silentLogger, sleep, tempDir, waitForCount } from './helpers.js';

async function twoWorkers(t: { teardown(fn: () => unknown): void }, overrides: Record<string, unknown> = {}) {
  const dataDir = tempDir();
  const runDir = mkdtempSync(join(tmpdir(), 'pt-run-'));
  chmodSync(runDir, 0o700);
  const config = defaultConfig({ host: '127.0.0.1', port: 0, dataDir, metricsPort: -1, eventLog: false, ...overrides });
  loadOrCreateIdentityFile(join(dataDir, 'relay-identity.json'));
  const owner = await openStoreOwner(config, runDir, silentLogger);
  const workers: Worker[] = [];
  for (const index of [1, 2]) workers.push(await startWorker(config, { index, count: 2, runDir, reusePort: false }, silentLogger));
  t.teardown(async () => {
    for (const w of workers) await w.close({ graceMs: 200 }).catch(() => {});
    await owner.close();
    rmSync(runDir, { recursive: true, force: true });
    removeDir(dataDir);
  });
  await linked(workers);
  return { workers, owner, runDir, config };
}

/** Waits until every worker has a link up to every other. */
async function linked(workers: Worker[]): Promise<void> {
  const deadline = Date.now() + 5000;
  while (workers.some((w) => w.mesh.links.size < workers.length - 1)) {
    if (Date.now() > deadline) throw new Error('the workers did not link up');
    await sleep(10);
  }
}

/** Waits until worker w knows that another worker holds n keys. */
async function knows(w: Worker, n: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (w.mesh.presence.remoteCount !== n) {
    if (Date.now() > deadline) throw new Error(`worker knows ${w.mesh.presence.remoteCount} remote keys, not ${n}`);
    await sleep(5);
  }
}

t.test('a pair on different workers: live messages cross once, stored ones reach the holder at once', async (t) => {
  const { workers: [w1, w2] } = await twoWorkers(t);
  t.equal(w1.relay.address, w2.relay.address.replace(`:${w2.relay.port}`, `:${w1.relay.port}`), 'one relay key');
  const bob = generateIdentity();
  const { client: bobClient, messages } = await connectCollecting(w2.relay, { identity: bob });
  const alice = await connectClient(w1.relay);
  t.teardown(() => Promise.all([alice.close(), bobClient.close()]));
  await knows(w1, 1);
  const live = await alice.send([bob.publicKey], 'over the mesh', { receipt: true });
  t.same(live.outcomes.map((o) => o.codeName), ['DELIVERED']);
  const stored = await alice.send([bob.publicKey], 'kept and sent', { store: true, receipt: true });
  t.same(stored.outcomes.map((o) => o.codeName), ['STORED'], 'stored by the holder, then drained to it');
  await waitForCount(messages, 2);
  t.same(messages.map((m) => Buffer.from(m.body).toString()), ['over the mesh', 'kept and sent']);
  t.equal(w1.relay.stats.forwarded, 2);
  t.equal(w2.relay.stats.forwardedIn, 2);
  // The stored one is acknowledged by the client: the mailbox ends empty.
  const deadline = Date.now() + 5000;
  while ((await w1.relay.store.totals()).count !== 0 && Date.now() < deadline) await sleep(20);
  t.equal((await w1.relay.store.totals()).count, 0, 'acknowledged, so deleted');
});

t.test('a welcome waits until the other worker knows the connection: a message sent at once is delivered', async (t) => {
  const { workers: [w1, w2] } = await twoWorkers(t, { forwardDeadlineMs: 400 });
  const alice = await connectClient(w1.relay);
  t.teardown(() => alice.close());
  // Worker 1 reads nothing from worker 2 for a while (as if it were busy): bob's add waits there.
  const link = w1.mesh.links.get(2)!;
  link.pauseReading();
  const { client: bob, messages } = await connectCollecting(w2.relay);
  t.teardown(() => bob.close());
  t.equal(w2.relay.stats.presenceUnconfirmed, 1, 'welcomed at the deadline without a confirmation, and counted');
  link.resumeReading();
  await knows(w1, 1);

  // Now while worker 1 reads again after 150 ms: carol's welcome waits for it, then she is reachable.
  link.pauseReading();
  let welcomedAt = 0;
  const started = Date.now();
  const carolConnected = connectCollecting(w2.relay).then((c) => {
    welcomedAt = Date.now();
    return c;
  });
  setTimeout(() => link.resumeReading(), 150);
  const { client: carol, messages: carolGot } = await carolConnected;
  t.teardown(() => carol.close());
  t.ok(welcomedAt - started >= 140, `welcomed after worker 1 read the add (${welcomedAt - started} ms)`);
  const sent = await alice.send([carol.identity.publicKey, bob.identity.publicKey], 'at once', { receipt: true });
  t.same(sent.outcomes.map((o) => o.codeName), ['DELIVERED', 'DELIVERED'], 'not RECIPIENT_OFFLINE');
  await waitForCount(carolGot, 1);
  await waitForCount(messages, 1);
  t.equal(w2.relay.stats.presenceUnconfirmed, 1, 'that one was confirmed');
});

t.test('a storable forward slower than forwardDeadlineMs is not a miss: answered by the holder, stored and delivered once', async (t) => {
  const { workers: [w1, w2] } = await twoWorkers(t, { forwardDeadlineMs: 200 });
  const alice = await connectClient(w1.relay);
  const { client: bob, messages } = await connectCollecting(w2.relay);
  t.teardown(() => Promise.all([alice.close(), bob.close()]));
  await knows(w1, 1);
  // Worker 2 reads nothing from worker 1 for three deadlines (as if its store were slow).
  const link = w2.mesh.links.get(1)!;
  link.pauseReading();
  const live = alice.send([bob.identity.publicKey], 'not storable', { receipt: true });
  const kept = alice.send([bob.identity.publicKey], 'storable', { store: true, receipt: true });
  await sleep(600);
  link.resumeReading();
  t.same((await live).outcomes.map((o) => o.codeName), ['RECIPIENT_OFFLINE'], 'the live one missed at the deadline');
  t.same((await kept).outcomes.map((o) => o.codeName), ['STORED'], 'the storable one answered by worker 2, after the deadline');
  await waitForCount(messages, 1);
  await sleep(300);
  t.same(messages.map((m) => Buffer.from(m.body).toString()).filter((b) => b === 'storable'), ['storable'], 'delivered once');
  const deadline = Date.now() + 5000;
  while ((await w1.relay.store.totals()).count !== 0 && Date.now() < deadline) await sleep(20);
  t.equal((await w1.relay.store.totals()).count, 0, 'stored once: the ACK emptied the mailbox');
  t.equal(w1.relay.stats.forwardMisses.gone, 1, 'one miss: the live one');
});

t.test('a worker started after another serves once linked to it: the pair reach each other at once, both ways', async (t) => {
  const dataDir = tempDir();
  const runDir = mkdtempSync(join(tmpdir(), 'pt-run-'));
  chmodSync(runDir, 0o700);
  const config = defaultConfig({ host: '127.0.0.1', port: 0, dataDir, metricsPort: -1, eventLog: false });
  loadOrCreateIdentityFile(join(dataDir, 'relay-identity.json'));
  const owner = await openStoreOwner(config, runDir, silentLogger);
  const workers: Worker[] = [];
  t.teardown(async () => {
    for (const w of workers) await w.close({ graceMs: 200 }).catch(() => {});
    await owner.close();
    rmSync(runDir, { recursive: true, force: true });
    removeDir(dataDir);
  });
  workers.push(await startWorker(config, { index: 1, count: 2, runDir, reusePort: false }, silentLogger));
  const { client: alice, messages: aliceGot } = await connectCollecting(workers[0].relay);
  t.teardown(() => alice.close());
  // As the primary starts a worker when another serves already (PULLTAB_WORKERS_SERVING).
  workers.push(await startWorker(config, { index: 2, count: 2, runDir, reusePort: false, serving: [1] }, silentLogger));
  const { client: bob, messages: bobGot } = await connectCollecting(workers[1].relay);
  t.teardown(() => bob.close());
  const toAlice = await bob.send([alice.identity.publicKey], 'from the new worker', { receipt: true });
  const toBob = await alice.send([bob.identity.publicKey], 'to the new worker', { receipt: true });
  t.same([...toAlice.outcomes, ...toBob.outcomes].map((o) => o.codeName), ['DELIVERED', 'DELIVERED'], 'neither refused RECIPIENT_OFFLINE');
  await waitForCount(aliceGot, 1);
  await waitForCount(bobGot, 1);
});

t.test('a message stored while the recipient was offline reaches it on whichever worker it connects to', async (t) => {
  const { workers: [w1, w2] } = await twoWorkers(t);
  const bob = generateIdentity();
  const alice = await connectClient(w1.relay);
  t.teardown(() => alice.close());
  const r = await alice.send([bob.publicKey], 'while away', { store: true, receipt: true });
  t.same(r.outcomes.map((o) => o.codeName), ['STORED']);
  const offline = await alice.send([bob.publicKey], 'not kept');
  t.same(offline.outcomes.map((o) => o.codeName), ['RECIPIENT_OFFLINE']);
  const { client, messages } = await connectCollecting(w2.relay, { identity: bob });
  t.teardown(() => client.close());
  await waitForCount(messages, 1);
  t.same(messages.map((m) => Buffer.from(m.body).toString()), ['while away']);
});

t.test('newest connection wins across workers: the older one, on the other worker, is told REPLACED', async (t) => {
  const { workers: [w1, w2] } = await twoWorkers(t);
  const bob = generateIdentity();
  const older = await connectClient(w1.relay, { identity: bob });
  const replaced = once<{ code: number; willRetry: boolean }>(older, 'disconnected');
  await knows(w2, 1);
  const newer = await connectClient(w2.relay, { identity: bob });
  const alice = await connectClient(w1.relay);
  t.teardown(() => Promise.all([older.close(), newer.close(), alice.close()]));
  const info = await replaced;
  t.equal(info.code, Code.REPLACED);
  t.notOk(info.willRetry, 'a replaced client does not fight back');
  await knows(w1, 1);
  const got = nextMessages(newer, 1);
  const r = await alice.send([bob.publicKey], 'to the newest', { receipt: true });
  t.same(r.outcomes.map((o) => o.codeName), ['DELIVERED']);
  t.equal(Buffer.from((await got)[0].body).toString(), 'to the newest');
  t.equal(w1.relay.router.sessions.has(Buffer.from(bob.publicKey).toString('latin1')), false, 'the older session is gone');
  t.equal(w1.relay.stats.replaced, 1, 'counted where it was replaced');
});

t.test('a worker that has gone holds nothing: messages to its keys are stored or refused, never lost in a dead link', async (t) => {
  const { workers: [w1, w2] } = await twoWorkers(t);
  const bob = generateIdentity();
  const bobClient = await connectClient(w2.relay, { identity: bob, reconnect: false });
  const alice = await connectClient(w1.relay);
  t.teardown(() => Promise.all([alice.close(), bobClient.close()]));
  await knows(w1, 1);
  await w2.close({ graceMs: 200 });
  await knows(w1, 0);
  const live = await alice.send([bob.publicKey], 'nobody there');
  t.same(live.outcomes.map((o) => o.codeName), ['RECIPIENT_OFFLINE']);
  const kept = await alice.send([bob.publicKey], 'kept', { store: true, receipt: true });
  t.same(kept.outcomes.map((o) => o.codeName), ['STORED']);
  t.equal((await w1.relay.store.totals()).count, 1);
});

t.test('storable and non-storable messages interleaved across workers: every one answered DELIVERED or STORED arrives', async (t) => {
  // A frame held while a read of the mailbox was under way (the hosted store answers after a round
  // trip) used to be dropped when that read ended the backlog: this found it (the fuzz's good pair too).
  const { workers: [w1, w2] } = await twoWorkers(t);
  const bob = generateIdentity();
  const got = new Set<string>();
  const bobClient = await connectClient(w2.relay, { identity: bob, raw: true });
  bobClient.on('message', (m) => got.add(Buffer.from(m.body).toString()));
  const alice = await connectClient(w1.relay, { raw: true });
  t.teardown(() => Promise.all([alice.close(), bobClient.close()]));
  await knows(w1, 1);
  const accepted: string[] = [];
  let next = 0;
  const total = 3000;
  const sender = async () => {
    while (next < total) {
      const body = `m${next}`;
      const storable = next++ % 2 === 0;
      const r = await alice.send([bob.publicKey], body, { store: storable });
      const code = r.outcomes[0]?.codeName;
      if (code === 'DELIVERED' || code === 'STORED') accepted.push(body);
    }
  };
  await Promise.all([sender(), sender(), sender(), sender()]);
  const deadline = Date.now() + 15_000;
  while (accepted.some((b) => !got.has(b)) && Date.now() < deadline) await sleep(20);
  t.equal(accepted.length, total, 'every one accepted');
  t.same(accepted.filter((b) => !got.has(b)), [], 'and received');
});

t.test('a link past half its budget pauses its senders rather than refusing; what it refuses is refused BUSY; every one is answered', async (t) => {
  // The smallest budget (64 KiB): one read of a burst of 1 KiB messages fills it in one turn.
  const { workers: [w1, w2] } = await twoWorkers(t, { forwardBudgetBytes: 64 * 1024 });
  const bob = generateIdentity();
  let received = 0;
  const bobClient = await connectClient(w2.relay, { identity: bob, raw: true });
  bobClient.on('message', () => received++);
  const alice = await connectClient(w1.relay, { raw: true, sendBufferBytes: 4 * 1024 * 1024 });
  t.teardown(() => Promise.all([alice.close(), bobClient.close()]));
  await knows(w1, 1);
  const body = Buffer.alloc(1024, 7);
  const results = await Promise.all(Array.from({ length: 400 }, () => alice.send([bob.publicKey], body, { receipt: true })));
  const codes = results.map((r) => r.outcomes[0]!.codeName);
  const delivered = codes.filter((c) => c === 'DELIVERED').length;
  const busy = codes.filter((c) => c === 'RECIPIENT_BUSY').length;
  t.equal(delivered + busy, 400, `every one answered DELIVERED or RECIPIENT_BUSY (${delivered} delivered, ${busy} busy)`);
  t.ok(w1.relay.stats.peerPauses > 0, `the sender was paused (${w1.relay.stats.peerPauses} times)`);
  t.equal(w1.relay.stats.forwardMisses.busy, busy, 'each refusal counted as a busy miss');
  const deadline = Date.now() + 5000;
  while (received < delivered && Date.now() < deadline) await sleep(10);
  t.equal(received, delivered, 'every DELIVERED one arrived');
  // The pause ends once the link drained: the sender goes on.
  const after = await alice.send([bob.publicKey], 'after', { receipt: true });
  t.same(after.outcomes.map((o) => o.codeName), ['DELIVERED']);
});
