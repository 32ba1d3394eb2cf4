// Client-to-client sealed messages: one body encrypted once for everyone, plus one small
// wrapped key per recipient. docs/PROTOCOL.md ("Sealed messages") is the byte-level spec and
// test/vectors/seal-*.json are its test vectors; a change here is a change there.
//
//   wrappedKey (81 bytes) = 0x01 | ephemeral X25519 public (32) | ChaCha20-Poly1305(messageKey) (32) | tag (16)
//   body                  = nonce (24) | XChaCha20-Poly1305(messageKey, nonce, inner) | tag (16)
//   inner                 = 0x01 | sender (32) | messageId (16) | n (1) | recipients (32·n) | signature (64) | plaintext
//   signature             = Ed25519(sender, "pulltab/seal/v1/signature" | messageId | sender | n | recipients | plaintext)
//
// The relay sees only the recipient keys, the wrapped keys and the body; nothing in a wrapped
// key or the body names the sender. The signed recipient list stops a recipient from
// re-wrapping the message key for someone else as if the sender had written to them.
//
// Speed: the hot operations use node:crypto (Ed25519 through keys.ts, X25519 key generation and
// agreement, HMAC-SHA256 for HKDF, IETF ChaCha20-Poly1305). XChaCha20-Poly1305 is built from
// noble's HChaCha20 plus node's ChaCha20-Poly1305. test/seal.test.ts checks each against @noble
// byte for byte, and the vectors. What is left is the public-key work itself: a seal is one
// Ed25519 signature plus one X25519 key generation and agreement per recipient, an open one
// X25519 agreement plus one Ed25519 verification; in OpenSSL these are ~70% of the time (the
// verification alone half of an open). Everything built from a key that comes back (the
// recipient's X25519 form, the identity's own keys) is cached.
import {
  createCipheriv, createDecipheriv, createHmac, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, randomBytes,
  timingSafeEqual, type KeyObject,
} from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import { hchacha, xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { Signer, verifySignature, type Identity } from './keys.js';
import { UNUSABLE_KEY_IDS } from './unusable-keys.js';
import { KeyCache } from './key-cache.js';
import { keyIdOf } from './key-id.js';

// ---------------------------------------------------------------------------------------
// Format constants

export const SEAL_VERSION = 0x01;
export const MAX_RECIPIENTS = 255;
export const MESSAGE_ID_LENGTH = 16;
export const MESSAGE_KEY_LENGTH = 32;
export const BODY_NONCE_LENGTH = 24;
export const TAG_LENGTH = 16;
const KEY_LENGTH = 32;
const SIG_LENGTH = 64;

/** version (1) + ephemeral public key (32) + encrypted message key (32) + tag (16). */
export const WRAPPED_KEY_LENGTH = 1 + KEY_LENGTH + MESSAGE_KEY_LENGTH + TAG_LENGTH; // 81

/** Inner header before the recipient list: version (1) + sender (32) + message id (16) + count (1). */
const INNER_FIXED_HEADER = 1 + KEY_LENGTH + MESSAGE_ID_LENGTH + 1; // 50

/**
 * How many bytes the body is longer than the plaintext, not counting the recipient list:
 * nonce (24) + tag (16) + version (1) + sender (32) + message id (16) + count (1) + signature (64) = 154.
 * body.length = plaintext.length + SEAL_OVERHEAD + SEAL_PER_RECIPIENT_OVERHEAD × recipients.
 */
export const SEAL_OVERHEAD = BODY_NONCE_LENGTH + TAG_LENGTH + INNER_FIXED_HEADER + SIG_LENGTH; // 154
/** Each recipient adds its 32-byte key to the (encrypted) recipient list in the body. */
export const SEAL_PER_RECIPIENT_OVERHEAD = KEY_LENGTH;

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
/** HKDF-SHA256 salt of the wrap key: ASCII "pulltab/seal/v1/wrap" (20 bytes). */
export const WRAP_CONTEXT = ascii('pulltab/seal/v1/wrap');
/** Prefix of the signed message: ASCII "pulltab/seal/v1/signature" (25 bytes). */
export const SIGNATURE_CONTEXT = ascii('pulltab/seal/v1/signature');

// ---------------------------------------------------------------------------------------
// Public types

export interface SealedMessage {
  /** 16 random bytes, also inside the body; recipients see the same id. */
  messageId: Uint8Array;
  /** In the order given to sealMessage. */
  recipients: { recipient: Uint8Array; wrappedKey: Uint8Array }[];
  /** Shared by every recipient. */
  body: Uint8Array;
}

export interface OpenedMessage {
  messageId: Uint8Array;
  /** The sender's Ed25519 key; equal to the relay-authenticated sender. */
  sender: Uint8Array;
  /** Every recipient the sender addressed, in the sender's order (signed). */
  recipients: Uint8Array[];
  body: Uint8Array;
}

export type SealErrorCode =
  | 'MALFORMED'
  | 'NOT_FOR_ME'
  | 'TAMPERED'
  | 'BAD_SIGNATURE'
  | 'NOT_A_RECIPIENT'
  | 'SENDER_MISMATCH'
  | 'TOO_MANY_RECIPIENTS';

export class SealError extends Error {
  override name = 'SealError';
  readonly code: SealErrorCode;
  constructor(code: SealErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

export interface SealOptions {
  /**
   * Source of randomness, for test vectors. Called in this order: message id (16), message
   * key (32), body nonce (24), then one ephemeral X25519 secret (32) per recipient in list
   * order. Must return exactly n bytes. Defaults to node:crypto randomBytes.
   */
  random?: (n: number) => Uint8Array;
}

// ---------------------------------------------------------------------------------------
// Primitives

const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;
// "expand 32-byte k" as little-endian words (RFC 8439 §2.3).
const SIGMA = Uint32Array.of(0x61707865, 0x3320646e, 0x79622d32, 0x6b206574);
const ZERO_NONCE_12 = new Uint8Array(12);
const EMPTY = new Uint8Array(0);

/** IETF ChaCha20-Poly1305 (RFC 8439) with node:crypto: returns prefix | ciphertext | tag. */
function chachaSeal(key: Uint8Array, nonce12: Uint8Array, aad: Uint8Array, prefix: Uint8Array, parts: Uint8Array[]): Uint8Array {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce12, { authTagLength: TAG_LENGTH });
  let plainLength = 0;
  for (const p of parts) plainLength += p.length;
  if (aad.length > 0) cipher.setAAD(aad, { plaintextLength: plainLength });
  const length = prefix.length + plainLength + TAG_LENGTH;
  const out = new Uint8Array(length);
  out.set(prefix, 0);
  let o = prefix.length;
  for (const p of parts) {
    const c = cipher.update(p);
    out.set(c, o);
    o += c.length;
  }
  const f = cipher.final();
  out.set(f, o);
  o += f.length;
  out.set(cipher.getAuthTag(), o);
  return out;
}

/** Opens ciphertext | tag with node:crypto; null when authentication fails. */
function chachaOpen(key: Uint8Array, nonce12: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | null {
  if (sealed.length < TAG_LENGTH) return null;
  const ctEnd = sealed.length - TAG_LENGTH;
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce12, { authTagLength: TAG_LENGTH });
  decipher.setAuthTag(sealed.subarray(ctEnd));
  if (aad.length > 0) decipher.setAAD(aad, { plaintextLength: ctEnd });
  const plain = decipher.update(sealed.subarray(0, ctEnd));
  try {
    decipher.final();
  } catch {
    plain.fill(0);
    return null;
  }
  return new Uint8Array(plain.buffer, plain.byteOffset, plain.length);
}

/** XChaCha20 subkey and IETF nonce: HChaCha20(key, nonce[0..16]) and 0x00000000 | nonce[16..24]. */
function xchachaToIetf(key: Uint8Array, nonce24: Uint8Array): { subkey: Uint8Array; nonce12: Uint8Array } {
  // Fresh copies: aligned, and on a little-endian host their Uint32 views are the LE words.
  const k32 = new Uint32Array(new Uint8Array(key).buffer);
  const n32 = new Uint32Array(new Uint8Array(nonce24.subarray(0, 16)).buffer);
  const out = new Uint32Array(8);
  hchacha(SIGMA, k32, n32, out);
  k32.fill(0);
  const nonce12 = new Uint8Array(12);
  nonce12.set(nonce24.subarray(16, 24), 4);
  return { subkey: new Uint8Array(out.buffer), nonce12 };
}

/** XChaCha20-Poly1305 seal, node:crypto for the bulk: returns nonce | ciphertext | tag. */
function xchachaSealNode(key: Uint8Array, nonce24: Uint8Array, parts: Uint8Array[]): Uint8Array {
  const { subkey, nonce12 } = xchachaToIetf(key, nonce24);
  try {
    return chachaSeal(subkey, nonce12, EMPTY, nonce24, parts);
  } finally {
    subkey.fill(0);
  }
}

/** Opens nonce | ciphertext | tag (node:crypto); null when authentication fails. */
function xchachaOpenNode(key: Uint8Array, body: Uint8Array): Uint8Array | null {
  const { subkey, nonce12 } = xchachaToIetf(key, body.subarray(0, BODY_NONCE_LENGTH));
  try {
    return chachaOpen(subkey, nonce12, EMPTY, body.subarray(BODY_NONCE_LENGTH));
  } finally {
    subkey.fill(0);
  }
}

/** Reference XChaCha20-Poly1305 with @noble/ciphers (big-endian hosts, and the cross-check test). */
function xchachaSealNoble(key: Uint8Array, nonce24: Uint8Array, parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const p of parts) length += p.length;
  const plain = new Uint8Array(length);
  let o = 0;
  for (const p of parts) {
    plain.set(p, o);
    o += p.length;
  }
  const ct = xchacha20poly1305(key, nonce24).encrypt(plain);
  const out = new Uint8Array(BODY_NONCE_LENGTH + ct.length);
  out.set(nonce24, 0);
  out.set(ct, BODY_NONCE_LENGTH);
  return out;
}

function xchachaOpenNoble(key: Uint8Array, body: Uint8Array): Uint8Array | null {
  try {
    return xchacha20poly1305(key, body.subarray(0, BODY_NONCE_LENGTH)).decrypt(body.subarray(BODY_NONCE_LENGTH));
  } catch {
    return null;
  }
}

const bodySeal = LITTLE_ENDIAN ? xchachaSealNode : xchachaSealNoble;
const bodyOpen = LITTLE_ENDIAN ? xchachaOpenNode : xchachaOpenNoble;

const b64u = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('base64url');

// DER prefix that turns a raw 32-byte X25519 secret into PKCS#8 (RFC 8410) for node:crypto.
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

/**
 * A node:crypto X25519 private key from 32 raw bytes (clamped by X25519 itself), as PKCS#8,
 * the form every Node takes. (A JWK needs an `x` matching `d`, which Node 26 checks, and
 * computing it is the very base-point multiplication the import does.) PKCS#8 import costs
 * ~10x a JWK's on Node 20 (OpenSSL 3.0's decoder), so the hot paths avoid it: an identity's
 * key is imported once (x25519SecretOf), and fresh ephemerals are generated (newEphemeral).
 */
function x25519PrivateKey(secret: Uint8Array): KeyObject {
  const der = Buffer.allocUnsafe(X25519_PKCS8_PREFIX.length + KEY_LENGTH);
  X25519_PKCS8_PREFIX.copy(der, 0);
  der.set(secret, X25519_PKCS8_PREFIX.length);
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

function x25519PublicKey(pub: Uint8Array): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: b64u(pub) }, format: 'jwk' });
}

