// The mailbox contract (src/store/mailbox.ts), run against every engine the factory knows
// (src/store/open.ts): whatever holds for one engine holds for all. Engine-specific behaviour
// (LMDB's reopen, migration, durability, repair) is in mailbox.test.ts.
import t from 'tap';
import { enqueue, type EnqueueOutcome, type EnqueueRequest, type MailboxLimits, type MailboxStore } from '../src/store/mailbox.js';
import { LmdbEngine } from '../src/store/lmdb/engine.js';
import { MemoryMailbox } from '../src/store/memory/mailbox.js';

import { engineSkip, freshStoreSetting, openTestMailbox, TEST_ENGINES } from './store-engines.js';
import { A, B, bytes, C, codes, key, reqDefault, req, S1, S2, seqOf, skey, tempDir, type Clock, type Teardown } from './mailbox-fixtures.js';

// ------------------------------------------------------------------ helpers

interface MakeOptions {
  limits?: Partial<MailboxLimits>;
  clock?: Clock;
}

async function open(engine: string, t: Teardown, options: MakeOptions): Promise<MailboxStore> {
  const clock = options.clock;
  const store = await openTestMailbox({
    store: await freshStoreSetting(engine),
    dataDir: tempDir(t),
    ...(options.limits ? { limits: options.limits } : {}),
    ...(clock ? { now: () => clock.now } : {}),
  });
  t.teardown(() => store.close());
  return store;
}

/** Problems an engine's own check finds in its derived data (the model has none to check). */
async function problems(store: MailboxStore): Promise<string[]> {
  return store instanceof LmdbEngine ? store.lmdb.verify() : [];
}
/** The engine's own seq counter where it has one (not part of the contract). */
function lastSeqOf(store: MailboxStore): number | null {
  if (store instanceof LmdbEngine) return store.lmdb.lastSeq();
  if (store instanceof MemoryMailbox) return store.lastSeq();
  return null;
}

// ------------------------------------------------------------------ every engine

