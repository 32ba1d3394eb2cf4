// The soak run: a relay in a child process and a population of clients coming and going,
// sending live and storable messages; at the end every recipient connects and drains its
// mailbox, and every storable message the relay answered for must be accounted for. The
// relay's memory and open files are read after a warm-up and again at the end, both times
// with no client connected.
//
// With `instances` (2 or more) the relay is a cluster (./soak-cluster.ts): N instance processes
// over a private nats-server and PostgreSQL. Each connection, the final drain's included, goes
// to an instance chosen at random when it is made, so identities move between instances as they
// come and go; the ledger's rules are the same as for one relay. Memory and open files are read
// from every instance: `start`, `end`, `peakRssBytes` and `anonPeak` are sums over the instances
// (`anonPeak` the highest sum sampled, `peakRssBytes` the sum of each one's own peak),
// `perInstance` has each one, and the memory bound holds for each instance on its own. The abusers connect to instance 1 only (their stored SENDs land
// in the one database every instance writes to).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeKey, generateIdentity } from '../../src/crypto/keys.js';
import { ABUSE_BOUNDS, startAbuserThread, type AbuseReport } from './abusers.js';
import { liveUntil, SoakConnection, type Population } from './soak-client.js';
import { Ledger, type LedgerReport } from './soak-ledger.js';
import { ensureBuilt, mib, openFds, procStatusBytes, startRelayProcess, type RelayProcess } from './relay-process.js';
import { instanceCounters, startSoakCluster, type InstanceCounters } from './soak-cluster.js';

export interface SoakOptions {
  seconds: number;
  identities?: number;
  /** Of them, how many stay offline until the final drain. */
  late?: number;
  /** Longest pause between two sends of one client, in ms. */
  pauseMs?: number;
  /** The relay's inflightWindow (default 16, far below its own default, to exercise spilling). */
  inflightWindow?: number;
  /** Run the relay as this many worker processes (`serve --workers`; default 1); with `instances`, each instance (readings are then of each primary). */
  workers?: number;
  /** Run the relay as a cluster of this many instances over NATS and PostgreSQL (2 or more; default 1: one relay, LMDB). */
  instances?: number;
  log?: (line: string) => void;
  /** Run the abusers (scripts/lib/abusers.ts) beside the soak's clients; default true. */
  abusers?: boolean;
  /**
   * A directory for evidence: the instances (or the relay) log at info with logDeliveries on, each
   * into instance-<i>.log there, and identities.txt maps each identity's index to its key.
   */
  evidenceDir?: string;
}

export interface ResourceSample {
  rssBytes: number;
  /** RSS split: anonymous (heap, buffers) and file-backed (mostly the LMDB map). */
  anonBytes: number;
  fileBytes: number;
  fds: number;
}

/** One instance of a cluster: its own readings, and what its /metrics said at the end. */
export interface InstanceReport {
  instance: number;
  start: ResourceSample;
  end: ResourceSample;
  peakRssBytes: number;
  anonPeak: number;
  counters: InstanceCounters | null;
  /** Its warn-level log lines, counted by event. */
  warnings: Record<string, number>;
}

