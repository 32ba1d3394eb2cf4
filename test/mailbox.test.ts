import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { open } from 'lmdb';
import type { EnqueueOutcome, EnqueueRequest, MailboxLimits, MailboxStore } from '../src/store/mailbox.js';
import { MemoryMailbox } from '../src/store/memory-mailbox.js';
import { openLmdbMailbox, type LmdbMailboxStore } from '../src/store/lmdb/mailbox.js';

// ------------------------------------------------------------------ helpers

function key(n: number, fill = 0): Uint8Array {
  const k = new Uint8Array(32).fill(fill);
  k[0] = n >> 8;
  k[1] = n & 0xff;
  return k;
}
function skey(n: number): Uint8Array {
  return new Uint8Array(16).fill(n);
}
function bytes(n: number, seed = 1): Uint8Array {
  return new Uint8Array(n).map((_, i) => (i * 31 + seed) & 0xff);
}
const A = key(1);
const B = key(2);
const C = key(3);
const S1 = key(101);
const S2 = key(102);

const reqDefault = (partial: Partial<EnqueueRequest> & { to?: Uint8Array[] }): EnqueueRequest => req(partial);
function req(partial: Partial<EnqueueRequest> & { to?: Uint8Array[] }): EnqueueRequest {
  const { to, ...rest } = partial;
  return {
    sender: S1,
    storageKey: null,
    ttlSeconds: 3600,
    body: bytes(100),
    recipients: (to ?? [A]).map((k) => ({ key: k, wrappedKey: bytes(48, 7) })),
    ...rest,
  };
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

function tempDir(t: Teardown): string {
  const dir = mkdtempSync(join(tmpdir(), 'pulltab-mailbox-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Clock {
  now: number;
}

type Make = (t: Teardown, options?: { limits?: Partial<MailboxLimits>; clock?: Clock; dir?: string }) => MailboxStore;

const makeLmdb = (t: Teardown, options: { limits?: Partial<MailboxLimits>; clock?: Clock; dir?: string } = {}): LmdbMailboxStore => {
  const clock = options.clock;
  const store = openLmdbMailbox({
    path: options.dir ?? tempDir(t),
    sweepIntervalMs: 0,
    ...(options.limits ? { limits: options.limits } : {}),
    ...(clock ? { now: () => clock.now } : {}),
  });
  t.teardown(() => store.close());
  return store;
};
const makeMemory: Make = (_t, options = {}) => {
  const clock = options.clock;
  return new MemoryMailbox({ ...(options.limits ? { limits: options.limits } : {}), ...(clock ? { now: () => clock.now } : {}) });
};
const impls: Array<[string, Make]> = [['lmdb', makeLmdb], ['memory', makeMemory]];

function seqOf(o: EnqueueOutcome | undefined): number {
  if (!o || !o.ok) throw new Error(`expected ok, got ${JSON.stringify(o)}`);
  return o.seq;
}
function codes(outcomes: EnqueueOutcome[]): string[] {
  return outcomes.map((o) => (o.ok ? 'ok' : o.code));
}
/** Problems verify() finds in an LMDB store's derived data (always none for the model). */
async function problems(store: MailboxStore): Promise<string[]> {
  return 'verify' in store ? (store as LmdbMailboxStore).verify() : [];
}

// ------------------------------------------------------------------ both implementations

for (const [name, make] of impls) {
  t.test(`${name}: add, read, ack, empty after`, async (t) => {
    const store = make(t);
    const body = bytes(300, 5);
    const [o] = await store.enqueue(req({ body, storageKey: skey(9) }));
    const seq = seqOf(o);
    const got = store.read(A, 0, 10);
    t.equal(got.length, 1);
    t.equal(got[0]!.seq, seq);
    t.same(Buffer.from(got[0]!.body), Buffer.from(body));
    t.same(Buffer.from(got[0]!.sender), Buffer.from(S1));
    t.same(Buffer.from(got[0]!.storageKey!), Buffer.from(skey(9)));
    t.same(Buffer.from(got[0]!.wrappedKey), Buffer.from(bytes(48, 7)));
    t.equal(got[0]!.expiresAt - got[0]!.storedAt, 3600_000);
    t.same(store.usage(A), { count: 1, bytes: 300 + 48 }, 'bytes = body + wrapped key');
    t.same(store.read(B, 0, 10), [], 'other recipients see nothing');
    await store.ack(B, [seq]);
    t.equal(store.read(A, 0, 10).length, 1, "another recipient's ack deletes nothing");
    await store.ack(A, [seq, 999_999]);
    t.same(store.read(A, 0, 10), []);
    t.same(store.usage(A), { count: 0, bytes: 0 });
    t.same(store.totals(), { count: 0, bytes: 0, recipients: 0 });
    t.equal(store.bodyCount(), 0);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: insertion order and afterSeq/limit paging`, async (t) => {
    const store = make(t);
    const seqs: number[] = [];
    for (let i = 0; i < 10; i++) seqs.push(seqOf((await store.enqueue(req({ body: bytes(10 + i, i) })))[0]));
    t.same(store.read(A, 0, 100).map((e) => e.seq), seqs);
    t.same(seqs, [...seqs].sort((a, b) => a - b), 'seqs increase');
    t.same(store.read(A, seqs[3]!, 4).map((e) => e.seq), seqs.slice(4, 8));
    t.same(store.read(A, 0, 0), []);
    t.same(store.read(A, seqs[9]!, 10), []);
    t.same(store.read(A, 0, 100).map((e) => e.body.length), [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
  });

  t.test(`${name}: storage-key replacement keeps only the newer body, at a new seq at the end`, async (t) => {
    const store = make(t);
    const first = seqOf((await store.enqueue(req({ storageKey: skey(1), body: bytes(100, 1) })))[0]);
    const other = seqOf((await store.enqueue(req({ storageKey: null, body: bytes(50, 2) })))[0]);
    const second = seqOf((await store.enqueue(req({ storageKey: skey(1), body: bytes(70, 3) })))[0]);
    t.ok(second > other && other > first);
    const got = store.read(A, 0, 10);
    t.same(got.map((e) => e.seq), [other, second], 'one entry for the key, moved to the end');
    t.same(Buffer.from(got[1]!.body), Buffer.from(bytes(70, 3)));
    t.same(store.usage(A), { count: 2, bytes: 50 + 70 + 2 * 48 });
    t.equal(store.bodyCount(), 2);

    // The recipient acknowledges the OLD version it had received: the replacement must survive.
    await store.ack(A, [first]);
    t.same(store.read(A, 0, 10).map((e) => e.seq), [other, second], 'ack of the replaced seq deletes nothing');
    await store.ack(A, [second]);
    t.same(store.read(A, 0, 10).map((e) => e.seq), [other]);
    // A new message with the key after the replacement was acked is a fresh entry.
    const third = seqOf((await store.enqueue(req({ storageKey: skey(1) })))[0]);
    t.same(store.read(A, 0, 10).map((e) => e.seq), [other, third]);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: the same storage key from two senders is kept apart`, async (t) => {
    const store = make(t);
    const a = seqOf((await store.enqueue(req({ sender: S1, storageKey: skey(4), body: bytes(10, 1) })))[0]);
    const b = seqOf((await store.enqueue(req({ sender: S2, storageKey: skey(4), body: bytes(10, 2) })))[0]);
    t.same(store.read(A, 0, 10).map((e) => e.seq), [a, b]);
    const c = seqOf((await store.enqueue(req({ sender: S2, storageKey: skey(4), body: bytes(10, 3) })))[0]);
    const got = store.read(A, 0, 10);
    t.same(got.map((e) => e.seq), [a, c], "S2's message replaced only S2's");
    t.same(Buffer.from(got[0]!.sender), Buffer.from(S1));
    // ...and the same sender and key for another recipient is separate too
    const d = seqOf((await store.enqueue(req({ sender: S1, storageKey: skey(4), to: [B] })))[0]);
    t.same(store.read(B, 0, 10).map((e) => e.seq), [d]);
    t.same(store.read(A, 0, 10).map((e) => e.seq), [a, c]);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: count quota is exact at the boundary, replacement counts as freed`, async (t) => {
    const store = make(t, { limits: { maxCountPerRecipient: 3 } });
    for (let i = 0; i < 3; i++) t.same(codes(await store.enqueue(req({ storageKey: skey(i) }))), ['ok']);
    t.same(codes(await store.enqueue(req({}))), ['QUOTA_COUNT'], 'the 4th is refused');
    t.same(codes(await store.enqueue(req({ storageKey: skey(1) }))), ['ok'], 'a replacement fits in a full mailbox');
    t.same(codes(await store.enqueue(req({ to: [B, A, C] }))), ['ok', 'QUOTA_COUNT', 'ok'], 'per recipient');
    t.same(store.usage(A).count, 3);
    store.setLimits({ maxCountPerRecipient: 4 });
    t.same(codes(await store.enqueue(req({}))), ['ok'], 'setLimits applies to later enqueues');
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: byte quota is exact at the boundary`, async (t) => {
    // each entry costs body + wrapped key = 100 + 48 = 148 bytes
    const store = make(t, { limits: { maxBytesPerRecipient: 3 * 148 } });
    for (let i = 0; i < 2; i++) t.same(codes(await store.enqueue(req({}))), ['ok']);
    t.same(codes(await store.enqueue(req({ body: bytes(101) }))), ['QUOTA_BYTES'], 'one byte over');
    t.same(codes(await store.enqueue(req({ body: bytes(100), storageKey: skey(1) }))), ['ok'], 'exactly at the limit');
    t.same(store.usage(A).bytes, 3 * 148);
    t.same(codes(await store.enqueue(req({ body: bytes(0), recipients: [{ key: A, wrappedKey: new Uint8Array(0) }] }))), ['ok'], 'an empty entry costs 0');
    t.same(codes(await store.enqueue(req({ body: bytes(1), recipients: [{ key: A, wrappedKey: new Uint8Array(0) }] }))), ['QUOTA_BYTES']);
    t.same(codes(await store.enqueue(req({ body: bytes(100), storageKey: skey(1) }))), ['ok'], 'same-size replacement fits');
    t.same(codes(await store.enqueue(req({ body: bytes(101), storageKey: skey(1) }))), ['QUOTA_BYTES'], 'a larger one does not');
    t.same(store.usage(A), { count: 4, bytes: 3 * 148 });
  });

  t.test(`${name}: relay-wide bytes are exact at the boundary`, async (t) => {
    const store = make(t, { limits: { maxTotalBytes: 3 * 148 } });
    t.same(codes(await store.enqueue(req({ to: [A, B] }))), ['ok', 'ok']);
    t.same(codes(await store.enqueue(req({ to: [C, A] }))), ['ok', 'STORE_FULL']);
    t.same(store.totals(), { count: 3, bytes: 3 * 148, recipients: 3 });
    t.same(codes(await store.enqueue(req({ to: [B], body: bytes(0), recipients: [{ key: B, wrappedKey: new Uint8Array(0) }] }))), ['ok']);
    t.same(codes(await store.enqueue(req({ to: [B], body: bytes(1), recipients: [{ key: B, wrappedKey: new Uint8Array(0) }] }))), ['STORE_FULL']);
    const seq = store.read(C, 0, 1)[0]!.seq;
    await store.ack(C, [seq]);
    t.same(codes(await store.enqueue(req({ to: [C] }))), ['ok'], 'freed space is reusable');
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: TTL limit and validation`, async (t) => {
    const store = make(t, { limits: { maxTtlSeconds: 100 } });
    const req = (partial: Partial<EnqueueRequest> & { to?: Uint8Array[] }): EnqueueRequest => reqDefault({ ttlSeconds: 50, ...partial });
    t.same(codes(await store.enqueue(req({ ttlSeconds: 100 }))), ['ok'], 'exactly the maximum');
    t.same(codes(await store.enqueue(req({ ttlSeconds: 101, to: [A, B] }))), ['TTL_TOO_LONG', 'TTL_TOO_LONG']);
    t.same(codes(await store.enqueue(req({ ttlSeconds: 0 }))), ['STORE_ERROR']);
    t.same(codes(await store.enqueue(req({ ttlSeconds: Number.NaN }))), ['STORE_ERROR']);
    t.same(codes(await store.enqueue(req({ sender: new Uint8Array(31) }))), ['STORE_ERROR']);
    t.same(codes(await store.enqueue(req({ storageKey: new Uint8Array(15) }))), ['STORE_ERROR']);
    t.same(codes(await store.enqueue(req({ recipients: [{ key: new Uint8Array(33), wrappedKey: bytes(1) }, { key: B, wrappedKey: bytes(256) }, { key: C, wrappedKey: bytes(255) }] }))),
      ['STORE_ERROR', 'STORE_ERROR', 'ok']);
    t.same(await store.enqueue(req({ recipients: [] })), []);
  });

  t.test(`${name}: 102 messages read and acked in order, in batches; the store ends empty`, async (t) => {
    const store = make(t);
    const sent: number[] = [];
    const pending: Promise<EnqueueOutcome[]>[] = [];
    for (let i = 0; i < 102; i++) pending.push(store.enqueue(req({ body: bytes(64 + i, i) })));
    for (const p of pending) sent.push(seqOf((await p)[0]));
    t.same(sent, [...sent].sort((a, b) => a - b), 'concurrent enqueues keep call order');
    const received: number[] = [];
    let after = 0;
    for (;;) {
      const batch = store.read(A, after, 10);
      if (batch.length === 0) break;
      for (const e of batch) t.equal(e.body.length, 64 + received.length + batch.indexOf(e));
      received.push(...batch.map((e) => e.seq));
      after = batch[batch.length - 1]!.seq;
      await store.ack(A, batch.map((e) => e.seq));
    }
    t.same(received, sent);
    t.same(store.read(A, 0, 1000), []);
    t.same(store.totals(), { count: 0, bytes: 0, recipients: 0 });
    t.equal(store.bodyCount(), 0);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: concurrent enqueues that have not committed are counted exactly`, async (t) => {
    const store = make(t, { limits: { maxCountPerRecipient: 10, maxBytesPerRecipient: 1_000_000 } });
    const all = await Promise.all(Array.from({ length: 25 }, (_, i) => store.enqueue(req({ body: bytes(10, i) }))));
    t.same(all.map((o) => codes(o)[0]), [...Array(10).fill('ok'), ...Array(15).fill('QUOTA_COUNT')]);
    // replacements in flight at once: each sees the one before it
    const reps = await Promise.all(Array.from({ length: 5 }, (_, i) => store.enqueue(req({ to: [B], storageKey: skey(3), body: bytes(10 + i) }))));
    t.same(reps.map((o) => codes(o)[0]), ['ok', 'ok', 'ok', 'ok', 'ok']);
    const got = store.read(B, 0, 10);
    t.same(got.map((e) => e.seq), [seqOf(reps[4]![0])], 'only the last replacement remains');
    t.equal(got[0]!.body.length, 14);
    t.same(store.usage(B), { count: 1, bytes: 14 + 48 });
    // acks in flight at once, including duplicates
    const seqs = store.read(A, 0, 100).map((e) => e.seq);
    const acks = [store.ack(A, seqs.slice(0, 6)), store.ack(A, seqs.slice(3, 8))];
    t.same(store.read(A, 0, 100).map((e) => e.seq), seqs.slice(8), 'acked entries vanish from read() before the commit');
    t.same(store.usage(A), { count: 2, bytes: 2 * 58 });
    acks.push(store.ack(A, seqs));
    await Promise.all(acks);
    t.same(store.usage(A), { count: 0, bytes: 0 });
    t.equal(store.lastSeq(), seqOf(reps[4]![0]));
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: a recipient listed twice`, async (t) => {
    const store = make(t);
    const plain = await store.enqueue(req({ to: [A, A] }));
    t.same(codes(plain), ['ok', 'ok'], 'without a storage key: two entries');
    const keyed = await store.enqueue(req({ to: [B, B, C], storageKey: skey(2), body: bytes(40) }));
    t.same(codes(keyed), ['ok', 'ok', 'ok']);
    t.same(store.read(B, 0, 10).map((e) => e.seq), [seqOf(keyed[1])], 'with one: the second replaces the first');
    t.same(store.usage(B), { count: 1, bytes: 40 + 48 });
    t.equal(store.bodyCount(), 2, 'the shared body of the first pair, and the keyed one');
    await store.ack(B, [seqOf(keyed[1])]);
    await store.ack(C, [seqOf(keyed[2])]);
    t.equal(store.bodyCount(), 1);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: a body shared by 3 recipients is stored once and released by the last ack`, async (t) => {
    const store = make(t);
    const out = await store.enqueue(req({ to: [A, B, C], body: bytes(5000, 3) }));
    t.same(codes(out), ['ok', 'ok', 'ok']);
    t.equal(store.bodyCount(), 1);
    t.same(store.totals(), { count: 3, bytes: 3 * (5000 + 48), recipients: 3 });
    for (const [i, k] of [A, B, C].entries()) {
      const [e] = store.read(k, 0, 10);
      t.same(Buffer.from(e!.body), Buffer.from(bytes(5000, 3)));
      await store.ack(k, [seqOf(out[i])]);
      t.equal(store.bodyCount(), i < 2 ? 1 : 0, `after ${i + 1} acks`);
      t.same(await problems(store), [], 'derived data agrees with the entries');
    }
  });

  t.test(`${name}: removal by age with an injected clock`, async (t) => {
    const clock = { now: 1_000_000 };
    const store = make(t, { clock });
    const old = seqOf((await store.enqueue(req({ to: [A] })))[0]);
    clock.now += 10_000;
    const mid = await store.enqueue(req({ to: [A, B] }));
    clock.now += 10_000;
    const young = seqOf((await store.enqueue(req({ to: [B] })))[0]);
    t.equal(await store.removeOlderThan(10_001), 1, 'strictly older than the age');
    t.same(store.read(A, 0, 10).map((e) => e.seq), [seqOf(mid[0])]);
    t.not(old, seqOf(mid[0]));
    t.equal(await store.removeOlderThan(10_000), 0, 'storedAt < now - age: not equal');
    t.equal(await store.removeOlderThan(9_999), 2);
    t.same(store.read(B, 0, 10).map((e) => e.seq), [young]);
    t.equal(await store.removeOlderThan(0, clock.now + 1), 1, 'explicit now');
    t.same(store.totals(), { count: 0, bytes: 0, recipients: 0 });
    t.equal(store.bodyCount(), 0);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: expiry: read skips expired entries, the sweep removes them and frees usage and bodies`, async (t) => {
    const clock = { now: 5_000_000 };
    const store = make(t, { clock });
    const short = await store.enqueue(req({ to: [A, B], ttlSeconds: 10, body: bytes(200) }));
    const long = seqOf((await store.enqueue(req({ to: [A], ttlSeconds: 20 })))[0]);
    t.equal(store.bodyCount(), 2);
    clock.now += 9_999;
    t.equal(store.read(A, 0, 10).length, 2, 'not yet');
    clock.now += 1;
    t.same(store.read(A, 0, 10).map((e) => e.seq), [long], 'expired at storedAt + ttl');
    t.same(store.read(B, 0, 10), []);
    t.same(store.usage(A).count, 2, 'usage still counts it until the sweep');
    t.equal(await store.sweepExpired(), 2);
    t.same(store.usage(A), { count: 1, bytes: 148 });
    t.same(store.usage(B), { count: 0, bytes: 0 });
    t.equal(store.bodyCount(), 1, 'the shared body is gone');
    t.equal(await store.sweepExpired(), 0);
    t.equal(await store.sweepExpired(clock.now + 10_000), 1, 'explicit now');
    t.same(store.totals(), { count: 0, bytes: 0, recipients: 0 });
    t.equal(store.bodyCount(), 0);
    t.ok(seqOf(short[0]) < long);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });

  t.test(`${name}: removeRecipient, top and totals`, async (t) => {
    const store = make(t);
    await store.enqueue(req({ to: [A, B, C], body: bytes(100) }));
    await store.enqueue(req({ to: [B], body: bytes(500) }));
    await store.enqueue(req({ to: [C], body: bytes(200) }));
    t.same(store.top(2).map((u) => [Buffer.from(u.recipient).toString('hex'), u.count, u.bytes]), [
      [Buffer.from(B).toString('hex'), 2, 600 + 96],
      [Buffer.from(C).toString('hex'), 2, 300 + 96],
    ]);
    t.same(store.top(10).length, 3);
    t.equal(await store.removeRecipient(B), 2);
    t.equal(await store.removeRecipient(B), 0);
    t.same(store.usage(B), { count: 0, bytes: 0 });
    t.same(store.totals(), { count: 3, bytes: 100 + 300 + 3 * 48, recipients: 2 });
    t.equal(store.bodyCount(), 2, 'the shared body is kept for A and C');
    t.same(store.top(1).map((u) => u.count), [2]);
    t.same(await problems(store), [], 'derived data agrees with the entries');
  });
}

// ------------------------------------------------------------------ LMDB only

t.test('lmdb: reopen keeps entries, usage, bodies and the seq counter', async (t) => {
  const dir = tempDir(t);
  const clock = { now: 7_000_000 };
  const first = openLmdbMailbox({ path: dir, sweepIntervalMs: 0, now: () => clock.now });
  await first.ready;
  const a = await first.enqueue(req({ to: [A, B], storageKey: skey(1), body: bytes(3000) }));
  const b = await first.enqueue(req({ to: [A], ttlSeconds: 5 }));
  const c = await first.enqueue(req({ to: [C] }));
  await first.ack(C, [seqOf(c[0])]);
  const usageBefore = first.usage(A);
  const totalsBefore = first.totals();
  await first.close();
  t.throws(() => first.read(A, 0, 1), /closed/);
  t.same(codes(await first.enqueue(req({}))), ['STORE_ERROR'], 'enqueue after close is refused, never thrown');

  const second = openLmdbMailbox({ path: dir, sweepIntervalMs: 0, now: () => clock.now });
  t.teardown(() => second.close());
  await second.ready;
  t.same(second.usage(A), usageBefore);
  t.same(second.totals(), totalsBefore);
  t.same(second.read(A, 0, 10).map((e) => e.seq), [seqOf(a[0]), seqOf(b[0])]);
  t.same(Buffer.from(second.read(B, 0, 10)[0]!.body), Buffer.from(bytes(3000)));
  t.equal(second.bodyCount(), 2);
  const d = seqOf((await second.enqueue(req({ to: [A] })))[0]);
  t.equal(d, seqOf(c[0]) + 1, 'the counter continues after the acked seq: never reused');
  // replacement across a restart
  const e = await second.enqueue(req({ to: [A], storageKey: skey(1), body: bytes(10) }));
  t.same(second.read(A, 0, 10).map((x) => x.seq), [seqOf(b[0]), d, seqOf(e[0])]);
  await second.ack(A, [seqOf(a[0])]);
  t.equal(second.read(A, 0, 10).length, 3, 'ack of the pre-restart version leaves the replacement');
  t.same(await second.verify(), []);
  await second.close();

  // expired while closed: the sweep at open removes it
  clock.now += 6_000;
  const third = openLmdbMailbox({ path: dir, sweepIntervalMs: 0, now: () => clock.now });
  t.teardown(() => third.close());
  await third.ready;
  t.same(third.read(A, 0, 10).map((x) => x.seq), [d, seqOf(e[0])]);
  t.equal(third.usage(A).count, 2, 'swept at open');
  t.same(await third.verify(), []);
});

t.test('lmdb: expiry marks are one per recipient and minute, and go once their minute has passed', async (t) => {
  const dir = tempDir(t);
  const clock = { now: 60_000 * 1000 + 30_000 };
  const store = openLmdbMailbox({ path: dir, sweepIntervalMs: 0, now: () => clock.now });
  t.teardown(() => store.close());
  await store.ready;
  // 50 messages to A expiring in the same minute, 1 to B, and 1 to A a minute later.
  await Promise.all(Array.from({ length: 50 }, () => store.enqueue(req({ to: [A], ttlSeconds: 10 }))));
  await store.enqueue(req({ to: [B], ttlSeconds: 10 }));
  await store.enqueue(req({ to: [A], ttlSeconds: 70 }));
  await store.idle();
  const env = open<Buffer, Buffer>({ path: dir, maxDbs: 16, keyEncoding: 'binary', encoding: 'binary' });
  t.teardown(() => env.close());
  const markDb = env.openDB<Buffer, Buffer>({ name: 'marks', keyEncoding: 'binary', encoding: 'binary' });
  // A second handle on the environment: read the latest committed snapshot each time.
  const marks = { getKeysCount: (range: object) => { markDb.resetReadTxn(); return markDb.getKeysCount(range); } };
  t.equal(marks.getKeysCount({}), 3, 'A this minute, B this minute, A next minute');
  clock.now += 10_000;
  t.equal(await store.sweepExpired(), 51, 'both recipients swept although their minute has not ended');
  t.equal(marks.getKeysCount({}), 3, 'a mark stays while its minute lasts');
  clock.now += 30_000;
  t.equal(await store.sweepExpired(), 0);
  t.equal(marks.getKeysCount({}), 1, 'marks of a past minute are deleted');
  t.same(store.usage(A).count, 1);
  clock.now += 60_000;
  t.equal(await store.sweepExpired(), 1);
  t.equal(marks.getKeysCount({}), 0);
  // A new message in a minute whose mark was deleted gets its mark again.
  await store.enqueue(req({ to: [A], ttlSeconds: 10 }));
  await store.idle();
  t.equal(marks.getKeysCount({}), 1);
  t.same(await store.verify(), []);
});

t.test('lmdb: a format-1 store (one expiry key per entry) is migrated at open', async (t) => {
  const dir = tempDir(t);
  const clock = { now: 9_000_000 };
  const first = openLmdbMailbox({ path: dir, sweepIntervalMs: 0, now: () => clock.now });
  await first.ready;
  const kept = seqOf((await first.enqueue(req({ to: [A], ttlSeconds: 3600 })))[0]);
  await first.enqueue(req({ to: [A, B], ttlSeconds: 10, storageKey: skey(4) }));
  await first.close();
  // Turn it into what format 1 wrote: an `expiry` key per entry, no marks, format 1.
  const env = open<Buffer, Buffer>({ path: dir, maxDbs: 16, keyEncoding: 'binary', encoding: 'binary' });
  const db = (name: string) => env.openDB<Buffer, Buffer>({ name, keyEncoding: 'binary', encoding: 'binary' });
  const marks = db('marks');
  const expiry = db('expiry');
  for (const mark of [...marks.getKeys({})]) await marks.remove(mark);
  for (const { key: k, value } of db('entries').getRange({})) {
    const old = Buffer.alloc(48);
    value.copy(old, 0, 16, 24);
    k.copy(old, 8, 0, 40);
    await expiry.put(old, Buffer.alloc(0));
  }
  await db('meta').put(Buffer.from('format'), Buffer.from([0, 0, 0, 1]));
  t.equal(expiry.getKeysCount({}), 3);
  await env.close();

  const second = openLmdbMailbox({ path: dir, sweepIntervalMs: 0, now: () => clock.now });
  t.teardown(() => second.close());
  await second.ready;
  t.same(await second.verify(), [], 'every entry has its mark after the migration');
  t.equal(second.read(A, 0, 10).length, 2);
  clock.now += 10_000;
  t.equal(await second.sweepExpired(), 2, 'the sweep finds what expired through the new marks');
  t.same(second.read(A, 0, 10).map((e) => e.seq), [kept]);
  t.same(second.read(B, 0, 10), []);
  await second.close();
  const after = open<Buffer, Buffer>({ path: dir, maxDbs: 16, keyEncoding: 'binary', encoding: 'binary' });
  t.teardown(() => after.close());
  const meta = after.openDB<Buffer, Buffer>({ name: 'meta', keyEncoding: 'binary', encoding: 'binary' });
  t.same([...meta.getBinary(Buffer.from('format'))!], [0, 0, 0, 2], 'format 2 recorded');
  const gone = after.openDB<Buffer, Buffer>({ name: 'expiry', keyEncoding: 'binary', encoding: 'binary' });
  t.equal(gone.getKeysCount({}), 0, 'the old expiry keys are gone');
});

t.test('lmdb: durable() and enqueue resolve only after the transaction is flushed to disk, not at its commit', async (t) => {
  const store = makeLmdb(t, { limits: { maxCountPerRecipient: 1e9, maxBytesPerRecipient: 1e15, maxTotalBytes: 1e15 } });
  await store.ready;
  // lmdb-js (overlapping sync, separateFlushed) resolves a write at its commit and carries the flush
  // as `.flushed`; under continuous writes the flush of one transaction comes while the next is written.
  const lastWrite = (): Promise<unknown> & { flushed?: PromiseLike<unknown> } =>
    (store as unknown as { writes: { lastWrite: Promise<unknown> & { flushed?: PromiseLike<unknown> } } }).writes.lastWrite;
  const checks: Array<Promise<{ flushedFirst: boolean; gap: boolean }>> = [];
  let lastDurable: Promise<boolean> | null = null;
  const until = Date.now() + 400;
  for (let turn = 0; turn < 2000 && Date.now() < until && checks.length < 60; turn++) {
    for (let i = 0; i < 40; i++) store.enqueueNow(req({ to: [A], body: bytes(200, i) }));
    const durable = store.durable();
    if (durable !== lastDurable) {
      lastDurable = durable;
      const write = lastWrite();
      if (!write.flushed) throw new Error('the write carries no flush promise');
      let committed = false;
      let flushed = false;
      let gap = false;
      void write.then(() => { committed = true; });
      void Promise.resolve(write.flushed).then(() => { flushed = true; gap = committed; });
      checks.push(durable.then((ok) => ({ flushedFirst: ok && flushed, gap })));
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  const results = await Promise.all(checks);
  t.ok(results.length > 0, `${results.length} transactions observed`);
  t.ok(results.every((r) => r.flushedFirst), 'every durable() resolved after its transaction was flushed');
  t.comment(`${results.filter((r) => r.gap).length} of ${results.length} flushes came after their commit had resolved`);
  const viaEnqueue = store.enqueue(req({ to: [B] }));
  const write = lastWrite();
  let flushed = false;
  void Promise.resolve(write.flushed).then(() => { flushed = true; });
  t.same(codes(await viaEnqueue), ['ok']);
  t.ok(flushed, 'enqueue resolved after the flush');
});

t.test('lmdb: a failed commit is reported, new stores are refused while the store repairs itself, then accepted', async (t) => {
  const failures: unknown[] = [];
  let repaired: (problems: string[]) => void = () => {};
  const repairedOnce = new Promise<string[]>((resolve) => { repaired = resolve; });
  const store = openLmdbMailbox({
    path: tempDir(t), sweepIntervalMs: 0,
    onCommitFailure: (err) => failures.push(err),
    onRepaired: (problems) => repaired(problems),
  });
  t.teardown(() => store.close());
  await store.ready;
  t.same(codes(await store.enqueue(req({ to: [A] }))), ['ok']);
  // The path a rejected lmdb-js commit takes (a real one needs a failing disk).
  (store as unknown as { recovery: { commitFailed(err: unknown): void } }).recovery.commitFailed(new Error('MDB_MAP_FULL'));
  t.equal(failures.length, 1, 'reported once');
  t.equal((failures[0] as Error).message, 'MDB_MAP_FULL');
  await new Promise((resolve) => setImmediate(resolve));
  t.same(codes(store.enqueueNow(req({ to: [B] }))), ['STORE_ERROR'], 'refused while repairing');
  t.same(await repairedOnce, [], 'the repair found the store consistent');
  t.equal(store.stats().commitFailures, 1);
  t.same(codes(await store.enqueue(req({ to: [B] }))), ['ok'], 'accepted again after the repair');
  t.same(store.read(A, 0, 10).length, 1);
});

t.test('lmdb: the map grows by itself from a small initial size', async (t) => {
  const store = makeLmdb(t, {});
  await store.close();
  const dir = tempDir(t);
  const small = openLmdbMailbox({ path: dir, sweepIntervalMs: 0, mapSize: 256 * 1024 });
  t.teardown(() => small.close());
  const body = bytes(16 * 1024);
  let ok = 0;
  for (let round = 0; round < 20; round++) {
    const batch = await Promise.all(Array.from({ length: 100 }, (_, i) => small.enqueue(req({ to: [key(i % 50)], body }))));
    ok += batch.filter((o) => o[0]!.ok).length;
  }
  t.equal(ok, 2000, '32 MiB written into a 256 KiB initial map, no errors');
  t.ok(small.stats().mapBytes > 30 * 1024 * 1024, `data file grew to ${small.stats().mapBytes} bytes`);
  t.equal(small.stats().commitFailures, 0);
  t.same(await small.verify(), []);
});

t.test('lmdb: repair rebuilds derived data from the entries', async (t) => {
  const dir = tempDir(t);
  const store = openLmdbMailbox({ path: dir, sweepIntervalMs: 0 });
  await store.enqueue(req({ to: [A, B], storageKey: skey(1) }));
  await store.enqueue(req({ to: [C] }));
  await store.close();
  // Damage the derived sub-databases directly.
  const env = open<Buffer, Buffer>({ path: dir, maxDbs: 16, keyEncoding: 'binary', encoding: 'binary' });
  const db = (name: string) => env.openDB<Buffer, Buffer>({ name, keyEncoding: 'binary', encoding: 'binary' });
  await db('usage').remove(Buffer.from(A));
  await db('index').put(Buffer.alloc(80, 9), Buffer.alloc(8, 0));
  const marks = db('marks');
  for (const mark of [...marks.getKeys({})]) await marks.remove(mark);
  const refs = db('refs');
  const [first] = [...refs.getKeys({})];
  await refs.put(first!, Buffer.from([0, 0, 0, 7]));
  await db('bodies').put(Buffer.alloc(8, 0xee), Buffer.from('orphan'));
  await env.close();

  const reopened = openLmdbMailbox({ path: dir, sweepIntervalMs: 0 });
  t.teardown(() => reopened.close());
  await reopened.ready;
  const problems = await reopened.verify();
  t.ok(problems.length >= 5, `verify finds the damage:\n${problems.join('\n')}`);
  t.same(await reopened.repair(), problems);
  t.same(await reopened.verify(), [], 'clean after repair');
  t.same(reopened.usage(A), { count: 1, bytes: 148 });
  t.equal(reopened.bodyCount(), 2);
  for (const k of [A, B, C]) await reopened.ack(k, reopened.read(k, 0, 10).map((e) => e.seq));
  t.same(reopened.totals(), { count: 0, bytes: 0, recipients: 0 });
  t.equal(reopened.bodyCount(), 0);
  t.same(await reopened.verify(), []);
});

t.test('lmdb: entries told "stored" survive kill -9, and derived data stays consistent', async (t) => {
  const dir = tempDir(t);
  const tsImport = process.execArgv.filter((a) => a.includes('typescript'));
  const moduleUrl = pathToFileURL(resolve('src/store/lmdb/mailbox.ts')).href;
  // Recipients 1..13 get replacements, fan-out and acks (only consistency is checkable there);
  // recipient 60 gets plain messages that nobody acks: every one told "stored" must be there.
  const script = `
    const { openLmdbMailbox } = await import(${JSON.stringify(moduleUrl)});
    const store = openLmdbMailbox({ path: ${JSON.stringify(dir)}, sweepIntervalMs: 0 });
    const key = (n) => { const k = new Uint8Array(32); k[0] = n; return k; };
    const body = new Uint8Array(700).fill(3);
    let i = 0;
    const pump = () => {
      for (let j = 0; j < 300; j++) {
        const n = i++;
        const r = 1 + (n % 13);
        const recipients = [{ key: key(r), wrappedKey: new Uint8Array(4) }];
        if (n % 5 === 0) recipients.push({ key: key(1 + ((n + 1) % 13)), wrappedKey: new Uint8Array(4) });
        store.enqueue({ sender: key(200), storageKey: n % 3 === 0 ? new Uint8Array(16).fill(n % 7) : null, ttlSeconds: 3600, body, recipients });
        store.enqueue({ sender: key(201), storageKey: null, ttlSeconds: 3600, body, recipients: [{ key: key(60), wrappedKey: new Uint8Array(2) }] })
          .then(([o]) => { if (o.ok) process.send(o.seq); });
        if (n % 4 === 1) {
          const got = store.read(key(r), 0, 3);
          if (got.length) store.ack(key(r), got.map((e) => e.seq)).catch(() => {});
        }
      }
      setImmediate(pump);
    };
    pump();
  `;
  const child = spawn(process.execPath, [...tsImport, '--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const told: number[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child told only ${told.length} stored: ${stderr}`)), 60_000);
    child.on('message', (seq) => {
      told.push(seq as number);
      if (told.length === 5000) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => reject(new Error(`child exited ${code}: ${stderr}`)));
  });
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const store = openLmdbMailbox({ path: dir, sweepIntervalMs: 0 });
  t.teardown(() => store.close());
  await store.ready;
  t.same(await store.verify(), [], 'usage, refcounts and indexes agree after kill -9');
  const k60 = new Uint8Array(32);
  k60[0] = 60;
  const stored = new Set(store.read(k60, 0, 1_000_000).map((e) => e.seq));
  t.ok(stored.size >= told.length, `${stored.size} stored for the unacked recipient, ${told.length} told`);
  t.equal(told.filter((s) => !stored.has(s)).length, 0, 'every entry told "stored" is there');
  const next = seqOf((await store.enqueue(req({ to: [A] })))[0]);
  t.ok(next > Math.max(...stored), 'the seq counter is past every stored seq');
});
