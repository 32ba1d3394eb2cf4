/**
 * The promises lmdb-js rejects when a commit fails, made harmless. Left unhandled, any one of them
 * ends the process (Node's default for an unhandled rejection), and lmdb-js makes two that no
 * caller ever holds:
 *  - each transaction's start instruction gets a commit promise of its own when lmdb-js begins
 *    the event turn's batch; nobody is handed it, and it rejects with "Commit failed" like the
 *    promises the writes returned;
 *  - every "Commit failed" error carries `commitError`, one promise shared by the failures until
 *    it rejects with the OS's reason (EIO, ENOSPC...).
 * Every store on lmdb-js calls guardOrphanCommits() on its environment once and passes each
 * rejection it handles through absorbCommitError(). The cost is one microtask and one `then` per
 * transaction, nothing per write.
 */
/** What of an lmdb-js root database this needs (any key and value types). */
interface LmdbEnv {
  readonly committed: PromiseLike<unknown>;
  on(event: 'beforecommit', listener: () => void): unknown;
}

const noop = (): void => {};

/** Marks the `commitError` promise of a failed lmdb-js commit as handled; any other value is ignored. */
export function absorbCommitError(error: unknown): void {
  const shared = (error as { commitError?: unknown } | null | undefined)?.commitError;
  if (shared !== null && typeof shared === 'object' && typeof (shared as PromiseLike<unknown>).then === 'function') {
    (shared as PromiseLike<unknown>).then(noop, noop);
  }
}

/**
 * Handles the commit promise lmdb-js makes for each transaction's start. It exists once lmdb-js's
 * event-turn task has run (the `beforecommit` listeners run inside that task, just before it), and
 * is replaced by the next write: a microtask queued from `beforecommit` runs in between.
 */
export function guardOrphanCommits(env: LmdbEnv): void {
  const committed = env.committed;
  const adopt = (): void => {
    committed.then(noop, absorbCommitError);
  };
  env.on('beforecommit', () => queueMicrotask(adopt));
}

/**
 * Reports what made a commit fail: the OS's error when lmdb-js has it (its `commitError`, which
 * has rejected by the time a write's rejection is handled), else the error itself. At most once,
 * and by the next event-loop turn.
 */
export function reportCommitFailure(error: unknown, report: (reason: unknown) => void): void {
  const shared = (error as { commitError?: unknown } | null | undefined)?.commitError;
  if (shared === null || typeof shared !== 'object' || typeof (shared as PromiseLike<unknown>).then !== 'function') {
    report(error);
    return;
  }
  let told = false;
  const once = (reason: unknown): void => {
    if (told) return;
    told = true;
    report(reason ?? error);
  };
  (shared as PromiseLike<unknown>).then(() => once(error), once);
  // It may also stay pending (a write refused inside an otherwise sound transaction).
  setImmediate(() => once(error));
}

/** How long close() waits for lmdb-js after a failed last commit (see closeEnv). */
const CLOSE_AFTER_FAILURE_MS = 1000;

/**
 * Closes an lmdb-js environment. lmdb-js's close() first waits for the flush of the last
 * transaction, and when that transaction failed its flush promise never settles: close() would
 * hang forever (a relay on a full disk could not stop). After a failed last commit, this waits
 * at most CLOSE_AFTER_FAILURE_MS; nothing is lost, since that transaction did not commit.
 */
export async function closeEnv(env: { close(): Promise<void> }, lastCommitFailed: boolean): Promise<void> {
  const closing = env.close();
  if (!lastCommitFailed) return closing;
  let timer: NodeJS.Timeout | undefined;
  const gaveUp = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, CLOSE_AFTER_FAILURE_MS);
  });
  try {
    await Promise.race([closing.then(() => {}, () => {}), gaveUp]);
  } finally {
    clearTimeout(timer);
  }
}
