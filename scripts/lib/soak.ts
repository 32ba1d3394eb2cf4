// The soak run: a relay in a child process and a population of clients coming and going,
// sending live and storable messages; at the end every recipient connects and drains its
// mailbox, and every storable message the relay answered for must be accounted for. The
// relay's memory and open files are read after a warm-up and again at the end, both times
// with no client connected.
import { generateIdentity } from '../../src/crypto/keys.js';
import { ABUSE_BOUNDS, startAbuserThread, type AbuseReport } from './abusers.js';
import { liveUntil, SoakConnection, type Population } from './soak-client.js';
import { Ledger, type LedgerReport } from './soak-ledger.js';
import { ensureBuilt, mib, openFds, procStatusBytes, startRelayProcess } from './relay-process.js';

export interface SoakOptions {
  seconds: number;
  identities?: number;
  /** Of them, how many stay offline until the final drain. */
  late?: number;
  /** Longest pause between two sends of one client, in ms. */
  pauseMs?: number;
  /** The relay's inflightWindow (default 16, far below its own default, to exercise spilling). */
  inflightWindow?: number;
  /** Run the relay as this many worker processes (`serve --workers`; default 1). */
  workers?: number;
  log?: (line: string) => void;
  /** Run the abusers (scripts/lib/abusers.ts) beside the soak's clients; default true. */
  abusers?: boolean;
}

export interface ResourceSample {
  rssBytes: number;
  /** RSS split: anonymous (heap, buffers) and file-backed (mostly the LMDB map). */
  anonBytes: number;
  fileBytes: number;
  fds: number;
}

export interface SoakReport extends LedgerReport {
  seconds: number;
  identities: number;
  late: number;
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
  ensureBuilt(log);
  // A small window of unacknowledged deliveries, so slow and lazy readers spill to their
  // mailboxes often and the backlog paths get as much traffic as the live ones.
  const relay = await startRelayProcess({ PULLTAB_INFLIGHT_WINDOW: String(options.inflightWindow ?? 16), PULLTAB_WORKERS: String(options.workers ?? 1) });
  try {
    const pop: Population = {
      address: relay.address,
      identities: Array.from({ length: n }, () => generateIdentity()),
      ledger: new Ledger(),
      late: new Set(Array.from({ length: lateCount }, (_, i) => i)),
      friends: Array.from({ length: n }, () => Array.from({ length: 3 }, () => Math.floor(Math.random() * n))),
      pauseMs: options.pauseMs ?? 30,
    };
    const abusers = options.abusers === false ? null : startAbuserThread(relay.port);
    await abusers?.ready;
    const active = pop.identities.map((_, i) => i).filter((i) => !pop.late.has(i));
    const live = (ms: number) => Promise.all(active.map((i) => liveUntil(pop, i, Date.now() + ms)));

    const warmMs = Math.min(10_000, Math.max(1000, options.seconds * 100));
    log(`relay ${relay.address} (pid ${relay.pid}); ${n} identities (${lateCount} offline until the end); warm-up ${warmMs / 1000} s`);
    await live(warmMs);
    await sleep(SETTLE_MS);
    const start = sample(relay.pid);
    log(`after warm-up: RSS ${mib(start.rssBytes)}, ${start.fds} open files; soaking for ${options.seconds} s`);

    const began = Date.now();
    // Beside the soak's clients, the abusers (floods, non-readers, a stored-send pipeliner): the
    // ledger must still balance, and the relay's memory stay within its bounds.
    const abuse = abusers === null ? null : abusers.run(began + options.seconds * 1000);
    let anonPeak = start.anonBytes;
    const sampler = setInterval(() => {
      if (relay.exit === null) anonPeak = Math.max(anonPeak, procStatusBytes(relay.pid, 'RssAnon'));
    }, 50);
    const progress = setInterval(() => {
      const r = pop.ledger.counts;
      log(`${((Date.now() - began) / 1000).toFixed(0)} s: ${r.messages} messages, ${r.storableAcknowledged} storable acknowledged, relay RSS ${mib(procStatusBytes(relay.pid, 'VmRSS'))}, ${openFds(relay.pid)} open files`);
    }, 10_000);
    await live(options.seconds * 1000);
    const abuseReport = abuse === null ? null : await abuse;
    clearInterval(progress);
    clearInterval(sampler);
    const seconds = (Date.now() - began) / 1000;

    log('draining every mailbox...');
    const drainTimedOut = relay.exit === null ? await drainAll(pop, 60_000) : n;
    await sleep(SETTLE_MS);
    const end = sample(relay.pid);
    return {
      ...pop.ledger.report(),
      seconds, identities: n, late: lateCount, drainTimedOut, start, end,
      peakRssBytes: procStatusBytes(relay.pid, 'VmHWM'),
      anonPeak,
      abuse: abuseReport,
      crashes: relay.exit === null ? 0 : 1,
      relayExit: relay.exit === null ? null : `code ${relay.exit.code}, signal ${relay.exit.signal}`,
      relayTail: relay.tail(),
      relayErrors: relay.errors,
    };
  } finally {
    await relay.stop();
  }
}

