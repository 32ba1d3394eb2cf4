// One fuzzing connection: it speaks the handshake by hand (or garbles it), streams fuzz batches
// as fast as the socket takes them, and checks that the relay ends the connection exactly when
// and how the oracle says it must.
import { connect, type Socket } from 'node:net';
import { generateIdentity, Signer } from '../../src/crypto/keys.js';
import { ClientHandshake, HandshakeFailure } from '../../src/protocol/client-handshake.js';
import { Code, FrameType, type ProtocolLimits } from '../../src/protocol/constants.js';
import { encodeFrame, parseClose } from '../../src/protocol/frames.js';
import { parseServerWelcome } from '../../src/protocol/handshake.js';
import { FrameReader } from '../../src/protocol/reader.js';
import type { FrameFactory } from './fuzz-frames.js';
import { chance, int, pick } from './random.js';
import { describeOutcome, OPEN, StreamOracle, type Outcome } from './oracle.js';

/** Codes a relay may close with for reasons of its own (load, limits), whatever the client sent. */
const CIRCUMSTANTIAL = new Set<number>([Code.SLOW_CONSUMER, Code.IDLE_TIMEOUT, Code.GOING_AWAY, Code.RELAY_FULL, Code.REPLACED, Code.KICKED]);
const CLOSE_WAIT_MS = 10_000;
const BATCH_BYTES = 16 * 1024;
const HIGH_WATER = 256 * 1024;

export interface FuzzTally {
  /** Frames the relay read (the oracle counts them); frames after one that ends the connection are never sent. */
  frames: number;
  bytes: number;
  connections: number;
  handshakes: number;
  /** Connections refused before SERVER_HELLO (RELAY_FULL). */
  refusedAtAccept: number;
  /** How connections ended, by what the relay did. */
  endings: Map<string, number>;
  /** The relay did something other than what docs/PROTOCOL.md says. */
  mismatches: number;
  samples: string[];
}

export function newTally(): FuzzTally {
  return { frames: 0, bytes: 0, connections: 0, handshakes: 0, refusedAtAccept: 0, endings: new Map(), mismatches: 0, samples: [] };
}

export interface FuzzContext {
  port: number;
  limits: ProtocolLimits;
  factory: FrameFactory;
  deadline: number;
  tally: FuzzTally;
}

/** A raw socket and what the relay has said on it. */
class Peer {
  readonly socket: Socket;
  hello: Buffer | null = null;
  welcomeStatus: number | null = null;
  closeCode: number | null = null;
  closed = false;
  /** The tail of what was written last, for a mismatch report. */
  lastWritten: Buffer = Buffer.alloc(0);
  #wake: Array<() => void> = [];

  constructor(port: number) {
    this.socket = connect({ host: '127.0.0.1', port, noDelay: true });
    const reader = new FrameReader({
      maxLength: () => 0xffffffff,
      onFrame: (type, buf, start, end) => {
        if (type === FrameType.SERVER_HELLO && this.hello === null) this.hello = Buffer.from(buf.subarray(start, end));
        else if (type === FrameType.SERVER_WELCOME) this.welcomeStatus = parseServerWelcome(buf, start, end)?.status ?? -1;
        else if (type === FrameType.CLOSE && this.closeCode === null) this.closeCode = parseClose(buf, start, end)?.code ?? -1;
        else return;
        this.#notify();
      },
      onError: () => {},
    });
    this.socket.on('data', (chunk: Buffer) => reader.push(chunk));
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.closed = true;
      this.#notify();
    });
    this.socket.on('drain', () => this.#notify());
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = [];
    for (const w of wake) w();
  }

  /** Resolves true once cond() holds, false after timeoutMs. */
  async waitFor(cond: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake.push(() => { clearTimeout(timer); resolve(); });
      });
    }
    return true;
  }

  write(bytes: Buffer): void {
    this.lastWritten = bytes.subarray(Math.max(0, bytes.length - 160));
    this.socket.write(bytes);
  }

  /** What the relay did once the connection is closed. */
  observed(): Outcome {
    if (!this.closed) return OPEN;
    if (this.closeCode !== null) return { kind: 'close', code: this.closeCode };
    if (this.welcomeStatus !== null && this.welcomeStatus !== Code.OK) return { kind: 'welcome', status: this.welcomeStatus };
    return { kind: 'end' };
  }
}

