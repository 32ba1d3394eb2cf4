// Per-connection output, of the relay's sessions and the client library's links: everything
// written to one socket in one event-loop turn leaves in one write (writev when it has
// several pieces).
//
// Small frames are copied into an accumulation buffer; a large body is queued as a slice of
// the buffer it arrived in, so it is never copied on its way through. The accumulation
// buffer is dropped after a quiet flush, so an idle connection holds no output memory.
import type { Writable } from 'node:stream';
import { copyBytes } from './frames.js';

/** Bodies at least this long travel as their own slice instead of being copied. */
const ZERO_COPY_THRESHOLD = 2048;
const SMALL_BUFFER = 16 * 1024;
const LARGE_BUFFER = 256 * 1024;
/**
 * Large accumulation buffers, written and done with, kept for reuse (at most 8 MiB, shared by
 * every connection). A fresh 256 KiB buffer is fresh memory that the kernel maps in on first
 * touch: measured here, copying 1 KiB bodies into fresh buffers cost 400–1,200 ns a body in
 * page faults, into a reused one 40 ns.
 */
const spareBuffers: Buffer[] = [];
const MAX_SPARE_BUFFERS = 32;

function takeLargeBuffer(): Buffer {
  return spareBuffers.pop() ?? Buffer.allocUnsafe(LARGE_BUFFER);
}

/** Returns buffers the socket has finished writing (their bytes are in the kernel, or were discarded). */
function giveBack(buffers: Buffer[]): void {
  for (const b of buffers) if (spareBuffers.length < MAX_SPARE_BUFFERS) spareBuffers.push(b);
}

export class Outbound {
  readonly #socket: Writable;
  #buf: Buffer | null = null;
  #segmentStart = 0;
  #used = 0;
  #pieces: Buffer[] = [];
  #piecesBytes = 0;
  /** Large buffers no longer filled whose bytes are still queued here or in the socket. */
  #retired: Buffer[] = [];
  #scheduled = false;
  #closed = false;
  /** Written but not sent until release() (see hold()). */
  #held = false;
  #lastFlushBytes = 0;
  /** Frames and bytes handed to the socket, for metrics. */
  framesOut = 0;
  bytesOut = 0;

  constructor(socket: Writable) {
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
      if (buf !== null && buf.length === LARGE_BUFFER) this.#retired.push(buf);
      const size = Math.max(n, this.#lastFlushBytes >= SMALL_BUFFER ? LARGE_BUFFER : SMALL_BUFFER);
      buf = this.#buf = size === LARGE_BUFFER ? takeLargeBuffer() : Buffer.allocUnsafe(size);
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

  /**
   * Sends nothing until release(): what is written meanwhile stays queued, in order. A relay's
   * welcome waits so until the other instances know the session is here.
   */
  hold(): void {
    this.#held = true;
  }

  release(): void {
    if (!this.#held) return;
    this.#held = false;
    this.#schedule();
  }

  /** Writes everything queued now (used before closing the socket), held or not. */
  flushNow(): void {
    this.#held = false;
    this.#flush();
  }

  close(): void {
    this.#closed = true;
    this.#pieces = [];
    this.#piecesBytes = 0;
    this.#buf = null;
    // Not given back: the socket may still be writing them (a polite close ends after them).
    this.#retired = [];
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
    if (this.#closed || this.#held) return;
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
    // Keep the accumulation buffer only while traffic is heavy and it still has room.
    const buf = this.#buf;
    if (buf !== null && (bytes < SMALL_BUFFER || buf.length - this.#used < SMALL_BUFFER)) {
      this.#buf = null;
      if (buf.length === LARGE_BUFFER) this.#retired.push(buf);
    }
    // The retired buffers' last bytes are among these pieces: once the last piece is written
    // (writes complete in order), the socket holds none of them.
    const retired = this.#retired;
    const done = retired.length > 0 ? () => giveBack(retired) : undefined;
    if (done) this.#retired = [];
    if (pieces.length === 1) {
      socket.write(pieces[0], done);
    } else {
      socket.cork();
      const last = pieces.length - 1;
      for (let i = 0; i < last; i++) socket.write(pieces[i]);
      socket.write(pieces[last], done);
      socket.uncork();
    }
  }
}
