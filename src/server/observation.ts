// One snapshot of what the relay is doing, read by both /metrics (./metrics.ts) and the admin
// `stats` command, so the two can never disagree. Counting costs the relay's paths a plain
// increment (./stats.ts); everything here is read only when somebody asks.
import type { StoreStatus, Totals } from '../store/mailbox.js';
import type { RelayStats } from './stats.js';

export interface Traffic {
  framesIn: number;
  bytesIn: number;
  framesOut: number;
  bytesOut: number;
}

export interface Observation {
  uptimeSeconds: number;
  connections: { handshake: number; authenticated: number; sendOnly: number; accepted: number; refusedFull: number };
  handshakes: {
    ok: number; timedOut: number; authFailed: number; unsupportedVersion: number; notAuthorized: number; tooManyConnections: number;
    transportMismatch: number; tlsFailed: number; tlsAuthFailed: number;
  };
  messages: {
    in: number; deliveredLive: number; deliveredFromMailbox: number; stored: number; storedLive: number; spilled: number;
    refused: number; refusedStore: number; dropped: { offline: number; busy: number; held: number };
  };
  /** Envelopes handed to another instance of the relay, and forwards that missed, by reason. */
  forwards: { forwarded: number; received: number; missed: { gone: number; busy: number }; presenceUnconfirmed: number };
  traffic: Traffic;
  disconnects: { replaced: number; protocolErrors: number; slowConsumers: number; idleTimeouts: number; kicked: number; notAuthorized: number };
  rateLimitPauses: number;
  readPauses: { output: number; store: number; turn: number; peer: number };
  mailbox: Totals & StoreStatus;
  eventLog: { written: number; dropped: number; errors: number } | null;
  /** Admin answers by status name. */
  adminAnswers: Record<string, number>;
  /** Accepting connections and able to store (/readyz). */
  ready: boolean;
  /** In a cluster (src/cluster/): this relay's instances on this host, as NATS sees them; null otherwise. */
  cluster: ClusterObservation | null;
  /** A relay of several workers: each one's share (the rest of the observation is their sum). */
  workers?: WorkerShare[];
}

export interface ClusterObservation {
  /** Instances here connected to NATS (1 or 0 for one process; with workers, how many of them). */
  connected: number;
  /** Links to instances on other hosts whose snapshot has arrived. */
  instances: number;
  /** Keys held by other instances (other workers of this host included), as this one knows them. */
  remoteKeys: number;
  /** Links started afresh because a message between instances was lost. */
  linkGaps: number;
  /** NATS messages on the cluster's subjects that could not be read (too short, unknown kind, bad JSON). */
  malformed: number;
  /** NATS messages whose handling threw (a bug, logged as cluster_message_failed). */
  failures: number;
  /** What the links to other hosts carried (src/cluster/nats-stream.ts LinkCounters). */
  link: { messagesOut: number; bytesOut: number; messagesIn: number; bytesIn: number; windowWaits: number };
}

export interface WorkerShare {
  worker: number;
  up: boolean;
  restarts: number;
  authenticated: number;
  messagesIn: number;
}

/**
 * The observation of a relay of workers: the workers' counters summed (each counts what it did),
 * the store as one of them saw it (they share it), ready when every worker is, and each one's share.
 */
export function mergeObservations(parts: Observation[], shares: WorkerShare[], uptimeSeconds: number): Observation {
  const merged = sumInto(structuredClone(parts[0]), parts.slice(1)) as Observation;
  merged.uptimeSeconds = uptimeSeconds;
  merged.mailbox = parts[0].mailbox;
  merged.ready = parts.every((p) => p.ready) && shares.every((s) => s.up);
  merged.workers = shares;
  return merged;
}

/** Adds every number of the others into base, field by field (objects recursively). */
function sumInto(base: unknown, others: unknown[]): unknown {
  if (typeof base === 'number') return others.reduce<number>((a, o) => a + (typeof o === 'number' ? o : 0), base);
  if (base === null || typeof base !== 'object') return base;
  const out = base as Record<string, unknown>;
  const keys = new Set(Object.keys(out));
  for (const o of others) if (o && typeof o === 'object') for (const k of Object.keys(o)) keys.add(k);
  for (const k of keys) {
    const values = others.map((o) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined));
    out[k] = out[k] === undefined ? sumInto(values.find((v) => v !== undefined), values.filter((v) => v !== undefined).slice(1)) : sumInto(out[k], values);
  }
  return out;
}

/** What an observation is made of: the counters, and what only the relay's parts know. */
export interface ObservationSource {
  readonly stats: RelayStats;
  readonly startedAt: number;
  handshaking(): number;
  /** Authenticated connections (receiving and send-only) and the send-only ones among them. */
  sessions(): { authenticated: number; sendOnly: number };
  traffic(): Traffic;
  storeStatus(): StoreStatus;
  storeTotals(): Promise<Totals>;
  eventLog(): { written: number; dropped: number; errors: number } | null;
  cluster(): ClusterObservation | null;
  adminAnswers(): Record<string, number>;
  ready(): boolean;
}

export async function observe(source: ObservationSource): Promise<Observation> {
  const s = source.stats;
  const totals = await source.storeTotals();
  const sessions = source.sessions();
  return {
    uptimeSeconds: Math.round((Date.now() - source.startedAt) / 1000),
    connections: {
      handshake: source.handshaking(), authenticated: sessions.authenticated, sendOnly: sessions.sendOnly,
      accepted: s.connectionsAccepted, refusedFull: s.connectionsRefusedFull,
    },
    handshakes: {
      ok: s.handshakesOk, timedOut: s.handshakesTimedOut, ...s.handshakesRefused,
      transportMismatch: s.transportMismatches, tlsFailed: s.tlsHandshakeFailures, tlsAuthFailed: s.tlsAuthFailed,
    },
    messages: {
      in: s.messagesIn, deliveredLive: s.messagesOut - s.deliveredFromMailbox, deliveredFromMailbox: s.deliveredFromMailbox,
      stored: s.stored, storedLive: s.storedLive, spilled: s.spilled, refused: s.refused, refusedStore: s.refusedStore,
      dropped: { ...s.dropped, held: s.droppedHeld },
    },
    forwards: { forwarded: s.forwarded, received: s.forwardedIn, missed: { ...s.forwardMisses }, presenceUnconfirmed: s.presenceUnconfirmed },
    traffic: source.traffic(),
    disconnects: {
      replaced: s.replaced, protocolErrors: s.protocolErrors, slowConsumers: s.slowConsumers, idleTimeouts: s.idleTimeouts,
      ...s.policyDisconnects,
    },
    rateLimitPauses: s.rateLimitPauses,
    readPauses: { output: s.outputPauses, store: s.storePauses, turn: s.turnYields, peer: s.peerPauses },
    mailbox: { ...totals, ...source.storeStatus() },
    eventLog: source.eventLog(),
    cluster: source.cluster(),
    adminAnswers: { ...source.adminAnswers() },
    ready: source.ready(),
  };
}
