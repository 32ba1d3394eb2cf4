// A private PostgreSQL cluster for a test file or a bench run: initdb in a temporary directory, one
// postmaster on a free loopback port, trust authentication, stopped (and its directory removed) at
// the end. Real PostgreSQL, from Debian's `postgresql` package or PULLTAB_PG_BIN. As root, initdb and
// pg_ctl refuse to run, so they run as the `postgres` user on a directory that user owns.
//
// Where PostgreSQL is not installed, findPostgres() answers null with the reason and the tests that
// need it skip and say so, unless PULLTAB_REQUIRE_POSTGRES=1 (set by .ci/run), when they fail.
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';

export interface PostgresInstall {
  bin: string;
  /** The OS user the server runs as: null runs it as this process's user. */
  runAs: string | null;
}

/** The PostgreSQL binaries on this machine, or why there are none. */
export function findPostgres(): PostgresInstall | { missing: string } {
  const candidates: string[] = [];
  if (process.env.PULLTAB_PG_BIN) candidates.push(process.env.PULLTAB_PG_BIN);
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    for (const v of readdirSync(debian).sort((a, b) => Number(b) - Number(a))) candidates.push(join(debian, v, 'bin'));
  }
  const bin = candidates.find((dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl')));
  if (bin === undefined) return { missing: 'PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or PULLTAB_PG_BIN); apt-get install postgresql' };
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  return { bin, runAs: root ? 'postgres' : null };
}

/** PostgreSQL is needed here: null when it is there, else the reason to skip (or throws when it is required). */
export function postgresSkipReason(): string | null {
  const found = findPostgres();
  if (!('missing' in found)) return null;
  if (process.env.PULLTAB_REQUIRE_POSTGRES === '1') throw new Error(`PULLTAB_REQUIRE_POSTGRES=1 but ${found.missing}`);
  return `skipped: ${found.missing}`;
}

export interface Cluster {
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  readonly url: string;
  readonly port: number;
  /** The server's pid (the postmaster; its children are the backends), for CPU accounting. */
  pid(): number;
  /** A new empty database on this cluster: its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Stops the server as `kill -9` would (immediate shutdown: no checkpoint, recovery at the next start). */
  crash(): Promise<void>;
  /** Starts it again on the same port and data. */
  start(): Promise<void>;
  /** Stops it and removes its files. */
  destroy(): Promise<void>;
}

export interface ClusterOptions {
  /** Server settings (-c name=value); the default turns fsync off, which only a power loss would notice. */
  settings?: Record<string, string>;
}

const TEST_SETTINGS: Record<string, string> = {
  fsync: 'off',
  full_page_writes: 'off',
  shared_buffers: '32MB',
  max_connections: '60',
};

export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const found = findPostgres();
  if ('missing' in found) throw new Error(found.missing);
  const dir = mkdtempSync(join(tmpdir(), 'pulltab-pg-'));
  const data = join(dir, 'data');
  if (found.runAs !== null) {
    const uid = Number(execFileSync('id', ['-u', found.runAs]).toString().trim());
    const gid = Number(execFileSync('id', ['-g', found.runAs]).toString().trim());
    chownSync(dir, uid, gid);
  }
  const run = (command: string, args: string[]): Promise<void> => runAs(found, command, args);
  await run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
  const port = await freePort();
  const settings = { ...TEST_SETTINGS, ...options.settings, port: String(port), listen_addresses: '127.0.0.1', unix_socket_directories: dir };
  const serverOptions = Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`).join(' ');
  const start = () => run('pg_ctl', ['-D', data, '-o', serverOptions, '-l', join(dir, 'server.log'), '-w', '-t', '60', 'start']);
  await start();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  let databases = 0;
  return {
    url,
    port,
    pid: () => Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]),
    async createDatabase(name = `pulltab_${process.pid}_${++databases}`) {
      await run('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-q', '-c', `CREATE DATABASE ${name}`]);
      return `postgres://postgres@127.0.0.1:${port}/${name}`;
    },
    crash: () => run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']),
    start,
    async destroy() {
      await run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function runAs(install: PostgresInstall, command: string, args: string[]): Promise<void> {
  const path = join(install.bin, command);
  const [file, argv] = install.runAs === null ? [path, args] : ['runuser', ['-u', install.runAs, '--', path, ...args]];
  return new Promise((resolve, reject) => {
    // cwd: a directory the server's user can read (it may not be allowed into ours)
    const child = spawn(file, argv, { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')} exited ${code}: ${output.trim()}`))));
  });
}
