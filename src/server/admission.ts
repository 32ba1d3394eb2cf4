// Taking on accepted sockets: the connection and handshake limits, the accept rate, TLS on the
// relay port, and the count of connections still in their handshake. A socket let in becomes a
// Connection (./connection.ts); one refused is told RELAY_FULL (or GOING_AWAY while the relay
// stops) and closed, before any TLS work is spent on it.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { Code, codeMessage, FrameType } from '../protocol/constants.js';
import { encodeClose } from '../protocol/frames.js';
import type { RelayConfig } from './config.js';
import { Connection, type RelayContext } from './connection.js';
import type { RelayStats } from './stats.js';
import { TokenBucket } from './token-bucket.js';
import type { TlsAcceptor } from './tls.js';

/** Hint sent with RELAY_FULL: how long a client should wait before trying again. */
const RELAY_FULL_RETRY_MS = 5000;

export class Admission {
  readonly #config: RelayConfig;
  readonly #stats: RelayStats;
  readonly #log: Logger;
  /** The relay's open connections (authenticated or in their handshake): the admission adds to it. */
  readonly #connections: Set<Connection>;
  readonly #tls: TlsAcceptor | null;
  readonly #bucket: TokenBucket;
  /** Sockets still in their TLS handshake (they hold a handshake slot). */
  readonly #tlsPending = new Set<Socket>();
  #handshaking = 0;
  #closing = false;
  /** Set once the relay's context exists (it refers back to this admission). */
  context: RelayContext | null = null;

  constructor(config: RelayConfig, stats: RelayStats, log: Logger, connections: Set<Connection>, tls: TlsAcceptor | null) {
    this.#config = config;
    this.#stats = stats;
    this.#log = log;
    this.#connections = connections;
    this.#tls = tls;
    this.#bucket = new TokenBucket(config.acceptRatePerSecond, config.acceptBurst);
  }

  /** Connections still in their handshake (TLS included). */
  get handshaking(): number {
    return this.#handshaking;
  }

  /** A Connection's handshake ended (either way): its slot is free. */
  handshakeFinished(): void {
    this.#handshaking--;
  }

  /** The accept rate after a reload. */
  reconfigure(): void {
    this.#bucket.configure(this.#config.acceptRatePerSecond, this.#config.acceptBurst);
  }

  /** The relay stops: every later socket is told GOING_AWAY; one finishing its TLS handshake is closed. */
  stopAccepting(): void {
    this.#closing = true;
  }

  /** Drops the sockets still in their TLS handshake (the relay's last step before closing its stores). */
  dropPending(): void {
    for (const socket of this.#tlsPending) socket.destroy();
  }

  /** A client reached the port over the other transport (counted and logged; the Connection or TLS layer answers it). */
  transportMismatch(what: 'tls-on-plain' | 'plain-on-tls'): void {
    this.#stats.transportMismatches++;
    this.#log.warn({ event: 'transport_mismatch', what }, what === 'tls-on-plain'
      ? 'a TLS client reached this plain-TCP port (it was given a pulltabs:// address)'
      : 'a plain-TCP client reached this TLS port (it was given a pulltab:// address)');
  }

  accept(socket: Socket): void {
    const stats = this.#stats;
    const config = this.#config;
    stats.connectionsAccepted++;
    const handshaking = this.#handshaking;
    if (this.#connections.size + this.#tlsPending.size >= config.maxConnections || this.#closing || handshaking >= config.maxHandshakes
      || !this.#bucket.take(1)) {
      this.#refuse(socket, handshaking);
      return;
    }
    const context = this.context!;
    this.#handshaking++;
    const tls = this.#tls;
    if (tls === null) {
      this.#connections.add(new Connection(socket, context));
      return;
    }
    // The handshake deadline runs from here, TLS included; the slot is held until Connection takes over.
    this.#tlsPending.add(socket);
    socket.setNoDelay(true);
    tls.accept(socket, config.handshakeTimeoutMs, {
      secure: (tlsSocket, channelBinding, deadlineMs) => {
        this.#tlsPending.delete(socket);
        if (this.#closing) {
          this.#handshaking--;
          tlsSocket.destroy();
          return;
        }
        this.#connections.add(new Connection(tlsSocket, context, { channelBinding, deadlineMs }));
      },
      plain: () => {
        this.#tlsPending.delete(socket);
        this.#handshaking--;
        this.transportMismatch('plain-on-tls');
      },
      failed: (why) => {
        this.#tlsPending.delete(socket);
        this.#handshaking--;
        if (why === 'timeout') stats.handshakesTimedOut++;
        else if (why !== 'closed') {
          stats.tlsHandshakeFailures++;
          this.#log.info({ event: 'tls_failed', err: why }, 'TLS handshake failed');
        }
      },
    });
  }

  #refuse(socket: Socket, handshaking: number): void {
    this.#stats.connectionsRefusedFull++;
    const code = this.#closing ? Code.GOING_AWAY : Code.RELAY_FULL;
    socket.on('error', () => {});
    if (this.#tls !== null) {
      // A TLS client cannot read a plain CLOSE, and a TLS handshake is the work a full relay
      // must not take on: the connection is closed before TLS, and the client backs off.
      socket.destroy();
    } else {
      socket.end(encodeClose(FrameType.CLOSE, { code, retryAfterMs: RELAY_FULL_RETRY_MS, reason: codeMessage(code) }));
      setTimeout(() => socket.destroy(), 2000).unref();
    }
    if (code === Code.RELAY_FULL) this.#log.warn({ event: 'relay_full', connections: this.#connections.size, handshaking }, 'relay full: connection refused');
  }
}
