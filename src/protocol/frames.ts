// Encoders and decoders for every frame payload. Decoders are total: given any bytes they
// return a value or null (malformed), and never throw. Decoders of hot-path frames work on
// (buf, start, end) so nothing is copied or sliced until the router decides to.
import {
  ACK_LENGTH, Code, DELIVER_FIXED_LENGTH, DeliverFlags, FRAME_HEADER_LENGTH, FrameType, KEY_LENGTH, MAX_REASON_BYTES,
  MAX_WRAPPED_KEY_LENGTH, PING_LENGTH, RESULT_FIXED_LENGTH, SEND_FIXED_LENGTH, SendFlags, STORAGE_KEY_LENGTH,
} from './constants.js';

const TWO_32 = 0x1_0000_0000;

export function writeFrameHeader(target: Buffer, offset: number, type: number, length: number): number {
  target[offset] = type;
  target.writeUInt32BE(length, offset + 1);
  return offset + FRAME_HEADER_LENGTH;
}

/** A whole frame in a new buffer: header and payload. */
export function encodeFrame(type: number, payload: Uint8Array = EMPTY): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + payload.length);
  writeFrameHeader(frame, 0, type, payload.length);
  frame.set(payload, FRAME_HEADER_LENGTH);
  return frame;
}

const EMPTY = new Uint8Array(0);
const NO_BYTES = Buffer.alloc(0);

/** u64 as two u32 halves: ids stay below 2^53, so a Number carries them exactly. */
export function writeU64(target: Buffer, offset: number, value: number): void {
  target.writeUInt32BE(Math.floor(value / TWO_32), offset);
  target.writeUInt32BE(value % TWO_32, offset + 4);
}

export function readU64(buf: Buffer, offset: number): number {
  return buf.readUInt32BE(offset) * TWO_32 + buf.readUInt32BE(offset + 4);
}

// ---------------------------------------------------------------------------------------
// SEND (client → relay)

export interface SendRecipient {
  key: Uint8Array;
  wrappedKey: Uint8Array;
}

export interface SendFields {
  seq: number;
  flags: number;
  ttlSeconds: number;
  storageKey: Uint8Array | null;
  recipients: SendRecipient[];
  body: Uint8Array;
}

/** Encodes a whole SEND frame (header included) in a buffer of its own. */
export function encodeSend(fields: SendFields): Buffer {
  const keys = fields.recipients.map((r) => r.key);
  const wrapped = fields.recipients.map((r) => r.wrappedKey);
  if (keys.length > 255) throw new RangeError('at most 255 recipients');
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + sendPayloadLength(keys.length, wrapped, fields.body.length));
  writeSend(frame, 0, fields.seq, fields.flags, fields.ttlSeconds, fields.storageKey, keys, wrapped, fields.body);
  return frame;
}

/**
 * Writes a whole SEND frame (header included) at target[offset, offset + its length) and
 * returns where it ends. keys[i] is recipient i, wrappedKeys[i] its wrapped message key
 * (wrappedKeys null: none, as raw clients send). The caller sized target with
 * FRAME_HEADER_LENGTH + sendPayloadLength(...); the client library encodes straight into its output buffer with this.
 */
