// One client connection to a relay: TCP (or TLS) connect, the handshake (pinning the relay's
// key), then frames in and out. RelayClient owns reconnection; a Link lives and dies with one socket.
//
// Over TLS the client accepts any certificate: it trusts the pinned relay key, which signs a
// transcript holding this connection's TLS channel binding, not a certificate authority. A
// proxy that terminates TLS has another channel toward the relay, so the signatures fail.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { connect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { Signer, verifySignature } from '../crypto/keys.js';
import type { RelayAddress } from '../protocol/address.js';
import {
  Code, codeMessage, codeName, FrameType, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
} from '../protocol/constants.js';
import { clientReadLimit, isFrameType } from '../protocol/frame-types.js';
import {
  encodeClose, encodeFrame, parseAdminResponse, parseClose, parseDeliver, parseResult,
  type AdminResponseFields, type DeliverFields, type ResultFields,
} from '../protocol/frames.js';
import {
  CHANNEL_BINDING_LABEL, CHANNEL_BINDING_LENGTH, chooseVersion, clientSignedBytes, encodeClientHello, parseServerHello,
  parseServerWelcome, relaySignedBytes, transcript, welcomeSignedFields, type WelcomeLimits,
} from '../protocol/handshake.js';
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
const FATAL_CODES = new Set<number>([Code.AUTH_FAILED, Code.NOT_AUTHORIZED, Code.UNSUPPORTED_VERSION, Code.REPLACED, Code.TRANSPORT_MISMATCH]);
/**
 * OpenSSL's answers when the peer does not speak TLS at all (a plain-TCP relay sends its
 * SERVER_HELLO, which is no TLS record): retrying cannot help.
 */
const NOT_TLS_ERRORS = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG', 'ERR_SSL_UNKNOWN_PROTOCOL', 'ERR_SSL_RECORD_LENGTH_MISMATCH', 'ERR_SSL_HTTP_REQUEST']);

export class Link {
  readonly socket: Socket;
  /** Frames out: whatever is written in one turn of the event loop leaves in one socket write. */
  readonly out: Outbound;
  readonly #signer: Signer;
  readonly #address: RelayAddress;
  readonly #handlers: LinkHandlers;
  readonly #reader: FrameReader;
  readonly #nonce = randomBytes(32);
  #state: 'connecting' | 'handshake' | 'ready' | 'ended' = 'connecting';
  #transcript: Buffer | null = null;
  /** The TLS channel binding (null on plain TCP), taken once TLS is up. */
  #channelBinding: Buffer | null = null;
  /** What the relay's welcome said about its limits (null before the welcome). */
  limits: WelcomeLimits | null = null;
  #end: LinkEnd | null = null;
  #timer: NodeJS.Timeout | null;
  #paused = false;
  /** CLIENT_HELLO flags (HelloFlags): the connection's role. */
  readonly #helloFlags: number;

  constructor(address: RelayAddress, signer: Signer, handlers: LinkHandlers, timeoutMs: number, helloFlags = 0) {
    this.#helloFlags = helloFlags;
    this.#address = address;
    this.#signer = signer;
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
        this.#channelBinding = socket.exportKeyingMaterial(CHANNEL_BINDING_LENGTH, CHANNEL_BINDING_LABEL, Buffer.alloc(0));
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
    if (type === FrameType.SERVER_HELLO && this.#transcript === null) return this.#onServerHello(buf, start, end);
    if (type === FrameType.SERVER_WELCOME && this.#transcript !== null) return this.#onWelcome(buf, start, end);
    this.fail(Code.UNEXPECTED_FRAME, `relay sent frame type 0x${type.toString(16)} during the handshake`, false);
  }

  #onServerHello(buf: Buffer, start: number, end: number): void {
    const hello = parseServerHello(buf, start, end);
    if (hello === null) return this.fail(Code.MALFORMED_FRAME, 'not a Pulltab relay (bad SERVER_HELLO)', true);
    if (!timingSafeEqual(hello.relayKey, this.#address.relayKey)) {
      return this.fail(Code.AUTH_FAILED, 'relay key does not match the key in the relay address', true);
    }
    const version = chooseVersion(hello.minVersion, hello.maxVersion, PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX);
    if (version === 0) return this.fail(Code.UNSUPPORTED_VERSION, `relay speaks protocol ${hello.minVersion}..${hello.maxVersion}, this client ${PROTOCOL_VERSION_MIN}..${PROTOCOL_VERSION_MAX}`, true);
    // The relay's range and our choice are signed by both sides: a downgrade shows as a bad signature.
    const t = transcript({
      relayKey: hello.relayKey, relayNonce: hello.relayNonce, minVersion: hello.minVersion, maxVersion: hello.maxVersion,
      clientKey: this.#signer.publicKey, clientNonce: this.#nonce, version, flags: this.#helloFlags,
      channelBinding: this.#channelBinding,
    });
    this.#transcript = t;
    const signature = this.#signer.sign(clientSignedBytes(t));
    this.write(encodeClientHello({ version, flags: this.#helloFlags, clientKey: Buffer.from(this.#signer.publicKey), clientNonce: this.#nonce, signature: Buffer.from(signature) }));
  }

  #onWelcome(buf: Buffer, start: number, end: number): boolean | void {
    const welcome = parseServerWelcome(buf, start, end);
    if (welcome === null) return this.fail(Code.MALFORMED_FRAME, 'relay sent a malformed SERVER_WELCOME', false);
    // The relay proves it holds the pinned key by signing this very handshake (and, over TLS, this channel).
    const fields = welcomeSignedFields(welcome.status, welcome.version, welcome.retryAfterMs, welcome.limits);
    if (!verifySignature(this.#address.relayKey, relaySignedBytes(this.#transcript!, fields), welcome.signature)) {
      return this.fail(Code.AUTH_FAILED, this.#channelBinding
        ? 'the relay\'s signature does not verify over this TLS connection: a TLS-terminating proxy or man in the middle sits between this client and the relay (channel binding mismatch), or the peer does not hold the pinned relay key'
        : 'relay did not prove it holds the pinned key', true);
    }
    if (welcome.status !== Code.OK) {
      return this.fail(welcome.status, `relay refused the connection: ${codeName(welcome.status)} (${codeMessage(welcome.status)})`, FATAL_CODES.has(welcome.status), welcome.retryAfterMs);
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.limits = welcome.limits;
    this.#state = 'ready';
    if (!this.#handlers.onReady()) return this.#pause();
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
    this.fail(code, reason, FATAL_CODES.has(code), close?.retryAfterMs ?? 0);
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