export interface SoakReport extends LedgerReport {
  seconds: number;
  identities: number;
  late: number;
  /** 1 for a single relay; else the cluster's instances (the readings below are then sums over them). */
  instances: number;
  /** Per instance (one entry for a single relay). */
  perInstance: InstanceReport[];
  /** Recipients still waiting for a message when the final drain gave up (nothing arrived for 10 s). */
  drainTimedOut: number;
  start: ResourceSample;
  end: ResourceSample;
  peakRssBytes: number;
  /** Peak anonymous RSS while the soak (and its abusers) ran, sampled. */
  anonPeak: number;
  abuse: AbuseReport | null;
  crashes: number;
  relayExit: string | null;
  relayTail: string[];
  relayErrors: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Longer than the relay lingers over a closing socket (2 s), so closed connections are gone. */
const SETTLE_MS = 3000;

function sample(pid: number): ResourceSample {
  return { rssBytes: procStatusBytes(pid, 'VmRSS'), anonBytes: procStatusBytes(pid, 'RssAnon'), fileBytes: procStatusBytes(pid, 'RssFile'), fds: openFds(pid) };
}

function sum(samples: ResourceSample[]): ResourceSample {
  const total = (k: keyof ResourceSample) => samples.reduce((s, x) => s + x[k], 0);
  return { rssBytes: total('rssBytes'), anonBytes: total('anonBytes'), fileBytes: total('fileBytes'), fds: total('fds') };
}

/**
 * Connects every identity and waits until its outstanding messages arrived, or nothing has
 * arrived for quietMs, or timeoutMs passed. Returns how many recipients were still waiting.
 */
async function drainAll(pop: Population, timeoutMs: number, quietMs = 10_000): Promise<number> {
  const conns = pop.identities.map((_, i) => new SoakConnection(pop, i, () => 0));
  await Promise.all(conns.map((c) => c.client.connect().catch(() => {})));
  const deadline = Date.now() + timeoutMs;
  const done = () => {
    const outstanding = pop.ledger.outstanding();
    return conns.every((c, i) => c.queueEmpty && !outstanding.has(i));
  };
  // QUEUE_EMPTY comes before the ACKs of what was just delivered land, and messages requeued
  // by connections that closed a moment ago may still be on their way: wait for the ledger.
  let received = -1;
  let lastProgress = Date.now();
  while (!done() && Date.now() < deadline && Date.now() - lastProgress < quietMs) {
    const now = conns.reduce((sum, c) => sum + c.received, 0);
    if (now !== received) {
      received = now;
      lastProgress = Date.now();
    }
    await sleep(250);
  }
  const outstanding = pop.ledger.outstanding();
  const timedOut = conns.filter((c, i) => !c.queueEmpty || outstanding.has(i)).length;
  await Promise.all(conns.map((c) => c.close(true)));
  return timedOut;
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const log = options.log ?? (() => {});
  const n = options.identities ?? 50;
  const lateCount = options.late ?? Math.round(n / 5);
  const instanceCount = options.instances ?? 1;
  if (!Number.isInteger(instanceCount) || instanceCount < 1) throw new Error(`instances must be a whole number, 1 or more (got ${instanceCount})`);
  ensureBuilt(log);
  // A small window of unacknowledged deliveries, so slow and lazy readers spill to their
  // mailboxes often and the backlog paths get as much traffic as the live ones.
  const env = { PULLTAB_INFLIGHT_WINDOW: String(options.inflightWindow ?? 16), PULLTAB_WORKERS: String(options.workers ?? 1) };
  const evidence = options.evidenceDir;
  if (evidence !== undefined) mkdirSync(evidence, { recursive: true });
  const cluster = instanceCount > 1 ? await startSoakCluster(instanceCount, env, log, evidence) : null;
  const relays: RelayProcess[] = cluster?.instances ?? [await startRelayProcess(evidence === undefined ? env : { ...env, PULLTAB_LOG_LEVEL: 'info', PULLTAB_LOG_DELIVERIES: '1' }, {
    logFile: evidence === undefined ? undefined : join(evidence, 'instance-1.log'),
  })];
  const up = () => relays.every((r) => r.exit === null);
  try {
    const pop: Population = {
      addresses: relays.map((r) => r.address),
      identities: Array.from({ length: n }, () => generateIdentity()),
      ledger: new Ledger(),
      late: new Set(Array.from({ length: lateCount }, (_, i) => i)),
      friends: Array.from({ length: n }, () => Array.from({ length: 3 }, () => Math.floor(Math.random() * n))),
      pauseMs: options.pauseMs ?? 30,
    };
    if (evidence !== undefined) writeFileSync(join(evidence, 'identities.txt'), pop.identities.map((id, i) => `${i} ${encodeKey(id.publicKey)}\n`).join(''));
    // Against a cluster: instance 1.
    const abusers = options.abusers === false ? null : startAbuserThread(relays[0].port);
    await abusers?.ready;
    const active = pop.identities.map((_, i) => i).filter((i) => !pop.late.has(i));
    const live = (ms: number) => Promise.all(active.map((i) => liveUntil(pop, i, Date.now() + ms)));

    const warmMs = Math.min(10_000, Math.max(1000, options.seconds * 100));
    const where = relays.length === 1 ? `relay ${relays[0].address} (pid ${relays[0].pid})` : `${relays.length} instances (pids ${relays.map((r) => r.pid).join(', ')})`;
    log(`${where}; ${n} identities (${lateCount} offline until the end); warm-up ${warmMs / 1000} s`);
    await live(warmMs);
    await sleep(SETTLE_MS);
    const starts = relays.map((r) => sample(r.pid));
    const start = sum(starts);
    log(`after warm-up: RSS ${mib(start.rssBytes)}, ${start.fds} open files${relays.length > 1 ? ` (sums over the ${relays.length} instances)` : ''}; soaking for ${options.seconds} s`);

    const began = Date.now();
    // Beside the soak's clients, the abusers (floods, non-readers, a stored-send pipeliner): the
    // ledger must still balance, and the relay's memory stay within its bounds.
    const abuse = abusers === null ? null : abusers.run(began + options.seconds * 1000);
    const anonPeaks = starts.map((x) => x.anonBytes);
    let anonPeak = start.anonBytes;
    const sampler = setInterval(() => {
      let total = 0;
      relays.forEach((r, i) => {
        if (r.exit !== null) return;
        const anon = procStatusBytes(r.pid, 'RssAnon');
        if (!Number.isFinite(anon)) return;
        anonPeaks[i] = Math.max(anonPeaks[i], anon);
        total += anon;
      });
      anonPeak = Math.max(anonPeak, total);
    }, 50);
    const progress = setInterval(() => {
      const r = pop.ledger.counts;
      const readings = relays.map((x) => `${mib(procStatusBytes(x.pid, 'VmRSS'))} / ${openFds(x.pid)} files`).join(', ');
      log(`${((Date.now() - began) / 1000).toFixed(0)} s: ${r.messages} messages, ${r.storableAcknowledged} storable acknowledged, relay RSS / open files ${readings}`);
    }, 10_000);
    await live(options.seconds * 1000);
    const abuseReport = abuse === null ? null : await abuse;
    clearInterval(progress);
    clearInterval(sampler);
    const seconds = (Date.now() - began) / 1000;

    log('draining every mailbox...');
    const drainTimedOut = up() ? await drainAll(pop, 60_000) : n;
    await sleep(SETTLE_MS);
    const ends = relays.map((r) => sample(r.pid));
    const counters = cluster === null ? relays.map(() => null) : await Promise.all(relays.map((r) => instanceCounters(r)));
    const peaks = relays.map((r) => procStatusBytes(r.pid, 'VmHWM'));
    const exited = relays.map((r, i) => [i + 1, r] as const).filter(([, r]) => r.exit !== null);
    const label = (i: number, line: string) => (relays.length > 1 ? `[instance ${i}] ${line}` : line);
    return {
      ...pop.ledger.report(),
      seconds, identities: n, late: lateCount, instances: relays.length, drainTimedOut, start, end: sum(ends),
      // Each instance's own peak, summed: an upper bound of the cluster's peak.
      peakRssBytes: peaks.reduce((a, b) => a + b, 0),
      anonPeak,
      perInstance: relays.map((r, i) => ({
        instance: i + 1, start: starts[i], end: ends[i], peakRssBytes: peaks[i], anonPeak: anonPeaks[i], counters: counters[i],
        warnings: Object.fromEntries(r.warnings),
      })),
      abuse: abuseReport,
      crashes: exited.length,
      relayExit: exited.length === 0 ? null : exited.map(([i, r]) => label(i, `code ${r.exit!.code}, signal ${r.exit!.signal}`)).join('; '),
      relayTail: exited.flatMap(([i, r]) => r.tail().map((l) => label(i, l))),
      relayErrors: relays.flatMap((r, i) => r.errors.map((e) => label(i + 1, e))),
    };
  } finally {
    if (cluster !== null) await cluster.stop();
    else await relays[0].stop();
  }
}

/** Pass or fail: the relay stayed up, every acknowledged storable message is accounted for, every duplicate explained. */
export function soakPassed(r: SoakReport): boolean {
  return r.crashes === 0 && r.storableMissing === 0 && r.duplicatesUnexplained === 0 && soakMemoryBounded(r);
}

/** Each instance's (or the one relay's) anonymous memory grew by no more than the bound beside the abusers. */
export function soakMemoryBounded(r: SoakReport): boolean {
  return r.perInstance.every((p) => p.anonPeak - p.start.anonBytes <= ABUSE_BOUNDS.anonGrowthBytes);
}

export function formatSoakReport(r: SoakReport): string {
  const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : 'n/a');
  const cluster = r.instances > 1;
  const relay = cluster ? `relay (sum of ${r.instances})` : 'relay';
  const lines = [
    `soak: ${r.seconds.toFixed(1)} s, ${r.identities} identities (${r.late} offline until the end)${cluster ? `, against ${r.instances} instances over NATS and PostgreSQL (each connection to one at random; abusers on instance 1)` : ''}`,
    `  messages sent:        ${r.messages} (${r.refused} recipient refusals, ${r.unanswered} without a receipt)`,
    `  storable acknowledged: ${r.storableAcknowledged} (message, recipient) pairs: ${r.storableReceived} received, ${r.storableReplaced} replaced by a newer one with the same storage key, ${r.storableMissing} UNACCOUNTED FOR (${r.storableMissingStale} of them with a storage key whose older message arrived instead)`,
    `  live:                 ${r.liveSent} sent, ${r.liveDelivered} DELIVERED, ${r.liveReceived} received (not storable: lost when the recipient goes before reading it)`,
    `  duplicates:           ${r.duplicatesAllowed} after a disconnect before ack, ${r.duplicatesAckUnconfirmed} after an ACK not yet confirmed when the connection closed, ${r.duplicatesUnexplained} after an ACK the relay had read`,
    `  odd copies:           ${r.receivedRefused} of refused messages, ${r.receivedUnknown} of unknown messages`,
    `  final drain:          ${r.drainTimedOut} recipients still waiting when it gave up`,
    `  ${relay} RSS: ${mib(r.start.rssBytes)} after warm-up, ${mib(r.end.rssBytes)} at the end (ratio ${ratio(r.end.rssBytes, r.start.rssBytes)}), peak ${mib(r.peakRssBytes)}`,
    `    of which anonymous: ${mib(r.start.anonBytes)} → ${mib(r.end.anonBytes)} (ratio ${ratio(r.end.anonBytes, r.start.anonBytes)}); file-backed${cluster ? '' : ' (LMDB map)'}: ${mib(r.start.fileBytes)} → ${mib(r.end.fileBytes)}`,
    `  ${relay} open files: ${r.start.fds} after warm-up, ${r.end.fds} at the end (ratio ${ratio(r.end.fds, r.start.fds)})`,
    `  ${relay} anon memory: ${mib(r.start.anonBytes)} after warm-up, peak ${mib(r.anonPeak)} beside the abusers${cluster ? '' : ` (bound: +${mib(ABUSE_BOUNDS.anonGrowthBytes)})${soakMemoryBounded(r) ? '' : ' OVER'}`}`,
  ];
  if (cluster) {
    for (const p of r.perInstance) {
      const c = p.counters;
      const misses = c === null ? '' : Object.entries(c.forwardMisses).map(([k, v]) => `${k} ${v}`).join(', ');
      const warnings = Object.entries(p.warnings).map(([k, v]) => `${k} ×${v}`).join(', ');
      lines.push(
        `  instance ${p.instance}:           RSS ${mib(p.start.rssBytes)} → ${mib(p.end.rssBytes)} (peak ${mib(p.peakRssBytes)}), anon ${mib(p.start.anonBytes)} → peak ${mib(p.anonPeak)} (bound: +${mib(ABUSE_BOUNDS.anonGrowthBytes)})${p.anonPeak - p.start.anonBytes <= ABUSE_BOUNDS.anonGrowthBytes ? '' : ' OVER'}, open files ${p.start.fds} → ${p.end.fds}`,
        `    ${c === null ? 'no /metrics at the end' : `forwards out ${c.forwards}, in ${c.forwardsReceived}, missed ${misses || '0'}; link gaps ${c.linkGaps}; sessions replaced ${c.sessionsReplaced}`}${warnings ? `; warnings: ${warnings}` : ''}`,
      );
    }
  }
  lines.push(
    `  relay crashes:        ${r.crashes}${r.relayExit ? ` (exited: ${r.relayExit})` : ''}`,
    `  relay error logs:     ${r.relayErrors.length}`,
  );
  for (const s of r.missingSamples) lines.push(`  MISSING ${s}`);
  for (const s of r.duplicateSamples) lines.push(`  DUPLICATE ${s}`);
  const forwardMisses = r.perInstance.reduce((n, p) => n + Object.values(p.counters?.forwardMisses ?? {}).reduce((a, b) => a + b, 0), 0);
  if (cluster && forwardMisses > 0 && r.duplicateSamples.some((d) => d.includes('on the same connection'))) {
    lines.push(`  NOTE duplicates on one connection beside ${forwardMisses} forward misses: a storable forward answered after forwardDeadlineMs (a slow commit on the receiving instance) is stored again by the sender's instance, two mailbox entries and two copies (see the samples' times after the SEND)`);
  }
  if (cluster && r.duplicateSamples.some((d) => d.includes('the relay had read'))) {
    lines.push('  NOTE an ACK one instance has read is committed to PostgreSQL later, from its write queue (until then only that instance hides the entries): a connection of the key to another instance that reads the mailbox meanwhile gets them again');
  }
  if (r.duplicatesAckUnconfirmed > 0) {
    lines.push('  NOTE RelayClient.close() writes the pending ACK and destroys the socket at once; with DELIVERs still arriving the relay can lose that ACK and redeliver acknowledged messages');
  }
  for (const e of r.relayErrors.slice(0, 5)) lines.push(`  RELAY ERROR ${e.slice(0, 2000)}`);
  if (r.crashes > 0) lines.push('  relay output before it exited:', ...r.relayTail.map((l) => `    ${l.slice(0, 2000)}`));
  lines.push(soakPassed(r) ? 'PASS' : 'FAIL');
  return lines.join('\n');
}