export function writeSend(
  target: Buffer, offset: number, seq: number, flags: number, ttlSeconds: number, storageKey: Uint8Array | null,
  keys: readonly Uint8Array[], wrappedKeys: readonly Uint8Array[] | null, body: Uint8Array,
): number {
  const n = keys.length;
  if (n > 255) throw new RangeError('at most 255 recipients');
  let o = writeFrameHeader(target, offset, FrameType.SEND, sendPayloadLength(n, wrappedKeys, body.length));
  flags &= ~SendFlags.HAS_STORAGE_KEY;
  if (storageKey) flags |= SendFlags.HAS_STORAGE_KEY;
  target.writeUInt32BE(seq >>> 0, o); o += 4;
  target[o++] = flags;
  target.writeUInt32BE(ttlSeconds >>> 0, o); o += 4;
  if (storageKey) {
    if (storageKey.length !== STORAGE_KEY_LENGTH) throw new RangeError(`a storage key is ${STORAGE_KEY_LENGTH} bytes`);
    copyBytes(storageKey, 0, STORAGE_KEY_LENGTH, target, o);
  } else {
    target.writeUInt32BE(0, o); target.writeUInt32BE(0, o + 4); target.writeUInt32BE(0, o + 8); target.writeUInt32BE(0, o + 12);
  }
  o += STORAGE_KEY_LENGTH;
  target[o++] = n;
  for (let i = 0; i < n; i++) {
    const key = keys[i]!;
    if (key.length !== KEY_LENGTH) throw new RangeError(`a recipient key is ${KEY_LENGTH} bytes`);
    copyBytes(key, 0, KEY_LENGTH, target, o); o += KEY_LENGTH;
    const wrapped = wrappedKeys === null ? EMPTY : wrappedKeys[i]!;
    if (wrapped.length > MAX_WRAPPED_KEY_LENGTH) throw new RangeError(`a wrapped key is at most ${MAX_WRAPPED_KEY_LENGTH} bytes`);
    target[o++] = wrapped.length;
    if (wrapped.length > 0) { copyBytes(wrapped, 0, wrapped.length, target, o); o += wrapped.length; }
  }
  copyBytes(body, 0, body.length, target, o);
  return o + body.length;
}

/** A SEND's payload length: n recipients with these wrapped keys (null: none), and the body. */
export function sendPayloadLength(n: number, wrappedKeys: readonly Uint8Array[] | null, bodyLength: number): number {
  let length = SEND_FIXED_LENGTH + n * (KEY_LENGTH + 1) + bodyLength;
  if (wrappedKeys !== null) for (let i = 0; i < n; i++) length += wrappedKeys[i]!.length;
  return length;
}

/**
 * A SEND parsed in place: offsets into the received buffer. recipientOffsets[i] is where
 * recipient i's key starts, for i < recipientCount (a reused view may hold stale offsets past
 * that); its wrapped key length is the byte after the key.
 */
export interface SendView {
  seq: number;
  flags: number;
  ttlSeconds: number;
  /** Offset of the 16-byte storage key, or -1 when the message has none. */
  storageKeyOffset: number;
  recipientCount: number;
  recipientOffsets: number[];
  bodyStart: number;
  bodyEnd: number;
}

/** Reads only the sequence number, so even a malformed SEND can be answered. -1 if too short. */
export function peekSendSeq(buf: Buffer, start: number, end: number): number {
  return end - start >= 4 ? buf.readUInt32BE(start) : -1;
}

/**
 * Parses a SEND payload at buf[start, end). Returns null when the recipient list overruns
 * the payload or the payload is shorter than the fixed part.
 */
export function parseSend(buf: Buffer, start: number, end: number, offsets: number[] = []): SendView | null {
  const view = newSendView(offsets);
  return parseSendInto(buf, start, end, view) ? view : null;
}

export function newSendView(offsets: number[] = []): SendView {
  return { seq: 0, flags: 0, ttlSeconds: 0, storageKeyOffset: -1, recipientCount: 0, recipientOffsets: offsets, bodyStart: 0, bodyEnd: 0 };
}

/** parseSend into a view the caller reuses, so the per-message path allocates nothing here. */
export function parseSendInto(buf: Buffer, start: number, end: number, view: SendView): boolean {
  if (end - start < SEND_FIXED_LENGTH) return false;
  let o = start;
  view.seq = buf.readUInt32BE(o); o += 4;
  const flags = view.flags = buf[o++];
  view.ttlSeconds = buf.readUInt32BE(o); o += 4;
  view.storageKeyOffset = flags & SendFlags.HAS_STORAGE_KEY ? o : -1;
  o += STORAGE_KEY_LENGTH;
  const recipientCount = view.recipientCount = buf[o++];
  // Assigned by index, never truncated: a reused array keeps its storage (no allocation per SEND).
  const offsets = view.recipientOffsets;
  for (let i = 0; i < recipientCount; i++) {
    if (o + KEY_LENGTH + 1 > end) return false;
    offsets[i] = o;
    o += KEY_LENGTH;
    const wrappedLength = buf[o++];
    o += wrappedLength;
    if (o > end) return false;
  }
  view.bodyStart = o;
  view.bodyEnd = end;
  return true;
}

