// The client library's send path under load: flush() as the one wait after many sends, a
// send buffer that pushes back (writable, 'drain', sends that wait, a hard bound) instead of
// growing without limit, and what send() and the received messages promise about their bytes.
// A proxy on loopback between client and relay stops reading from the client to make the
// relay look slow: TCP then fills up and the client's own buffer is what grows.
import { connect, createServer, type Server, type Socket } from 'node:net';
import t from 'tap';
import { encodeKey, generateIdentity } from '../src/crypto/keys.js';
import { NotConnectedError, SendBufferFullError, type ReceivedMessage, type RelayClient } from '../src/client/client.js';
import { formatRelayAddress, parseRelayAddress } from '../src/protocol/address.js';
import type { Relay } from '../src/server/relay.js';
import { connectClient, makeClient, once, sleep, startRelay, waitForCount } from './helpers.js';

/** A TCP proxy to the relay whose client→relay direction can be stopped and started again. */
class StallingProxy {
  readonly #server: Server;
  /** Each client's connection to the proxy and the proxy's to the relay. */
  readonly #pairs = new Map<Socket, Socket>();
  #stalled = false;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(relay: Relay): Promise<{ proxy: StallingProxy; address: string }> {
    const target = parseRelayAddress(relay.address);
    let proxy!: StallingProxy;
    const server = createServer((client) => {
      const upstream = connect({ host: target.host, port: target.port });
      proxy.#pairs.set(client, upstream);
      client.pipe(upstream);
      upstream.pipe(client);
      if (proxy.#stalled) client.pause();
      const end = () => { proxy.#pairs.delete(client); client.destroy(); upstream.destroy(); };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    proxy = new StallingProxy(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    return { proxy, address: formatRelayAddress({ relayKey: target.relayKey, host: '127.0.0.1', port }) };
  }

  /** Stops reading from the clients: their bytes pile up in TCP, then in the client library. */
  stall(): void {
    this.#stalled = true;
    for (const client of this.#pairs.keys()) { client.unpipe(); client.pause(); }
  }

  flow(): void {
    this.#stalled = false;
    for (const [client, upstream] of this.#pairs) client.pipe(upstream);
  }

  /** Cuts every connection (the client sees the relay go away). */
  cut(): void {
    for (const [client, upstream] of this.#pairs) { client.destroy(); upstream.destroy(); }
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

async function relayAndReceiver(t: { teardown(fn: () => unknown): void }): Promise<{ relay: Relay; bob: RelayClient; got: ReceivedMessage[] }> {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const bob = await connectClient(relay, { raw: true });
  t.teardown(() => bob.close());
  const got: ReceivedMessage[] = [];
  bob.on('message', (m) => got.push(m));
  return { relay, bob, got };
}

/** Settles within ms: 'pending' when the promise has not. */
async function stateWithin<T>(p: Promise<T>, ms: number): Promise<'resolved' | 'rejected' | 'pending'> {
  return Promise.race([p.then(() => 'resolved' as const, () => 'rejected' as const), sleep(ms).then(() => 'pending' as const)]);
}

t.test('flush() resolves once the relay has handled everything sent before it', async (t) => {
  const { relay, bob, got } = await relayAndReceiver(t);
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => alice.close());
  const refused: number[] = [];
  alice.on('refused', (seq) => refused.push(seq));
  const nobody = generateIdentity().publicKey;
  for (let i = 0; i < 300; i++) {
    await alice.send([bob.identity.publicKey], `m${i}`, { receipt: false });
    if (i % 3 === 0) await alice.send([nobody], `lost${i}`, { receipt: false });
  }
  await alice.flush();
  // Every refusal (RECIPIENT_OFFLINE) was answered before the PONG: the relay handles frames in order.
  t.equal(refused.length, 100, "every refusal had come back as a 'refused' event when flush() resolved");
  await waitForCount(got, 300);
  t.same(got.map((m) => Buffer.from(m.body).toString()), Array.from({ length: 300 }, (_, i) => `m${i}`), 'the delivered messages arrive, in order');
  // Flushes answer in order, also several at once.
  const order: number[] = [];
  await Promise.all([0, 1, 2].map((i) => alice.flush().then(() => order.push(i))));
  t.same(order, [0, 1, 2], 'concurrent flushes resolve in the order made');
});

t.test('flush() rejects when not connected, and when the connection is lost before the answer', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const idle = makeClient(relay, { raw: true });
  await t.rejects(idle.flush(), NotConnectedError, 'not connected yet');
  const { proxy, address } = await StallingProxy.start(relay);
  t.teardown(() => proxy.close());
  const alice = await connectClient(address, { raw: true, reconnect: false });
  t.teardown(() => alice.close());
  proxy.stall();
  const flushed = alice.flush();
  t.equal(await stateWithin(flushed, 200), 'pending', 'no answer while the relay does not read');
  proxy.cut();
  await t.rejects(flushed, NotConnectedError, 'the lost connection rejects the waiting flush');
});

t.test('a fast sender is pushed back: writable, drain, sends that wait, and a hard bound', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const carol = await connectClient(relay, { raw: true, holdLimit: 100_000 });
  t.teardown(() => carol.close());
  const got: ReceivedMessage[] = [];
  carol.on('message', (m) => got.push(m));
  const { proxy, address } = await StallingProxy.start(relay);
  t.teardown(() => proxy.close());
  const sendBufferBytes = 64 * 1024;
  const alice = await connectClient(address, { raw: true, sendBufferBytes });
  t.teardown(() => alice.close());
  t.equal(alice.writable, true, 'writable once connected');
  proxy.stall();
  const to = [carol.identity.publicKey];
  const body = Buffer.alloc(16 * 1024, 0x61);
  let accepted = 0;
  // One send per turn, so that each goes to the socket: loopback TCP absorbs some megabytes
  // before the socket's own buffer grows past the mark. Bounded by count.
  for (let i = 0; i < 4000 && alice.writable; i++) {
    await alice.send(to, body, { receipt: false });
    accepted++;
    await new Promise(setImmediate);
  }
  t.equal(alice.writable, false, 'writable goes false once the send buffer passes sendBufferBytes');
  const waiting = alice.send(to, body, { receipt: false });
  accepted++;
  t.equal(await stateWithin(waiting, 100), 'pending', 'a send made past the mark waits for the buffer to drain');
  // Without waiting, sends fill the buffer up to four times the mark; then each is refused at once.
  const outcomes: Array<Promise<'sent' | unknown>> = [];
  for (let i = 0; i < 100; i++) outcomes.push(alice.send(to, body, { receipt: false }).then(() => 'sent', (err: unknown) => err));
  const drained = once(alice, 'drain', 20_000);
  proxy.flow();
  await drained;
  t.equal(await stateWithin(waiting, 5000), 'resolved', "the waiting send resolves once the buffer drains, with 'drain'");
  t.equal(alice.writable, true, 'writable again');
  const settled = await Promise.all(outcomes);
  const sent = settled.filter((o) => o === 'sent').length;
  const refused = settled.filter((o) => o instanceof SendBufferFullError).length;
  t.equal(sent + refused, 100, 'each send without waiting was either queued or refused with SendBufferFullError');
  t.ok(refused > 0, `past four times sendBufferBytes send() rejects (${refused} of 100 refused)`);
  t.ok(sent <= (4 * sendBufferBytes) / body.length + 1, `the buffer stays bounded (${sent} queued past the mark)`);
  t.ok(settled.slice(0, sent).every((o) => o === 'sent'), 'the queued ones are the first, the refused ones the rest');
  accepted += sent;
  await alice.flush();
  await waitForCount(got, accepted, 20_000);
  t.equal(got.length, accepted, 'every queued message arrives; the refused ones were never sent');
});

t.test('send() copies the body; received bodies are views that stay valid; fromText is made on demand', async (t) => {
  const { relay, bob, got } = await relayAndReceiver(t);
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => alice.close());
  const body = Buffer.from('original');
  const sent = alice.send([bob.identity.publicKey], body, { receipt: false });
  body.write('CHANGED!');
  await sent;
  await alice.send([bob.identity.publicKey], 'second');
  await waitForCount(got, 2);
  t.equal(Buffer.from(got[0]!.body).toString(), 'original', 'the caller may reuse its buffer as soon as send() returns');
  const first = got[0]!;
  const before = Buffer.from(first.body).toString();
  for (let i = 0; i < 200; i++) await alice.send([bob.identity.publicKey], `more traffic ${i}`, { receipt: false });
  await alice.flush();
  await waitForCount(got, 202);
  t.equal(Buffer.from(first.body).toString(), before, 'a held body is unchanged by later traffic (the client never reuses its memory)');
  t.equal(first.fromText, alice.publicKey, 'fromText is the sender key in base58');
  t.equal(encodeKey(first.from), alice.publicKey, 'from is the sender key');
  t.equal(JSON.parse(JSON.stringify(first)).fromText, alice.publicKey, 'JSON shows fromText as before');
});

t.test('receipts name the recipients as given: text as text, bytes in base58', async (t) => {
  const { relay, bob } = await relayAndReceiver(t);
  const alice = await connectClient(relay, { raw: true });
  t.teardown(() => alice.close());
  const asText = await alice.send([bob.publicKey], 'a');
  t.equal(asText.outcomes[0]?.recipient, bob.publicKey);
  const asBytes = await alice.send([bob.identity.publicKey], 'b');
  t.equal(asBytes.outcomes[0]?.recipient, bob.publicKey);
  t.equal(asBytes.outcomes[0]?.codeName, 'DELIVERED');
  t.throws(() => alice.send([new Uint8Array(31)], 'c'), { name: 'KeyFormatError' }, 'a key of the wrong length is refused before anything is sent');
  t.throws(() => makeClient(relay, { sendBufferBytes: 1000 }), RangeError, 'sendBufferBytes below 64 KiB is refused');
});
