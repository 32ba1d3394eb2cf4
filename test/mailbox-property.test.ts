/**
 * Model-based test: random operation sequences run against the LMDB store and the in-memory model
 * (src/store/memory-mailbox.ts), compared on every observable after every step: outcomes, read
 * results (every field, every recipient), usage, totals, top, body count, removal counts. Bursts
 * issue several enqueues and acks without awaiting in between, so decisions made on writes that
 * have not committed yet are compared too. The LMDB store is closed and reopened at random points,
 * and at the end its derived data (usage, refcounts, indexes) must agree with its entries.
 */
import t from 'tap';
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { EnqueueRequest, MailboxEntry, MailboxLimits, MailboxStore } from '../src/store/mailbox.js';
import { MemoryMailbox } from '../src/store/memory-mailbox.js';
import { openLmdbMailbox, type LmdbMailboxStore } from '../src/store/lmdb/mailbox.js';

const pool = (n: number, tag: number, len: number): Uint8Array[] =>
  Array.from({ length: n }, (_, i) => new Uint8Array(len).map((_, j) => (j === 0 ? tag : j === 1 ? i : (i * 7 + j) & 0xff)));
const RECIPIENTS = pool(4, 1, 32);
const SENDERS = pool(3, 2, 32);
const STORAGE_KEYS = pool(3, 3, 16);

const LIMITS: MailboxLimits = { maxCountPerRecipient: 6, maxBytesPerRecipient: 9_000, maxTotalBytes: 24_000, maxTtlSeconds: 80 };

type Enqueue = {
  kind: 'enqueue';
  sender: number;
  storageKey: number | null;
  ttl: number;
  bodySize: number;
  bodySeed: number;
  to: Array<{ r: number; wk: number }>;
  /** Through enqueueNow() + durable() (the router's way) instead of enqueue(). */
  split: boolean;
};
type Ack = { kind: 'ack'; r: number; pick: number; extra: number | null };
type Op =
  | Enqueue
  | Ack
  | { kind: 'burst'; ops: Array<Enqueue | Ack> }
  | { kind: 'read'; r: number; after: number; limit: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'sweep' }
  | { kind: 'removeOlderThan'; ageMs: number }
  | { kind: 'removeRecipient'; r: number }
  | { kind: 'setLimits'; count: number; bytes: number }
  | { kind: 'reopen' };

const enqueueArb: fc.Arbitrary<Enqueue> = fc.record({
  kind: fc.constant('enqueue' as const),
  sender: fc.nat(SENDERS.length - 1),
  storageKey: fc.option(fc.nat(STORAGE_KEYS.length - 1), { nil: null, freq: 2 }),
  ttl: fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1, max: 80 }) }, { weight: 1, arbitrary: fc.integer({ min: 81, max: 200 }) }),
  bodySize: fc.oneof({ weight: 4, arbitrary: fc.nat(300) }, { weight: 2, arbitrary: fc.nat(3_000) }, { weight: 1, arbitrary: fc.integer({ min: 8_500, max: 9_100 }) }),
  bodySeed: fc.nat(255),
  to: fc.array(fc.record({ r: fc.nat(RECIPIENTS.length - 1), wk: fc.nat(60) }), { minLength: 1, maxLength: 4 }),
  split: fc.boolean(),
});
/** enqueue(), or its two halves: outcomes at once, then the commit they wait for (which must succeed here). */
function enqueueBy(split: boolean, store: MailboxStore, req: EnqueueRequest): Promise<unknown> {
  if (!split) return store.enqueue(req);
  const outcomes = store.enqueueNow(req);
  return store.durable().then((ok) => (ok ? outcomes : 'the commit failed'));
}

const ackArb: fc.Arbitrary<Ack> = fc.record({
  kind: fc.constant('ack' as const),
  r: fc.nat(RECIPIENTS.length - 1),
  pick: fc.nat(0xffff),
  extra: fc.option(fc.nat(60), { nil: null }),
});
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: enqueueArb },
  { weight: 4, arbitrary: ackArb },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('burst' as const), ops: fc.array(fc.oneof(enqueueArb, ackArb), { minLength: 2, maxLength: 8 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('read' as const), r: fc.nat(RECIPIENTS.length - 1), after: fc.nat(40), limit: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.oneof(fc.nat(3_000), fc.nat(90_000)) }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'sweep' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('removeOlderThan' as const), ageMs: fc.nat(60_000) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('removeRecipient' as const), r: fc.nat(RECIPIENTS.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('setLimits' as const), count: fc.integer({ min: 2, max: 8 }), bytes: fc.integer({ min: 3_000, max: 12_000 }) }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'reopen' as const }) },
);

function toRequest(op: Enqueue): EnqueueRequest {
  return {
    sender: SENDERS[op.sender]!,
    storageKey: op.storageKey === null ? null : STORAGE_KEYS[op.storageKey]!,
    ttlSeconds: op.ttl,
    body: new Uint8Array(op.bodySize).map((_, i) => (i + op.bodySeed) & 0xff),
    recipients: op.to.map(({ r, wk }) => ({ key: RECIPIENTS[r]!, wrappedKey: new Uint8Array(wk).fill(wk) })),
  };
}

function plain(entries: MailboxEntry[]): unknown[] {
  return entries.map((e) => ({
    seq: e.seq,
    sender: Buffer.from(e.sender).toString('hex'),
    storageKey: e.storageKey === null ? null : Buffer.from(e.storageKey).toString('hex'),
    wrappedKey: Buffer.from(e.wrappedKey).toString('hex'),
    body: `${e.body.length}:${createHash('sha256').update(e.body).digest('hex').slice(0, 12)}`,
    storedAt: e.storedAt,
    expiresAt: e.expiresAt,
  }));
}