function x25519PublicBytes(pub: KeyObject): Uint8Array {
  const x = pub.export({ format: 'jwk' }).x;
  if (typeof x !== 'string') throw new Error('X25519 public key export failed');
  return new Uint8Array(Buffer.from(x, 'base64url'));
}

interface Ephemeral {
  privateKey: KeyObject;
  publicBytes: Uint8Array;
}

/**
 * A fresh ephemeral X25519 key pair from OpenSSL's generator (node:crypto's randomBytes draws
 * from the same one). As fast as importing 32 random bytes, and it needs no import at all.
 *
 * The generator encodes the public key (JWK) itself: never export a freshly generated key
 * afterwards. On Node 20 that export can deadlock the process for good: it holds the key's lock
 * while it allocates, a garbage collection then may free the generator's job, and the job's
 * destructor takes the same lock (main thread in ExportJWKEdKey → GC → ~KeyGenJob →
 * pthread_mutex_lock, seen in CI; a loop of generate-then-export hangs within seconds under
 * --max-semi-space-size=1, this form does not; Node 24 does not hang either way).
 * test/seal-gc.test.ts runs the seal under that pressure.
 */
function newEphemeral(): Ephemeral {
  // @types/node has no overload for a JWK public key beside a KeyObject private key.
  const generate = generateKeyPairSync as unknown as (type: 'x25519', options: { publicKeyEncoding: { format: 'jwk' } }) =>
    { privateKey: KeyObject; publicKey: { x?: unknown } };
  const { privateKey, publicKey } = generate('x25519', { publicKeyEncoding: { format: 'jwk' } });
  if (typeof publicKey.x !== 'string') throw new Error('X25519 key generation gave no public key');
  return { privateKey, publicBytes: new Uint8Array(Buffer.from(publicKey.x, 'base64url')) };
}

