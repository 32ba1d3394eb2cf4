// Load-generator worker thread: either the senders or the receivers of one scenario, for one
// system (pulltab, the bare pipe, or nats-server). Senders and receivers live in separate
// worker threads, so each side gets its own event loop; they share counters through a
// SharedArrayBuffer (layout in shared.ts), which is how senders keep a bounded window of
// messages in flight without any messages between the threads on the hot path.
//
// Fairness: every receiver decodes every message and hands it to a callback (`onMessage`):
// Pulltab and the pipe through FrameReader + parseDeliver (the pipe's sender writes DELIVER
// frames, so the receiving code is the same), nats through its official client's subscription
// callback. Pulltab and pipe receivers write one cumulative ACK per received chunk.
import { parentPort, workerData } from 'node:worker_threads';
import * as hdr from 'hdr-histogram-js';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { connect as netConnect, type Socket } from 'node:net';
import { identityFromSecret, Signer } from '../../src/crypto/keys.js';
import { Code, FrameType } from '../../src/protocol/constants.js';
import { encodeAck, encodeDeliver, encodeSend, parseDeliver, parseResult } from '../../src/protocol/frames.js';
import { FrameReader } from '../../src/protocol/reader.js';
import { PulltabPeer } from './pulltab-peer.js';
import { ReceiverCounts, Slot, type WorkerConfig, type WorkerResult } from './shared.js';

const cfg = workerData as WorkerConfig;
const i32 = new Int32Array(cfg.sab);
const P = cfg.senders;
const R = cfg.senders * cfg.fanout;
const sentSlot = (i: number) => Slot.FIRST + i;
const recvSlot = (j: number) => Slot.FIRST + P + j;
const BATCH_BYTES = 64 * 1024;
// Atomics.waitAsync is in Node 20 but not in the ES2022 lib the project compiles against.
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, index: number, value: number, timeoutMs: number): { async: boolean; value: Promise<unknown> | string };
}).waitAsync;

function post(msg: unknown): void {
  parentPort!.postMessage(msg);
}

function groupSubject(i: number): string {
  return `bench.g${i}`;
}

// ---------------------------------------------------------------------------------------
// Receivers

async function runReceivers(): Promise<void> {
  const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
  const received = new ReceiverCounts(i32, recvSlot(0), R, queueMicrotask);
  const counts = received.counts;
  const scheduleFlush = (): void => received.schedulePublish();
  const latency = cfg.mode === 'latency';
  // The callback every system's receiver hands each decoded message to.
  const onMessage = (j: number, body: Uint8Array): void => {
    counts[j]!++;
    if (latency && body.length >= 8 && Atomics.load(i32, Slot.RECORDING) === 1) {
      const view = new DataView(body.buffer, body.byteOffset, 8);
      const sentNs = view.getBigUint64(0);
      const us = Number(process.hrtime.bigint() - sentNs) / 1000;
      histogram.recordValue(Math.max(1, Math.round(us)));
    }
  };

  const closers: Array<() => void> = [];
  if (cfg.system === 'pulltab') {
    const peers = await Promise.all(cfg.receiverSecrets!.map(async (secretHex, j) => {
      let lastId = 0;
      let ackedId = 0;
      const peer = new PulltabPeer({ port: cfg.port, tls: cfg.tls, signer: new Signer(identityFromSecret(Buffer.from(secretHex, 'hex'))) });
      peer.onFrame = (type, buf, start, end) => {
        if (type !== FrameType.DELIVER) return;
        const d = parseDeliver(buf, start, end);
        if (d === null) return;
        lastId = d.deliveryId;
        onMessage(j, d.body);
      };
      peer.onChunkEnd = () => {
        if (lastId !== ackedId) {
          ackedId = lastId;
          peer.socket.write(encodeAck(lastId));
        }
        scheduleFlush();
      };
      await peer.ready;
      closers.push(() => peer.socket.destroy());
      return peer;
    }));
    void peers;
  } else if (cfg.system === 'pipe') {
    await Promise.all(Array.from({ length: R }, (_, j) => new Promise<void>((resolve, reject) => {
      const group = Math.floor(j / cfg.fanout);
      const socket = netConnect({ host: '127.0.0.1', port: cfg.port, noDelay: true });
      let lastId = 0;
      const reader = new FrameReader({
        maxLength: () => 64 * 1024 * 1024,
        onFrame: (type, buf, start, end) => {
          if (type !== FrameType.DELIVER) return;
          const d = parseDeliver(buf, start, end);
          if (d === null) return;
          lastId = d.deliveryId;
          onMessage(j, d.body);
        },
        onError: () => socket.destroy(),
      });
      let okBytes = 0;
      socket.on('error', reject);
      socket.on('data', (chunk: Buffer) => {
        if (okBytes < 2) {
          const take = Math.min(2 - okBytes, chunk.length);
          okBytes += take;
          chunk = chunk.subarray(take);
          if (okBytes === 2) resolve();
          if (chunk.length === 0) return;
        }
        reader.push(chunk);
        // One ACK per chunk, as to the relay (the pipe discards it), so the receiver does the same work.
        socket.write(encodeAck(lastId));
        scheduleFlush();
      });
      const hello = Buffer.alloc(8);
      hello[0] = 0x52;
      hello.writeUInt32BE(group, 1);
      socket.write(hello);
      closers.push(() => socket.destroy());
    })));
  } else {
    const conns: NatsConnection[] = [];
    for (let j = 0; j < R; j++) {
      const nc = await natsConnect({ servers: `127.0.0.1:${cfg.port}`, noEcho: true });
      nc.subscribe(groupSubject(Math.floor(j / cfg.fanout)), {
        callback: (_err, msg) => {
          onMessage(j, msg.data);
          scheduleFlush();
        },
      });
      await nc.flush();
      conns.push(nc);
    }
    closers.push(() => { for (const nc of conns) void nc.close(); });
  }

  post({ type: 'ready' });
  await new Promise<void>((resolve) => parentPort!.on('message', (m: { type: string }) => { if (m.type === 'finish') resolve(); }));
  received.publish();
  const result: WorkerResult = {
    role: 'receiver',
    received: received.total,
    latencyUs: latency && histogram.totalCount > 0 ? {
      p50: histogram.getValueAtPercentile(50),
      p99: histogram.getValueAtPercentile(99),
      p999: histogram.getValueAtPercentile(99.9),
      max: histogram.maxValue,
      mean: histogram.mean,
      count: histogram.totalCount,
    } : null,
  };
  for (const c of closers) c();
  post({ type: 'done', result });
}

