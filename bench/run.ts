// The Pulltab benchmark harness. See bench/README.md.
//
//   npm run bench                        every scenario (builds first)
//   npm run bench -- --quick             a short version (under 3 minutes on 2 cores)
//   npm run bench -- --scenario NAME     one scenario (repeat or comma-separate for several)
//   npm run bench -- --size 64,1024      only these message sizes in the flow scenarios
//   npm run bench -- --profile           also write relay CPU profiles to bench/results/profiles/
//
// Each system under test runs in a process of its own, started fresh for each record: the
// relay (`node dist/cli/main.js serve`), a bare node:net pipe, and nats-server when it is on
// PATH. The load generator is this process: senders and receivers in separate worker threads.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { generateIdentity, Signer, type Identity } from '../src/crypto/keys.js';
import { Code, FrameType, SendFlags } from '../src/protocol/constants.js';
import { encodeAck, encodeSend, parseDeliver, parseResult } from '../src/protocol/frames.js';
import { PulltabPeer } from './lib/pulltab-peer.js';
import { databaseCpuSeconds, runBaselines } from './postgres-bench.js';
import { postgresSkipReason, startCluster } from '../test/postgres-cluster.js';
import { formatSummary, stackShares, summarizeProfile, type ProfileWindow, type StackRule } from './lib/profile-summary.js';
import {
  evaluateTargets, markdownTable, sizeLabel, targetsMarkdown, targetsText, textTable, throughputSvg, type BenchRecord,
} from './lib/report.js';
import { Slot, sharedCounters, type SystemName, type WorkerConfig, type WorkerResult } from './lib/shared.js';
import {
  ensureNatsServer, procCpuSeconds, procMinorFaults, procStatusBytes, procTreeCpuSeconds, startNats, startPipe, startRelay, startRelayCluster, type RunningSystem,
} from './lib/systems.js';
import { freePort } from '../test/free-port.js';

// The load generator's own memory allocator, fixed before anything runs. glibc's malloc moves
// its trim and mmap thresholds as a process allocates and frees; in this process, after the
// NATS client's worker threads had run, the next receiver thread's arena handed every 64 KiB
// socket read fresh pages: 7x the page faults per message, twice the system time, and the
// 1:1 1 KiB Pulltab row after a nats row fell from ~450k to ~190k msgs/s with that thread as the
// bound. Fixed thresholds keep the load generator out of the measurement; the systems under
// test (relay, pipe) run with the default allocator, as deployed (systems.ts drops the variable).
const HARNESS_MALLOC = 'glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=4194304';
if (process.platform === 'linux' && process.env.GLIBC_TUNABLES === undefined) {
  const again = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit', env: { ...process.env, GLIBC_TUNABLES: HARNESS_MALLOC },
  });
  process.exit(again.status ?? 1);
}

// dist/bench/bench/run.js → the repository root is three levels up.
const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../../..');
const RESULTS = join(ROOT, 'bench/results');
const PROFILES = join(RESULTS, 'profiles');

// ---------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const PROFILE = argv.includes('--profile');
const wanted = new Set<string>();
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--scenario' && argv[i + 1]) wanted.add(argv[++i]!);
  else if (argv[i]!.startsWith('--scenario=')) for (const s of argv[i]!.slice(11).split(',')) wanted.add(s);
}
for (const w of [...wanted]) if (w.includes(',')) { wanted.delete(w); for (const s of w.split(',')) wanted.add(s); }

const T = QUICK
  ? { warmMs: 500, measureMs: 1500, latWarmMs: 500, latMeasureMs: 2000, handshakeMs: 2500, storeMs: 2000, idleN: 10_000 }
  : { warmMs: 1000, measureMs: 5000, latWarmMs: 1000, latMeasureMs: 5000, handshakeMs: 5000, storeMs: 5000, idleN: 10_000 };
// --size N (repeatable or comma-separated, bytes) keeps only those message sizes in the flow scenarios.
const onlySizes = new Set<number>();
for (let i = 0; i < argv.length; i++) {
  const v = argv[i] === '--size' ? argv[++i] : argv[i]!.startsWith('--size=') ? argv[i]!.slice(7) : null;
  if (v) for (const n of v.split(',')) onlySizes.add(Number(n));
}
const sized = (sizes: number[]): number[] => (onlySizes.size ? sizes.filter((s) => onlySizes.has(s)) : sizes);
const SIZES = sized([64, 1024, 16 * 1024, 64 * 1024]);
const RATES = [10_000, 20_000, 50_000];

const SCENARIOS = ['one-to-one', 'library', 'storable-one-to-one', 'pairs-100', 'fanout-8', 'latency', 'handshakes', 'idle-connections', 'store', 'postgres', 'seal', 'healthz', 'tls', 'workers', 'cluster'] as const;
if (argv.includes('--help') || argv.includes('-h')) {
  process.stdout.write(`usage: npm run bench -- [--quick] [--scenario NAME]... [--size BYTES]... [--profile]\nscenarios: ${SCENARIOS.join(', ')}\n`);
  process.exit(0);
}
for (const w of wanted) {
  if (!(SCENARIOS as readonly string[]).includes(w)) {
    process.stderr.write(`bench: unknown scenario ${JSON.stringify(w)}; one of ${SCENARIOS.join(', ')}\n`);
    process.exit(2);
  }
}
const runs = (name: string): boolean => wanted.size === 0 || wanted.has(name);

const NATS = ensureNatsServer();
const SYSTEMS: SystemName[] = ['pulltab', 'pipe', 'nats'];

// ---------------------------------------------------------------------------------------
// Progress on stderr: one line per run, redrawn in place on a terminal.

const TTY = process.stderr.isTTY === true;
class Progress {
  #label = '';
  #start = 0;
  #totalMs = 1;
  #timer: NodeJS.Timeout | null = null;
  #status: () => string = () => '';
  begin(label: string, totalMs: number, status: () => string = () => ''): void {
    this.#label = label;
    this.#start = Date.now();
    this.#totalMs = totalMs;
    this.#status = status;
    if (TTY) {
      this.#draw();
      this.#timer = setInterval(() => this.#draw(), 200);
    } else {
      process.stderr.write(`[bench] ${label} ...\n`);
    }
  }
  #draw(): void {
    const frac = Math.min(1, (Date.now() - this.#start) / this.#totalMs);
    const width = 24;
    const filled = Math.round(frac * width);
    const line = `[bench] ${this.#label.padEnd(40)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.round(frac * 100)).padStart(3)}% ${this.#status()}`;
    process.stderr.write(`\r${line.slice(0, (process.stderr.columns ?? 160) - 1)}\x1b[K`);
  }
  end(result: string): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    if (TTY) process.stderr.write(`\r\x1b[K`);
    process.stderr.write(`[bench] ${this.#label.padEnd(40)} ${result}\n`);
  }
}
const progress = new Progress();

// ---------------------------------------------------------------------------------------
// Helpers

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const MiB = 1024 * 1024;
const fmtRate = (n: number | null) => (n == null ? '-' : Math.round(n).toLocaleString('en-US'));

/** pid → label of the run, to name relay CPU profiles, and the measured window (monotonic µs) once there is one. */
const profiledRuns: Array<{ pid: number; label: string; window?: ProfileWindow }> = [];
const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

async function startSystem(system: SystemName, label: string, env?: Record<string, string>, clusterStore?: string): Promise<RunningSystem> {
  if (system === 'pulltab' && clusterStore !== undefined) {
    return startRelayCluster({
      root: ROOT, natsBin: NATS!, storeUrl: clusterStore, profileDir: PROFILE ? PROFILES : undefined, env,
      started: (pid, i) => { if (PROFILE) profiledRuns.push({ pid, label: `${label}-instance${i}` }); },
    });
  }
  if (system === 'pulltab') {
    const s = await startRelay({ root: ROOT, profileDir: PROFILE ? PROFILES : undefined, env });
    if (PROFILE) profiledRuns.push({ pid: s.pid, label });
    return s;
  }
  if (system === 'pipe') return startPipe(ROOT);
  return startNats(NATS!);
}

