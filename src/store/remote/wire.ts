// The hosted store's wire (./client.ts and ./host.ts): one Unix-domain stream between a worker and
// the process that owns the store. Each call or answer is one frame: type u8 (1) | length u32
// big-endian | the value in V8's serialization format (node:v8), which keeps Buffers and typed
// arrays as bytes. Every frame one side makes in one event-loop turn leaves in one write.
//
// Only processes of one relay ever speak it (the socket lives in a directory of mode 0700 that the
// primary made): it is not a protocol for clients, and it changes with the code.
import type { Socket } from 'node:net';
import { deserialize, serialize } from 'node:v8';
import { FrameReader } from '../../protocol/reader.js';
import type { MailboxLimits } from '../mailbox.js';

const VALUE = 1;
/** A value larger than this is a bug on the other side: the link is closed. */
const MAX_VALUE_BYTES = 1024 * 1024 * 1024;

/**
 * Sends values on a socket: each is serialized when pushed (so the caller's buffers are its own
 * again at once), as a frame of its own, and every frame of one turn leaves in one write.
 */
export class BatchWriter<T> {
  #frames: Buffer[] = [];
  #scheduled = false;
  readonly #socket: Socket;
  /** Made at each flush and sent first (the host's state), if given. */
  readonly #first: (() => T) | null;

  constructor(socket: Socket, first: (() => T) | null = null) {
    this.#socket = socket;
    this.#first = first;
  }

  push(value: T): void {
    pushFrame(this.#frames, value);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#flush());
  }

  #flush(): void {
    this.#scheduled = false;
    const frames = this.#frames;
    if (frames.length === 0 || this.#socket.destroyed) return;
    this.#frames = [];
    const socket = this.#socket;
    socket.cork();
    if (this.#first !== null) for (const piece of pushFrame([], this.#first())) socket.write(piece);
    for (const piece of frames) socket.write(piece);
    socket.uncork();
  }
}

/** Appends a value's frame as two pieces, its header and the serialized value (not copied again). */
function pushFrame(pieces: Buffer[], value: unknown): Buffer[] {
  const payload = serialize(value);
  const header = Buffer.allocUnsafe(5);
  header[0] = VALUE;
  header.writeUInt32BE(payload.length, 1);
  pieces.push(header, payload);
  return pieces;
}

/** Reads values from a socket and hands each to onValue, in order; a bad frame closes the socket. */
export function readBatches<T>(socket: Socket, onValue: (value: T) => void): void {
  const reader = new FrameReader({
    maxLength: (type) => (type === VALUE ? MAX_VALUE_BYTES : 0),
    onFrame: (_type, buf, start, end) => {
      onValue(deserialize(buf.subarray(start, end)) as T);
    },
    onError: () => socket.destroy(new Error('hosted store: malformed frame')),
  });
  socket.on('data', (chunk: Buffer) => {
    try {
      reader.push(chunk);
    } catch (err) {
      socket.destroy(err as Error);
    }
  });
}

/** A call: [id, method, ...arguments]. */
export type Call = [number, string, ...unknown[]];
/** An answer: [id, value] or [id, undefined, error]. id 0 carries the host's state (HostState). */
export type Answer = [number, unknown, WireError?];

export interface WireError {
  message: string;
  /** A PolicyStoreError's code, to be thrown again as one. */
  policyCode?: string;
}

/** What the host says of itself with every batch it sends. */
export interface HostState {
  status: { engine: string; writable: boolean; commitFailures: number; fileBytes: number | null };
  limits: MailboxLimits;
  /** Changes with every policy write, by any worker (PolicyStore.version). */
  policyVersion: number;
}
