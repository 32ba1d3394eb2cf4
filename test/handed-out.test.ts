import t from 'tap';
import fc from 'fast-check';
import { HandedOut } from '../src/store/lmdb/handed-out.js';

// The store's records of handed-out entries against a plain model (a Map per recipient): adds in
// increasing seq order per recipient (relay-wide seqs, so with gaps), re-reads of older seqs (ignored),
// takes mostly oldest first (acknowledgements) but also in any order (replacement, sweep), misses,
// and the bound that forgets everything.
t.test('HandedOut behaves like a Map per recipient', async (t) => {
  const MAX = 12;
  const op = fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant('add' as const), r: fc.nat(2), gap: fc.nat(3) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('readd' as const), r: fc.nat(2), back: fc.nat(6) }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('takeOldest' as const), r: fc.nat(2) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('takeAny' as const), r: fc.nat(2), pick: fc.nat() }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('takeMissing' as const), r: fc.nat(2), back: fc.nat(8) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('clear' as const) }) },
  );
  fc.assert(fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
    const model = new Map<string, Map<number, string>>();
    const last = new Map<string, number>();
    const real = new HandedOut<string>(MAX);
    let seq = 0;
    const size = (): number => [...model.values()].reduce((n, m) => n + m.size, 0);
    const add = (rid: string, s: number): void => {
      if (size() >= MAX) { model.clear(); last.clear(); }
      const mine = model.get(rid) ?? new Map<number, string>();
      // A seq not above the recipient's last one (while it has records) is ignored.
      if (mine.size > 0 && s <= last.get(rid)!) { real.add(rid, s, `new${s}`); return; }
      mine.set(s, `${rid}:${s}`);
      model.set(rid, mine);
      last.set(rid, s);
      real.add(rid, s, `${rid}:${s}`);
    };
    const take = (rid: string, s: number): boolean => {
      const want = model.get(rid)?.get(s);
      model.get(rid)?.delete(s);
      return real.get(rid, s) === want && real.take(rid, s) === want && real.take(rid, s) === undefined && real.get(rid, s) === undefined;
    };
    for (const o of ops) {
      const rid = o.kind === 'clear' ? '' : `r${o.r}`;
      const mine = [...(model.get(rid)?.keys() ?? [])].sort((a, b) => a - b);
      if (o.kind === 'add') add(rid, (seq += 1 + o.gap));
      else if (o.kind === 'readd') add(rid, Math.max(1, seq - o.back));
      else if (o.kind === 'takeOldest') { if (mine.length > 0 && !take(rid, mine[0]!)) return false; }
      else if (o.kind === 'takeAny') { if (mine.length > 0 && !take(rid, mine[o.pick % mine.length]!)) return false; }
      else if (o.kind === 'takeMissing') { if (!take(rid, seq - o.back)) return false; }
      else { model.clear(); last.clear(); real.clear(); }
      if (real.size !== size()) return false;
    }
    for (const [rid, mine] of model) for (const [s, v] of mine) if (real.take(rid, s) !== v) return false;
    return real.size === 0;
  }), { numRuns: 400 });
  t.pass('matches the model');
});
