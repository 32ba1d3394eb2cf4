// The 32-byte strings that are never a usable Ed25519 public key, though they decode (or an
// implementation may decode them) as points: the small-order points, and the non-canonical
// encodings. docs/PROTOCOL.md ("Unusable keys") lists them; the handshake, the relay's SEND
// check, sealMessage and the client library all refuse exactly this set.
//
// Why each is refused:
//  - A small-order key A (8·A = identity) has no secret key behind it, and a constant
//    signature R = A, S = 0 verifies under the cofactorless equation for every message with
//    probability 1/order (always for the identity): anyone could log in as it.
//  - A non-canonical encoding is a second name for a point (y ≥ p, or x = 0 with the sign
//    bit set). RFC 8032 §5.1.3 rejects them; node:crypto (OpenSSL) accepts them as keys.
//
// The check is a Set lookup on the latin1 string of the key, the form the router already
// makes of every recipient (keyIdOf), so it costs the relay one hash probe per recipient.
import { keyIdOf } from './key-id.js';

/** The eight points of order dividing 8, canonically encoded (identity, order 2, 4, 4, 8 × 4). */
const SMALL_ORDER_HEX = [
  '0100000000000000000000000000000000000000000000000000000000000000', // identity (0, 1)
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // order 2 (0, -1)
  '0000000000000000000000000000000000000000000000000000000000000000', // order 4 (+sqrt(-1), 0)
  '0000000000000000000000000000000000000000000000000000000000000080', // order 4 (-sqrt(-1), 0)
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', // order 8
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85', // order 8
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a', // order 8
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa', // order 8
] as const;

/** y = p + k (k = 0..18, every 255-bit value ≥ p = 2^255 - 19), little-endian, sign bit clear. */
function nonCanonicalY(k: number): Buffer {
  const b = Buffer.alloc(32, 0xff);
  b[0] = 0xed + k; // p's low byte is 0xed; 0xed + 18 = 0xff, so no carry
  b[31] = 0x7f;
  return b;
}

function withSignBit(b: Buffer): Buffer {
  const c = Buffer.from(b);
  c[31] |= 0x80;
  return c;
}

function build(): Set<string> {
  const keys: Buffer[] = SMALL_ORDER_HEX.map((h) => Buffer.from(h, 'hex'));
  // x = 0 happens only at y = 1 and y = -1; with the sign bit set those are non-canonical.
  keys.push(withSignBit(Buffer.from(SMALL_ORDER_HEX[0], 'hex')), withSignBit(Buffer.from(SMALL_ORDER_HEX[1], 'hex')));
  for (let k = 0; k <= 18; k++) {
    const y = nonCanonicalY(k);
    keys.push(y, withSignBit(y));
  }
  return new Set(keys.map(keyIdOf));
}

/** The latin1 strings of every unusable key: 8 small-order + 2 signed-zero-x + 38 with y ≥ p. */
export const UNUSABLE_KEY_IDS: ReadonlySet<string> = build();

/**
 * The second byte of every unusable key is one of these four (0x00: identity, order 4;
 * 0xff: order 2, y ≥ p; 0xe8 and 0x17: order 8), so a key whose second byte is anything
 * else, as 252 of 256 random keys', is usable without making its string. Checked against
 * the whole set when the module loads.
 */
const SECOND_BYTES = new Uint8Array(256);
for (const b of [0x00, 0xff, 0xe8, 0x17]) SECOND_BYTES[b] = 1;
for (const id of UNUSABLE_KEY_IDS) {
  if (SECOND_BYTES[id.charCodeAt(1)] !== 1) throw new Error('unusable-keys: the second-byte filter misses a key');
}

/** True for a small-order or non-canonical 32-byte key (see above). */
export function isUnusableKey(key: Uint8Array): boolean {
  if (key.length !== 32 || SECOND_BYTES[key[1]!] !== 1) return false;
  return UNUSABLE_KEY_IDS.has(keyIdOf(key));
}
