// docs/PROTOCOL.md and the relay agree, on each point an independent implementation found
// them apart: what the relay answers (over real sockets), and the values the document prints.
import t from 'tap';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import { storageKeyBytes } from '../src/client/client.js';
import { decodeKey, encodeKey, generateIdentity, readIdentityFile, writeIdentityFile } from '../src/crypto/keys.js';
import { isUnusableKey } from '../src/crypto/unusable-keys.js';
import { parseRelayAddress } from '../src/protocol/address.js';
import {
  Code, codeName, DEFAULT_PROTOCOL_LIMITS, DeliverFlags, FrameType, KEY_LENGTH, MAX_PAYLOAD_BYTES_SETTING, MAX_WRAPPED_KEY_LENGTH, maxSendFrameLength,
  SEND_FIXED_LENGTH, SERVER_WELCOME_LENGTH,
} from '../src/protocol/constants.js';
import { clientReadLimit, FRAME_TYPES, relayReadLimit, SEND_SIZED, type FramePhase, type FrameTypeSpec } from '../src/protocol/frame-types.js';
import { encodeAck, encodeDeliver, encodeFrame, parseClose, parseDeliver } from '../src/protocol/frames.js';
import { CLIENT_SIGNATURE_CONTEXT, RELAY_SIGNATURE_CONTEXT, transcript } from '../src/protocol/handshake.js';
import { connectClient, RawPeer, removeDir, sleep, startRelay, tempDir } from './helpers.js';

const DOC = readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8');

/** Reads the next frame and returns the CLOSE code it carries (or null: closed without one). */
async function closeCode(peer: RawPeer): Promise<string | null> {
  for (;;) {
    const frame = await peer.next();
    if (frame === null) return null;
    if (frame.type === FrameType.CLOSE) return codeName(parseClose(frame.payload, 0, frame.payload.length)?.code ?? -1);
  }
}

/** A raw peer past the handshake. */
async function authenticated(port: number): Promise<RawPeer> {
  const peer = new RawPeer(port);
  const welcome = await peer.handshake();
  if (welcome.status !== Code.OK) throw new Error(`handshake refused: ${codeName(welcome.status)}`);
  await peer.next(); // QUEUE_EMPTY
  return peer;
}

t.test('during the handshake, any frame but CLIENT_HELLO is UNEXPECTED_FRAME at its header, whatever its length', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  for (const [what, type, length] of [['2,000-byte SEND', FrameType.SEND, 2000], ['2,000-byte unknown type', 0x7f, 2000], ['small unknown type', 0x7f, 3]] as const) {
    const peer = new RawPeer(relay.port);
    t.teardown(() => peer.close());
    await peer.next(); // SERVER_HELLO
    const header = Buffer.alloc(5);
    header[0] = type;
    header.writeUInt32BE(length, 1);
    peer.write(length <= 3 ? Buffer.concat([header, Buffer.alloc(length)]) : header); // the header alone decides
    t.equal(await closeCode(peer), 'UNEXPECTED_FRAME', what);
  }
  const big = new RawPeer(relay.port);
  t.teardown(() => big.close());
  await big.next();
  big.write(Buffer.from([FrameType.CLIENT_HELLO, 0, 0, 0x04, 0x01])); // 1,025 bytes: over the hello maximum
  t.equal(await closeCode(big), 'FRAME_TOO_LARGE', 'a CLIENT_HELLO over 1,024 bytes');
});

t.test('after the handshake, CLIENT_HELLO and relay-to-client types are UNEXPECTED_FRAME whatever their length', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  for (const [what, type, length] of [['600-byte CLIENT_HELLO', FrameType.CLIENT_HELLO, 600], ['1,000-byte DELIVER', FrameType.DELIVER, 1000], ['small NOTICE', FrameType.NOTICE, 6]] as const) {
    const peer = await authenticated(relay.port);
    t.teardown(() => peer.close());
    peer.write(encodeFrame(type, Buffer.alloc(length)));
    t.equal(await closeCode(peer), 'UNEXPECTED_FRAME', what);
  }
});

