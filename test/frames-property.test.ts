// Property tests of the wire format (fast-check): every decoder in src/protocol is total and
// stays inside the bytes it was given, the frame reader buffers no more than a frame type
// allows, and every encoder round-trips through the reader (split any way) and its decoder.
import t from 'tap';
import fc from 'fast-check';
import {
  FRAME_HEADER_LENGTH, FrameType, MAX_REASON_BYTES, SendFlags, STORAGE_KEY_LENGTH,
} from '../src/protocol/constants.js';
import {
  encodeAck, encodeAdminRequest, encodeAdminResponse, encodeClose, encodeDeliver, encodeFrame, encodePing, encodeResult,
  encodeSend, parseAck, parseAdminRequest, parseAdminResponse, parseClose, parseDeliver, parseResult, parseSend,
  peekSendSeq, QUEUE_EMPTY_FRAME, type SendFields,
} from '../src/protocol/frames.js';
import {
  encodeClientHello, encodeServerHello, encodeServerWelcome, parseClientHello, parseServerHello, parseServerWelcome, welcomeSignedFields,
} from '../src/protocol/handshake.js';
import { FrameReader } from '../src/protocol/reader.js';

type Decoder = (buf: Buffer, start: number, end: number) => unknown;

const DECODERS: Record<string, Decoder> = {
  parseSend: (b, s, e) => parseSend(b, s, e, []),
  parseDeliver, parseResult, parseAck, parseClose, parseServerHello, parseClientHello, parseServerWelcome,
  parseAdminRequest, parseAdminResponse, peekSendSeq,
};

// ---------------------------------------------------------------------------------------
// Arbitraries

const bytes = (maxLength: number, minLength = 0) => fc.uint8Array({ minLength, maxLength }).map((a) => Buffer.from(a));
const key = bytes(32, 32);
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u8 = fc.integer({ min: 0, max: 0xff });
const storageKey = fc.option(bytes(STORAGE_KEY_LENGTH, STORAGE_KEY_LENGTH), { nil: null });
const text = fc.string({ unit: 'binary', maxLength: 300 });

const sendFields = (maxRecipients: number, maxWrapped: number, maxBody: number, size: fc.SizeForArbitrary = 'small') => fc.record({
  seq: u32,
  flags: u8,
  ttlSeconds: u32,
  storageKey,
  recipients: fc.array(fc.record({ key, wrappedKey: fc.uint8Array({ maxLength: maxWrapped, size }).map((a) => Buffer.from(a)) }), { minLength: 1, maxLength: maxRecipients, size }),
  body: fc.uint8Array({ maxLength: maxBody, size }).map((a) => Buffer.from(a)),
});

const deliverFields = fc.record({
  deliveryId: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  // HAS_STORAGE_KEY follows the storage key (see the test at the end).
  flags: u8.map((f) => f & ~0x04),
  sender: key,
  storageKey,
  wrappedKey: bytes(255),
  body: bytes(600),
});

const resultFields = fc.record({ seq: u32, code: u16, outcomes: fc.array(u16, { maxLength: 255 }) });
const closeFields = fc.record({ code: u16, retryAfterMs: fc.integer({ min: -5, max: 2 ** 33 }), reason: text });
const helloFields = fc.record({ minVersion: u8, maxVersion: u8, relayKey: key, relayNonce: key });
const clientHelloFields = fc.record({ version: u8, flags: u8, clientKey: key, clientNonce: key, signature: bytes(64, 64) });
const welcomeLimits = fc.record({
  maxPayloadBytes: u32, maxRecipients: u8, maxTtlSeconds: u32, defaultTtlSeconds: u32, inflightWindow: u32, pingIntervalMs: u32, pingTimeoutMs: u32,
});
const welcomeFields = fc.record({ status: u16, version: u8, retryAfterMs: u32, limits: welcomeLimits, signature: bytes(64, 64) });

/** One valid frame of any type, with the fields it was made from and how to read them back. */
interface ValidFrame { frame: Buffer; check(payload: Buffer): void }

