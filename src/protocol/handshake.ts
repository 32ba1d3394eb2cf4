// The handshake's frames and transcript. Pure: no sockets, no timers, no key material kept.
//
//   relay  → client  SERVER_HELLO   magic "PTAB" | minVersion | maxVersion | relayKey | relayNonce
//   client → relay   CLIENT_HELLO   version | flags | clientKey | clientNonce | clientSig
//   relay  → client  SERVER_WELCOME status u16 | version | retryAfterMs u32 | relaySig
//
// Both signatures cover the transcript, so each side proves it holds its private key for
// this very exchange (fresh nonces from both) and, under TLS, for this very channel.
// The CLIENT_HELLO flags (HelloFlags: the connection's role) are not in the transcript yet:
// a man in the middle could flip SEND_ONLY, making a connection send-only or receiving, but
// could not impersonate either side (docs/PROTOCOL.md §2.2).
import {
  CLIENT_HELLO_LENGTH, FrameType, KEY_LENGTH, NONCE_LENGTH, SERVER_HELLO_LENGTH, SERVER_HELLO_MAGIC,
  SERVER_WELCOME_LENGTH, SIGNATURE_LENGTH,
} from './constants.js';
import { encodeFrame } from './frames.js';

export const CLIENT_SIGNATURE_CONTEXT = Buffer.from('pulltab handshake v1 client\0', 'ascii');
export const RELAY_SIGNATURE_CONTEXT = Buffer.from('pulltab handshake v1 relay\0', 'ascii');
export const MAX_CHANNEL_BINDING_LENGTH = 64;

export interface ServerHello {
  minVersion: number;
  maxVersion: number;
  relayKey: Buffer;
  relayNonce: Buffer;
}

export interface ClientHello {
  version: number;
  /** HelloFlags bits; undefined bits are reserved (sent as 0, ignored by the relay). */
  flags: number;
  clientKey: Buffer;
  clientNonce: Buffer;
  signature: Buffer;
}

export interface ServerWelcome {
  status: number;
  version: number;
  retryAfterMs: number;
  signature: Buffer;
}

export function encodeServerHello(hello: ServerHello): Buffer {
  const payload = Buffer.allocUnsafe(SERVER_HELLO_LENGTH);
  SERVER_HELLO_MAGIC.copy(payload, 0);
  payload[4] = hello.minVersion;
  payload[5] = hello.maxVersion;
  payload.set(hello.relayKey, 6);
  payload.set(hello.relayNonce, 6 + KEY_LENGTH);
  return encodeFrame(FrameType.SERVER_HELLO, payload);
}

/** Later versions may append fields; a v1 reader ignores bytes past the v1 layout. */
export function parseServerHello(buf: Buffer, start: number, end: number): ServerHello | null {
  if (end - start < SERVER_HELLO_LENGTH) return null;
  if (!buf.subarray(start, start + 4).equals(SERVER_HELLO_MAGIC)) return null;
  return {
    minVersion: buf[start + 4],
    maxVersion: buf[start + 5],
    relayKey: Buffer.from(buf.subarray(start + 6, start + 6 + KEY_LENGTH)),
    relayNonce: Buffer.from(buf.subarray(start + 6 + KEY_LENGTH, start + 6 + KEY_LENGTH + NONCE_LENGTH)),
  };
}

export function encodeClientHello(hello: ClientHello): Buffer {
  const payload = Buffer.allocUnsafe(CLIENT_HELLO_LENGTH);
  payload[0] = hello.version;
  payload[1] = hello.flags;
  payload.set(hello.clientKey, 2);
  payload.set(hello.clientNonce, 2 + KEY_LENGTH);
  payload.set(hello.signature, 2 + KEY_LENGTH + NONCE_LENGTH);
  return encodeFrame(FrameType.CLIENT_HELLO, payload);
}

export function parseClientHello(buf: Buffer, start: number, end: number): ClientHello | null {
  if (end - start < CLIENT_HELLO_LENGTH) return null;
  let o = start;
  const version = buf[o++];
  const flags = buf[o++];
  const clientKey = Buffer.from(buf.subarray(o, o + KEY_LENGTH)); o += KEY_LENGTH;
  const clientNonce = Buffer.from(buf.subarray(o, o + NONCE_LENGTH)); o += NONCE_LENGTH;
  const signature = Buffer.from(buf.subarray(o, o + SIGNATURE_LENGTH));
  return { version, flags, clientKey, clientNonce, signature };
}

export function encodeServerWelcome(welcome: ServerWelcome): Buffer {
  const payload = Buffer.allocUnsafe(SERVER_WELCOME_LENGTH);
  payload.writeUInt16BE(welcome.status, 0);
  payload[2] = welcome.version;
  payload.writeUInt32BE(welcome.retryAfterMs >>> 0, 3);
  payload.set(welcome.signature, 7);
  return encodeFrame(FrameType.SERVER_WELCOME, payload);
}

export function parseServerWelcome(buf: Buffer, start: number, end: number): ServerWelcome | null {
  if (end - start < SERVER_WELCOME_LENGTH) return null;
  return {
    status: buf.readUInt16BE(start),
    version: buf[start + 2],
    retryAfterMs: buf.readUInt32BE(start + 3),
    signature: Buffer.from(buf.subarray(start + 7, start + 7 + SIGNATURE_LENGTH)),
  };
}

export interface TranscriptInput {
  relayKey: Uint8Array;
  relayNonce: Uint8Array;
  clientKey: Uint8Array;
  clientNonce: Uint8Array;
  version: number;
  /** TLS channel binding (tls-exporter); empty on plain TCP. */
  channelBinding?: Uint8Array;
}

/** relayKey | relayNonce | clientKey | clientNonce | version u8 | bindingLength u8 | binding */
export function transcript(input: TranscriptInput): Buffer {
  const binding = input.channelBinding ?? new Uint8Array(0);
  if (binding.length > MAX_CHANNEL_BINDING_LENGTH) throw new RangeError('channel binding too long');
  const out = Buffer.allocUnsafe(2 * KEY_LENGTH + 2 * NONCE_LENGTH + 2 + binding.length);
  let o = 0;
  out.set(input.relayKey, o); o += KEY_LENGTH;
  out.set(input.relayNonce, o); o += NONCE_LENGTH;
  out.set(input.clientKey, o); o += KEY_LENGTH;
  out.set(input.clientNonce, o); o += NONCE_LENGTH;
  out[o++] = input.version;
  out[o++] = binding.length;
  out.set(binding, o);
  return out;
}

/** What the client signs: CLIENT_SIGNATURE_CONTEXT | transcript. */
export function clientSignedBytes(t: Buffer): Buffer {
  return Buffer.concat([CLIENT_SIGNATURE_CONTEXT, t]);
}

/** What the relay signs: RELAY_SIGNATURE_CONTEXT | transcript | status u16 | retryAfterMs u32. */
export function relaySignedBytes(t: Buffer, status: number, retryAfterMs: number): Buffer {
  const tail = Buffer.allocUnsafe(6);
  tail.writeUInt16BE(status, 0);
  tail.writeUInt32BE(retryAfterMs >>> 0, 2);
  return Buffer.concat([RELAY_SIGNATURE_CONTEXT, t, tail]);
}

/** The highest version both sides support, or 0 when they share none. */
export function chooseVersion(relayMin: number, relayMax: number, clientMin: number, clientMax: number): number {
  const top = Math.min(relayMax, clientMax);
  return top >= Math.max(relayMin, clientMin) ? top : 0;
}
