/**
 * Mailbox storage benchmark (LMDB store, real disk, default durable commits).
 *
 *   store  enqueue bodies to many offline recipients, one recipient per message, with a bounded
 *          number in flight, as the router does (enqueueNow, then one durable() per turn); only
 *          ok outcomes whose commit succeeded count.
 *   drain  read each recipient's mailbox in batches (readEach, as the router) and acknowledge each
 *          batch, with a bounded number of ack batches in flight; only acks that resolved count.
 *
 * Run: node --import @tapjs/typescript/import bench/store-bench.ts [--quick] [--dir /path] [--recipients N]
 * (or import runStoreBench from the harness).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { openLmdbMailbox, type LmdbMailboxStore } from '../src/store/lmdb/mailbox.js';

export interface StoreBenchRow {
  scenario: 'store' | 'drain';
  bodyBytes: number;
  /** Distinct recipients the messages go to, round robin. */
  recipients: number;
  messages: number;
  msgsPerSec: number;
  MBps: number;
  /** Process CPU time (all threads: JS and LMDB writers) per message, in µs: robust to a busy machine. */
  cpuUsPerMsg: number;
  /** CPU time of the JS thread alone per message, in µs (Linux /proc; null elsewhere). */
  mainCpuUsPerMsg: number | null;
}

export interface StoreBenchOptions {
  quick: boolean;
  /** Parent directory for the temporary LMDB environments (default: the OS temp dir). */
  dir?: string;
  /** Body sizes to run (default: 1 KiB when quick, 64 B, 1 KiB and 16 KiB otherwise). */
  bodySizes?: number[];
  recipients?: number;
  inFlight?: number;
  batch?: number;
  /** Seconds per scenario (default 2 when quick, 10 otherwise). */
  seconds?: number;
}

const WRAPPED_KEY_BYTES = 48;

