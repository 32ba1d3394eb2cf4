// Whether the database takes writes. A failed write makes the store unwritable (stores are refused
// STORE_ERROR at once rather than queued behind a database that is away) and starts a probe: a
// transaction that takes the meta row's lock, as every write does, so a standby that only reads
// does not pass. It retries with a growing pause (250 ms doubling to 5 s) until it commits; then
// the store is writable again and says so (onRepaired).
import type pg from 'pg';

export interface HealthEvents {
  onCommitFailure?: (error: unknown) => void;
  onProbeFailed?: (error: unknown, retryInMs: number) => void;
  onRepaired?: (problems: string[]) => void;
}

const FIRST_RETRY_MS = 250;
const MAX_RETRY_MS = 5_000;

export class Health {
  readonly #pool: pg.Pool;
  readonly #events: HealthEvents;
  #writable = true;
  #commitFailures = 0;
  #timer: NodeJS.Timeout | null = null;
  #retryMs = FIRST_RETRY_MS;
  #stopped = false;
  readonly #waiters = new Set<() => void>();

  constructor(pool: pg.Pool, events: HealthEvents) {
    this.#pool = pool;
    this.#events = events;
  }

  get writable(): boolean {
    return this.#writable;
  }

  get commitFailures(): number {
    return this.#commitFailures;
  }

  /** A write failed: count it, report it, and probe until the database takes writes again. */
  failed(error: unknown): void {
    this.#commitFailures++;
    this.#events.onCommitFailure?.(error);
    if (!this.#writable || this.#stopped) return;
    this.#writable = false;
    this.#retryMs = FIRST_RETRY_MS;
    this.#schedule();
  }

  /** Resolves once the store is writable again, or as soon as `stop()` returns true (checked at each probe). */
  recovered(stop: () => boolean): Promise<void> {
    if (this.#writable || stop() || this.#stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.#waiters.delete(done);
        resolve();
      };
      this.#waiters.add(done);
    });
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#wake();
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => void this.#probe(), this.#retryMs);
    this.#timer.unref();
  }

  async #probe(): Promise<void> {
    this.#timer = null;
    try {
      const client = await this.#pool.connect();
      let broken: Error | undefined;
      try {
        await client.query('BEGIN');
        await client.query('SELECT 1 FROM pulltab_meta WHERE id = 1 FOR UPDATE');
        await client.query('COMMIT');
      } catch (err) {
        broken = err instanceof Error ? err : new Error(String(err));
        throw err;
      } finally {
        client.release(broken);
      }
    } catch (err) {
      if (this.#stopped) return;
      const retryInMs = this.#retryMs;
      this.#retryMs = Math.min(MAX_RETRY_MS, this.#retryMs * 2);
      this.#events.onProbeFailed?.(err, retryInMs);
      this.#schedule();
      this.#wake();
      return;
    }
    this.#writable = true;
    this.#events.onRepaired?.([]);
    this.#wake();
  }

  /** Waiters look again: the store is writable, stopped, or a probe failed (a closing store stops waiting). */
  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}
