// What the relay must do with a byte stream a client sends, from docs/PROTOCOL.md alone: which
// frames it reads, and the first one that makes it close the connection, with which code.
// The fuzzer feeds every byte it is about to write through an oracle, writes only up to the
// frame that ends the connection, and then checks that the relay did what the oracle says.
import {
  Code, FRAME_HEADER_LENGTH, FrameType, MAX_ADMIN_REQUEST_LENGTH, MAX_CONTROL_FRAME_LENGTH, MAX_HANDSHAKE_FRAME_LENGTH,
  maxSendFrameLength, type ProtocolLimits,
} from '../../src/protocol/constants.js';

/** How a connection ends, or that it stays open. */
export type Outcome =
  | { kind: 'open' }
  /** The relay sends CLOSE with this code and closes. */
  | { kind: 'close'; code: number }
  /** The relay closes without a CLOSE frame (the client sent CLOSE). */
  | { kind: 'end' }
  /** The relay answers the handshake with this status and closes (no CLOSE frame). */
  | { kind: 'welcome'; status: number };

export const OPEN: Outcome = { kind: 'open' };

export function describeOutcome(o: Outcome): string {
  switch (o.kind) {
    case 'open': return 'stays open';
    case 'end': return 'closed without CLOSE';
    case 'close': return `CLOSE ${codeLabel(o.code)}`;
    case 'welcome': return `SERVER_WELCOME ${codeLabel(o.status)}`;
  }
}

const CODE_LABELS = new Map<number, string>(Object.entries(Code).map(([k, v]) => [v, k]));
export const codeLabel = (code: number) => CODE_LABELS.get(code) ?? `0x${code.toString(16)}`;

const KNOWN = new Set<number>(Object.values(FrameType));
/** Known types a client never sends: the relay closes with UNEXPECTED_FRAME. */
const RELAY_ONLY = new Set<number>([
  FrameType.SERVER_HELLO, FrameType.CLIENT_HELLO, FrameType.SERVER_WELCOME, FrameType.RESULT, FrameType.DELIVER,
  FrameType.QUEUE_EMPTY, FrameType.NOTICE, FrameType.ADMIN_RESPONSE,
]);

export interface FeedResult {
  /** How many of the fed bytes to write: up to the end of the frame (or header) that ends the connection. */
  cut: number;
  /** Frames the relay reads in those bytes (complete frames, and a header it refuses). */
  frames: number;
  outcome: Outcome;
}

export class StreamOracle {
  phase: 'handshake' | 'active';
  readonly #sendMax: number;
  readonly #header = Buffer.alloc(FRAME_HEADER_LENGTH);
  #headerFill = 0;
  #type = 0;
  #length = 0;
  /** Payload bytes of the current frame still to come; -1 between frames. */
  #remaining = -1;
  #outcome: Outcome = OPEN;

  constructor(phase: 'handshake' | 'active', limits: ProtocolLimits) {
    this.phase = phase;
    this.#sendMax = maxSendFrameLength(limits);
  }

  get outcome(): Outcome {
    return this.#outcome;
  }

  /** True between frames: the relay holds no partial frame. */
  get atBoundary(): boolean {
    return this.#remaining < 0 && this.#headerFill === 0;
  }

  maxLength(type: number): number {
    if (this.phase === 'handshake') return MAX_HANDSHAKE_FRAME_LENGTH;
    if (type === FrameType.SEND || !KNOWN.has(type)) return this.#sendMax;
    if (type === FrameType.ADMIN_REQUEST) return MAX_ADMIN_REQUEST_LENGTH;
    return MAX_CONTROL_FRAME_LENGTH;
  }

  /**
   * What the header alone decides: during the handshake anything but CLIENT_HELLO, and after it a
   * type only the relay sends, is refused at the header whatever its length (a TLS record's
   * first byte, 0x16, during the handshake: TRANSPORT_MISMATCH). Null: the length decides.
   */
  headerVerdict(type: number): Outcome | null {
    if (this.phase === 'handshake' && type !== FrameType.CLIENT_HELLO) {
      return { kind: 'close', code: type === 0x16 ? Code.TRANSPORT_MISMATCH : Code.UNEXPECTED_FRAME };
    }
    if (this.phase === 'active' && RELAY_ONLY.has(type)) return { kind: 'close', code: Code.UNEXPECTED_FRAME };
    return null;
  }

  /** What a whole frame of this type and length does to the connection. */
  verdict(type: number, length: number): Outcome {
    if (this.phase === 'handshake') {
      if (type !== FrameType.CLIENT_HELLO) return { kind: 'close', code: Code.UNEXPECTED_FRAME };
      if (length < 130) return { kind: 'close', code: Code.MALFORMED_FRAME };
      // A fuzzed CLIENT_HELLO carries no valid signature.
      return { kind: 'welcome', status: Code.AUTH_FAILED };
    }
    switch (type) {
      case FrameType.SEND: return length < 4 ? { kind: 'close', code: Code.MALFORMED_FRAME } : OPEN;
      case FrameType.ACK: case FrameType.PING: return length !== 8 ? { kind: 'close', code: Code.MALFORMED_FRAME } : OPEN;
      case FrameType.PONG: return length !== 8 ? { kind: 'close', code: Code.MALFORMED_FRAME } : OPEN;
      // A CLOSE ends the connection either way; one that does not fit its layout is answered first.
      case FrameType.CLOSE: return length < 6 || length > 6 + 256 ? { kind: 'close', code: Code.MALFORMED_FRAME } : { kind: 'end' };
      case FrameType.ADMIN_REQUEST: return length < 4 ? { kind: 'close', code: Code.MALFORMED_FRAME } : OPEN;
      default: return RELAY_ONLY.has(type) ? { kind: 'close', code: Code.UNEXPECTED_FRAME } : OPEN;
    }
  }

  /** Walks bytes as the relay would; stops at the first frame that ends the connection. */
  feed(bytes: Buffer): FeedResult {
    let pos = 0;
    let frames = 0;
    if (this.#outcome.kind !== 'open') return { cut: 0, frames, outcome: this.#outcome };
    while (pos < bytes.length) {
      if (this.#remaining < 0) {
        const take = Math.min(FRAME_HEADER_LENGTH - this.#headerFill, bytes.length - pos);
        bytes.copy(this.#header, this.#headerFill, pos, pos + take);
        this.#headerFill += take;
        pos += take;
        if (this.#headerFill < FRAME_HEADER_LENGTH) break;
        this.#headerFill = 0;
        this.#type = this.#header[0];
        this.#length = this.#header.readUInt32BE(1);
        const early = this.headerVerdict(this.#type);
        if (early !== null) {
          this.#outcome = early;
          return { cut: pos, frames: frames + 1, outcome: early };
        }
        if (this.#length > this.maxLength(this.#type)) {
          this.#outcome = { kind: 'close', code: Code.FRAME_TOO_LARGE };
          return { cut: pos, frames: frames + 1, outcome: this.#outcome };
        }
        this.#remaining = this.#length;
      }
      const take = Math.min(this.#remaining, bytes.length - pos);
      pos += take;
      this.#remaining -= take;
      if (this.#remaining > 0) break;
      this.#remaining = -1;
      frames++;
      const outcome = this.verdict(this.#type, this.#length);
      if (outcome.kind !== 'open') {
        this.#outcome = outcome;
        return { cut: pos, frames, outcome };
      }
    }
    return { cut: pos, frames, outcome: OPEN };
  }
}