/** CPU time of this process's JS thread in µs, from /proc (the main thread's tid is the pid); NaN elsewhere. */
function mainThreadCpuUs(): number {
  try {
    const stat = readFileSync(`/proc/${process.pid}/task/${process.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) / 100) * 1e6; // clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}

function recipientKeys(n: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => {
    const k = new Uint8Array(32);
    for (let j = 0; j < 32; j++) k[j] = (i * 2654435761 + j * 40503) >>> (j % 24) & 0xff;
    k[0] = i >> 8;
    k[1] = i & 0xff;
    return k;
  });
}

async function storeScenario(store: LmdbMailboxStore, keys: Uint8Array[], bodyBytes: number, inFlight: number,
  seconds: number): Promise<{ messages: number; elapsed: number; cpuUs: number; mainUs: number }> {
  const cpu0 = process.cpuUsage();
  const main0 = mainThreadCpuUs();
  const sender = new Uint8Array(32).fill(7);
  const body = new Uint8Array(bodyBytes).map((_, i) => (i * 31) & 0xff);
  const wrappedKey = new Uint8Array(WRAPPED_KEY_BYTES).fill(9);
  let issued = 0;
  let ok = 0;
  let refused = 0;
  let pending = 0;
  const start = performance.now();
  const deadline = start + seconds * 1000;
  await new Promise<void>((resolve) => {
    let stopping = false;
    // As the router stores: each turn's enqueues decided at once, then one promise for their commit.
    const pump = (): void => {
      let accepted = 0;
      let n = 0;
      for (; pending + n < inFlight; n++) {
        const to = keys[issued++ % keys.length]!;
        const outcomes = store.enqueueNow({ sender, storageKey: null, ttlSeconds: 86_400, body, recipients: [{ key: to, wrappedKey }] });
        if (outcomes[0]!.ok) accepted++;
        else refused++;
      }
      if (n === 0) return;
      pending += n;
      void store.durable().then((committed) => {
        pending -= n;
        if (committed) ok += accepted;
        else refused += accepted;
        if (!stopping && performance.now() >= deadline) stopping = true;
        if (stopping) {
          if (pending === 0) resolve();
        } else {
          pump();
        }
      });
    };
    pump();
  });
  if (refused > 0) throw new Error(`store scenario: ${refused} enqueues refused (raise the limits)`);
  const cpu = process.cpuUsage(cpu0);
  return { messages: ok, elapsed: (performance.now() - start) / 1000, cpuUs: cpu.user + cpu.system, mainUs: mainThreadCpuUs() - main0 };
}

async function drainScenario(store: LmdbMailboxStore, keys: Uint8Array[], batch: number, inFlightBatches: number,
  seconds: number): Promise<{ messages: number; elapsed: number; cpuUs: number; mainUs: number }> {
  const cpu0 = process.cpuUsage();
  const main0 = mainThreadCpuUs();
  const after = new Map<number, number>();
  let acked = 0;
  let pending = 0;
  const start = performance.now();
  const deadline = start + seconds * 1000;
  let next = 0;
  let emptyInARow = 0;
  await new Promise<void>((resolve) => {
    let stopping = false;
    const pump = (): void => {
      while (!stopping && pending < inFlightBatches) {
        const i = next++ % keys.length;
        const key = keys[i]!;
        // As the router drains: entries lent to a visitor (which only notes the seq here).
        const seqs: number[] = [];
        store.readEach(key, after.get(i) ?? 0, batch, (entry) => { seqs.push(entry.seq); });
        if (seqs.length === 0) {
          if (++emptyInARow >= keys.length) stopping = true; // every mailbox is empty
          continue;
        }
        emptyInARow = 0;
        after.set(i, seqs[seqs.length - 1]!);
        pending++;
        store.ack(key, seqs).then(() => {
          pending--;
          acked += seqs.length;
          if (!stopping && performance.now() >= deadline) stopping = true;
          if (stopping) {
            if (pending === 0) resolve();
          } else setImmediate(pump);
        });
      }
      if (stopping && pending === 0) resolve();
    };
    pump();
  });
  const cpu = process.cpuUsage(cpu0);
  return { messages: acked, elapsed: (performance.now() - start) / 1000, cpuUs: cpu.user + cpu.system, mainUs: mainThreadCpuUs() - main0 };
}

export async function runStoreBench(opts: StoreBenchOptions): Promise<StoreBenchRow[]> {
  const sizes = opts.bodySizes ?? (opts.quick ? [1024] : [64, 1024, 16 * 1024]);
  const seconds = opts.seconds ?? (opts.quick ? 2 : 10);
  const recipients = opts.recipients ?? 1000;
  const inFlight = opts.inFlight ?? 5000;
  const batch = opts.batch ?? 256;
  const keys = recipientKeys(recipients);
  const rows: StoreBenchRow[] = [];
  for (const bodyBytes of sizes) {
    const dir = mkdtempSync(join(opts.dir ?? tmpdir(), 'pulltab-store-bench-'));
    const store = openLmdbMailbox({
      path: dir,
      sweepIntervalMs: 0,
      mapSize: 4 * 1024 * 1024 * 1024,
      limits: { maxCountPerRecipient: 1e9, maxBytesPerRecipient: 1e15, maxTotalBytes: 1e15 },
    });
    try {
      await store.ready;
      const stored = await storeScenario(store, keys, bodyBytes, inFlight, seconds);
      rows.push(row('store', bodyBytes, recipients, stored));
      const drained = await drainScenario(store, keys, batch, Math.max(1, Math.floor(inFlight / batch)), seconds);
      rows.push(row('drain', bodyBytes, recipients, drained));
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return rows;
}

function row(scenario: 'store' | 'drain', bodyBytes: number, recipients: number,
  run: { messages: number; elapsed: number; cpuUs: number; mainUs: number }): StoreBenchRow {
  const { messages } = run;
  const msgsPerSec = messages / run.elapsed;
  const perMsg = (us: number): number => (messages > 0 ? Math.round((us / messages) * 10) / 10 : 0);
  return {
    scenario, bodyBytes, recipients, messages,
    msgsPerSec: Math.round(msgsPerSec),
    MBps: Math.round((msgsPerSec * bodyBytes) / 1e5) / 10,
    cpuUsPerMsg: perMsg(run.cpuUs),
    mainCpuUsPerMsg: Number.isFinite(run.mainUs) ? perMsg(run.mainUs) : null,
  };
}

export function formatStoreBench(rows: StoreBenchRow[]): string {
  const lines = ['scenario  body B  recipients   messages    msgs/s     MB/s  cpu µs/msg  JS thread µs/msg'];
  for (const r of rows) {
    lines.push(`${r.scenario.padEnd(8)} ${String(r.bodyBytes).padStart(7)} ${String(r.recipients).padStart(11)} ${String(r.messages).padStart(10)} ${String(r.msgsPerSec).padStart(9)} ${r.MBps.toFixed(1).padStart(8)} ${r.cpuUsPerMsg.toFixed(1).padStart(11)} ${(r.mainCpuUsPerMsg === null ? '-' : r.mainCpuUsPerMsg.toFixed(1)).padStart(17)}`);
  }
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const value = (flag: string): string | undefined => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const dir = value('--dir');
  const recipients = value('--recipients');
  const rows = await runStoreBench({
    quick: args.includes('--quick'),
    ...(dir !== undefined ? { dir } : {}),
    ...(recipients !== undefined ? { recipients: Number(recipients) } : {}),
  });
  console.log(formatStoreBench(rows));
}
