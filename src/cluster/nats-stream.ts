// One cluster link's bytes, carried over NATS: the stream that a PeerLink (src/workers/link.ts)
// reads and writes, as it reads and writes a Unix socket between the workers of one host. What
// PeerLink writes in one turn leaves as one NATS message to the peer instance's subject (split
// where it passes the server's max_payload); the peer's messages are pushed in as they arrive.
//
// NATS core may lose messages (a reconnect, a slow consumer) but keeps the order of one
// publisher's messages to one subscriber. So each message is numbered: a gap breaks the link,
// exactly as a broken socket would (./nats-mesh.ts opens a new one, with a new generation, and the
// peer's presence is resent as a snapshot). The NATS client has no write backpressure, so the
// stream bounds what is in flight itself: past `window` bytes not yet acknowledged by the peer, a
// write's callback waits, and PeerLink sees its queue grow (it pauses its senders at half its
// budget, and misses BUSY past all of it) as it would on a slow socket. The peer acknowledges
// what it has read once per turn, on its own next message or an ACK of its own; it does not while
// its reading is paused, so a paused reader holds the sender back.
//
// A lost message that nothing follows would show no gap, so an ACK also says how many DATA
// messages its sender has sent, and each side sends one on every heartbeat of the mesh besides the
// ones after reading: a peer sees a lost tail at the next heartbeat, and a lost ACK never leaves
// the writes waiting on the window for good.
//
// A link message (integers big-endian):
//   kind u8 | from 16 | gen u32 | seq u32 | ackGen u32 | ack u32 | data
//     kind 1 DATA (data: the next bytes of the stream), 2 ACK (no data; seq: the seq the sender's
//     next DATA message will have, so every DATA before it was sent before this ACK).
//     from: the sending instance's id. gen: the sender's generation of this link (random per link),
//     seq: numbers its DATA messages from 0. ackGen, ack: the last DATA message read from the other
//     side (its gen, and seq; ackGen 0 before any).
import { Duplex } from 'node:stream';

export const LinkMessage = { DATA: 1, ACK: 2 } as const;
export const INSTANCE_ID_LENGTH = 16;
export const LINK_HEADER = 1 + INSTANCE_ID_LENGTH + 16;

export interface LinkMessageHeader {
  kind: number;
  from: string;
  gen: number;
  seq: number;
  ackGen: number;
  ack: number;
}

/** Reads a link message's header; null when it is too short. */
export function readLinkHeader(buf: Buffer): LinkMessageHeader | null {
  if (buf.length < LINK_HEADER) return null;
  const o = 1 + INSTANCE_ID_LENGTH;
  return {
    kind: buf[0],
    from: buf.toString('hex', 1, o),
    gen: buf.readUInt32BE(o),
    seq: buf.readUInt32BE(o + 4),
    ackGen: buf.readUInt32BE(o + 8),
    ack: buf.readUInt32BE(o + 12),
  };
}

export interface NatsStreamOptions {
  /** Publishes one link message to the peer's subject. */
  publish(message: Buffer): void;
  /** This instance's id (INSTANCE_ID_LENGTH bytes). */
  self: Buffer;
  /** Bytes sent and not yet acknowledged past which writes wait. */
  windowBytes: number;
  /** The largest NATS message the server takes (its max_payload). */
  maxMessageBytes: () => number;
  /** Counted into (shared by every link of an instance, for /metrics). */
  counters: LinkCounters;
}

/** What the links of an instance have carried: DATA messages (batches) and their bytes, each way. */
export interface LinkCounters {
  messagesOut: number;
  bytesOut: number;
  messagesIn: number;
  bytesIn: number;
  /** Writes that waited for the peer's acknowledgements (the window was full). */
  windowWaits: number;
}

export function newLinkCounters(): LinkCounters {
  return { messagesOut: 0, bytesOut: 0, messagesIn: 0, bytesIn: 0, windowWaits: 0 };
}

export class NatsStream extends Duplex {
  /** This side's generation (never 0). */
  readonly gen: number;
  /** The peer's generation, once its first DATA message (seq 0) has been read. */
  inGen = 0;
  readonly #options: NatsStreamOptions;
  #nextSeq = 0;
  /** The next seq expected from the peer. */
  #expected = 0;
  /** Sent and not acknowledged: seq and bytes of each, in order. */
  #unacked: number[] = [];
  #inFlight = 0;
  /** A write waiting for acknowledgements to bring #inFlight under the window. */
  #waiting: (() => void) | null = null;
  /** What this side has read and told the peer of. */
  #ackToSend = -1;
  #ackSent = -1;
  #ackScheduled = false;

