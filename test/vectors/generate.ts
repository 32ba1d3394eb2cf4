// Regenerates test/vectors/seal-1.json and seal-8.json from fixed keys and a fixed random
// stream. Run from the repository root:
//
//   node --import @tapjs/typescript/import test/vectors/generate.ts
//
// Each vector is computed twice: by referenceSeal below, a direct transcription of the spec
// (docs/PROTOCOL.md, "Sealed messages") using only @noble primitives, and by sealMessage
// from src/crypto/seal.ts (node:crypto). The script refuses to write a vector the two
// disagree on. test/seal.test.ts imports buildVector and checks the files are current.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { chacha20poly1305, xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { identityFromSecret } from '../../src/crypto/keys.js';
import { sealMessage } from '../../src/crypto/seal.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const concat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

/** A `random` for sealMessage that hands out `stream` in order and insists on exact use. */
export function streamRandom(stream: Uint8Array): { random: (n: number) => Uint8Array; remaining: () => number } {
  let pos = 0;
  return {
    random: (n: number) => {
      if (pos + n > stream.length) throw new Error('random stream exhausted');
      const out = stream.slice(pos, pos + n);
      pos += n;
      return out;
    },
    remaining: () => stream.length - pos,
  };
}

export interface ReferenceRecipient {
  x25519Public: Uint8Array;
  ephemeralSecret: Uint8Array;
  ephemeralPublic: Uint8Array;
  sharedSecret: Uint8Array;
  wrapKey: Uint8Array;
  wrappedKey: Uint8Array;
}

export interface ReferenceSeal {
  messageId: Uint8Array;
  messageKey: Uint8Array;
  bodyNonce: Uint8Array;
  signatureInput: Uint8Array;
  signature: Uint8Array;
  inner: Uint8Array;
  body: Uint8Array;
  recipients: ReferenceRecipient[];
}

/** The spec, step by step, with @noble only (no code shared with src/crypto/seal.ts). */
export function referenceSeal(
  senderSecret: Uint8Array,
  recipients: Uint8Array[],
  plaintext: Uint8Array,
  random: (n: number) => Uint8Array,
): ReferenceSeal {
  const sender = ed25519.getPublicKey(senderSecret);
  const messageId = random(16);
  const messageKey = random(32);
  const bodyNonce = random(24);
  const recipientBlock = concat(Uint8Array.of(recipients.length), ...recipients);
  const signatureInput = concat(ascii('pulltab/seal/v1/signature'), messageId, sender, recipientBlock, plaintext);
  const signature = ed25519.sign(signatureInput, senderSecret);
  const inner = concat(Uint8Array.of(0x01), sender, messageId, recipientBlock, signature, plaintext);
  const body = concat(bodyNonce, xchacha20poly1305(messageKey, bodyNonce).encrypt(inner));
  const wrapped = recipients.map((recipient): ReferenceRecipient => {
    const ephemeralSecret = random(32);
    const ephemeralPublic = x25519.getPublicKey(ephemeralSecret);
    const x25519Public = ed25519.utils.toMontgomery(recipient);
    const sharedSecret = x25519.getSharedSecret(ephemeralSecret, x25519Public);
    const wrapKey = hkdf(sha256, sharedSecret, ascii('pulltab/seal/v1/wrap'), concat(ephemeralPublic, recipient), 32);
    const header = concat(Uint8Array.of(0x01), ephemeralPublic);
    const wrappedKey = concat(header, chacha20poly1305(wrapKey, new Uint8Array(12), header).encrypt(messageKey));
    return { x25519Public, ephemeralSecret, ephemeralPublic, sharedSecret, wrapKey, wrappedKey };
  });
  return { messageId, messageKey, bodyNonce, signatureInput, signature, inner, body, recipients: wrapped };
}

export interface SealVectorFile {
  description: string;
  randomUse: string;
  senderSecretKey: string;
  senderPublicKey: string;
  recipients: { secretKey: string; publicKey: string }[];
  random: string;
  plaintext: string;
  expected: { messageId: string; wrappedKeys: string[]; body: string };
  intermediate: {
    messageKey: string;
    bodyNonce: string;
    signatureInput: string;
    signature: string;
    inner: string;
    recipients: { x25519Public: string; ephemeralSecret: string; ephemeralPublic: string; sharedSecret: string; wrapKey: string }[];
  };
}

