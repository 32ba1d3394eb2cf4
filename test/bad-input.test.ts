// Hostile and broken input, before and after the handshake: each gets its documented answer
// (docs/PROTOCOL.md §4), and the relay keeps serving everyone else.
import t, { type Test } from 'tap';
import { generateIdentity } from '../src/crypto/keys.js';
import { Code, FrameType } from '../src/protocol/constants.js';
import { encodeFrame, encodeSend, parseClose, parseResult } from '../src/protocol/frames.js';
import { connectClient, nextMessages, RawPeer, startRelay } from './helpers.js';

async function expectClose(t: Test, peer: RawPeer, code: number): Promise<void> {
  let frame = await peer.next();
  while (frame && frame.type !== FrameType.CLOSE) frame = await peer.next();
  t.ok(frame, 'a CLOSE frame arrives');
  if (frame) t.equal(parseClose(frame.payload, 0, frame.payload.length)?.code, code, `CLOSE code 0x${code.toString(16)}`);
  t.ok(await peer.waitClosed(), 'then the relay closes the connection');
}

t.test('bad input matrix', async (t) => {
  const relay = await startRelay({ handshakeTimeoutMs: 300, maxPayloadBytes: 4096 });
  t.teardown(() => relay.close());
  // A well-behaved pair keeps talking through all of it.
  const alice = await connectClient(relay);
  const bob = await connectClient(relay);
  t.teardown(() => Promise.all([alice.close(), bob.close()]));

  t.test('wrong signature: AUTH_FAILED welcome, then closed', async (t) => {
    const peer = new RawPeer(relay.port);
    const welcome = await peer.handshake(generateIdentity(), { corruptSignature: true });
    t.equal(welcome.status, Code.AUTH_FAILED);
    t.ok(await peer.waitClosed());
  });

  t.test('unsupported version: UNSUPPORTED_VERSION welcome', async (t) => {
    const peer = new RawPeer(relay.port);
    const welcome = await peer.handshake(generateIdentity(), { version: 9 });
    t.equal(welcome.status, Code.UNSUPPORTED_VERSION);
    t.ok(await peer.waitClosed());
  });

  t.test('silence past the handshake deadline: HANDSHAKE_TIMEOUT', async (t) => {
    const peer = new RawPeer(relay.port);
    t.equal((await peer.next())?.type, FrameType.SERVER_HELLO);
    await expectClose(t, peer, Code.HANDSHAKE_TIMEOUT);
  });

  t.test('a SEND before the handshake: UNEXPECTED_FRAME', async (t) => {
    const peer = new RawPeer(relay.port);
    await peer.next();
    peer.write(encodeFrame(FrameType.SEND, Buffer.alloc(30)));
    await expectClose(t, peer, Code.UNEXPECTED_FRAME);
  });

  t.test('an unknown type before the handshake: UNEXPECTED_FRAME', async (t) => {
    const peer = new RawPeer(relay.port);
    await peer.next();
    peer.write(encodeFrame(0x77, Buffer.alloc(3)));
    await expectClose(t, peer, Code.UNEXPECTED_FRAME);
  });

  t.test('an oversize CLIENT_HELLO: FRAME_TOO_LARGE', async (t) => {
    const peer = new RawPeer(relay.port);
    await peer.next();
    const header = Buffer.alloc(5);
    header[0] = FrameType.CLIENT_HELLO;
    header.writeUInt32BE(1 << 30, 1);
    peer.write(header);
    await expectClose(t, peer, Code.FRAME_TOO_LARGE);
  });

  t.test('a truncated CLIENT_HELLO: MALFORMED_FRAME', async (t) => {
    const peer = new RawPeer(relay.port);
    await peer.next();
    peer.write(encodeFrame(FrameType.CLIENT_HELLO, Buffer.alloc(20)));
    await expectClose(t, peer, Code.MALFORMED_FRAME);
  });

  t.test('after the handshake: an unknown type is skipped and the connection goes on', async (t) => {
    const peer = new RawPeer(relay.port);
    t.equal((await peer.handshake()).status, Code.OK);
    peer.write(Buffer.concat([encodeFrame(0x7e, Buffer.alloc(5000, 1)), encodeFrame(FrameType.PING, Buffer.from('abcdefgh'))]));
    let frame = await peer.next();
    while (frame && frame.type !== FrameType.PONG) frame = await peer.next();
    t.equal(frame?.payload.toString(), 'abcdefgh', 'PONG echoes the PING after the skipped frame');
    peer.close();
  });

  t.test('after the handshake: a SEND shorter than its fixed part gets MALFORMED_SEND', async (t) => {
    const peer = new RawPeer(relay.port);
    await peer.handshake();
    const payload = Buffer.alloc(10);
    payload.writeUInt32BE(77, 0);
    peer.write(encodeFrame(FrameType.SEND, payload));
    let frame = await peer.next();
    while (frame && frame.type !== FrameType.RESULT) frame = await peer.next();
    t.same(parseResult(frame!.payload, 0, frame!.payload.length), { seq: 77, code: Code.MALFORMED_SEND, outcomes: [] });
    peer.close();
  });

  t.test('after the handshake: a recipient list that overruns the payload gets MALFORMED_SEND', async (t) => {
    const peer = new RawPeer(relay.port);
    await peer.handshake();
    const frame = encodeSend({ seq: 5, flags: 0, ttlSeconds: 0, storageKey: null, recipients: [{ key: Buffer.alloc(32, 1), wrappedKey: Buffer.alloc(200) }], body: Buffer.alloc(0) });
    frame[5 + 25] = 3; // claim three recipients
    peer.write(frame);
    let f = await peer.next();
    while (f && f.type !== FrameType.RESULT) f = await peer.next();
    t.equal(parseResult(f!.payload, 0, f!.payload.length)?.code, Code.MALFORMED_SEND);
    peer.close();
  });

  t.test('after the handshake: a SEND of 3 bytes closes with MALFORMED_FRAME', async (t) => {
    const peer = new RawPeer(relay.port);
    await peer.handshake();
    peer.write(encodeFrame(FrameType.SEND, Buffer.alloc(3)));
    await expectClose(t, peer, Code.MALFORMED_FRAME);
  });

  t.test('after the handshake: a SEND longer than any valid SEND closes with FRAME_TOO_LARGE', async (t) => {
    const peer = new RawPeer(relay.port);
    await peer.handshake();
    const header = Buffer.alloc(5);
    header[0] = FrameType.SEND;
    header.writeUInt32BE(10 * 1024 * 1024, 1);
    peer.write(header);
    await expectClose(t, peer, Code.FRAME_TOO_LARGE);
  });

  t.test('after the handshake: frames only relays send close with UNEXPECTED_FRAME', async (t) => {
    for (const type of [FrameType.DELIVER, FrameType.RESULT, FrameType.SERVER_HELLO, FrameType.CLIENT_HELLO]) {
      const peer = new RawPeer(relay.port);
      await peer.handshake();
      peer.write(encodeFrame(type, Buffer.alloc(10)));
      await expectClose(t, peer, Code.UNEXPECTED_FRAME);
    }
  });

  t.test('after the handshake: an ACK of the wrong size closes with MALFORMED_FRAME', async (t) => {
    const peer = new RawPeer(relay.port);
    await peer.handshake();
    peer.write(encodeFrame(FrameType.ACK, Buffer.alloc(7)));
    await expectClose(t, peer, Code.MALFORMED_FRAME);
  });

  t.test('the good pair still talks', async (t) => {
    const got = nextMessages(bob, 1);
    const result = await alice.send([bob.identity.publicKey], 'still here');
    t.ok(result.ok);
    t.equal(Buffer.from((await got)[0].body).toString(), 'still here');
  });
});