function same(a: Outcome, b: Outcome): boolean {
  return describeOutcome(a) === describeOutcome(b);
}

function count(tally: FuzzTally, ending: string): void {
  tally.endings.set(ending, (tally.endings.get(ending) ?? 0) + 1);
}

function mismatch(ctx: FuzzContext, peer: Peer, scenario: string, expected: Outcome): void {
  const { tally } = ctx;
  tally.mismatches++;
  if (tally.samples.length < 10) {
    tally.samples.push(`${scenario}: expected "${describeOutcome(expected)}", relay did "${describeOutcome(peer.observed())}"; last bytes written: ${peer.lastWritten.toString('hex')}`);
  }
}

/** Waits for the relay to close as expected and records what it did. */
async function expectEnd(ctx: FuzzContext, peer: Peer, scenario: string, expected: Outcome): Promise<void> {
  await peer.waitFor(() => peer.closed, CLOSE_WAIT_MS);
  const got = peer.observed();
  count(ctx.tally, describeOutcome(got));
  if (got.kind === 'close' && CIRCUMSTANTIAL.has(got.code)) return;
  if (!same(got, expected)) mismatch(ctx, peer, scenario, expected);
}

/** Writes bytes through the oracle: only up to the frame that ends the connection. */
function feed(ctx: FuzzContext, peer: Peer, oracle: StreamOracle, bytes: Buffer): Outcome {
  const r = oracle.feed(bytes);
  peer.write(r.cut === bytes.length ? bytes : bytes.subarray(0, r.cut));
  ctx.tally.frames += r.frames;
  ctx.tally.bytes += r.cut;
  return r.outcome;
}

/** Runs one connection from connect to close. */
export async function fuzzConnection(ctx: FuzzContext): Promise<void> {
  const { tally } = ctx;
  tally.connections++;
  const peer = new Peer(ctx.port);
  try {
    await peer.waitFor(() => peer.hello !== null || peer.closed, CLOSE_WAIT_MS);
    if (peer.hello === null) {
      if (peer.closeCode === Code.RELAY_FULL) tally.refusedAtAccept++;
      else if (Date.now() < ctx.deadline) mismatch(ctx, peer, 'connect', { kind: 'open' });
      return;
    }
    const r = Math.random();
    if (r < 0.08) return await garbageHandshake(ctx, peer);
    const oracle = new StreamOracle('active', ctx.limits);
    if (r < 0.16) {
      if (!(await mutatedHandshake(ctx, peer))) return;
    } else if (!(await handshake(ctx, peer))) {
      return;
    }
    tally.handshakes++;
    await stream(ctx, peer, oracle);
  } finally {
    peer.socket.destroy();
  }
}

async function garbageHandshake(ctx: FuzzContext, peer: Peer): Promise<void> {
  const oracle = new StreamOracle('handshake', ctx.limits);
  const outcome = feed(ctx, peer, oracle, ctx.factory.beforeHandshake());
  // Bytes that end inside a frame leave the relay waiting: hang up.
  if (outcome.kind === 'open') return count(ctx.tally, 'client hung up');
  await expectEnd(ctx, peer, 'before the handshake', outcome);
}

/** An honest CLIENT_HELLO from a fresh key, answering the relay's SERVER_HELLO. */
function clientHello(peer: Peer): Buffer {
  const handshake = new ClientHandshake({ signer: new Signer(generateIdentity()), pinnedRelayKey: null });
  const frame = handshake.answer(peer.hello!, 0, peer.hello!.length, null);
  if (frame instanceof HandshakeFailure) throw new Error(`the relay's SERVER_HELLO: ${frame.reason}`);
  return frame;
}