t.test('a PONG is 8 bytes: 0, 7 or 9 close with MALFORMED_FRAME, 8 is read', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  for (const n of [0, 7, 9]) {
    const peer = await authenticated(relay.port);
    t.teardown(() => peer.close());
    peer.write(encodeFrame(FrameType.PONG, Buffer.alloc(n)));
    t.equal(await closeCode(peer), 'MALFORMED_FRAME', `${n}-byte PONG`);
  }
  const good = await authenticated(relay.port);
  t.teardown(() => good.close());
  good.write(encodeFrame(FrameType.PONG, Buffer.alloc(8)));
  good.write(encodeFrame(FrameType.PING, Buffer.alloc(8, 7)));
  const answer = await good.next();
  t.equal(answer?.type, FrameType.PONG, 'the connection goes on after an 8-byte PONG');
});

t.test('CLOSE: a well-formed one ends the connection without a frame, a malformed one gets MALFORMED_FRAME', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const polite = await authenticated(relay.port);
  t.teardown(() => polite.close());
  polite.write(encodeFrame(FrameType.CLOSE, Buffer.from([0x12, 0x34, 0, 0, 0, 0, 0x68, 0x69]))); // any code and reason
  t.equal(await closeCode(polite), null, 'closed, no CLOSE back');
  const short = await authenticated(relay.port);
  t.teardown(() => short.close());
  short.write(encodeFrame(FrameType.CLOSE, Buffer.alloc(3)));
  t.equal(await closeCode(short), 'MALFORMED_FRAME');
  const long = await authenticated(relay.port);
  t.teardown(() => long.close());
  long.write(encodeFrame(FrameType.CLOSE, Buffer.alloc(6 + 257)));
  t.equal(await closeCode(long), 'MALFORMED_FRAME', 'a reason over 256 bytes');
});

t.test('ACK 0 acknowledges nothing; an ACK above the last id acknowledges what was sent, not what comes later', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const sender = await connectClient(relay, { raw: true });
  t.teardown(() => sender.close());
  const bob = generateIdentity();
  const storeOne = (text: string) => sender.send([bob.publicKey], text, { store: true });
  await storeOne('first');
  const peer = new RawPeer(relay.port);
  t.teardown(() => peer.close());
  t.equal((await peer.handshake(bob)).status, Code.OK);
  const first = await peer.next();
  t.equal(first?.type, FrameType.DELIVER);
  t.equal(parseDeliver(first!.payload, 0, first!.payload.length)?.deliveryId, 1);
  t.equal((await peer.next())?.type, FrameType.QUEUE_EMPTY);
  peer.write(encodeAck(0));
  await sleep(100);
  t.equal((await relay.store.totals()).count, 1, 'ACK 0: still stored');
  peer.write(encodeAck(1000));
  for (let i = 0; i < 100 && (await relay.store.totals()).count > 0; i++) await sleep(20);
  t.equal((await relay.store.totals()).count, 0, 'ACK 1000 acknowledged delivery 1');
  await storeOne('second'); // delivered live as id 2, below the earlier ACK 1000
  const second = await peer.next();
  t.equal(parseDeliver(second!.payload, 0, second!.payload.length)?.deliveryId, 2);
  await sleep(100);
  t.equal((await relay.store.totals()).count, 1, 'the earlier ACK did not cover a later delivery');
  t.notOk(peer.closed, 'none of this closed the connection');
});

t.test('DELIVER flag bits other than 0x01 and 0x04 are reserved: a client ignores them', async (t) => {
  const sender = Buffer.alloc(32, 1);
  const frame = encodeDeliver({ deliveryId: 5, flags: 0xfa, sender, storageKey: null, wrappedKey: Buffer.alloc(0), body: Buffer.from('x') });
  const fields = parseDeliver(frame, 5, frame.length);
  t.equal(fields?.storageKey, null, '0x04 clear: no storage key, whatever the other bits');
  t.equal(Buffer.from(fields!.body).toString(), 'x');
  t.equal(fields!.flags & DeliverFlags.FROM_MAILBOX, 0);
});