function sameBytes(a: Uint8Array | null, b: Uint8Array | null, what: string): void {
  if (a === null || b === null) {
    if (a !== b) throw new Error(`${what}: ${a === null ? 'null' : 'bytes'} vs ${b === null ? 'null' : 'bytes'}`);
    return;
  }
  if (!Buffer.from(a).equals(Buffer.from(b))) throw new Error(`${what} differs`);
}

function same(a: unknown, b: unknown, what: string): void {
  if (a !== b) throw new Error(`${what}: ${String(a)} !== ${String(b)}`);
}

/** What a string becomes after UTF-8 encoding and decoding (lone surrogates turn into U+FFFD). */
const utf8 = (s: string, maxBytes = Infinity) => Buffer.from(s, 'utf8').subarray(0, maxBytes).toString('utf8');

function checkSend(f: SendFields, payload: Buffer): void {
  const view = parseSend(payload, 0, payload.length, []);
  if (view === null) throw new Error('parseSend returned null for an encoded SEND');
  same(view.seq, f.seq, 'seq');
  same(view.flags, f.storageKey ? f.flags | SendFlags.HAS_STORAGE_KEY : f.flags & ~SendFlags.HAS_STORAGE_KEY, 'flags');
  same(view.ttlSeconds, f.ttlSeconds, 'ttl');
  sameBytes(view.storageKeyOffset < 0 ? null : payload.subarray(view.storageKeyOffset, view.storageKeyOffset + 16), f.storageKey, 'storage key');
  same(view.recipientCount, f.recipients.length, 'recipient count');
  f.recipients.forEach((r, i) => {
    const o = view.recipientOffsets[i];
    sameBytes(payload.subarray(o, o + 32), r.key, `recipient ${i} key`);
    sameBytes(payload.subarray(o + 33, o + 33 + payload[o + 32]), r.wrappedKey, `recipient ${i} wrapped key`);
  });
  sameBytes(payload.subarray(view.bodyStart, view.bodyEnd), f.body, 'body');
}

