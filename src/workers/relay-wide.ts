// What the admin commands of a worker see: the whole relay, not only this worker. The primary asks
// every worker about itself and answers (./primary.ts, 'ask'); each worker answers from its own
// sessions (answerLocal). `block` needs none of this: the policy store is shared, and every worker
// applies a change to its own sessions within a poll.
import { encodeKey } from '../crypto/keys.js';
import type { AdminConnections, AdminSession } from '../admin/host.js';
import type { ConnectedSessions } from '../server/connected-sessions.js';
import type { Observation } from '../server/observation.js';
import type { Relay } from '../server/relay.js';
import type { LocalQuestion, RelayQuestion, ToPrimary, ToWorker } from './primary.js';

const ASK_TIMEOUT_MS = 5_000;

/** Asks the primary for a relay-wide answer over node:cluster's channel. */
export class PrimaryChannel {
  readonly #waiting = new Map<number, (value: unknown) => void>();
  #nextId = 1;

  ask(what: RelayQuestion, key?: Uint8Array): Promise<unknown> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error('the primary did not answer'));
      }, ASK_TIMEOUT_MS);
      this.#waiting.set(id, (value) => {
        clearTimeout(timer);
        this.#waiting.delete(id);
        if (value !== null && typeof value === 'object' && 'error' in value) reject(new Error(String((value as { error: unknown }).error)));
        else resolve(value);
      });
      tell({ type: 'ask', id, what, ...(key ? { key: Buffer.from(key).toString('hex') } : {}) });
    });
  }

  /** The primary's answer to an ask. */
  answered(message: Extract<ToWorker, { type: 'answer' }>): void {
    this.#waiting.get(message.id)?.(message.value);
  }
}

/** The admin commands' view of every worker's connections. */
export function relayWideConnections(channel: PrimaryChannel, local: ConnectedSessions): AdminConnections {
  return {
    live: async () => (await channel.ask('sessions')) as AdminSession[],
    isConnected: async (key) => {
      if (local.isConnected(key)) return true;
      const text = encodeKey(key);
      return ((await channel.ask('sessions')) as AdminSession[]).some((s) => s.keyText === text);
    },
    kick: async (key) => (await channel.ask('kick', key)) as number,
    enforcePolicies: (only) => local.enforcePolicies(only),
  };
}

/** Answers the primary's question about this worker. */
export async function answerLocal(relay: Relay, index: number, what: LocalQuestion, keyHex?: string): Promise<unknown> {
  switch (what) {
    case 'observe': return relay.observe() as Promise<Observation>;
    case 'sessions': return relay.connectedSessions.live().map((s) => ({
      keyText: s.keyText, connectedAt: s.connectedAt, messagesIn: s.messagesIn, messagesOut: s.messagesOut, worker: index,
    }));
    case 'kick': return keyHex === undefined ? 0 : relay.connectedSessions.kick(Buffer.from(keyHex, 'hex'));
  }
}

export function tell(message: ToPrimary): void {
  process.send?.(message);
}
