/**
 * The LMDB policy store: its own small environment (by default `<data>/policies/`, a sibling of the
 * mailbox store), read into memory (a PolicyTable) at open. Reads answer from memory; each write is
 * checked and applied to memory at once and resolves when its LMDB transaction has committed
 * (default sync settings: durable across kill -9). If a commit ever fails, the caller's promise
 * rejects and memory is reloaded from disk. The contract is src/store/policy-store.ts.
 *
 * Layout (every value is UTF-8 JSON with every field explicit):
 *   policies  key name (UTF-8)   val { "format": 1, "policy": Policy, "updatedAt": ms }
 *   users     key key (32)       val { "policy": name, "updatedAt": ms }
 *   blocked   key key (32)       val { "blockedAt": ms }
 *   meta      key 'format'       val 1
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import { z } from 'zod';
import { policySchema, type Policy } from '../../policy/policy.js';
import type { Assignment } from '../../policy/view.js';
import { PolicyStoreError, type PolicySnapshot, type PolicyStore } from '../policy-store.js';
import { PolicyTable } from '../policy-table.js';
import { absorbCommitError, closeEnv, guardOrphanCommits } from './commit-errors.js';

const FORMAT = 1;
const FORMAT_KEY = Buffer.from('format');

type Bin = Database<Buffer, Buffer>;

const policyRecord = z.object({ format: z.literal(FORMAT), policy: policySchema, updatedAt: z.number() }).strict();
const userRecord = z.object({ policy: z.string(), updatedAt: z.number() }).strict();

export interface LmdbPolicyOptions {
  /** Directory of the LMDB environment (created if missing). */
  path: string;
  now?: () => number;
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

function parse<T>(schema: z.ZodType<T>, value: Buffer, what: string): T {
  let data: unknown;
  try {
    data = JSON.parse(value.toString('utf8'));
  } catch {
    throw new Error(`policy store: ${what} is not JSON`);
  }
  const result = schema.safeParse(data);
  if (!result.success) throw new Error(`policy store: ${what} is invalid: ${result.error.issues[0]?.message}`);
  return result.data;
}

class LmdbPolicyStore implements PolicyStore {
  private readonly env: RootDatabase<Buffer, Buffer>;
  private readonly policiesDb: Bin;
  private readonly usersDb: Bin;
  private readonly blockedDb: Bin;
  private readonly metaDb: Bin;
  private readonly clock: () => number;
  /** Everything stored, as of the last write issued. */
  private readonly table = new PolicyTable();
  private closed = false;
  /** The last commit failed (lmdb-js's close() then never finishes: closeEnv()). */
  private lastCommitFailed = false;

  constructor(options: LmdbPolicyOptions) {
    this.clock = options.now ?? Date.now;
    this.env = open<Buffer, Buffer>({ path: options.path, maxDbs: 8, keyEncoding: 'binary', encoding: 'binary' });
    try {
      const sub = (name: string): Bin => this.env.openDB<Buffer, Buffer>({ name, keyEncoding: 'binary', encoding: 'binary' });
      this.policiesDb = sub('policies');
      this.usersDb = sub('users');
      this.blockedDb = sub('blocked');
      this.metaDb = sub('meta');
      const format = this.metaDb.getBinary(FORMAT_KEY);
      if (format === undefined) this.metaDb.putSync(FORMAT_KEY, json(FORMAT));
      else if (JSON.parse(format.toString('utf8')) !== FORMAT) {
        throw new Error(`policy store at ${options.path} has format ${format.toString('utf8')}, expected ${FORMAT}`);
      }
      this.load();
    } catch (err) {
      this.env.close().then(() => {}, () => {});
      throw err;
    }
    // A failed commit (a full disk) rejects the admin command, never the process.
    guardOrphanCommits(this.env);
  }

  /** (Re)reads everything from LMDB into memory. */
  private load(): void {
    const policies: Policy[] = [];
    const assignments: Assignment[] = [];
    const blocked: Uint8Array[] = [];
    for (const { key, value } of this.policiesDb.getRange({})) {
      const name = key.toString('utf8');
      policies.push(parse(policyRecord, value, `policy ${JSON.stringify(name)}`).policy);
    }
    for (const { key, value } of this.usersDb.getRange({})) {
      assignments.push({ user: Buffer.from(key), policy: parse(userRecord, value, 'a user assignment').policy });
    }
    for (const key of this.blockedDb.getKeys({})) blocked.push(Buffer.from(key));
    this.table.load({ policies, assignments, blocked });
  }

  /** Resolves when the write has committed; on failure reloads memory from disk and rejects. */
  private async commit(write: Promise<unknown>): Promise<void> {
    try {
      await write;
      this.lastCommitFailed = false;
    } catch (err) {
      absorbCommitError(err);
      this.lastCommitFailed = true;
      if (!this.closed) {
        try { this.load(); } catch { /* keep what memory has; the next open reports the problem */ }
      }
      throw err;
    }
  }

  private live(): void {
    if (this.closed) throw new PolicyStoreError('CLOSED', 'policy store is closed');
  }

  async snapshot(): Promise<PolicySnapshot> {
    this.live();
    return this.table.snapshot();
  }

  async setPolicy(policy: Policy): Promise<void> {
    this.live();
    const clean = this.table.setPolicy(policy);
    await this.commit(this.policiesDb.put(Buffer.from(clean.name, 'utf8'), json({ format: FORMAT, policy: clean, updatedAt: this.clock() })));
  }

  async removePolicy(name: string): Promise<void> {
    this.live();
    this.table.removePolicy(name);
    await this.commit(this.policiesDb.remove(Buffer.from(name, 'utf8')));
  }

  async assign(user: Uint8Array, name: string): Promise<void> {
    this.live();
    this.table.assign(user, name);
    await this.commit(this.usersDb.put(Buffer.from(user), json({ policy: name, updatedAt: this.clock() })));
  }

  async unassign(user: Uint8Array): Promise<boolean> {
    this.live();
    if (!this.table.unassign(user)) return false;
    await this.commit(this.usersDb.remove(Buffer.from(user)));
    return true;
  }

  async block(user: Uint8Array): Promise<boolean> {
    this.live();
    if (!this.table.block(user)) return false;
    await this.commit(this.blockedDb.put(Buffer.from(user), json({ blockedAt: this.clock() })));
    return true;
  }

  async unblock(user: Uint8Array): Promise<boolean> {
    this.live();
    if (!this.table.unblock(user)) return false;
    await this.commit(this.blockedDb.remove(Buffer.from(user)));
    return true;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await closeEnv(this.env, this.lastCommitFailed);
  }
}

export function openLmdbPolicyStore(options: LmdbPolicyOptions): PolicyStore {
  return new LmdbPolicyStore(options);
}
