// The fuzz run: a relay in a child process, many connections throwing fuzzed frames at it, and
// a well-behaved pair of clients whose accepted messages must all arrive.
import { randomBytes } from 'node:crypto';
import { DEFAULT_PROTOCOL_LIMITS } from '../../src/protocol/constants.js';
import { ABUSE_BOUNDS, startAbuserThread, type AbuseReport } from './abusers.js';
import { fuzzConnection, newTally, type FuzzContext } from './fuzz-conn.js';
import { FrameFactory } from './fuzz-frames.js';
import { GoodPair, type PairReport } from './good-pair.js';
import { ensureBuilt, mib, procStatusBytes, startRelayProcess } from './relay-process.js';

export interface FuzzOptions {
  seconds: number;
  /** Fuzzing connections open at once (each closes and is replaced as it goes). */
  connections?: number;
  /** Leave out the fuzzed connections or the abusers (to see what each costs the good pair). */
  fuzzers?: boolean;
  abusers?: boolean;
  /** Run the relay as this many worker processes (`serve --workers`; default 1). */
  workers?: number;
  log?: (line: string) => void;
}

export interface FuzzReport {
  seconds: number;
  frames: number;
  framesPerSecond: number;
  bytes: number;
  connections: number;
  handshakes: number;
  refusedAtAccept: number;
  endings: Record<string, number>;
  mismatches: number;
  mismatchSamples: string[];
  /** 1 when the relay process exited during the run. */
  crashes: number;
  relayExit: string | null;
  relayTail: string[];
  /** Relay log lines at level error or above. */
  relayErrors: string[];
  pair: PairReport;
  peakRssBytes: number;
  /** RSS at the end: anonymous (heap, buffers) and file-backed (mostly the LMDB map). */
  endRss: { anon: number; file: number };
  /** Anonymous RSS after the good pair's calm phase, and its peak while fuzzers and abusers ran (sampled). */
  anonBaseline: number;
  anonPeak: number;
  /** The good pair's accepted messages per second alone (calm), and beside the flooders (before the fuzzers start). */
  pairRateCalm: number;
  pairRateUnderAttack: number;
  abuse: AbuseReport;
}

/** The bounds a run is held to. */
export const FUZZ_BOUNDS = ABUSE_BOUNDS;

export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const log = options.log ?? (() => {});
  const limits = DEFAULT_PROTOCOL_LIMITS;
  ensureBuilt(log);
  const relay = await startRelayProcess({
    PULLTAB_MAX_PAYLOAD_BYTES: String(limits.maxPayloadBytes),
    PULLTAB_MAX_RECIPIENTS: String(limits.maxRecipients),
    PULLTAB_WORKERS: String(options.workers ?? 1),
  });
  log(`relay ${relay.address} (pid ${relay.pid}); fuzzing for ${options.seconds} s with ${options.connections ?? 100} connections`);
  try {
    const abusers = startAbuserThread(relay.port);
    await abusers.ready;
    const pair = await GoodPair.start(relay.address);
    pair.run();
    // The pair alone first: the rate every later figure is compared with.
    const calmMs = Math.min(2000, Math.max(500, options.seconds * 250));
    const calmStart = pair.acceptedSoFar;
    await new Promise((resolve) => setTimeout(resolve, calmMs));
    const pairRateCalm = ((pair.acceptedSoFar - calmStart) * 1000) / calmMs;
    const anonBaseline = procStatusBytes(relay.pid, 'RssAnon');
    let anonPeak = anonBaseline;
    const sampler = setInterval(() => {
      if (relay.exit === null) anonPeak = Math.max(anonPeak, procStatusBytes(relay.pid, 'RssAnon'));
    }, 50);
    // Then the flooders beside it, alone (the fuzzed connections would share this process's
    // thread with the pair, so they come after): the pair's rate now is the fairness figure.
    // The stored-send pipeliner waits for the fuzz phase (its commits hold up every storable
    // receipt: that is the disk's share, not the event loop's).
    const floodStart = Date.now();
    const floodEnd = floodStart + calmMs;
    const deadline = floodEnd + options.seconds * 1000;
    const abuse = options.abusers === false ? null : abusers.run(deadline, floodEnd);
    const floodAccepted = pair.acceptedSoFar;
    await new Promise((resolve) => setTimeout(resolve, calmMs));
    const pairRateUnderAttack = ((pair.acceptedSoFar - floodAccepted) * 1000) / (Date.now() - floodStart);
    const started = Date.now();
    const ctx: FuzzContext = {
      port: relay.port,
      limits,
      factory: new FrameFactory({ sinks: Array.from({ length: 8 }, () => randomBytes(32)), victims: pair.publicKeys.map((k) => Buffer.from(k)) }),
      deadline,
      tally: newTally(),
    };
    const progress = setInterval(() => {
      const s = (Date.now() - started) / 1000;
      log(`${s.toFixed(0)} s: ${ctx.tally.frames} frames (${Math.round(ctx.tally.frames / s)}/s), ${ctx.tally.connections} connections, relay RSS ${mib(procStatusBytes(relay.pid, 'VmRSS'))}`);
    }, 10_000);
    const workers = Array.from({ length: options.fuzzers === false ? 0 : options.connections ?? 100 }, async () => {
      while (Date.now() < ctx.deadline && relay.exit === null) await fuzzConnection(ctx);
    });
    await Promise.all(workers);
    const abuseReport = abuse === null ? { written: {} } : await abuse;
    clearInterval(progress);
    clearInterval(sampler);
    const seconds = (Date.now() - started) / 1000;
    const pairReport = await pair.finish(relay.exit === null ? 15_000 : 0);
    const peakRssBytes = procStatusBytes(relay.pid, 'VmHWM');
    const endRss = { anon: procStatusBytes(relay.pid, 'RssAnon'), file: procStatusBytes(relay.pid, 'RssFile') };
    const { tally } = ctx;
    return {
      seconds,
      frames: tally.frames,
      framesPerSecond: Math.round(tally.frames / seconds),
      bytes: tally.bytes,
      connections: tally.connections,
      handshakes: tally.handshakes,
      refusedAtAccept: tally.refusedAtAccept,
      endings: Object.fromEntries([...tally.endings].sort((a, b) => b[1] - a[1])),
      mismatches: tally.mismatches,
      mismatchSamples: tally.samples,
      crashes: relay.exit === null ? 0 : 1,
      relayExit: relay.exit === null ? null : `code ${relay.exit.code}, signal ${relay.exit.signal}`,
      relayTail: relay.tail(),
      relayErrors: relay.errors,
      pair: pairReport,
      peakRssBytes,
      endRss,
      anonBaseline,
      anonPeak,
      pairRateCalm,
      pairRateUnderAttack,
      abuse: abuseReport,
    };
  } finally {
    await relay.stop();
  }
}