const validFrame: fc.Arbitrary<ValidFrame> = fc.oneof(
  sendFields(4, 100, 300).map((f) => ({ frame: encodeSend(f), check: (p: Buffer) => checkSend(f, p) })),
  deliverFields.map((f) => ({
    frame: encodeDeliver(f),
    check: (p: Buffer) => {
      const d = parseDeliver(p, 0, p.length);
      if (d === null) throw new Error('parseDeliver returned null');
      same(d.deliveryId, f.deliveryId, 'delivery id');
      same(d.flags, f.storageKey ? f.flags | 0x04 : f.flags, 'flags');
      sameBytes(d.sender, f.sender, 'sender');
      sameBytes(d.storageKey, f.storageKey, 'storage key');
      sameBytes(d.wrappedKey, f.wrappedKey, 'wrapped key');
      sameBytes(d.body, f.body, 'body');
    },
  })),
  resultFields.map((f) => ({
    frame: encodeResult(f),
    check: (p: Buffer) => {
      const r = parseResult(p, 0, p.length);
      if (r === null) throw new Error('parseResult returned null');
      same(r.seq, f.seq, 'seq');
      same(r.code, f.code, 'code');
      same(JSON.stringify(r.outcomes), JSON.stringify(f.outcomes), 'outcomes');
    },
  })),
  fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }).map((id) => ({
    frame: encodeAck(id),
    check: (p: Buffer) => same(parseAck(p, 0, p.length), id, 'ack id'),
  })),
  fc.tuple(fc.constantFrom(FrameType.CLOSE, FrameType.NOTICE), closeFields).map(([type, f]) => ({
    frame: encodeClose(type, f),
    check: (p: Buffer) => {
      const c = parseClose(p, 0, p.length);
      if (c === null) throw new Error('parseClose returned null');
      same(c.code, f.code, 'code');
      same(c.retryAfterMs, Math.max(0, Math.min(f.retryAfterMs, 0xffffffff)), 'retryAfterMs');
      same(c.reason, utf8(f.reason, MAX_REASON_BYTES), 'reason');
    },
  })),
  fc.record({ requestId: u32, json: text }).map((f) => ({
    frame: encodeAdminRequest(f),
    check: (p: Buffer) => {
      const r = parseAdminRequest(p, 0, p.length);
      same(r?.requestId, f.requestId, 'request id');
      same(r?.json, utf8(f.json), 'json');
    },
  })),
  fc.record({ requestId: u32, status: u16, json: text }).map((f) => ({
    frame: encodeAdminResponse(f),
    check: (p: Buffer) => {
      const r = parseAdminResponse(p, 0, p.length);
      same(r?.requestId, f.requestId, 'request id');
      same(r?.status, f.status, 'status');
      same(r?.json, utf8(f.json), 'json');
    },
  })),
  fc.tuple(fc.constantFrom(FrameType.PING, FrameType.PONG), bytes(8, 8)).map(([type, data]) => ({
    frame: encodePing(type, data),
    check: (p: Buffer) => sameBytes(p, data, 'ping data'),
  })),
  fc.constant({ frame: QUEUE_EMPTY_FRAME, check: (p: Buffer) => same(p.length, 0, 'QUEUE_EMPTY length') }),
  helloFields.map((f) => ({
    frame: encodeServerHello(f),
    check: (p: Buffer) => {
      const h = parseServerHello(p, 0, p.length);
      same(h?.minVersion, f.minVersion, 'minVersion');
      same(h?.maxVersion, f.maxVersion, 'maxVersion');
      sameBytes(h?.relayKey ?? null, f.relayKey, 'relay key');
      sameBytes(h?.relayNonce ?? null, f.relayNonce, 'relay nonce');
    },
  })),
  clientHelloFields.map((f) => ({
    frame: encodeClientHello(f),
    check: (p: Buffer) => {
      const h = parseClientHello(p, 0, p.length);
      same(h?.version, f.version, 'version');
      same(h?.flags, f.flags, 'flags');
      sameBytes(h?.clientKey ?? null, f.clientKey, 'client key');
      sameBytes(h?.clientNonce ?? null, f.clientNonce, 'client nonce');
      sameBytes(h?.signature ?? null, f.signature, 'signature');
    },
  })),
  welcomeFields.map((f) => ({
    frame: encodeServerWelcome(welcomeSignedFields(f.status, f.version, f.retryAfterMs, f.limits), f.signature),
    check: (p: Buffer) => {
      const w = parseServerWelcome(p, 0, p.length);
      same(w?.status, f.status, 'status');
      same(w?.version, f.version, 'version');
      same(w?.retryAfterMs, f.retryAfterMs, 'retryAfterMs');
      for (const k of Object.keys(f.limits) as (keyof typeof f.limits)[]) same(w?.limits[k], f.limits[k], k);
      sameBytes(w?.signature ?? null, f.signature, 'signature');
    },
  })),
  fc.tuple(fc.integer({ min: 0x40, max: 0xff }), bytes(200)).map(([type, payload]) => ({
    frame: encodeFrame(type, payload),
    check: (p: Buffer) => sameBytes(p, payload, 'unknown frame payload'),
  })),
);

/** A mutation of a valid payload: byte flips and sets, truncation, extension. */
const mutatedPayload = fc.tuple(
  validFrame,
  fc.array(fc.tuple(fc.nat(), u8), { maxLength: 4 }),
  fc.option(fc.nat(), { nil: null }),
  fc.option(bytes(40), { nil: null }),
).map(([v, edits, cut, extra]) => {
  let p = Buffer.from(v.frame.subarray(FRAME_HEADER_LENGTH));
  for (const [at, value] of edits) if (p.length > 0) p[at % p.length] = value;
  if (cut !== null) p = p.subarray(0, cut % (p.length + 1));
  return extra ? Buffer.concat([p, extra]) : p;
});