/** The ephemeral key pair of a given secret (options.random: test vectors). */
function ephemeralFromSecret(secret: Uint8Array): Ephemeral {
  const privateKey = x25519PrivateKey(secret);
  return { privateKey, publicBytes: x25519PublicBytes(createPublicKey(privateKey)) };
}

/**
 * The wrap key: HKDF-SHA256(ikm = X25519 shared secret, salt = WRAP_CONTEXT, info = eph | recipient, 32).
 * RFC 5869 written out with node:crypto HMAC (half the time of @noble/hashes' hkdf here); one
 * output block: PRK = HMAC(salt, ikm), OKM = HMAC(PRK, info | 0x01). test/seal.test.ts checks it
 * against @noble/hashes.
 */
function wrapKeyFor(shared: Uint8Array, ephemeralPublic: Uint8Array, recipient: Uint8Array): Uint8Array {
  const prk = createHmac('sha256', WRAP_CONTEXT).update(shared).digest();
  const info = Buffer.allocUnsafe(2 * KEY_LENGTH + 1);
  info.set(ephemeralPublic, 0);
  info.set(recipient, KEY_LENGTH);
  info[2 * KEY_LENGTH] = 0x01;
  const okm = createHmac('sha256', prk).update(info).digest();
  prk.fill(0);
  return new Uint8Array(okm.buffer, okm.byteOffset, okm.length);
}

