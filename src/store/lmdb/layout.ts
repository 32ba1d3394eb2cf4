/**
 * Byte layout of the LMDB mailbox store: keys and values of every sub-database. All integers are
 * big-endian so that byte order is numeric order; u64 fields hold JS safe integers (< 2^53).
 *
 *   entries  key recipient(32) | seq u64                         = 40 bytes
 *            val header(80) | wrappedKey(wkLen) | body(bodyLen, only when the body is inline)
 *   bodies   key bodyId u64 (the seq of the first entry that holds it)   val body bytes
 *   refs     key bodyId u64                                      val refcount u32
 *   index    key recipient(32) | sender(32) | storageKey(16)      = 80 bytes, val seq u64
 *   marks    key bucketStart u64 | recipient(32)                 = 40 bytes, val empty
 *            "recipient has (or had) an entry expiring in [bucketStart, bucketStart + EXPIRY_BUCKET_MS)";
 *            one key per recipient and minute of expiry, not per entry, so a message costs one write.
 *   usage    key recipient(32)                                   val count u64 | bytes u64
 *   meta     key 'format'  val u32 STORE_FORMAT;  key 'seq'  val u64 last assigned seq;
 *            key 'probe'  zeros, only between a write probe and the repair that follows it
 *            (./recovery.ts, after a failed commit)
 *
 * Store formats: 1 had an `expiry` sub-database with one key per entry (expiresAt | recipient | seq);
 * 2 replaced it with `marks`. Opening a format-1 store migrates it in one transaction (./environment.ts).
 *
 * Entry header (80 bytes):
 *   0  u8  ENTRY_FORMAT (1)    1  u8 flags (bit0 storage key present, bit1 body shared)
 *   2  u8  wrappedKey length   3  u8 reserved (0)
 *   4  u32 body length         8  u64 storedAt ms        16 u64 expiresAt ms
 *   24 sender(32)              56 storageKey(16), zeros when absent
 *   72 u64 bodyId (0 when the body is inline)
 */

/** Version of the store's layout (meta 'format'). */
export const STORE_FORMAT = 2;
/** Version of one entry's header (its first byte). */
export const ENTRY_FORMAT = 1;
/** meta keys: the store's layout version, and the last assigned seq. */
export const FORMAT_KEY = Buffer.from('format');
export const SEQ_KEY = Buffer.from('seq');
export const PROBE_KEY = Buffer.from('probe');
/** Width of an expiry mark's bucket: the sweep finds a recipient's expiring entries through it. */
export const EXPIRY_BUCKET_MS = 60_000;
export const RECIPIENT_BYTES = 32;
export const SENDER_BYTES = 32;
export const STORAGE_KEY_BYTES = 16;
export const ENTRY_KEY_BYTES = RECIPIENT_BYTES + 8;
export const MARK_KEY_BYTES = 8 + RECIPIENT_BYTES;
export const INDEX_KEY_BYTES = RECIPIENT_BYTES + SENDER_BYTES + STORAGE_KEY_BYTES;
export const HEADER_BYTES = 80;

export const FLAG_STORAGE_KEY = 1;
export const FLAG_SHARED_BODY = 2;

/** Largest seq / timestamp representable exactly; also the exclusive end of a recipient's key range. */
export const MAX_U53 = Number.MAX_SAFE_INTEGER;

const TWO_32 = 0x1_0000_0000;

export function writeU64(buf: Uint8Array, offset: number, value: number): void {
  const hi = Math.floor(value / TWO_32);
  const lo = value - hi * TWO_32;
  buf[offset] = hi >>> 24;
  buf[offset + 1] = (hi >>> 16) & 0xff;
  buf[offset + 2] = (hi >>> 8) & 0xff;
  buf[offset + 3] = hi & 0xff;
  buf[offset + 4] = lo >>> 24;
  buf[offset + 5] = (lo >>> 16) & 0xff;
  buf[offset + 6] = (lo >>> 8) & 0xff;
  buf[offset + 7] = lo & 0xff;
}

export function readU64(buf: Uint8Array, offset: number): number {
  const hi = ((buf[offset]! << 24) | (buf[offset + 1]! << 16) | (buf[offset + 2]! << 8) | buf[offset + 3]!) >>> 0;
  const lo = ((buf[offset + 4]! << 24) | (buf[offset + 5]! << 16) | (buf[offset + 6]! << 8) | buf[offset + 7]!) >>> 0;
  return hi * TWO_32 + lo;
}

export function writeU32(buf: Uint8Array, offset: number, value: number): void {
  buf[offset] = value >>> 24;
  buf[offset + 1] = (value >>> 16) & 0xff;
  buf[offset + 2] = (value >>> 8) & 0xff;
  buf[offset + 3] = value & 0xff;
}

