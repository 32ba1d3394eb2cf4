// One accepted socket: drives the handshake, then hands each frame to the router.
// socket → FrameReader → Connection (checks the frame may come now) → Router.
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { keyIdOf } from '../crypto/key-id.js';
import { verifySignature, type Signer } from '../crypto/keys.js';
import {
  Code, codeMessage, FrameType, HelloFlags, maxSendFrameLength, PING_LENGTH, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
} from '../protocol/constants.js';
import { isFrameType, relayReadLimit } from '../protocol/frame-types.js';
import {
  encodeAdminResponse, encodeClose, encodeFrame, parseAck, parseAdminRequest, parseClose, type AdminResponse,
} from '../protocol/frames.js';
import {
  clientSignedBytes, encodeServerHello, encodeServerWelcome, NO_LIMITS, parseClientHello, relaySignedBytes, transcript,
  welcomeSignedFields, type WelcomeLimits,
} from '../protocol/handshake.js';
import { FrameReader } from '../protocol/reader.js';
import type { RelayConfig } from './config.js';
import type { Router } from './router.js';
import { ReadPause, Session, type SenderLimits } from './session.js';
import { TokenBucket } from './token-bucket.js';
import type { RelayStats } from './stats.js';

export interface RelayContext {
  readonly config: RelayConfig;
  readonly signer: Signer;
  readonly router: Router;
  readonly stats: RelayStats;
  readonly log: Logger;
  /** Extra admission check after the key is proven (policies hook in here); OK to admit. */
  admit(clientKey: Buffer): number;
  /** The sending limits of a key (the relay's configuration, or its policy's). */
  limitsFor(clientKey: Buffer): SenderLimits;
  connectionClosed(connection: Connection): void;
  /** Called once per connection when it leaves the handshake, however it leaves it. */
  handshakeFinished(): void;
  /** Carries out an admin request from an authenticated caller; never rejects. */
  admin(caller: Session, json: string): Promise<AdminResponse>;
  /** A handshake was refused with this code; the key when it proved itself (signature valid); tls: over TLS. */
  handshakeRefused?(code: number, clientKey: Buffer | null, tls: boolean): void;
  /** A TLS ClientHello reached this plain port (the client used pulltabs:// for a plain relay). */
  transportMismatch?(what: 'tls-on-plain' | 'plain-on-tls'): void;
}

/** How the connection reached the relay: its TLS channel binding (null on plain TCP) and what is left of the handshake deadline. */
export interface ConnectionTransport {
  channelBinding: Buffer | null;
  deadlineMs: number;
}

/** The first byte of a TLS record carrying a handshake message: a TLS ClientHello on this plain port. */
const TLS_HANDSHAKE_RECORD = 0x16;
/** How long a closing connection may take to read our CLOSE before it is destroyed. */
const CLOSE_LINGER_MS = 2000;
/** Retry hint with TOO_MANY_CONNECTIONS: a CLI send holds its connection for well under a second. */
const SEND_ONLY_FULL_RETRY_MS = 1000;

export class Connection {
  readonly socket: Socket;
  readonly #ctx: RelayContext;
  readonly #reader: FrameReader;
  readonly #nonce = randomBytes(32);
  #state: 'handshake' | 'active' | 'closing' | 'closed' = 'handshake';
  #handshakeTimer: NodeJS.Timeout | null;
  session: Session | null = null;
  // Rate limiting (null buckets: unlimited).
  #byteBucket: TokenBucket | null = null;
  #messageBucket: TokenBucket | null = null;
  #toldRateLimited = false;
  /** Why the socket is not being read (ReadPause bits); read while 0. */
  #pauses = 0;
  /** Frames handled since this connection last let the others have a turn. */
  #framesSinceYield = 0;
  // Liveness: something arrived since the last tick; when we last heard; when we pinged.
  #heard = true;
  #lastHeardAt = Date.now();
  #pingSentAt = 0;
  // Slow consumer: output the kernel has taken so far, and since when it has taken none.
  #dispatched = 0;
  #stalledSince = 0;

  readonly #channelBinding: Buffer | null;