t.test('the handshake deadline runs from accept to the last byte of CLIENT_HELLO', async (t) => {
  const relay = await startRelay({ handshakeTimeoutMs: 400 });
  t.teardown(() => relay.close());
  const partial = new RawPeer(relay.port);
  t.teardown(() => partial.close());
  const started = Date.now();
  await partial.next();
  partial.write(Buffer.from([FrameType.CLIENT_HELLO, 0, 0, 0, 130, 2, 0])); // header and 2 of 130 bytes
  t.equal(await closeCode(partial), 'HANDSHAKE_TIMEOUT');
  t.ok(Date.now() - started >= 350, 'at the deadline, not before');
});

t.test('version 1 is not spoken; a changed version range or flags make the signatures fail', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const v1 = new RawPeer(relay.port);
  t.teardown(() => v1.close());
  t.equal((await v1.handshake(generateIdentity(), { version: 1 })).status, Code.UNSUPPORTED_VERSION);
  const flipped = new RawPeer(relay.port);
  t.teardown(() => flipped.close());
  t.equal((await flipped.handshake(generateIdentity(), { flags: 0x01, signedFlags: 0x00 })).status, Code.AUTH_FAILED, 'SEND_ONLY flipped on the path');
  const identity = generateIdentity();
  const range = new RawPeer(relay.port);
  t.teardown(() => range.close());
  const welcome = await range.handshake(undefined, {
    forge: (hello, version) => {
      const clientNonce = randomBytes(32);
      // A client that was shown another range (a downgrade on the path) signs that range.
      const tr = transcript({ ...hello, minVersion: hello.minVersion - 1, clientKey: identity.publicKey, clientNonce, version, flags: 0 });
      return { clientKey: identity.publicKey, clientNonce, signature: ed25519.sign(Buffer.concat([CLIENT_SIGNATURE_CONTEXT, tr]), identity.secretKey) };
    },
  });
  t.equal(welcome.status, Code.AUTH_FAILED, 'a client shown another version range');
});

t.test('the welcome carries the key\'s limits, and the client refuses locally what the relay would', async (t) => {
  const relay = await startRelay({ maxRecipients: 3, maxPayloadBytes: 4096, maxTtlSeconds: 3600, defaultTtlSeconds: 600, inflightWindow: 77, pingIntervalMs: 20_000 });
  t.teardown(() => relay.close());
  const client = await connectClient(relay, { raw: true });
  t.teardown(() => client.close());
  t.same(client.relayLimits, {
    maxPayloadBytes: 4096, maxRecipients: 3, maxTtlSeconds: 3600, defaultTtlSeconds: 600, inflightWindow: 77, pingIntervalMs: 20_000, pingTimeoutMs: 15_000,
  });
  const keys = [1, 2, 3, 4].map(() => generateIdentity().publicKey);
  const before = relay.stats.framesIn;
  const tooMany = await client.send(keys, 'x');
  t.equal(tooMany.codeName, 'TOO_MANY_RECIPIENTS');
  t.match(tooMany.message, /refused before sending/);
  t.equal((await client.send(keys.slice(0, 1), Buffer.alloc(4097))).codeName, 'PAYLOAD_TOO_LARGE');
  t.equal((await client.send(keys.slice(0, 1), 'x', { store: true, ttlSeconds: 3601 })).codeName, 'TTL_TOO_LONG');
  t.equal(relay.stats.framesIn, before, 'nothing reached the relay');
  t.equal((await client.send(keys.slice(0, 3), Buffer.alloc(4096), { store: true, ttlSeconds: 3600 })).ok, true, 'at the limits: sent and stored');

  // A refusal says nothing of limits.
  const refused = new RawPeer(relay.port);
  t.teardown(() => refused.close());
  const w = await refused.handshake(generateIdentity(), { corruptSignature: true });
  t.equal(w.status, Code.AUTH_FAILED);
  t.same(Object.values(w.limits), [0, 0, 0, 0, 0, 0, 0]);
});

