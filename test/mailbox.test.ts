import t from 'tap';
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { open } from 'lmdb';
import type { EnqueueOutcome, EnqueueRequest, MailboxLimits } from '../src/store/mailbox.js';
import { openLmdbMailbox, type LmdbMailboxStore } from '../src/store/lmdb/mailbox.js';
import { A, B, bytes, C, codes, key, reqDefault, req, S1, S2, seqOf, skey, tempDir, type Clock, type Teardown } from './mailbox-fixtures.js';

// ------------------------------------------------------------------ helpers

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

/** Problems verify() finds in an LMDB store's derived data. */
async function problems(store: LmdbMailboxStore): Promise<string[]> {
  return store.verify();
}

// ------------------------------------------------------------------ LMDB only (the contract, for every engine: mailbox-contract.test.ts)

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
