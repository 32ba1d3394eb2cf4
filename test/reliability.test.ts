// Regressions for what an attack on the relay found (issue 12): durability of storable messages
// answered DELIVERED, memory bounds on stored sends and on replies to a client that does not read,
// fairness between connections, QUEUE_EMPTY with a full window. Real relay processes on loopback.
import t from 'tap';
import { generateIdentity, type Identity } from '../src/crypto/keys.js';
import { Code, FrameType, SendFlags } from '../src/protocol/constants.js';
import { encodeAck, encodeAdminRequest, encodeFrame, encodeSend, parseDeliver, parseResult } from '../src/protocol/frames.js';
import { procStatusBytes } from '../scripts/lib/relay-process.js';
import {
  killRelay, RawPeer, relayMetric, removeDir, sleep, spawnRelay, tempDir, until, type SpawnedRelay,
} from './helpers.js';

const NO_WRAPPED_KEY = Buffer.alloc(0);

function storableSend(seq: number, to: Identity, body: Buffer, flags = SendFlags.STORE | SendFlags.RECEIPT): Buffer {
  return encodeSend({ seq, flags, ttlSeconds: 0, storageKey: null, recipients: [{ key: to.publicKey, wrappedKey: NO_WRAPPED_KEY }], body });
}

async function connectRaw(relay: SpawnedRelay, identity: Identity = generateIdentity()): Promise<RawPeer> {
  const peer = new RawPeer(relay.port);
  const welcome = await peer.handshake(identity);
  if (welcome.status !== Code.OK) throw new Error(`handshake refused: ${welcome.status}`);
  return peer;
}

/** Frames of `type` that have arrived on peer so far, taken out of its queue (others stay). */
function take(peer: RawPeer, type: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = peer.frames.length - 1; i >= 0; i--) {
    if (peer.frames[i]!.type === type) out.unshift(peer.frames.splice(i, 1)[0]!.payload);
  }
  return out;
}

/** Resolves on the socket's next 'drain', or after ms, whichever comes first (and forgets the other). */
function drainOrTimeout(socket: RawPeer['socket'], ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      socket.off('drain', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    socket.once('drain', done);
  });
}

/** The relay's anonymous resident memory (heap, buffers; not LMDB's file-backed map), sampled until stopped. */
function sampleRssAnon(pid: number): { stop(): number } {
  let peak = procStatusBytes(pid, 'RssAnon');
  const timer = setInterval(() => {
    try { peak = Math.max(peak, procStatusBytes(pid, 'RssAnon')); } catch { /* exited */ }
  }, 20);
  return { stop: () => { clearInterval(timer); return peak; } };
}

const MiB = 1024 * 1024;

/** A relay process on a fresh data directory for one test, stopped and removed when it ends. */
async function relayFor(t: { teardown(fn: () => unknown): void }, env: NodeJS.ProcessEnv = {}): Promise<SpawnedRelay> {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relay = await spawnRelay(dir, ['--port', '0'], env);
  t.teardown(() => killRelay(relay, 'SIGTERM'));
  return relay;
}

t.test('storable messages answered DELIVERED to a connected recipient survive kill -9 until acknowledged', async (t) => {
  for (const recipientReads of [false, true]) {
    const dir = tempDir();
    t.teardown(() => removeDir(dir));
    let relay = await spawnRelay(dir, ['--port', '0']);
    const bob = generateIdentity();
    const bobPeer = await connectRaw(relay, bob);
    // Connected, and either not reading at all or reading but never acknowledging.
    if (!recipientReads) bobPeer.socket.pause();
    const alice = await connectRaw(relay);
    const n = 200;
    for (let i = 0; i < n; i++) {
      const body = Buffer.alloc(100, i & 0xff);
      body.writeUInt32BE(i, 0);
      alice.write(storableSend(i + 1, bob, body));
    }
    await until('every RESULT', () => alice.frames.filter((f) => f.type === FrameType.RESULT).length >= n);
    const outcomes = take(alice, FrameType.RESULT).map((p) => parseResult(p, 0, p.length)!.outcomes[0]);
    t.same([...new Set(outcomes)], [Code.DELIVERED], `${recipientReads ? 'reading' : 'not reading'}: all ${n} answered DELIVERED`);
    if (recipientReads) {
      await until('every DELIVER', () => bobPeer.frames.filter((f) => f.type === FrameType.DELIVER).length >= n);
    }
    await killRelay(relay, 'SIGKILL');
    alice.close();
    bobPeer.close();

    relay = await spawnRelay(dir, ['--port', '0']);
    const again = await connectRaw(relay, bob);
    await until('QUEUE_EMPTY', () => again.frames.some((f) => f.type === FrameType.QUEUE_EMPTY));
    const got = take(again, FrameType.DELIVER).map((p) => parseDeliver(p, 0, p.length)!.body.readUInt32BE(0));
    t.same(got, Array.from({ length: n }, (_, i) => i), `${recipientReads ? 'reading' : 'not reading'}: every one delivered after the restart, in order`);
    again.close();
    await killRelay(relay, 'SIGTERM');
  }
});