export function readU32(buf: Uint8Array, offset: number): number {
  return ((buf[offset]! << 24) | (buf[offset + 1]! << 16) | (buf[offset + 2]! << 8) | buf[offset + 3]!) >>> 0;
}

// Node's Buffer#latin1Slice works on any Uint8Array and saves allocating a Buffer view per call.
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice(this: Uint8Array, start: number, end: number): string }).latin1Slice;

/** A string naming the bytes [start, end) of buf, one char per byte: a Map key. */
export function bytesId(buf: Uint8Array, start = 0, end = buf.length): string {
  return latin1Slice.call(buf, start, end);
}

export function idBytes(id: string): Buffer {
  return Buffer.from(id, 'latin1');
}

/** Is this a recipient's key (32 bytes)? Anything else names no mailbox. */
export function isRecipientKey(recipient: unknown): recipient is Uint8Array {
  return recipient instanceof Uint8Array && recipient.length === RECIPIENT_BYTES;
}

export function entryKey(recipient: Uint8Array, seq: number, out: Buffer = Buffer.allocUnsafe(ENTRY_KEY_BYTES)): Buffer {
  out.set(recipient, 0);
  writeU64(out, RECIPIENT_BYTES, seq);
  return out;
}

/** The start of the expiry bucket that holds expiresAt. */
export function expiryBucket(expiresAt: number): number {
  return expiresAt - (expiresAt % EXPIRY_BUCKET_MS);
}

export function markKey(bucketStart: number, recipient: Uint8Array, out: Buffer = Buffer.allocUnsafe(MARK_KEY_BYTES)): Buffer {
  writeU64(out, 0, bucketStart);
  out.set(recipient, 8);
  return out;
}

export function indexKey(recipient: Uint8Array, sender: Uint8Array, storageKey: Uint8Array,
  out: Buffer = Buffer.allocUnsafe(INDEX_KEY_BYTES)): Buffer {
  out.set(recipient, 0);
  out.set(sender, RECIPIENT_BYTES);
  out.set(storageKey, RECIPIENT_BYTES + SENDER_BYTES);
  return out;
}

export function u64Value(value: number): Buffer {
  const out = Buffer.allocUnsafe(8);
  writeU64(out, 0, value);
  return out;
}

export function u32Value(value: number): Buffer {
  const out = Buffer.allocUnsafe(4);
  writeU32(out, 0, value);
  return out;
}

export function usageValue(count: number, bytes: number): Buffer {
  const out = Buffer.allocUnsafe(16);
  writeU64(out, 0, count);
  writeU64(out, 8, bytes);
  return out;
}

/** The fields of an entry header that the store's bookkeeping needs. */
export interface EntryMeta {
  flags: number;
  wrappedKeyLength: number;
  bodyLength: number;
  storedAt: number;
  expiresAt: number;
  bodyId: number;
}

export function parseHeader(value: Uint8Array): EntryMeta {
  if (value.length < HEADER_BYTES || value[0] !== ENTRY_FORMAT) {
    throw new Error(`mailbox entry has an unknown format (${value.length} bytes, format ${value[0]})`);
  }
  return {
    flags: value[1]!,
    wrappedKeyLength: value[2]!,
    bodyLength: readU32(value, 4),
    storedAt: readU64(value, 8),
    expiresAt: readU64(value, 16),
    bodyId: readU64(value, 72),
  };
}

/** Encodes an entry value; body is copied in only when inline (bodyId 0). */
export function encodeEntry(sender: Uint8Array, storageKey: Uint8Array | null, wrappedKey: Uint8Array,
  body: Uint8Array, storedAt: number, expiresAt: number, bodyId: number,
  alloc: (n: number) => Buffer = Buffer.allocUnsafe): Buffer {
  const inline = bodyId === 0;
  const out = alloc(HEADER_BYTES + wrappedKey.length + (inline ? body.length : 0));
  out[0] = ENTRY_FORMAT;
  out[1] = (storageKey ? FLAG_STORAGE_KEY : 0) | (inline ? 0 : FLAG_SHARED_BODY);
  out[2] = wrappedKey.length;
  out[3] = 0;
  writeU32(out, 4, body.length);
  writeU64(out, 8, storedAt);
  writeU64(out, 16, expiresAt);
  out.set(sender, 24);
  if (storageKey) out.set(storageKey, 56);
  else for (let i = 56; i < 72; i++) out[i] = 0;
  writeU64(out, 72, bodyId);
  out.set(wrappedKey, HEADER_BYTES);
  if (inline) out.set(body, HEADER_BYTES + wrappedKey.length);
  return out;
}
