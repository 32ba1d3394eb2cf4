// The handshake's frames and transcript. Pure: no sockets, no timers, no key material kept.
//
//   relay  → client  SERVER_HELLO   magic "PTAB" | minVersion | maxVersion | relayKey | relayNonce
//   client → relay   CLIENT_HELLO   version | flags | clientKey | clientNonce | clientSig
//   relay  → client  SERVER_WELCOME status u16 | version | retryAfterMs u32 | limits | relaySig
//
// Both signatures cover the transcript, so each side proves it holds its private key for
// this very exchange (fresh nonces from both) and, under TLS, for this very channel (the
// tls-exporter value of RFC 9266: a man in the middle who terminates TLS toward each side has
// two channels with two different values, and neither signature verifies on the other).
// Version 2's transcript also holds everything negotiated: the relay's version range, the
// client's version and flags; the relay's signature covers every welcome field before it.
import {
  CLIENT_HELLO_LENGTH, FrameType, KEY_LENGTH, NONCE_LENGTH, SERVER_HELLO_LENGTH, SERVER_HELLO_MAGIC,
  SERVER_WELCOME_LENGTH, SIGNATURE_LENGTH,
} from './constants.js';
import { encodeFrame } from './frames.js';

export const CLIENT_SIGNATURE_CONTEXT = Buffer.from('pulltab handshake v2 client\0', 'ascii');
export const RELAY_SIGNATURE_CONTEXT = Buffer.from('pulltab handshake v2 relay\0', 'ascii');
export const MAX_CHANNEL_BINDING_LENGTH = 64;
/** RFC 9266 tls-exporter: this label, an empty context, 32 bytes (TLS 1.3 only). */
export const CHANNEL_BINDING_LABEL = 'EXPORTER-Channel-Binding';
export const CHANNEL_BINDING_LENGTH = 32;

/** A TLS connection as far as the channel binding needs it: node:tls's TLSSocket has this method. */
export interface KeyingMaterialExporter {
  exportKeyingMaterial(length: number, label: string, context: Buffer): Buffer;
}

/** The channel binding of an established TLS 1.3 connection (RFC 9266 tls-exporter), which both transcripts hold. */
export function channelBindingOf(tls: KeyingMaterialExporter): Buffer {
  return tls.exportKeyingMaterial(CHANNEL_BINDING_LENGTH, CHANNEL_BINDING_LABEL, Buffer.alloc(0));
}

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

/**
 * What the relay tells an authenticated client about its limits, so the client can refuse
 * locally what the relay would refuse. All zero in a refusal (the key proved nothing, or may
 * not connect: its policy is none of its business).
 */
export interface WelcomeLimits {
  /** Largest SEND body this key may send (its policy's, capped by the relay's). */
  maxPayloadBytes: number;
  /** Most recipients per SEND (1..255). */
  maxRecipients: number;
  /** Longest TTL of a stored message it sends. */
  maxTtlSeconds: number;
  /** The TTL a stored message gets when the SEND says 0. */
  defaultTtlSeconds: number;
  /** Stored deliveries the relay leaves unacknowledged on a connection before it waits for ACKs. */
  inflightWindow: number;
  /** Silence after which the relay PINGs, and how long it then waits before IDLE_TIMEOUT. */
  pingIntervalMs: number;
  pingTimeoutMs: number;
}

export const NO_LIMITS: WelcomeLimits = {
  maxPayloadBytes: 0, maxRecipients: 0, maxTtlSeconds: 0, defaultTtlSeconds: 0, inflightWindow: 0, pingIntervalMs: 0, pingTimeoutMs: 0,
};

export interface ServerWelcome {
  status: number;
  version: number;
  retryAfterMs: number;
  limits: WelcomeLimits;
  signature: Buffer;
}

/** Offset of the relay's signature in a SERVER_WELCOME payload: it signs every byte before it. */
const WELCOME_SIGNED_LENGTH = SERVER_WELCOME_LENGTH - SIGNATURE_LENGTH; // 32

export function encodeServerHello(hello: ServerHello): Buffer {
  const payload = Buffer.allocUnsafe(SERVER_HELLO_LENGTH);
  SERVER_HELLO_MAGIC.copy(payload, 0);
  payload[4] = hello.minVersion;
  payload[5] = hello.maxVersion;
  payload.set(hello.relayKey, 6);
  payload.set(hello.relayNonce, 6 + KEY_LENGTH);
  return encodeFrame(FrameType.SERVER_HELLO, payload);
}

/** Later versions may append fields; a version-2 reader ignores bytes past its layout. */
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

/**
 * The signed part of a SERVER_WELCOME: status u16 | version u8 | retryAfterMs u32 |
 * maxPayloadBytes u32 | maxRecipients u8 | maxTtlSeconds u32 | defaultTtlSeconds u32 |
 * inflightWindow u32 | pingIntervalMs u32 | pingTimeoutMs u32 (32 bytes).
 */