// ---------------------------------------------------------------------------------------
// Caches

interface IdentityState {
  signer?: Signer;
  x25519?: KeyObject;
}
/** Per-Identity node:crypto keys: the Ed25519 signer and the X25519 form of the secret key. */
const identityState = new WeakMap<Identity, IdentityState>();

function stateOf(identity: Identity): IdentityState {
  let state = identityState.get(identity);
  if (!state) {
    state = {};
    identityState.set(identity, state);
  }
  return state;
}

function signerOf(identity: Identity): Signer {
  const state = stateOf(identity);
  return (state.signer ??= new Signer(identity));
}

function x25519SecretOf(identity: Identity): KeyObject {
  const state = stateOf(identity);
  if (!state.x25519) {
    const secret = ed25519.utils.toMontgomerySecret(identity.secretKey);
    state.x25519 = x25519PrivateKey(secret);
    secret.fill(0);
  }
  return state.x25519;
}

/**
 * Recipient Ed25519 key → X25519 public KeyObject, by keyIdOf(recipient). The conversion (a
 * point decompression in @noble/curves, then a JWK import) costs ~0.3 ms; a hit costs a Map
 * lookup. Bounded LRU: a client writing to many peers keeps the ones it writes to most.
 */
const recipientCache = new KeyCache<KeyObject>();