  constructor(options: NatsStreamOptions) {
    super({ allowHalfOpen: false, writableHighWaterMark: 64 * 1024 });
    this.#options = options;
    this.gen = (Math.floor(Math.random() * 0xffff_fffe) + 1) >>> 0;
    // Reading again after a pause acknowledges what came meanwhile, letting the peer send more.
    // Not left to _read: the stream calls that once and not again until the next push.
    this.on('resume', () => {
      if (this.#ackToSend !== this.#ackSent) this.#scheduleAck();
    });
  }

  /**
   * A DATA message from the peer (gen and seq from its header): false when it is not the next one
   * (the link is broken: the caller closes it). Its first message must be seq 0.
   */
  received(gen: number, seq: number, data: Buffer): boolean {
    if (this.inGen === 0) {
      if (seq !== 0) return false;
      this.inGen = gen;
    }
    if (gen !== this.inGen || seq !== this.#expected) return false;
    this.#expected = (seq + 1) >>> 0;
    this.#ackToSend = seq;
    const counters = this.#options.counters;
    counters.messagesIn++;
    counters.bytesIn += data.length;
    if (data.length > 0) this.push(data);
    this.#scheduleAck();
    return true;
  }

  /**
   * An ACK from the peer says it had sent its DATA messages before seq `next` of generation gen:
   * false when one of them never came here (lost at the tail: the caller breaks the link). NATS
   * keeps one publisher's order, so each one sent before the ACK has arrived before it.
   */
  allReceived(gen: number, next: number): boolean {
    return gen !== this.inGen || next === this.#expected;
  }

  /**
   * Sends an ACK now, whether or not anything new was read (the mesh's heartbeat): what this side
   * has read (while paused, only what it had said before) and how far it has sent.
   */
  resendAck(): void {
    if (this.destroyed) return;
    this.#options.publish(this.#message(LinkMessage.ACK, this.#nextSeq, 0, this.isPaused() ? this.#ackSent : this.#ackToSend));
  }

  /** The peer has read our DATA messages up to seq `ack` of generation ackGen. */
  acknowledged(ackGen: number, ack: number): void {
    if (ackGen !== this.gen) return;
    const unacked = this.#unacked;
    let n = 0;
    // Modulo 2^32: seq is at or before ack while ack - seq is less than half the range.
    while (n < unacked.length && ((ack - unacked[n]) >>> 0) < 0x8000_0000) {
      this.#inFlight -= unacked[n + 1];
      n += 2;
    }
    if (n === 0) return;
    unacked.splice(0, n);
    if (this.#waiting !== null && this.#inFlight < this.#options.windowBytes) {
      const go = this.#waiting;
      this.#waiting = null;
      go();
    }
  }

  override _read(): void {
    // Pushed as messages arrive (and acknowledged on 'resume' after a pause).
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#send([chunk], chunk.length, callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    let bytes = 0;
    const buffers = chunks.map((c) => {
      bytes += c.chunk.length;
      return c.chunk;
    });
    this.#send(buffers, bytes, callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#unacked = [];
    this.#inFlight = 0;
    this.#waiting = null;
    callback(error);
  }

  #send(buffers: Buffer[], bytes: number, callback: () => void): void {
    const room = Math.max(1024, this.#options.maxMessageBytes() - LINK_HEADER);
    let b = 0;
    let at = 0;
    while (bytes > 0) {
      const n = Math.min(room, bytes);
      const message = this.#message(LinkMessage.DATA, this.#nextSeq, n);
      // Copies this message's share of the pieces behind the header.
      let o = LINK_HEADER;
      while (o < message.length) {
        const piece = buffers[b];
        const take = Math.min(piece.length - at, message.length - o);
        piece.copy(message, o, at, at + take);
        o += take;
        at += take;
        if (at === piece.length) {
          b++;
          at = 0;
        }
      }
      this.#unacked.push(this.#nextSeq, n);
      this.#inFlight += n;
      this.#nextSeq = (this.#nextSeq + 1) >>> 0;
      bytes -= n;
      this.#options.counters.messagesOut++;
      this.#options.counters.bytesOut += n;
      this.#options.publish(message);
    }
    if (this.#inFlight < this.#options.windowBytes) callback();
    else {
      this.#options.counters.windowWaits++;
      this.#waiting = callback;
    }
  }

  /** A message of `kind` with room for n data bytes, its header written, carrying `ack` (then sent). */
  #message(kind: number, seq: number, n: number, ack = this.#ackToSend): Buffer {
    const m = Buffer.allocUnsafe(LINK_HEADER + n);
    m[0] = kind;
    this.#options.self.copy(m, 1);
    const o = 1 + INSTANCE_ID_LENGTH;
    m.writeUInt32BE(this.gen, o);
    m.writeUInt32BE(seq, o + 4);
    const acking = ack >= 0;
    m.writeUInt32BE(acking ? this.inGen : 0, o + 8);
    m.writeUInt32BE(acking ? ack : 0, o + 12);
    this.#ackSent = ack;
    return m;
  }

  #scheduleAck(): void {
    if (this.#ackScheduled) return;
    this.#ackScheduled = true;
    setImmediate(() => {
      this.#ackScheduled = false;
      // Not while paused: the peer waits until this side reads again ('resume').
      if (this.destroyed || this.isPaused() || this.#ackToSend === this.#ackSent) return;
      this.#options.publish(this.#message(LinkMessage.ACK, this.#nextSeq, 0));
    });
  }
}
