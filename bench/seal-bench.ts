// Sealing and opening rates of src/crypto/seal.ts.
//
//   node --import @tapjs/typescript/import bench/seal-bench.ts           (about 3 s per case)
//   node --import @tapjs/typescript/import bench/seal-bench.ts --quick   (about 1 s per case)
//   ... bench/seal-bench.ts --quick --baseline /work/main   (the same cases for another checkout's
//       src/crypto, case by case in the same process, then the ratios: before/after figures
//       taken minutes apart on this shared machine differ by more than the change does)
//
// (@tapjs/typescript/import registers tap's ts-node ESM loader; Node 20 cannot run .ts alone.)
// Each case seals one plaintext of bodyBytes to `recipients` keys in a time-bounded loop, then
// opens one sealed message in another loop, rotating through the recipients. Keys are reused
// across iterations, as a client would, so the per-identity and per-recipient caches are warm.
// MB/s counts plaintext bytes, 1 MB = 10^6 bytes.
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { generateIdentity } from '../src/crypto/keys.js';
import * as thisTree from '../src/crypto/seal.js';

/** The two functions measured: this tree's, or another checkout's (--baseline). */
export interface SealImplementation {
  sealMessage: typeof thisTree.sealMessage;
  openMessage: typeof thisTree.openMessage;
}

export interface SealBenchRow {
  scenario: string;
  bodyBytes: number;
  recipients: number;
  sealPerSec: number;
  openPerSec: number;
  sealMBps: number;
  openMBps: number;
}

const CASES = [
  { scenario: '1 KiB to 1', bodyBytes: 1024, recipients: 1 },
  { scenario: '1 KiB to 8', bodyBytes: 1024, recipients: 8 },
  { scenario: '1 MiB to 1', bodyBytes: 1024 * 1024, recipients: 1 },
  { scenario: '1 MiB to 8', bodyBytes: 1024 * 1024, recipients: 8 },
];

/** Runs fn until budgetMs has passed (at least once); returns calls per second. */
function rate(budgetMs: number, fn: () => void): number {
  let n = 0;
  const start = performance.now();
  let elapsed = 0;
  do {
    fn();
    n++;
    elapsed = performance.now() - start;
  } while (elapsed < budgetMs);
  return (n * 1000) / elapsed;
}

export async function runSealBench(opts: { quick: boolean; implementation?: SealImplementation; cases?: typeof CASES }): Promise<SealBenchRow[]> {
  const { sealMessage, openMessage } = opts.implementation ?? thisTree;
  const perCaseMs = opts.quick ? 1000 : 3000;
  const rows: SealBenchRow[] = [];
  const sender = generateIdentity();
  for (const c of opts.cases ?? CASES) {
    const ids = Array.from({ length: c.recipients }, () => generateIdentity());
    const keys = ids.map((i) => i.publicKey);
    const plaintext = randomBytes(c.bodyBytes);
    // Warm up: JIT, Signer and X25519 caches, recipient key conversions.
    const sealed = sealMessage(sender, keys, plaintext);
    ids.forEach((id, i) => openMessage(id, sender.publicKey, sealed.recipients[i]!.wrappedKey, sealed.body));
    // Leave some of the budget for setup and warm-up; split the rest between seal and open.
    const loopMs = perCaseMs * 0.45;
    const sealPerSec = rate(loopMs, () => {
      sealMessage(sender, keys, plaintext);
    });
    let next = 0;
    const openPerSec = rate(loopMs, () => {
      const i = next++ % ids.length;
      openMessage(ids[i]!, sender.publicKey, sealed.recipients[i]!.wrappedKey, sealed.body);
    });
    rows.push({
      scenario: c.scenario,
      bodyBytes: c.bodyBytes,
      recipients: c.recipients,
      sealPerSec,
      openPerSec,
      sealMBps: (sealPerSec * c.bodyBytes) / 1e6,
      openMBps: (openPerSec * c.bodyBytes) / 1e6,
    });
    await new Promise((resolve) => setImmediate(resolve)); // let the event loop breathe between cases
  }
  return rows;
}

function printTable(rows: SealBenchRow[]): void {
  const header = ['scenario', 'body bytes', 'recipients', 'seal/s', 'open/s', 'seal MB/s', 'open MB/s'];
  const lines = rows.map((r) => [
    r.scenario,
    String(r.bodyBytes),
    String(r.recipients),
    r.sealPerSec.toFixed(1),
    r.openPerSec.toFixed(1),
    r.sealMBps.toFixed(2),
    r.openMBps.toFixed(2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]): string => cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  console.log(fmt(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const l of lines) console.log(fmt(l));
}

/** Runs each case for the baseline, then for this tree, alternating, and prints both and the ratios. */
async function compareWith(baselineDir: string, quick: boolean): Promise<void> {
  const baseline = (await import(pathToFileURL(join(resolve(baselineDir), 'src/crypto/seal.ts')).href)) as SealImplementation;
  const before: SealBenchRow[] = [];
  const after: SealBenchRow[] = [];
  for (const c of CASES) {
    before.push(...(await runSealBench({ quick, implementation: baseline, cases: [c] })));
    after.push(...(await runSealBench({ quick, cases: [c] })));
  }
  console.log(`before: ${baselineDir}`);
  printTable(before);
  console.log('\nafter: this tree');
  printTable(after);
  console.log('');
  for (const [i, a] of after.entries()) {
    const b = before[i]!;
    console.log(`${a.scenario}: seal ${(a.sealPerSec / b.sealPerSec).toFixed(2)}x, open ${(a.openPerSec / b.openPerSec).toFixed(2)}x`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const quick = process.argv.includes('--quick');
  const at = process.argv.indexOf('--baseline');
  console.log(`seal bench (${quick ? 'quick' : 'full'}), node ${process.version}`);
  if (at > 0 && process.argv[at + 1]) await compareWith(process.argv[at + 1]!, quick);
  else printTable(await runSealBench({ quick }));
}
