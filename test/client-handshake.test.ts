// The client side of the handshake (protocol/client-handshake.ts), played against a relay's
// frames made by hand: what it answers, and each way it gives up. The library, the tests' raw
// peer, the load generator and the fuzzer all run it; the relay tests run it over sockets.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { generateIdentity, Signer, verifySignature } from '../src/crypto/keys.js';
import { ClientHandshake, HandshakeFailure, retryCannotHelp, welcomeRefusal } from '../src/protocol/client-handshake.js';
import { Code, FRAME_HEADER_LENGTH, HelloFlags } from '../src/protocol/constants.js';
import {
  clientSignedBytes, encodeServerHello, encodeServerWelcome, NO_LIMITS, parseClientHello, relaySignedBytes, transcript, welcomeSignedFields,
  type WelcomeLimits,
} from '../src/protocol/handshake.js';

const LIMITS: WelcomeLimits = {
  maxPayloadBytes: 4096, maxRecipients: 3, maxTtlSeconds: 3600, defaultTtlSeconds: 600, inflightWindow: 77, pingIntervalMs: 20_000, pingTimeoutMs: 15_000,
};

/** A relay's side, by hand: its hello, and a signed welcome for what the client sent. */
function fakeRelay(range: [number, number] = [2, 2]) {
  const identity = generateIdentity();
  const signer = new Signer(identity);
  const relayNonce = randomBytes(32);
  const helloFrame = encodeServerHello({ minVersion: range[0], maxVersion: range[1], relayKey: Buffer.from(identity.publicKey), relayNonce });
  return {
    key: identity.publicKey,
    hello: helloFrame.subarray(FRAME_HEADER_LENGTH),
    /** The relay's transcript of a CLIENT_HELLO frame, and whether its signature verifies. */
    read(clientHelloFrame: Buffer, channelBinding: Buffer | null = null) {
      const hello = parseClientHello(clientHelloFrame, FRAME_HEADER_LENGTH, clientHelloFrame.length)!;
      const tr = transcript({
        relayKey: identity.publicKey, relayNonce, minVersion: range[0], maxVersion: range[1],
        clientKey: hello.clientKey, clientNonce: hello.clientNonce, version: hello.version, flags: hello.flags, channelBinding,
      });
      return { hello, tr, signatureOk: verifySignature(hello.clientKey, clientSignedBytes(tr), hello.signature) };
    },
    welcome(tr: Buffer, status: number = Code.OK, limits = LIMITS, retryAfterMs = 0, by: Signer = signer): Buffer {
      const fields = welcomeSignedFields(status, 2, retryAfterMs, limits);
      return encodeServerWelcome(fields, by.sign(relaySignedBytes(tr, fields))).subarray(FRAME_HEADER_LENGTH);
    },
  };
}

const client = generateIdentity();

t.test('an honest handshake: a CLIENT_HELLO the relay verifies, then the welcome and its limits', async (t) => {
  const relay = fakeRelay();
  const handshake = new ClientHandshake({ signer: new Signer(client), pinnedRelayKey: relay.key, flags: HelloFlags.SEND_ONLY });
  t.equal(handshake.answered, false);
  const frame = handshake.answer(relay.hello, 0, relay.hello.length, null);
  if (frame instanceof HandshakeFailure) throw new Error(frame.reason);
  t.equal(handshake.answered, true);
  const seen = relay.read(frame);
  t.ok(seen.signatureOk, 'the relay verifies the client signature over its own transcript');
  t.equal(seen.hello.version, 2);
  t.equal(seen.hello.flags, HelloFlags.SEND_ONLY, 'the flags asked for, signed');
  t.same(Buffer.from(seen.hello.clientKey), Buffer.from(client.publicKey));
  const welcome = handshake.check(...whole(relay.welcome(seen.tr)));
  if (welcome instanceof HandshakeFailure) throw new Error(welcome.reason);
  t.same(welcome.limits, LIMITS);
  t.equal(welcomeRefusal(welcome), null);
});

t.test('over TLS the channel binding is in the transcript: a relay on another channel does not verify it', async (t) => {
  const relay = fakeRelay();
  const binding = randomBytes(32);
  const handshake = new ClientHandshake({ signer: new Signer(client), pinnedRelayKey: relay.key });
  const frame = handshake.answer(relay.hello, 0, relay.hello.length, binding) as Buffer;
  t.ok(relay.read(frame, binding).signatureOk, 'the same channel');
  const other = relay.read(frame, randomBytes(32));
  t.notOk(other.signatureOk, 'another channel (a TLS-terminating proxy)');
  // The relay signs its own transcript; over another channel the client refuses it, and says why.
  const failure = handshake.check(...whole(relay.welcome(other.tr)));
  t.ok(failure instanceof HandshakeFailure);
  t.match(failure, { code: Code.AUTH_FAILED, fatal: true, reason: /TLS-terminating proxy.*channel binding/ });
});