/** A payload to decode, placed between random bytes so start > 0 and end < buf.length. */
/** Random bytes with lengths around every fixed size and bound the decoders know. */
const BOUNDARIES = [0, 4, 6, 7, 8, 26, 58, 70, 71, 96, 130, 262].flatMap((n) => [n - 1, n, n + 1]).filter((n) => n >= 0);
const randomPayload = fc.oneof(
  bytes(400),
  fc.tuple(fc.constantFrom(...BOUNDARIES), bytes(300, 300)).map(([n, b]) => b.subarray(0, n)),
);

const placedPayload = fc.tuple(fc.oneof(randomPayload, mutatedPayload), bytes(16), bytes(16)).map(([payload, before, after]) => {
  const buf = Buffer.alloc(before.length + payload.length + after.length);
  before.copy(buf, 0);
  payload.copy(buf, before.length);
  after.copy(buf, before.length + payload.length);
  return { buf, start: before.length, end: before.length + payload.length };
});

// ---------------------------------------------------------------------------------------
// Decoders: total, in bounds, and blind to bytes outside [start, end)

/**
 * A decoder's answer with every Buffer replaced by its position relative to start (a view into
 * buf, which must lie inside [start, end)) or its bytes (a copy). Throws on a view outside.
 */
function normalize(value: unknown, buf: Buffer, start: number, end: number): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
    const v = value as Uint8Array;
    if (v.buffer === buf.buffer) {
      const at = v.byteOffset - buf.byteOffset;
      if (at < start || at + v.length > end) throw new Error(`view [${at}, ${at + v.length}) outside [${start}, ${end})`);
      return { view: at - start, length: v.length };
    }
    return { copy: Buffer.from(v).toString('hex') };
  }
  if (Array.isArray(value)) return value.map((x) => normalize(x, buf, start, end));
  return Object.fromEntries(Object.entries(value).map(([k, x]) => [k, normalize(x, buf, start, end)]));
}

/** Offsets a SendView reports must lie in [start, end), in order, without overlap. */
function checkSendView(buf: Buffer, start: number, end: number): void {
  const view = parseSend(buf, start, end, []);
  if (view === null) return;
  const { storageKeyOffset: sk, recipientOffsets: offs, bodyStart, bodyEnd } = view;
  if ((view.flags & SendFlags.HAS_STORAGE_KEY) === 0 ? sk !== -1 : sk !== start + 9) throw new Error(`storage key offset ${sk}`);
  if (offs.length !== view.recipientCount) throw new Error('recipient offsets do not match the count');
  let o = start + 26;
  for (const r of offs) {
    if (r !== o) throw new Error(`recipient at ${r}, expected ${o}`);
    o = r + 33 + buf[r + 32];
    if (o > end) throw new Error(`recipient runs to ${o}, past ${end}`);
  }
  if (bodyStart !== o || bodyEnd !== end) throw new Error(`body [${bodyStart}, ${bodyEnd}) in a payload ending at ${end}`);
}

t.test('every decoder is total, stays in [start, end) and ignores bytes outside it', async (t) => {
  for (const [name, decode] of Object.entries(DECODERS)) {
    fc.assert(fc.property(placedPayload, ({ buf, start, end }) => {
      const a = normalize(decode(buf, start, end), buf, start, end);
      // The same payload with every byte outside it changed must decode the same way.
      const other = Buffer.alloc(buf.length);
      for (let i = 0; i < buf.length; i++) other[i] = i >= start && i < end ? buf[i] : buf[i] ^ 0xa5;
      const b = normalize(decode(other, start, end), other, start, end);
      if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`${name} read outside its payload`);
      if (name === 'parseSend') checkSendView(buf, start, end);
    }), { numRuns: 400 });
    t.pass(`${name}`);
  }
});

