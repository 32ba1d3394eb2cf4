// Per-connection output, of the relay's sessions and the client library's links: everything
// written to one socket in one event-loop turn leaves in one write (writev when it has
// several pieces).
//
// Small frames are copied into an accumulation buffer; a large body is queued as a slice of
// the buffer it arrived in, so it is never copied on its way through. The accumulation
// buffer is dropped after a quiet flush, so an idle connection holds no output memory.
import type { Socket } from 'node:net';
import { copyBytes } from './frames.js';

/** Bodies at least this long travel as their own slice instead of being copied. */
const ZERO_COPY_THRESHOLD = 2048;
const SMALL_BUFFER = 16 * 1024;
const LARGE_BUFFER = 256 * 1024;

export class Outbound {
  readonly #socket: Socket;
  #buf: Buffer | null = null;
  #segmentStart = 0;
  #used = 0;
  #pieces: Buffer[] = [];
  #piecesBytes = 0;
  #scheduled = false;
  #closed = false;
  #lastFlushBytes = 0;
  /** Frames and bytes handed to the socket, for metrics. */
  framesOut = 0;
  bytesOut = 0;

  constructor(socket: Socket) {
    this.#socket = socket;
  }

  /** Bytes accepted but not yet written by the kernel: queued here plus the socket's buffer. */
  get pendingBytes(): number {
    return this.#piecesBytes + (this.#used - this.#segmentStart) + this.#socket.writableLength;
  }

  /** The buffer the last reserve() returned an offset into. */
  get buffer(): Buffer {
    return this.#buf!;
  }

  /**
   * Reserves n contiguous bytes of `buffer` and returns the offset to write them at (no
   * allocation per call). The caller must fill all n bytes before the next call.
   */
  reserve(n: number): number {
    let buf = this.#buf;
    if (buf === null || buf.length - this.#used < n) {
      this.#sealSegment();
      const size = Math.max(n, this.#lastFlushBytes >= SMALL_BUFFER ? LARGE_BUFFER : SMALL_BUFFER);
      buf = this.#buf = Buffer.allocUnsafe(size);
      this.#segmentStart = 0;
      this.#used = 0;
    }
    const offset = this.#used;
    this.#used += n;
    this.framesOut++;
    this.#schedule();
    return offset;
  }

  /** Queues a whole encoded frame (copied when small, referenced when large). */
  writeFrame(frame: Buffer): void {
    if (frame.length < ZERO_COPY_THRESHOLD) {
      const offset = this.reserve(frame.length);
      frame.copy(this.#buf!, offset);
    } else {
      this.framesOut++;
      this.appendSlice(frame);
    }
  }

  /**
   * Queues a frame made of a header (written by the caller through the returned buffer) and
   * a body slice. Small bodies are copied behind the header; large ones go as a slice.
   * Returns the header's offset in `buffer`.
   */
  writeWithBody(headerLength: number, body: Buffer, bodyStart: number, bodyEnd: number): number {
    const bodyLength = bodyEnd - bodyStart;
    if (bodyLength < ZERO_COPY_THRESHOLD) {
      const offset = this.reserve(headerLength + bodyLength);
      copyBytes(body, bodyStart, bodyEnd, this.#buf!, offset + headerLength);
      return offset;
    }
    const offset = this.reserve(headerLength);
    this.appendSlice(body.subarray(bodyStart, bodyEnd));
    return offset;
  }

  /**
   * Like writeWithBody, but always copies the body: for bodies lent by the mailbox store, whose
   * memory is reused as soon as the caller returns.
   */
  writeWithBodyCopy(headerLength: number, body: Uint8Array, bodyStart: number, bodyEnd: number): number {
    const offset = this.reserve(headerLength + bodyEnd - bodyStart);
    copyBytes(body, bodyStart, bodyEnd, this.#buf!, offset + headerLength);
    return offset;
  }

  appendSlice(slice: Buffer): void {
    this.#sealSegment();
    this.#pieces.push(slice);
    this.#piecesBytes += slice.length;
    this.#schedule();
  }

  /** Writes everything queued now (used before closing the socket). */
  flushNow(): void {
    this.#flush();
  }

  close(): void {
    this.#closed = true;
    this.#pieces = [];
    this.#piecesBytes = 0;
    this.#buf = null;
  }

  #sealSegment(): void {
    if (this.#buf !== null && this.#used > this.#segmentStart) {
      this.#pieces.push(this.#buf.subarray(this.#segmentStart, this.#used));
      this.#piecesBytes += this.#used - this.#segmentStart;
      this.#segmentStart = this.#used;
    }
  }

  #schedule(): void {
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flushCallback);
    }
  }

  readonly #flushCallback = (): void => this.#flush();

  #flush(): void {
    this.#scheduled = false;
    if (this.#closed) return;
    this.#sealSegment();
    const pieces = this.#pieces;
    if (pieces.length === 0) return;
    const bytes = this.#piecesBytes;
    this.#pieces = [];
    this.#piecesBytes = 0;
    this.bytesOut += bytes;
    this.#lastFlushBytes = bytes;
    const socket = this.#socket;
    if (socket.destroyed) return;
    if (pieces.length === 1) {
      socket.write(pieces[0]);
    } else {
      socket.cork();
      for (const piece of pieces) socket.write(piece);
      socket.uncork();
    }
    // Keep the accumulation buffer only while traffic is heavy and it still has room.
    const buf = this.#buf;
    if (buf !== null && (bytes < SMALL_BUFFER || buf.length - this.#used < SMALL_BUFFER)) this.#buf = null;
  }
}
