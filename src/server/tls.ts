// TLS on the relay port: the certificate (configured, or self-signed and kept in the data
// directory), and the step between accepting a TCP connection and handing it to Connection.
//
// The listener stays a plain TCP server: the relay looks at the first byte a client sends. A
// TLS client speaks first (its ClientHello, a record starting 0x16) and gets TLS; a Pulltab
// client that expected plain TCP sends nothing and waits for SERVER_HELLO, so after a short
// silence (or on a first byte that is not 0x16) the relay answers in plain TCP with CLOSE
// TRANSPORT_MISMATCH, which such a client can read, instead of leaving it to time out.
import { constants } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import { Code, codeMessage, FrameType } from '../protocol/constants.js';
import { encodeClose } from '../protocol/frames.js';
import { channelBindingOf } from '../protocol/handshake.js';
import type { RelayConfig } from './config.js';
import { loadOrCreateSelfSigned } from './self-signed.js';

/**
 * How long a connection to a TLS port may stay silent before the relay takes it for a plain
 * client. TLS clients send their ClientHello as soon as TCP is up, so 3 s leaves room for a
 * lost and retransmitted first segment (Linux's initial retransmission timeout is 1 s).
 */
export const PLAIN_PROBE_MS = 3000;
const TLS_RECORD_HANDSHAKE = 0x16;
const LINGER_MS = 2000;

export interface TlsMaterial {
  cert: string;
  key: string;
  /** Where it came from, for the log: the configured paths, or the self-signed files. */
  source: string;
  /** The self-signed certificate was made just now. */
  created: boolean;
}

/** The self-signed certificate's files in a data directory. */
export function selfSignedPaths(dataDir: string): { cert: string; key: string } {
  return { cert: join(dataDir, 'tls', 'cert.pem'), key: join(dataDir, 'tls', 'key.pem') };
}

/** Reads the configured certificate and key, or makes (once) and reads the self-signed pair. */
export function loadTlsMaterial(config: RelayConfig): TlsMaterial {
  if (config.tlsCert !== undefined && config.tlsKey !== undefined) {
    return { cert: readPem(config.tlsCert, 'tlsCert'), key: readPem(config.tlsKey, 'tlsKey'), source: config.tlsCert, created: false };
  }
  const paths = selfSignedPaths(config.dataDir);
  const pair = loadOrCreateSelfSigned(paths.cert, paths.key);
  return { cert: pair.cert, key: pair.key, source: paths.cert, created: pair.created };
}

function readPem(path: string, setting: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${setting} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/**
 * A TLS 1.3 context for this material; throws on a certificate and key that do not go together.
 * TLS 1.3 only: the channel binding is RFC 9266 tls-exporter, which is defined for TLS 1.3 (in
 * TLS 1.2 the exporter does not bind the handshake unless extended master secret is in use).
 */
export function secureContextFor(material: TlsMaterial): SecureContext {
  return createSecureContext({
    cert: material.cert, key: material.key, minVersion: 'TLSv1.3',
    // AES-128-GCM first, the relay's choice: every byte is encrypted and decrypted twice on its
    // way through (client to relay, relay to client), and with AES instructions it is the
    // cheapest of the three TLS 1.3 suites (10 rounds to AES-256's 14). ChaCha20 stays for
    // clients without them.
    ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256',
    secureOptions: constants.SSL_OP_CIPHER_SERVER_PREFERENCE,
  });
}

export interface TlsAcceptHandlers {
  /** TLS is up: the Pulltab handshake runs on this socket, with deadlineMs left. */
  secure(socket: TLSSocket, channelBinding: Buffer, deadlineMs: number): void;
  /** The client did not speak TLS; it has been answered TRANSPORT_MISMATCH in plain TCP. */
  plain(): void;
  /** The TLS handshake failed (error text) or ran past the deadline ('timeout'), or the client left. */
  failed(why: 'timeout' | 'closed' | string): void;
}

export class TlsAcceptor {
  #context: SecureContext;

  constructor(context: SecureContext) {
    this.#context = context;
  }

  /** New connections use this context from now on (SIGHUP: a renewed certificate). */
  set context(context: SecureContext) {
    this.#context = context;
  }

  /** Takes a freshly accepted socket through the TLS handshake; exactly one handler is called. */
  accept(raw: Socket, deadlineMs: number, handlers: TlsAcceptHandlers): void {
    const deadlineAt = Date.now() + deadlineMs;
    let settled = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(probe);
      return true;
    };
    const answerPlain = (): void => {
      if (!settle()) return;
      raw.removeAllListeners('data');
      raw.end(encodeClose(FrameType.CLOSE, { code: Code.TRANSPORT_MISMATCH, retryAfterMs: 0, reason: `${codeMessage(Code.TRANSPORT_MISMATCH)} (this port is TLS)` }));
      setTimeout(() => raw.destroy(), LINGER_MS).unref();
      handlers.plain();
    };
    const probe = setTimeout(answerPlain, Math.min(PLAIN_PROBE_MS, deadlineMs));
    raw.on('error', () => { /* 'close' follows */ });
    raw.once('close', () => { if (settle()) handlers.failed('closed'); });
    raw.once('data', (chunk: Buffer) => {
      if (settled) return;
      if (chunk[0] !== TLS_RECORD_HANDSHAKE) return answerPlain();
      clearTimeout(probe);
      // Hand the bytes read so far back: TLSSocket reads a socket's buffered data first.
      raw.pause();
      raw.unshift(chunk);
      const socket = new TLSSocket(raw, { isServer: true, secureContext: this.#context });
      const timer = setTimeout(() => {
        if (!settle()) return;
        socket.destroy();
        handlers.failed('timeout');
      }, Math.max(1, deadlineAt - Date.now()));
      socket.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (settle()) handlers.failed(err.code ?? err.message);
        socket.destroy();
      });
      socket.once('secure', () => {
        clearTimeout(timer);
        if (!settle()) return;
        handlers.secure(socket, channelBindingOf(socket), deadlineAt - Date.now());
      });
    });
  }
}