async function handshake(ctx: FuzzContext, peer: Peer): Promise<boolean> {
  const frame = clientHello(peer);
  ctx.tally.frames++;
  ctx.tally.bytes += frame.length;
  peer.write(frame);
  await peer.waitFor(() => peer.welcomeStatus !== null || peer.closed, CLOSE_WAIT_MS);
  if (peer.welcomeStatus === Code.OK) return true;
  if (Date.now() < ctx.deadline) mismatch(ctx, peer, 'valid handshake', { kind: 'open' });
  return false;
}

/**
 * A valid CLIENT_HELLO with bytes changed, cut or appended. Every byte of the first 130 is
 * signed (version 2 signs the flags too); bytes past 130 are ignored, so appending only those
 * still authenticates.
 */
async function mutatedHandshake(ctx: FuzzContext, peer: Peer): Promise<boolean> {
  const frame = Buffer.from(clientHello(peer));
  let payload = frame.subarray(5);
  let signed = true;
  const r = Math.random();
  if (r < 0.6) {
    for (let i = 1 + int(3); i > 0; i--) {
      const at = chance(0.3) ? 1 : int(payload.length);
      const value = int(256);
      if (payload[at] !== value) signed = false;
      payload[at] = value;
    }
  } else if (r < 0.8) {
    payload = payload.subarray(0, int(payload.length));
  } else {
    payload = Buffer.concat([payload, Buffer.alloc(int(1000), 0x33)]);
  }
  let expected: Outcome;
  if (payload.length > 1024) expected = { kind: 'close', code: Code.FRAME_TOO_LARGE };
  else if (payload.length < 130) expected = { kind: 'close', code: Code.MALFORMED_FRAME };
  else expected = signed ? OPEN : { kind: 'welcome', status: Code.AUTH_FAILED };
  const bytes = payload.length > 1024 ? encodeFrame(FrameType.CLIENT_HELLO, payload).subarray(0, 5) : encodeFrame(FrameType.CLIENT_HELLO, payload);
  ctx.tally.frames++;
  ctx.tally.bytes += bytes.length;
  peer.write(bytes);
  if (expected.kind !== 'open') {
    await expectEnd(ctx, peer, 'mutated CLIENT_HELLO', expected);
    return false;
  }
  await peer.waitFor(() => peer.welcomeStatus !== null || peer.closed, CLOSE_WAIT_MS);
  if (peer.welcomeStatus === Code.OK) return true;
  mismatch(ctx, peer, 'CLIENT_HELLO with only trailing bytes added', expected);
  return false;
}

/** Fuzz batches after the handshake, until one ends the connection or the connection's lifetime is up. */
async function stream(ctx: FuzzContext, peer: Peer, oracle: StreamOracle): Promise<void> {
  const lifetime = chance(0.5) ? 1 + int(20) : 1 + int(400);
  for (let i = 0; i < lifetime && Date.now() < ctx.deadline; i++) {
    if (peer.socket.writableLength > HIGH_WATER) {
      await peer.waitFor(() => peer.closed || peer.socket.writableLength <= HIGH_WATER, Math.max(0, ctx.deadline - Date.now()));
    }
    if (peer.closed) {
      // The relay closed a connection that sent nothing to close it for.
      const got = peer.observed();
      count(ctx.tally, describeOutcome(got));
      if (!(got.kind === 'close' && CIRCUMSTANTIAL.has(got.code))) mismatch(ctx, peer, 'after the handshake', OPEN);
      return;
    }
    const outcome = feed(ctx, peer, oracle, ctx.factory.batch(BATCH_BYTES, 0.0005));
    if (outcome.kind !== 'open') return expectEnd(ctx, peer, 'after the handshake', outcome);
    // Let replies in before the next batch.
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (Date.now() >= ctx.deadline) return;
  // The end of a connection's life: a polite CLOSE, a frame cut short, or just a dropped socket.
  const ending = pick(['close', 'truncate', 'drop'] as const);
  if (ending === 'close' && oracle.atBoundary) {
    const outcome = feed(ctx, peer, oracle, encodeFrame(FrameType.CLOSE, Buffer.alloc(6)));
    return expectEnd(ctx, peer, 'CLOSE from the client', outcome);
  }
  if (ending === 'truncate') feed(ctx, peer, oracle, ctx.factory.truncated());
  count(ctx.tally, 'client hung up');
}
