// The per-recipient quota hook (a recipient's policy): it replaces the store-wide per-recipient
// limits for that recipient only, in every engine the factory knows alike.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { enqueue, type MailboxStore, type RecipientQuota } from '../src/store/mailbox.js';

import { engineSkip, freshStoreSetting, openTestMailbox, TEST_ENGINES } from './store-engines.js';
import { removeDir, tempDir } from './helpers.js';

const small = randomBytes(32);
const big = randomBytes(32);
const plain = randomBytes(32);
const sender = randomBytes(32);
const quotas = new Map<string, RecipientQuota>([
  [small.toString('hex'), { maxCount: 2, maxBytes: 1000 }],
  [big.toString('hex'), { maxCount: 100, maxBytes: 100_000 }],
]);
const quotaFor = (r: Uint8Array) => quotas.get(Buffer.from(r).toString('hex'));
const limits = { maxCountPerRecipient: 3, maxBytesPerRecipient: 300 };

async function exercise(t: Test, store: MailboxStore) {
  const put = async (to: Buffer, n: number) => (await enqueue(store, { sender, storageKey: null, ttlSeconds: 60, body: Buffer.alloc(n), recipients: [{ key: to, wrappedKey: Buffer.alloc(0) }] }))[0];
  const codes = async (to: Buffer, n: number, times: number) => {
    const out: string[] = [];
    for (let i = 0; i < times; i++) {
      const r = await put(to, n);
      out.push(r.ok ? 'ok' : r.code);
    }
    return out;
  };
  t.same(await codes(small, 10, 3), ['ok', 'ok', 'QUOTA_COUNT'], 'a smaller count quota from the hook');
  t.same(await codes(big, 90, 5), ['ok', 'ok', 'ok', 'ok', 'ok'], 'a larger quota than the store-wide one');
  t.same(await codes(plain, 90, 4), ['ok', 'ok', 'ok', 'QUOTA_COUNT'], 'no answer from the hook: store-wide limits');
  quotas.set(plain.toString('hex'), { maxCount: 100, maxBytes: 300 });
  t.same(await codes(plain, 90, 1), ['QUOTA_BYTES'], 'the hook is asked on every enqueue: a changed quota applies at once');
  quotas.delete(plain.toString('hex'));
}

for (const engine of TEST_ENGINES) {
  t.test(`${engine} engine`, { skip: engineSkip(engine) }, async (t) => {
    const dir = tempDir();
    t.teardown(() => removeDir(dir));
    const store = await openTestMailbox({ store: await freshStoreSetting(engine), dataDir: dir, limits, quotaFor });
    t.teardown(() => store.close());
    await exercise(t, store);
  });
}