interface Meter {
  t: number;
  cpu: number;
  /** CPU seconds of each of the system's processes (the instances of a cluster). */
  each: number[];
  /** A cluster: its nats-server's CPU seconds (0 otherwise). */
  nats: number;
  /** Minor page faults of the system's processes (their own, not their children's). */
  faults: number;
  lg: NodeJS.CpuUsage;
}

/** A pid, or a running system: every one of its processes (a cluster: both instances, and its nats-server apart). */
function meter(of: number | RunningSystem): Meter {
  const pids = typeof of === 'number' ? [of] : of.pids ?? [of.pid];
  const natsPid = typeof of === 'number' ? undefined : of.natsPid;
  // A relay of workers is the primary and its children: all of their CPU counts.
  const each = pids.map(procTreeCpuSeconds);
  return {
    t: performance.now(), cpu: each.reduce((a, b) => a + b, 0), each,
    nats: natsPid === undefined ? 0 : procCpuSeconds(natsPid), lg: process.cpuUsage(),
    faults: pids.reduce((sum, pid) => sum + procMinorFaults(pid), 0),
  };
}

function usage(a: Meter, b: Meter): { sec: number; serverPct: number; eachPct: number[]; natsPct: number; faults: number; loadgenPct: number } {
  const sec = (b.t - a.t) / 1000;
  return {
    sec, faults: b.faults - a.faults,
    serverPct: ((b.cpu - a.cpu) / sec) * 100,
    eachPct: b.each.map((c, i) => ((c - a.each[i]!) / sec) * 100),
    natsPct: ((b.nats - a.nats) / sec) * 100,
    loadgenPct: ((b.lg.user - a.lg.user + b.lg.system - a.lg.system) / 1e6 / sec) * 100,
  };
}

function skipped(scenario: string, system: string, messageBytes: number, reason: string, variant?: string): BenchRecord {
  return { scenario, system, messageBytes, variant, skipped: reason, msgsPerSec: null, MBps: null, latencyUs: null, relayCpuPct: null, relayPeakRssMiB: null, loadgenCpuPct: null, durationSec: null, messages: null };
}

