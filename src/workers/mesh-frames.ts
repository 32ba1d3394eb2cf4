// The frames the workers of one relay exchange over their Unix-socket mesh (./link.ts). Same
// framing as the relay's own protocol (type u8 | length u32 big-endian | payload, read by
// src/protocol/reader.ts); the types are the mesh's own. Only processes of one relay speak it
// (their sockets live in a directory of mode 0700): it changes with the code, and it is described
// here rather than in docs/PROTOCOL.md. Integers are big-endian.
//
//   HELLO     index u16 | pid u32                     first frame each way: who is at the other end
//   PRESENCE  n × (op u8 | key 32 | epoch u64)        op 1: this worker now holds key (its connection
//                                                     epoch); op 0: that connection left. A snapshot
//                                                     after HELLO, then the changes of each turn.
//   FORWARD   id u32 | flags u8 | ttl u32 | sender 32 | recipient 32 | has-storage-key u8 |
//             storage key 16 (zeros when absent) | wrapped-key length u8 | wrapped key | body
//                                                     one recipient's envelope of a SEND
//   OUTCOMES  n × (id u32 | count u16 | code i16)     the recipient's outcome of the FORWARDs id to
//                                                     id + count - 1 (ids modulo 2^32): a RESULT
//                                                     outcome code, or a miss (-1 gone, -2 busy)
//   MAILBOX   n × key 32                              "something was stored for these keys you hold"
//   PRESENCE_APPLIED  frames u32                      how many PRESENCE frames this end has applied
//                                                     since HELLO (modulo 2^32), sent after each: a
//                                                     connection's welcome waits for it (./presence.ts)
import { KEY_LENGTH, STORAGE_KEY_LENGTH } from '../protocol/constants.js';

export const MeshFrame = {
  HELLO: 1,
  PRESENCE: 2,
  FORWARD: 3,
  OUTCOMES: 4,
  MAILBOX: 5,
  PRESENCE_APPLIED: 6,
} as const;

export const HELLO_LENGTH = 6;
export const PRESENCE_APPLIED_LENGTH = 4;
export const PRESENCE_RECORD = 1 + KEY_LENGTH + 8;
export const OUTCOME_RECORD = 8;
/** The most forwards one OUTCOMES record answers. */
export const MAX_OUTCOME_RUN = 0xffff;
/** FORWARD's fixed part, before the wrapped key and the body. */
export const FORWARD_HEADER = 4 + 1 + 4 + KEY_LENGTH + KEY_LENGTH + 1 + STORAGE_KEY_LENGTH + 1;
/** Presence records per frame (a snapshot of many keys goes in several). */
export const PRESENCE_PER_FRAME = 16_384;

/** The longest payload each type may have; anything longer closes the link. */
export function meshMaxLength(type: number, maxBodyBytes: number): number {
  switch (type) {
    case MeshFrame.HELLO: return HELLO_LENGTH;
    case MeshFrame.PRESENCE: return PRESENCE_PER_FRAME * PRESENCE_RECORD;
    case MeshFrame.FORWARD: return FORWARD_HEADER + 255 + maxBodyBytes;
    case MeshFrame.OUTCOMES: return 1024 * 1024 * OUTCOME_RECORD;
    case MeshFrame.MAILBOX: return 1024 * 1024 * KEY_LENGTH;
    case MeshFrame.PRESENCE_APPLIED: return PRESENCE_APPLIED_LENGTH;
    default: return 0;
  }
}

const TWO_32 = 0x1_0000_0000;

export function writeU64(buf: Buffer, offset: number, value: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_32), offset);
  buf.writeUInt32BE(value % TWO_32, offset + 4);
}

export function readU64(buf: Buffer, offset: number): number {
  return buf.readUInt32BE(offset) * TWO_32 + buf.readUInt32BE(offset + 4);
}

export function helloFrame(index: number, pid: number): Buffer {
  const frame = Buffer.allocUnsafe(5 + HELLO_LENGTH);
  frame[0] = MeshFrame.HELLO;
  frame.writeUInt32BE(HELLO_LENGTH, 1);
  frame.writeUInt16BE(index, 5);
  frame.writeUInt32BE(pid >>> 0, 7);
  return frame;
}

/** Writes a frame header at offset; returns where the payload starts. */
export function writeFrameHeader(buf: Buffer, offset: number, type: number, length: number): number {
  buf[offset] = type;
  buf.writeUInt32BE(length, offset + 1);
  return offset + 5;
}
