import t from 'tap';
import fc from 'fast-check';
import { PendingBySeq } from '../src/store/lmdb/pending.js';

// The store's window of uncommitted entries against a Map: random adds (increasing seqs with
// gaps), deletes in any order (mostly oldest first, as commits settle), lookups, clears.
t.test('PendingBySeq behaves like a Map for increasing seqs', async (t) => {
  const op = fc.oneof(
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('add' as const), gap: fc.nat(3) }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('deleteOldest' as const) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('deleteAny' as const), pick: fc.nat() }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('get' as const), back: fc.nat(40) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('clear' as const) }) },
  );
  fc.assert(fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
    const model = new Map<number, number>();
    const real = new PendingBySeq<number>();
    let seq = 0;
    for (const o of ops) {
      if (o.kind === 'add') {
        seq += 1 + o.gap;
        model.set(seq, seq * 10);
        real.set(seq, seq * 10);
      } else if (o.kind === 'deleteOldest' || o.kind === 'deleteAny') {
        const keys = [...model.keys()];
        if (keys.length === 0) {
          if (real.delete(seq + 1)) return false;
          continue;
        }
        const k = o.kind === 'deleteOldest' ? keys[0]! : keys[o.pick % keys.length]!;
        model.delete(k);
        if (!real.delete(k)) return false;
        if (real.delete(k)) return false;
      } else if (o.kind === 'get') {
        const k = seq - o.back;
        if (real.get(k) !== model.get(k)) return false;
      } else {
        model.clear();
        real.clear();
      }
      if (real.size !== model.size) return false;
    }
    for (let k = 0; k <= seq + 1; k++) if (real.get(k) !== model.get(k)) return false;
    return true;
  }), { numRuns: 300 });
  t.pass('matches the model');
});

t.test('PendingBySeq refuses a seq that does not increase', async (t) => {
  const p = new PendingBySeq<string>();
  p.set(5, 'a');
  t.throws(() => p.set(5, 'b'), /not after/);
  t.throws(() => p.set(3, 'c'), /not after/);
  t.equal(p.get(5), 'a');
});
