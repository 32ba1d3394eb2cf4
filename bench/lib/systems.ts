// The systems under test, each in a process of its own: the Pulltab relay (from dist/), the
// bare node:net pipe, and nats-server. Plus /proc readings of a process's CPU and memory.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseRelayAddress } from '../../src/protocol/address.js';
import { freePort } from '../../test/free-port.js';

export interface RunningSystem {
  name: string;
  pid: number;
  port: number;
  /** Pulltab only: the relay's public key. */
  relayKey?: Uint8Array;
  /** Lines the process wrote to stderr or, for the relay, its warn/error logs. */
  log: string[];
  stop(): Promise<void>;
  /** A relay of several instances: where receivers connect (another instance than `port`'s). */
  receiverPort?: number;
  /** Every process whose CPU is the system's (the instances of a cluster); by default `pid` and its children. */
  pids?: number[];
  /** A cluster: the nats-server its instances route through (its CPU is reported apart from theirs). */
  natsPid?: number;
  /** A cluster: each instance's /metrics port, in instance order. */
  metricsPorts?: number[];
}

const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat. */
export function procCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After "pid (comm) ": state is field 3, utime 14, stime 15 → indexes 11, 12 here.
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Minor page faults a process has taken (fresh pages: large buffers allocated and freed show here). */
export function procMinorFaults(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // minflt is field 10 → index 7 after "pid (comm) ".
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
  } catch {
    return NaN;
  }
}

/** CPU seconds of a process and its live children (a relay of workers: the primary and each worker). */
export function procTreeCpuSeconds(pid: number): number {
  let total = procCpuSeconds(pid);
  for (const child of childPids(pid)) total += procCpuSeconds(child);
  return total;
}

/** The pids whose parent is pid (read from /proc). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid) out.push(Number(name));
    } catch { /* gone meanwhile */ }
  }
  return out;
}

/** A VmXXX field of /proc/<pid>/status, in bytes. */
export function procStatusBytes(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Reads the first stdout line of a child, with a timeout. */
function firstLine(child: ChildProcess, what: string, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    let got = false;
    const timer = setTimeout(() => reject(new Error(`${what} printed nothing in ${timeoutMs} ms`)), timeoutMs);
    rl.once('line', (line) => {
      got = true;
      clearTimeout(timer);
      resolve(line.trim());
      // Keep draining stdout so the child never blocks on a full pipe.
      child.stdout!.on('data', () => {});
    });
    child.once('exit', (code) => {
      if (!got) {
        clearTimeout(timer);
        reject(new Error(`${what} exited (${code}) before printing its address`));
      }
    });
  });
}

function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function collectLines(stream: NodeJS.ReadableStream | null, log: string[], filter: (line: string) => boolean = () => true): void {
  if (!stream) return;
  createInterface({ input: stream }).on('line', (line) => {
    if (log.length < 200 && filter(line)) log.push(line);
  });
}

export interface RelayStartOptions {
  root: string;
  profileDir?: string;
  env?: Record<string, string>;
  /** A data directory made beforehand (an instance of a cluster holds the relay's identity file in it). */
  dataDir?: string;
  /** More `serve` arguments (--store, --cluster ...). */
  args?: string[];
  /** Where its warnings go (the instances of a cluster share one). */
  log?: string[];
}

/**
 * Starts `node dist/cli/main.js serve` on loopback with a fresh data directory. It runs
 * under `sh -c 'ulimit -n ...; exec node ...'` so its file limit can be raised; exec keeps
 * the pid the node process's pid.
 */