// ---------------------------------------------------------------------------------------
// DELIVER (relay → client)

/** Bytes of DELIVER header (frame header included) in front of the body. */
export function deliverHeaderLength(wrappedKeyLength: number): number {
  return FRAME_HEADER_LENGTH + DELIVER_FIXED_LENGTH + wrappedKeyLength;
}

/**
 * Writes a DELIVER frame header and fixed fields into target at offset; the caller copies
 * in the wrapped key (from wrappedKeyBuf[wStart, wEnd)) and then the body, or sends the
 * body as a separate slice. Returns the offset after the wrapped key.
 */
export function writeDeliverHeader(
  target: Buffer, offset: number, deliveryId: number, flags: number,
  sender: Uint8Array, senderStart: number,
  storageKey: Uint8Array | null, storageKeyStart: number,
  wrappedKey: Uint8Array, wStart: number, wEnd: number,
  bodyLength: number,
): number {
  const wrappedLength = wEnd - wStart;
  let o = writeFrameHeader(target, offset, FrameType.DELIVER, DELIVER_FIXED_LENGTH + wrappedLength + bodyLength);
  writeU64(target, o, deliveryId); o += 8;
  target[o++] = flags;
  copyBytes(sender, senderStart, senderStart + KEY_LENGTH, target, o); o += KEY_LENGTH;
  if (storageKey) {
    copyBytes(storageKey, storageKeyStart, storageKeyStart + STORAGE_KEY_LENGTH, target, o);
  } else {
    // Four word writes: cheaper than fill() for 16 bytes on the per-message path.
    target.writeUInt32BE(0, o); target.writeUInt32BE(0, o + 4); target.writeUInt32BE(0, o + 8); target.writeUInt32BE(0, o + 12);
  }
  o += STORAGE_KEY_LENGTH;
  target[o++] = wrappedLength;
  if (wrappedLength > 0) copyBytes(wrappedKey, wStart, wEnd, target, o);
  return o + wrappedLength;
}

/** Copies source[start, end) into target at offset without making a view when source is a Buffer. */
export function copyBytes(source: Uint8Array, start: number, end: number, target: Uint8Array, offset: number): void {
  // Buffer.copy costs more to call than a short loop costs to run: keys and small bodies are looped.
  if (end - start <= SMALL_COPY) {
    for (let i = start; i < end; i++) target[offset++] = source[i];
  } else if (Buffer.isBuffer(source)) {
    source.copy(target, offset, start, end);
  } else {
    target.set(source.subarray(start, end), offset);
  }
}

const SMALL_COPY = 96;

export interface DeliverFields {
  deliveryId: number;
  flags: number;
  sender: Buffer;
  storageKey: Buffer | null;
  wrappedKey: Buffer;
  body: Buffer;
}

/** Parses a DELIVER payload; the returned buffers are views into buf. */
export function parseDeliver(buf: Buffer, start: number, end: number): DeliverFields | null {
  if (end - start < DELIVER_FIXED_LENGTH) return null;
  let o = start;
  const deliveryId = readU64(buf, o); o += 8;
  const flags = buf[o++];
  const sender = buf.subarray(o, o + KEY_LENGTH); o += KEY_LENGTH;
  const storageKey = flags & DeliverFlags.HAS_STORAGE_KEY ? buf.subarray(o, o + STORAGE_KEY_LENGTH) : null;
  o += STORAGE_KEY_LENGTH;
  const wrappedLength = buf[o++];
  if (o + wrappedLength > end) return null;
  // Raw messages carry no wrapped key: one shared empty buffer instead of a view per delivery.
  const wrappedKey = wrappedLength === 0 ? NO_BYTES : buf.subarray(o, o + wrappedLength); o += wrappedLength;
  return { deliveryId, flags, sender, storageKey, wrappedKey, body: buf.subarray(o, end) };
}

