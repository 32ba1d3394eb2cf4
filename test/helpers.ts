// Shared test fixtures: a relay on loopback with its data in a temporary directory, clients,
// and a raw protocol peer for sending frames a well-behaved client never would.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { RelayClient, type ReceivedMessage, type RelayClientOptions } from '../src/client/client.js';
import { generateIdentity, Signer, type Identity } from '../src/crypto/keys.js';
import { FrameType, PROTOCOL_VERSION_MAX } from '../src/protocol/constants.js';
import { answerServerHello } from '../src/protocol/client-handshake.js';
import {
  channelBindingOf, encodeClientHello, parseServerHello, parseServerWelcome, type ServerHello, type ServerWelcome,
} from '../src/protocol/handshake.js';
import { FrameReader } from '../src/protocol/reader.js';
import type { RelayConfigInput } from '../src/server/config.js';
import { Relay } from '../src/server/relay.js';

export const silentLogger = pino({ level: 'silent' });

export function tempDir(prefix = 'pulltab-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function startRelay(overrides: RelayConfigInput = {}, dataDir = tempDir()): Promise<Relay> {
  return Relay.start({ host: '127.0.0.1', port: 0, metricsPort: 0, dataDir, ...overrides }, { logger: silentLogger });
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** A client for tests: a fresh identity unless given, fast reconnection. */
export function makeClient(relay: { readonly address: string } | string, options: Partial<RelayClientOptions> = {}): RelayClient {
  return new RelayClient({
    relay: typeof relay === 'string' ? relay : relay.address,
    identity: options.identity ?? generateIdentity(),
    backoffBaseMs: 20,
    backoffCapMs: 200,
    ...options,
  });
}

export async function connectClient(relay: { readonly address: string } | string, options: Partial<RelayClientOptions> = {}): Promise<RelayClient> {
  const client = makeClient(relay, options);
  await connectWithin(client, relay);
  return client;
}

/**
 * client.connect(), failing after timeoutMs: a client reconnects until the relay lets it in, so
 * a relay that never does would otherwise hang the test until the file's timeout, saying nothing.
 */
export async function connectWithin(client: RelayClient, relay: { readonly address: string } | string, timeoutMs = 30_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      void client.close();
      reject(new Error(`not connected to ${typeof relay === 'string' ? relay : relay.address} within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  try {
    await Promise.race([client.connect(), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves with the next n messages a client receives (events), or rejects after timeoutMs. */
export function nextMessages(client: RelayClient, n: number, timeoutMs = 5000): Promise<ReceivedMessage[]> {
  return new Promise((resolve, reject) => {
    const got: ReceivedMessage[] = [];
    const timer = setTimeout(() => {
      client.off('message', onMessage);
      reject(new Error(`timed out with ${got.length} of ${n} messages`));
    }, timeoutMs);
    const onMessage = (m: ReceivedMessage) => {
      got.push(m);
      if (got.length === n) {
        clearTimeout(timer);
        client.off('message', onMessage);
        resolve(got);
      }
    };
    client.on('message', onMessage);
  });
}

export function once<T = unknown>(emitter: { once(event: string, fn: (...args: any[]) => void): unknown }, event: string, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), timeoutMs);
    emitter.once(event, (value: T) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** Waits (polling every 20 ms) until check() holds, or throws after timeoutMs naming what it waited for. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface RawFrame {
  type: number;
  payload: Buffer;
}

/** What RawPeer.handshake sends instead of an honest CLIENT_HELLO. */
export interface ForgedHello {
  clientKey: Uint8Array;
  clientNonce: Uint8Array;
  signature: Uint8Array;
}

/** A protocol peer that speaks frames by hand. */
export class RawPeer {
  readonly socket: Socket;
  readonly frames: RawFrame[] = [];
  closed = false;
  #waiters: Array<() => void> = [];
  readonly #reader = new FrameReader({
    maxLength: () => 64 * 1024 * 1024,
    onFrame: (type, buf, start, end) => {
      this.frames.push({ type, payload: Buffer.from(buf.subarray(start, end)) });
      this.#wake();
    },
    onError: () => {},
  });

  /** tls: connect with TLS 1.3, accepting any certificate (the relay key is what is pinned). */
  constructor(port: number, options: { tls?: boolean } = {}) {
    this.socket = options.tls
      ? tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3' })
      : connect({ host: '127.0.0.1', port });
    this.socket.on('data', (chunk: Buffer) => this.#reader.push(chunk));
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** The next frame (in arrival order), or null once the relay has closed the connection. */
  async next(timeoutMs = 5000): Promise<RawFrame | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.closed) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a frame');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
    return this.frames.shift()!;
  }

  /** Waits until the relay closes the connection. */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await sleep(10);
    return this.closed;
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /**
   * Runs the client side of the handshake (answerServerHello, as every client does), bent as the
   * options say; returns the welcome, unverified. `forge` replaces the client's key, nonce and
   * signature (for keys no one holds the secret of); it sees the SERVER_HELLO.
   */
  async handshake(identity: Identity = generateIdentity(), options: {
    corruptSignature?: boolean; version?: number; forge?: (hello: ServerHello, version: number) => ForgedHello;
    /** CLIENT_HELLO flags, and (to play a man in the middle who flips them) the flags the signature covers. */
    flags?: number; signedFlags?: number;
    /** Over TLS, sign without the channel binding (as a client that ignores it would). */
    omitBinding?: boolean;
  } = {}): Promise<ServerWelcome> {
    const helloFrame = await this.next();
    if (!helloFrame || helloFrame.type !== FrameType.SERVER_HELLO) throw new Error('expected SERVER_HELLO');
    const hello = parseServerHello(helloFrame.payload, 0, helloFrame.payload.length)!;
    const version = options.version ?? PROTOCOL_VERSION_MAX;
    if (options.forge) {
      const forged = options.forge(hello, version);
      this.write(encodeClientHello({ version, flags: 0, clientKey: Buffer.from(forged.clientKey), clientNonce: Buffer.from(forged.clientNonce), signature: Buffer.from(forged.signature) }));
      return this.#welcome();
    }
    const flags = options.flags ?? 0;
    const { clientHello } = answerServerHello(hello, {
      signer: new Signer(identity), clientNonce: Buffer.alloc(32, 9), version, flags: options.signedFlags ?? flags,
      channelBinding: options.omitBinding ? null : this.channelBinding(),
    });
    if (options.corruptSignature) clientHello.signature[10] ^= 0x40;
    // A man in the middle changes the flags on the path; the signature still covers signedFlags.
    this.write(encodeClientHello({ ...clientHello, flags }));
    return this.#welcome();
  }

  /** The TLS channel binding of this connection (RFC 9266 tls-exporter), null on plain TCP. */
  channelBinding(): Buffer | null {
    return this.socket instanceof TLSSocket ? channelBindingOf(this.socket) : null;
  }

  async #welcome(): Promise<ServerWelcome> {
    const welcomeFrame = await this.next();
    if (!welcomeFrame || welcomeFrame.type !== FrameType.SERVER_WELCOME) throw new Error(`expected SERVER_WELCOME, got ${welcomeFrame?.type}`);
    return parseServerWelcome(welcomeFrame.payload, 0, welcomeFrame.payload.length)!;
  }

  close(): void {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------
// The relay and the CLI as separate processes (built into dist/ by `npm test`).


export const CLI = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));

export interface SpawnedRelay {
  proc: ChildProcess;
  address: string;
  port: number;
  /** Everything the relay wrote to stdout and stderr so far. */
  output(): string;
}

/**
 * Starts `pulltab serve` in a child process and resolves with the address it prints, once it has
 * also logged relay_started (which carries the metrics port; printed just after the address).
 */
export function spawnRelay(dataDir: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<SpawnedRelay> {
  const quiet = ['warn', 'error', 'fatal', 'silent'].includes(env.PULLTAB_LOG_LEVEL ?? 'info');
  const proc = spawn(process.execPath, [CLI, 'serve', '--host', '127.0.0.1', '--data', dataDir, ...args], {
    env: { ...process.env, PULLTAB_LOG_LEVEL: 'info', PULLTAB_METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  // PULLTAB_TEST_RELAY_LOGS=DIR keeps each spawned relay's output in DIR/relay-PID.log as it
  // comes, for a test that hangs or is killed before it could print it.
  const logDir = process.env.PULLTAB_TEST_RELAY_LOGS;
  const keep = (d: Buffer) => {
    out += d.toString();
    if (logDir) appendFileSync(join(logDir, `relay-${proc.pid}.log`), d);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`relay did not start: ${out}`)), 30_000);
    const check = () => {
      const line = out.split('\n').find((l) => /^pulltabs?:\/\//.test(l));
      if (line && (quiet || out.includes('"relay_started"'))) {
        clearTimeout(timer);
        proc.stdout!.off('data', check);
        resolve({ proc, address: line.trim(), port: Number(line.trim().split(':').pop()), output: () => out });
      }
    };
    proc.stdout!.on('data', check);
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`relay exited with ${code}: ${out}`)); });
  });
}

export function killRelay(relay: SpawnedRelay, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  return new Promise((resolve) => {
    if (relay.proc.exitCode !== null || relay.proc.signalCode !== null) return resolve();
    relay.proc.once('exit', () => resolve());
    relay.proc.kill(signal);
  });
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the pulltab command to completion (bounded by timeoutMs). */
export function runCli(args: string[], options: { input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  proc.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  proc.stdin.end(options.input ?? '');
  const timer = setTimeout(() => proc.kill('SIGKILL'), options.timeoutMs ?? 20_000);
  return new Promise((resolve) => {
    proc.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A client whose messages are collected from the moment it connects (listener attached first). */
export async function connectCollecting(relay: { readonly address: string } | string, options: Partial<RelayClientOptions> = {}): Promise<{ client: RelayClient; messages: ReceivedMessage[] }> {
  const client = makeClient(relay, options);
  const messages: ReceivedMessage[] = [];
  client.on('message', (m) => messages.push(m));
  await connectWithin(client, relay);
  return { client, messages };
}

/** Waits until list holds at least n items (bounded by timeoutMs). */
export async function waitForCount<T>(list: T[], n: number, timeoutMs = 5000): Promise<T[]> {
  const deadline = Date.now() + timeoutMs;
  while (list.length < n) {
    if (Date.now() > deadline) throw new Error(`timed out with ${list.length} of ${n}`);
    await sleep(10);
  }
  return list;
}

/** One HTTP request to the relay's operator listener on loopback. */
export function httpGet(port: number, path: string, method = 'GET'): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type'] ?? '') }));
    });
    req.on('error', reject);
    // A relay that stops answering fails the test here, saying so, rather than at the file's timeout.
    req.setTimeout(30_000, () => req.destroy(new Error(`no answer to ${method} ${path} on port ${port} within 30 s`)));
    req.end();
  });
}

/** The metrics port of a spawned relay (spawnRelay asks for a free one), from its relay_started log line. */
export function metricsPortOf(relay: SpawnedRelay): number {
  for (const line of relay.output().split('\n')) {
    if (line.includes('"relay_started"')) return (JSON.parse(line) as { metricsPort: number }).metricsPort;
  }
  throw new Error('the relay has not logged relay_started');
}

/** Sum of a metric's samples on a spawned relay's /metrics (a name, or a name with its labels). */
export async function relayMetric(relay: SpawnedRelay, name: string): Promise<number> {
  const { body } = await httpGet(metricsPortOf(relay), '/metrics');
  let total = 0;
  for (const line of body.split('\n')) if (line.startsWith(name + ' ') || line.startsWith(name + '{')) total += Number(line.split(' ').pop());
  return total;
}

/**
 * Waits (bounded) until a spawned relay has at least n authenticated connections: a CLI listener
 * started in another process is connected once this resolves, however slowly it started.
 */
export async function waitForSessions(relay: SpawnedRelay, n: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await relayMetric(relay, 'pulltab_connections{state="authenticated"}')) < n) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} connection(s)`);
    await sleep(50);
  }
}

/** A relay in this process and a raw-body sender connected to it, both closed when the test ends. */
export async function relayWithSender(t: { teardown(fn: () => unknown): void }): Promise<{ relay: Relay; alice: RelayClient }> {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => alice.close());
  return { relay, alice };
}