function convertRecipient(recipient: Uint8Array): KeyObject {
  return x25519PublicKey(ed25519.utils.toMontgomery(recipient)); // throws on a key not on the curve
}

function recipientX25519(recipient: Uint8Array, id: string = keyIdOf(recipient)): KeyObject {
  return recipientCache.getOrMake(id, () => convertRecipient(recipient));
}

// ---------------------------------------------------------------------------------------
// Wrapping

/**
 * Wraps a message key for one recipient with an ephemeral X25519 key pair (a given secret's,
 * or a fresh one). id is keyIdOf(recipient), when the caller has it already.
 */
function wrapMessageKey(messageKey: Uint8Array, recipient: Uint8Array, ephemeralSecret?: Uint8Array, id?: string): Uint8Array {
  let recipientKey: KeyObject;
  try {
    recipientKey = recipientX25519(recipient, id);
  } catch {
    throw new SealError('MALFORMED', 'a recipient key is not a valid Ed25519 public key');
  }
  const ephemeral = ephemeralSecret ? ephemeralFromSecret(ephemeralSecret) : newEphemeral();
  const ephemeralPublic = ephemeral.publicBytes;
  let shared: Uint8Array;
  try {
    shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: recipientKey }); // rejects an all-zero result
  } catch {
    throw new SealError('MALFORMED', 'a recipient key is a low-order point');
  }
  const wrapKey = wrapKeyFor(shared, ephemeralPublic, recipient);
  shared.fill(0);
  const header = new Uint8Array(1 + KEY_LENGTH);
  header[0] = SEAL_VERSION;
  header.set(ephemeralPublic, 1);
  const wrapped = chachaSeal(wrapKey, ZERO_NONCE_12, header, header, [messageKey]);
  wrapKey.fill(0);
  return wrapped;
}

/** Recovers the message key from a wrapped key, or throws MALFORMED / NOT_FOR_ME. */
function unwrapMessageKey(me: Identity, wrappedKey: Uint8Array): Uint8Array {
  if (!(wrappedKey instanceof Uint8Array) || wrappedKey.length !== WRAPPED_KEY_LENGTH) {
    throw new SealError('MALFORMED', `a wrapped key is ${WRAPPED_KEY_LENGTH} bytes`);
  }
  if (wrappedKey[0] !== SEAL_VERSION) throw new SealError('MALFORMED', `unknown wrapped key version ${wrappedKey[0]}`);
  const header = wrappedKey.subarray(0, 1 + KEY_LENGTH);
  const ephemeralPublic = wrappedKey.subarray(1, 1 + KEY_LENGTH);
  let shared: Uint8Array;
  try {
    shared = diffieHellman({ privateKey: x25519SecretOf(me), publicKey: x25519PublicKey(ephemeralPublic) });
  } catch {
    throw new SealError('NOT_FOR_ME', 'key agreement failed');
  }
  const wrapKey = wrapKeyFor(shared, ephemeralPublic, me.publicKey);
  shared.fill(0);
  const messageKey = chachaOpen(wrapKey, ZERO_NONCE_12, header, wrappedKey.subarray(1 + KEY_LENGTH));
  wrapKey.fill(0);
  if (!messageKey) throw new SealError('NOT_FOR_ME', 'the wrapped key is not for this identity');
  return messageKey;
}

// ---------------------------------------------------------------------------------------
// Inner plaintext