t.test('the client gives up on a bad hello, another relay key, or no version in common', async (t) => {
  const relay = fakeRelay();
  const signer = new Signer(client);
  const notPtab = Buffer.from(relay.hello);
  notPtab[0] = 0x51;
  t.match(new ClientHandshake({ signer, pinnedRelayKey: relay.key }).answer(notPtab, 0, notPtab.length, null),
    { code: Code.MALFORMED_FRAME, fatal: true, reason: 'not a Pulltab relay (bad SERVER_HELLO)' });
  t.match(new ClientHandshake({ signer, pinnedRelayKey: relay.key }).answer(relay.hello, 0, 69, null), { code: Code.MALFORMED_FRAME }, 'one byte short');
  t.match(new ClientHandshake({ signer, pinnedRelayKey: generateIdentity().publicKey }).answer(relay.hello, 0, relay.hello.length, null),
    { code: Code.AUTH_FAILED, fatal: true, reason: 'relay key does not match the key in the relay address' });
  const future = fakeRelay([3, 4]);
  t.match(new ClientHandshake({ signer, pinnedRelayKey: future.key }).answer(future.hello, 0, future.hello.length, null),
    { code: Code.UNSUPPORTED_VERSION, fatal: true, reason: 'relay speaks protocol 3..4, this client 2..2' });
  const unpinned = new ClientHandshake({ signer, pinnedRelayKey: null }).answer(relay.hello, 0, relay.hello.length, null);
  t.ok(Buffer.isBuffer(unpinned), 'unpinned (load generators, fuzzers): any relay key');
});

t.test('the welcome: signed by the pinned key or refused; a refusal carries its code, finality and retry hint', async (t) => {
  const relay = fakeRelay();
  const signer = new Signer(client);
  const answered = (pinnedRelayKey: Uint8Array | null) => {
    const handshake = new ClientHandshake({ signer, pinnedRelayKey });
    const { tr } = relay.read(handshake.answer(relay.hello, 0, relay.hello.length, null) as Buffer);
    return { handshake, tr };
  };
  const forged = answered(relay.key);
  t.match(forged.handshake.check(...whole(relay.welcome(forged.tr, Code.OK, LIMITS, 0, new Signer(generateIdentity())))),
    { code: Code.AUTH_FAILED, fatal: true, reason: 'relay did not prove it holds the pinned key' });
  const changed = answered(relay.key);
  const tampered = Buffer.from(relay.welcome(changed.tr));
  tampered[11] = 200; // maxRecipients changed on the path
  t.ok(changed.handshake.check(tampered, 0, tampered.length) instanceof HandshakeFailure, 'a limit changed on the path');
  const short = answered(relay.key);
  t.match(short.handshake.check(Buffer.alloc(95), 0, 95), { code: Code.MALFORMED_FRAME, fatal: false, reason: 'relay sent a malformed SERVER_WELCOME' });
  const unpinned = answered(null);
  t.notOk(unpinned.handshake.check(...whole(relay.welcome(unpinned.tr, Code.OK, LIMITS, 0, new Signer(generateIdentity())))) instanceof HandshakeFailure,
    'unpinned: the signature is not checked');

  const full = answered(relay.key);
  const busy = full.handshake.check(...whole(relay.welcome(full.tr, Code.TOO_MANY_CONNECTIONS, NO_LIMITS, 1000)));
  if (busy instanceof HandshakeFailure) throw new Error(busy.reason);
  t.equal(busy.status, Code.TOO_MANY_CONNECTIONS, 'a refusal is signed too, and returned as the welcome');
  t.match(welcomeRefusal(busy), { code: Code.TOO_MANY_CONNECTIONS, fatal: false, retryAfterMs: 1000, reason: /^relay refused the connection: TOO_MANY_CONNECTIONS \(/ });
  const blocked = answered(relay.key);
  const refused = blocked.handshake.check(...whole(relay.welcome(blocked.tr, Code.NOT_AUTHORIZED, NO_LIMITS)));
  if (refused instanceof HandshakeFailure) throw new Error(refused.reason);
  t.match(welcomeRefusal(refused), { code: Code.NOT_AUTHORIZED, fatal: true }, 'a refused key does not retry');
  t.throws(() => new ClientHandshake({ signer, pinnedRelayKey: null }).check(Buffer.alloc(96), 0, 96), /before answer/);
});

t.test('retrying cannot help after these codes, and can after the others', async (t) => {
  for (const code of [Code.AUTH_FAILED, Code.NOT_AUTHORIZED, Code.UNSUPPORTED_VERSION, Code.REPLACED, Code.TRANSPORT_MISMATCH]) t.ok(retryCannotHelp(code));
  for (const code of [Code.RELAY_FULL, Code.GOING_AWAY, Code.SLOW_CONSUMER, Code.IDLE_TIMEOUT, Code.KICKED, Code.TOO_MANY_CONNECTIONS]) t.notOk(retryCannotHelp(code));
});

function whole(payload: Buffer): [Buffer, number, number] {
  return [payload, 0, payload.length];
}