for (const name of TEST_ENGINES) {
  const skip = engineSkip(name);
  if (skip) {
    t.test(`${name}: the mailbox contract`, { skip }, () => {});
    continue;
  }
  const make = (t: Teardown, options: MakeOptions = {}): Promise<MailboxStore> => open(name, t, options);
  t.test(`${name}: add, read, ack, empty after`, async (t) => {
    const store = await make(t);
    const body = bytes(300, 5);
    const [o] = await enqueue(store, req({ body, storageKey: skey(9) }));
    const seq = seqOf(o);
    const got = (await store.read(A, 0, 10));
    t.equal(got.length, 1);
    t.equal(got[0]!.seq, seq);
    t.same(Buffer.from(got[0]!.body), Buffer.from(body));
    t.same(Buffer.from(got[0]!.sender), Buffer.from(S1));
    t.same(Buffer.from(got[0]!.storageKey!), Buffer.from(skey(9)));
    t.same(Buffer.from(got[0]!.wrappedKey), Buffer.from(bytes(48, 7)));
    t.equal(got[0]!.expiresAt - got[0]!.storedAt, 3600_000);
    t.same((await store.usage(A)), { count: 1, bytes: 300 + 48 }, 'bytes = body + wrapped key');
    t.same((await store.read(B, 0, 10)), [], 'other recipients see nothing');
    await store.ack(B, [seq]);
    t.equal((await store.read(A, 0, 10)).length, 1, "another recipient's ack deletes nothing");
    await store.ack(A, [seq, 999_999]);
    t.same((await store.read(A, 0, 10)), []);
    t.same((await store.usage(A)), { count: 0, bytes: 0 });
    t.same((await store.totals()), { count: 0, bytes: 0, recipients: 0 });
    t.equal((await store.bodyCount()), 0);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: the request is the caller's once accept() returns`, async (t) => {
    const store = await make(t);
    const body = Buffer.from(bytes(200, 3));
    const wrappedKey = Buffer.from(bytes(48, 7));
    const recipientKey = Buffer.from(A);
    const storageKey = Buffer.from(skey(4));
    const sender = Buffer.from(S1);
    const request = req({ sender, body, storageKey, recipients: [{ key: recipientKey, wrappedKey }] });
    const accepted = store.accept(request);
    // What the router does with a socket chunk's views: lets go of them, and the chunk may change.
    for (const b of [body, wrappedKey, recipientKey, storageKey, sender]) b.fill(0xee);
    request.recipients[0] = { key: B, wrappedKey: bytes(5) };
    t.equal(await accepted.settled, true, 'committed');
    t.equal(accepted.outcomes.length, 1);
    t.ok(accepted.outcomes[0]!.ok, 'stored');
    const [entry] = await store.read(A, 0, 10);
    t.ok(entry, 'stored for the recipient it named');
    t.same(Buffer.from(entry!.body), Buffer.from(bytes(200, 3)), 'its body as it was at accept()');
    t.same(Buffer.from(entry!.wrappedKey), Buffer.from(bytes(48, 7)));
    t.same(Buffer.from(entry!.storageKey!), Buffer.from(skey(4)));
    t.same(Buffer.from(entry!.sender), Buffer.from(S1));
    t.same(await store.read(B, 0, 10), [], 'nothing for a recipient put in after accept()');
  });

  t.test(`${name}: the requests of one turn share their commit`, async (t) => {
    const store = await make(t);
    const first = store.accept(req({ body: bytes(10) }));
    const second = store.accept(req({ body: bytes(11), to: [B] }));
    t.equal(first.settled, second.settled, 'one promise to wait on for both');
    t.same([await first.settled, await second.settled], [true, true]);
    const later = store.accept(req({ body: bytes(12), to: [C] }));
    t.equal(await later.settled, true, 'a request after that commit settles too');
    t.equal((await store.totals()).count, 3);
  });

  t.test(`${name}: insertion order and afterSeq/limit paging`, async (t) => {
    const store = await make(t);
    const seqs: number[] = [];
    for (let i = 0; i < 10; i++) seqs.push(seqOf((await enqueue(store, req({ body: bytes(10 + i, i) })))[0]));
    t.same((await store.read(A, 0, 100)).map((e) => e.seq), seqs);
    t.same(seqs, [...seqs].sort((a, b) => a - b), 'seqs increase');
    t.same((await store.read(A, seqs[3]!, 4)).map((e) => e.seq), seqs.slice(4, 8));
    t.same((await store.read(A, 0, 0)), []);
    t.same((await store.read(A, seqs[9]!, 10)), []);
    t.same((await store.read(A, 0, 100)).map((e) => e.body.length), [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
  });

  t.test(`${name}: storage-key replacement keeps only the newer body, at a new seq at the end`, async (t) => {
    const store = await make(t);
    const first = seqOf((await enqueue(store, req({ storageKey: skey(1), body: bytes(100, 1) })))[0]);
    const other = seqOf((await enqueue(store, req({ storageKey: null, body: bytes(50, 2) })))[0]);
    const second = seqOf((await enqueue(store, req({ storageKey: skey(1), body: bytes(70, 3) })))[0]);
    t.ok(second > other && other > first);
    const got = (await store.read(A, 0, 10));
    t.same(got.map((e) => e.seq), [other, second], 'one entry for the key, moved to the end');
    t.same(Buffer.from(got[1]!.body), Buffer.from(bytes(70, 3)));
    t.same((await store.usage(A)), { count: 2, bytes: 50 + 70 + 2 * 48 });
    t.equal((await store.bodyCount()), 2);

    // The recipient acknowledges the OLD version it had received: the replacement must survive.
    await store.ack(A, [first]);
    t.same((await store.read(A, 0, 10)).map((e) => e.seq), [other, second], 'ack of the replaced seq deletes nothing');
    await store.ack(A, [second]);
    t.same((await store.read(A, 0, 10)).map((e) => e.seq), [other]);
    // A new message with the key after the replacement was acked is a fresh entry.
    const third = seqOf((await enqueue(store, req({ storageKey: skey(1) })))[0]);
    t.same((await store.read(A, 0, 10)).map((e) => e.seq), [other, third]);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: the same storage key from two senders is kept apart`, async (t) => {
    const store = await make(t);
    const a = seqOf((await enqueue(store, req({ sender: S1, storageKey: skey(4), body: bytes(10, 1) })))[0]);
    const b = seqOf((await enqueue(store, req({ sender: S2, storageKey: skey(4), body: bytes(10, 2) })))[0]);
    t.same((await store.read(A, 0, 10)).map((e) => e.seq), [a, b]);
    const c = seqOf((await enqueue(store, req({ sender: S2, storageKey: skey(4), body: bytes(10, 3) })))[0]);
    const got = (await store.read(A, 0, 10));
    t.same(got.map((e) => e.seq), [a, c], "S2's message replaced only S2's");
    t.same(Buffer.from(got[0]!.sender), Buffer.from(S1));
    // ...and the same sender and key for another recipient is separate too
    const d = seqOf((await enqueue(store, req({ sender: S1, storageKey: skey(4), to: [B] })))[0]);
    t.same((await store.read(B, 0, 10)).map((e) => e.seq), [d]);
    t.same((await store.read(A, 0, 10)).map((e) => e.seq), [a, c]);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: count quota is exact at the boundary, replacement counts as freed`, async (t) => {
    const store = await make(t, { limits: { maxCountPerRecipient: 3 } });
    for (let i = 0; i < 3; i++) t.same(codes(await enqueue(store, req({ storageKey: skey(i) }))), ['ok']);
    t.same(codes(await enqueue(store, req({}))), ['QUOTA_COUNT'], 'the 4th is refused');
    t.same(codes(await enqueue(store, req({ storageKey: skey(1) }))), ['ok'], 'a replacement fits in a full mailbox');
    t.same(codes(await enqueue(store, req({ to: [B, A, C] }))), ['ok', 'QUOTA_COUNT', 'ok'], 'per recipient');
    t.same((await store.usage(A)).count, 3);
    store.setLimits({ maxCountPerRecipient: 4 });
    t.same(codes(await enqueue(store, req({}))), ['ok'], 'setLimits applies to later enqueues');
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: byte quota is exact at the boundary`, async (t) => {
    // each entry costs body + wrapped key = 100 + 48 = 148 bytes
    const store = await make(t, { limits: { maxBytesPerRecipient: 3 * 148 } });
    for (let i = 0; i < 2; i++) t.same(codes(await enqueue(store, req({}))), ['ok']);
    t.same(codes(await enqueue(store, req({ body: bytes(101) }))), ['QUOTA_BYTES'], 'one byte over');
    t.same(codes(await enqueue(store, req({ body: bytes(100), storageKey: skey(1) }))), ['ok'], 'exactly at the limit');
    t.same((await store.usage(A)).bytes, 3 * 148);
    t.same(codes(await enqueue(store, req({ body: bytes(0), recipients: [{ key: A, wrappedKey: new Uint8Array(0) }] }))), ['ok'], 'an empty entry costs 0');
    t.same(codes(await enqueue(store, req({ body: bytes(1), recipients: [{ key: A, wrappedKey: new Uint8Array(0) }] }))), ['QUOTA_BYTES']);
    t.same(codes(await enqueue(store, req({ body: bytes(100), storageKey: skey(1) }))), ['ok'], 'same-size replacement fits');
    t.same(codes(await enqueue(store, req({ body: bytes(101), storageKey: skey(1) }))), ['QUOTA_BYTES'], 'a larger one does not');
    t.same((await store.usage(A)), { count: 4, bytes: 3 * 148 });
  });

  t.test(`${name}: relay-wide bytes are exact at the boundary`, async (t) => {
    const store = await make(t, { limits: { maxTotalBytes: 3 * 148 } });
    t.same(codes(await enqueue(store, req({ to: [A, B] }))), ['ok', 'ok']);
    t.same(codes(await enqueue(store, req({ to: [C, A] }))), ['ok', 'STORE_FULL']);
    t.same((await store.totals()), { count: 3, bytes: 3 * 148, recipients: 3 });
    t.same(codes(await enqueue(store, req({ to: [B], body: bytes(0), recipients: [{ key: B, wrappedKey: new Uint8Array(0) }] }))), ['ok']);
    t.same(codes(await enqueue(store, req({ to: [B], body: bytes(1), recipients: [{ key: B, wrappedKey: new Uint8Array(0) }] }))), ['STORE_FULL']);
    const seq = (await store.read(C, 0, 1))[0]!.seq;
    await store.ack(C, [seq]);
    t.same(codes(await enqueue(store, req({ to: [C] }))), ['ok'], 'freed space is reusable');
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: TTL limit and validation`, async (t) => {
    const store = await make(t, { limits: { maxTtlSeconds: 100 } });
    const req = (partial: Partial<EnqueueRequest> & { to?: Uint8Array[] }): EnqueueRequest => reqDefault({ ttlSeconds: 50, ...partial });
    t.same(codes(await enqueue(store, req({ ttlSeconds: 100 }))), ['ok'], 'exactly the maximum');
    t.same(codes(await enqueue(store, req({ ttlSeconds: 101, to: [A, B] }))), ['TTL_TOO_LONG', 'TTL_TOO_LONG']);
    t.same(codes(await enqueue(store, req({ ttlSeconds: 0 }))), ['STORE_ERROR']);
    t.same(codes(await enqueue(store, req({ ttlSeconds: Number.NaN }))), ['STORE_ERROR']);
    t.same(codes(await enqueue(store, req({ sender: new Uint8Array(31) }))), ['STORE_ERROR']);
    t.same(codes(await enqueue(store, req({ storageKey: new Uint8Array(15) }))), ['STORE_ERROR']);
    t.same(codes(await enqueue(store, req({ recipients: [{ key: new Uint8Array(33), wrappedKey: bytes(1) }, { key: B, wrappedKey: bytes(256) }, { key: C, wrappedKey: bytes(255) }] }))),
      ['STORE_ERROR', 'STORE_ERROR', 'ok']);
    t.same(await enqueue(store, req({ recipients: [] })), []);
  });

  t.test(`${name}: 102 messages read and acked in order, in batches; the store ends empty`, async (t) => {
    const store = await make(t);
    const sent: number[] = [];
    const pending: Promise<EnqueueOutcome[]>[] = [];
    for (let i = 0; i < 102; i++) pending.push(enqueue(store, req({ body: bytes(64 + i, i) })));
    for (const p of pending) sent.push(seqOf((await p)[0]));
    t.same(sent, [...sent].sort((a, b) => a - b), 'concurrent enqueues keep call order');
    const received: number[] = [];
    let after = 0;
    for (;;) {
      const batch = (await store.read(A, after, 10));
      if (batch.length === 0) break;
      for (const e of batch) t.equal(e.body.length, 64 + received.length + batch.indexOf(e));
      received.push(...batch.map((e) => e.seq));
      after = batch[batch.length - 1]!.seq;
      await store.ack(A, batch.map((e) => e.seq));
    }
    t.same(received, sent);
    t.same((await store.read(A, 0, 1000)), []);
    t.same((await store.totals()), { count: 0, bytes: 0, recipients: 0 });
    t.equal((await store.bodyCount()), 0);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: concurrent enqueues that have not committed are counted exactly`, async (t) => {
    const store = await make(t, { limits: { maxCountPerRecipient: 10, maxBytesPerRecipient: 1_000_000 } });
    const all = await Promise.all(Array.from({ length: 25 }, (_, i) => enqueue(store, req({ body: bytes(10, i) }))));
    t.same(all.map((o) => codes(o)[0]), [...Array(10).fill('ok'), ...Array(15).fill('QUOTA_COUNT')]);
    // replacements in flight at once: each sees the one before it
    const reps = await Promise.all(Array.from({ length: 5 }, (_, i) => enqueue(store, req({ to: [B], storageKey: skey(3), body: bytes(10 + i) }))));
    t.same(reps.map((o) => codes(o)[0]), ['ok', 'ok', 'ok', 'ok', 'ok']);
    const got = (await store.read(B, 0, 10));
    t.same(got.map((e) => e.seq), [seqOf(reps[4]![0])], 'only the last replacement remains');
    t.equal(got[0]!.body.length, 14);
    t.same((await store.usage(B)), { count: 1, bytes: 14 + 48 });
    // acks in flight at once, including duplicates
    const seqs = (await store.read(A, 0, 100)).map((e) => e.seq);
    const acks = [store.ack(A, seqs.slice(0, 6)), store.ack(A, seqs.slice(3, 8))];
    t.same((await store.read(A, 0, 100)).map((e) => e.seq), seqs.slice(8), 'acked entries vanish from read() before the commit');
    t.same((await store.usage(A)), { count: 2, bytes: 2 * 58 });
    acks.push(store.ack(A, seqs));
    await Promise.all(acks);
    t.same((await store.usage(A)), { count: 0, bytes: 0 });
    if (lastSeqOf(store) !== null) t.equal(lastSeqOf(store), seqOf(reps[4]![0]), 'refused recipients take no seq');
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: a recipient listed twice`, async (t) => {
    const store = await make(t);
    const plain = await enqueue(store, req({ to: [A, A] }));
    t.same(codes(plain), ['ok', 'ok'], 'without a storage key: two entries');
    const keyed = await enqueue(store, req({ to: [B, B, C], storageKey: skey(2), body: bytes(40) }));
    t.same(codes(keyed), ['ok', 'ok', 'ok']);
    t.same((await store.read(B, 0, 10)).map((e) => e.seq), [seqOf(keyed[1])], 'with one: the second replaces the first');
    t.same((await store.usage(B)), { count: 1, bytes: 40 + 48 });
    t.equal((await store.bodyCount()), 2, 'the shared body of the first pair, and the keyed one');
    await store.ack(B, [seqOf(keyed[1])]);
    await store.ack(C, [seqOf(keyed[2])]);
    t.equal((await store.bodyCount()), 1);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: a body shared by 3 recipients is stored once and released by the last ack`, async (t) => {
    const store = await make(t);
    const out = await enqueue(store, req({ to: [A, B, C], body: bytes(5000, 3) }));
    t.same(codes(out), ['ok', 'ok', 'ok']);
    t.equal((await store.bodyCount()), 1);
    t.same((await store.totals()), { count: 3, bytes: 3 * (5000 + 48), recipients: 3 });
    for (const [i, k] of [A, B, C].entries()) {
      const [e] = (await store.read(k, 0, 10));
      t.same(Buffer.from(e!.body), Buffer.from(bytes(5000, 3)));
      await store.ack(k, [seqOf(out[i])]);
      t.equal((await store.bodyCount()), i < 2 ? 1 : 0, `after ${i + 1} acks`);
      t.same(await problems(store), [], 'derived data agrees with the entries');
    }
  });

  t.test(`${name}: removal by age with an injected clock`, async (t) => {
    const clock = { now: 1_000_000 };
    const store = await make(t, { clock });
    const old = seqOf((await enqueue(store, req({ to: [A] })))[0]);
    clock.now += 10_000;
    const mid = await enqueue(store, req({ to: [A, B] }));
    clock.now += 10_000;
    const young = seqOf((await enqueue(store, req({ to: [B] })))[0]);
    t.equal(await store.removeOlderThan(10_001), 1, 'strictly older than the age');
    t.same((await store.read(A, 0, 10)).map((e) => e.seq), [seqOf(mid[0])]);
    t.not(old, seqOf(mid[0]));
    t.equal(await store.removeOlderThan(10_000), 0, 'storedAt < now - age: not equal');
    t.equal(await store.removeOlderThan(9_999), 2);
    t.same((await store.read(B, 0, 10)).map((e) => e.seq), [young]);
    t.equal(await store.removeOlderThan(0, clock.now + 1), 1, 'explicit now');
    t.same((await store.totals()), { count: 0, bytes: 0, recipients: 0 });
    t.equal((await store.bodyCount()), 0);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: expiry: read skips expired entries, the sweep removes them and frees usage and bodies`, async (t) => {
    const clock = { now: 5_000_000 };
    const store = await make(t, { clock });
    const short = await enqueue(store, req({ to: [A, B], ttlSeconds: 10, body: bytes(200) }));
    const long = seqOf((await enqueue(store, req({ to: [A], ttlSeconds: 20 })))[0]);
    t.equal((await store.bodyCount()), 2);
    clock.now += 9_999;
    t.equal((await store.read(A, 0, 10)).length, 2, 'not yet');
    clock.now += 1;
    t.same((await store.read(A, 0, 10)).map((e) => e.seq), [long], 'expired at storedAt + ttl');
    t.same((await store.read(B, 0, 10)), []);
    t.same((await store.usage(A)).count, 2, 'usage still counts it until the sweep');
    t.equal(await store.sweepExpired(), 2);
    t.same((await store.usage(A)), { count: 1, bytes: 148 });
    t.same((await store.usage(B)), { count: 0, bytes: 0 });
    t.equal((await store.bodyCount()), 1, 'the shared body is gone');
    t.equal(await store.sweepExpired(), 0);
    t.equal(await store.sweepExpired(clock.now + 10_000), 1, 'explicit now');
    t.same((await store.totals()), { count: 0, bytes: 0, recipients: 0 });
    t.equal((await store.bodyCount()), 0);
    t.ok(seqOf(short[0]) < long);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: removeRecipient, top and totals`, async (t) => {
    const store = await make(t);
    await enqueue(store, req({ to: [A, B, C], body: bytes(100) }));
    await enqueue(store, req({ to: [B], body: bytes(500) }));
    await enqueue(store, req({ to: [C], body: bytes(200) }));
    t.same((await store.top(2)).map((u) => [Buffer.from(u.recipient).toString('hex'), u.count, u.bytes]), [
      [Buffer.from(B).toString('hex'), 2, 600 + 96],
      [Buffer.from(C).toString('hex'), 2, 300 + 96],
    ]);
    t.same((await store.top(10)).length, 3);
    t.equal(await store.removeRecipient(B), 2);
    t.equal(await store.removeRecipient(B), 0);
    t.same((await store.usage(B)), { count: 0, bytes: 0 });
    t.same((await store.totals()), { count: 3, bytes: 100 + 300 + 3 * 48, recipients: 2 });
    t.equal((await store.bodyCount()), 2, 'the shared body is kept for A and C');
    t.same((await store.top(1)).map((u) => u.count), [2]);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });
}

