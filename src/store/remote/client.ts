// The hosted store's worker side: the mailbox contract (../mailbox.ts) and the policy store contract
// (../policy-store.ts) answered by the process that owns the store (./host.ts), over one Unix-domain
// socket (./wire.ts). Every call made in one event-loop turn leaves in one batch.
//
// The engine decides on the host, so accept() is undecided (`decided: false`): the router then
// sends a storable message through the mailbox, as with a database server. status() and limits()
// answer from the state the host sent last. If the host goes away every call still waiting fails
// (an accept with STORE_ERROR: nothing is promised), the store reads as unwritable, and onLost runs.
import { connect, type Socket } from 'node:net';
import type {
  Accepted, EnqueueOutcome, EnqueueRequest, MailboxEntry, MailboxLimits, MailboxStore, StoreStatus, Totals, Usage,
} from '../mailbox.js';
import { PolicyStoreError, type PolicySnapshot, type PolicyStore } from '../policy-store.js';
import type { Policy } from '../../policy/policy.js';
import { BatchWriter, readBatches, type Answer, type Call, type HostState, type WireError } from './wire.js';

interface Waiting {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

const LOST: StoreStatus = Object.freeze({ engine: 'hosted', writable: false, commitFailures: 0, fileBytes: null });

/** The connection to the host, shared by the two stores. */
export class HostLink {
  readonly #socket: Socket;
  readonly #out: BatchWriter<Call>;
  readonly #waiting = new Map<number, Waiting>();
  #nextId = 1;
  #state: HostState | null = null;
  #lost = false;
  #closing = false;
  /** Runs once when the host's connection is gone (the worker cannot store any more). */
  onLost: ((err: Error) => void) | null = null;

  private constructor(socket: Socket) {
    this.#socket = socket;
    this.#out = new BatchWriter<Call>(socket);
  }

