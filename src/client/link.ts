// One client connection to a relay: TCP (or TLS) connect, the handshake (pinning the relay's
// key), then frames in and out. RelayClient owns reconnection; a Link lives and dies with one socket.
//
// Over TLS the client accepts any certificate: it trusts the pinned relay key, which signs a
// transcript holding this connection's TLS channel binding, not a certificate authority. A
// proxy that terminates TLS has another channel toward the relay, so the signatures fail.
import { connect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Signer } from '../crypto/keys.js';
import type { RelayAddress } from '../protocol/address.js';
import { ClientHandshake, HandshakeFailure, retryCannotHelp, welcomeRefusal } from '../protocol/client-handshake.js';
import { Code, codeMessage, codeName, FrameType } from '../protocol/constants.js';
import { clientReadLimit, isFrameType } from '../protocol/frame-types.js';
import {
  encodeClose, encodeFrame, parseAdminResponse, parseClose, parseDeliver, parseResult,
  type AdminResponseFields, type DeliverFields, type ResultFields,
} from '../protocol/frames.js';
import { channelBindingOf, type WelcomeLimits } from '../protocol/handshake.js';
import { Outbound } from '../protocol/outbound.js';
import { FrameReader } from '../protocol/reader.js';

/** Why a link ended: a relay CLOSE or failed welcome (code), a local error, or the socket closing. */
export interface LinkEnd {
  code: number;
  reason: string;
  retryAfterMs: number;
  /** True when retrying cannot help (bad key, refused authorization, replaced by a newer connection). */
  fatal: boolean;
}

export interface LinkHandlers {
  /** Returns false to start without reading (the client already holds as many messages as it will). */
  onReady(): boolean;
  /** Returns false to stop reading (the client holds as many messages as it will): see resume(). */
  onDeliver(fields: DeliverFields): boolean;
  onResult(fields: ResultFields): void;
  onQueueEmpty(): void;
  onNotice(code: number, reason: string): void;
  onAdminResponse(fields: AdminResponseFields): void;
  /** A PONG: the relay's answer to one of this client's PINGs (payload at buf[start, end)). */
  onPong(buf: Buffer, start: number, end: number): void;
  /** The socket's buffer emptied (after it had filled): the client may have room to send again. */
  onDrain(): void;
  onEnd(end: LinkEnd): void;
}

/** How long a closing client waits for the relay to close its side. */
const CLOSE_LINGER_MS = 2000;
/**
 * OpenSSL's answers when the peer does not speak TLS at all (a plain-TCP relay sends its
 * SERVER_HELLO, which is no TLS record): retrying cannot help.
 */
const NOT_TLS_ERRORS = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG', 'ERR_SSL_UNKNOWN_PROTOCOL', 'ERR_SSL_RECORD_LENGTH_MISMATCH', 'ERR_SSL_HTTP_REQUEST']);

export class Link {
  readonly socket: Socket;
  /** Frames out: whatever is written in one turn of the event loop leaves in one socket write. */
  readonly out: Outbound;
  readonly #handlers: LinkHandlers;
  readonly #reader: FrameReader;
  /** The client side of the handshake, pinning the address's relay key. */
  readonly #handshake: ClientHandshake;
  #state: 'connecting' | 'handshake' | 'ready' | 'ended' = 'connecting';
  /** The TLS channel binding (null on plain TCP), taken once TLS is up. */
  #channelBinding: Buffer | null = null;
  /** What the relay's welcome said about its limits (null before the welcome). */
  limits: WelcomeLimits | null = null;
  #end: LinkEnd | null = null;
  #timer: NodeJS.Timeout | null;
  #paused = false;

