// Ed25519 identity keys: generation, the base58 text form, identity files, and the
// signing and verification the handshake needs.
//
// Keys are generated and encoded with @noble/curves. Signing and verification on the relay
// use node:crypto, which verifies about ten times faster than noble on this hardware;
// test/keys.test.ts checks that the two agree.
//
// Verification is strict RFC 8032 (not ZIP-215): node:crypto (OpenSSL) already refuses
// S >= L and a non-canonical R (it compares R's bytes with the canonical encoding it
// computes), but takes any 32 bytes that decode as a key, small-order and non-canonical ones
// included; verifySignature refuses those (unusable-keys.ts) itself.
import { createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ed25519 } from '@noble/curves/ed25519.js';
import { base58 } from '@scure/base';
import { isUnusableKey } from './unusable-keys.js';
import { KeyCache } from './key-cache.js';
import { keyIdOf } from './key-id.js';

export const PUBLIC_KEY_LENGTH = 32;
export const SECRET_KEY_LENGTH = 32;
export const SIGNATURE_LENGTH = 64;

// DER prefix that turns a raw 32-byte Ed25519 seed into PKCS#8 for node:crypto.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** An Ed25519 identity: the 32-byte seed and its 32-byte public key. */
export interface Identity {
  readonly secretKey: Uint8Array;
  readonly publicKey: Uint8Array;
}

export class KeyFormatError extends Error {
  override name = 'KeyFormatError';
}

export function generateIdentity(): Identity {
  const secretKey = ed25519.utils.randomSecretKey();
  return { secretKey, publicKey: ed25519.getPublicKey(secretKey) };
}

export function identityFromSecret(secretKey: Uint8Array): Identity {
  if (secretKey.length !== SECRET_KEY_LENGTH) throw new KeyFormatError(`secret key must be ${SECRET_KEY_LENGTH} bytes`);
  return { secretKey, publicKey: ed25519.getPublicKey(secretKey) };
}

/** The text form of a public key used everywhere a person sees one: base58 (Bitcoin alphabet). */
export function encodeKey(key: Uint8Array): string {
  return base58.encode(key);
}

/**
 * Returns key if it can be someone's public key; throws KeyFormatError for a small-order or
 * non-canonical encoding (unusable-keys.ts), which no secret key stands behind. Clients call it
 * on every recipient and relay key they are given; decodeKey alone accepts these keys, so that
 * an administrator can still name one (to empty its mailbox).
 */
export function requireUsableKey(key: Uint8Array, what = 'key'): Uint8Array {
  if (isUnusableKey(key)) {
    throw new KeyFormatError(`${what} ${encodeKey(key)} is not a usable Ed25519 public key (a small-order or non-canonical point: no one holds its secret key)`);
  }
  return key;
}

/** Parses a base58 public key, insisting on exactly 32 bytes. */
export function decodeKey(text: string): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = base58.decode(text.trim());
  } catch {
    throw new KeyFormatError(`not a base58 key: ${JSON.stringify(text.slice(0, 64))}`);
  }
  if (bytes.length !== PUBLIC_KEY_LENGTH) {
    throw new KeyFormatError(`a key is ${PUBLIC_KEY_LENGTH} bytes; ${JSON.stringify(text.slice(0, 64))} decodes to ${bytes.length}`);
  }
  return bytes;
}

const IDENTITY_FILE_TYPE = 'pulltab-ed25519-identity';

/** Writes an identity file with mode 0600 (created so, never briefly world-readable). */
export function writeIdentityFile(path: string, identity: Identity): void {
  mkdirSync(dirname(path), { recursive: true });
  const text = JSON.stringify({
    type: IDENTITY_FILE_TYPE,
    publicKey: encodeKey(identity.publicKey),
    secretKey: base58.encode(identity.secretKey),
  }, null, 2) + '\n';
  writeFileSync(path, text, { mode: 0o600, flag: 'wx' });
  chmodSync(path, 0o600);
}

export function readIdentityFile(path: string): Identity {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new KeyFormatError(`no identity file at ${path}`);
    if (code) throw new KeyFormatError(`cannot read identity file ${path}: ${code}`);
    throw new KeyFormatError(`identity file ${path} is not JSON`);
  }
  const record = parsed as { type?: unknown; secretKey?: unknown; publicKey?: unknown };
  if (record?.type !== IDENTITY_FILE_TYPE || typeof record.secretKey !== 'string') {
    throw new KeyFormatError(`${path} is not a pulltab identity file`);
  }
  let secret: Uint8Array;
  try {
    secret = base58.decode(record.secretKey);
  } catch {
    throw new KeyFormatError(`${path}: secretKey is not base58`);
  }
  const identity = identityFromSecret(secret);
  if (typeof record.publicKey === 'string' && record.publicKey !== encodeKey(identity.publicKey)) {
    throw new KeyFormatError(`${path}: publicKey does not match secretKey`);
  }
  return identity;
}

/** Reads the identity at path, or creates one there (mode 0600) when none exists yet. */
export function loadOrCreateIdentityFile(path: string): Identity {
  if (existsSync(path)) return readIdentityFile(path);
  const identity = generateIdentity();
  writeIdentityFile(path, identity);
  return identity;
}

/** A signer backed by node:crypto; the private KeyObject is built once per identity. */
export class Signer {
  readonly publicKey: Uint8Array;
  readonly #key: KeyObject;
  constructor(identity: Identity) {
    this.publicKey = identity.publicKey;
    this.#key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, identity.secretKey]), format: 'der', type: 'pkcs8' });
  }
  sign(message: Uint8Array): Uint8Array {
    return nodeSign(null, message, this.#key);
  }
}

/**
 * Verifies an Ed25519 signature with node:crypto, strictly (see the top of this file). Never
 * throws: a malformed or unusable key is false. An unusable key still costs one verification
 * (against a stand-in key, result ignored), so the handshake does the same work on every path.
 */
export function verifySignature(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== PUBLIC_KEY_LENGTH || signature.length !== SIGNATURE_LENGTH) return false;
  const usable = !isUnusableKey(publicKey);
  try {
    const verified = nodeVerify(null, message, usable ? publicKeyObject(publicKey) : standInKey(), signature);
    return usable && verified;
  } catch {
    return false;
  }
}

let standIn: KeyObject | null = null;
/** Any valid key will do: what it verifies is never used. */
function standInKey(): KeyObject {
  return (standIn ??= publicKeyObject(ed25519.getPublicKey(new Uint8Array(SECRET_KEY_LENGTH).fill(1))));
}

// Building a KeyObject costs about as much as a verification; JWK import is the cheapest
// form (a public JWK has no `d`, so every Node takes it), and a bounded LRU serves clients
// that verify the same senders again and again.
const publicKeyCache = new KeyCache<KeyObject>();

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  return publicKeyCache.getOrMake(keyIdOf(publicKey), () =>
    createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.length).toString('base64url') }, format: 'jwk' }));
}

/** TEST-ONLY: the verification-key cache, to check that it stays bounded. */
export const __verifyKeyCache: { readonly size: number; readonly capacity: number } = publicKeyCache;

/**
 * Reference signing and verification with @noble/curves, used by tests to cross-check node:crypto.
 * zip215: false is noble's strict RFC 8032 mode (canonical A and R, S < L, A not of small order).
 */
export const nobleEd25519 = {
  sign: (message: Uint8Array, secretKey: Uint8Array): Uint8Array => ed25519.sign(message, secretKey),
  verify: (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean => {
    try {
      return ed25519.verify(signature, message, publicKey, { zip215: false });
    } catch {
      return false;
    }
  },
};
