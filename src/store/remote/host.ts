// The hosted store's owner side: the process that opened the mailbox engine (and the policy store)
// serves them to the relay's workers over a Unix-domain socket (./wire.ts). One process owns the
// embedded store, so everything the engine decides in memory (seqs, usage, quotas, what is not
// committed yet) stays exact for the whole relay, and commits of every worker share one batch.
//
// Calls of one connection are applied in the order sent: an ack sent after an accept sees its
// entry, as with the engine in-process. Answers go back batched per turn, led by the host's state.
import { chmodSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { EnqueueRequest, MailboxStore } from '../mailbox.js';
import { PolicyStoreError, type PolicySnapshot, type PolicyWrites } from '../policy-store.js';
import { BatchWriter, readBatches, type Answer, type Call, type HostState, type WireError } from './wire.js';

/** The policies as the host serves them: its own cache in front of the store (changed through it). */
export interface HostedPolicies extends PolicyWrites {
  snapshot(): PolicySnapshot;
}

export class StoreHost {
  readonly #store: MailboxStore;
  readonly #policies: HostedPolicies;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #writers = new Set<BatchWriter<Answer>>();
  #policyVersion = 1;
  /** Told after every policy write a worker made (the owner applies it to what it runs itself). */
  onPolicyWrite: (() => void) | null = null;

  constructor(store: MailboxStore, policies: HostedPolicies) {
    this.#store = store;
    this.#policies = policies;
    this.#server = createServer((socket) => this.#serve(socket));
  }

  listen(path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(path, () => {
        this.#server.off('error', reject);
        chmodSync(path, 0o600);
        resolve();
      });
    });
  }

  /** The state every answer batch starts with. */
  state(): HostState {
    return { status: this.#store.status(), limits: this.#store.limits(), policyVersion: this.#policyVersion };
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const socket of this.#sockets) socket.destroy();
    await closed;
  }

  #serve(socket: Socket): void {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => {});
    const out = new BatchWriter<Answer>(socket, () => [0, this.state()]);
    this.#writers.add(out);
    socket.on('close', () => this.#writers.delete(out));
    readBatches<Call>(socket, (call) => this.#dispatch(call, out));
    out.push([0, undefined]);
  }

  #dispatch(call: Call, out: BatchWriter<Answer>): void {
    const [id, method] = call;
    const store = this.#store;
    const a = call as unknown[];
    const reply = (value: unknown) => out.push([id, value]);
    const fail = (err: unknown) => out.push([id, undefined, wireError(err)]);
    const answerWith = (work: () => unknown) => {
      try {
        Promise.resolve(work()).then(reply, fail);
      } catch (err) {
        fail(err);
      }
    };
    switch (method) {
      case 'accept': {
        const accepted = store.accept(a[2] as EnqueueRequest);
        accepted.settled.then((committed) => reply([accepted.outcomes, committed]));
        return;
      }
      case 'read': return answerWith(() => store.read(a[2] as Uint8Array, a[3] as number, a[4] as number));
      case 'ack': return answerWith(() => store.ack(a[2] as Uint8Array, a[3] as number[]));
      case 'usage': return answerWith(() => store.usage(a[2] as Uint8Array));
      case 'totals': return answerWith(() => store.totals());
      case 'top': return answerWith(() => store.top(a[2] as number));
      case 'removeRecipient': return answerWith(() => store.removeRecipient(a[2] as Uint8Array));
      case 'removeOlderThan': return answerWith(() => store.removeOlderThan(a[2] as number, a[3] as number | undefined));
      case 'sweepExpired': return answerWith(() => store.sweepExpired(a[2] as number | undefined));
      case 'setLimits': return answerWith(() => store.setLimits(a[2] as Parameters<MailboxStore['setLimits']>[0]));
      case 'bodyCount': return answerWith(() => store.bodyCount());
      case 'snapshot': return answerWith(() => this.#policies.snapshot());
      case 'setPolicy': case 'removePolicy': case 'assign': case 'unassign': case 'block': case 'unblock':
        return answerWith(() => this.#policyWrite(method, a.slice(2)));
      default: return fail(new Error(`hosted store: unknown call ${String(method)}`));
    }
  }

  async #policyWrite(method: keyof PolicyWrites, args: unknown[]): Promise<unknown> {
    const write = this.#policies[method] as (...args: unknown[]) => Promise<unknown>;
    try {
      return await write.apply(this.#policies, args);
    } finally {
      // Refused or not, the cache may have reloaded: every worker reads it again.
      this.#policyVersion++;
      this.onPolicyWrite?.();
      // Workers that made no call meanwhile learn of it too (their poll reads the version they hold).
      for (const out of this.#writers) out.push([0, undefined]);
    }
  }
}

function wireError(err: unknown): WireError {
  if (err instanceof PolicyStoreError) return { message: err.message, policyCode: err.code };
  return { message: err instanceof Error ? err.message : String(err) };
}