// ---------------------------------------------------------------------------------------
// Senders

interface SenderOut {
  /** Writes one pre-encoded batch (throughput mode); false when the socket wants a drain first. */
  writeBatch(): boolean;
  /** Writes n messages stamped with the current time (latency mode). */
  writeStamped(n: number): void;
  onDrain(fn: () => void): void;
  /** Yield to the event loop after every batch (nats: its client buffers and flushes on its own). */
  yieldEachBatch: boolean;
  close(): void;
}

function stampBatch(template: Buffer, bodyOffset: number, n: number): Buffer {
  const frameLength = template.length;
  const batch = Buffer.allocUnsafe(frameLength * n);
  const now = process.hrtime.bigint();
  for (let k = 0; k < n; k++) {
    template.copy(batch, k * frameLength);
    batch.writeBigUInt64BE(now, k * frameLength + bodyOffset);
  }
  return batch;
}

/** A sender writing pre-encoded batches (or freshly stamped ones) to a plain socket. */
function socketSender(socket: Socket, batch: Buffer, frame: Buffer, bodyLength: number): SenderOut {
  return {
    writeBatch: () => socket.write(batch),
    writeStamped: (n) => { socket.write(stampBatch(frame, frame.length - bodyLength, n)); },
    onDrain: (fn) => socket.once('drain', fn),
    yieldEachBatch: false,
    close: () => socket.destroy(),
  };
}

async function openSenders(framesPerBatch: number, body: Buffer): Promise<SenderOut[]> {
  const outs: SenderOut[] = [];
  for (let i = 0; i < P; i++) {
    if (cfg.system === 'pulltab') {
      const recipients = cfg.receiverKeys!.slice(i * cfg.fanout, (i + 1) * cfg.fanout).map((hex) => ({ key: Buffer.from(hex, 'hex'), wrappedKey: new Uint8Array(0) }));
      const frame = encodeSend({ seq: i, flags: cfg.sendFlags ?? 0, ttlSeconds: 0, storageKey: null, recipients, body });
      const batch = Buffer.concat(Array.from({ length: framesPerBatch }, () => frame));
      const peer = new PulltabPeer({ port: cfg.port, tls: cfg.tls, signer: new Signer(identityFromSecret(Buffer.from(cfg.senderSecrets![i]!, 'hex'))) });
      peer.onFrame = (type, buf, start, end) => {
        if (type !== FrameType.RESULT) return;
        const r = parseResult(buf, start, end);
        if (r && r.code !== Code.OK) Atomics.add(i32, Slot.DROPS, Math.max(1, r.outcomes.filter((c) => c !== Code.DELIVERED).length));
      };
      await peer.ready;
      const socket = peer.socket;
      outs.push(socketSender(socket, batch, frame, body.length));
    } else if (cfg.system === 'pipe') {
      const frame = encodeDeliver({ deliveryId: 1, flags: 0, sender: Buffer.alloc(32, 7), storageKey: null, wrappedKey: Buffer.alloc(0), body });
      const batch = Buffer.concat(Array.from({ length: framesPerBatch }, () => frame));
      const socket: Socket = await new Promise((resolve, reject) => {
        const s = netConnect({ host: '127.0.0.1', port: cfg.port, noDelay: true }, () => resolve(s));
        s.on('error', reject);
      });
      socket.on('data', () => {});
      const hello = Buffer.alloc(8);
      hello[0] = 0x53;
      hello.writeUInt32BE(i, 1);
      socket.write(hello);
      outs.push(socketSender(socket, batch, frame, body.length));
    } else {
      const nc = await natsConnect({ servers: `127.0.0.1:${cfg.port}`, noEcho: true });
      const subject = groupSubject(i);
      const stamped = Buffer.from(body);
      outs.push({
        writeBatch: () => {
          for (let k = 0; k < framesPerBatch; k++) nc.publish(subject, body);
          return true;
        },
        writeStamped: (n) => {
          for (let k = 0; k < n; k++) {
            stamped.writeBigUInt64BE(process.hrtime.bigint(), 0);
            nc.publish(subject, stamped);
          }
        },
        onDrain: (fn) => setImmediate(fn),
        yieldEachBatch: true,
        close: () => { void nc.close(); },
      });
    }
  }
  return outs;
}

