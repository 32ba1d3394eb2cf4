// One recipient's share of a parsed SEND: the slices of the received chunk that a destination
// needs (recipient key, wrapped key, storage key, body), passed instead of a clump of offsets.
// The router reuses one Envelope for every recipient of every SEND (nothing allocated per
// message); a destination that keeps anything past its call takes the slices (subarray) it needs.
// The chunk is never reused by the frame reader, so a kept slice stays valid (and keeps the chunk
// alive: the pending-store and forward bounds limit how much can be held that way).
import { KEY_LENGTH, STORAGE_KEY_LENGTH } from '../protocol/constants.js';
import type { SendView } from '../protocol/frames.js';

const NO_BYTES = Buffer.alloc(0);

export class Envelope {
  /** The received chunk the SEND lies in. */
  buf: Buffer = NO_BYTES;
  /** The recipient's key as a latin1 string: the key of the session and presence maps. */
  keyId = '';
  /** Offset of the recipient's 32-byte key. */
  recipientOffset = 0;
  /** The message key wrapped for this recipient: buf[wrappedStart, wrappedEnd). */
  wrappedStart = 0;
  wrappedEnd = 0;
  /** Offset of the 16-byte storage key, or -1 when the message has none. */
  storageKeyOffset = -1;
  bodyStart = 0;
  bodyEnd = 0;

  /** Points this envelope at recipient `index` of the SEND `view` parsed from buf. */
  pointAt(buf: Buffer, view: SendView, index: number, keyId: string): this {
    const o = view.recipientOffsets[index];
    this.buf = buf;
    this.keyId = keyId;
    this.recipientOffset = o;
    this.wrappedStart = o + KEY_LENGTH + 1;
    this.wrappedEnd = this.wrappedStart + buf[o + KEY_LENGTH];
    this.storageKeyOffset = view.storageKeyOffset;
    this.bodyStart = view.bodyStart;
    this.bodyEnd = view.bodyEnd;
    return this;
  }

  get bodyLength(): number {
    return this.bodyEnd - this.bodyStart;
  }

  get hasStorageKey(): boolean {
    return this.storageKeyOffset >= 0;
  }

  recipientKey(): Buffer {
    return this.buf.subarray(this.recipientOffset, this.recipientOffset + KEY_LENGTH);
  }

  wrappedKey(): Buffer {
    return this.buf.subarray(this.wrappedStart, this.wrappedEnd);
  }

  storageKey(): Buffer | null {
    return this.storageKeyOffset >= 0 ? this.buf.subarray(this.storageKeyOffset, this.storageKeyOffset + STORAGE_KEY_LENGTH) : null;
  }

  body(): Buffer {
    return this.buf.subarray(this.bodyStart, this.bodyEnd);
  }
}
