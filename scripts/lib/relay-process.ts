// The relay under test as a child process (`node dist/cli/main.js serve` on loopback, its data
// in a fresh temporary directory, or one the caller prepared), rebuilt first when dist/ is older
// than src/, plus /proc readings of its memory and open files.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = join(ROOT, 'dist/cli/main.js');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/** Builds dist/ (tsc -p tsconfig.build.json) unless it is newer than every file in src/. Throws with tsc's output on failure. */
export function ensureBuilt(log: (line: string) => void = () => {}): void {
  if (existsSync(CLI) && statSync(CLI).mtimeMs >= newestMtime(join(ROOT, 'src'))) return;
  log('building dist/ (src/ is newer)...');
  const tsc = join(ROOT, 'node_modules/.bin/tsc');
  const r = spawnSync(tsc, ['-p', 'tsconfig.build.json'], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
  if (r.status !== 0) {
    throw new Error(`the build failed (tsc -p tsconfig.build.json exited ${r.status ?? r.signal}), so the relay cannot be started:\n${(r.stdout + r.stderr).trim()}`);
  }
}

export interface RelayProcess {
  pid: number;
  address: string;
  port: number;
  /** Set once the process has exited; while the run has not stopped it, that is a crash. */
  exit: { code: number | null; signal: string | null } | null;
  /** Log lines at level error (50) or above, and anything not JSON (a stack trace, say). */
  errors: string[];
  /** Log lines at level warn (40), counted by their `event` field. */
  warnings: Map<string, number>;
  /** The port of its /metrics (null: a free one the relay chose and did not say, PULLTAB_METRICS_PORT=0). */
  metricsPort: number | null;
  /** The last lines the relay wrote, for a crash report. */
  tail(): string[];
  /** SIGTERM, then SIGKILL after graceMs; removes the data directory. */
  stop(graceMs?: number): Promise<void>;
}

export interface RelayProcessOptions {
  /** More `serve` arguments (--store, --cluster, --config...). */
  args?: string[];
  /** The data directory (removed at stop like a fresh one); default a fresh temporary directory. */
  dataDir?: string;
  /** Serve /metrics on this port (default: a free one the relay picks, which it does not say at level warn). */
  metricsPort?: number;
  /** Write every line the relay prints to this file too (evidence for a report). */
  logFile?: string;
}

/** Starts the relay with PULLTAB_* settings from env and resolves once it prints its address. */
export async function startRelayProcess(env: Record<string, string> = {}, options: RelayProcessOptions = {}): Promise<RelayProcess> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'pulltab-fuzz-'));
  const child: ChildProcess = spawn(process.execPath, [CLI, 'serve', '--host', '127.0.0.1', '--port', '0', '--data', dataDir, ...(options.args ?? [])], {
    cwd: ROOT,
    // Metrics on a free port, so a relay already on the default 9652 does not stop this one.
    env: { ...process.env, PULLTAB_LOG_LEVEL: 'warn', PULLTAB_METRICS_PORT: String(options.metricsPort ?? 0), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail: string[] = [];
  const errors: string[] = [];
  const warnings = new Map<string, number>();
  const logFile = options.logFile === undefined ? null : createWriteStream(options.logFile, { flags: 'a' });
  logFile?.on('error', () => {}); // evidence only: a failing file does not stop the run
  let stopping = false;
  const onLine = (line: string) => {
    logFile?.write(`${line}\n`);
    tail.push(line);
    if (tail.length > 50) tail.shift();
    let level = 0;
    let event = '';
    try {
      const parsed = JSON.parse(line) as { level?: number; event?: string; msg?: string };
      level = parsed.level ?? 0;
      event = parsed.event ?? parsed.msg ?? '';
    } catch {
      level = /^pulltabs?:\/\//.test(line) ? 0 : 50;
    }
    if (level >= 50 && errors.length < 100) errors.push(line);
    else if (level >= 40) warnings.set(event, (warnings.get(event) ?? 0) + 1);
  };
  // If this process goes, the relay goes with it.
  const killOnExit = () => {
    child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  };
  process.once('exit', killOnExit);
  const address = await new Promise<string>((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`the relay printed no address within 20 s:\n${tail.join('\n')}`)), 20_000);
    const out = createInterface({ input: child.stdout! });
    out.on('line', (line) => {
      if (/^pulltabs?:\/\//.test(line)) {
        logFile?.write(`${line}\n`);
        clearTimeout(timer);
        resolvePromise(line.trim());
      } else {
        onLine(line);
      }
    });
    createInterface({ input: child.stderr! }).on('line', onLine);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the relay exited (${code ?? signal}) before printing its address:\n${tail.join('\n')}`));
    });
  }).catch((err: Error) => {
    process.off('exit', killOnExit);
    killOnExit();
    throw err;
  });
  const relay: RelayProcess = {
    pid: child.pid!,
    address,
    port: Number(address.split(':').pop()),
    exit: null,
    errors,
    warnings,
    metricsPort: options.metricsPort ?? null,
    tail: () => [...tail],
    stop: async (graceMs = 10_000) => {
      stopping = true;
      if (relay.exit === null) {
        await new Promise<void>((done) => {
          const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
          child.once('exit', () => { clearTimeout(timer); done(); });
          child.kill('SIGTERM');
        });
      }
      process.off('exit', killOnExit);
      rmSync(dataDir, { recursive: true, force: true });
      await new Promise<void>((done) => (logFile === null ? done() : logFile.end(done)));
    },
  };
  child.on('exit', (code, signal) => {
    relay.exit = { code, signal };
    if (!stopping) onLine(`relay exited unexpectedly: code ${code}, signal ${signal}`);
  });
  return relay;
}

/** A VmXXX field of /proc/<pid>/status in bytes (NaN when the process is gone). */
export function procStatusBytes(pid: number, field: 'VmHWM' | 'VmRSS' | 'RssAnon' | 'RssFile'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Open file descriptors of a process (NaN when the process is gone). */
export function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}


export const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
