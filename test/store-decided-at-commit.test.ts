// The relay on an engine that, like a database server, knows its outcomes only once the write has
// committed (accept() returns decided: false): the router cannot write a storable message live
// with its seq, so it goes through the mailbox, and every ordering promise still holds. The double
// is the reference model with its answers held back until a later turn.
import t from 'tap';
import { generateIdentity } from '../src/crypto/keys.js';
import type { ReceivedMessage } from '../src/client/client.js';
import { Relay } from '../src/server/relay.js';
import type { Accepted, EnqueueOutcome, EnqueueRequest, MailboxEntry, MailboxStore } from '../src/store/mailbox.js';
import { MemoryMailbox } from '../src/store/memory/mailbox.js';
import type { MailboxSettings } from '../src/store/open.js';
import { connectClient, connectCollecting, removeDir, silentLogger, sleep, tempDir, waitForCount } from './helpers.js';

const COMMIT_MS = 3;

/** The model, deciding and showing writes only after a "round trip" of COMMIT_MS; reads take readMs. */
class DecidedAtCommit extends MemoryMailbox {
  readMs = 1;

  override accept(request: EnqueueRequest): Accepted {
    // The request is the caller's once accept() returns: copied for the "commit", as a real engine's batch would.
    const copy: EnqueueRequest = {
      ...request,
      storageKey: request.storageKey && Buffer.from(request.storageKey),
      body: Buffer.from(request.body),
      recipients: request.recipients.map((r) => ({ key: Buffer.from(r.key), wrappedKey: Buffer.from(r.wrappedKey) })),
    };
    const outcomes: EnqueueOutcome[] = [];
    const settled = new Promise<void>((resolve) => setTimeout(resolve, COMMIT_MS)).then(() => {
      const accepted = super.accept(copy);
      outcomes.push(...accepted.outcomes);
      return accepted.settled;
    });
    return { outcomes, decided: false, settled };
  }

  override async readEach(recipient: Uint8Array, afterSeq: number, limit: number, visit: (entry: MailboxEntry) => void): Promise<number> {
    await sleep(this.readMs);
    return super.readEach(recipient, afterSeq, limit, visit);
  }
}

async function setup(t: { teardown(fn: () => unknown): void }, overrides: Record<string, number> = {}) {
  const dir = tempDir();
  let store: MailboxStore | null = null;
  const openStore = async (settings: MailboxSettings): Promise<MailboxStore> => (store = new DecidedAtCommit({ ...(settings.limits ? { limits: settings.limits } : {}) }));
  const relay = await Relay.start({ host: '127.0.0.1', port: 0, metricsPort: -1, dataDir: dir, ...overrides }, { logger: silentLogger, openStore });
  t.teardown(async () => {
    await relay.close();
    removeDir(dir);
  });
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => alice.close());
  return { relay, alice, store: store! };
}

const texts = (messages: ReceivedMessage[]) => messages.map((m) => Buffer.from(m.body).toString());

t.test('storable messages to a connected recipient: STORED after the commit, delivered in order, deleted by the ACK', async (t) => {
  const { relay, alice, store } = await setup(t);
  const bob = generateIdentity();
  const { client, messages } = await connectCollecting(relay, { identity: bob, raw: true });
  t.teardown(() => client.close());
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => alice.send([bob.publicKey], `s${i}`, { store: true })));
  t.same(new Set(results.map((r) => r.outcomes[0].codeName)), new Set(['STORED']), 'the engine cannot say at once: answered after its commit');
  await waitForCount(messages, 20);
  t.same(texts(messages), Array.from({ length: 20 }, (_, i) => `s${i}`), 'in the order sent');
  await client.flush();
  for (let i = 0; i < 50 && (await store.totals()).count > 0; i++) await sleep(10);
  t.equal((await store.totals()).count, 0, 'every entry acknowledged and deleted');
});

t.test('storable and live-only messages from one sender, mixed, arrive in the order sent', async (t) => {
  const { relay, alice } = await setup(t);
  const bob = generateIdentity();
  const { client, messages } = await connectCollecting(relay, { identity: bob, raw: true });
  t.teardown(() => client.close());
  const sent: string[] = [];
  const sends: Promise<unknown>[] = [];
  for (let i = 0; i < 60; i++) {
    const storable = i % 3 !== 1;
    const text = `${storable ? 's' : 'l'}${i}`;
    sent.push(text);
    sends.push(alice.send([bob.publicKey], text, { store: storable }));
  }
  const results = (await Promise.all(sends)) as Array<{ outcomes: Array<{ codeName: string }> }>;
  t.same(results.filter((r) => !['DELIVERED', 'STORED'].includes(r.outcomes[0].codeName)), [], 'nothing refused');
  await waitForCount(messages, 60);
  t.same(texts(messages), sent, 'the live-only ones waited behind the stored ones before them');
});

t.test('a recipient connecting to a backlog: live-only messages sent while it drains come after what was stored before them', async (t) => {
  const { relay, alice, store } = await setup(t);
  const bob = generateIdentity();
  // Slow reads: the live-only messages come while the drain is still reading.
  (store as DecidedAtCommit).readMs = 40;
  for (let i = 0; i < 300; i++) void alice.send([bob.publicKey], `old${i}`, { store: true, receipt: false });
  await alice.flush();
  await sleep(4 * COMMIT_MS + 20);
  const { client, messages } = await connectCollecting(relay, { identity: bob, raw: true });
  t.teardown(() => client.close());
  // Sent at once, while the 300 are still being read out (a read per 256, a round trip each).
  const live = await Promise.all([alice.send([bob.publicKey], 'live-a'), alice.send([bob.publicKey], 'live-b')]);
  t.same(live.map((r) => r.outcomes[0].codeName), ['DELIVERED', 'DELIVERED'], 'held, then delivered');
  await waitForCount(messages, 302);
  const got = texts(messages);
  t.same(got.slice(0, 300), Array.from({ length: 300 }, (_, i) => `old${i}`), 'the stored ones, in order');
  t.same(got.slice(300), ['live-a', 'live-b'], 'the live-only ones after every entry that was in the mailbox when they came');
});
