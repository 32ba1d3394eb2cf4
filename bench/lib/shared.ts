// What the harness and its load-generator workers share: the worker configuration, its
// result, and the layout of the shared Int32Array of counters.

export const Slot = {
  /** 0 before the run, 1 go, 2 stop. */
  CONTROL: 0,
  /** Bumped (and notified) by receivers after each batch of counts, so blocked senders wake. */
  GENERATION: 1,
  /** 1 while receivers record latencies (after the warm-up). */
  RECORDING: 2,
  /** Messages the relay refused (RESULT with a refusal code). */
  DROPS: 3,
  /** Messages an open-loop sender skipped because the system was too far behind. */
  SKIPPED: 4,
  /** Then: sent count per sender, then received count per receiver. */
  FIRST: 8,
} as const;

export type SystemName = 'pulltab' | 'pipe' | 'nats';

export interface WorkerConfig {
  role: 'sender' | 'receiver';
  system: SystemName;
  port: number;
  sab: SharedArrayBuffer;
  senders: number;
  fanout: number;
  bodyBytes: number;
  mode: 'throughput' | 'latency';
  /** Offered rate, messages per second over all senders (latency mode). */
  rate: number;
  /** Bytes in flight per sender (sent and not yet received by its slowest receiver). */
  windowBytes: number;
  maxMessages: number;
  maxSeconds: number;
  /** SEND flags of every message (pulltab): 0, or STORE for the storable path. */
  sendFlags?: number;
  /** Connect to the relay with TLS (pulltab). */
  tls?: boolean;
  /** Hex Ed25519 seeds (pulltab). */
  senderSecrets?: string[];
  receiverSecrets?: string[];
  /** Hex public keys of the receivers, in receiver order (pulltab). */
  receiverKeys?: string[];
  /** Hex public key of the relay (pulltab, library scenario: the client pins it). */
  relayKey?: string;
  /** Library scenario, pulltab: seal and open every message (otherwise raw). */
  sealed?: boolean;
}

export interface LatencySummary {
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
  count: number;
}

export interface WorkerResult {
  role: 'sender' | 'receiver';
  sent?: number;
  received?: number;
  latencyUs: LatencySummary | null;
}

export function sharedCounters(senders: number, receivers: number): SharedArrayBuffer {
  return new SharedArrayBuffer(4 * (Slot.FIRST + senders + receivers));
}

/**
 * Messages received per receiver, published to the shared counters in batches (one Atomics
 * update per receiver per batch, then a notify of GENERATION so waiting senders wake): senders
 * see progress without a message between threads per count.
 */
export class ReceiverCounts {
  readonly counts: Int32Array;
  readonly #published: Int32Array;
  readonly #i32: Int32Array;
  readonly #firstSlot: number;
  readonly #schedule: (fn: () => void) => void;
  #scheduled = false;

  /** firstSlot: the shared slot of receiver 0; schedule: when to publish after a count (queueMicrotask, setImmediate). */
  constructor(i32: Int32Array, firstSlot: number, receivers: number, schedule: (fn: () => void) => void) {
    this.counts = new Int32Array(receivers);
    this.#published = new Int32Array(receivers);
    this.#i32 = i32;
    this.#firstSlot = firstSlot;
    this.#schedule = schedule;
  }

  get total(): number {
    return this.counts.reduce((a, b) => a + b, 0);
  }

  /** Publishes soon (once per batch, however many counts come before it). */
  schedulePublish(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    this.#schedule(this.publish);
  }

  readonly publish = (): void => {
    this.#scheduled = false;
    for (let j = 0; j < this.counts.length; j++) {
      const d = this.counts[j]! - this.#published[j]!;
      if (d !== 0) {
        Atomics.add(this.#i32, this.#firstSlot + j, d);
        this.#published[j] = this.counts[j]!;
      }
    }
    Atomics.add(this.#i32, Slot.GENERATION, 1);
    Atomics.notify(this.#i32, Slot.GENERATION);
  };
}