function startWorker(config: WorkerConfig, file = 'loadgen-worker.js'): { worker: Worker; ready: Promise<void>; sent: Promise<WorkerResult>; done: Promise<WorkerResult> } {
  const worker = new Worker(join(HERE, 'lib', file), { workerData: config });
  let onError!: (err: Error) => void;
  const failed = new Promise<never>((_, reject) => { onError = reject; });
  failed.catch(() => {});
  const waitFor = (type: string) => {
    const p = Promise.race([failed, new Promise<any>((resolve) => {
      worker.on('message', (m: { type: string; result?: WorkerResult }) => { if (m.type === type) resolve(m.result); });
    })]);
    p.catch(() => {}); // rejections surface where the promise is awaited
    return p;
  };
  worker.on('message', (m: { type: string; message?: string }) => { if (m.type === 'error') onError(new Error(`${config.role} worker: ${m.message}`)); });
  worker.on('error', onError);
  worker.on('exit', (code) => onError(new Error(`${config.role} worker exited (${code})`)));
  return { worker, ready: waitFor('ready'), sent: waitFor('sent'), done: waitFor('done') };
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------
// Message flows: 1:1, N pairs, fan-out, open-loop latency

interface FlowSpec {
  scenario: string;
  senders: number;
  fanout: number;
  bodyBytes: number;
  mode: 'throughput' | 'latency';
  rate?: number;
  variant?: string;
  /** Also hammer the relay's /healthz with autocannon during the measured window. */
  healthz?: boolean;
  /** SEND flags (pulltab): STORE measures the storable path (stored as it goes out live, deleted on ACK). */
  sendFlags?: number;
  /** Drive the system through its public client library (library-worker.ts) instead of the load generator. */
  library?: boolean;
  /** Library, pulltab: seal and open every message. */
  sealed?: boolean;
  /** The relay runs TLS (a self-signed certificate) and every peer connects with it (pulltab). */
  tls?: boolean;
  /** The relay runs this many worker processes (pulltab; the primary hands out connections round-robin). */
  workers?: number | 'auto';
  /** With workers, 1:1: the sender lands on the receiver's worker (same) or on the next one (cross). */
  placement?: 'same' | 'cross';
  /**
   * The relay as two instances of a cluster (pulltab), mailboxes in this PostgreSQL database (an
   * empty one): the sender connects to instance 1, the receivers to instance 2.
   */
  clusterStore?: string;
}

/** What a relay needs in its environment to run TLS with a certificate it makes itself. */
const TLS_ENV = { PULLTAB_TLS_SELF_SIGNED: 'true' };

async function runFlow(system: SystemName, spec: FlowSpec): Promise<BenchRecord> {
  const label = `${spec.scenario} ${sizeLabel(spec.bodyBytes)}${spec.variant ? ' ' + spec.variant : ''} ${system}`;
  if (system === 'nats' && !NATS) return skipped(spec.scenario, system, spec.bodyBytes, 'nats-server not on PATH', spec.variant);
  const warmMs = spec.mode === 'latency' ? T.latWarmMs : T.warmMs;
  const measureMs = spec.mode === 'latency' ? T.latMeasureMs : T.measureMs;
  const P = spec.senders;
  const R = P * spec.fanout;
  const sab = sharedCounters(P, R);
  const i32 = new Int32Array(sab);
  const received = () => { let s = 0; for (let j = 0; j < R; j++) s += Atomics.load(i32, Slot.FIRST + P + j); return s; };
  const sentTotal = () => { let s = 0; for (let i = 0; i < P; i++) s += Atomics.load(i32, Slot.FIRST + i); return s; };
  const withWorkers = spec.workers !== undefined && spec.workers !== 1;
  const metricsPort = spec.healthz || withWorkers ? await freePort() : 0;
  const env = {
    ...(spec.healthz || withWorkers ? { PULLTAB_METRICS_PORT: String(metricsPort) } : {}), ...(spec.tls ? TLS_ENV : {}),
    // Round-robin hands connections out in turn, so that a scenario can place a pair on one worker or across two.
    ...(withWorkers ? { PULLTAB_WORKERS: String(spec.workers), PULLTAB_WORKER_ACCEPT: 'round-robin' } : {}),
  };
  const server = await startSystem(system, label.replace(/[^a-zA-Z0-9.-]+/g, '_'), Object.keys(env).length ? env : undefined, spec.clusterStore);
  const inCluster = server.metricsPorts !== undefined;
  let workers: Array<ReturnType<typeof startWorker>> = [];
  const fillers: Socket[] = [];
  try {
    const base: Omit<WorkerConfig, 'role'> = {
      system, port: server.port, sab, senders: P, fanout: spec.fanout, bodyBytes: spec.bodyBytes, mode: spec.mode,
      rate: spec.rate ?? 0,
      // Bytes in flight per sender: well under the relay's 4 MiB outbound budget per recipient.
      windowBytes: P >= 50 ? 256 * 1024 : Number(process.env.BENCH_WINDOW_MIB ?? 2) * MiB,
      maxMessages: 2_000_000_000,
      maxSeconds: (warmMs + measureMs) / 1000 + 5,
      sendFlags: spec.sendFlags ?? 0,
      sealed: spec.sealed ?? false,
      relayKey: server.relayKey ? hex(server.relayKey) : undefined,
      tls: spec.tls ?? false,
    };
    const workerFile = spec.library ? 'library-worker.js' : 'loadgen-worker.js';
    if (system === 'pulltab') {
      const senders = Array.from({ length: P }, () => generateIdentity());
      const receivers = Array.from({ length: R }, () => generateIdentity());
      base.senderSecrets = senders.map((s) => hex(s.secretKey));
      base.receiverSecrets = receivers.map((r) => hex(r.secretKey));
      base.receiverKeys = receivers.map((r) => hex(r.publicKey));
    }
    const rx = startWorker({ ...base, role: 'receiver', port: server.receiverPort ?? server.port }, workerFile);
    workers.push(rx);
    await withTimeout(rx.ready, 30_000, 'receivers connecting');
    // The sender's instance must know where the receivers are, or it refuses RECIPIENT_OFFLINE.
    if (inCluster) await withTimeout(remoteKeys(server.metricsPorts![0]!, R), 10_000, 'instance 1 learning the receivers');
    // Round-robin gives the next connection to the next worker: one that only connects moves the
    // sender onto the receiver's worker (2 workers).
    if (spec.placement === 'same') fillers.push(await placeholderConnection(server.port));
    const tx = startWorker({ ...base, role: 'sender' }, workerFile);
    workers.push(tx);
    await withTimeout(tx.ready, 30_000, 'senders connecting');

    let lastCount = 0;
    let lastT = performance.now();
    let liveRate = 0;
    progress.begin(label, warmMs + measureMs, () => {
      const now = performance.now();
      const c = received();
      if (now - lastT > 150) {
        liveRate = ((c - lastCount) / (now - lastT)) * 1000;
        lastCount = c;
        lastT = now;
      }
      return `${fmtRate(liveRate)} msgs/s`;
    });
    Atomics.store(i32, Slot.CONTROL, 1);
    Atomics.notify(i32, Slot.CONTROL);
    await sleep(warmMs);
    const m1 = meter(server);
    const window0 = monotonicUs();
    const elu1 = [tx.worker.performance.eventLoopUtilization(), rx.worker.performance.eventLoopUtilization()];
    const r1 = received();
    Atomics.store(i32, Slot.RECORDING, 1);
    const healthz = spec.healthz ? probeHealthz(metricsPort, measureMs) : null;
    await sleep(measureMs);
    const healthzResult = healthz ? await healthz : null;
    const r2 = received();
    const m2 = meter(server);
    for (const run of profiledRuns) if ((server.pids ?? [server.pid]).includes(run.pid)) run.window = [window0, monotonicUs()];
    // How busy each side's event loop was (the senders' thread, the receivers' thread): which side bounds the rate.
    const [senderBusy, receiverBusy] = [tx, rx].map((w, k) => w.worker.performance.eventLoopUtilization(elu1[k]).utilization * 100);
    Atomics.store(i32, Slot.RECORDING, 0);
    Atomics.store(i32, Slot.CONTROL, 2);
    Atomics.notify(i32, Slot.CONTROL);
    const senderResult = await withTimeout(tx.sent, 15_000, 'senders stopping');
    // Let what is in flight arrive (bounded).
    const expected = (senderResult.sent ?? sentTotal()) * spec.fanout;
    const drainDeadline = Date.now() + 5000;
    while (received() < expected && Date.now() < drainDeadline) await sleep(20);
    // A cluster: both instances' peaks together.
    const peakRss = (server.pids ?? [server.pid]).reduce((sum, pid) => sum + procStatusBytes(pid, 'VmHWM'), 0);
    tx.worker.postMessage({ type: 'finish' });
    rx.worker.postMessage({ type: 'finish' });
    const rxResult = await withTimeout(rx.done, 10_000, 'receivers finishing');
    await withTimeout(tx.done, 10_000, 'senders finishing');
    const u = usage(m1, m2);
    const msgs = r2 - r1;
    const msgsPerSec = msgs / u.sec;
    const crossed = withWorkers ? await crossedShare(metricsPort) : inCluster ? await crossedShare(server.metricsPorts![0]!) : null;
    const refused = Atomics.load(i32, Slot.DROPS);
    const lost = Math.max(0, expected - received());
    const skippedByOpenLoop = Atomics.load(i32, Slot.SKIPPED);
    const notes: string[] = [];
    if (skippedByOpenLoop > 0) notes.push(`offered rate not sustained: ${skippedByOpenLoop.toLocaleString('en-US')} sends skipped`);
    if (u.loadgenPct > 180) notes.push('load generator near saturation');
    if (server.log.length > 0) notes.push(`server logged ${server.log.length} warning line(s)`);
    if (inCluster) notes.push(`instances ${u.eachPct.map((p) => p.toFixed(0)).join(' + ')}% CPU, their nats-server ${u.natsPct.toFixed(0)}%; crossed ${crossed === null ? '?' : (crossed * 100).toFixed(0)}%`);
    if (spec.scenario === 'cluster') notes.push(`relay ${usPerMsg(u.serverPct, msgsPerSec) ?? '-'} µs/msg of CPU`);
    const record: BenchRecord = {
      scenario: spec.scenario, system, messageBytes: spec.bodyBytes, variant: spec.variant,
      msgsPerSec, MBps: (msgsPerSec * spec.bodyBytes) / 1e6,
      latencyUs: rxResult.latencyUs,
      relayCpuPct: u.serverPct, relayPeakRssMiB: peakRss / MiB, loadgenCpuPct: u.loadgenPct,
      durationSec: u.sec, messages: msgs, dropped: refused + lost,
      extra: {
        senders: P, recipientsPerSender: spec.fanout, offeredRate: spec.rate ?? null, refused, lostInFlight: lost,
        senderThreadBusyPct: Math.round(senderBusy!), receiverThreadBusyPct: Math.round(receiverBusy!),
        ...(withWorkers ? { workers: spec.workers!, crossedPct: crossed === null ? null : Math.round(crossed * 1000) / 10,
          relayCpuUsPerMsg: usPerMsg(u.serverPct, msgsPerSec) } : {}),
        // The cluster scenario compares CPU per message of every row (single instance, nats-server, both instances).
        ...(spec.scenario === 'cluster' ? {
          relayCpuUsPerMsg: usPerMsg(u.serverPct, msgsPerSec), minorFaultsPerKMsg: msgs > 0 ? Math.round((u.faults / msgs) * 1000) : null,
        } : {}),
        ...(inCluster ? {
          crossedPct: crossed === null ? null : Math.round(crossed * 1000) / 10,
          instance1CpuPct: Math.round(u.eachPct[0]! * 10) / 10, instance2CpuPct: Math.round(u.eachPct[1]! * 10) / 10,
          natsCpuPct: Math.round(u.natsPct * 10) / 10, natsCpuUsPerMsg: usPerMsg(u.natsPct, msgsPerSec),
        } : {}),
      },
      note: notes.join('; ') || undefined,
    };
    if (server.log.length > 0) record.extra!['serverLog'] = server.log.slice(0, 3).join(' | ').slice(0, 500);
    if (healthzResult) {
      record.extra!['healthzP50Ms'] = healthzResult.p50Ms;
      record.extra!['healthzP99Ms'] = healthzResult.p99Ms;
      record.extra!['healthzP999Ms'] = healthzResult.p999Ms;
      record.extra!['healthzRequestsPerSec'] = healthzResult.requestsPerSec;
      record.note = [record.note, `/healthz under this load: p50 ${healthzResult.p50Ms} ms, p99 ${healthzResult.p99Ms} ms, ${healthzResult.requestsPerSec} req/s, ${healthzResult.non2xx + healthzResult.errors} failed`].filter(Boolean).join('; ');
    }
    const lat = record.latencyUs ? `, p50/p99/p99.9 ${record.latencyUs.p50}/${record.latencyUs.p99}/${record.latencyUs.p999} µs` : '';
    progress.end(`${fmtRate(msgsPerSec)} msgs/s, ${record.MBps!.toFixed(1)} MB/s${lat}, server CPU ${u.serverPct.toFixed(0)}%, loadgen CPU ${u.loadgenPct.toFixed(0)}% (sender thread busy ${senderBusy!.toFixed(0)}%, receiver ${receiverBusy!.toFixed(0)}%)`);
    return record;
  } finally {
    for (const w of workers) await w.worker.terminate().catch(() => {});
    workers = [];
    for (const f of fillers) f.destroy();
    await server.stop();
  }
}

/** µs of CPU per message, from a CPU % of one core and a rate. */
function usPerMsg(cpuPct: number, msgsPerSec: number): number | null {
  return msgsPerSec > 0 ? Math.round((cpuPct / 100 / msgsPerSec) * 1e6 * 100) / 100 : null;
}

/** Waits (bounded by the caller's timeout) until an instance's /metrics counts n keys held by other instances. */
async function remoteKeys(metricsPort: number, n: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const body = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text(), () => '');
    const line = body.split('\n').find((l) => l.startsWith('pulltab_presence_remote_keys '));
    if (Number(line?.split(' ').pop()) >= n) return;
    await sleep(20);
  }
  throw new Error(`instance never learned ${n} remote key(s)`);
}

