// Fuzz input: valid frames of every type a client sends, mutations of them, random types and
// lengths, truncations, oversize lengths and plain garbage. Sloppy on purpose: the oracle, not
// this file, decides what each byte does to the connection.
import { FRAME_HEADER_LENGTH, FrameType, SendFlags } from '../../src/protocol/constants.js';
import { encodeAdminRequest, encodeAck, encodeFrame, encodeSend, type SendRecipient } from '../../src/protocol/frames.js';
import { chance, int, pick, randomBytes } from './random.js';

const MiB = 1024 * 1024;

/** A length that is usually small and now and then large. */
const size = (small: number, large: number) => (chance(0.95) ? int(small + 1) : int(large + 1));

const RELAY_ONLY_TYPES = [
  FrameType.SERVER_HELLO, FrameType.CLIENT_HELLO, FrameType.SERVER_WELCOME, FrameType.RESULT, FrameType.DELIVER,
  FrameType.QUEUE_EMPTY, FrameType.NOTICE, FrameType.ADMIN_RESPONSE,
];
const KNOWN = new Set<number>(Object.values(FrameType));
const UNKNOWN_TYPES = Array.from({ length: 256 }, (_, i) => i).filter((i) => !KNOWN.has(i));
const ADMIN_COMMANDS = ['stats', 'policy.list', 'policy.set', 'user.block', 'user.kick', 'mailbox.purge', 'metrics', 'nope'];

export interface FrameFactoryOptions {
  /** Keys a storable SEND may go to (their mailboxes fill up to the quota, then refuse). */
  sinks: Buffer[];
  /** Keys of well-behaved clients: a fuzzed SEND reaches them now and then. */
  victims: Buffer[];
}

export class FrameFactory {
  readonly #opts: FrameFactoryOptions;

  constructor(opts: FrameFactoryOptions) {
    this.#opts = opts;
  }