/** context | messageId | sender | n | recipients | plaintext */
function signatureInput(messageId: Uint8Array, sender: Uint8Array, recipientBlock: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const ctx = SIGNATURE_CONTEXT.length;
  const input = new Uint8Array(ctx + MESSAGE_ID_LENGTH + KEY_LENGTH + recipientBlock.length + plaintext.length);
  input.set(SIGNATURE_CONTEXT, 0);
  input.set(messageId, ctx);
  input.set(sender, ctx + MESSAGE_ID_LENGTH);
  input.set(recipientBlock, ctx + MESSAGE_ID_LENGTH + KEY_LENGTH);
  input.set(plaintext, ctx + MESSAGE_ID_LENGTH + KEY_LENGTH + recipientBlock.length);
  return input;
}

/** n (1) | recipients (32·n) */
function recipientBlockOf(recipients: Uint8Array[]): Uint8Array {
  const block = new Uint8Array(1 + KEY_LENGTH * recipients.length);
  block[0] = recipients.length;
  recipients.forEach((r, i) => block.set(r, 1 + KEY_LENGTH * i));
  return block;
}

/** version | sender | messageId — the part of the inner header before the recipient block. */
function innerPrefix(sender: Uint8Array, messageId: Uint8Array): Uint8Array {
  const prefix = new Uint8Array(1 + KEY_LENGTH + MESSAGE_ID_LENGTH);
  prefix[0] = SEAL_VERSION;
  prefix.set(sender, 1);
  prefix.set(messageId, 1 + KEY_LENGTH);
  return prefix;
}

interface ParsedInner {
  sender: Uint8Array;
  messageId: Uint8Array;
  recipientBlock: Uint8Array;
  recipients: Uint8Array[];
  signature: Uint8Array;
  plaintext: Uint8Array;
}

/** Parses the decrypted inner plaintext; every length is checked (MALFORMED, never a RangeError). */
function parseInner(inner: Uint8Array): ParsedInner {
  if (inner.length < INNER_FIXED_HEADER) throw new SealError('MALFORMED', 'inner header is truncated');
  if (inner[0] !== SEAL_VERSION) throw new SealError('MALFORMED', `unknown inner version ${inner[0]}`);
  const n = inner[INNER_FIXED_HEADER - 1]!;
  if (n === 0) throw new SealError('MALFORMED', 'empty recipient list');
  const sigStart = INNER_FIXED_HEADER + KEY_LENGTH * n;
  const bodyStart = sigStart + SIG_LENGTH;
  if (inner.length < bodyStart) throw new SealError('MALFORMED', 'recipient list or signature is truncated');
  const recipients: Uint8Array[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = inner.slice(INNER_FIXED_HEADER + KEY_LENGTH * i, INNER_FIXED_HEADER + KEY_LENGTH * (i + 1));
    const id = keyIdOf(r);
    if (seen.has(id)) throw new SealError('MALFORMED', 'duplicate recipient');
    seen.add(id);
    recipients.push(r);
  }
  return {
    sender: inner.slice(1, 1 + KEY_LENGTH),
    messageId: inner.slice(1 + KEY_LENGTH, 1 + KEY_LENGTH + MESSAGE_ID_LENGTH),
    recipientBlock: inner.subarray(INNER_FIXED_HEADER - 1, sigStart),
    recipients,
    signature: inner.subarray(sigStart, bodyStart),
    plaintext: inner.subarray(bodyStart),
  };
}

function keysEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

// ---------------------------------------------------------------------------------------
// API

/**
 * Seals plaintext from sender to recipients (1..255 distinct Ed25519 public keys; the
 * sender may be one of them). Throws SealError TOO_MANY_RECIPIENTS over 255, MALFORMED for
 * an empty list, a duplicate, or a key that is not a usable Ed25519 public key (not on the
 * curve, or small-order or non-canonical: unusable-keys.ts).
 * Pass the same Identity object each time: its node:crypto keys are cached per object.
 */
