// A raw Pulltab protocol peer for the load generator: a socket, the client side of the
// handshake (protocol/client-handshake.ts, as the client library runs it), then every frame
// handed to onFrame. It signs CLIENT_HELLO but pins no relay key and so does not verify the
// relay's signature on SERVER_WELCOME: the harness measures the relay, and the handshake load it
// creates must stay cheap. With tls it connects with TLS 1.3 and signs the channel binding, as
// the client library does.
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, TLSSocket } from 'node:tls';
import { Signer } from '../../src/crypto/keys.js';
import { ClientHandshake, HandshakeFailure } from '../../src/protocol/client-handshake.js';
import { Code, FrameType } from '../../src/protocol/constants.js';
import { channelBindingOf } from '../../src/protocol/handshake.js';
import { FrameReader } from '../../src/protocol/reader.js';

export type FrameFn = (type: number, buf: Buffer, start: number, end: number) => void;

export interface PeerOptions {
  port: number;
  signer: Signer;
  /** Called for each frame after the welcome. */
  onFrame?: FrameFn;
  /** Called after all frames of one received chunk were handled. */
  onChunkEnd?: () => void;
  timeoutMs?: number;
  /** Connect with TLS (the relay runs with a certificate). */
  tls?: boolean;
}

export class PulltabPeer {
  readonly socket: Socket;
  #state: 'hello' | 'welcome' | 'active' | 'closed' = 'hello';
  #onFrame: FrameFn | undefined;
  #onChunkEnd: (() => void) | undefined;
  #resolve!: () => void;
  #reject!: (err: Error) => void;
  readonly ready: Promise<void>;
  readonly #handshake: ClientHandshake;
  readonly #reader: FrameReader;

  constructor(opts: PeerOptions) {
    this.#handshake = new ClientHandshake({ signer: opts.signer, pinnedRelayKey: null });
    this.#onFrame = opts.onFrame;
    this.#onChunkEnd = opts.onChunkEnd;
    this.ready = new Promise((resolve, reject) => { this.#resolve = resolve; this.#reject = reject; });
    this.#reader = new FrameReader({
      maxLength: () => 64 * 1024 * 1024,
      onFrame: (type, buf, start, end) => this.#frame(type, buf, start, end),
      onError: () => this.#fail(new Error('frame too large')),
    });
    if (opts.tls) {
      this.socket = tlsConnect({ host: '127.0.0.1', port: opts.port, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
      this.socket.setNoDelay(true);
    } else {
      this.socket = connect({ host: '127.0.0.1', port: opts.port, noDelay: true });
    }
    this.socket.on('data', (chunk: Buffer) => {
      this.#reader.push(chunk);
      if (this.#state === 'active' && this.#onChunkEnd) this.#onChunkEnd();
    });
    this.socket.on('error', (err) => this.#fail(err));
    this.socket.on('close', () => {
      if (this.#state !== 'active') this.#fail(new Error('closed during handshake'));
      this.#state = 'closed';
    });
    const timeout = setTimeout(() => this.#fail(new Error('handshake timed out')), opts.timeoutMs ?? 30_000);
    this.ready.then(() => clearTimeout(timeout), () => clearTimeout(timeout));
  }

  set onFrame(fn: FrameFn) { this.#onFrame = fn; }
  set onChunkEnd(fn: () => void) { this.#onChunkEnd = fn; }

  #fail(err: Error): void {
    if (this.#state === 'hello' || this.#state === 'welcome') {
      this.#state = 'closed';
      this.#reject(err);
      this.socket.destroy();
    }
  }

  #frame(type: number, buf: Buffer, start: number, end: number): void {
    if (this.#state === 'active') {
      this.#onFrame?.(type, buf, start, end);
      return;
    }
    if (this.#state === 'hello') {
      if (type !== FrameType.SERVER_HELLO) return this.#fail(new Error(`expected SERVER_HELLO, got type 0x${type.toString(16)}`));
      const clientHello = this.#handshake.answer(buf, start, end, this.socket instanceof TLSSocket ? channelBindingOf(this.socket) : null);
      if (clientHello instanceof HandshakeFailure) return this.#fail(new Error(clientHello.reason));
      this.#state = 'welcome';
      this.socket.write(clientHello);
      return;
    }
    if (this.#state === 'welcome') {
      const welcome = type === FrameType.SERVER_WELCOME ? this.#handshake.check(buf, start, end) : null;
      if (!welcome || welcome instanceof HandshakeFailure || welcome.status !== Code.OK) {
        return this.#fail(new Error(`handshake refused (type 0x${type.toString(16)}, ${welcome instanceof HandshakeFailure ? welcome.reason : `status ${welcome?.status}`})`));
      }
      this.#state = 'active';
      this.#resolve();
    }
  }
}
