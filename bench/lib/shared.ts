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
