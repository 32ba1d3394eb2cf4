/**
 * verify() and repair(): everything derived from the entries (usage records and counters,
 * shared-body refcounts, the replacement index, expiry marks, the seq counter) recomputed from the
 * entries (./consistency.ts) and compared with what is stored; repair() then writes what disagrees,
 * in one transaction with the removal of a recovery probe and the kept acknowledgements
 * (./recovery.ts runs it to end a recovery). While it runs, the operations that write wait.
 */
import type { Counters } from './counters.js';
import { checkConsistency } from './consistency.js';
import type { MailboxTables } from './environment.js';
import type { StoredEntries } from './entries.js';
import type { KeptAcks } from './kept-acks.js';
import { PROBE_KEY, SEQ_KEY, u64Value } from './layout.js';
import type { Overlays } from './overlays.js';
import { CLOSED, type StoreStatus } from './status.js';
import { mustHaveCommitted, newOperation, type Operation, type Writes } from './writes.js';

const noop = (): void => {};

export class Repair {
  constructor(
    private readonly tables: MailboxTables,
    private readonly status: StoreStatus,
    private readonly counters: Counters,
    private readonly overlays: Overlays,
    private readonly writes: Writes,
    private readonly storedEntries: StoredEntries,
    private readonly keptAcks: KeptAcks,
  ) {}

  /** Checks usage, refcounts and indexes against the entries; returns the problems found (none: []). */
  async verify(): Promise<string[]> {
    if (this.status.closed) throw new Error(CLOSED);
    await this.writes.idle();
    while (this.writes.inflight > 0) await this.writes.idle();
    return this.#check().problems;
  }

  /** Like verify(), then rewrites everything derived from the entries to agree with them; the store is writable after. */
  async repair(): Promise<string[]> {
    const status = this.status;
    if (status.closed) throw new Error(CLOSED);
    while (status.repairRunning) await status.repairRunning;
    let release = noop;
    status.repairRunning = new Promise<void>((resolve) => {
      release = resolve;
    });
    try {
      await this.writes.idle();
      // Every write has settled: LMDB answers for all of it.
      this.overlays.clear();
      this.storedEntries.forgetMarks();
      const { problems, fix } = this.#check();
      const op = newOperation();
      fix(op);
      if (this.tables.meta.getBinary(PROBE_KEY) !== undefined) this.writes.remove(this.tables.meta, PROBE_KEY, op);
      this.keptAcks.deleteAll(this.storedEntries, op);
      mustHaveCommitted(await this.writes.joinBatch());
      this.keptAcks.done();
      status.writable = true;
      return problems;
    } finally {
      status.repairRunning = null;
      release();
    }
  }

  /** The problems, and the writes (into op) that make the stored data and the counters agree with the entries. */
  #check(): { problems: string[]; fix: (op: Operation) => void } {
    const counters = this.counters;
    const report = checkConsistency(this.tables, { usage: counters.byRecipient, count: counters.totalCount, bytes: counters.totalBytes });
    return {
      problems: report.problems,
      fix: (op) => {
        const writes = this.writes;
        for (const f of report.fixes) {
          if (f.value === null) writes.remove(f.db, f.key, op);
          else writes.put(f.db, f.key, f.value, op);
        }
        counters.reset(report.usage, report.count, report.bytes, report.maxSeq);
        writes.put(this.tables.meta, SEQ_KEY, u64Value(counters.lastSeq), op);
      },
    };
  }
}