t.test('decoders give null exactly when the payload cannot be that frame', async (t) => {
  fc.assert(fc.property(placedPayload, ({ buf, start, end }) => {
    const n = end - start;
    same(parseAck(buf, start, end) === null, n !== 8, 'ACK null iff not 8 bytes');
    same(parseClose(buf, start, end) === null, n < 6 || n > 6 + MAX_REASON_BYTES, 'CLOSE null iff not 6..262 bytes');
    same(peekSendSeq(buf, start, end) === -1, n < 4, 'peekSendSeq -1 iff under 4 bytes');
    same(parseAdminRequest(buf, start, end) === null, n < 4, 'ADMIN_REQUEST null iff under 4 bytes');
    same(parseAdminResponse(buf, start, end) === null, n < 6, 'ADMIN_RESPONSE null iff under 6 bytes');
    same(parseClientHello(buf, start, end) === null, n < 130, 'CLIENT_HELLO null iff under 130 bytes');
    same(parseServerWelcome(buf, start, end) === null, n < 96, 'SERVER_WELCOME null iff under 96 bytes');
    same(parseServerHello(buf, start, end) === null, n < 70 || buf.toString('latin1', start, start + 4) !== 'PTAB', 'SERVER_HELLO null iff short or not PTAB');
    same(parseResult(buf, start, end) === null, n < 7 || n !== 7 + 2 * buf[start + 6], 'RESULT null iff its count does not fit');
    if (n < 26) same(parseSend(buf, start, end, []), null, 'SEND under 26 bytes');
    if (n < 58) same(parseDeliver(buf, start, end), null, 'DELIVER under 58 bytes');
  }), { numRuns: 3000 });
  t.pass('ok');
});

// ---------------------------------------------------------------------------------------
// The reader against a reference model of the byte stream

interface ModelFrame { type: number; start: number; end: number }
interface Model { frames: ModelFrame[]; error: { at: number; type: number; length: number } | null }

/** Where each frame of the stream starts and ends, and where the first over-long header is. */
function model(stream: Buffer, maxLength: (type: number) => number): Model {
  const frames: ModelFrame[] = [];
  let pos = 0;
  while (pos + FRAME_HEADER_LENGTH <= stream.length) {
    const type = stream[pos];
    const length = stream.readUInt32BE(pos + 1);
    if (length > maxLength(type)) return { frames, error: { at: pos + FRAME_HEADER_LENGTH, type, length } };
    frames.push({ type, start: pos, end: pos + FRAME_HEADER_LENGTH + length });
    pos += FRAME_HEADER_LENGTH + length;
  }
  if (pos < stream.length) frames.push({ type: -1, start: pos, end: Infinity });
  return { frames, error: null };
}

/** Bytes a reader must hold after the first p bytes: a partial header, or a partial kept frame. */
function expectedBuffered(m: Model, p: number, skip: (type: number) => boolean): number {
  if (m.error && p >= m.error.at) return 0;
  if (m.error && p > m.error.at - FRAME_HEADER_LENGTH) return p - (m.error.at - FRAME_HEADER_LENGTH);
  const f = m.frames.find((x) => x.start < p && p < x.end);
  if (!f) return 0;
  if (p - f.start < FRAME_HEADER_LENGTH) return p - f.start;
  return skip(f.type) ? 0 : p - f.start - FRAME_HEADER_LENGTH;
}

/** A stream of frames with random types and lengths (some over the maximum), and stray bytes. */
const rawStream = fc.array(fc.oneof(
  { weight: 5, arbitrary: fc.tuple(fc.constantFrom(0x10, 0x13, 0x20, 0x22, 0x55, 0x99), fc.integer({ min: 0, max: 300 }), fc.boolean()).map(([type, length, over]) => {
    const frame = Buffer.alloc(FRAME_HEADER_LENGTH + (over ? 0 : length), 0x5a);
    frame[0] = type;
    frame.writeUInt32BE(over ? 0x10000 + length : length, 1);
    return frame;
  }) },
  { weight: 1, arbitrary: bytes(12) },
), { maxLength: 12 }).map((parts) => Buffer.concat(parts));

/** Cut points for a stream, as fractions, so every length gets cut somewhere. */
const cuts = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 8 });