const seed = (label: string): Uint8Array => sha256(ascii(`pulltab/seal/vectors/${label}`));

/** Bytes of the fixed random stream: SHA-256("pulltab/seal/vectors/random/<n>/<j>") for j = 0, 1, ... */
function fixedStream(recipientCount: number, length: number): Uint8Array {
  const blocks: Uint8Array[] = [];
  for (let j = 0; blocks.length * 32 < length; j++) blocks.push(seed(`random/${recipientCount}/${j}`));
  return concat(...blocks).slice(0, length);
}

function fixedPlaintext(recipientCount: number): Uint8Array {
  if (recipientCount === 1) return ascii('Hello from Pulltab: one sealed body, one recipient.');
  // 300 bytes that include 0x00 and 0xff.
  return Uint8Array.from({ length: 300 }, (_, i) => (i * 37 + 11) & 0xff);
}

export function buildVector(recipientCount: number): SealVectorFile {
  const senderSecret = seed('sender');
  const recipientSecrets = Array.from({ length: recipientCount }, (_, i) => seed(`recipient/${i}`));
  const recipients = recipientSecrets.map((s) => ed25519.getPublicKey(s));
  const plaintext = fixedPlaintext(recipientCount);
  const stream = fixedStream(recipientCount, 16 + 32 + 24 + 32 * recipientCount);

  const ref = referenceSeal(senderSecret, recipients, plaintext, streamRandom(stream).random);
  const fromNode = streamRandom(stream);
  const sealed = sealMessage(identityFromSecret(senderSecret), recipients, plaintext, { random: fromNode.random });
  const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));
  if (
    fromNode.remaining() !== 0 ||
    !same(sealed.messageId, ref.messageId) ||
    !same(sealed.body, ref.body) ||
    sealed.recipients.some((r, i) => !same(r.wrappedKey, ref.recipients[i]!.wrappedKey) || !same(r.recipient, recipients[i]!))
  ) {
    throw new Error(`sealMessage and the reference disagree on the ${recipientCount}-recipient vector`);
  }

  return {
    description:
      `Pulltab sealed message, ${recipientCount} recipient(s). Seal plaintext from the sender to the recipients (in this order) ` +
      'with random(n) drawing from `random`; the result must equal `expected` byte for byte. All values are hex.',
    randomUse:
      'random(n) returns the next n bytes of `random`, in this order: messageId (16), messageKey (32), bodyNonce (24), ' +
      'then for each recipient in list order its ephemeral X25519 secret (32). The stream is used up exactly.',
    senderSecretKey: hex(senderSecret),
    senderPublicKey: hex(ed25519.getPublicKey(senderSecret)),
    recipients: recipientSecrets.map((s, i) => ({ secretKey: hex(s), publicKey: hex(recipients[i]!) })),
    random: hex(stream),
    plaintext: hex(plaintext),
    expected: {
      messageId: hex(ref.messageId),
      wrappedKeys: ref.recipients.map((r) => hex(r.wrappedKey)),
      body: hex(ref.body),
    },
    intermediate: {
      messageKey: hex(ref.messageKey),
      bodyNonce: hex(ref.bodyNonce),
      signatureInput: hex(ref.signatureInput),
      signature: hex(ref.signature),
      inner: hex(ref.inner),
      recipients: ref.recipients.map((r) => ({
        x25519Public: hex(r.x25519Public),
        ephemeralSecret: hex(r.ephemeralSecret),
        ephemeralPublic: hex(r.ephemeralPublic),
        sharedSecret: hex(r.sharedSecret),
        wrapKey: hex(r.wrapKey),
      })),
    },
  };
}

export const VECTOR_RECIPIENT_COUNTS = [1, 8] as const;
export const vectorPath = (recipientCount: number): string =>
  join(dirname(fileURLToPath(import.meta.url)), `seal-${recipientCount}.json`);

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  for (const n of VECTOR_RECIPIENT_COUNTS) {
    writeFileSync(vectorPath(n), JSON.stringify(buildVector(n), null, 2) + '\n');
    console.log(`wrote ${vectorPath(n)}`);
  }
}