/** Pass or fail: the relay stayed up, every acknowledged storable message is accounted for, every duplicate explained. */
export function soakPassed(r: SoakReport): boolean {
  return r.crashes === 0 && r.storableMissing === 0 && r.duplicatesUnexplained === 0 && soakMemoryBounded(r);
}

export function soakMemoryBounded(r: SoakReport): boolean {
  return r.anonPeak - r.start.anonBytes <= ABUSE_BOUNDS.anonGrowthBytes;
}

export function formatSoakReport(r: SoakReport): string {
  const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : 'n/a');
  const lines = [
    `soak: ${r.seconds.toFixed(1)} s, ${r.identities} identities (${r.late} offline until the end)`,
    `  messages sent:        ${r.messages} (${r.refused} recipient refusals, ${r.unanswered} without a receipt)`,
    `  storable acknowledged: ${r.storableAcknowledged} (message, recipient) pairs: ${r.storableReceived} received, ${r.storableReplaced} replaced by a newer one with the same storage key, ${r.storableMissing} UNACCOUNTED FOR (${r.storableMissingStale} of them with a storage key whose older message arrived instead)`,
    `  live:                 ${r.liveSent} sent, ${r.liveDelivered} DELIVERED, ${r.liveReceived} received (not storable: lost when the recipient goes before reading it)`,
    `  duplicates:           ${r.duplicatesAllowed} after a disconnect before ack, ${r.duplicatesAckUnconfirmed} after an ACK not yet confirmed when the connection closed, ${r.duplicatesUnexplained} after an ACK the relay had read`,
    `  odd copies:           ${r.receivedRefused} of refused messages, ${r.receivedUnknown} of unknown messages`,
    `  final drain:          ${r.drainTimedOut} recipients still waiting when it gave up`,
    `  relay RSS:            ${mib(r.start.rssBytes)} after warm-up, ${mib(r.end.rssBytes)} at the end (ratio ${ratio(r.end.rssBytes, r.start.rssBytes)}), peak ${mib(r.peakRssBytes)}`,
    `    of which anonymous: ${mib(r.start.anonBytes)} → ${mib(r.end.anonBytes)} (ratio ${ratio(r.end.anonBytes, r.start.anonBytes)}); file-backed (LMDB map): ${mib(r.start.fileBytes)} → ${mib(r.end.fileBytes)}`,
    `  relay open files:     ${r.start.fds} after warm-up, ${r.end.fds} at the end (ratio ${ratio(r.end.fds, r.start.fds)})`,
    `  relay anon memory:    ${mib(r.start.anonBytes)} after warm-up, peak ${mib(r.anonPeak)} beside the abusers (bound: +${mib(ABUSE_BOUNDS.anonGrowthBytes)})${soakMemoryBounded(r) ? '' : ' OVER'}`,
    `  relay crashes:        ${r.crashes}${r.relayExit ? ` (exited: ${r.relayExit})` : ''}`,
    `  relay error logs:     ${r.relayErrors.length}`,
  ];
  for (const s of r.missingSamples) lines.push(`  MISSING ${s}`);
  for (const s of r.duplicateSamples) lines.push(`  DUPLICATE ${s}`);
  if (r.duplicatesAckUnconfirmed > 0) {
    lines.push('  NOTE RelayClient.close() writes the pending ACK and destroys the socket at once; with DELIVERs still arriving the relay can lose that ACK and redeliver acknowledged messages');
  }
  for (const e of r.relayErrors.slice(0, 5)) lines.push(`  RELAY ERROR ${e.slice(0, 2000)}`);
  if (r.crashes > 0) lines.push('  relay output before it exited:', ...r.relayTail.map((l) => `    ${l.slice(0, 2000)}`));
  lines.push(soakPassed(r) ? 'PASS' : 'FAIL');
  return lines.join('\n');
}