/** Encodes a whole DELIVER frame (tests and the mailbox drain use this; live routing writes in place). */
export function encodeDeliver(fields: DeliverFields): Buffer {
  const { deliveryId, flags, sender, storageKey, wrappedKey, body } = fields;
  const frame = Buffer.allocUnsafe(deliverHeaderLength(wrappedKey.length) + body.length);
  const o = writeDeliverHeader(frame, 0, deliveryId, (flags & ~DeliverFlags.HAS_STORAGE_KEY) | (storageKey ? DeliverFlags.HAS_STORAGE_KEY : 0), sender, 0, storageKey, 0, wrappedKey, 0, wrappedKey.length, body.length);
  frame.set(body, o);
  return frame;
}

// ---------------------------------------------------------------------------------------
// RESULT (relay → client)

export interface ResultFields {
  seq: number;
  code: number;
  /** Per-recipient outcome codes, in the order of the SEND's recipient list; empty for a whole-message refusal. */
  outcomes: number[];
}

export function encodeResult(fields: ResultFields): Buffer {
  const frame = Buffer.allocUnsafe(resultFrameLength(fields.outcomes.length));
  writeResult(frame, 0, fields.seq, fields.code, fields.outcomes);
  return frame;
}

/** Length of a whole RESULT frame with n outcomes. */
export function resultFrameLength(n: number): number {
  return FRAME_HEADER_LENGTH + RESULT_FIXED_LENGTH + 2 * n;
}

/**
 * Writes a RESULT frame at buf[offset]: resultFrameLength(n) bytes, n = outcomes.length, or 1
 * when outcomes is a single code (the common one-recipient case, with no array).
 */
export function writeResult(buf: Buffer, offset: number, seq: number, code: number, outcomes: readonly number[] | number): void {
  const n = typeof outcomes === 'number' ? 1 : outcomes.length;
  let o = writeFrameHeader(buf, offset, FrameType.RESULT, RESULT_FIXED_LENGTH + 2 * n);
  buf.writeUInt32BE(seq >>> 0, o); o += 4;
  buf.writeUInt16BE(code, o); o += 2;
  buf[o++] = n;
  if (typeof outcomes === 'number') buf.writeUInt16BE(outcomes, o);
  else for (const outcome of outcomes) { buf.writeUInt16BE(outcome, o); o += 2; }
}

export function parseResult(buf: Buffer, start: number, end: number): ResultFields | null {
  if (end - start < RESULT_FIXED_LENGTH) return null;
  const seq = buf.readUInt32BE(start);
  const code = buf.readUInt16BE(start + 4);
  const n = buf[start + 6];
  if (end - start !== RESULT_FIXED_LENGTH + 2 * n) return null;
  const outcomes: number[] = [];
  for (let i = 0; i < n; i++) outcomes.push(buf.readUInt16BE(start + RESULT_FIXED_LENGTH + 2 * i));
  return { seq, code, outcomes };
}

// ---------------------------------------------------------------------------------------
// ACK, PING, PONG, QUEUE_EMPTY

export function encodeAck(deliveryId: number): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + ACK_LENGTH);
  writeFrameHeader(frame, 0, FrameType.ACK, ACK_LENGTH);
  writeU64(frame, FRAME_HEADER_LENGTH, deliveryId);
  return frame;
}

export function parseAck(buf: Buffer, start: number, end: number): number | null {
  return end - start === ACK_LENGTH ? readU64(buf, start) : null;
}

