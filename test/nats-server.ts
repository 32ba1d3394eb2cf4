// A private nats-server for a test file: Debian's `nats-server` (or PULLTAB_NATS_SERVER), on a
// free loopback port, no configuration file, stopped at the end. It can be stopped and started
// again on the same port (the relay's NATS client reconnects by itself).
//
// Where nats-server is not installed, natsSkipReason() answers the reason and the tests that need
// it skip and say so, unless PULLTAB_REQUIRE_NATS=1 (set by .ci/run), when they fail.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { freePort } from './free-port.js';

export function findNatsServer(): string | null {
  if (process.env.PULLTAB_NATS_SERVER) return process.env.PULLTAB_NATS_SERVER;
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin', '/usr/local/bin'];
  for (const dir of dirs) if (dir !== '' && existsSync(join(dir, 'nats-server'))) return join(dir, 'nats-server');
  return null;
}

/** nats-server is needed here: null when it is there, else the reason to skip (or throws when it is required). */
export function natsSkipReason(): string | null {
  if (findNatsServer() !== null) return null;
  const missing = 'nats-server is not installed (apt-get install nats-server, or set PULLTAB_NATS_SERVER)';
  if (process.env.PULLTAB_REQUIRE_NATS === '1') throw new Error(`PULLTAB_REQUIRE_NATS=1 but ${missing}`);
  return `skipped: ${missing}`;
}

export interface NatsServer {
  readonly url: string;
  readonly port: number;
  /** Stops it as kill -9 would. */
  kill(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function startNatsServer(): Promise<NatsServer> {
  const bin = findNatsServer();
  if (bin === null) throw new Error('nats-server is not installed');
  const port = await freePort();
  let proc: ChildProcess | null = null;
  const start = () => new Promise<void>((resolve, reject) => {
    const child = spawn(bin, ['-a', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc = child;
    let out = '';
    const timer = setTimeout(() => reject(new Error(`nats-server did not start: ${out}`)), 15_000);
    const check = (d: Buffer) => {
      out += d.toString();
      if (out.includes('Server is ready')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', check);
    child.stderr!.on('data', check);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited with ${code}: ${out}`));
    });
  });
  const kill = (signal: NodeJS.Signals) => new Promise<void>((resolve) => {
    const p = proc;
    proc = null;
    if (p === null || p.exitCode !== null || p.signalCode !== null) return resolve();
    p.once('exit', () => resolve());
    p.kill(signal);
  });
  await start();
  return { url: `nats://127.0.0.1:${port}`, port, kill: () => kill('SIGKILL'), start, stop: () => kill('SIGTERM') };
}
