/**
 * Model-based test: random operation sequences run against every durable engine the factory knows
 * (src/store/open.ts) and the in-memory model (src/store/memory/mailbox.ts), compared on every
 * observable after every step: outcomes, read results (every field, every recipient), usage,
 * totals, top, body count, removal counts. Bursts issue several enqueues and acks without awaiting
 * in between, so decisions made on writes that have not committed yet are compared too. The
 * engine is closed and reopened at random points, and at the end its derived data (LMDB: usage,
 * refcounts, indexes) must agree with its entries.
 */
import t from 'tap';
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { enqueue, finalOutcome, type EnqueueRequest, type MailboxEntry, type MailboxLimits, type MailboxStore } from '../src/store/mailbox.js';
import { LmdbEngine } from '../src/store/lmdb/engine.js';
import { MemoryMailbox } from '../src/store/memory/mailbox.js';

import { engineSkip, freshStoreSetting, openTestMailbox, TEST_ENGINES } from './store-engines.js';

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
  /** Through accept() (the router's way: outcomes at once where the engine decides at once) instead of enqueue(). */
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
/** enqueue(), or accept(): outcomes decided at once must be the settled ones (the commit must succeed here). */
function enqueueBy(split: boolean, store: MailboxStore, req: EnqueueRequest): Promise<unknown> {
  if (!split) return enqueue(store, req);
  const accepted = store.accept(req);
  const decided = JSON.stringify(accepted.outcomes);
  return accepted.settled.then((committed) => {
    const final = accepted.outcomes.map((o) => finalOutcome(o, committed));
    return !accepted.decided || JSON.stringify(final) === decided ? final : `decided ${decided}, settled ${JSON.stringify(final)}`;
  });
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
async function lent(store: MailboxStore, r: Uint8Array): Promise<unknown[]> {
  const out: unknown[] = [];
  const visited = await store.readEach(r, 0, 1_000, (e) => out.push(...plain([e])));
  return [visited, ...out];
}

/** The engine's own seq counter where it has one (not part of the contract; LMDB's is the model's). */
function lastSeqOf(store: MailboxStore): number | null {
  if (store instanceof LmdbEngine) return store.lmdb.lastSeq();
  if (store instanceof MemoryMailbox) return store.lastSeq();
  return null;
}

/** Everything observable; the seq counter only where both sides have one (`counter`). */
async function observe(store: MailboxStore, counter: boolean): Promise<unknown> {
  const mailboxes = [];
  for (const r of RECIPIENTS) {
    mailboxes.push({ usage: await store.usage(r), entries: plain(await store.read(r, 0, 1_000)), lent: await lent(store, r) });
  }
  return {
    totals: await store.totals(),
    lastSeq: counter ? lastSeqOf(store) : null,
    top: (await store.top(3)).map((u) => ({ ...u, recipient: Buffer.from(u.recipient).toString('hex') })),
    bodies: await store.bodyCount(),
    limits: store.limits(),
    mailboxes,
  };
}

class Failure extends Error {}

function expectSame(step: string, engine: unknown, model: unknown): void {
  const a = JSON.stringify(engine);
  const b = JSON.stringify(model);
  if (a !== b) throw new Failure(`${step}\n  engine: ${a}\n  model:  ${b}`);
}

for (const engine of TEST_ENGINES.filter((name) => name !== 'memory')) t.test(`the ${engine} engine behaves like the in-memory model`, { skip: engineSkip(engine) }, async (t) => {
  let runs = 0;
  let steps = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 20, maxLength: 60, size: 'max' }), async (ops) => {
      runs++;
      const dir = mkdtempSync(join(tmpdir(), 'pulltab-mailbox-prop-'));
      const clock = { now: 1_700_000_000_000 };
      const setting = await freshStoreSetting(engine);
      const open = (limits: MailboxLimits): Promise<MailboxStore> => openTestMailbox({ store: setting, dataDir: dir, limits, now: () => clock.now });
      let store = await open(LIMITS);
      const model = new MemoryMailbox({ limits: LIMITS, now: () => clock.now });
      const lastRead = new Map<number, number[]>();
      const ackSeqs = (op: Ack): number[] => {
        const seen = lastRead.get(op.r) ?? [];
        const seqs = seen.filter((_, i) => (op.pick >> i) & 1);
        if (op.extra !== null) seqs.push(op.extra);
        return seqs;
      };
      try {
        for (const [i, op] of ops.entries()) {
          steps++;
          const step = `step ${i}: ${JSON.stringify(op)}`;
          switch (op.kind) {
            case 'enqueue': {
              const req = toRequest(op);
              expectSame(step, await enqueueBy(op.split, store, req), await enqueue(model, req));
              break;
            }
            case 'ack': {
              const seqs = ackSeqs(op);
              await Promise.all([store.ack(RECIPIENTS[op.r]!, seqs), model.ack(RECIPIENTS[op.r]!, seqs)]);
              break;
            }
            case 'burst': {
              // Issued back to back without awaiting: the LMDB store decides on uncommitted writes.
              const pending: Array<Promise<unknown>> = [];
              const modelResults: unknown[] = [];
              for (const inner of op.ops) {
                if (inner.kind === 'enqueue') {
                  const req = toRequest(inner);
                  pending.push(enqueueBy(inner.split, store, req));
                  modelResults.push(await enqueue(model, req));
                } else {
                  const seqs = ackSeqs(inner);
                  pending.push(store.ack(RECIPIENTS[inner.r]!, seqs));
                  modelResults.push(await model.ack(RECIPIENTS[inner.r]!, seqs));
                }
              }
              expectSame(step, await Promise.all(pending), modelResults);
              break;
            }
            case 'read': {
              const r = RECIPIENTS[op.r]!;
              const got = await store.read(r, op.after, op.limit);
              expectSame(step, plain(got), plain(await model.read(r, op.after, op.limit)));
              lastRead.set(op.r, got.map((e) => e.seq));
              break;
            }
            case 'advance':
              clock.now += op.ms;
              break;
            case 'sweep':
              expectSame(step, await store.sweepExpired(), await model.sweepExpired());
              break;
            case 'removeOlderThan':
              expectSame(step, await store.removeOlderThan(op.ageMs), await model.removeOlderThan(op.ageMs));
              break;
            case 'removeRecipient':
              expectSame(step, await store.removeRecipient(RECIPIENTS[op.r]!), await model.removeRecipient(RECIPIENTS[op.r]!));
              break;
            case 'setLimits': {
              const patch = { maxCountPerRecipient: op.count, maxBytesPerRecipient: op.bytes };
              store.setLimits(patch);
              model.setLimits(patch);
              break;
            }
            case 'reopen': {
              const limits = store.limits();
              await store.close();
              store = await open(limits);
              // the sweep at open removes what expired: the model does the same
              await model.sweepExpired();
              break;
            }
          }
          expectSame(`${step} (state after)`, await observe(store, lastSeqOf(store) !== null), await observe(model, lastSeqOf(store) !== null));
        }
        const problems = store instanceof LmdbEngine ? await store.lmdb.verify() : [];
        if (problems.length > 0) throw new Failure(`derived data disagrees with the entries:\n${problems.join('\n')}`);
      } finally {
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: Number(process.env.MAILBOX_PROPERTY_RUNS ?? 50), seed: Number(process.env.MAILBOX_PROPERTY_SEED ?? Date.now() % 1_000_000), endOnFailure: true },
  );
  t.pass(`${runs} runs, ${steps} steps matched the model`);
});