t.test('the document prints the values the code uses', async (t) => {
  t.match(DOC, `| CLIENT_CONTEXT | \`pulltab handshake v2 client\` followed by one 0x00 byte | \`${CLIENT_SIGNATURE_CONTEXT.toString('hex')}\``);
  t.match(DOC, `| RELAY_CONTEXT | \`pulltab handshake v2 relay\` followed by one 0x00 byte | \`${RELAY_SIGNATURE_CONTEXT.toString('hex')}\``);
  t.match(DOC, `### 2.4 SERVER_WELCOME (0x03), ${SERVER_WELCOME_LENGTH} bytes`);
  const zero = new Uint8Array(32);
  t.equal(transcript({ relayKey: zero, relayNonce: zero, minVersion: 2, maxVersion: 2, clientKey: zero, clientNonce: zero, version: 2, flags: 0 }).length, 133);
  t.equal(transcript({ relayKey: zero, relayNonce: zero, minVersion: 2, maxVersion: 2, clientKey: zero, clientNonce: zero, version: 2, flags: 0, channelBinding: zero }).length, 165);
  t.match(DOC, 'The transcript is 133 bytes over plain TCP and 165 over TLS.');

  // Text storage keys (section 3.1).
  const example = /`profile` →\s*`([0-9a-f]{32})`/.exec(DOC);
  t.ok(example, 'the document gives an example');
  t.equal(Buffer.from(storageKeyBytes('profile')!).toString('hex'), example![1]);

  // The seal-1 vector printed in section 6.6 is the file's.
  const vector = JSON.parse(readFileSync(new URL('./vectors/seal-1.json', import.meta.url), 'utf8'));
  const printed = DOC.slice(DOC.indexOf('The first vector, `seal-1`, in full'));
  const block = printed.slice(printed.indexOf('```') + 3, printed.indexOf('```', printed.indexOf('```') + 3));
  const value = (label: string): string => {
    const lines = block.split('\n');
    const i = lines.findIndex((l) => l.startsWith(label));
    const inline = lines[i].slice(label.length).trim();
    if (/^[0-9a-f]+$/.test(inline)) return inline;
    let hex = '';
    for (let j = i + 1; j < lines.length && /^[0-9a-f]+$/.test(lines[j]); j++) hex += lines[j];
    return hex;
  };
  t.equal(value('senderSecretKey'), vector.senderSecretKey);
  t.equal(value('senderPublicKey'), vector.senderPublicKey);
  t.equal(value('recipient secretKey'), vector.recipients[0].secretKey);
  t.equal(value('recipient publicKey'), vector.recipients[0].publicKey);
  t.equal(value('random'), vector.random);
  t.equal(value('plaintext'), vector.plaintext);
  t.equal(value('expected messageId'), vector.expected.messageId);
  t.equal(value('expected wrappedKey'), vector.expected.wrappedKeys[0]);
  t.equal(value('expected body'), vector.expected.body);
});

/** A number as the document prints it: 67,174,400. */
const printed = (n: number): string => n.toLocaleString('en-US');