  /** A well-formed SEND: random recipients, flags, TTL, storage key, wrapped keys and body. */
  send(): Buffer {
    const toSinks = chance(0.2);
    const n = chance(0.9) ? 1 + int(3) : pick([0, 1 + int(64), 60 + int(20)]);
    const recipients: SendRecipient[] = [];
    for (let i = 0; i < n; i++) {
      const key = toSinks ? pick(this.#opts.sinks) : chance(0.002) ? pick(this.#opts.victims) : randomBytes(32);
      recipients.push({ key, wrappedKey: randomBytes(chance(0.5) ? 0 : size(81, 255)) });
    }
    if (n > 1 && chance(0.1)) recipients[1] = recipients[0];
    // STORE only towards the sinks, so the store holds a bounded number of mailboxes.
    let flags = pick([0, SendFlags.RECEIPT, SendFlags.STORE | SendFlags.RECEIPT, SendFlags.STORE, int(256)]);
    if (!toSinks) flags &= ~SendFlags.STORE;
    return encodeSend({
      seq: int(2 ** 32),
      flags,
      ttlSeconds: pick([0, 1 + int(3600), int(2 ** 32)]),
      storageKey: chance(0.2) ? randomBytes(16) : null,
      recipients,
      body: randomBytes(size(64, 8192)),
    });
  }

  /** A SEND whose body is just under or over the 1 MiB maximum (PAYLOAD_TOO_LARGE, connection open). */
  bigSend(): Buffer {
    return encodeSend({
      seq: int(2 ** 32), flags: SendFlags.RECEIPT, ttlSeconds: 0, storageKey: null,
      recipients: [{ key: randomBytes(32), wrappedKey: randomBytes(81) }], body: randomBytes(MiB - 2 + int(5)),
    });
  }

  /** A frame a relay accepts (or skips) and answers without closing, before any mutation. */
  wellFormed(): Buffer {
    if (chance(0.00005)) return this.bigSend();
    const r = Math.random();
    if (r < 0.45) return this.send();
    if (r < 0.55) return encodeAck(chance(0.5) ? int(100) : int(2 ** 52));
    if (r < 0.65) return encodeFrame(FrameType.PING, randomBytes(8));
    if (r < 0.7) return encodeFrame(FrameType.PONG, randomBytes(int(513)));
    if (r < 0.9) return encodeFrame(pick(UNKNOWN_TYPES), randomBytes(size(64, 20_000)));
    return this.admin();
  }

  admin(): Buffer {
    const json = chance(0.5)
      ? JSON.stringify({ command: pick(ADMIN_COMMANDS), args: { key: randomBytes(8).toString('hex'), n: int(10) } })
      : randomBytes(chance(0.99) ? int(200) : int(65_533)).toString('latin1');
    return encodeAdminRequest({ requestId: int(2 ** 32), json });
  }

  /** A well-formed frame with some payload bytes changed, or its payload cut or extended (header kept consistent). */
  mutated(): Buffer {
    const frame = Buffer.from(this.wellFormed());
    let payload = frame.subarray(FRAME_HEADER_LENGTH);
    const edits = 1 + int(4);
    for (let i = 0; i < edits && payload.length > 0; i++) payload[int(payload.length)] = chance(0.5) ? int(256) : pick([0, 0xff, 0x7f, 0x80]);
    // Length changes mostly on SEND, where any length from 4 up is read on; elsewhere they usually end the connection.
    const isSend = frame[0] === FrameType.SEND;
    const resize = isSend ? 0.3 : 0.002;
    if (chance(resize)) payload = payload.subarray(0, isSend && chance(0.99) ? Math.min(payload.length, 4 + int(payload.length)) : int(payload.length + 1));
    if (chance(resize)) payload = Buffer.concat([payload, randomBytes(int(64))]);
    return encodeFrame(frame[0], payload);
  }

  /** Something that usually ends the connection: a bad size, a wrong direction, an oversize length, garbage. */
  hostile(): Buffer {
    switch (int(8)) {
      case 0: return encodeFrame(pick([FrameType.ACK, FrameType.PING]), randomBytes(pick([0, 7, 9, int(513)])));
      case 1: return encodeFrame(pick(RELAY_ONLY_TYPES), randomBytes(int(200)));
      case 2: return this.oversizeHeader();
      case 3: return encodeFrame(FrameType.SEND, randomBytes(int(4)));
      case 4: return encodeFrame(FrameType.CLOSE, randomBytes(int(20)));
      case 5: return Buffer.from(randomBytes(1 + int(64)));
      case 6: {
        // A frame whose header lies about its type or length: the stream loses its framing.
        const frame = Buffer.from(this.wellFormed());
        frame[int(FRAME_HEADER_LENGTH)] = int(256);
        return frame;
      }
      default: return encodeFrame(FrameType.ADMIN_REQUEST, randomBytes(int(4)));
    }
  }

  /** Just a header: a random type with a length past any maximum. */
  oversizeHeader(): Buffer {
    const header = Buffer.allocUnsafe(FRAME_HEADER_LENGTH);
    header[0] = chance(0.5) ? pick([FrameType.SEND, FrameType.ACK, FrameType.CLIENT_HELLO, FrameType.ADMIN_REQUEST]) : int(256);
    header.writeUInt32BE(pick([0xffffffff, 0x7fffffff, 1025, 513, 65537, 1_067_035, 16 * 1024 * 1024]), 1);
    return header;
  }

  /** The front of a well-formed frame: the rest never comes. */
  truncated(): Buffer {
    const frame = this.wellFormed();
    return frame.subarray(0, 1 + int(frame.length - 1));
  }

  /** A batch of about targetBytes, mostly frames the relay reads on; hostileRate of pieces are hostile. */
  batch(targetBytes: number, hostileRate: number): Buffer {
    const pieces: Buffer[] = [];
    let bytes = 0;
    while (bytes < targetBytes) {
      const r = Math.random();
      const piece = r < hostileRate ? this.hostile() : r < 0.5 ? this.mutated() : this.wellFormed();
      pieces.push(piece);
      bytes += piece.length;
    }
    return Buffer.concat(pieces, bytes);
  }

  /** What a client might send instead of CLIENT_HELLO: garbage, other frames, bad hellos. */
  beforeHandshake(): Buffer {
    switch (int(5)) {
      case 0: return Buffer.from(randomBytes(1 + int(300)));
      case 1: return this.wellFormed();
      case 2: return encodeFrame(FrameType.CLIENT_HELLO, randomBytes(pick([0, 129, 130, 131, int(1025)])));
      case 3: return this.oversizeHeader();
      default: return Buffer.concat([this.mutated(), this.hostile()]);
    }
  }
}
