// The router's third destination, another instance of the relay (src/server/destinations.ts),
// through a test double of the Peers seam: what a forward carries, the peer's outcome in the
// sender's RESULT, and what a miss does (stored when storable, refused with its code otherwise).
// The real peers (workers, the cluster) implement the same interface.
import t from 'tap';
import { decodeKey, generateIdentity } from '../src/crypto/keys.js';
import { Code, KEY_LENGTH } from '../src/protocol/constants.js';
import { FORWARDED, ForwardMiss, type ForwardWaiter, type Peer, type Peers } from '../src/server/destinations.js';
import type { Envelope } from '../src/server/envelope.js';
import type { Sender } from '../src/server/send-answer.js';
import { Relay } from '../src/server/relay.js';
import { connectClient, connectCollecting, removeDir, silentLogger, tempDir, waitForCount } from './helpers.js';

interface Forwarded {
  sender: Buffer;
  recipient: Buffer;
  wrappedKey: Buffer;
  storageKey: Buffer | null;
  body: string;
  flags: number;
  ttlSeconds: number;
}

/** Holds the keys it is told to, records what it is sent, and answers `outcome` a turn later (a miss too). */
class FakePeer implements Peers, Peer {
  readonly name = 'fake';
  readonly holds = new Set<string>();
  readonly forwarded: Forwarded[] = [];
  outcome: number = Code.DELIVERED;
  /** A miss returned by forward() itself (the peer knew at once), instead of through the waiter. */
  missAtOnce = false;

  hold(key: Uint8Array): void {
    this.holds.add(Buffer.from(key).toString('latin1'));
  }

  holderOf(keyId: string): Peer | null {
    return this.holds.has(keyId) ? this : null;
  }

  forward(sender: Sender, envelope: Envelope, flags: number, ttlSeconds: number, waiter: ForwardWaiter, tag: number): number {
    this.forwarded.push({
      sender: Buffer.from(sender.key), recipient: Buffer.from(envelope.recipientKey()), wrappedKey: Buffer.from(envelope.wrappedKey()),
      storageKey: envelope.storageKey() && Buffer.from(envelope.storageKey()!), body: envelope.body().toString(), flags, ttlSeconds,
    });
    const outcome = this.outcome;
    if (this.missAtOnce && outcome < 0) return outcome;
    setImmediate(() => waiter.forwardSettled(outcome, tag));
    return FORWARDED;
  }
}

async function setup(t: { teardown(fn: () => unknown): void }) {
  const peer = new FakePeer();
  const dir = tempDir();
  const relay = await Relay.start({ host: '127.0.0.1', port: 0, metricsPort: -1, dataDir: dir }, { logger: silentLogger, peers: peer });
  t.teardown(async () => {
    await relay.close();
    removeDir(dir);
  });
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => alice.close());
  return { relay, peer, alice };
}

t.test('a message for a key another instance holds is forwarded once, and its outcome answers the sender', async (t) => {
  const { relay, peer, alice } = await setup(t);
  const bob = generateIdentity();
  peer.hold(bob.publicKey);
  const delivered = await alice.send([bob.publicKey], 'over there', { storageKey: 'topic', ttlSeconds: 60 });
  t.same(delivered.outcomes.map((o) => o.codeName), ['DELIVERED']);
  t.equal(peer.forwarded.length, 1);
  const f = peer.forwarded[0];
  t.same(f.sender, Buffer.from(decodeKey(alice.publicKey)), 'the authenticated sender');
  t.same(f.recipient, Buffer.from(bob.publicKey));
  t.equal(f.body, 'over there', 'the body, untouched');
  t.equal(f.storageKey?.length, 16);
  t.equal(f.ttlSeconds, 60);
  peer.outcome = Code.STORED;
  const stored = await alice.send([bob.publicKey], 'kept there', { store: true });
  t.same(stored.outcomes.map((o) => o.codeName), ['STORED'], "the peer's outcome, as it gave it");
  peer.outcome = Code.QUOTA_BYTES;
  const refused = await alice.send([bob.publicKey], 'too much', { store: true });
  t.equal(refused.codeName, 'QUOTA_BYTES', 'a refusal on the peer is the RESULT code');
  t.equal(relay.stats.forwarded, 3);
  t.same(relay.stats.forwardMisses, { gone: 0, busy: 0 });
  t.equal((await relay.store.totals()).count, 0, 'nothing stored here');
});