async function runSenders(): Promise<void> {
  const body = Buffer.alloc(cfg.bodyBytes, 0x61);
  const approxFrame = cfg.bodyBytes + 64 + 33 * cfg.fanout;
  const framesPerBatch = Math.max(1, Math.floor(BATCH_BYTES / approxFrame));
  const windowMsgs = Math.max(2 * framesPerBatch, Math.floor(cfg.windowBytes / approxFrame));
  const outs = await openSenders(framesPerBatch, body);
  const sent = new Array<number>(P).fill(0);
  const minReceived = (i: number): number => {
    let min = Infinity;
    for (let j = i * cfg.fanout; j < (i + 1) * cfg.fanout; j++) min = Math.min(min, Atomics.load(i32, recvSlot(j)));
    return min;
  };

  post({ type: 'ready' });
  // Wait for "go".
  while (Atomics.load(i32, Slot.CONTROL) === 0) {
    const r = waitAsync(i32, Slot.CONTROL, 0, 1000);
    if (r.async) await r.value;
  }
  const startNs = process.hrtime.bigint();
  const deadlineNs = startNs + BigInt(Math.round(cfg.maxSeconds * 1e9));
  const stopped = (): boolean => Atomics.load(i32, Slot.CONTROL) === 2 || process.hrtime.bigint() > deadlineNs;
  let finished!: () => void;
  const done = new Promise<void>((resolve) => { finished = resolve; });
  let active = P;
  const retire = (): void => {
    if (--active === 0) finished();
  };

  if (cfg.mode === 'throughput') {
    const blocked = new Set<number>();
    let waiting = false;
    const armWait = (): void => {
      if (waiting) return;
      waiting = true;
      const gen = Atomics.load(i32, Slot.GENERATION);
      const r = waitAsync(i32, Slot.GENERATION, gen, 20);
      (r.async ? (r.value as Promise<unknown>) : Promise.resolve()).then(() => {
        waiting = false;
        const list = [...blocked];
        blocked.clear();
        for (const i of list) pump(i);
      });
    };
    const pump = (i: number): void => {
      for (let n = 0; n < 16; n++) {
        if (stopped() || sent[i]! >= cfg.maxMessages) return retire();
        if (sent[i]! - minReceived(i) + framesPerBatch > windowMsgs) {
          blocked.add(i);
          armWait();
          return;
        }
        const ok = outs[i]!.writeBatch();
        sent[i]! += framesPerBatch;
        Atomics.store(i32, sentSlot(i), sent[i]!);
        if (!ok) {
          outs[i]!.onDrain(() => pump(i));
          return;
        }
        if (outs[i]!.yieldEachBatch) break;
      }
      setImmediate(() => pump(i));
    };
    for (let i = 0; i < P; i++) pump(i);
  } else {
    // Open loop at a fixed offered rate, spread over the senders; 1 ms ticks.
    const perSender = cfg.rate / P;
    const capInFlight = Math.max(64, Math.floor((4 * 1024 * 1024) / approxFrame));
    const scheduled = new Array<number>(P).fill(0);
    for (let i = 0; i < P; i++) {
      const tick = (): void => {
        if (stopped() || sent[i]! >= cfg.maxMessages) return retire();
        const elapsed = Number(process.hrtime.bigint() - startNs) / 1e9;
        let due = Math.floor(perSender * elapsed) - scheduled[i]!;
        if (due > 0) {
          if (sent[i]! - minReceived(i) > capInFlight) {
            // The system is not keeping up with the offered rate: skip (counted) rather than queue without bound.
            Atomics.add(i32, Slot.SKIPPED, due);
            scheduled[i]! += due;
          } else {
            due = Math.min(due, Math.max(1, Math.ceil(perSender / 100)));
            outs[i]!.writeStamped(due);
            scheduled[i]! += due;
            sent[i]! += due;
            Atomics.store(i32, sentSlot(i), sent[i]!);
          }
        }
        setTimeout(tick, 1);
      };
      tick();
    }
  }
  await done;
  const result: WorkerResult = { role: 'sender', sent: sent.reduce((a, b) => a + b, 0), latencyUs: null };
  post({ type: 'sent', result });
  await new Promise<void>((resolve) => parentPort!.on('message', (m: { type: string }) => { if (m.type === 'finish') resolve(); }));
  for (const o of outs) o.close();
  post({ type: 'done', result });
}

(cfg.role === 'receiver' ? runReceivers() : runSenders()).catch((err: Error) => {
  post({ type: 'error', message: err.stack ?? String(err) });
});