export function sealMessage(
  sender: Identity,
  recipients: Uint8Array[],
  plaintext: Uint8Array,
  options: SealOptions = {},
): SealedMessage {
  if (recipients.length > MAX_RECIPIENTS) {
    throw new SealError('TOO_MANY_RECIPIENTS', `at most ${MAX_RECIPIENTS} recipients, got ${recipients.length}`);
  }
  if (recipients.length === 0) throw new SealError('MALFORMED', 'no recipients');
  const ids: string[] = [];
  // A linear scan beats a Set for the usual handful of recipients; a Set for long lists.
  const seen = recipients.length > 16 ? new Set<string>() : null;
  for (const r of recipients) {
    if (!(r instanceof Uint8Array) || r.length !== KEY_LENGTH) throw new SealError('MALFORMED', `a recipient key is ${KEY_LENGTH} bytes`);
    const id = keyIdOf(r);
    // The set the relay refuses (BAD_RECIPIENT). The key conversion or the key agreement
    // below would refuse these too, but with a vaguer reason; this names it.
    if (UNUSABLE_KEY_IDS.has(id)) throw new SealError('MALFORMED', 'a recipient key is a small-order or non-canonical Ed25519 point');
    if (seen ? seen.has(id) : ids.includes(id)) throw new SealError('MALFORMED', 'duplicate recipient');
    seen?.add(id);
    ids.push(id);
  }
  if (!(plaintext instanceof Uint8Array)) throw new TypeError('plaintext must be a Uint8Array');
  const random = options.random;
  const draw = (n: number): Uint8Array => {
    const bytes = random!(n);
    if (!(bytes instanceof Uint8Array) || bytes.length !== n) throw new TypeError(`options.random(${n}) must return ${n} bytes`);
    return new Uint8Array(bytes);
  };
  let messageId: Uint8Array, messageKey: Uint8Array, nonce: Uint8Array;
  if (random) {
    messageId = draw(MESSAGE_ID_LENGTH);
    messageKey = draw(MESSAGE_KEY_LENGTH);
    nonce = draw(BODY_NONCE_LENGTH);
  } else {
    // One draw instead of three: each randomBytes call costs a few microseconds of locking.
    const bytes = randomBytes(MESSAGE_ID_LENGTH + MESSAGE_KEY_LENGTH + BODY_NONCE_LENGTH);
    messageId = bytes.slice(0, MESSAGE_ID_LENGTH);
    messageKey = new Uint8Array(bytes.buffer, bytes.byteOffset + MESSAGE_ID_LENGTH, MESSAGE_KEY_LENGTH);
    nonce = new Uint8Array(bytes.buffer, bytes.byteOffset + MESSAGE_ID_LENGTH + MESSAGE_KEY_LENGTH, BODY_NONCE_LENGTH);
  }

  const recipientBlock = recipientBlockOf(recipients);
  const signature = signerOf(sender).sign(signatureInput(messageId, sender.publicKey, recipientBlock, plaintext));
  const body = bodySeal(messageKey, nonce, [innerPrefix(sender.publicKey, messageId), recipientBlock, signature, plaintext]);

  const wrapped = recipients.map((recipient, i) => ({
    recipient: new Uint8Array(recipient),
    wrappedKey: wrapMessageKey(messageKey, recipient, random ? draw(KEY_LENGTH) : undefined, ids[i]),
  }));
  messageKey.fill(0);
  return { messageId, recipients: wrapped, body };
}

/**
 * Opens a sealed message addressed to `me`. relaySender is the sender key the relay
 * authenticated. Checks, in order (the first failure is thrown as a SealError):
 * wrapped key layout (MALFORMED), unwrap (NOT_FOR_ME), body length (MALFORMED), body AEAD
 * (TAMPERED), inner layout (MALFORMED), signature (BAD_SIGNATURE), me in the recipient list
 * (NOT_A_RECIPIENT), inner sender = relaySender (SENDER_MISMATCH).
 */