t.test('acknowledged live storable messages are gone from the mailbox; unacknowledged ones come again', async (t) => {
  const relay = await relayFor(t);
  const bob = generateIdentity();
  const bobPeer = await connectRaw(relay, bob);
  const alice = await connectRaw(relay);
  for (let i = 0; i < 10; i++) alice.write(storableSend(i + 1, bob, Buffer.from([i])));
  await until('10 DELIVERs', () => bobPeer.frames.filter((f) => f.type === FrameType.DELIVER).length >= 10);
  const ids = take(bobPeer, FrameType.DELIVER).map((p) => parseDeliver(p, 0, p.length)!);
  bobPeer.write(encodeAck(ids[5]!.deliveryId)); // the first six
  await until('every RESULT', () => alice.frames.filter((f) => f.type === FrameType.RESULT).length >= 10);
  await sleep(100);
  bobPeer.close();
  const again = await connectRaw(relay, bob);
  await until('QUEUE_EMPTY', () => again.frames.some((f) => f.type === FrameType.QUEUE_EMPTY));
  const got = take(again, FrameType.DELIVER).map((p) => parseDeliver(p, 0, p.length)!.body[0]);
  t.same(got, [6, 7, 8, 9], 'exactly the four unacknowledged ones, in order');
  again.close();
  alice.close();
});

t.test('pipelined stored sends do not grow relay memory: reading pauses at the pending-commit bound', async (t) => {
  const bound = 2 * MiB;
  const relay = await relayFor(t, { PULLTAB_STORE_PENDING_BYTES_PER_CONNECTION: String(bound) });
  const alice = await connectRaw(relay);
  const baseline = procStatusBytes(relay.proc.pid!, 'RssAnon');
  const sampler = sampleRssAnon(relay.proc.pid!);
  // 160 MiB of 1 MiB stored SENDs to fresh recipients, written without waiting for any RESULT.
  const n = 160;
  const body = Buffer.alloc(MiB - 1024, 7);
  let written = 0;
  const writer = (async () => {
    for (let i = 0; i < n; i++) {
      if (!alice.socket.write(storableSend(i + 1, generateIdentity(), body))) {
        await new Promise((resolve) => alice.socket.once('drain', resolve));
      }
      written++;
    }
  })();
  await until('every RESULT', () => alice.frames.filter((f) => f.type === FrameType.RESULT).length >= n, 120_000);
  await writer;
  const peak = sampler.stop();
  const outcomes = take(alice, FrameType.RESULT).map((p) => parseResult(p, 0, p.length)!.outcomes[0]);
  t.equal(written, n);
  t.same([...new Set(outcomes)], [Code.STORED], 'every one stored');
  t.ok(await relayMetric(relay, 'pulltab_read_pauses_total{reason="store"}') > 0, 'the sender was paused for its pending stores');
  // Without the bound it grew by 204 MiB (Node 20). With it: 55 MiB on Node 20; 77-96 MiB on Node 24
  // before the seams restructure and 84-97 MiB after, whose heap grows further before it collects.
  t.ok(peak - baseline < 128 * MiB, `relay anonymous memory grew by ${((peak - baseline) / MiB).toFixed(0)} MiB for ${n} MiB pipelined (bound ${bound / MiB} MiB)`);
  alice.close();
});

