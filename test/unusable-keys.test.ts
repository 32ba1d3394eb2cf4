// Small-order and non-canonical Ed25519 keys (issue 12, item 9): no one holds their secret key,
// so the handshake refuses them whatever the signature, a SEND to one is refused with
// BAD_RECIPIENT and nothing is stored, sealMessage refuses the same set, and the client
// library and the CLI refuse them before anything is sent. Real relay on loopback.
//
// The forged signatures are the ones a permissive verifier takes: R = the key with S = 0 (the
// attack as reported), and R = [S]B for a constant S, with the client nonce chosen so that the
// challenge k is 0 (or -1) modulo 8; then [k]A is the identity (or -A) for every small-order A
// and the cofactorless equation [S]B = R + [k]A holds exactly. Each is checked against noble's
// ZIP-215 verifier, so a refusal here is a refusal of a signature that is "valid" under it.
import t from 'tap';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { keyOfId } from '../src/crypto/key-id.js';
import { KeyFormatError, encodeKey, generateIdentity, nobleEd25519, verifySignature, writeIdentityFile } from '../src/crypto/keys.js';
import { sealMessage, SealError } from '../src/crypto/seal.js';
import { UNUSABLE_KEY_IDS, isUnusableKey } from '../src/crypto/unusable-keys.js';
import { AddressError, parseRelayAddress } from '../src/protocol/address.js';
import { Code, FrameType, SendFlags } from '../src/protocol/constants.js';
import { encodeSend, parseResult } from '../src/protocol/frames.js';
import { clientSignedBytes, transcript } from '../src/protocol/handshake.js';
import { connectClient, RawPeer, removeDir, runCli, sleep, startRelay, tempDir, type ForgedHello } from './helpers.js';

const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const P = 2n ** 255n - 19n;

function le32(n: bigint): Buffer {
  const b = Buffer.alloc(32);
  for (let i = 0; i < 32; i++, n >>= 8n) b[i] = Number(n & 0xffn);
  return b;
}

function leInt(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
  return n;
}

/** RFC 8032's challenge k = SHA-512(R | A | M) mod L. */
function challenge(r: Uint8Array, a: Uint8Array, m: Uint8Array): bigint {
  return leInt(sha512(Buffer.concat([r, a, m]))) % L;
}

const ALL = [...UNUSABLE_KEY_IDS].map(keyOfId);

/** The members a permissive (ZIP-215) decoder takes as a point: all of them of small order. */
const FORGEABLE = ALL.filter((key) => {
  try {
    return ed25519.Point.fromBytes(key, true).isSmallOrder();
  } catch {
    return false;
  }
});

/** The eight points of order dividing 8, from a generator of the torsion group. */
function torsionEncodings(): string[] {
  const t8 = ed25519.Point.fromHex('c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a');
  const out: string[] = [];
  let q = ed25519.Point.ZERO;
  for (let i = 0; i < 8; i++, q = q.add(t8)) out.push(Buffer.from(q.toBytes()).toString('hex'));
  return out;
}

interface Forgery {
  label: string;
  r: Buffer;
  s: bigint;
  /** The challenge residue modulo 8 that makes the cofactorless equation hold. */
  kMod8: bigint;
}

function forgeries(key: Buffer): Forgery[] {
  const rs = [0n, 1n, 0xdeadbeefn, L - 1n];
  return [
    { label: 'R = key, S = 0', r: key, s: 0n, kMod8: 7n },
    ...rs.map((s) => ({ label: `R = [${s}]B, S = ${s}`, r: Buffer.from(ed25519.Point.BASE.multiplyUnsafe(s).toBytes()), s, kMod8: 0n })),
  ];
}

/** Searches for a message (via `make`) whose challenge has the residue the forgery needs. */
function grind(key: Buffer, f: Forgery, make: (attempt: number) => Buffer): Buffer {
  for (let i = 0; i < 2000; i++) {
    const m = make(i);
    if (challenge(f.r, key, m) % 8n === f.kMod8) return m;
  }
  throw new Error('no message with the wanted challenge (p = (7/8)^2000)');
}

const signatureOf = (f: Forgery): Buffer => Buffer.concat([f.r, le32(f.s)]);
const zip215Accepts = (sig: Uint8Array, m: Uint8Array, key: Uint8Array): boolean => {
  try {
    return ed25519.verify(sig, m, key, { zip215: true });
  } catch {
    return false;
  }
};