export function welcomeSignedFields(status: number, version: number, retryAfterMs: number, limits: WelcomeLimits): Buffer {
  const out = Buffer.allocUnsafe(WELCOME_SIGNED_LENGTH);
  out.writeUInt16BE(status, 0);
  out[2] = version;
  out.writeUInt32BE(u32(retryAfterMs), 3);
  out.writeUInt32BE(u32(limits.maxPayloadBytes), 7);
  out[11] = Math.min(limits.maxRecipients, 255);
  out.writeUInt32BE(u32(limits.maxTtlSeconds), 12);
  out.writeUInt32BE(u32(limits.defaultTtlSeconds), 16);
  out.writeUInt32BE(u32(limits.inflightWindow), 20);
  out.writeUInt32BE(u32(limits.pingIntervalMs), 24);
  out.writeUInt32BE(u32(limits.pingTimeoutMs), 28);
  return out;
}

/** Settings may exceed a u32 (a TTL of centuries): the welcome says 0xffffffff, which is as good as unlimited. */
function u32(value: number): number {
  return Math.max(0, Math.min(value, 0xffffffff));
}

/** A whole SERVER_WELCOME frame: the signed fields, then the signature over them (relaySignedBytes). */
export function encodeServerWelcome(signedFields: Buffer, signature: Uint8Array): Buffer {
  const payload = Buffer.allocUnsafe(SERVER_WELCOME_LENGTH);
  signedFields.copy(payload, 0);
  payload.set(signature, WELCOME_SIGNED_LENGTH);
  return encodeFrame(FrameType.SERVER_WELCOME, payload);
}

/** Later versions may append fields after the signature; this version ignores them. */
export function parseServerWelcome(buf: Buffer, start: number, end: number): ServerWelcome | null {
  if (end - start < SERVER_WELCOME_LENGTH) return null;
  return {
    status: buf.readUInt16BE(start),
    version: buf[start + 2],
    retryAfterMs: buf.readUInt32BE(start + 3),
    limits: {
      maxPayloadBytes: buf.readUInt32BE(start + 7),
      maxRecipients: buf[start + 11],
      maxTtlSeconds: buf.readUInt32BE(start + 12),
      defaultTtlSeconds: buf.readUInt32BE(start + 16),
      inflightWindow: buf.readUInt32BE(start + 20),
      pingIntervalMs: buf.readUInt32BE(start + 24),
      pingTimeoutMs: buf.readUInt32BE(start + 28),
    },
    signature: Buffer.from(buf.subarray(start + WELCOME_SIGNED_LENGTH, start + SERVER_WELCOME_LENGTH)),
  };
}

export interface TranscriptInput {
  relayKey: Uint8Array;
  relayNonce: Uint8Array;
  /** The version range of the relay's SERVER_HELLO. */
  minVersion: number;
  maxVersion: number;
  clientKey: Uint8Array;
  clientNonce: Uint8Array;
  /** The version and flags of the CLIENT_HELLO. */
  version: number;
  flags: number;
  /** TLS channel binding (tls-exporter, 32 bytes); empty on plain TCP. */
  channelBinding?: Uint8Array | null;
}

/**
 * relayKey | relayNonce | minVersion u8 | maxVersion u8 | clientKey | clientNonce | version u8 |
 * flags u8 | bindingLength u8 | binding: 133 bytes on plain TCP, 165 under TLS.
 */
export function transcript(input: TranscriptInput): Buffer {
  const binding = input.channelBinding ?? new Uint8Array(0);
  if (binding.length > MAX_CHANNEL_BINDING_LENGTH) throw new RangeError('channel binding too long');
  const out = Buffer.allocUnsafe(2 * KEY_LENGTH + 2 * NONCE_LENGTH + 5 + binding.length);
  let o = 0;
  out.set(input.relayKey, o); o += KEY_LENGTH;
  out.set(input.relayNonce, o); o += NONCE_LENGTH;
  out[o++] = input.minVersion;
  out[o++] = input.maxVersion;
  out.set(input.clientKey, o); o += KEY_LENGTH;
  out.set(input.clientNonce, o); o += NONCE_LENGTH;
  out[o++] = input.version;
  out[o++] = input.flags;
  out[o++] = binding.length;
  out.set(binding, o);
  return out;
}

/** What the client signs: CLIENT_SIGNATURE_CONTEXT | transcript. */
export function clientSignedBytes(t: Buffer): Buffer {
  return Buffer.concat([CLIENT_SIGNATURE_CONTEXT, t]);
}

/** What the relay signs: RELAY_SIGNATURE_CONTEXT | transcript | the welcome's 32 signed bytes (welcomeSignedFields). */
export function relaySignedBytes(t: Buffer, welcomeFields: Buffer): Buffer {
  return Buffer.concat([RELAY_SIGNATURE_CONTEXT, t, welcomeFields]);
}

/** The highest version both sides support, or 0 when they share none. */
export function chooseVersion(relayMin: number, relayMax: number, clientMin: number, clientMax: number): number {
  const top = Math.min(relayMax, clientMax);
  return top >= Math.max(relayMin, clientMin) ? top : 0;
}