function chunked(stream: Buffer, fractions: number[]): Buffer[] {
  const points = [...new Set(fractions.map((f) => Math.floor(f * stream.length)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let at = 0;
  for (const p of [...points, stream.length]) {
    // Copies, so "handed out in place" can be told from "assembled" by identity.
    chunks.push(Buffer.from(stream.subarray(at, p)));
    at = p;
  }
  return chunks;
}

t.test('the reader buffers only a partial header or a partial frame within its maximum', async (t) => {
  const maxTable: Record<number, number> = { 0x10: 300, 0x13: 8, 0x20: 64, 0x22: 0, 0x55: 300, 0x99: 120 };
  const maxLength = (type: number) => maxTable[type] ?? 40;
  const skip = (type: number) => type === 0x55 || type === 0x99;
  fc.assert(fc.property(rawStream, cuts, (stream, fractions) => {
    const m = model(stream, maxLength);
    const got: ModelFrame[] = [];
    const errors: Array<[number, number]> = [];
    let pushed = 0;
    let current: Buffer = Buffer.alloc(0);
    let currentAt = 0;
    const reader = new FrameReader({
      maxLength, skip,
      onFrame: (type, buf, start, end) => {
        if (end - start > maxLength(type)) throw new Error(`handed out ${end - start} bytes of type ${type}`);
        if (buf !== current && buf.length !== end - start) throw new Error('an assembled frame buffer is larger than its frame');
        got.push({ type, start: -1, end: end - start });
        const f = m.frames.filter((x) => !skip(x.type))[got.length - 1];
        if (!f || f.type !== type || f.end - f.start - FRAME_HEADER_LENGTH !== end - start) throw new Error(`frame ${got.length} is not the model's`);
        if (!buf.subarray(start, end).equals(stream.subarray(f.start + FRAME_HEADER_LENGTH, f.end))) throw new Error('payload differs');
        // A frame lying wholly inside one chunk is handed out in place.
        const inOneChunk = f.start >= currentAt && f.end <= currentAt + current.length;
        if (inOneChunk !== (buf === current)) throw new Error(`frame at ${f.start}: in one chunk ${inOneChunk}, in place ${buf === current}`);
      },
      onError: (_kind, type, length) => { errors.push([type, length]); },
    });
    for (const chunk of chunked(stream, fractions)) {
      current = chunk;
      currentAt = pushed;
      reader.push(chunk);
      pushed += chunk.length;
      const want = expectedBuffered(m, pushed, skip);
      if (reader.bufferedBytes !== want) throw new Error(`after ${pushed} bytes: buffered ${reader.bufferedBytes}, expected ${want}`);
    }
    const complete = m.frames.filter((f) => f.end <= stream.length && !skip(f.type));
    same(got.length, complete.length, 'frames handed out');
    same(JSON.stringify(errors), JSON.stringify(m.error ? [[m.error.type, m.error.length]] : []), 'errors');
    same(reader.failed, m.error !== null, 'failed');
  }), { numRuns: 2500 });
  t.pass('ok');
});

// ---------------------------------------------------------------------------------------
// Valid streams: every encoder through the reader (split any way, paused at random) and back

function readAll(chunks: Buffer[], pauseEvery: number): Array<{ type: number; payload: Buffer }> {
  const out: Array<{ type: number; payload: Buffer }> = [];
  const reader = new FrameReader({
    maxLength: () => 1 << 20,
    onFrame: (type, buf, start, end) => {
      out.push({ type, payload: Buffer.from(buf.subarray(start, end)) });
      return pauseEvery === 0 || out.length % pauseEvery !== 0;
    },
    onError: () => { throw new Error('a valid stream was refused'); },
  });
  for (const chunk of chunks) {
    reader.push(chunk);
    for (let i = 0; reader.paused && i < 10_000; i++) reader.resume();
  }
  return out;
}

function checkStream(frames: ValidFrame[], got: Array<{ type: number; payload: Buffer }>, how: string): void {
  if (got.length !== frames.length) throw new Error(`${how}: ${got.length} frames out of ${frames.length}`);
  frames.forEach((f, i) => {
    if (got[i].type !== f.frame[0]) throw new Error(`${how}: frame ${i} type ${got[i].type}, sent ${f.frame[0]}`);
    if (!got[i].payload.equals(f.frame.subarray(FRAME_HEADER_LENGTH))) throw new Error(`${how}: frame ${i} payload differs`);
    f.check(got[i].payload);
  });
}

t.test('valid streams round-trip under every two-way split and random many-way splits', async (t) => {
  fc.assert(fc.property(fc.array(validFrame, { minLength: 1, maxLength: 8 }), cuts, fc.integer({ min: 0, max: 3 }), (frames, fractions, pauseEvery) => {
    const stream = Buffer.concat(frames.map((f) => f.frame));
    checkStream(frames, readAll([stream], pauseEvery), 'whole');
    checkStream(frames, readAll(chunked(stream, fractions), pauseEvery), `cut at ${fractions}`);
    // Every two-way split (stepping through long streams, always covering the first and last 64 bytes).
    const step = Math.max(1, Math.floor(stream.length / 300));
    for (let i = 0; i <= stream.length; i += i < 64 || i > stream.length - 64 ? 1 : step) {
      checkStream(frames, readAll([stream.subarray(0, i), stream.subarray(i)], pauseEvery), `split at ${i}`);
    }
  }), { numRuns: 150 });
  // One byte at a time.
  fc.assert(fc.property(fc.array(validFrame, { minLength: 1, maxLength: 4 }), (frames) => {
    const stream = Buffer.concat(frames.map((f) => f.frame));
    checkStream(frames, readAll([...stream].map((b) => Buffer.from([b])), 0), 'byte by byte');
  }), { numRuns: 100 });
  t.pass('ok');
});

// ---------------------------------------------------------------------------------------
// Field by field, at the extremes of each field

t.test('SEND round-trips field by field: 1..255 recipients, wrapped keys 0..255 bytes', async (t) => {
  const counts: number[] = [];
  fc.assert(fc.property(sendFields(255, 255, 2000, 'max'), (f) => {
    counts.push(f.recipients.length);
    const frame = encodeSend(f);
    same(frame[0], FrameType.SEND, 'type');
    same(frame.readUInt32BE(1), frame.length - FRAME_HEADER_LENGTH, 'length');
    checkSend(f, frame.subarray(FRAME_HEADER_LENGTH));
    // At an offset inside a larger buffer too, as the relay parses it in place.
    const placed = Buffer.concat([Buffer.alloc(7, 0xee), frame, Buffer.alloc(5, 0xee)]);
    const view = parseSend(placed, 7 + FRAME_HEADER_LENGTH, 7 + frame.length, []);
    same(view?.bodyEnd, 7 + frame.length, 'body end in place');
    same(view?.recipientCount, f.recipients.length, 'recipient count in place');
  }), { numRuns: 200 });
  t.ok(counts.includes(1) || counts.some((n) => n < 10), 'few recipients were tried');
  t.ok(counts.some((n) => n > 200), 'over 200 recipients were tried');
});

t.test('DELIVER, RESULT, CLOSE, NOTICE, ADMIN_* and handshake frames round-trip field by field', async (t) => {
  fc.assert(fc.property(validFrame, (v) => {
    same(v.frame.readUInt32BE(1), v.frame.length - FRAME_HEADER_LENGTH, 'header length');
    v.check(v.frame.subarray(FRAME_HEADER_LENGTH));
  }), { numRuns: 3000 });
  t.pass('ok');
});

t.test('encodeDeliver without a storage key clears HAS_STORAGE_KEY', async (t) => {
  const frame = encodeDeliver({ deliveryId: 1, flags: 0x04, sender: Buffer.alloc(32, 1), storageKey: null, wrappedKey: Buffer.alloc(0), body: Buffer.alloc(0) });
  t.equal(parseDeliver(frame, FRAME_HEADER_LENGTH, frame.length)?.storageKey ?? null, null);
});