  constructor(socket: Socket, ctx: RelayContext, transport: ConnectionTransport = { channelBinding: null, deadlineMs: ctx.config.handshakeTimeoutMs }) {
    this.socket = socket;
    this.#ctx = ctx;
    this.#channelBinding = transport.channelBinding;
    const sendMax = maxSendFrameLength(ctx.config);
    this.#reader = new FrameReader({
      // The limits of frame-types.ts. A frame that may not come now has the limit 0, so it is
      // refused at its header whatever its length: onError answers UNEXPECTED_FRAME for it.
      maxLength: (type) => relayReadLimit(type, this.#state === 'handshake', sendMax),
      // After the handshake, unknown types are skipped so newer clients can talk to this relay.
      skip: (type) => this.#state !== 'handshake' && !isFrameType(type),
      onFrame: (type, buf, start, end) => this.#onFrame(type, buf, start, end),
      onError: (_kind, type, length) => {
        const inHandshake = this.#state === 'handshake';
        if (relayReadLimit(type, inHandshake, sendMax) === 0) {
          if (inHandshake) return this.#unexpectedInHandshake(type);
          return this.#protocolError(Code.UNEXPECTED_FRAME, `frame type 0x${type.toString(16)} is not sent by clients`);
        }
        this.#protocolError(Code.FRAME_TOO_LARGE, `frame type 0x${type.toString(16)} of ${length} bytes is longer than allowed`);
      },
    });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', () => { /* 'close' follows; socket errors are routine (resets) */ });
    socket.on('close', () => this.#onClose());
    socket.on('drain', () => {
      if (!this.session) return;
      this.#ctx.router.handleWritable(this.session);
      this.#resumeIfOutputDrained();
    });
    this.#handshakeTimer = setTimeout(() => {
      this.#ctx.stats.handshakesTimedOut++;
      this.close(Code.HANDSHAKE_TIMEOUT, codeMessage(Code.HANDSHAKE_TIMEOUT));
    }, Math.max(1, transport.deadlineMs));
    socket.write(encodeServerHello({
      minVersion: PROTOCOL_VERSION_MIN, maxVersion: PROTOCOL_VERSION_MAX,
      relayKey: Buffer.from(ctx.signer.publicKey), relayNonce: this.#nonce,
    }));
  }

  get inHandshake(): boolean {
    return this.#state === 'handshake';
  }

  #onData(chunk: Buffer): void {
    this.#heard = true;
    this.#ctx.stats.bytesIn += chunk.length;
    // Bytes already read are never dropped: the reader keeps what it has not handled while paused.
    if (this.#byteBucket !== null && !this.#byteBucket.take(chunk.length)) this.#throttle(this.#byteBucket.waitMs());
    try {
      this.#reader.push(chunk);
    } catch (err) {
      // A bug must cost this connection only, never the relay.
      this.#ctx.log.error({ event: 'connection_error', err: (err as Error).stack }, 'error handling a frame');
      this.close(Code.MALFORMED_FRAME, 'internal error handling a frame');
    }
  }

  #onFrame(type: number, buf: Buffer, start: number, end: number): boolean | void {
    this.#ctx.stats.framesIn++;
    if (this.#state === 'active') {
      this.#onActiveFrame(type, buf, start, end);
      if (this.#state !== 'active') return;
      const session = this.session!;
      // Replies to what this connection sends (PONGs, RESULTs, admin answers) count against its
      // output too: past the bound it is not read until it reads what it was sent.
      if (session.out.pendingBytes > this.#outputPauseBytes()) {
        this.#ctx.stats.outputPauses++;
        this.#pause(ReadPause.OUTPUT);
      }
      // Fairness: one connection's flood never holds the event loop for longer than its share.
      if (++this.#framesSinceYield >= this.#ctx.config.readFramesPerTurn) this.#yieldTurn();
      // false: the reader keeps the rest of the chunk until reading resumes.
      return this.#pauses === 0;
    }
    if (this.#state === 'handshake') {
      if (type !== FrameType.CLIENT_HELLO) return this.#unexpectedInHandshake(type);
      this.#onClientHello(buf, start, end);
    }
  }

  /** Anything but CLIENT_HELLO during the handshake; a TLS ClientHello gets its own code. */
  #unexpectedInHandshake(type: number): void {
    if (type === TLS_HANDSHAKE_RECORD) {
      this.#ctx.transportMismatch?.('tls-on-plain');
      return this.#protocolError(Code.TRANSPORT_MISMATCH, 'this relay port is plain TCP and the client sent a TLS ClientHello: use the pulltab:// address');
    }
    this.#protocolError(Code.UNEXPECTED_FRAME, `expected CLIENT_HELLO, got frame type 0x${type.toString(16)}`);
  }

  #onActiveFrame(type: number, buf: Buffer, start: number, end: number): void {
    const session = this.session!;
    switch (type) {
      case FrameType.SEND:
        if (this.#ctx.router.handleSend(session, buf, start, end) === 'close-malformed') {
          this.#protocolError(Code.MALFORMED_FRAME, 'SEND shorter than its sequence number');
        }
        if (this.#messageBucket !== null && !this.#messageBucket.take(1)) this.#throttle(this.#messageBucket.waitMs());
        return;
      case FrameType.ACK: {
        const id = parseAck(buf, start, end);
        if (id === null) return this.#protocolError(Code.MALFORMED_FRAME, 'ACK must be 8 bytes');
        this.#ctx.router.handleAck(session, id);
        return;
      }
      case FrameType.PING:
        if (end - start !== PING_LENGTH) return this.#protocolError(Code.MALFORMED_FRAME, 'PING must be 8 bytes');
        session.out.writeFrame(encodeFrame(FrameType.PONG, buf.subarray(start, end)));
        return;
      case FrameType.PONG:
        if (end - start !== PING_LENGTH) return this.#protocolError(Code.MALFORMED_FRAME, 'PONG must be 8 bytes');
        return;
      case FrameType.CLOSE:
        // The client's code and reason are not acted on; a CLOSE that does not fit its layout is
        // still the end of the connection, answered with the code that says why.
        if (parseClose(buf, start, end) === null) return this.#protocolError(Code.MALFORMED_FRAME, 'CLOSE must be 6 to 262 bytes');
        this.close(Code.OK, 'closed by client', false);
        return;
      case FrameType.ADMIN_REQUEST: {
        const request = parseAdminRequest(buf, start, end);
        if (request === null) return this.#protocolError(Code.MALFORMED_FRAME, 'ADMIN_REQUEST shorter than its request id');
        this.#ctx.admin(session, request.json).then((answer) => {
          if (!session.closed) session.out.writeFrame(encodeAdminResponse({ requestId: request.requestId, ...answer }));
        });
        return;
      }
      default:
        return this.#protocolError(Code.UNEXPECTED_FRAME, `frame type 0x${type.toString(16)} is not sent by clients`);
    }
  }

  /**
   * Output past which the connection is not read: the outbound budget (where routing to it
   * stops) plus the largest message one routing decision can add over it, so only replies to
   * its own frames can take it there.
   */
  #outputPauseBytes(): number {
    const config = this.#ctx.config;
    return config.outboundBudgetBytes + config.maxPayloadBytes + 64 * 1024;
  }

  #resumeIfOutputDrained(): void {
    if ((this.#pauses & ReadPause.OUTPUT) !== 0 && this.session!.out.pendingBytes <= this.#ctx.config.outboundBudgetBytes) {
      this.#resume(ReadPause.OUTPUT);
    }
  }

  /** Lets the other connections' reads run before this one's next frame. */
  #yieldTurn(): void {
    this.#framesSinceYield = 0;
    if ((this.#pauses & ReadPause.TURN) !== 0) return;
    this.#ctx.stats.turnYields++;
    this.#pause(ReadPause.TURN);
    setImmediate(() => this.#resume(ReadPause.TURN));
  }

  /** Stops reading for a reason; TCP holds the client back meanwhile. */
  #pause(reason: number): void {
    if (this.#pauses === 0) this.socket.pause();
    this.#pauses |= reason;
  }

  /** Drops a reason; once none is left, handles what the reader held back, then reads again. */
  #resume(reason: number): void {
    if ((this.#pauses & reason) === 0) return;
    this.#pauses &= ~reason;
    if (this.#pauses !== 0 || this.#state !== 'active') return;
    this.#reader.resume(); // may pause again, for what it had held back
    if (this.#pauses === 0 && this.#state === 'active') this.socket.resume();
  }

  #onClientHello(buf: Buffer, start: number, end: number): void {
    const ctx = this.#ctx;
    const hello = parseClientHello(buf, start, end);
    if (hello === null) return this.#protocolError(Code.MALFORMED_FRAME, 'CLIENT_HELLO too short');
    if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = null;
    // Everything negotiated is signed: the range this relay offered, the version and flags the
    // client chose, and the TLS channel this relay sees (a proxy's other channel differs).
    const t = transcript({
      relayKey: ctx.signer.publicKey, relayNonce: this.#nonce, minVersion: PROTOCOL_VERSION_MIN, maxVersion: PROTOCOL_VERSION_MAX,
      clientKey: hello.clientKey, clientNonce: hello.clientNonce, version: hello.version, flags: hello.flags,
      channelBinding: this.#channelBinding,
    });
    // The same work on every path: verify, decide, sign, answer with the same frame shape.
    // A small-order or non-canonical clientKey fails here too (AUTH_FAILED), after one
    // verification like any other: verifySignature is strict RFC 8032 and refuses those keys.
    const signatureOk = verifySignature(hello.clientKey, clientSignedBytes(t), hello.signature);
    const sendOnly = (hello.flags & HelloFlags.SEND_ONLY) !== 0;
    let status: number = Code.OK;
    let retryAfterMs = 0;
    if (!signatureOk) status = Code.AUTH_FAILED;
    else if (hello.version < PROTOCOL_VERSION_MIN || hello.version > PROTOCOL_VERSION_MAX) status = Code.UNSUPPORTED_VERSION;
    else status = ctx.admit(hello.clientKey);
    // Send-only connections never replace one another, so their number per key is capped here.
    if (status === Code.OK && sendOnly && ctx.router.sendOnlyCountOf(keyIdOf(hello.clientKey)) >= ctx.config.maxSendOnlyPerKey) {
      status = Code.TOO_MANY_CONNECTIONS;
      retryAfterMs = SEND_ONLY_FULL_RETRY_MS;
    }
    // Limits only for a key let in: a refused one learns nothing of its policy.
    const limits = status === Code.OK ? ctx.limitsFor(hello.clientKey) : null;
    const fields = welcomeSignedFields(status, hello.version, retryAfterMs, limits ? this.#welcomeLimits(limits) : NO_LIMITS);
    const welcome = encodeServerWelcome(fields, ctx.signer.sign(relaySignedBytes(t, fields)));
    if (status !== Code.OK) {
      ctx.stats.handshakesFailed++;
      const tls = this.#channelBinding !== null;
      // Over TLS an honest client's signature fails only if its channel is not this one: a
      // TLS-terminating proxy (or man in the middle) sits between them.
      const reason = status === Code.AUTH_FAILED && tls
        ? 'signature does not verify over this TLS channel: a forged signature, or a TLS-terminating proxy between client and relay (channel binding mismatch)'
        : codeMessage(status);
      ctx.log.info({ event: 'auth_failed', code: status, tls, reason }, 'handshake refused');
      ctx.handshakeRefused?.(status, signatureOk ? hello.clientKey : null, tls);
      this.socket.write(welcome);
      this.#finish();
      return;
    }
    this.#leaveHandshake();
    const session = new Session(hello.clientKey, this.socket, limits!, ctx.stats);
    session.closeConnection = (code, reason, retryAfterMs) => this.close(code, reason, true, retryAfterMs);
    session.pauseReading = (reason) => this.#pause(reason);
    session.resumeReading = (reason) => this.#resume(reason);
    this.session = session;
    this.#state = 'active';
    ctx.stats.handshakesOk++;
    // The welcome goes out once the session is registered here and known to the relay's other
    // instances (its output holds until then, deliveries queued behind the welcome): a client
    // told it is in can be reached from anywhere.
    session.out.writeFrame(welcome);
    let registered = false;
    if (sendOnly) {
      ctx.router.registerSendOnly(session);
    } else {
      session.out.hold();
      session.mailboxOpen = false;
      const previous = ctx.router.register(session, () => {
        session.out.release();
        session.mailboxOpen = true;
        if (registered) ctx.router.drain(session);
      });
      registered = true;
      if (previous) {
        ctx.stats.replaced++;
        previous.closeConnection(Code.REPLACED, codeMessage(Code.REPLACED));
      }
    }
    session.onLimitsChanged = (limits) => this.#armRateLimits(limits);
    this.#armRateLimits(session.limits);
    ctx.log.debug({ event: 'session_started', key: session.keyText, sendOnly }, 'session started');
    // A send-only session gets neither the mailbox nor QUEUE_EMPTY. The others' is read once
    // the relay's other instances know the connection (at once without any: register's callback).
    if (!sendOnly) ctx.router.drain(session);
  }

  /** What the welcome tells the client: its sending limits and the relay's connection settings. */
  #welcomeLimits(limits: SenderLimits): WelcomeLimits {
    const config = this.#ctx.config;
    return {
      maxPayloadBytes: limits.maxPayloadBytes, maxRecipients: limits.maxRecipients, maxTtlSeconds: limits.maxTtlSeconds,
      defaultTtlSeconds: config.defaultTtlSeconds, inflightWindow: config.inflightWindow,
      pingIntervalMs: config.pingIntervalMs, pingTimeoutMs: config.pingTimeoutMs,
    };
  }

  /** (Re)creates the rate buckets for these limits; a limit of 0 means none. */
  #armRateLimits(limits: SenderLimits): void {
    this.#byteBucket = arm(this.#byteBucket, limits.rateBytesPerSecond, limits.rateBurstBytes);
    this.#messageBucket = arm(this.#messageBucket, limits.rateMessagesPerSecond, limits.rateBurstMessages);
  }

  /**
   * Stops reading for waitMs: TCP then pushes back on the sender and nothing is dropped. The
   * client is told once per connection, with a NOTICE.
   */
  #throttle(waitMs: number): void {
    if ((this.#pauses & ReadPause.RATE) !== 0) return;
    this.#ctx.stats.rateLimitPauses++;
    this.#pause(ReadPause.RATE);
    if (!this.#toldRateLimited && this.session) {
      this.#toldRateLimited = true;
      this.session.out.writeFrame(encodeClose(FrameType.NOTICE, { code: Code.RATE_LIMITED, retryAfterMs: waitMs, reason: codeMessage(Code.RATE_LIMITED) }));
    }
    setTimeout(() => this.#resume(ReadPause.RATE), Math.max(1, waitMs)).unref();
  }

  /** Housekeeping, called by the relay every few hundred milliseconds. */
  tick(now: number): void {
    if (this.#state !== 'active') return;
    const config = this.#ctx.config;
    // Liveness: ping a silent connection, close it if the ping goes unanswered.
    if (this.#heard) {
      this.#heard = false;
      this.#lastHeardAt = now;
      this.#pingSentAt = 0;
    } else if (this.#pingSentAt === 0) {
      if (now - this.#lastHeardAt >= config.pingIntervalMs) {
        this.#pingSentAt = now;
        const data = Buffer.allocUnsafe(PING_LENGTH);
        data.writeDoubleBE(now, 0);
        this.session!.out.writeFrame(encodeFrame(FrameType.PING, data));
      }
    } else if (now - this.#pingSentAt >= config.pingTimeoutMs) {
      this.#ctx.stats.idleTimeouts++;
      this.close(Code.IDLE_TIMEOUT, codeMessage(Code.IDLE_TIMEOUT));
      return;
    }
    // A drain event can be missed when the output shrank without a blocked write: check here too.
    this.#resumeIfOutputDrained();
    // Slow consumer: output waiting, and the kernel has taken none of it for the deadline.
    const socket = this.socket;
    const dispatched = socket.bytesWritten - socket.writableLength;
    if (this.session!.out.pendingBytes === 0 || dispatched !== this.#dispatched) {
      this.#dispatched = dispatched;
      this.#stalledSince = 0;
    } else if (this.#stalledSince === 0) {
      this.#stalledSince = now;
    } else if (now - this.#stalledSince >= config.writeDeadlineMs) {
      this.#ctx.stats.slowConsumers++;
      this.#ctx.log.info({ event: 'slow_consumer', key: this.session!.keyText, pendingBytes: this.session!.out.pendingBytes }, 'slow consumer disconnected');
      this.close(Code.SLOW_CONSUMER, codeMessage(Code.SLOW_CONSUMER));
      // It is not reading, so it will not read our CLOSE either: do not linger.
      socket.destroy();
    }
  }

  #protocolError(code: number, reason: string): void {
    this.#ctx.stats.protocolErrors++;
    this.close(code, reason);
  }

  /**
   * Sends CLOSE (unless told not to), stops reading, and ends the socket; destroys it if the
   * peer does not close its side in time.
   */
  close(code: number, reason: string, sendFrame = true, retryAfterMs = 0): void {
    if (this.#state === 'closing' || this.#state === 'closed') return;
    const frame = sendFrame ? encodeClose(FrameType.CLOSE, { code, retryAfterMs, reason }) : null;
    if (this.session) {
      this.session.closed = true;
      if (frame) this.session.out.writeFrame(frame);
      this.session.out.flushNow();
    } else if (frame) {
      this.socket.write(frame);
    }
    this.#finish();
  }

  #leaveHandshake(): void {
    if (this.#state === 'handshake') this.#ctx.handshakeFinished();
  }

  #finish(): void {
    this.#leaveHandshake();
    this.#state = 'closing';
    this.#reader.stop();
    if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = null;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  #onClose(): void {
    if (this.#state === 'closed') return;
    this.#leaveHandshake();
    this.#state = 'closed';
    this.#reader.stop();
    if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer);
    if (this.session) {
      this.session.closed = true;
      this.session.out.close();
      this.#ctx.router.unregister(this.session);
    }
    this.#ctx.connectionClosed(this);
  }
}

function arm(bucket: TokenBucket | null, rate: number, burst: number): TokenBucket | null {
  if (rate <= 0) return null;
  // The burst is at least one second's worth, so a steady sender at the rate is never paused.
  const size = Math.max(burst, rate);
  if (bucket === null) return new TokenBucket(rate, size);
  bucket.configure(rate, size);
  return bucket;
}