/** A TCP connection to the relay that never says anything (it only takes a turn of round-robin). */
async function placeholderConnection(port: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  await sleep(100);
  return socket;
}

/** The share of messages in that a worker forwarded to another (a relay of workers, from its /metrics). */
async function crossedShare(metricsPort: number): Promise<number | null> {
  try {
    const body = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const value = (name: string) => Number(body.split('\n').find((l) => l.startsWith(name + ' '))?.split(' ').pop() ?? NaN);
    const share = value('pulltab_forwards_total') / value('pulltab_messages_in_total');
    return Number.isFinite(share) ? share : null;
  } catch {
    return null;
  }
}

interface HealthzResult { p50Ms: number; p99Ms: number; p999Ms: number; requestsPerSec: number; non2xx: number; errors: number }

/** autocannon against /healthz for durationMs (4 connections, closed loop). */
async function probeHealthz(port: number, durationMs: number): Promise<HealthzResult> {
  const { default: autocannon } = await import('autocannon');
  const result = await autocannon({ url: `http://127.0.0.1:${port}/healthz`, connections: 4, duration: Math.max(1, Math.round(durationMs / 1000)) });
  return {
    p50Ms: result.latency.p50, p99Ms: result.latency.p99, p999Ms: result.latency.p99_9,
    requestsPerSec: Math.round(result.requests.average), non2xx: result.non2xx, errors: result.errors,
  };
}


async function safeFlow(system: SystemName, spec: FlowSpec): Promise<BenchRecord> {
  try {
    return await runFlow(system, spec);
  } catch (err) {
    progress.end(`failed: ${(err as Error).message}`);
    return skipped(spec.scenario, system, spec.bodyBytes, `failed: ${(err as Error).message.split('\n')[0]}`, spec.variant);
  }
}

// ---------------------------------------------------------------------------------------
// Handshakes per second and idle connections (Pulltab only)

