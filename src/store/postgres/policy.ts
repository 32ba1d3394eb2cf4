// The PostgreSQL policy store (contract: src/store/policy-store.ts): the tables of schema version 2,
// shared by every relay on the database. Each write is one transaction that also bumps
// pulltab_policy_version, which relays poll (version()) to reload what another relay changed. The
// rules are the database's: the foreign key refuses an assignment to a policy that does not exist
// (NOT_FOUND) and the removal of one still assigned (IN_USE), whatever a relay's cache believed.
import type pg from 'pg';
import { validatePolicy, type Policy } from '../../policy/policy.js';
import { PolicyStoreError, type PolicySnapshot, type PolicyStore } from '../policy-store.js';
import { checkKey } from '../policy-table.js';
import { createPool } from './engine.js';
import { migrateWith } from './migrate.js';

const FOREIGN_KEY_VIOLATION = '23503';

export interface PostgresPolicyOptions {
  url: string;
  now?: () => number;
}

export class PostgresPolicyStore implements PolicyStore {
  readonly #pool: pg.Pool;
  readonly #clock: () => number;
  #closed = false;

  constructor(pool: pg.Pool, options: PostgresPolicyOptions) {
    this.#pool = pool;
    this.#clock = options.now ?? Date.now;
  }

  async snapshot(): Promise<PolicySnapshot> {
    this.#live();
    const [policies, assignments, blocked] = await Promise.all([
      this.#pool.query<{ policy: Policy }>('SELECT policy FROM pulltab_policies ORDER BY name COLLATE "C"'),
      this.#pool.query<{ recipient: Buffer; policy: string }>('SELECT recipient, policy FROM pulltab_assignments ORDER BY recipient'),
      this.#pool.query<{ recipient: Buffer }>('SELECT recipient FROM pulltab_blocked ORDER BY recipient'),
    ]);
    return {
      policies: policies.rows.map((r) => r.policy),
      assignments: assignments.rows.map((r) => ({ user: r.recipient, policy: r.policy })),
      blocked: blocked.rows.map((r) => r.recipient),
    };
  }

  /** Bumped by every write: a relay that sees it change reloads its copy. */
  async version(): Promise<number> {
    this.#live();
    const { rows } = await this.#pool.query<{ version: string }>('SELECT version FROM pulltab_policy_version WHERE id = 1');
    return Number(rows[0]!.version);
  }

  async setPolicy(policy: Policy): Promise<void> {
    this.#live();
    const checked = validatePolicy(policy);
    if (!checked.ok) throw new PolicyStoreError('INVALID', `invalid policy: ${checked.problems}`);
    await this.#write('INSERT INTO pulltab_policies (name, policy, updated_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET policy = EXCLUDED.policy, updated_at = EXCLUDED.updated_at',
      [checked.policy.name, JSON.stringify(checked.policy), this.#clock()]);
  }

  async removePolicy(name: string): Promise<void> {
    this.#live();
    let removed: number;
    try {
      removed = await this.#write('DELETE FROM pulltab_policies WHERE name = $1', [name]);
    } catch (err) {
      if (codeOf(err) !== FOREIGN_KEY_VIOLATION) throw err;
      const { rows } = await this.#pool.query<{ n: string }>('SELECT count(*) AS n FROM pulltab_assignments WHERE policy = $1', [name]);
      const users = Number(rows[0]?.n ?? 0);
      throw new PolicyStoreError('IN_USE', `policy ${JSON.stringify(name)} is assigned to ${users} key${users === 1 ? '' : 's'}; assign them another policy first`);
    }
    if (removed === 0) throw new PolicyStoreError('NOT_FOUND', `no policy named ${JSON.stringify(name)}`);
  }

  async assign(user: Uint8Array, name: string): Promise<void> {
    this.#live();
    checkKey(user);
    try {
      await this.#write('INSERT INTO pulltab_assignments (recipient, policy, updated_at) VALUES ($1, $2, $3) ON CONFLICT (recipient) DO UPDATE SET policy = EXCLUDED.policy, updated_at = EXCLUDED.updated_at',
        [Buffer.from(user), name, this.#clock()]);
    } catch (err) {
      if (codeOf(err) === FOREIGN_KEY_VIOLATION) throw new PolicyStoreError('NOT_FOUND', `no policy named ${JSON.stringify(name)}`);
      throw err;
    }
  }

  async unassign(user: Uint8Array): Promise<boolean> {
    this.#live();
    checkKey(user);
    return (await this.#write('DELETE FROM pulltab_assignments WHERE recipient = $1', [Buffer.from(user)])) > 0;
  }

  async block(user: Uint8Array): Promise<boolean> {
    this.#live();
    checkKey(user);
    return (await this.#write('INSERT INTO pulltab_blocked (recipient, blocked_at) VALUES ($1, $2) ON CONFLICT DO NOTHING', [Buffer.from(user), this.#clock()])) > 0;
  }

  async unblock(user: Uint8Array): Promise<boolean> {
    this.#live();
    checkKey(user);
    return (await this.#write('DELETE FROM pulltab_blocked WHERE recipient = $1', [Buffer.from(user)])) > 0;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.end();
  }

  /** One statement and the version bump, in one transaction; resolves with the rows it changed. */
  async #write(text: string, params: unknown[]): Promise<number> {
    const client = await this.#pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await client.query(text, params);
      if ((result.rowCount ?? 0) > 0) await client.query('UPDATE pulltab_policy_version SET version = version + 1 WHERE id = 1');
      await client.query('COMMIT');
      return result.rowCount ?? 0;
    } catch (err) {
      await client.query('ROLLBACK').catch((rollback: unknown) => (broken = rollback instanceof Error ? rollback : new Error(String(rollback))));
      throw err;
    } finally {
      client.release(broken);
    }
  }

  #live(): void {
    if (this.#closed) throw new PolicyStoreError('CLOSED', 'policy store is closed');
  }
}

export async function openPostgresPolicyStore(options: PostgresPolicyOptions): Promise<PostgresPolicyStore> {
  const pool = createPool(options.url, 2);
  try {
    await migrateWith(pool);
    return new PostgresPolicyStore(pool, options);
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
}

function codeOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}
