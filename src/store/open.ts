// The engine factory: the one place that knows which engines exist. The relay names an engine in
// its configuration (`store`: "lmdb", or a PostgreSQL URL postgres://USER@HOST:PORT/DB) and gets
// the engine-neutral contract back, so src/server/ never imports an engine.
import { join } from 'node:path';
import type { MailboxLimits, MailboxStore, QuotaHook } from './mailbox.js';
import { openLmdbEngine } from './lmdb/engine.js';
import { openLmdbPolicyStore } from './lmdb/policy.js';
import { MemoryMailbox } from './memory/mailbox.js';
import type { PolicyStore } from './policy-store.js';

/** What an engine reports while it runs; each callback must not throw. */
export interface StoreEvents {
  /** A commit failed (its senders got STORE_ERROR); the store refuses stores until it has recovered. */
  commitFailed(error: unknown): void;
  /** A recovery attempt did not commit; the next one is in retryInMs. */
  probeFailed(error: unknown, retryInMs: number): void;
  /** The store recovered (writable again), with what it found and fixed. */
  repaired(problems: string[]): void;
}

export interface MailboxSettings {
  /** The `store` setting: an engine name or URL (see storeSettingError). */
  store: string;
  /** The relay's data directory (an embedded engine keeps its files under it). */
  dataDir: string;
  limits?: Partial<MailboxLimits>;
  /** Each recipient's own quota (its policy's). */
  quotaFor?: QuotaHook;
  events?: Partial<StoreEvents>;
  /** The store's clock, ms since the epoch (tests inject one). */
  now?: () => number;
}

interface Engine {
  /** Whether a relay may run on it: "stored" must survive a crash. */
  durable: boolean;
  /** Whether several processes may open it each for themselves (a database server); else one owns it. */
  shared?: boolean;
  /** Resolves once the engine is ready (its files or connection open, its schema current). */
  open(settings: MailboxSettings): Promise<MailboxStore>;
  /** Its policy store (policies and assignments live beside the mailboxes). */
  openPolicies?(settings: Pick<MailboxSettings, 'store' | 'dataDir'>): Promise<PolicyStore>;
}

/** The settings every engine takes as they are: limits, the quota hook, the clock (only those given). */
function modelOptions(settings: MailboxSettings): { limits?: Partial<MailboxLimits>; quotaFor?: QuotaHook; now?: () => number } {
  return {
    ...(settings.limits ? { limits: settings.limits } : {}),
    ...(settings.quotaFor ? { quotaFor: settings.quotaFor } : {}),
    ...(settings.now ? { now: settings.now } : {}),
  };
}

/** The engines' failure callbacks, reporting to the relay's StoreEvents. */
function eventHooks(settings: MailboxSettings) {
  const events = settings.events ?? {};
  return {
    onCommitFailure: (err: unknown) => events.commitFailed?.(err),
    onProbeFailed: (err: unknown, retryInMs: number) => events.probeFailed?.(err, retryInMs),
    onRepaired: (problems: string[]) => events.repaired?.(problems),
  };
}

/** Every engine, by the name (or URL scheme) that selects it. */
const ENGINES: Record<string, Engine> = {
  lmdb: {
    durable: true,
    open: async (settings) => {
      const engine = openLmdbEngine({
        path: join(settings.dataDir, 'mailbox'),
        // The relay runs the sweep itself (and logs it), so the store's own timer stays off.
        sweepIntervalMs: 0,
        ...modelOptions(settings),
        ...eventHooks(settings),
      });
      // The sweep run at open has committed (or left the store unwritable, which it reports).
      await engine.lmdb.ready.catch(() => {});
      return engine;
    },
    openPolicies: async (settings) => openLmdbPolicyStore({ path: join(settings.dataDir, 'policies') }),
  },
  // Selected by a postgres:// or postgresql:// URL; shared by every relay that names the database.
  // Loaded only when chosen: a relay on LMDB never loads the PostgreSQL client.
  postgres: {
    durable: true,
    shared: true,
    open: async (settings) => {
      const { openPostgresEngine } = await import('./postgres/engine.js');
      return openPostgresEngine({ url: settings.store, ...modelOptions(settings), ...eventHooks(settings) });
    },
    openPolicies: async (settings) => (await import('./postgres/policy.js')).openPostgresPolicyStore({ url: settings.store }),
  },
  // The reference model: what the contract suite and the property test compare engines against.
  memory: {
    durable: false,
    open: async (settings) => new MemoryMailbox(modelOptions(settings)),
  },
};

/** The engines' names, for tests that run the contract against every one. */
export const ENGINE_NAMES: readonly string[] = Object.keys(ENGINES);

/** The engine a setting names: an engine's name, or a URL whose scheme names one. */
function engineOf(store: string): Engine | undefined {
  if (/^postgres(ql)?:\/\//i.test(store)) return ENGINES.postgres;
  if (store === 'postgres') return undefined; // needs its URL
  return Object.hasOwn(ENGINES, store) ? ENGINES[store] : undefined;
}

/** Why a relay cannot run on this `store` setting (null: it can), in words for a configuration error. */
export function storeSettingError(store: string): string | null {
  const engine = engineOf(store);
  const durable = 'lmdb (embedded), or a PostgreSQL URL postgres://USER@HOST:PORT/DB';
  if (store === 'postgres') return `store "postgres" needs the database's URL: postgres://USER@HOST:PORT/DB`;
  if (engine === undefined) return `unknown store "${redactUrl(store)}": the engines are ${durable}`;
  if (!engine.durable) return `store "${store}" keeps nothing across a restart (it is the tests' model); the engines are ${durable}`;
  return null;
}

/** The setting as it may be logged: a URL's password never is. */
export function redactUrl(store: string): string {
  try {
    const url = new URL(store);
    if (url.password !== '') url.password = '***';
    return url.toString();
  } catch {
    return store;
  }
}

/**
 * Whether every process of a relay opens this store itself (a database server shared by relays), or
 * one process owns it and serves the others (an embedded engine: src/store/remote/).
 */
export function openedByEachProcess(store: string): boolean {
  return engineOf(store)?.shared === true;
}

/** Opens the policy store of the engine the setting names (policies and assignments live beside the mailboxes). */
export async function openPolicyStore(settings: Pick<MailboxSettings, 'store' | 'dataDir'>): Promise<PolicyStore> {
  const error = storeSettingError(settings.store);
  if (error !== null) throw new Error(error);
  return engineOf(settings.store)!.openPolicies!(settings);
}

/** Opens the engine the setting names (any engine, durable or not: the relay's configuration refuses the others). */
export function openMailboxStore(settings: MailboxSettings): Promise<MailboxStore> {
  const engine = engineOf(settings.store);
  if (engine === undefined) return Promise.reject(new Error(storeSettingError(settings.store)!));
  return engine.open(settings);
}