  /** helloFlags: CLIENT_HELLO flags (HelloFlags), the connection's role. */
  constructor(address: RelayAddress, signer: Signer, handlers: LinkHandlers, timeoutMs: number, helloFlags = 0) {
    this.#handshake = new ClientHandshake({ signer, pinnedRelayKey: address.relayKey, flags: helloFlags });
    this.#handlers = handlers;
    this.#reader = new FrameReader({
      // The limits of frame-types.ts; after the handshake, unknown types are skipped.
      maxLength: (type) => clientReadLimit(type, this.#state !== 'ready'),
      skip: (type) => this.#state === 'ready' && !isFrameType(type),
      onFrame: (type, buf, start, end) => this.#onFrame(type, buf, start, end),
      onError: (_kind, type, length) => this.fail(Code.FRAME_TOO_LARGE, `relay sent frame type 0x${type.toString(16)} of ${length} bytes`, false),
    });
    this.#timer = setTimeout(() => this.fail(Code.HANDSHAKE_TIMEOUT, `no answer from the relay at ${address.host}:${address.port} within ${timeoutMs} ms`, false), timeoutMs);
    // TCP keepalive notices a relay host that vanished without closing (the relay's own PINGs
    // keep the connection busy in the other direction).
    if (address.tls) {
      // TLS 1.3 only: the channel binding (RFC 9266 tls-exporter) is defined for it. SNI only
      // for a name (an IP address is not allowed there).
      const socket = tlsConnect({
        host: address.host, port: address.port, rejectUnauthorized: false, minVersion: 'TLSv1.3',
        ...(isIP(address.host) === 0 ? { servername: address.host } : {}),
      });
      socket.setNoDelay(true);
      socket.setKeepAlive(true, 30_000);
      socket.on('secureConnect', () => {
        this.#channelBinding = channelBindingOf(socket);
        if (this.#state === 'connecting') this.#state = 'handshake';
      });
      this.socket = socket;
    } else {
      this.socket = connect({ host: address.host, port: address.port, noDelay: true, keepAlive: true, keepAliveInitialDelay: 30_000 });
      this.socket.on('connect', () => { if (this.#state === 'connecting') this.#state = 'handshake'; });
    }
    this.out = new Outbound(this.socket);
    this.socket.on('drain', () => this.#handlers.onDrain());
    this.socket.on('data', (chunk: Buffer) => this.#reader.push(chunk));
    this.socket.on('error', (err: NodeJS.ErrnoException) => {
      if (address.tls && this.#channelBinding === null && err.code?.startsWith('ERR_SSL_')) {
        const notTls = NOT_TLS_ERRORS.has(err.code);
        return this.fail(notTls ? Code.TRANSPORT_MISMATCH : 0, notTls
          ? `the relay at ${address.host}:${address.port} does not speak TLS (${err.code}): a plain-TCP relay's address starts with pulltab://, not pulltabs://`
          : `TLS handshake with the relay at ${address.host}:${address.port} failed: ${err.code}`, notTls);
      }
      this.fail(0, describeSocketError(err, address), false);
    });
    this.socket.on('close', () => this.fail(0, this.#state === 'ready' ? 'connection closed by the relay' : `connection to ${address.host}:${address.port} closed during the handshake${address.tls && this.#channelBinding === null ? ' (before TLS was up: the relay may be full, or not a TLS port)' : ''}`, false));
  }

  get ready(): boolean {
    return this.#state === 'ready';
  }

  /** Queues a whole frame (copied when small); everything written in one turn leaves in one write. */
  write(frame: Buffer): void {
    if (this.#state === 'ended') return;
    this.out.writeFrame(frame);
  }

  /** Bytes written and not yet taken by the kernel: queued here plus the socket's own buffer. */
  get pendingBytes(): number {
    return this.out.pendingBytes;
  }

  /**
   * Reads again after onDeliver returned false: first the frames the reader kept back (which may
   * stop it again), then the socket. While stopped, TCP pushes back on the relay.
   */
  resume(): void {
    if (!this.#paused || this.#state === 'ended') return;
    this.#paused = false;
    this.#reader.resume();
    if (!this.#paused) this.socket.resume();
  }

  /** Ends the link with this reason (once); the socket is destroyed. */
  fail(code: number, reason: string, fatal: boolean, retryAfterMs = 0): void {
    if (this.#end) return;
    this.#end = { code, reason, retryAfterMs, fatal };
    this.#state = 'ended';
    if (this.#timer) clearTimeout(this.#timer);
    this.#reader.stop();
    this.out.close();
    this.socket.destroy();
    this.#handlers.onEnd(this.#end);
  }

  /**
   * Closes politely: sends CLOSE after whatever is queued (a final ACK above all) and keeps
   * reading, discarding, until the relay closes its side. Destroying the socket at once would
   * make the kernel reset the connection if anything unread were waiting, and drop what had
   * not been sent yet.
   */
  close(): void {
    if (this.#end) return;
    const ready = this.#state === 'ready';
    this.#end = { code: Code.OK, reason: 'closed by the client', retryAfterMs: 0, fatal: true };
    this.#state = 'ended';
    if (this.#timer) clearTimeout(this.#timer);
    this.#reader.stop();
    if (ready) {
      this.out.flushNow();
      this.out.close();
      this.socket.end(encodeClose(FrameType.CLOSE, { code: Code.OK, retryAfterMs: 0, reason: '' }));
      this.socket.resume();
      setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
    } else {
      this.out.close();
      this.socket.destroy();
    }
    this.#handlers.onEnd(this.#end);
  }

  #onFrame(type: number, buf: Buffer, start: number, end: number): boolean | void {
    if (this.#state === 'ready') {
      switch (type) {
        case FrameType.DELIVER: {
          const fields = parseDeliver(buf, start, end);
          if (fields === null) return this.fail(Code.MALFORMED_FRAME, 'relay sent a malformed DELIVER', false);
          if (this.#handlers.onDeliver(fields)) return;
          return this.#pause();
        }
        case FrameType.RESULT: {
          const fields = parseResult(buf, start, end);
          if (fields === null) return this.fail(Code.MALFORMED_FRAME, 'relay sent a malformed RESULT', false);
          this.#handlers.onResult(fields);
          return;
        }
        case FrameType.QUEUE_EMPTY:
          this.#handlers.onQueueEmpty();
          return;
        case FrameType.PING:
          this.write(encodeFrame(FrameType.PONG, buf.subarray(start, end)));
          return;
        case FrameType.NOTICE: {
          const notice = parseClose(buf, start, end);
          if (notice) this.#handlers.onNotice(notice.code, notice.reason);
          return;
        }
        case FrameType.CLOSE:
          return this.#onClose(buf, start, end);
        case FrameType.ADMIN_RESPONSE: {
          const fields = parseAdminResponse(buf, start, end);
          if (fields === null) return this.fail(Code.MALFORMED_FRAME, 'relay sent a malformed ADMIN_RESPONSE', false);
          this.#handlers.onAdminResponse(fields);
          return;
        }
        case FrameType.PONG:
          this.#handlers.onPong(buf, start, end);
          return;
        default:
          return; // frames a client does not act on
      }
    }
    if (type === FrameType.CLOSE) return this.#onClose(buf, start, end);
    if (type === FrameType.SERVER_HELLO && !this.#handshake.answered) return this.#onServerHello(buf, start, end);
    if (type === FrameType.SERVER_WELCOME && this.#handshake.answered) return this.#onWelcome(buf, start, end);
    this.fail(Code.UNEXPECTED_FRAME, `relay sent frame type 0x${type.toString(16)} during the handshake`, false);
  }

  #onServerHello(buf: Buffer, start: number, end: number): void {
    // TLS is up before the relay's first byte: the binding is known by now.
    const clientHello = this.#handshake.answer(buf, start, end, this.#channelBinding);
    if (clientHello instanceof HandshakeFailure) return this.#failWith(clientHello);
    this.write(clientHello);
  }

  #onWelcome(buf: Buffer, start: number, end: number): boolean | void {
    const welcome = this.#handshake.check(buf, start, end);
    if (welcome instanceof HandshakeFailure) return this.#failWith(welcome);
    const refusal = welcomeRefusal(welcome);
    if (refusal !== null) return this.#failWith(refusal);
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.limits = welcome.limits;
    this.#state = 'ready';
    if (!this.#handlers.onReady()) return this.#pause();
  }

  #failWith(failure: HandshakeFailure): void {
    this.fail(failure.code, failure.reason, failure.fatal, failure.retryAfterMs);
  }

  /** The reader keeps the rest of this chunk; the socket stops reading until resume(). */
  #pause(): false {
    this.#paused = true;
    this.socket.pause();
    return false;
  }

  #onClose(buf: Buffer, start: number, end: number): void {
    const close = parseClose(buf, start, end);
    const code = close?.code ?? Code.MALFORMED_FRAME;
    const reason = close ? `relay closed the connection: ${codeName(code)} (${close.reason || codeMessage(code)})` : 'relay sent a malformed CLOSE';
    this.fail(code, reason, retryCannotHelp(code), close?.retryAfterMs ?? 0);
  }
}

function describeSocketError(err: NodeJS.ErrnoException, address: RelayAddress): string {
  const where = `${address.host}:${address.port}`;
  switch (err.code) {
    case 'ECONNREFUSED': return `cannot connect to the relay at ${where}: connection refused`;
    case 'ENOTFOUND': case 'EAI_AGAIN': return `cannot resolve relay host ${address.host}`;
    case 'ETIMEDOUT': return `cannot connect to the relay at ${where}: timed out`;
    case 'ECONNRESET': return `connection to the relay at ${where} was reset`;
    case 'EPIPE': return `connection to the relay at ${where} was closed`;
    default: return `connection to the relay at ${where} failed: ${err.code ?? err.message}`;
  }
}