export function openMessage(me: Identity, relaySender: Uint8Array, wrappedKey: Uint8Array, body: Uint8Array): OpenedMessage {
  const messageKey = unwrapMessageKey(me, wrappedKey);
  try {
    if (!(body instanceof Uint8Array) || body.length < BODY_NONCE_LENGTH + TAG_LENGTH) {
      throw new SealError('MALFORMED', 'body is shorter than nonce and tag');
    }
    const inner = bodyOpen(messageKey, body);
    if (!inner) throw new SealError('TAMPERED', 'body failed authentication');
    return checkInner(me, relaySender, inner);
  } finally {
    messageKey.fill(0);
  }
}

function checkInner(me: Identity, relaySender: Uint8Array, inner: Uint8Array): OpenedMessage {
  const p = parseInner(inner);
  if (!verifySignature(p.sender, signatureInput(p.messageId, p.sender, p.recipientBlock, p.plaintext), p.signature)) {
    throw new SealError('BAD_SIGNATURE', 'the sender signature does not verify');
  }
  let member = false;
  for (const r of p.recipients) member = keysEqual(r, me.publicKey) || member; // no early exit
  if (!member) throw new SealError('NOT_A_RECIPIENT', 'this identity is not in the signed recipient list');
  if (!(relaySender instanceof Uint8Array) || !keysEqual(p.sender, relaySender)) {
    throw new SealError('SENDER_MISMATCH', 'the signed sender is not the relay-authenticated sender');
  }
  return { messageId: p.messageId, sender: p.sender, recipients: p.recipients, body: p.plaintext };
}

// ---------------------------------------------------------------------------------------
// TEST-ONLY internals. Not part of the API: exported so test/seal.test.ts can build hostile
// messages (forged signatures, re-wrapped keys, garbage inner plaintexts) and cross-check
// the node:crypto XChaCha20-Poly1305 against @noble/ciphers. Do not use in application code.
export const __testing = {
  wrapMessageKey,
  unwrapMessageKey,
  /** nonce | XChaCha20-Poly1305(key, nonce, inner) | tag, as in a body. */
  encryptBody: (key: Uint8Array, nonce24: Uint8Array, inner: Uint8Array): Uint8Array => bodySeal(key, nonce24, [inner]),
  /** The inner plaintext of a body, or null when it does not authenticate. */
  decryptBody: (key: Uint8Array, body: Uint8Array): Uint8Array | null => bodyOpen(key, body),
  xchachaSealNode: (key: Uint8Array, nonce24: Uint8Array, plain: Uint8Array): Uint8Array => xchachaSealNode(key, nonce24, [plain]),
  xchachaOpenNode,
  xchachaSealNoble: (key: Uint8Array, nonce24: Uint8Array, plain: Uint8Array): Uint8Array => xchachaSealNoble(key, nonce24, [plain]),
  xchachaOpenNoble,
  /** Ed25519-signs and assembles an inner plaintext (valid unless the caller edits it). */
  buildInner(sender: Identity, messageId: Uint8Array, recipients: Uint8Array[], plaintext: Uint8Array): Uint8Array {
    const block = recipientBlockOf(recipients);
    const signature = signerOf(sender).sign(signatureInput(messageId, sender.publicKey, block, plaintext));
    const prefix = innerPrefix(sender.publicKey, messageId);
    const inner = new Uint8Array(prefix.length + block.length + SIG_LENGTH + plaintext.length);
    inner.set(prefix, 0);
    inner.set(block, prefix.length);
    inner.set(signature, prefix.length + block.length);
    inner.set(plaintext, prefix.length + block.length + SIG_LENGTH);
    return inner;
  },
  /** The wrap key derivation, to check it against @noble/hashes' HKDF. */
  wrapKeyFor,
  /** The recipient-key cache and its uncached conversion, to check that they agree and it stays bounded. */
  recipientCache: recipientCache as { readonly size: number; readonly capacity: number },
  recipientX25519,
  convertRecipient,
  /** A fresh ephemeral key pair, and the pair of a given secret (the PKCS#8 import). */
  newEphemeral,
  ephemeralFromSecret,
  /** The identity's X25519 secret as a cached KeyObject. */
  x25519SecretOf,
};
