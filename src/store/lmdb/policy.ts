/**
 * The LMDB policy store: its own small environment (by default `<data>/policies/`, a sibling of the
 * mailbox store), read into memory at open. Reads answer from memory; each write updates memory at
 * once and resolves when its LMDB transaction has committed (default sync settings: durable across
 * kill -9). If a commit ever fails, the caller's promise rejects and memory is reloaded from disk.
 *
 * Layout (every value is UTF-8 JSON with every field explicit):
 *   policies  key name (UTF-8)   val { "format": 1, "policy": Policy, "updatedAt": ms }
 *   users     key key (32)       val { "policy": name, "updatedAt": ms }
 *   blocked   key key (32)       val { "blockedAt": ms }
 *   meta      key 'format'       val 1
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import { z } from 'zod';
import { absorbCommitError, closeEnv, guardOrphanCommits } from './commit-errors.js';
import {
  policySchema, PolicyStoreError, type Assignment, type Policy, type PolicyStore,
} from '../policy.js';

const FORMAT = 1;
const FORMAT_KEY = Buffer.from('format');
const KEY_BYTES = 32;

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

function keyId(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
}

function checkKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) throw new PolicyStoreError('INVALID', 'a key is 32 bytes');
}

class LmdbPolicyStore implements PolicyStore {
  private readonly env: RootDatabase<Buffer, Buffer>;
  private readonly policiesDb: Bin;
  private readonly usersDb: Bin;
  private readonly blockedDb: Bin;
  private readonly metaDb: Bin;
  private readonly clock: () => number;
  private readonly byName = new Map<string, Policy>();
  /** keyId (latin1) → policy name */
  private readonly users = new Map<string, string>();
  private readonly blockedSet = new Set<string>();
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
    this.byName.clear();
    this.users.clear();
    this.blockedSet.clear();
    for (const { key, value } of this.policiesDb.getRange({})) {
      const name = key.toString('utf8');
      const record = parse(policyRecord, value, `policy ${JSON.stringify(name)}`);
      this.byName.set(name, record.policy);
    }
    for (const { key, value } of this.usersDb.getRange({})) {
      const record = parse(userRecord, value, 'a user assignment');
      this.users.set(key.toString('latin1'), record.policy);
    }
    for (const key of this.blockedDb.getKeys({})) this.blockedSet.add(key.toString('latin1'));
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

  policy(name: string): Policy | undefined {
    return this.byName.get(name);
  }

  policies(): Policy[] {
    return [...this.byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  assignment(user: Uint8Array): string | undefined {
    // On every stored message's path (quotas): skip the key conversion when nobody is assigned.
    return this.users.size === 0 ? undefined : this.users.get(keyId(user));
  }

  assignments(): Assignment[] {
    return [...this.users].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .map(([id, policy]) => ({ user: Buffer.from(id, 'latin1'), policy }));
  }

  assignedCount(name: string): number {
    let n = 0;
    for (const policy of this.users.values()) if (policy === name) n++;
    return n;
  }

  isBlocked(user: Uint8Array): boolean {
    return this.blockedSet.size > 0 && this.blockedSet.has(keyId(user));
  }

  blocked(): Uint8Array[] {
    return [...this.blockedSet].sort().map((id) => Buffer.from(id, 'latin1'));
  }

  async setPolicy(policy: Policy): Promise<void> {
    this.live();
    const result = policySchema.safeParse(policy);
    if (!result.success) throw new PolicyStoreError('INVALID', `invalid policy: ${result.error.issues.map((i) => `${i.path.join('.') || 'policy'}: ${i.message}`).join('; ')}`);
    const clean = result.data;
    this.byName.set(clean.name, clean);
    await this.commit(this.policiesDb.put(Buffer.from(clean.name, 'utf8'), json({ format: FORMAT, policy: clean, updatedAt: this.clock() })));
  }

  async removePolicy(name: string): Promise<void> {
    this.live();
    if (!this.byName.has(name)) throw new PolicyStoreError('NOT_FOUND', `no policy named ${JSON.stringify(name)}`);
    const users = this.assignedCount(name);
    if (users > 0) throw new PolicyStoreError('IN_USE', `policy ${JSON.stringify(name)} is assigned to ${users} key${users === 1 ? '' : 's'}; assign them another policy first`);
    this.byName.delete(name);
    await this.commit(this.policiesDb.remove(Buffer.from(name, 'utf8')));
  }

  async assign(user: Uint8Array, name: string): Promise<void> {
    this.live();
    checkKey(user);
    if (!this.byName.has(name)) throw new PolicyStoreError('NOT_FOUND', `no policy named ${JSON.stringify(name)}`);
    this.users.set(keyId(user), name);
    await this.commit(this.usersDb.put(Buffer.from(user), json({ policy: name, updatedAt: this.clock() })));
  }

  async unassign(user: Uint8Array): Promise<boolean> {
    this.live();
    checkKey(user);
    if (!this.users.delete(keyId(user))) return false;
    await this.commit(this.usersDb.remove(Buffer.from(user)));
    return true;
  }

  async block(user: Uint8Array): Promise<boolean> {
    this.live();
    checkKey(user);
    const id = keyId(user);
    if (this.blockedSet.has(id)) return false;
    this.blockedSet.add(id);
    await this.commit(this.blockedDb.put(Buffer.from(user), json({ blockedAt: this.clock() })));
    return true;
  }

  async unblock(user: Uint8Array): Promise<boolean> {
    this.live();
    checkKey(user);
    if (!this.blockedSet.delete(keyId(user))) return false;
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