t.test('a forward that misses stores a storable message here and refuses the others with their code', async (t) => {
  const { relay, peer, alice } = await setup(t);
  const bob = generateIdentity();
  peer.hold(bob.publicKey);
  peer.outcome = ForwardMiss.GONE;
  const gone = await alice.send([bob.publicKey], 'live only');
  t.same(gone.outcomes.map((o) => o.codeName), ['RECIPIENT_OFFLINE']);
  peer.outcome = ForwardMiss.BUSY;
  const busy = await alice.send([bob.publicKey], 'live only');
  t.same(busy.outcomes.map((o) => o.codeName), ['RECIPIENT_BUSY']);
  peer.outcome = ForwardMiss.GONE;
  const kept = await alice.send([bob.publicKey], 'keep me', { store: true });
  t.same(kept.outcomes.map((o) => o.codeName), ['STORED'], 'stored here after the miss');
  t.same(relay.stats.forwardMisses, { gone: 2, busy: 1 });
  // The key comes here: it gets what the miss stored.
  peer.holds.clear();
  const { client, messages } = await connectCollecting(relay, { identity: bob, raw: true });
  t.teardown(() => client.close());
  await waitForCount(messages, 1);
  t.same(messages.map((m) => Buffer.from(m.body).toString()), ['keep me']);
});

t.test('a key connected here is delivered here, whatever a peer claims; outcomes stay per recipient', async (t) => {
  const { peer, alice, relay } = await setup(t);
  const here = generateIdentity();
  const there = generateIdentity();
  const nowhere = generateIdentity();
  peer.hold(here.publicKey);
  peer.hold(there.publicKey);
  const { client, messages } = await connectCollecting(relay, { identity: here, raw: true });
  t.teardown(() => client.close());
  const result = await alice.send([here.publicKey, there.publicKey, nowhere.publicKey], 'three ways', { store: true });
  t.same(result.outcomes.map((o) => o.codeName), ['DELIVERED', 'DELIVERED', 'STORED'], 'local, peer, mailbox: in the order given');
  t.equal(result.codeName, 'OK');
  t.same(peer.forwarded.map((f) => f.recipient.subarray(0, KEY_LENGTH)), [Buffer.from(there.publicKey)], 'only the key held elsewhere went to the peer');
  await waitForCount(messages, 1);
  t.same(messages.map((m) => Buffer.from(m.body).toString()), ['three ways']);
});

t.test('a miss the peer knows at once is decided at once: stored when storable, refused otherwise', async (t) => {
  const { relay, peer, alice } = await setup(t);
  const bob = generateIdentity();
  peer.hold(bob.publicKey);
  peer.missAtOnce = true;
  peer.outcome = ForwardMiss.BUSY;
  const busy = await alice.send([bob.publicKey], 'live only');
  t.same(busy.outcomes.map((o) => o.codeName), ['RECIPIENT_BUSY']);
  peer.outcome = ForwardMiss.GONE;
  const gone = await alice.send([bob.publicKey], 'live only');
  t.same(gone.outcomes.map((o) => o.codeName), ['RECIPIENT_OFFLINE']);
  const kept = await alice.send([bob.publicKey], 'keep me', { store: true });
  t.same(kept.outcomes.map((o) => o.codeName), ['STORED'], 'stored here at once');
  t.same(relay.stats.forwardMisses, { gone: 2, busy: 1 });
  t.equal((await relay.store.totals()).count, 1);
});
