// Two well-behaved RelayClients that keep sending each other messages with receipts while the
// relay is under attack: every message the relay accepted (DELIVERED or STORED) must arrive.
import { generateIdentity } from '../../src/crypto/keys.js';
import { RelayClient, type ReceivedMessage } from '../../src/client/client.js';
import { Code } from '../../src/protocol/constants.js';

export interface PairReport {
  sent: number;
  /** Receipts with DELIVERED or STORED: messages the relay answered for. */
  accepted: number;
  /** Receipts with any other outcome (busy, refused), and sends that got no receipt. */
  refused: number;
  unanswered: number;
  received: number;
  duplicates: number;
  /** Accepted and never received. Non-storable ones after a disconnect of the receiver are allowed. */
  lost: number;
  lostAllowed: number;
  disconnects: number;
  /** Messages from anyone else (fuzzed SENDs that named a client of the pair). */
  foreign: number;
}

/** One direction: from sends to to, up to window messages at a time. */
class Direction {
  readonly accepted = new Map<number, boolean>(); // n → storable
  readonly received = new Set<number>();
  sent = 0;
  refused = 0;
  unanswered = 0;
  duplicates = 0;
  #next = 0;

  constructor(readonly from: RelayClient, readonly to: RelayClient, readonly tag: string) {}

  onMessage(m: ReceivedMessage): boolean {
    const text = Buffer.from(m.body.subarray(0, 40)).toString('latin1');
    if (m.fromText !== this.from.publicKey || !text.startsWith(this.tag)) return false;
    const n = Number(text.slice(this.tag.length, text.indexOf(';')));
    if (this.received.has(n)) this.duplicates++;
    this.received.add(n);
    return true;
  }

  /** Sends one message and waits for its receipt. */
  async sendOne(): Promise<void> {
    const n = this.#next++;
    const storable = n % 2 === 0;
    const body = Buffer.concat([Buffer.from(`${this.tag}${n};`), Buffer.alloc(n % 7 === 0 ? 4000 : 50, n % 251)]);
    this.sent++;
    try {
      const result = await this.from.send([this.to.identity.publicKey], body, { store: storable });
      const outcome = result.outcomes[0]?.code;
      if (outcome === Code.DELIVERED || outcome === Code.STORED) this.accepted.set(n, storable);
      else this.refused++;
    } catch {
      this.unanswered++;
      // Not connected: wait for the reconnect rather than spin.
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  missing(): Array<[number, boolean]> {
    return [...this.accepted].filter(([n]) => !this.received.has(n));
  }
}

export class GoodPair {
  readonly #a: RelayClient;
  readonly #b: RelayClient;
  readonly #directions: Direction[];
  #disconnects = 0;
  #foreign = 0;
  #running: Promise<void>[] = [];
  #stop = false;
  /** Disconnects of each receiver: a non-storable message may be lost across one. */
  readonly #receiverDropped = new Set<RelayClient>();

  private constructor(address: string) {
    const options = { relay: address, raw: true, backoffBaseMs: 20, backoffCapMs: 500, receiptTimeoutMs: 20_000 };
    this.#a = new RelayClient({ ...options, identity: generateIdentity() });
    this.#b = new RelayClient({ ...options, identity: generateIdentity() });
    this.#directions = [new Direction(this.#a, this.#b, 'a>b:'), new Direction(this.#b, this.#a, 'b>a:')];
    for (const client of [this.#a, this.#b]) {
      client.on('message', (m) => {
        if (!this.#directions.some((d) => d.to === client && d.onMessage(m))) this.#foreign++;
      });
      client.on('disconnected', () => {
        this.#disconnects++;
        this.#receiverDropped.add(client);
      });
      client.on('error', () => {});
    }
  }

  static async start(address: string): Promise<GoodPair> {
    const pair = new GoodPair(address);
    await Promise.all([pair.#a.connect(), pair.#b.connect()]);
    return pair;
  }

  get publicKeys(): Uint8Array[] {
    return [this.#a.identity.publicKey, this.#b.identity.publicKey];
  }

  /** Starts sending: window messages in flight per direction, until stop(). */
  run(window = 4): void {
    for (const d of this.#directions) {
      for (let i = 0; i < window; i++) {
        this.#running.push((async () => {
          while (!this.#stop) await d.sendOne();
        })());
      }
    }
  }

  /** Messages the relay has answered DELIVERED or STORED so far (both directions). */
  get acceptedSoFar(): number {
    return this.#directions.reduce((n, d) => n + d.accepted.size, 0);
  }

  /** Stops sending, waits for the last receipts, then up to waitMs for every accepted message to arrive. */
  async finish(waitMs = 15_000): Promise<PairReport> {
    this.#stop = true;
    await Promise.all(this.#running);
    const deadline = Date.now() + waitMs;
    while (this.#directions.some((d) => d.missing().length > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const dropped = new Set(this.#receiverDropped);
    const report: PairReport = {
      sent: 0, accepted: 0, refused: 0, unanswered: 0, received: 0, duplicates: 0, lost: 0, lostAllowed: 0,
      disconnects: this.#disconnects, foreign: this.#foreign,
    };
    await Promise.all([this.#a.close(), this.#b.close()]);
    for (const d of this.#directions) {
      report.sent += d.sent;
      report.accepted += d.accepted.size;
      report.refused += d.refused;
      report.unanswered += d.unanswered;
      report.received += d.received.size;
      report.duplicates += d.duplicates;
      for (const [, storable] of d.missing()) {
        if (!storable && dropped.has(d.to)) report.lostAllowed++;
        else report.lost++;
      }
    }
    return report;
  }
}