t.test('the set: the 8 small-order points, the 2 signed x = 0 encodings, the 38 with y >= p', async (t) => {
  t.equal(UNUSABLE_KEY_IDS.size, 48);
  const hexes = new Set(ALL.map((k) => k.toString('hex')));
  for (const h of torsionEncodings()) t.ok(hexes.has(h), `small-order ${h}`);
  t.ok(hexes.has('0100000000000000000000000000000000000000000000000000000000000080'), 'identity with the sign bit');
  t.ok(hexes.has('ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff'), 'order 2 with the sign bit');
  for (let k = 0n; k <= 18n; k++) {
    const y = le32(P + k);
    t.ok(hexes.has(y.toString('hex')), `y = p + ${k}`);
    y[31] |= 0x80;
    t.ok(hexes.has(y.toString('hex')), `y = p + ${k}, sign bit set`);
  }
  for (const key of ALL) {
    let strict: ReturnType<typeof ed25519.Point.fromBytes> | null = null;
    try {
      strict = ed25519.Point.fromBytes(key, false);
    } catch { /* non-canonical */ }
    t.ok(strict === null || strict.isSmallOrder(), `${key.toString('hex')}: non-canonical or small-order`);
  }
  t.equal(FORGEABLE.length, 14, 'the small-order points under every encoding a permissive decoder takes');
  for (let i = 0; i < 200; i++) t.notOk(isUnusableKey(generateIdentity().publicKey) ? 'unusable' : null);
});

t.test('verifySignature is strict: forged small-order signatures, S >= L and a non-canonical R are refused', async (t) => {
  for (const key of FORGEABLE) {
    for (const f of forgeries(key)) {
      const m = grind(key, f, (i) => Buffer.from(`message ${i}`));
      const sig = signatureOf(f);
      t.ok(zip215Accepts(sig, m, key), `${key.toString('hex')} ${f.label}: a ZIP-215 verifier takes it`);
      t.notOk(verifySignature(key, m, sig), `${key.toString('hex')} ${f.label}: verifySignature refuses it`);
      t.notOk(nobleEd25519.verify(sig, m, key), 'so does noble in strict mode');
    }
  }
  const id = generateIdentity();
  const { scalar } = ed25519.utils.getExtendedPublicKey(id.secretKey);
  const m = Buffer.from('a message');
  const good = nobleEd25519.sign(m, id.secretKey);
  t.ok(verifySignature(id.publicKey, m, good));
  const sPlusL = Buffer.concat([good.subarray(0, 32), le32(leInt(good.subarray(32)) + L)]);
  t.notOk(verifySignature(id.publicKey, m, sPlusL), 'S + L is refused');
  // A signature with R = a non-canonical encoding of the identity: S = k·a makes
  // [S]B - [k]A the identity, so it verifies under ZIP-215 but not under RFC 8032.
  for (const r of [le32(P + 1n), Buffer.from('0100000000000000000000000000000000000000000000000000000000000080', 'hex')]) {
    const k = challenge(r, id.publicKey, m);
    const sig = Buffer.concat([r, le32((k * scalar) % L)]);
    t.ok(zip215Accepts(sig, m, id.publicKey), `R ${r.toString('hex')}: a ZIP-215 verifier takes it`);
    t.notOk(verifySignature(id.publicKey, m, sig), 'verifySignature refuses a non-canonical R');
  }
});

t.test('the handshake refuses every unusable key, forged signatures included: AUTH_FAILED', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  let attempts = 0;
  const tryKey = async (key: Buffer, f: Forgery | null): Promise<void> => {
    const peer = new RawPeer(relay.port);
    t.teardown(() => peer.close());
    let forgedAccepted = false;
    const welcome = await peer.handshake(undefined, {
      forge: (hello, version): ForgedHello => {
        if (f === null) return { clientKey: key, clientNonce: randomBytes(32), signature: Buffer.concat([key, Buffer.alloc(32)]) };
        let clientNonce = randomBytes(32);
        // grind returns right after the call that made the matching message: clientNonce is its nonce.
        const m = grind(key, f, () => clientSignedBytes(transcript({
          relayKey: hello.relayKey, relayNonce: hello.relayNonce, minVersion: hello.minVersion, maxVersion: hello.maxVersion, clientKey: key, clientNonce: (clientNonce = randomBytes(32)), version, flags: 0,
        })));
        forgedAccepted = zip215Accepts(signatureOf(f), m, key);
        return { clientKey: key, clientNonce, signature: signatureOf(f) };
      },
    });
    attempts++;
    const what = `${key.toString('hex')} ${f?.label ?? 'R = key, S = 0, any nonce'}`;
    if (f !== null) t.ok(forgedAccepted, `${what}: the forgery is valid under ZIP-215`);
    t.equal(welcome.status, Code.AUTH_FAILED, `${what}: AUTH_FAILED`);
    if (welcome.status === Code.OK) peer.close(); // the forgery got in: do not wait for a close
    else t.ok(await peer.waitClosed(), 'and the connection is closed');
  };
  for (const key of ALL) {
    if (FORGEABLE.some((k) => k.equals(key))) {
      for (const f of forgeries(key)) await tryKey(key, f);
    } else {
      await tryKey(key, null);
    }
  }
  t.equal(relay.stats.handshakesOk, 0, 'no handshake succeeded');
  t.equal(relay.router.sessions.size, 0, 'no unusable key is registered');
  t.equal(attempts, FORGEABLE.length * 5 + (ALL.length - FORGEABLE.length));
  // An honest key still gets in after all that.
  const peer = new RawPeer(relay.port);
  t.teardown(() => peer.close());
  t.equal((await peer.handshake()).status, Code.OK);
});