t.test('the frame-type table is the document\'s: section 1 row for row, and the limits of section 7', async (t) => {
  // Section 1: type | name | direction | when | longest payload, one row per type, in the table's order.
  const section1 = DOC.slice(DOC.indexOf('Frame types:'), DOC.indexOf('**Unknown types.**'));
  const rows = section1.split('\n').filter((line) => line.startsWith('| 0x')).map((line) => line.split('|').slice(1, -1).map((cell) => cell.trim()));
  const when = (phase: FramePhase): string => ({ handshake: 'handshake', session: 'after the handshake', any: 'any time' })[phase];
  const expected = (spec: FrameTypeSpec): string[] => [
    `0x${spec.type.toString(16).padStart(2, '0')}`,
    spec.name,
    spec.relaySends && spec.clientSends ? 'either' : spec.relaySends ? 'relay → client' : 'client → relay',
    spec.relaySends && spec.clientSends && spec.relaySends !== spec.clientSends
      ? `${when(spec.relaySends)} (relay); ${when(spec.clientSends)} (client)`
      : when((spec.relaySends ?? spec.clientSends)!),
    spec.maxLength === SEND_SIZED ? 'the SEND maximum (section 7)' : printed(spec.maxLength),
  ];
  // The "when" column may point to the section that tells more: "after the handshake (section 9)".
  t.same(rows.map((cells) => cells.map((cell, i) => (i === 3 ? cell.replace(/ \(section \d+\)$/, '') : cell))), FRAME_TYPES.map(expected));
  t.equal(FRAME_TYPES.length, Object.keys(FrameType).length, 'every type of constants.ts is in the table');

  // Section 7: the limits each reader applies, as the readers take them from the table.
  const sendMax = maxSendFrameLength(DEFAULT_PROTOCOL_LIMITS);
  const relayReads = (type: number, inHandshake = false): number => relayReadLimit(type, inHandshake, sendMax);
  const clientReads = (type: number, inHandshake = false): number => clientReadLimit(type, inHandshake);
  t.match(DOC, `| CLIENT_HELLO payload, during the handshake | ≤ ${printed(relayReads(FrameType.CLIENT_HELLO, true))} bytes |`);
  for (const type of [FrameType.SERVER_HELLO, FrameType.SERVER_WELCOME, FrameType.CLOSE, FrameType.DELIVER, 0x7f]) t.equal(clientReads(type, true), 1024);
  t.match(DOC, `| any frame from the relay during the handshake, SERVER_HELLO and SERVER_WELCOME included (what a client accepts) | ≤ ${printed(clientReads(FrameType.SERVER_HELLO, true))} bytes |`);
  t.equal(relayReads(FrameType.SEND), sendMax);
  t.match(DOC, `| SEND payload | ${SEND_FIXED_LENGTH} + maxRecipients × ${KEY_LENGTH + 1 + MAX_WRAPPED_KEY_LENGTH} + maxPayloadBytes (${printed(sendMax)} with the defaults) |`);
  t.equal(relayReads(0x7f), sendMax, 'an unknown type: the SEND maximum');
  t.match(DOC, '| unknown frame payload, after the handshake | same as SEND |');
  const control = new Set([FrameType.ACK, FrameType.PING, FrameType.PONG, FrameType.CLOSE].map((type) => relayReads(type)));
  t.same([...control], [512]);
  t.match(DOC, `| ACK, PING, PONG, CLOSE sent by a client | ≤ ${[...control][0]} bytes (ACK, PING, PONG must be 8: \`MALFORMED_FRAME\`) |`);
  t.match(DOC, `| ADMIN_REQUEST payload | ≤ ${printed(relayReads(FrameType.ADMIN_REQUEST))} bytes |`);
  for (const type of [FrameType.CLIENT_HELLO, FrameType.SERVER_HELLO, FrameType.SERVER_WELCOME, FrameType.RESULT, FrameType.DELIVER, FrameType.QUEUE_EMPTY, FrameType.NOTICE, FrameType.ADMIN_RESPONSE]) {
    t.equal(relayReads(type), 0, `0x${type.toString(16)} after the handshake: refused at its header`);
  }
  for (const type of [FrameType.SEND, FrameType.ACK, FrameType.DELIVER, 0x7f]) t.equal(relayReads(type, true), 0, `0x${type.toString(16)} during the handshake: refused at its header`);
  t.match(DOC, `| ADMIN_RESPONSE payload (what a client accepts) | ≤ ${clientReads(FrameType.ADMIN_RESPONSE) / (1024 * 1024)} MiB (${printed(clientReads(FrameType.ADMIN_RESPONSE))} bytes) |`);
  t.equal(clientReads(0x7f), clientReads(FrameType.DELIVER), 'an unknown type: the DELIVER maximum');
  t.match(DOC, `| DELIVER payload, and unknown frame payload after the handshake (what a client accepts) | ≤ ${printed(clientReads(FrameType.DELIVER))} bytes (64 MiB + 64 KiB: `);
  t.equal(clientReads(FrameType.DELIVER), MAX_PAYLOAD_BYTES_SETTING + 64 * 1024);
  t.match(DOC, `| message body | 1 MiB (1,048,576 bytes); the setting takes at most 64 MiB (${printed(MAX_PAYLOAD_BYTES_SETTING)} bytes) |`);
  t.match(DOC, `| RESULT payload (what a client accepts) | ≤ ${clientReads(FrameType.RESULT)} bytes (7 + 2 × 255: `);
  const fromRelay = new Set([FrameType.QUEUE_EMPTY, FrameType.PING, FrameType.PONG, FrameType.CLOSE, FrameType.NOTICE].map((type) => clientReads(type)));
  t.same([...fromRelay], [512]);
  t.match(DOC, `| QUEUE_EMPTY, PING, PONG, CLOSE, NOTICE sent by the relay (what a client accepts) | ≤ ${[...fromRelay][0]} bytes |`);
});