/** Pass or fail: the relay never went down, the good pair lost nothing and kept moving, memory stayed bounded. */
export function fuzzPassed(r: FuzzReport): boolean {
  return r.crashes === 0 && r.pair.lost === 0 && memoryBounded(r) && pairKeptMoving(r);
}

export function memoryBounded(r: FuzzReport): boolean {
  return r.anonPeak - r.anonBaseline <= FUZZ_BOUNDS.anonGrowthBytes;
}

export function pairKeptMoving(r: FuzzReport): boolean {
  return r.pairRateUnderAttack >= r.pairRateCalm * FUZZ_BOUNDS.pairRateShare;
}

export function formatFuzzReport(r: FuzzReport): string {
  const p = r.pair;
  const lines = [
    `fuzz: ${r.seconds.toFixed(1)} s`,
    `  frames tried:       ${r.frames} (${r.framesPerSecond}/s, ${mib(r.bytes)})`,
    `  connections:        ${r.connections} (${r.handshakes} authenticated, ${r.refusedAtAccept} refused at accept)`,
    `  relay crashes:      ${r.crashes}${r.relayExit ? ` (exited: ${r.relayExit})` : ''}`,
    `  messages lost:      ${p.lost} (good pair: ${p.sent} sent, ${p.accepted} accepted, ${p.received} received, ${p.duplicates} duplicates, `
      + `${p.refused} refused, ${p.unanswered} unanswered, ${p.disconnects} disconnects, ${p.lostAllowed} non-storable lost across a disconnect, ${p.foreign} fuzzed messages received)`,
    `  relay peak RSS:     ${mib(r.peakRssBytes)} (VmHWM; at the end ${mib(r.endRss.anon)} anonymous + ${mib(r.endRss.file)} file-backed)`,
    `  relay anon memory:  ${mib(r.anonBaseline)} before the attack, peak ${mib(r.anonPeak)} during it (bound: +${mib(FUZZ_BOUNDS.anonGrowthBytes)})${memoryBounded(r) ? '' : ' OVER'}`,
    `  good pair rate:     ${r.pairRateCalm.toFixed(0)}/s alone, ${r.pairRateUnderAttack.toFixed(0)}/s beside the flooders (bound: ${FUZZ_BOUNDS.pairRateShare * 100}%)${pairKeptMoving(r) ? '' : ' TOO SLOW'}`,
    `  abusers wrote:      ${Object.entries(r.abuse.written).map(([k, v]) => `${k} ${mib(v)}`).join(', ')}${r.abuse.error ? ` (abusers failed: ${r.abuse.error})` : ''}`,
    `  protocol mismatches: ${r.mismatches}`,
    `  relay error logs:   ${r.relayErrors.length}`,
    `  connection endings: ${Object.entries(r.endings).map(([k, v]) => `${k} ${v}`).join(', ')}`,
  ];
  for (const s of r.mismatchSamples) lines.push(`  MISMATCH ${s}`);
  for (const e of r.relayErrors.slice(0, 5)) lines.push(`  RELAY ERROR ${e.slice(0, 2000)}`);
  if (r.crashes > 0) lines.push('  relay output before it exited:', ...r.relayTail.map((l) => `    ${l.slice(0, 2000)}`));
  lines.push(fuzzPassed(r) ? 'PASS' : 'FAIL');
  return lines.join('\n');
}