/** What readEach() hands out, turned into plain data during each visit (its views are lent). */
function lent(store: MailboxStore, r: Uint8Array): unknown[] {
  const out: unknown[] = [];
  const visited = store.readEach(r, 0, 1_000, (e) => out.push(...plain([e])));
  return [visited, ...out];
}

function observe(store: MailboxStore): unknown {
  return {
    totals: store.totals(),
    lastSeq: store.lastSeq(),
    top: store.top(3).map((u) => ({ ...u, recipient: Buffer.from(u.recipient).toString('hex') })),
    bodies: store.bodyCount(),
    limits: store.limits(),
    mailboxes: RECIPIENTS.map((r) => ({ usage: store.usage(r), entries: plain(store.read(r, 0, 1_000)), lent: lent(store, r) })),
  };
}

class Failure extends Error {}

function expectSame(step: string, lmdb: unknown, model: unknown): void {
  const a = JSON.stringify(lmdb);
  const b = JSON.stringify(model);
  if (a !== b) throw new Failure(`${step}\n  lmdb:  ${a}\n  model: ${b}`);
}

t.test('the LMDB store behaves like the in-memory model', async (t) => {
  let runs = 0;
  let steps = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 20, maxLength: 60, size: 'max' }), async (ops) => {
      runs++;
      const dir = mkdtempSync(join(tmpdir(), 'pulltab-mailbox-prop-'));
      const clock = { now: 1_700_000_000_000 };
      const open = (): LmdbMailboxStore => openLmdbMailbox({ path: dir, limits: LIMITS, now: () => clock.now, sweepIntervalMs: 0 });
      let lmdb = open();
      const model = new MemoryMailbox({ limits: LIMITS, now: () => clock.now });
      const lastRead = new Map<number, number[]>();
      const ackSeqs = (op: Ack): number[] => {
        const seen = lastRead.get(op.r) ?? [];
        const seqs = seen.filter((_, i) => (op.pick >> i) & 1);
        if (op.extra !== null) seqs.push(op.extra);
        return seqs;
      };
      try {
        await lmdb.ready;
        for (const [i, op] of ops.entries()) {
          steps++;
          const step = `step ${i}: ${JSON.stringify(op)}`;
          switch (op.kind) {
            case 'enqueue': {
              const req = toRequest(op);
              expectSame(step, await enqueueBy(op.split, lmdb, req), await model.enqueue(req));
              break;
            }
            case 'ack': {
              const seqs = ackSeqs(op);
              await Promise.all([lmdb.ack(RECIPIENTS[op.r]!, seqs), model.ack(RECIPIENTS[op.r]!, seqs)]);
              break;
            }
            case 'burst': {
              // Issued back to back without awaiting: the LMDB store decides on uncommitted writes.
              const pending: Array<Promise<unknown>> = [];
              const modelResults: unknown[] = [];
              for (const inner of op.ops) {
                if (inner.kind === 'enqueue') {
                  const req = toRequest(inner);
                  pending.push(enqueueBy(inner.split, lmdb, req));
                  modelResults.push(await model.enqueue(req));
                } else {
                  const seqs = ackSeqs(inner);
                  pending.push(lmdb.ack(RECIPIENTS[inner.r]!, seqs));
                  modelResults.push(await model.ack(RECIPIENTS[inner.r]!, seqs));
                }
              }
              expectSame(step, await Promise.all(pending), modelResults);
              break;
            }
            case 'read': {
              const r = RECIPIENTS[op.r]!;
              const got = lmdb.read(r, op.after, op.limit);
              expectSame(step, plain(got), plain(model.read(r, op.after, op.limit)));
              lastRead.set(op.r, got.map((e) => e.seq));
              break;
            }
            case 'advance':
              clock.now += op.ms;
              break;
            case 'sweep':
              expectSame(step, await lmdb.sweepExpired(), await model.sweepExpired());
              break;
            case 'removeOlderThan':
              expectSame(step, await lmdb.removeOlderThan(op.ageMs), await model.removeOlderThan(op.ageMs));
              break;
            case 'removeRecipient':
              expectSame(step, await lmdb.removeRecipient(RECIPIENTS[op.r]!), await model.removeRecipient(RECIPIENTS[op.r]!));
              break;
            case 'setLimits': {
              const patch = { maxCountPerRecipient: op.count, maxBytesPerRecipient: op.bytes };
              lmdb.setLimits(patch);
              model.setLimits(patch);
              break;
            }
            case 'reopen': {
              const limits = lmdb.limits();
              await lmdb.close();
              lmdb = openLmdbMailbox({ path: dir, limits, now: () => clock.now, sweepIntervalMs: 0 });
              await lmdb.ready;
              // the sweep at open removes what expired: the model does the same
              await model.sweepExpired();
              break;
            }
          }
          expectSame(`${step} (state after)`, observe(lmdb), observe(model));
        }
        const problems = await lmdb.verify();
        if (problems.length > 0) throw new Failure(`derived data disagrees with the entries:\n${problems.join('\n')}`);
      } finally {
        await lmdb.close();
        rmSync(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: Number(process.env.MAILBOX_PROPERTY_RUNS ?? 50), seed: Number(process.env.MAILBOX_PROPERTY_SEED ?? Date.now() % 1_000_000), endOnFailure: true },
  );
  t.pass(`${runs} runs, ${steps} steps matched the model`);
});