t.test('a RESULT with an outcome for each of 255 recipients (517 bytes) reaches the client', async (t) => {
  // The client read every relay frame but DELIVER and ADMIN_RESPONSE up to 512 bytes, and dropped
  // the connection on a RESULT for more than 252 recipients, which the relay allows.
  const relay = await startRelay({ maxRecipients: 255 });
  t.teardown(() => relay.close());
  const client = await connectClient(relay, { raw: true });
  t.teardown(() => client.close());
  const result = await client.send(Array.from({ length: 255 }, () => generateIdentity().publicKey), 'to 255');
  t.equal(result.outcomes.length, 255);
  t.ok(result.outcomes.every((o) => o.codeName === 'RECIPIENT_OFFLINE'), 'every outcome, in one RESULT');
  t.ok(client.connected, 'still connected');
});

t.test('base58 keys shorter than 43 characters are valid keys everywhere', async (t) => {
  // A usable Ed25519 public key whose encoding starts 00 01 00: 42 characters in base58, always
  // (one '1' for the zero byte, then 41 digits for a number below 2^240 + 2^232 < 58^41; with
  // only 00 01 fixed, 87% of such keys have 42 digits after the '1', which made this test random).
  let key: Uint8Array;
  for (;;) {
    key = randomBytes(32);
    key[0] = 0; key[1] = 1; key[2] = 0;
    try { ed25519.Point.fromBytes(key); } catch { continue; }
    if (!isUnusableKey(key)) break;
  }
  const text = encodeKey(key);
  t.equal(text.length, 42);
  t.same(Buffer.from(decodeKey(text)), Buffer.from(key));
  t.same(Buffer.from(parseRelayAddress(`pulltab://${text}@127.0.0.1:2652`).relayKey), Buffer.from(key));
  t.match(DOC, 'a key starting\n`00 01 00` is 42 characters');
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const client = await connectClient(relay, { raw: true });
  t.teardown(() => client.close());
  t.equal((await client.send([text], 'to a short key', { store: true })).outcomes[0].codeName, 'STORED');
});

t.test('identity files are the JSON object section 8.1 describes, mode 0600', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const identity = generateIdentity();
  const path = join(dir, 'id.key');
  writeIdentityFile(path, identity);
  t.equal(statSync(path).mode & 0o777, 0o600);
  const record = JSON.parse(readFileSync(path, 'utf8'));
  t.same(Object.keys(record), ['type', 'publicKey', 'secretKey']);
  t.equal(record.type, 'pulltab-ed25519-identity');
  t.equal(record.publicKey, encodeKey(identity.publicKey));
  t.equal(Buffer.from(decodeKey(record.secretKey)).toString('hex'), Buffer.from(identity.secretKey).toString('hex'), 'the 32-byte seed in base58');
  // Written by hand as the document says: no publicKey, no indentation, an extra member.
  const hand = join(dir, 'hand.key');
  writeFileSync(hand, JSON.stringify({ type: 'pulltab-ed25519-identity', secretKey: record.secretKey, comment: 'x' }), { mode: 0o600 });
  t.same(Buffer.from(readIdentityFile(hand).publicKey), Buffer.from(identity.publicKey));
  const wrong = join(dir, 'wrong.key');
  writeFileSync(wrong, JSON.stringify({ type: 'pulltab-ed25519-identity', secretKey: record.secretKey, publicKey: encodeKey(generateIdentity().publicKey) }));
  t.throws(() => readIdentityFile(wrong), /does not match/);
  t.match(DOC, '"type": "pulltab-ed25519-identity"');
});

