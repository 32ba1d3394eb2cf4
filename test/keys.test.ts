import t from 'tap';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  decodeKey, encodeKey, generateIdentity, loadOrCreateIdentityFile, nobleEd25519, readIdentityFile,
  Signer, verifySignature, writeIdentityFile, KeyFormatError,
} from '../src/crypto/keys.js';

t.test('node:crypto and @noble/curves agree on Ed25519', async (t) => {
  for (let i = 0; i < 20; i++) {
    const id = generateIdentity();
    const message = new Uint8Array(i * 7).map((_, j) => (j * 31 + i) & 0xff);
    const nodeSig = new Signer(id).sign(message);
    const nobleSig = nobleEd25519.sign(message, id.secretKey);
    t.same(Buffer.from(nodeSig), Buffer.from(nobleSig), 'Ed25519 signatures are deterministic and identical');
    t.ok(verifySignature(id.publicKey, message, nobleSig));
    t.ok(nobleEd25519.verify(nodeSig, message, id.publicKey));
    const bad = Uint8Array.from(nodeSig);
    bad[i % 64] ^= 1;
    t.notOk(verifySignature(id.publicKey, message, bad));
    t.notOk(nobleEd25519.verify(bad, message, id.publicKey));
  }
});

t.test('verifySignature is false, never a throw, on malformed input', async (t) => {
  t.notOk(verifySignature(new Uint8Array(31), new Uint8Array(1), new Uint8Array(64)));
  t.notOk(verifySignature(new Uint8Array(32), new Uint8Array(1), new Uint8Array(63)));
  t.notOk(verifySignature(new Uint8Array(32).fill(0xff), new Uint8Array(1), new Uint8Array(64)));
});

t.test('base58 keys round-trip and reject wrong lengths', async (t) => {
  const id = generateIdentity();
  t.same(decodeKey(encodeKey(id.publicKey)), id.publicKey);
  t.throws(() => decodeKey('abc'), KeyFormatError);
  t.throws(() => decodeKey('0OIl'), KeyFormatError);
});

t.test('identity files are written 0600 and read back', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pulltab-keys-'));
  const path = join(dir, 'sub', 'id.json');
  const id = generateIdentity();
  writeIdentityFile(path, id);
  t.equal(statSync(path).mode & 0o777, 0o600);
  t.same(readIdentityFile(path).publicKey, id.publicKey);
  t.throws(() => writeIdentityFile(path, id), 'never overwrites an identity');
  t.same(loadOrCreateIdentityFile(path).publicKey, id.publicKey, 'reuses an existing identity');
  const created = loadOrCreateIdentityFile(join(dir, 'new.json'));
  t.equal(statSync(join(dir, 'new.json')).mode & 0o777, 0o600);
  t.same(readIdentityFile(join(dir, 'new.json')).secretKey, created.secretKey);
  t.throws(() => readIdentityFile(join(dir, 'missing.json')), /no identity file/);
});
