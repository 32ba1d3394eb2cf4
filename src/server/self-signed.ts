// A self-signed certificate for the relay's TLS listener, made without running a program.
//
// Clients do not trust the certificate: they pin the relay's Ed25519 key, which signs the
// handshake transcript together with the TLS channel binding (docs/PROTOCOL.md §1.1). The
// certificate only has to let TLS 1.3 run, so a minimal one will do: X.509 v3, an ECDSA P-256
// key (every TLS 1.3 stack supports it, and OpenSSL signs with it quickly, which matters for
// handshakes per second), subject = issuer = CN "pulltab relay", no extensions, valid from a
// day ago until 9999-12-31 (RFC 5280 §4.1.2.5: "no well-defined expiration date").
//
// Node has no X.509 writer, so this file holds the few DER encoders the certificate needs
// (test/tls.test.ts parses the result with node:crypto's X509Certificate and uses it in a
// real TLS handshake). Written once per data directory, never on a per-message path.
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export interface CertificatePair {
  /** PEM text of the certificate. */
  cert: string;
  /** PEM text of the private key (PKCS#8). */
  key: string;
}

/** Makes a new key pair and a self-signed certificate for it. */
export function createSelfSigned(commonName = 'pulltab relay', now = new Date()): CertificatePair {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const name = seq(set(seq(oid(OID_COMMON_NAME), utf8(commonName))));
  const notBefore = new Date(now.getTime() - 24 * 3600 * 1000);
  const serial = randomBytes(16);
  serial[0] &= 0x7f; // a positive INTEGER (RFC 5280: serials are positive, at most 20 bytes)
  serial[0] |= 0x01; // and never with a leading zero byte to strip
  const tbs = seq(
    explicit(0, integer(Buffer.from([2]))), // version v3
    integer(serial),
    ECDSA_SHA256,
    name,
    seq(time(notBefore), generalizedTime('99991231235959Z')),
    name,
    spki,
  );
  // node:crypto's ECDSA signature is DER (r, s), the form X.509 carries.
  const signature = sign('sha256', tbs, privateKey);
  const der = seq(tbs, ECDSA_SHA256, bitString(signature));
  return { cert: pem('CERTIFICATE', der), key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

/**
 * The certificate and key at these paths, created once (key mode 0600, never briefly readable
 * by others) when neither exists. Both or neither must exist: one without the other is an error
 * rather than a silent replacement of a key someone may rely on.
 */
export function loadOrCreateSelfSigned(certPath: string, keyPath: string): CertificatePair & { created: boolean } {
  const haveCert = existsSync(certPath);
  const haveKey = existsSync(keyPath);
  if (haveCert && haveKey) return { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8'), created: false };
  if (haveCert || haveKey) {
    throw new Error(`found ${haveCert ? certPath : keyPath} without ${haveCert ? keyPath : certPath}: remove it to have a new self-signed certificate made`);
  }
  const pair = createSelfSigned();
  mkdirSync(dirname(keyPath), { recursive: true });
  writeFileSync(keyPath, pair.key, { mode: 0o600, flag: 'wx' });
  chmodSync(keyPath, 0o600);
  writeFileSync(certPath, pair.cert, { mode: 0o644, flag: 'wx' });
  return { ...pair, created: true };
}

// ---------------------------------------------------------------------------------------
// DER (ITU-T X.690): tag | length | contents. Only what the certificate above needs.

const OID_COMMON_NAME = '2.5.4.3';
const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'));

function tlv(tag: number, contents: Buffer): Buffer {
  const n = contents.length;
  let length: Buffer;
  if (n < 0x80) length = Buffer.from([n]);
  else if (n < 0x100) length = Buffer.from([0x81, n]);
  else if (n < 0x10000) length = Buffer.from([0x82, n >> 8, n & 0xff]);
  else throw new RangeError('DER value too long for this encoder');
  return Buffer.concat([Buffer.from([tag]), length, contents]);
}

function seq(...items: Buffer[]): Buffer {
  return tlv(0x30, Buffer.concat(items));
}

function set(...items: Buffer[]): Buffer {
  return tlv(0x31, Buffer.concat(items));
}

function explicit(n: number, inner: Buffer): Buffer {
  return tlv(0xa0 | n, inner);
}

/** A non-negative INTEGER from its big-endian bytes (a 0x00 is prefixed when the top bit is set). */
function integer(bytes: Buffer): Buffer {
  return tlv(0x02, bytes[0] & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes);
}

function bitString(bytes: Buffer): Buffer {
  return tlv(0x03, Buffer.concat([Buffer.from([0]), bytes]));
}

function utf8(text: string): Buffer {
  return tlv(0x0c, Buffer.from(text, 'utf8'));
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out = [40 * parts[0] + parts[1]];
  for (const part of parts.slice(2)) {
    const digits = [part & 0x7f];
    for (let v = Math.floor(part / 128); v > 0; v = Math.floor(v / 128)) digits.unshift((v & 0x7f) | 0x80);
    out.push(...digits);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime up to 2049, GeneralizedTime after (RFC 5280 §4.1.2.5). */
function time(date: Date): Buffer {
  const iso = date.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z'; // YYYYMMDDHHMMSSZ
  return date.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(iso.slice(2), 'ascii')) : generalizedTime(iso);
}

function generalizedTime(text: string): Buffer {
  return tlv(0x18, Buffer.from(text, 'ascii'));
}

function pem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g)!.join('\n');
  return `-----BEGIN ${label}-----\n${lines}\n-----END ${label}-----\n`;
}
