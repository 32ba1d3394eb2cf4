// Library worker thread: the senders or the receivers of the `library` scenario, driven
// through the public client libraries a user would pick: Pulltab's RelayClient, and nats-server's
// official Node client (@nats-io/transport-node). Same protocol with the harness as
// loadgen-worker.ts (ready / go / stop / sent / finish / done, counters in shared memory).
//
// The loop is the one a user writes, the same shape for both systems: publish BATCH - 1
// messages, then wait once for the flush point (`await client.flush()` /
// `await nc.flush()`), both a round trip through the server after everything written before it.
// The harness's end-to-end window (sent minus received) bounds both the same way, so a slow
// receiver shows as a lower rate, not as an unbounded queue.
import { parentPort, workerData } from 'node:worker_threads';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { identityFromSecret } from '../../src/crypto/keys.js';
import { RelayClient } from '../../src/client/client.js';
import type { RelayAddress } from '../../src/protocol/address.js';
import { ReceiverCounts, Slot, type WorkerConfig, type WorkerResult } from './shared.js';

const cfg = workerData as WorkerConfig;
const i32 = new Int32Array(cfg.sab);
const P = cfg.senders;
const R = cfg.senders * cfg.fanout;
const sentSlot = (i: number) => Slot.FIRST + i;
const recvSlot = (j: number) => Slot.FIRST + P + j;
/**
 * Messages per flush point: 255, then one flush (the loop of issue 14), fewer where 256
 * messages would pass half the harness's window of bytes in flight (16 KiB, 100 pairs).
 */
const WINDOW_MSGS = Math.max(2, Math.floor(cfg.windowBytes / (cfg.bodyBytes + 100)));
const BATCH = Math.max(1, Math.min(256, WINDOW_MSGS >> 1));
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, index: number, value: number, timeoutMs: number): { async: boolean; value: Promise<unknown> | string };
}).waitAsync;

const post = (msg: unknown): void => parentPort!.postMessage(msg);
const subject = (i: number): string => `bench.g${i}`;
const waitForFinish = (): Promise<void> => new Promise((resolve) => parentPort!.on('message', (m: { type: string }) => { if (m.type === 'finish') resolve(); }));

function relayAddress(): RelayAddress {
  return { relayKey: Buffer.from(cfg.relayKey!, 'hex'), host: '127.0.0.1', port: cfg.port };
}

async function runReceivers(): Promise<void> {
  const received = new ReceiverCounts(i32, recvSlot(0), R, setImmediate);
  const counted = (j: number): void => {
    received.counts[j]!++;
    received.schedulePublish();
  };
  const closers: Array<() => Promise<void>> = [];
  if (cfg.system === 'pulltab') {
    await Promise.all(cfg.receiverSecrets!.map(async (secret, j) => {
      const client = new RelayClient({ relay: relayAddress(), identity: identityFromSecret(Buffer.from(secret, 'hex')), raw: !cfg.sealed, reconnect: false });
      // What a user writes: a 'message' listener that looks at the body.
      client.on('message', (m) => { if (m.body.length === cfg.bodyBytes || cfg.sealed) counted(j); });
      await client.connect();
      closers.push(() => client.close());
    }));
  } else {
    for (let j = 0; j < R; j++) {
      const nc = await natsConnect({ servers: `127.0.0.1:${cfg.port}`, noEcho: true });
      nc.subscribe(subject(Math.floor(j / cfg.fanout)), { callback: (_err, msg) => { if (msg.data.length === cfg.bodyBytes) counted(j); } });
      await nc.flush();
      closers.push(() => nc.close());
    }
  }
  post({ type: 'ready' });
  await waitForFinish();
  received.publish();
  const result: WorkerResult = { role: 'receiver', received: received.total, latencyUs: null };
  await Promise.all(closers.map((c) => c().catch(() => {})));
  post({ type: 'done', result });
}

interface LibrarySender {
  /** One batch: BATCH - 1 sends, then the flush point. */
  batch(): Promise<void>;
  close(): Promise<void>;
}

async function openSender(i: number, body: Buffer): Promise<LibrarySender> {
  if (cfg.system === 'pulltab') {
    const client = new RelayClient({ relay: relayAddress(), identity: identityFromSecret(Buffer.from(cfg.senderSecrets![i]!, 'hex')), raw: !cfg.sealed, reconnect: false });
    await client.connect();
    const to = [Buffer.from(cfg.receiverKeys![i]!, 'hex')];
    client.on('refused', () => Atomics.add(i32, Slot.DROPS, 1));
    return {
      batch: async () => {
        // send() without a receipt resolves at once while the client's send buffer has room,
        // and once it drains when not: awaiting it is the backpressure.
        for (let k = 1; k < BATCH; k++) await client.send(to, body, { receipt: false });
        await client.flush();
      },
      close: () => client.close(),
    };
  }
  const nc: NatsConnection = await natsConnect({ servers: `127.0.0.1:${cfg.port}`, noEcho: true });
  const to = subject(i);
  return {
    batch: async () => {
      for (let k = 1; k < BATCH; k++) nc.publish(to, body);
      await nc.flush();
    },
    close: () => nc.close(),
  };
}

async function runSenders(): Promise<void> {
  const body = Buffer.alloc(cfg.bodyBytes, 0x61);
  const senders = await Promise.all(Array.from({ length: P }, (_, i) => openSender(i, body)));
  const windowMsgs = Math.max(2 * BATCH, WINDOW_MSGS);
  const sent = new Array<number>(P).fill(0);
  post({ type: 'ready' });
  while (Atomics.load(i32, Slot.CONTROL) === 0) {
    const r = waitAsync(i32, Slot.CONTROL, 0, 1000);
    if (r.async) await r.value;
  }
  const deadline = Date.now() + cfg.maxSeconds * 1000;
  const stopped = (): boolean => Atomics.load(i32, Slot.CONTROL) === 2 || Date.now() > deadline;
  await Promise.all(senders.map(async (sender, i) => {
    while (!stopped()) {
      // The harness's bound on messages in flight end to end (the same for both systems).
      while (sent[i]! - Atomics.load(i32, recvSlot(i)) + BATCH > windowMsgs && !stopped()) {
        const r = waitAsync(i32, Slot.GENERATION, Atomics.load(i32, Slot.GENERATION), 20);
        if (r.async) await r.value;
      }
      if (stopped()) break;
      sent[i]! += BATCH - 1;
      Atomics.store(i32, sentSlot(i), sent[i]!);
      await sender.batch();
    }
  }));
  const result: WorkerResult = { role: 'sender', sent: sent.reduce((a, b) => a + b, 0), latencyUs: null };
  post({ type: 'sent', result });
  await waitForFinish();
  await Promise.all(senders.map((s) => s.close().catch(() => {})));
  post({ type: 'done', result });
}

(cfg.role === 'receiver' ? runReceivers() : runSenders()).catch((err: Error) => {
  post({ type: 'error', message: err.stack ?? String(err) });
});