t.test('replies to a client that does not read are held to the outbound budget', async (t) => {
  // Bounds on the relay's anonymous memory growth. Before the relay stopped reading from such a
  // connection, 5 s of flood grew it by 186 MiB (PING), 174 MiB (refused SENDs) and 73 MiB (admin:
  // the relay answers those slowly, so it reads fewer); after, 10-32 MiB, and up to 54 MiB for the
  // admin flood on Node 24, whose heap grows further before it collects. The admin bound is loose.
  const kinds: Array<[string, (i: number) => Buffer, number]> = [
    ['PING', () => encodeFrame(FrameType.PING, Buffer.alloc(8)), 64 * MiB],
    ['refused SEND', (i) => encodeSend({ seq: i, flags: 0, ttlSeconds: 0, storageKey: null, recipients: [], body: Buffer.alloc(0) }), 64 * MiB],
    ['admin request', (i) => encodeAdminRequest({ requestId: i, json: '{"command":"stats"}' }), 96 * MiB],
  ];
  for (const [kind, frame, bound] of kinds) {
    const dir = tempDir();
    t.teardown(() => removeDir(dir));
    const relay = await spawnRelay(dir, ['--port', '0'], { PULLTAB_WRITE_DEADLINE_MS: '3000' });
    const peer = await connectRaw(relay);
    peer.socket.pause(); // never reads
    const baseline = procStatusBytes(relay.proc.pid!, 'RssAnon');
    const sampler = sampleRssAnon(relay.proc.pid!);
    // Pre-encode a batch: 64 KiB of frames per write.
    const one = frame(1);
    const perBatch = Math.max(1, Math.floor(65536 / one.length));
    const batches: Buffer[] = [];
    for (let b = 0; b < 16; b++) batches.push(Buffer.concat(Array.from({ length: perBatch }, (_, i) => frame(b * perBatch + i + 1))));
    let sentBytes = 0;
    const deadline = Date.now() + 5000;
    let blockedSince = 0;
    while (Date.now() < deadline && !peer.closed && sentBytes < 400 * MiB) {
      if (peer.socket.write(batches[(sentBytes / 65536) % 16 | 0]!)) {
        sentBytes += batches[0]!.length;
        blockedSince = 0;
        if ((sentBytes & 0xfffff) < 65536) await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      sentBytes += batches[0]!.length;
      if (blockedSince === 0) blockedSince = Date.now();
      await drainOrTimeout(peer.socket, 200);
    }
    const peak = sampler.stop();
    const pauses = await relayMetric(relay, 'pulltab_read_pauses_total{reason="output"}');
    const slow = await relayMetric(relay, 'pulltab_slow_consumer_disconnects_total');
    // How the relay stopped it depends on how fast it answers on this machine (the output bound,
    // or the write deadline first when answers are slow): what must hold is the memory bound.
    t.comment(`${kind}: reading paused for output ${pauses} time(s); closed SLOW_CONSUMER ${slow} time(s)`);
    t.ok(blockedSince > 0, `${kind}: the flood was held back by TCP (${(sentBytes / MiB).toFixed(0)} MiB written)`);
    t.ok(peak - baseline < bound, `${kind}: relay anonymous memory grew by ${((peak - baseline) / MiB).toFixed(1)} MiB (bound ${bound / MiB} MiB)`);
    peer.close();
    await killRelay(relay, 'SIGTERM');
  }
});

t.test('one connection flooding PINGs (and reading the PONGs) does not starve a healthy pair', async (t) => {
  const relay = await relayFor(t);
  const bob = generateIdentity();
  const bobPeer = await connectRaw(relay, bob);
  const alice = await connectRaw(relay);
  alice.socket.setNoDelay(true);
  // A closed loop: 50 messages out, wait for all 50 to arrive, again. Its rate is set by how
  // soon the relay gets round to each connection.
  const round = Buffer.concat(Array.from({ length: 50 }, (_, i) => encodeSend({
    seq: i, flags: 0, ttlSeconds: 0, storageKey: null, recipients: [{ key: bob.publicKey, wrappedKey: NO_WRAPPED_KEY }], body: Buffer.alloc(64),
  })));
  // Count DELIVER bytes without parsing: 64-byte bodies make every DELIVER the same length.
  const deliverLength = 5 + 58 + 64;
  let delivered = 0;
  let target = Infinity;
  let roundDone: () => void = () => {};
  bobPeer.socket.removeAllListeners('data');
  bobPeer.socket.on('data', (chunk: Buffer) => {
    delivered += chunk.length;
    if (delivered >= target) roundDone();
  });
  const rate = async (ms: number): Promise<number> => {
    const start = Date.now();
    let rounds = 0;
    while (Date.now() - start < ms) {
      target = delivered + 50 * deliverLength;
      const done = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('a round took over 10 s')), 10_000);
        roundDone = () => { clearTimeout(timer); resolve(); };
      });
      alice.write(round);
      await done;
      rounds++;
    }
    return (rounds * 50) / ((Date.now() - start) / 1000);
  };
  await rate(300); // warm-up
  const alone = await rate(1500);

  const flooder = await connectRaw(relay);
  flooder.socket.removeAllListeners('data');
  flooder.socket.on('data', () => {}); // reads and drops the PONGs
  const pings = Buffer.concat(Array.from({ length: 5000 }, () => encodeFrame(FrameType.PING, Buffer.alloc(8))));
  let flooding = true;
  const flood = (async () => {
    const stopAt = Date.now() + 10_000;
    while (flooding && Date.now() < stopAt && !flooder.closed) {
      if (!flooder.socket.write(pings)) await drainOrTimeout(flooder.socket, 100);
      else await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  await sleep(200);
  const flooded = await rate(1500);
  flooding = false;
  await flood;
  flooder.close();
  // About 40% on a quiet machine, 20% with the suite running beside it; 1% before the relay yielded.
  t.ok(flooded >= alone * 0.1, `healthy pair: ${alone.toFixed(0)} msgs/s alone, ${flooded.toFixed(0)} msgs/s beside the flood (${(flooded / alone * 100).toFixed(0)}%)`);
  t.ok(await relayMetric(relay, 'pulltab_read_pauses_total{reason="turn"}') > 0, 'the flooder was made to yield its turn');
  alice.close();
  bobPeer.close();
});

t.test('QUEUE_EMPTY comes without an ACK when the mailbox holds exactly the window', async (t) => {
  const window = 16;
  const relay = await relayFor(t, { PULLTAB_INFLIGHT_WINDOW: String(window) });
  for (const stored of [window, 2 * window]) {
    const bob = generateIdentity();
    const alice = await connectRaw(relay);
    for (let i = 0; i < stored; i++) alice.write(storableSend(i + 1, bob, Buffer.from([i])));
    await until('every RESULT', () => alice.frames.filter((f) => f.type === FrameType.RESULT).length >= stored);
    alice.close();
    const bobPeer = await connectRaw(relay, bob);
    await until('a window of DELIVERs', () => bobPeer.frames.filter((f) => f.type === FrameType.DELIVER).length >= window);
    if (stored === window) {
      await until('QUEUE_EMPTY before any ACK', () => bobPeer.frames.some((f) => f.type === FrameType.QUEUE_EMPTY), 2000);
      t.pass('a mailbox of exactly the window: QUEUE_EMPTY without an ACK');
    } else {
      await sleep(300);
      t.notOk(bobPeer.frames.some((f) => f.type === FrameType.QUEUE_EMPTY), 'twice the window: no QUEUE_EMPTY while entries wait behind the window');
      const first = take(bobPeer, FrameType.DELIVER).map((p) => parseDeliver(p, 0, p.length)!);
      bobPeer.write(encodeAck(first.at(-1)!.deliveryId));
      await until('QUEUE_EMPTY after one cumulative ACK', () => bobPeer.frames.some((f) => f.type === FrameType.QUEUE_EMPTY), 2000);
      t.equal(take(bobPeer, FrameType.DELIVER).length, window, 'the second window came with it');
    }
    bobPeer.close();
  }
});