export async function startRelay(opts: RelayStartOptions): Promise<RunningSystem> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'pulltab-bench-'));
  const nodeArgs = [...(opts.profileDir ? ['--cpu-prof', '--cpu-prof-dir', opts.profileDir] : []), join(opts.root, 'dist/cli/main.js'), 'serve', '--host', '127.0.0.1', '--port', '0', '--data', dataDir, ...(opts.args ?? [])];
  const quoted = [process.execPath, ...nodeArgs].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child = spawn('sh', ['-c', `ulimit -n 65536 2>/dev/null || true; exec ${quoted}`], {
    cwd: opts.root,
    env: {
      ...process.env,
      PULLTAB_LOG_LEVEL: 'warn',
      // The harness fixes its own allocator (run.ts); the relay runs with the default one.
      GLIBC_TUNABLES: undefined,
      PULLTAB_METRICS_PORT: '0',
      PULLTAB_MAX_CONNECTIONS: '20000',
      PULLTAB_MAX_HANDSHAKES: '5000',
      // The store scenario fills one mailbox well past the default quotas.
      PULLTAB_MAILBOX_MAX_COUNT: '10000000',
      PULLTAB_MAILBOX_MAX_BYTES: String(8 * 1024 * 1024 * 1024),
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log: string[] = opts.log ?? [];
  collectLines(child.stderr, log);
  const line = await firstLine(child, 'relay');
  // Logs (JSON lines at warn and above) follow the address on stdout.
  collectLines(child.stdout, log);
  const address = parseRelayAddress(line);
  return {
    name: 'pulltab',
    pid: child.pid!,
    port: address.port,
    relayKey: address.relayKey,
    log,
    stop: async () => {
      await stopChild(child);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function startPipe(root: string): Promise<RunningSystem> {
  const child = spawn(process.execPath, [join(root, 'dist/bench/bench/lib/pipe-server.js')], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GLIBC_TUNABLES: undefined },
  });
  const log: string[] = [];
  collectLines(child.stderr, log);
  const port = Number(await firstLine(child, 'pipe'));
  return { name: 'pipe', pid: child.pid!, port, log, stop: () => stopChild(child) };
}

export function natsServerPath(): string | null {
  const r = spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

/**
 * The nats-server baseline, installed from Debian's packages when it is missing and this
 * process may (root, apt-get present), unless PULLTAB_BENCH_NO_INSTALL is set. Says what it
 * does on stderr; returns null when nats-server cannot be had.
 */
export function ensureNatsServer(): string | null {
  const found = natsServerPath();
  if (found || process.env.PULLTAB_BENCH_NO_INSTALL) return found;
  const canInstall = process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v apt-get']).status === 0;
  if (!canInstall) return null;
  process.stderr.write('[bench] nats-server is not on PATH: installing it with apt-get (set PULLTAB_BENCH_NO_INSTALL=1 to skip)\n');
  const install = spawnSync('sh', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server'], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 300_000 });
  if (install.status !== 0) process.stderr.write('[bench] could not install nats-server; its baseline is skipped\n');
  return natsServerPath();
}


export async function startNats(bin: string, log: string[] = []): Promise<RunningSystem> {
  const port = await freePort();
  const child = spawn(bin, ['-a', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  collectLines(child.stdout, log, (l) => /\[(ERR|WRN|FTL)\]/.test(l));
  collectLines(child.stderr, log, (l) => /\[(ERR|WRN|FTL)\]/.test(l));
  // Wait until it accepts connections.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error('nats-server did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { name: 'nats', pid: child.pid!, port, log, stop: () => stopChild(child) };
}

export interface RelayClusterOptions {
  root: string;
  natsBin: string;
  /** postgres://... : the mailboxes every instance shares (an empty database). */
  storeUrl: string;
  profileDir?: string;
  env?: Record<string, string>;
  /** Told each instance's pid as it starts (to name its profile). */
  started?: (pid: number, instance: number) => void;
}

/**
 * One relay as two instances on loopback, routed through a private nats-server, mailboxes in
 * PostgreSQL, as test/cluster.test.ts `instances()` starts them: the second instance's data
 * directory gets a copy of the relay identity the first one made, so both hold one relay key.
 * Senders connect to `port` (instance 1), receivers to `receiverPort` (instance 2).
 */
export async function startRelayCluster(opts: RelayClusterOptions): Promise<RunningSystem> {
  // The instances' warnings and nats-server's, in the one log a record reads.
  const log: string[] = [];
  const nats = await startNats(opts.natsBin, log);
  const name = `bench${process.pid}x${Math.floor(Math.random() * 1e9)}`;
  const instances: RunningSystem[] = [];
  const metricsPorts: number[] = [];
  let firstDir = '';
  try {
    for (let i = 1; i <= 2; i++) {
      const dataDir = mkdtempSync(join(tmpdir(), `pulltab-bench-i${i}-`));
      if (i === 1) firstDir = dataDir;
      else copyFileSync(join(firstDir, 'relay-identity.json'), join(dataDir, 'relay-identity.json'));
      const metricsPort = await freePort();
      const relay = await startRelay({
        root: opts.root, profileDir: opts.profileDir, dataDir, log,
        env: { ...opts.env, PULLTAB_METRICS_PORT: String(metricsPort) },
        args: ['--store', opts.storeUrl, '--cluster', `nats://127.0.0.1:${nats.port}`, '--cluster-name', name],
      });
      opts.started?.(relay.pid, i);
      instances.push(relay);
      metricsPorts.push(metricsPort);
    }
  } catch (err) {
    for (const r of instances) await r.stop();
    await nats.stop();
    throw err;
  }
  const [one, two] = instances as [RunningSystem, RunningSystem];
  return {
    name: 'pulltab-cluster', pid: one.pid, port: one.port, receiverPort: two.port, relayKey: one.relayKey, log,
    pids: [one.pid, two.pid], natsPid: nats.pid, metricsPorts,
    stop: async () => {
      // The instances first (each tells the other it leaves), then the server they met through.
      await Promise.all([one.stop(), two.stop()]);
      await nats.stop();
    },
  };
}