t.test('a SEND to an unusable key is refused with BAD_RECIPIENT and nothing is stored; sealMessage refuses the same keys', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const bob = await connectClient(relay, { raw: true, reconnect: false });
  t.teardown(() => bob.close());
  let bobGot = 0;
  bob.on('message', () => bobGot++);
  const sender = new RawPeer(relay.port);
  t.teardown(() => sender.close());
  t.equal((await sender.handshake()).status, Code.OK);
  const nextResult = async () => {
    let frame = await sender.next();
    while (frame && frame.type !== FrameType.RESULT) frame = await sender.next();
    return frame ? parseResult(frame.payload, 0, frame.payload.length) : null;
  };
  const me = generateIdentity();
  let seq = 0;
  for (const key of ALL) {
    const hex = key.toString('hex');
    for (const flags of [SendFlags.STORE | SendFlags.RECEIPT, SendFlags.STORE, SendFlags.RECEIPT, 0]) {
      sender.write(encodeSend({ seq: ++seq, flags, ttlSeconds: 0, storageKey: null, recipients: [{ key, wrappedKey: Buffer.alloc(81, 1) }], body: Buffer.from('for no one') }));
      t.same(await nextResult(), { seq, code: Code.BAD_RECIPIENT, outcomes: [] }, `${hex} alone, flags ${flags}: BAD_RECIPIENT`);
    }
    // Beside a usable, connected recipient: the whole message is refused, for both.
    const recipients = [{ key: Buffer.from(bob.identity.publicKey), wrappedKey: Buffer.alloc(0) }, { key, wrappedKey: Buffer.alloc(0) }];
    sender.write(encodeSend({ seq: ++seq, flags: SendFlags.STORE | SendFlags.RECEIPT, ttlSeconds: 0, storageKey: null, recipients, body: Buffer.from('x') }));
    t.same(await nextResult(), { seq, code: Code.BAD_RECIPIENT, outcomes: [] }, `${hex} second of two: BAD_RECIPIENT`);
    let stored = 0;
    relay.store.readEach(key, 0, 10, () => stored++);
    t.equal(stored, 0, `${hex}: nothing in its mailbox`);
    t.throws(() => sealMessage(me, [key], Buffer.from('x')), new SealError('MALFORMED', 'a recipient key is a small-order or non-canonical Ed25519 point'), `${hex}: sealMessage refuses it`);
  }
  await sleep(50);
  t.equal((await relay.store.totals()).count, 0, 'nothing stored at all');
  t.equal(bobGot, 0, 'the usable recipient got none of the refused messages');
});

t.test('the client library and the CLI refuse unusable keys before sending', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const sealed = await connectClient(relay, { reconnect: false });
  const raw = await connectClient(relay, { raw: true, reconnect: false });
  t.teardown(() => Promise.all([sealed.close(), raw.close()]));
  const before = relay.stats.messagesIn;
  for (const key of ALL) {
    for (const client of [sealed, raw]) {
      t.throws(() => client.send([key], 'x'), KeyFormatError, `${key.toString('hex')}: refused by the client`);
      t.throws(() => client.send([encodeKey(key)], 'x'), /is not a usable Ed25519 public key \(a small-order or non-canonical point/);
    }
  }
  await sleep(50);
  t.equal(relay.stats.messagesIn, before, 'nothing reached the relay');

  const relayAddress = relay.address;
  const keyText = relayAddress.slice('pulltab://'.length, relayAddress.indexOf('@'));
  t.throws(() => parseRelayAddress(relayAddress.replace(keyText, encodeKey(ALL[0]))), AddressError, 'an unusable relay key in an address');

  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const keyFile = join(dir, 'me.key');
  writeIdentityFile(keyFile, generateIdentity());
  const identityPoint = encodeKey(Buffer.from('0100000000000000000000000000000000000000000000000000000000000000', 'hex'));
  const result = await runCli(['send', '--relay', relay.address, '--key', keyFile, '--to', identityPoint, 'hello']);
  t.equal(result.code, 2, 'usage error');
  t.match(result.stderr, `send: --to: recipient ${identityPoint} is not a usable Ed25519 public key`);
  await sleep(50);
  t.equal(relay.stats.messagesIn, before, 'the CLI sent nothing either');
});
