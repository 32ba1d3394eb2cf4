// One identity of the soak population: it comes online, sends live and storable messages with
// receipts to random others, acknowledges what it receives after a short delay, and goes
// offline (sometimes with acknowledgements still owed), again and again. Against a cluster, each
// connection picks an instance at random when it is made, so an identity moves between instances
// as it comes and goes (and a connection that replaces another is often on another instance).
import { RelayClient } from '../../src/client/client.js';
import type { Identity } from '../../src/crypto/keys.js';
import { chance, int, pick } from './random.js';
import { newEpoch, type Epoch, type Ledger } from './soak-ledger.js';

export interface Population {
  /** The relay's address; against a cluster, one per instance (instance i + 1 is addresses[i]). */
  addresses: string[];
  identities: Identity[];
  ledger: Ledger;
  /** Indexes of identities that never come online before the final drain. */
  late: Set<number>;
  /** Per identity, a few others it writes to half the time (so storage keys get replaced). */
  friends: number[][];
  /** Per client, the longest pause between two sends, in ms (the send rate knob). */
  pauseMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const STORAGE_KEYS = ['status', 'presence'];

/** The instance a new connection goes to: 1..N at random against a cluster, 0 for a single relay. */
function chooseInstance(pop: Population): number {
  return pop.addresses.length === 1 ? 0 : 1 + int(pop.addresses.length);
}

/** One connection of identity `me`: connects (to an instance chosen now), receives into the ledger, acknowledges after ackDelayMs. */
export class SoakConnection {
  readonly client: RelayClient;
  readonly instance: number;
  readonly epoch: Epoch;
  /** Highest delivery id received; the relay answered QUEUE_EMPTY. */
  highest = 0;
  received = 0;
  queueEmpty = false;
  #closing = false;

  constructor(readonly pop: Population, readonly me: number, ackDelayMs: () => number) {
    this.instance = chooseInstance(pop);
    this.epoch = newEpoch(this.instance);
    this.client = new RelayClient({ relay: pop.addresses[Math.max(0, this.instance - 1)], identity: pop.identities[me], raw: true, reconnect: false, autoAck: false, receiptTimeoutMs: 30_000 });
    this.client.on('message', (m) => {
      const text = Buffer.from(m.body.subarray(0, 40)).toString('latin1');
      pop.ledger.received(text.slice(0, text.indexOf(';')), me, this.epoch, m.deliveryId, m.fromMailbox);
      this.highest = Math.max(this.highest, m.deliveryId);
      this.received++;
      const delay = ackDelayMs();
      if (delay < 0) return; // never acknowledged on this connection
      setTimeout(() => this.ack(m.deliveryId), delay);
    });
    this.client.on('queueEmpty', () => { this.queueEmpty = true; });
    this.client.on('disconnected', () => {
      if (!this.#closing) this.epoch.endedByRelay = true;
      this.epoch.closed = true;
      this.epoch.closedAt ??= Date.now();
    });
    this.client.on('error', () => {});
  }

  ack(deliveryId: number): void {
    if (this.epoch.closed || this.#closing) return;
    if (deliveryId <= this.epoch.acked) return;
    this.client.ack(deliveryId);
    this.epoch.acked = deliveryId;
  }

  /** A newer connection of the same identity took over: the relay closes this one, unread acks and all. */
  superseded(): void {
    this.epoch.endedByRelay = true;
    this.#closing = true;
  }

  async close(ackAll: boolean): Promise<void> {
    if (ackAll) this.ack(this.highest);
    this.#closing = true;
    await this.client.close();
    this.epoch.closed = true;
    this.epoch.closedAt ??= Date.now();
  }

  /** Sends one message to 1..3 random identities and records the receipt. */
  async sendOne(): Promise<void> {
    const { ledger, identities } = this.pop;
    const n = chance(0.8) ? 1 : 2 + int(2);
    const to = new Set<number>();
    while (to.size < n) to.add(chance(0.5) ? pick(this.pop.friends[this.me]) : int(identities.length));
    const recipients = [...to];
    const storable = chance(0.65);
    const storageKey = storable && chance(0.25) ? pick(STORAGE_KEYS) : null;
    const padding = chance(0.9) ? int(200) : int(20_000);
    const id = ledger.sent(this.me, recipients, storable, storageKey, this.instance, padding);
    const body = Buffer.concat([Buffer.from(`${id};`), Buffer.alloc(padding, 0x61)]);
    // RelayClient writes ACKs from a setImmediate: after one turn, every ACK handed to it so far
    // is on the wire ahead of this SEND, so its receipt proves the relay has read them.
    const acked = this.epoch.acked;
    await new Promise((resolve) => setImmediate(resolve));
    try {
      const result = await this.client.send(recipients.map((r) => identities[r].publicKey), body, { store: storable, storageKey: storageKey ?? undefined });
      ledger.answered(id, recipients, result.outcomes.map((o) => o.code), result.code);
      this.epoch.confirmed = Math.max(this.epoch.confirmed, acked);
      if (storable) this.epoch.confirmedStored = Math.max(this.epoch.confirmedStored, acked);
    } catch {
      ledger.unanswered();
    }
  }
}

/** The life of identity `me` until the deadline: offline, online sending, offline... */
export async function liveUntil(pop: Population, me: number, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    await sleep(chance(0.8) ? int(800) : int(3000));
    if (Date.now() >= deadline) break;
    let conn = await open(pop, me);
    if (conn === null) continue;
    const until = Math.min(deadline, Date.now() + 200 + int(3000));
    while (Date.now() < until && !conn.epoch.closed) {
      await conn.sendOne();
      await sleep(int(pop.pauseMs + 1));
      if (chance(0.005)) {
        // The same identity connects again while still connected (another device, a half-open
        // socket): the relay replaces the older connection.
        const next = await open(pop, me);
        if (next === null) continue;
        conn.superseded();
        await conn.close(false);
        conn = next;
      }
    }
    // Half the time it leaves with acknowledgements still owed.
    await conn.close(chance(0.5));
  }
}

/** A new connection: most acknowledge each message 0..100 ms after it arrives; some acknowledge nothing. */
async function open(pop: Population, me: number): Promise<SoakConnection | null> {
  const lazy = chance(0.1);
  const conn = new SoakConnection(pop, me, () => (lazy ? -1 : int(100)));
  try {
    await conn.client.connect();
    return conn;
  } catch {
    return null;
  }
}
