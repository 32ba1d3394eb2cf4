// The incremental frame reader: turns a byte stream, split any way at all, into frames.
//
// A frame that lies wholly inside one received chunk is handed out in place (the chunk and
// the payload's bounds), so routing can forward a slice of it without copying. Only a frame
// that straddles chunks is assembled into a buffer of its own, and that buffer is allocated
// after the length has been checked against the type's maximum, never before.
import { FRAME_HEADER_LENGTH } from './constants.js';

/**
 * Called for each complete frame with its payload at buf[start, end). Return false to pause:
 * the reader keeps the rest of the chunk and delivers nothing more until resume().
 */
export type FrameHandler = (type: number, buf: Buffer, start: number, end: number) => boolean | void;

export type ReaderErrorKind = 'too-large';
export type ReaderErrorHandler = (kind: ReaderErrorKind, type: number, length: number) => void;

export interface FrameReaderOptions {
  /** Largest payload accepted for a frame type; a longer frame is an error before any buffering. */
  maxLength(type: number): number;
  /** Types the reader discards without handing out (unknown types after the handshake). */
  skip?(type: number): boolean;
  onFrame: FrameHandler;
  onError: ReaderErrorHandler;
}

export class FrameReader {
  readonly #opts: FrameReaderOptions;
  // Partial header, when a header straddles chunks.
  readonly #header = Buffer.alloc(FRAME_HEADER_LENGTH);
  #headerFill = 0;
  // The frame being assembled (or skipped) across chunks.
  #type = 0;
  #body: Buffer | null = null;
  #bodyFill = 0;
  #skipRemaining = 0;
  #inFrame = false;
  // Set after an error: everything further is ignored.
  #failed = false;
  // A paused reader keeps the unread rest of a chunk here.
  #pending: Buffer | null = null;
  #paused = false;
  /** Bytes consumed so far, for accounting. */
  bytesRead = 0;

  constructor(opts: FrameReaderOptions) {
    this.#opts = opts;
  }

  get paused(): boolean {
    return this.#paused;
  }

  get failed(): boolean {
    return this.#failed;
  }

  /** Bytes held back by a pause, plus a partly assembled frame. */
  get bufferedBytes(): number {
    return (this.#pending?.length ?? 0) + this.#bodyFill + this.#headerFill;
  }

  push(chunk: Buffer): void {
    if (this.#failed) return;
    if (this.#paused) {
      this.#pending = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
      return;
    }
    this.#consume(chunk);
  }

  resume(): void {
    if (!this.#paused || this.#failed) return;
    this.#paused = false;
    const pending = this.#pending;
    this.#pending = null;
    if (pending) this.#consume(pending);
  }

  /** Stops the reader for good (the connection is closing). */
  stop(): void {
    this.#failed = true;
    this.#pending = null;
    this.#body = null;
  }

  #consume(chunk: Buffer): void {
    const length = chunk.length;
    let pos = 0;
    while (pos < length) {
      if (this.#inFrame) {
        pos = this.#continueFrame(chunk, pos);
        if (this.#failed) return;
        if (this.#paused) {
          this.#holdBack(chunk, pos);
          return;
        }
        continue;
      }
      // Fast path: a whole header in this chunk and no partial header pending.
      if (this.#headerFill === 0 && length - pos >= FRAME_HEADER_LENGTH) {
        const type = chunk[pos];
        const frameLength = chunk.readUInt32BE(pos + 1);
        pos += FRAME_HEADER_LENGTH;
        this.bytesRead += FRAME_HEADER_LENGTH;
        if (!this.#startFrame(type, frameLength)) return;
        const skipping = this.#skipRemaining > 0 || (frameLength === 0 && this.#isSkipped(type));
        if (!skipping && length - pos >= frameLength) {
          // The whole frame is in this chunk: hand it out in place.
          this.#inFrame = false;
          const end = pos + frameLength;
          this.bytesRead += frameLength;
          const keepGoing = this.#opts.onFrame(type, chunk, pos, end);
          pos = end;
          if (this.#failed) return;
          if (keepGoing === false) {
            this.#paused = true;
            this.#holdBack(chunk, pos);
            return;
          }
          continue;
        }
        if (skipping && frameLength === 0) {
          this.#inFrame = false;
          continue;
        }
        this.#type = type;
        if (!skipping) {
          this.#body = Buffer.allocUnsafe(frameLength);
          this.#bodyFill = 0;
        }
        continue;
      }
      // Slow path: assemble the header byte by byte across chunks.
      const take = Math.min(FRAME_HEADER_LENGTH - this.#headerFill, length - pos);
      chunk.copy(this.#header, this.#headerFill, pos, pos + take);
      this.#headerFill += take;
      pos += take;
      this.bytesRead += take;
      if (this.#headerFill < FRAME_HEADER_LENGTH) return;
      this.#headerFill = 0;
      const type = this.#header[0];
      const frameLength = this.#header.readUInt32BE(1);
      if (!this.#startFrame(type, frameLength)) return;
      this.#type = type;
      if (this.#skipRemaining > 0) continue;
      if (this.#isSkipped(type)) {
        this.#inFrame = false;
        continue;
      }
      this.#body = Buffer.allocUnsafe(frameLength);
      this.#bodyFill = 0;
      if (frameLength === 0) {
        this.#finishAssembled();
        if (this.#failed) return;
        if (this.#paused) {
          this.#holdBack(chunk, pos);
          return;
        }
      }
    }
  }

  #isSkipped(type: number): boolean {
    return this.#opts.skip !== undefined && this.#opts.skip(type);
  }

  /** Checks a header; returns false (and fails the reader) when the frame is too long. */
  #startFrame(type: number, frameLength: number): boolean {
    const max = this.#opts.maxLength(type);
    if (frameLength > max) {
      this.#failed = true;
      this.#opts.onError('too-large', type, frameLength);
      return false;
    }
    this.#inFrame = true;
    this.#skipRemaining = this.#isSkipped(type) ? frameLength : 0;
    return true;
  }

  /** Feeds chunk[pos..] into the frame in progress; returns the new position. */
  #continueFrame(chunk: Buffer, pos: number): number {
    const available = chunk.length - pos;
    if (this.#skipRemaining > 0) {
      const take = Math.min(this.#skipRemaining, available);
      this.#skipRemaining -= take;
      this.bytesRead += take;
      if (this.#skipRemaining === 0) this.#inFrame = false;
      return pos + take;
    }
    const body = this.#body!;
    const take = Math.min(body.length - this.#bodyFill, available);
    chunk.copy(body, this.#bodyFill, pos, pos + take);
    this.#bodyFill += take;
    this.bytesRead += take;
    if (this.#bodyFill === body.length) this.#finishAssembled();
    return pos + take;
  }

  #finishAssembled(): void {
    const body = this.#body!;
    this.#body = null;
    this.#bodyFill = 0;
    this.#inFrame = false;
    if (this.#opts.onFrame(this.#type, body, 0, body.length) === false && !this.#failed) this.#paused = true;
  }

  #holdBack(chunk: Buffer, pos: number): void {
    if (pos < chunk.length) this.#pending = chunk.subarray(pos);
  }
}
