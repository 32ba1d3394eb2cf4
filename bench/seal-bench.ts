// Sealing and opening rates of src/crypto/seal.ts.
//
//   node --import @tapjs/typescript/import bench/seal-bench.ts           (about 3 s per case)
//   node --import @tapjs/typescript/import bench/seal-bench.ts --quick   (about 1 s per case)
//
// (@tapjs/typescript/import registers tap's ts-node ESM loader; Node 20 cannot run .ts alone.)
// Each case seals one plaintext of bodyBytes to `recipients` keys in a time-bounded loop, then
// opens one sealed message in another loop, rotating through the recipients. Keys are reused
// across iterations, as a client would, so the per-identity and per-recipient caches are warm.
// MB/s counts plaintext bytes, 1 MB = 10^6 bytes.
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { generateIdentity } from '../src/crypto/keys.js';
import { openMessage, sealMessage } from '../src/crypto/seal.js';

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

export async function runSealBench(opts: { quick: boolean }): Promise<SealBenchRow[]> {
  const perCaseMs = opts.quick ? 1000 : 3000;
  const rows: SealBenchRow[] = [];
  const sender = generateIdentity();
  for (const c of CASES) {
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

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const quick = process.argv.includes('--quick');
  console.log(`seal bench (${quick ? 'quick' : 'full'}), node ${process.version}`);
  printTable(await runSealBench({ quick }));
}