async function connectMany(port: number, signers: Signer[], concurrency: number, opts: { untilMs?: number; keep: boolean; onDone?: () => void; tls?: boolean }): Promise<{ peers: PulltabPeer[]; ok: number; failed: number; firstError?: string }> {
  const peers: PulltabPeer[] = [];
  let next = 0;
  let ok = 0;
  let failed = 0;
  let firstError: string | undefined;
  const deadline = opts.untilMs ?? Infinity;
  const lane = async (): Promise<void> => {
    for (;;) {
      if (Date.now() > deadline) return;
      const idx = opts.keep ? next++ : next++ % signers.length;
      if (opts.keep && idx >= signers.length) return;
      const peer = new PulltabPeer({ port, signer: signers[idx]!, timeoutMs: 30_000, tls: opts.tls });
      try {
        await peer.ready;
        ok++;
        opts.onDone?.();
        if (opts.keep) peers.push(peer);
        else peer.socket.destroy();
      } catch (err) {
        failed++;
        firstError ??= (err as Error).message;
        peer.socket.destroy();
        if (failed > 1000) return;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return { peers, ok, failed, firstError };
}

async function runHandshakes(options: { tls?: boolean; scenario?: string } = {}): Promise<BenchRecord> {
  const concurrency = 200;
  const tls = options.tls ?? false;
  const scenario = options.scenario ?? 'handshakes';
  const server = await startSystem('pulltab', `${scenario}${tls ? '-tls' : ''}`, tls ? TLS_ENV : undefined);
  try {
    // One identity per lane: a lane's next connection replaces nothing still open.
    const signers = Array.from({ length: concurrency }, () => new Signer(generateIdentity()));
    let done = 0;
    const warmMs = 500;
    progress.begin(`${scenario} (${concurrency} concurrent${tls ? ', TLS' : ''}) pulltab`, warmMs + T.handshakeMs, () => `${done.toLocaleString('en-US')} done`);
    const start = Date.now();
    let m1: ReturnType<typeof meter> | null = null;
    let d1 = 0;
    const warm = setTimeout(() => { m1 = meter(server.pid); d1 = done; }, warmMs);
    const result = await connectMany(server.port, signers, concurrency, { untilMs: start + warmMs + T.handshakeMs, keep: false, tls, onDone: () => { done++; } });
    clearTimeout(warm);
    const m2 = meter(server.pid);
    const u = usage(m1 ?? m2, m2);
    const rate = (done - d1) / u.sec;
    const record: BenchRecord = {
      scenario, system: 'pulltab', messageBytes: 0, variant: `handshakes, ${concurrency} concurrent${scenario === 'tls' ? (tls ? ', TLS' : ', plain TCP') : ''}`,
      msgsPerSec: rate, MBps: null, latencyUs: null, relayCpuPct: u.serverPct,
      relayPeakRssMiB: procStatusBytes(server.pid, 'VmHWM') / MiB, loadgenCpuPct: u.loadgenPct, durationSec: u.sec, messages: done - d1,
      dropped: result.failed,
      extra: { handshakesPerSec: rate, failed: result.failed, firstError: result.firstError ?? null },
      note: `msgs/s column = completed handshakes/s (connect, ${tls ? 'TLS 1.3, ' : ''}SERVER_HELLO, signed CLIENT_HELLO, SERVER_WELCOME OK)`,
    };
    progress.end(`${fmtRate(rate)} handshakes/s, server CPU ${u.serverPct.toFixed(0)}%, loadgen CPU ${u.loadgenPct.toFixed(0)}%${result.failed ? `, ${result.failed} failed (${result.firstError})` : ''}`);
    return record;
  } finally {
    await server.stop();
  }
}

async function runIdle(): Promise<BenchRecord> {
  const N = T.idleN;
  const server = await startSystem('pulltab', 'idle-connections');
  let peers: PulltabPeer[] = [];
  try {
    progress.begin(`idle connections (${N.toLocaleString('en-US')}) pulltab`, 12_000, () => `${peers.length.toLocaleString('en-US')} open`);
    // Warm the relay (JIT, first allocations) with a few hundred handshakes, then let it settle.
    const warmSigners = Array.from({ length: 200 }, () => new Signer(generateIdentity()));
    const warm = await connectMany(server.port, warmSigners, 50, { keep: true });
    for (const p of warm.peers) p.socket.destroy();
    await sleep(1500);
    const before = procStatusBytes(server.pid, 'VmRSS');
    const signers: Signer[] = [];
    for (let i = 0; i < N; i++) signers.push(new Signer(generateIdentity()));
    const t0 = performance.now();
    const m1 = meter(server.pid);
    const result = await connectMany(server.port, signers, 500, { keep: true });
    peers = result.peers;
    const m2 = meter(server.pid);
    const rampSec = (performance.now() - t0) / 1000;
    await sleep(2000);
    const after = procStatusBytes(server.pid, 'VmRSS');
    const n = peers.length;
    const perConnKiB = (after - before) / Math.max(1, n) / 1024;
    const u = usage(m1, m2);
    const record: BenchRecord = {
      scenario: 'idle-connections', system: 'pulltab', messageBytes: 0, variant: `${n.toLocaleString('en-US')} connections`,
      msgsPerSec: null, MBps: null, latencyUs: null, relayCpuPct: u.serverPct,
      relayPeakRssMiB: procStatusBytes(server.pid, 'VmHWM') / MiB, loadgenCpuPct: u.loadgenPct, durationSec: rampSec, messages: null,
      dropped: result.failed,
      extra: {
        connections: n, failed: result.failed, firstError: result.firstError ?? null,
        rssBeforeMiB: before / MiB, rssAfterMiB: after / MiB, rssPerConnectionKiB: perConnKiB, rampHandshakesPerSec: n / rampSec,
      },
      note: `RSS ${(before / MiB).toFixed(1)} → ${(after / MiB).toFixed(1)} MiB = ${perConnKiB.toFixed(1)} KiB/connection`,
    };
    progress.end(`${n} connected (${result.failed} failed), ${perConnKiB.toFixed(1)} KiB RSS per connection, ramp ${fmtRate(n / rampSec)} handshakes/s`);
    return record;
  } finally {
    for (const p of peers) p.socket.destroy();
    await server.stop();
  }
}

// ---------------------------------------------------------------------------------------
// Store and drain through the relay, plus the store engine bench if there is one

interface StorePhase {
  ok: number;
  refused: number;
  firstRefusal: string;
  seconds: number;
  use: ReturnType<typeof usage>;
}

/**
 * One sender writes STORE|RECEIPT SENDs of bodyBytes to `recipients` (none connected) in turn,
 * at most windowMsgs awaiting their RESULT, for durationMs; then waits for the last RESULT.
 */
async function storePhase(server: RunningSystem, recipients: Identity[], bodyBytes: number, windowMsgs: number, label: string,
  durationMs: number = T.storeMs): Promise<StorePhase> {
  const sender = generateIdentity();
  let ok = 0;
  let refused = 0;
  let firstRefusal = '';
  let results = 0;
  const senderPeer = new PulltabPeer({ port: server.port, signer: new Signer(sender) });
  senderPeer.onFrame = (type, buf, start, end) => {
    if (type !== FrameType.RESULT) return;
    const r = parseResult(buf, start, end);
    results++;
    if (r && r.code === Code.OK) ok++;
    else { refused++; firstRefusal ||= `code 0x${r?.code.toString(16)}`; }
  };
  await senderPeer.ready;
  const body = Buffer.alloc(bodyBytes, 0x62);
  const frames = recipients.map((r) => encodeSend({ seq: 1, flags: 0x03, ttlSeconds: 0, storageKey: null, recipients: [{ key: r.publicKey, wrappedKey: new Uint8Array(0) }], body }));
  const perBatch = Math.max(1, Math.floor(64 * 1024 / frames[0]!.length));
  // Enough distinct batches that every recipient gets messages in turn.
  let next = 0;
  const batches = Array.from({ length: Math.max(1, Math.ceil(frames.length / perBatch)) }, () =>
    Buffer.concat(Array.from({ length: perBatch }, () => frames[next++ % frames.length]!)));
  const maxMessages = 5_000_000;
  let sent = 0;
  let batchIndex = 0;
  progress.begin(label, durationMs, () => `${ok.toLocaleString('en-US')} stored`);
  const m1 = meter(server.pid);
  const t0 = performance.now();
  const stopAt = t0 + durationMs;
  await new Promise<void>((resolveSend) => {
    const pump = (): void => {
      while (performance.now() < stopAt && sent < maxMessages && sent - results + perBatch <= windowMsgs) {
        sent += perBatch;
        if (!senderPeer.socket.write(batches[batchIndex++ % batches.length]!)) { senderPeer.socket.once('drain', pump); return; }
      }
      if (performance.now() >= stopAt || sent >= maxMessages) return resolveSend();
      setTimeout(pump, 1);
    };
    pump();
  });
  const resultDeadline = performance.now() + 60_000;
  while (results < sent && performance.now() < resultDeadline) await sleep(5);
  const t1 = performance.now();
  const use = usage(m1, meter(server.pid));
  const seconds = (t1 - t0) / 1000;
  progress.end(`${fmtRate(ok / seconds)} stored msgs/s (${ok.toLocaleString('en-US')} stored, ${refused} refused${firstRefusal ? ' ' + firstRefusal : ''}), server CPU ${use.serverPct.toFixed(0)}%`);
  senderPeer.socket.destroy();
  return { ok, refused, firstRefusal, seconds, use };
}

async function runStoreEndToEnd(): Promise<BenchRecord[]> {
  const records = await runStoreAndDrain();
  records.push(await runStoreSpread());
  return records;
}

/** The same store phase to 1,000 offline recipients in turn: LMDB touches a page per recipient per commit. */
async function runStoreSpread(): Promise<BenchRecord> {
  const bodyBytes = 1024;
  const count = 1000;
  const server = await startSystem('pulltab', 'store');
  try {
    const recipients = Array.from({ length: count }, () => generateIdentity());
    await storePhase(server, recipients, bodyBytes, 8192, `store to ${count} offline recipients, warm-up (not measured) pulltab`, T.warmMs);
    const s = await storePhase(server, recipients, bodyBytes, 8192, `store to ${count} offline recipients (STORE|RECEIPT) pulltab`);
    return {
      system: 'pulltab', messageBytes: bodyBytes, latencyUs: null, relayPeakRssMiB: procStatusBytes(server.pid, 'VmHWM') / MiB,
      scenario: 'store', variant: `store to ${count.toLocaleString('en-US')} offline recipients (STORE|RECEIPT, end to end)`,
      msgsPerSec: s.ok / s.seconds, MBps: (s.ok / s.seconds) * bodyBytes / 1e6, relayCpuPct: s.use.serverPct, loadgenCpuPct: s.use.loadgenPct,
      durationSec: s.seconds, messages: s.ok, dropped: s.refused,
      extra: { stored: s.ok, refused: s.refused, firstRefusal: s.firstRefusal || null, recipients: count, windowMsgs: 8192 },
      note: 'after a warm-up; messages to the recipients in turn; rate = RESULT OK per second',
    };
  } finally {
    await server.stop();
  }
}

interface DrainPhase {
  delivered: number;
  queueEmpty: boolean;
  seconds: number;
  use: ReturnType<typeof usage>;
}

/** The recipient connects and reads its mailbox (`expected` messages), acknowledging once per chunk, until QUEUE_EMPTY. */
async function drainPhase(server: RunningSystem, recipient: Identity, expected: number, label: string): Promise<DrainPhase> {
  let delivered = 0;
  let queueEmpty = false;
  progress.begin(label, Math.max(1000, (expected / 50_000) * 1000), () => `${delivered.toLocaleString('en-US')} of ${expected.toLocaleString('en-US')}`);
  const m1 = meter(server.pid);
  const t0 = performance.now();
  let lastId = 0;
  let ackedId = 0;
  const rxPeer = new PulltabPeer({ port: server.port, signer: new Signer(recipient) });
  rxPeer.onFrame = (type, buf, start, end) => {
    if (type === FrameType.DELIVER) {
      const d = parseDeliver(buf, start, end);
      if (d) { lastId = d.deliveryId; delivered++; }
    } else if (type === FrameType.QUEUE_EMPTY) {
      queueEmpty = true;
    }
  };
  rxPeer.onChunkEnd = () => {
    if (lastId !== ackedId) { ackedId = lastId; rxPeer.socket.write(encodeAck(lastId)); }
  };
  await rxPeer.ready;
  const deadline = performance.now() + 120_000;
  while (!(queueEmpty && delivered >= expected) && performance.now() < deadline) await sleep(5);
  const seconds = (performance.now() - t0) / 1000;
  const use = usage(m1, meter(server.pid));
  rxPeer.socket.destroy();
  progress.end(`${fmtRate(delivered / seconds)} drained msgs/s (${delivered.toLocaleString('en-US')} of ${expected.toLocaleString('en-US')}${queueEmpty && delivered >= expected ? '' : ', INCOMPLETE'}), server CPU ${use.serverPct.toFixed(0)}%`);
  return { delivered, queueEmpty, seconds, use };
}

async function runStoreAndDrain(): Promise<BenchRecord[]> {
  const bodyBytes = 1024;
  const server = await startSystem('pulltab', 'store');
  try {
    const windowMsgs = 8192;
    // Warm-up, as the other throughput scenarios have: store to and drain another recipient first,
    // so the measured phases run on compiled code (its messages stay in the store, unmeasured).
    const warm = generateIdentity();
    const w = await storePhase(server, [warm], bodyBytes, windowMsgs, 'store and drain warm-up (not measured) pulltab', T.warmMs);
    await drainPhase(server, warm, w.ok, 'drain warm-up (not measured) pulltab');

    const recipient: Identity = generateIdentity();
    const { ok, refused, firstRefusal, seconds: storeSec, use: storeU } =
      await storePhase(server, [recipient], bodyBytes, windowMsgs, 'store (offline recipient, STORE|RECEIPT) pulltab');
    const { delivered, queueEmpty, seconds: drainSec, use: drainU } = await drainPhase(server, recipient, ok, 'drain (recipient connects, ACKs) pulltab');
    const complete = queueEmpty && delivered >= ok;
    const peak = procStatusBytes(server.pid, 'VmHWM') / MiB;
    const common = { system: 'pulltab', messageBytes: bodyBytes, latencyUs: null, relayPeakRssMiB: peak };
    return [
      {
        ...common, scenario: 'store', variant: 'store to offline (STORE|RECEIPT, end to end)',
        msgsPerSec: ok / storeSec, MBps: (ok / storeSec) * bodyBytes / 1e6, relayCpuPct: storeU.serverPct, loadgenCpuPct: storeU.loadgenPct,
        durationSec: storeSec, messages: ok, dropped: refused,
        extra: { stored: ok, refused, firstRefusal: firstRefusal || null, windowMsgs, warmupStored: w.ok },
        note: 'after a warm-up; rate = RESULT OK received per second, from first send to last RESULT',
      },
      {
        ...common, scenario: 'store', variant: 'drain on connect (DELIVER + ACK, end to end)',
        msgsPerSec: delivered / drainSec, MBps: (delivered / drainSec) * bodyBytes / 1e6, relayCpuPct: drainU.serverPct, loadgenCpuPct: drainU.loadgenPct,
        durationSec: drainSec, messages: delivered, dropped: Math.max(0, ok - delivered),
        extra: { delivered, queueEmpty: String(queueEmpty) },
        note: complete ? 'from connect to QUEUE_EMPTY with every stored message received' : 'did not complete within 120 s',
      },
    ];
  } finally {
    await server.stop();
  }
}

/**
 * The relay on PostgreSQL (a private cluster, fsync on): store to an offline recipient and drain
 * with ACKs, end to end as the store scenario does on LMDB, then the database's own limits from
 * this process (bench/postgres-bench.ts). Relay and database CPU per message for each.
 */
async function runPostgres(): Promise<BenchRecord[]> {
  const why = postgresSkipReason();
  if (why !== null) return [skipped('postgres', 'pulltab', 1024, why)];
  const cluster = await startCluster({ settings: { fsync: 'on', full_page_writes: 'on', shared_buffers: '256MB', max_wal_size: '4GB', max_connections: '60' } });
  const bodyBytes = 1024;
  const windowMsgs = 8192;
  const records: BenchRecord[] = [];
  try {
    const url = await cluster.createDatabase('bench');
    const server = await startSystem('pulltab', 'postgres', { PULLTAB_STORE: url });
    try {
      const warm = generateIdentity();
      const w = await storePhase(server, [warm], bodyBytes, windowMsgs, 'store and drain warm-up on PostgreSQL (not measured) pulltab', T.warmMs);
      await drainPhase(server, warm, w.ok, 'drain warm-up on PostgreSQL (not measured) pulltab');
      const recipient = generateIdentity();
      const db0 = databaseCpuSeconds(cluster.pid());
      const s = await storePhase(server, [recipient], bodyBytes, windowMsgs, 'store on PostgreSQL (offline recipient, STORE|RECEIPT) pulltab');
      const db1 = databaseCpuSeconds(cluster.pid());
      const d = await drainPhase(server, recipient, s.ok, 'drain on PostgreSQL (recipient connects, ACKs) pulltab');
      const db2 = databaseCpuSeconds(cluster.pid());
      const peak = procStatusBytes(server.pid, 'VmHWM') / MiB;
      const perMsg = (cpuSeconds: number, n: number) => (n > 0 ? Number(((cpuSeconds / n) * 1e6).toFixed(1)) : null);
      const common = { scenario: 'postgres', system: 'pulltab', messageBytes: bodyBytes, latencyUs: null, relayPeakRssMiB: peak };
      records.push({
        ...common, variant: 'store to offline on PostgreSQL (STORE|RECEIPT, end to end)',
        msgsPerSec: s.ok / s.seconds, MBps: (s.ok / s.seconds) * bodyBytes / 1e6, relayCpuPct: s.use.serverPct, loadgenCpuPct: s.use.loadgenPct,
        durationSec: s.seconds, messages: s.ok, dropped: s.refused,
        extra: { stored: s.ok, refused: s.refused, firstRefusal: s.firstRefusal || null, relayCpuUsPerMsg: perMsg((s.use.serverPct / 100) * s.seconds, s.ok), dbCpuUsPerMsg: perMsg(db1 - db0, s.ok) },
        note: `receipts after COMMIT; relay ${perMsg((s.use.serverPct / 100) * s.seconds, s.ok)} µs/msg, database ${perMsg(db1 - db0, s.ok)} µs/msg of CPU`,
      }, {
        ...common, variant: 'drain on connect on PostgreSQL (DELIVER + ACK, end to end)',
        msgsPerSec: d.delivered / d.seconds, MBps: (d.delivered / d.seconds) * bodyBytes / 1e6, relayCpuPct: d.use.serverPct, loadgenCpuPct: d.use.loadgenPct,
        durationSec: d.seconds, messages: d.delivered, dropped: Math.max(0, s.ok - d.delivered),
        extra: { delivered: d.delivered, queueEmpty: String(d.queueEmpty), relayCpuUsPerMsg: perMsg((d.use.serverPct / 100) * d.seconds, d.delivered), dbCpuUsPerMsg: perMsg(db2 - db1, d.delivered) },
        note: `${d.queueEmpty && d.delivered >= s.ok ? 'connect to QUEUE_EMPTY' : 'INCOMPLETE'}; relay ${perMsg((d.use.serverPct / 100) * d.seconds, d.delivered)} µs/msg, database ${perMsg(db2 - db1, d.delivered)} µs/msg of CPU`,
      });
    } finally {
      await server.stop();
    }
    progress.begin('PostgreSQL baselines: bare batched INSERT ... unnest, paged SELECT + range DELETE', T.storeMs * 2);
    const { insert, insertBinary, drain } = await runBaselines(url, cluster.pid(), bodyBytes, 500, T.storeMs);
    progress.end(`insert ${fmtRate(insert.rows / insert.seconds)} rows/s (binary ${fmtRate(insertBinary.rows / insertBinary.seconds)}), drain ${fmtRate(drain.rows / drain.seconds)} rows/s`);
    for (const [variant, r] of [
      ['baseline: bare INSERT ... SELECT FROM unnest, 500 rows per transaction', insert],
      ['baseline: the same INSERT with binary blobs cut in SQL, 500 rows per transaction', insertBinary],
      ['baseline: bare paged SELECT + range DELETE, 500 rows per page', drain],
    ] as const) {
      const dbUs = Number(((r.databaseCpuSeconds / r.rows) * 1e6).toFixed(1));
      records.push({
        scenario: 'postgres', system: 'postgres', messageBytes: bodyBytes, variant, latencyUs: null, relayPeakRssMiB: null,
        msgsPerSec: r.rows / r.seconds, MBps: (r.rows / r.seconds) * bodyBytes / 1e6,
        relayCpuPct: (r.databaseCpuSeconds / r.seconds) * 100, loadgenCpuPct: (r.clientCpuSeconds / r.seconds) * 100,
        durationSec: r.seconds, messages: r.rows, extra: { dbCpuUsPerMsg: dbUs },
        note: `from the bench process, one connection; server CPU = the database's; database ${dbUs} µs/row of CPU`,
      });
    }
  } finally {
    await cluster.destroy();
  }
  return records;
}

/**
 * Cross-instance 1:1 (issue 19): the relay as two instances of a cluster, the sender on one and
 * the receiver on the other, beside the single instance and beside nats-server's own 1:1 pub/sub
 * (the floor under any design routed through NATS), size by size in the same run; then the open
 * loop at 10k msgs/s of 1 KiB, single instance against across instances.
 */
async function runClusterScenario(): Promise<BenchRecord[]> {
  const why = !NATS ? 'nats-server not on PATH' : postgresSkipReason();
  if (why !== null) return [skipped('cluster', 'pulltab', 0, why)];
  const pg = await startCluster();
  const records: BenchRecord[] = [];
  try {
    // A fresh database per cluster record: nothing of an earlier one's mailboxes left.
    const across = async (spec: Omit<FlowSpec, 'clusterStore'>): Promise<BenchRecord> =>
      safeFlow('pulltab', { ...spec, clusterStore: await pg.createDatabase() });
    for (const size of sized([64, 1024, 16 * 1024])) {
      const spec = { scenario: 'cluster', senders: 1, fanout: 1, bodyBytes: size, mode: 'throughput' } as const;
      records.push(await safeFlow('pulltab', { ...spec, variant: '1:1, single instance' }));
      records.push(await safeFlow('nats', { ...spec, variant: '1:1, nats-server pub/sub' }));
      records.push(await across({ ...spec, variant: '1:1, across instances' }));
    }
    if (onlySizes.size === 0 || onlySizes.has(1024)) {
      const spec = { scenario: 'cluster', senders: 1, fanout: 1, bodyBytes: 1024, mode: 'latency', rate: 10_000 } as const;
      records.push(await safeFlow('pulltab', { ...spec, variant: 'offered 10,000/s, single instance' }));
      records.push(await across({ ...spec, variant: 'offered 10,000/s, across instances' }));
    }
  } finally {
    await pg.destroy();
  }
  return records;
}

async function runStoreEngine(): Promise<BenchRecord[]> {
  const path = join(HERE, 'store-bench.js');
  if (!existsSync(path)) return [skipped('store-engine', 'pulltab-store', 0, 'bench/store-bench.ts does not exist')];
  const mod = (await import(path)) as { runStoreBench?: (opts: { quick: boolean; recipients?: number }) => Promise<unknown> };
  if (typeof mod.runStoreBench !== 'function') return [skipped('store-engine', 'pulltab-store', 0, 'bench/store-bench.ts does not export runStoreBench')];
  progress.begin('store engine (bench/store-bench.ts runStoreBench)', QUICK ? 10_000 : 30_000);
  // One hot recipient, then messages spread over 1,000 recipients (LMDB touches a page per recipient per commit).
  const list: unknown[] = [];
  for (const recipients of [1, 1000]) {
    const rows = await mod.runStoreBench({ quick: QUICK, recipients });
    list.push(...(Array.isArray(rows) ? rows : [rows]));
  }
  progress.end(`${list.length} row(s)`);
  return list.map((raw) => {
    const r = (raw ?? {}) as Record<string, unknown>;
    const num = (k: string) => (typeof r[k] === 'number' ? (r[k] as number) : null);
    const rateKey = Object.keys(r).find((k) => /PerSec$|perSec$|opsPerSec|msgsPerSec/.test(k) && typeof r[k] === 'number');
    const bytes = num('bodyBytes') ?? num('messageBytes') ?? num('bytes') ?? 0;
    const extra: Record<string, number | string | null> = {};
    for (const [k, v] of Object.entries(r)) extra[k] = typeof v === 'number' || typeof v === 'string' ? v : v == null ? null : JSON.stringify(v);
    const rate = rateKey ? (r[rateKey] as number) : null;
    return {
      scenario: 'store-engine', system: 'pulltab-store', messageBytes: bytes,
      variant: String(r['scenario'] ?? r['name'] ?? r['case'] ?? '') + (typeof r['recipients'] === 'number' ? `, ${r['recipients']} recipient(s)` : ''),
      msgsPerSec: rate, MBps: num('MBps') ?? num('mbps') ?? (rate !== null && bytes ? (rate * bytes) / 1e6 : null),
      latencyUs: null, relayCpuPct: null, relayPeakRssMiB: null, loadgenCpuPct: null, durationSec: null, messages: null,
      extra,
      note: (rateKey ? `msgs/s column = ${rateKey}` : 'see extra') +
        (typeof r['cpuUsPerMsg'] === 'number' ? `; CPU ${r['cpuUsPerMsg']} µs/msg (JS thread ${r['mainCpuUsPerMsg'] ?? '-'})` : ''),
    };
  });
}

async function runSeal(): Promise<BenchRecord[]> {
  const { runSealBench } = await import('./seal-bench.js');
  progress.begin('seal/open (bench/seal-bench.ts runSealBench)', QUICK ? 4000 : 12_000);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const rows = await runSealBench({ quick: QUICK });
  const sec = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(cpu0);
  progress.end(rows.map((r) => `${r.scenario}: ${fmtRate(r.sealPerSec)} seal/s`).join(', '));
  return rows.map((r) => ({
    scenario: 'seal', system: 'pulltab-client', messageBytes: r.bodyBytes, variant: `to ${r.recipients}`,
    msgsPerSec: r.sealPerSec, MBps: r.sealMBps, latencyUs: null, relayCpuPct: null, relayPeakRssMiB: null,
    loadgenCpuPct: ((c.user + c.system) / 1e6 / sec) * 100, durationSec: null, messages: null,
    extra: { sealPerSec: r.sealPerSec, openPerSec: r.openPerSec, sealMBps: r.sealMBps, openMBps: r.openMBps },
    note: `msgs/s = seals/s; opens/s ${fmtRate(r.openPerSec)} (${r.openMBps.toFixed(1)} MB/s); one thread`,
  }));
}

// ---------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  mkdirSync(RESULTS, { recursive: true });
  if (PROFILE) mkdirSync(PROFILES, { recursive: true });
  const started = Date.now();
  const natsVersion = NATS ? spawnSync(NATS, ['--version'], { encoding: 'utf8' }).stdout.trim() : null;
  const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() || null;
  process.stderr.write(`[bench] ${QUICK ? 'quick' : 'full'} run, node ${process.version}, ${(await import('node:os')).cpus().length} CPUs${NATS ? `, ${natsVersion}` : ''}\n`);
  if (!NATS) process.stderr.write('[bench] note: nats-server is not on PATH; the nats baseline is skipped (apt-get install -y nats-server)\n');
  const records: BenchRecord[] = [];
  const systems = SYSTEMS;

  if (runs('one-to-one')) {
    for (const size of SIZES) for (const sys of systems) records.push(await safeFlow(sys, { scenario: 'one-to-one', senders: 1, fanout: 1, bodyBytes: size, mode: 'throughput' }));
  }
  if (runs('library')) {
    // What users drive: RelayClient against the NATS client, the same loop (send 255, flush).
    for (const [senders, variant] of [[1, ''], [100, '100 pairs']] as const) {
      for (const size of sized([64, 1024, 16 * 1024])) {
        const spec = { scenario: 'library', senders, fanout: 1, bodyBytes: size, mode: 'throughput', library: true } as const;
        records.push(await safeFlow('pulltab', { ...spec, variant: variant ? `${variant} raw` : 'raw' }));
        // Sealed 1:1 only: a hundred senders sealing 255 messages each per batch is one thread's
        // public-key work, not the relay's or the library's path (the seal scenario measures it).
        if (senders === 1) records.push(await safeFlow('pulltab', { ...spec, variant: 'sealed', sealed: true }));
        if (NATS) records.push(await safeFlow('nats', { ...spec, variant: variant ? `${variant} raw` : 'raw' }));
      }
    }
  }
  if (runs('storable-one-to-one')) {
    // What durability costs a connected recipient: the same 1:1 flow with STORE set (every message
    // committed to the mailbox as it goes out, deleted by the receiver's ACK), beside the plain one.
    for (const size of sized([64, 1024, 16 * 1024])) {
      records.push(await safeFlow('pulltab', { scenario: 'storable-one-to-one', senders: 1, fanout: 1, bodyBytes: size, mode: 'throughput', variant: 'not storable' }));
      records.push(await safeFlow('pulltab', { scenario: 'storable-one-to-one', senders: 1, fanout: 1, bodyBytes: size, mode: 'throughput', variant: 'STORE (stored until ACK)', sendFlags: SendFlags.STORE }));
    }
  }
  if (runs('pairs-100')) {
    for (const sys of systems) records.push(await safeFlow(sys, { scenario: 'pairs-100', senders: 100, fanout: 1, bodyBytes: 1024, mode: 'throughput', variant: '100 pairs' }));
  }
  if (runs('fanout-8')) {
    for (const sys of systems) records.push(await safeFlow(sys, { scenario: 'fanout-8', senders: 1, fanout: 8, bodyBytes: 1024, mode: 'throughput', variant: '1 to 8' }));
  }
  if (runs('latency')) {
    for (const rate of RATES) for (const sys of systems) {
      records.push(await safeFlow(sys, { scenario: 'latency', senders: 1, fanout: 1, bodyBytes: 1024, mode: 'latency', rate, variant: `offered ${rate.toLocaleString('en-US')}/s` }));
    }
  }
  if (runs('healthz')) {
    // The operator's health check while the relay moves messages as fast as it can.
    records.push(await safeFlow('pulltab', { scenario: 'healthz', senders: 1, fanout: 1, bodyBytes: 1024, mode: 'throughput', variant: '/healthz under 1:1 1 KiB load', healthz: true }));
  }
  if (runs('workers')) {
    // A relay of 2 workers beside the single process, in the same run: what a message crossing
    // between workers costs (relay CPU per message, all processes), and 100 pairs placed by
    // round-robin. \`BENCH_WORKERS=auto npm run bench -- --scenario workers\` runs the pairs on every core.
    const many = process.env.BENCH_WORKERS === 'auto' ? 'auto' : Number(process.env.BENCH_WORKERS ?? 2);
    for (const size of sized([64, 1024])) {
      const spec = { scenario: 'workers', senders: 1, fanout: 1, bodyBytes: size, mode: 'throughput' } as const;
      records.push(await safeFlow('pulltab', { ...spec, variant: '1:1, single process' }));
      records.push(await safeFlow('pulltab', { ...spec, variant: '1:1, 2 workers, same worker', workers: 2, placement: 'same' }));
      records.push(await safeFlow('pulltab', { ...spec, variant: '1:1, 2 workers, across workers', workers: 2, placement: 'cross' }));
    }
    const pairs = { scenario: 'workers', senders: 100, fanout: 1, bodyBytes: 1024, mode: 'throughput' } as const;
    records.push(await safeFlow('pulltab', { ...pairs, variant: '100 pairs, single process' }));
    records.push(await safeFlow('pulltab', { ...pairs, variant: `100 pairs, ${many} workers`, workers: many }));
  }
  if (runs('cluster')) records.push(...await runClusterScenario());
  const guarded = async (scenario: string, fn: () => Promise<BenchRecord | BenchRecord[]>): Promise<void> => {
    try {
      const r = await fn();
      records.push(...(Array.isArray(r) ? r : [r]));
    } catch (err) {
      progress.end(`failed: ${(err as Error).message}`);
      records.push(skipped(scenario, 'pulltab', 0, `failed: ${(err as Error).message.split('\n')[0]}`));
    }
  };
  if (runs('handshakes')) await guarded('handshakes', () => runHandshakes());
  if (runs('tls')) {
    // TLS beside plain TCP in one run: 1:1 at 1 KiB and 16 KiB, then handshakes per second.
    for (const size of [1024, 16 * 1024]) {
      for (const tls of [false, true]) {
        records.push(await safeFlow('pulltab', { scenario: 'tls', senders: 1, fanout: 1, bodyBytes: size, mode: 'throughput', variant: tls ? '1:1, TLS' : '1:1, plain TCP', tls }));
      }
    }
    await guarded('tls', () => runHandshakes({ scenario: 'tls', tls: false }));
    await guarded('tls', () => runHandshakes({ scenario: 'tls', tls: true }));
  }
  if (runs('idle-connections')) await guarded('idle-connections', runIdle);
  if (runs('store')) {
    await guarded('store', runStoreEndToEnd);
    await guarded('store-engine', runStoreEngine);
  }
  if (runs('postgres')) await guarded('postgres', runPostgres);
  if (runs('seal')) await guarded('seal', runSeal);

  const targets = evaluateTargets(records);
  const elapsedSec = (Date.now() - started) / 1000;
  const meta = {
    date: new Date().toISOString(), quick: QUICK, scenarios: wanted.size ? [...wanted] : 'all', node: process.version,
    cpus: (await import('node:os')).cpus().length, commit, natsServer: natsVersion, elapsedSec,
    units: 'msgs/s = messages received per second in the measured window (fan-out: deliveries); MB/s = body bytes, 10^6; latency in µs; CPU in % of one core; RSS in MiB',
  };

  console.log('');
  console.log(textTable(records));
  console.log('');
  console.log('Targets (ratios within this run):');
  console.log(targetsText(targets));
  console.log(`\n${QUICK ? 'quick' : 'full'} run took ${elapsedSec.toFixed(0)} s`);

  // A partial run (--scenario) writes latest.* too, but says so in meta.
  writeFileSync(join(RESULTS, 'latest.json'), JSON.stringify({ meta, targets, records }, null, 2) + '\n');
  const md = [
    `# Pulltab benchmark results`,
    '',
    `${meta.date}, ${QUICK ? 'quick' : 'full'} run${wanted.size ? ` of ${[...wanted].join(', ')}` : ''}, node ${meta.node}, ${meta.cpus} CPUs, commit ${commit ?? '?'}${natsVersion ? `, ${natsVersion}` : ''}; ${elapsedSec.toFixed(0)} s.`,
    '',
    meta.units + '. Server = the process under test (relay, pipe, or nats-server).',
    '',
    markdownTable(records),
    '',
    '## Targets',
    '',
    targetsMarkdown(targets),
    '',
  ].join('\n');
  writeFileSync(join(RESULTS, 'latest.md'), md);
  if (records.some((r) => r.scenario === 'one-to-one' && !r.skipped)) writeFileSync(join(RESULTS, 'throughput.svg'), throughputSvg(records));
  console.log(`wrote ${['latest.json', 'latest.md', 'throughput.svg'].map((f) => join('bench/results', f)).join(', ')}`);

  if (PROFILE) {
    await sleep(500);
    for (const file of readdirSync(PROFILES).filter((f) => f.endsWith('.cpuprofile') && f.startsWith('CPU.'))) {
      const pid = Number(/\.(\d+)\.\d+\.\d+\.cpuprofile$/.exec(file)?.[1]);
      const run = profiledRuns.find((r) => r.pid === pid);
      if (!run) continue;
      const target = join(PROFILES, `${run.label}.cpuprofile`);
      renameSync(join(PROFILES, file), target);
      const summary = [formatSummary(summarizeProfile(target, 15)), ...(run.window ? measuredWindow(target, run.window) : [])].join('\n');
      writeFileSync(join(PROFILES, `${run.label}.txt`), summary + '\n');
      console.log(`\nrelay profile ${run.label}:\n${summary}`);
    }
  }
}

/** What the link between instances copies (src/cluster/nats-stream.ts and the NATS client), wherever it is called from. */
const COPY_RULES: StackRule[] = [
  { label: 'NatsStream #send: the batch copied behind the link header', under: { name: /^#send$/, url: /nats-stream/ }, leaf: { name: /copy/i }, notUnder: { name: /^publish$/ } },
  { label: 'nats.js publish: PUB line + payload + CRLF packed into one buffer', under: { name: /^pack$/, url: /databuffer/ } },
  { label: "nats.js: the NATS connection's socket writes (the kernel's copy, loopback TCP)", under: { name: /^_send$/, url: /node_transport/ } },
  { label: 'nats.js receive: a message spanning socket reads gathered', under: { name: /.*/, url: /denobuffer/ } },
  { label: 'garbage collector', under: { name: /^\(garbage collector\)$/ } },
];

/** The measured window's top self times and the link's copies, as lines for a profile's summary. */
function measuredWindow(file: string, window: ProfileWindow): string[] {
  const top = summarizeProfile(file, 15, window);
  const copies = stackShares(file, COPY_RULES, window);
  return [
    '', `the measured window only (monotonic µs ${window[0]} ${window[1]}): ${formatSummary(top)}`,
    `  of its ${copies.busyMs.toFixed(0)} ms busy, under (inclusive):`,
    ...copies.shares.map((c) => `  ${c.pct.toFixed(1).padStart(5)}%  ${c.ms.toFixed(0).padStart(7)} ms  ${c.label}`),
  ];
}

main().then(() => process.exit(0), (err: Error) => {
  process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