export function encodePing(type: typeof FrameType.PING | typeof FrameType.PONG, data: Uint8Array): Buffer {
  if (data.length !== PING_LENGTH) throw new RangeError(`ping data is ${PING_LENGTH} bytes`);
  return encodeFrame(type, data);
}

export const QUEUE_EMPTY_FRAME = encodeFrame(FrameType.QUEUE_EMPTY);

// ---------------------------------------------------------------------------------------
// CLOSE and NOTICE (relay → client): code u16 | retryAfterMs u32 | reason UTF-8

export interface CloseFields {
  code: number;
  retryAfterMs: number;
  reason: string;
}

export function encodeClose(type: typeof FrameType.CLOSE | typeof FrameType.NOTICE, fields: CloseFields): Buffer {
  let reason = Buffer.from(fields.reason, 'utf8');
  if (reason.length > MAX_REASON_BYTES) reason = reason.subarray(0, MAX_REASON_BYTES);
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + 6 + reason.length);
  let o = writeFrameHeader(frame, 0, type, 6 + reason.length);
  frame.writeUInt16BE(fields.code, o); o += 2;
  frame.writeUInt32BE(Math.max(0, Math.min(fields.retryAfterMs, 0xffffffff)) >>> 0, o); o += 4;
  reason.copy(frame, o);
  return frame;
}

export function parseClose(buf: Buffer, start: number, end: number): CloseFields | null {
  if (end - start < 6 || end - start > 6 + MAX_REASON_BYTES) return null;
  return {
    code: buf.readUInt16BE(start),
    retryAfterMs: buf.readUInt32BE(start + 2),
    reason: buf.toString('utf8', start + 6, end),
  };
}

// ---------------------------------------------------------------------------------------
// ADMIN_REQUEST (client → relay): requestId u32 | JSON text
// ADMIN_RESPONSE (relay → client): requestId u32 | status u16 | JSON text

export interface AdminRequestFields {
  requestId: number;
  json: string;
}

/**
 * An admin request's answer as an ADMIN_RESPONSE carries it: what the relay's admin engine
 * returns and its connection sends. (The client library hands its callers a decoded form,
 * AdminAnswer in client/client.ts: ok, the code's name, the parsed JSON.)
 */
export interface AdminResponse {
  status: number;
  /** JSON text of the answer: the command's result, or { "error": ... }. */
  json: string;
}

/** A whole ADMIN_RESPONSE: the answer and the id of the request it answers. */
export interface AdminResponseFields extends AdminResponse {
  requestId: number;
}

export function encodeAdminRequest(fields: AdminRequestFields): Buffer {
  const text = Buffer.from(fields.json, 'utf8');
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + 4 + text.length);
  const o = writeFrameHeader(frame, 0, FrameType.ADMIN_REQUEST, 4 + text.length);
  frame.writeUInt32BE(fields.requestId >>> 0, o);
  text.copy(frame, o + 4);
  return frame;
}

export function parseAdminRequest(buf: Buffer, start: number, end: number): AdminRequestFields | null {
  if (end - start < 4) return null;
  return { requestId: buf.readUInt32BE(start), json: buf.toString('utf8', start + 4, end) };
}

export function encodeAdminResponse(fields: AdminResponseFields): Buffer {
  const text = Buffer.from(fields.json, 'utf8');
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + 6 + text.length);
  const o = writeFrameHeader(frame, 0, FrameType.ADMIN_RESPONSE, 6 + text.length);
  frame.writeUInt32BE(fields.requestId >>> 0, o);
  frame.writeUInt16BE(fields.status, o + 4);
  text.copy(frame, o + 6);
  return frame;
}

export function parseAdminResponse(buf: Buffer, start: number, end: number): AdminResponseFields | null {
  if (end - start < 6) return null;
  return { requestId: buf.readUInt32BE(start), status: buf.readUInt16BE(start + 4), json: buf.toString('utf8', start + 6, end) };
}

export { Code };