  /** Connects and resolves once the host has said what it is. */
  static open(path: string): Promise<HostLink> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      const link = new HostLink(socket);
      let opened = false;
      socket.once('error', (err) => {
        if (!opened) reject(new Error(`cannot reach the store host at ${path}: ${err.message}`));
      });
      socket.on('error', () => {});
      socket.on('close', () => link.#lose(new Error('the store host went away')));
      readBatches<Answer>(socket, (answer) => {
        link.#answer(answer);
        if (!opened && link.#state !== null) {
          opened = true;
          resolve(link);
        }
      });
    });
  }

  get state(): HostState | null {
    return this.#lost ? null : this.#state;
  }

  call<T>(method: string, ...args: unknown[]): Promise<T> {
    if (this.#lost) return Promise.reject(new Error('the store host went away'));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#waiting.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.#out.push([id, method, ...args]);
    });
  }

  /** Lets go of the host (the worker is stopping): not reported as lost. */
  close(): void {
    this.#closing = true;
    this.#socket.end();
  }

  #answer([id, value, error]: Answer): void {
    if (id === 0) {
      // The state leading a batch, or an empty answer that only made the host send one.
      if (value !== undefined) this.#state = value as HostState;
      return;
    }
    const waiting = this.#waiting.get(id);
    if (waiting === undefined) return;
    this.#waiting.delete(id);
    if (error === undefined) waiting.resolve(value);
    else waiting.reject(errorOf(error));
  }

  #lose(err: Error): void {
    if (this.#lost) return;
    this.#lost = true;
    for (const waiting of this.#waiting.values()) waiting.reject(err);
    this.#waiting.clear();
    if (!this.#closing) this.onLost?.(err);
  }
}

function errorOf(error: WireError): Error {
  if (error.policyCode !== undefined) return new PolicyStoreError(error.policyCode as PolicyStoreError['code'], error.message);
  return new Error(error.message);
}

/** The accepts of one event-loop turn. */
interface Turn {
  answers: Promise<boolean>[];
  settled: Promise<boolean>;
}

export class HostedMailboxStore implements MailboxStore {
  readonly #link: HostLink;
  #closed = false;
  #turn: Turn | null = null;

  constructor(link: HostLink) {
    this.#link = link;
  }

  accept(request: EnqueueRequest): Accepted {
    const n = request.recipients.length;
    const outcomes: EnqueueOutcome[] = new Array(n);
    if (this.#closed || !this.status().writable) {
      for (let i = 0; i < n; i++) outcomes[i] = STORE_ERROR;
      return { outcomes, decided: true, settled: NOTHING_TO_COMMIT };
    }
    // Only what the contract names crosses (the request's buffers are views of a socket chunk).
    const sent = { sender: request.sender, storageKey: request.storageKey, ttlSeconds: request.ttlSeconds, body: request.body,
      recipients: request.recipients.map((r) => ({ key: r.key, wrappedKey: r.wrappedKey })) };
    const answered = this.#link.call<[EnqueueOutcome[], boolean]>('accept', sent).then(([decided, committed]) => {
      // A request whose own commit failed stored nothing, whatever the others of its turn did.
      for (let i = 0; i < n; i++) outcomes[i] = committed ? decided[i] ?? STORE_ERROR : STORE_ERROR;
      return committed;
    }, () => {
      for (let i = 0; i < n; i++) outcomes[i] = STORE_ERROR;
      return false;
    });
    return { outcomes, decided: false, settled: this.#joinTurn(answered) };
  }

  /** The requests of one turn share one settled promise: true once every one of them has committed. */
  #joinTurn(answered: Promise<boolean>): Promise<boolean> {
    let turn = this.#turn;
    if (turn === null) {
      const fresh: Turn = { answers: [], settled: null as unknown as Promise<boolean> };
      fresh.settled = new Promise<boolean>((resolve) => setImmediate(() => {
        if (this.#turn === fresh) this.#turn = null;
        resolve(Promise.all(fresh.answers).then((all) => all.every(Boolean)));
      }));
      this.#turn = turn = fresh;
    }
    turn.answers.push(answered);
    return turn.settled;
  }

  read(recipient: Uint8Array, afterSeq: number, limit: number): Promise<MailboxEntry[]> {
    return this.#link.call('read', recipient, afterSeq, limit);
  }

  async readEach(recipient: Uint8Array, afterSeq: number, limit: number, visit: (entry: MailboxEntry) => void): Promise<number> {
    const entries = await this.read(recipient, afterSeq, limit);
    for (const entry of entries) visit(entry);
    return entries.length;
  }

  ack(recipient: Uint8Array, seqs: number[]): Promise<void> {
    return this.#link.call('ack', recipient, seqs);
  }

  usage(recipient: Uint8Array): Promise<Usage> {
    return this.#link.call('usage', recipient);
  }

  totals(): Promise<Totals> {
    return this.#link.call('totals');
  }

  top(n: number): Promise<Array<{ recipient: Uint8Array } & Usage>> {
    return this.#link.call('top', n);
  }

  removeRecipient(recipient: Uint8Array): Promise<number> {
    return this.#link.call('removeRecipient', recipient);
  }

  removeOlderThan(ageMs: number, now?: number): Promise<number> {
    return this.#link.call('removeOlderThan', ageMs, now);
  }

  sweepExpired(now?: number): Promise<number> {
    return this.#link.call('sweepExpired', now);
  }

  /** The host's limits change for the whole relay (every worker reloads the same configuration). */
  setLimits(limits: Partial<MailboxLimits>): void {
    this.#link.call('setLimits', limits).catch(() => {});
  }

  limits(): MailboxLimits {
    const state = this.#link.state;
    if (state === null) throw new Error('the store host went away');
    return state.limits;
  }

  bodyCount(): Promise<number> {
    return this.#link.call('bodyCount');
  }

  status(): StoreStatus {
    const state = this.#link.state;
    if (state === null || this.#closed) return LOST;
    return state.status;
  }

  /** The worker lets go of the store; the host keeps it open for the others. */
  async close(): Promise<void> {
    this.#closed = true;
  }
}

export class HostedPolicyStore implements PolicyStore {
  readonly #link: HostLink;
  #closed = false;

  constructor(link: HostLink) {
    this.#link = link;
  }

  snapshot(): Promise<PolicySnapshot> {
    return this.#link.call('snapshot');
  }

  /** The version the host sent last: it sends one after every policy write, to every worker. */
  async version(): Promise<number> {
    const state = this.#link.state;
    if (state === null) throw new Error('the store host went away');
    return state.policyVersion;
  }

  setPolicy(policy: Policy): Promise<void> {
    return this.#write('setPolicy', policy);
  }

  removePolicy(name: string): Promise<void> {
    return this.#write('removePolicy', name);
  }

  assign(user: Uint8Array, name: string): Promise<void> {
    return this.#write('assign', user, name);
  }

  unassign(user: Uint8Array): Promise<boolean> {
    return this.#write('unassign', user);
  }

  block(user: Uint8Array): Promise<boolean> {
    return this.#write('block', user);
  }

  unblock(user: Uint8Array): Promise<boolean> {
    return this.#write('unblock', user);
  }

  #write<T>(method: string, ...args: unknown[]): Promise<T> {
    if (this.#closed) return Promise.reject(new PolicyStoreError('CLOSED', 'policy store is closed'));
    return this.#link.call(method, ...args);
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}

const STORE_ERROR: EnqueueOutcome = Object.freeze({ ok: false, code: 'STORE_ERROR' });
const NOTHING_TO_COMMIT: Promise<boolean> = Promise.resolve(true);
