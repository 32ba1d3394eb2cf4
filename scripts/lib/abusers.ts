// Clients that stay within the protocol and still try to take more than their share: the
// fuzz run starts them beside its fuzzed connections, and asserts the relay's memory stays
// bounded and the good pair keeps moving (issue 12, items 4, 5 and 7).
//   - a PING flooder that reads its PONGs (fairness: it must not starve everyone else)
//   - PING and refused-SEND flooders that never read (replies held to the outbound budget)
//   - a pipeliner of 1 MiB stored SENDs that never reads its RESULTs (pending commits bounded)
// Every loop stops at the deadline; traffic goes to the relay on loopback only.
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { generateIdentity, Signer } from '../../src/crypto/keys.js';
import { ClientHandshake, HandshakeFailure } from '../../src/protocol/client-handshake.js';
import { FrameType, SendFlags } from '../../src/protocol/constants.js';
import { encodeFrame, encodeSend } from '../../src/protocol/frames.js';
import { FrameReader } from '../../src/protocol/reader.js';

/** The bounds a fuzz or soak run beside the abusers is held to (docs/PROTOCOL.md: outbound budget, pending commits, turns). */
export const ABUSE_BOUNDS = {
  /**
   * Growth of the relay's anonymous memory while they run (measured: 45-75 MiB in a fuzz run,
   * fuzzers included; each flooder that does not read grew it by about 180 MiB in 5 s before
   * the relay stopped reading from such connections).
   */
  anonGrowthBytes: 160 * 1024 * 1024,
  /**
   * The fuzz's good pair: its rate beside the flooders, as a share of its rate alone (measured:
   * 60-65%; 11% with the per-turn frame budget turned off, about 1% before the relay yielded).
   */
  pairRateShare: 0.25,
};

export interface AbuseReport {
  /** Bytes each abuser managed to write before the deadline (TCP holds back those the relay stops reading). */
  written: Record<string, number>;
  /** Set when the abusers could not run at all (their thread failed). */
  error?: string;
}

/** Connects and authenticates with a fresh key; resolves with the socket, its data events still flowing. */
function authenticated(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, noDelay: true });
    const handshake = new ClientHandshake({ signer: new Signer(generateIdentity()), pinnedRelayKey: null });
    let done = false;
    const reader = new FrameReader({
      maxLength: () => 0xffffffff,
      onFrame: (type, buf, start, end) => {
        if (done) return;
        if (type === FrameType.SERVER_HELLO) {
          const clientHello = handshake.answer(buf, start, end, null);
          if (clientHello instanceof HandshakeFailure) {
            done = true;
            socket.destroy();
            return reject(new Error(clientHello.reason));
          }
          socket.write(clientHello);
        } else if (type === FrameType.SERVER_WELCOME) {
          done = true;
          socket.removeAllListeners('data');
          resolve(socket);
        }
      },
      onError: () => {},
    });
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', (err) => { if (!done) reject(err); });
  });
}

/** Writes `batch` again and again until the deadline, waiting for drain (bounded) when TCP pushes back. */
async function flood(socket: Socket, next: () => Buffer, deadline: number, maxBytes = Infinity): Promise<number> {
  let written = 0;
  while (Date.now() < deadline && !socket.destroyed && written < maxBytes) {
    const batch = next();
    written += batch.length;
    if (!socket.write(batch)) {
      await new Promise<void>((resolve) => {
        const done = (): void => { clearTimeout(timer); socket.off('drain', done); socket.off('close', done); resolve(); };
        const timer = setTimeout(done, Math.max(1, Math.min(200, deadline - Date.now())));
        socket.once('drain', done);
        socket.once('close', done);
      });
    } else {
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  return written;
}

/**
 * Runs every abuser against the relay at `port` until `deadline`; the stored-send pipeliner
 * starts at `pipelineFrom` (its commits share the one store writer with every storable receipt,
 * so a fairness measurement of the event loop is taken before it starts).
 */
export async function runAbusers(port: number, deadline: number, pipelineFrom = 0): Promise<AbuseReport> {
  const pings = Buffer.concat(Array.from({ length: 5000 }, () => encodeFrame(FrameType.PING, Buffer.alloc(8))));
  const refused = Buffer.concat(Array.from({ length: 2000 }, (_, i) => encodeSend({ seq: i, flags: 0, ttlSeconds: 0, storageKey: null, recipients: [], body: Buffer.alloc(0) })));
  const bigBody = Buffer.alloc(1024 * 1024 - 4096, 0x5a);
  let seq = 0;
  const stored = (): Buffer => encodeSend({
    seq: ++seq, flags: SendFlags.STORE | SendFlags.RECEIPT, ttlSeconds: 600, storageKey: null,
    recipients: [{ key: generateIdentity().publicKey, wrappedKey: Buffer.alloc(0) }], body: bigBody,
  });
  const abusers: Array<[string, (s: Socket) => Promise<number>]> = [
    ['ping flood, reading', (s) => { s.on('data', () => {}); return flood(s, () => pings, deadline); }],
    ['ping flood, not reading', (s) => { s.pause(); return flood(s, () => pings, deadline); }],
    ['refused SENDs, not reading', (s) => { s.pause(); return flood(s, () => refused, deadline); }],
    // 32 MiB of stored messages (twice the per-connection bound on pending commits), then it
    // stops: a long run must not fill the disk, and while it writes, every storable receipt
    // waits for the same single-writer commits as its own.
    ['1 MiB stored SENDs, not reading', async (s) => {
      s.pause();
      while (Date.now() < pipelineFrom && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      return flood(s, stored, deadline, 32 * 1024 * 1024);
    }],
  ];
  const written: Record<string, number> = {};
  await Promise.all(abusers.map(async ([name, run]) => {
    let socket: Socket | null = null;
    try {
      socket = await authenticated(port);
      socket.on('error', () => {});
      written[name] = await run(socket);
    } catch {
      written[name] = written[name] ?? 0;
    } finally {
      socket?.destroy();
    }
  }));
  return { written };
}

/** The abusers on a worker thread (./abusers-worker.ts; it inherits this process's TypeScript loader). */
export interface AbuserThread {
  /** Resolves once the thread has loaded. */
  ready: Promise<void>;
  /** Runs the abusers until deadline (see runAbusers); resolves with their report when the thread ends. */
  run(deadline: number, pipelineFrom?: number): Promise<AbuseReport>;
}

export function startAbuserThread(port: number): AbuserThread {
  const worker = new Worker(new URL('./abusers-worker.ts', import.meta.url), { workerData: { port } });
  let report: AbuseReport = { written: {}, error: 'the abusers\' thread ended without a report' };
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => { markReady = resolve; });
  const ended = new Promise<AbuseReport>((resolve) => {
    worker.on('message', (m: AbuseReport | 'ready') => {
      if (m === 'ready') markReady();
      else {
        report = m;
        void worker.terminate();
      }
    });
    worker.once('error', (err) => { report = { written: {}, error: String(err) }; });
    worker.once('exit', () => { markReady(); resolve(report); });
  });
  return {
    ready,
    run: (deadline, pipelineFrom = 0) => {
      worker.postMessage({ deadline, pipelineFrom });
      return ended;
    },
  };
}
