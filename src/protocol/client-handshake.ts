// The client's side of the handshake, for every client there is: the library (client/link.ts),
// the tests' raw peer, the load generator and the fuzzer. Pure: it turns the relay's two
// handshake frames into the client's answer and a verdict; the caller owns the socket, the
// deadline and the TLS channel (whose binding it passes in).
//
//   SERVER_HELLO   → check it, pin the relay key, pick the version, sign the transcript
//                    (with the TLS channel binding), answer with CLIENT_HELLO
//   SERVER_WELCOME → verify the relay's signature over the transcript and the welcome, then
//                    read its status and the limits it announces
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { verifySignature } from '../crypto/keys.js';
import { Code, codeMessage, codeName, NONCE_LENGTH, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN } from './constants.js';
import {
  chooseVersion, clientSignedBytes, encodeClientHello, parseServerHello, parseServerWelcome, relaySignedBytes, transcript,
  welcomeSignedFields, type ClientHello, type ServerHello, type ServerWelcome,
} from './handshake.js';

/** What signs the client's part: an identity's Signer (crypto/keys.ts). */
export interface HandshakeSigner {
  readonly publicKey: Uint8Array;
  sign(message: Uint8Array): Uint8Array;
}

/** Codes after which reconnecting cannot help: a bad key, a refused key, a newer connection, the wrong scheme. */
const FINAL_CODES = new Set<number>([Code.AUTH_FAILED, Code.NOT_AUTHORIZED, Code.UNSUPPORTED_VERSION, Code.REPLACED, Code.TRANSPORT_MISMATCH]);

/** True for a code (a refusal in the welcome, a CLOSE) after which a client does not reconnect. */
export function retryCannotHelp(code: number): boolean {
  return FINAL_CODES.has(code);
}

/** Why a handshake did not end in a session: the code a client reports, why, and whether retrying can help. */
export class HandshakeFailure {
  constructor(readonly code: number, readonly reason: string, readonly fatal: boolean, readonly retryAfterMs = 0) {}
}

export interface ClientHelloInput {
  signer: HandshakeSigner;
  clientNonce: Uint8Array;
  /** The version to speak (chooseVersion of both ranges, for an honest client). */
  version: number;
  /** HelloFlags bits. */
  flags: number;
  /** This connection's TLS channel binding (channelBindingOf); null on plain TCP. */
  channelBinding: Uint8Array | null;
}

/**
 * The signed CLIENT_HELLO answering a SERVER_HELLO, and the transcript it signs (the relay's
 * welcome signature covers it too). Everything negotiated is in the transcript: the relay's
 * range, the version and flags chosen here, the TLS channel, so a change on the path shows as
 * a signature that fails.
 */
export function answerServerHello(hello: ServerHello, input: ClientHelloInput): { clientHello: ClientHello; transcript: Buffer } {
  const t = transcript({
    relayKey: hello.relayKey, relayNonce: hello.relayNonce, minVersion: hello.minVersion, maxVersion: hello.maxVersion,
    clientKey: input.signer.publicKey, clientNonce: input.clientNonce, version: input.version, flags: input.flags,
    channelBinding: input.channelBinding,
  });
  const clientHello: ClientHello = {
    version: input.version, flags: input.flags, clientKey: Buffer.from(input.signer.publicKey), clientNonce: Buffer.from(input.clientNonce),
    signature: Buffer.from(input.signer.sign(clientSignedBytes(t))),
  };
  return { clientHello, transcript: t };
}

/** True when the relay holding relayKey signed this welcome for this transcript (and so for this TLS channel). */
export function welcomeSignedByRelay(welcome: ServerWelcome, t: Buffer, relayKey: Uint8Array): boolean {
  const fields = welcomeSignedFields(welcome.status, welcome.version, welcome.retryAfterMs, welcome.limits);
  return verifySignature(relayKey, relaySignedBytes(t, fields), welcome.signature);
}

export interface ClientHandshakeOptions {
  signer: HandshakeSigner;
  /**
   * The relay key the client pins (its relay address's): the SERVER_HELLO must show it and the
   * welcome must be signed with it. null: whichever key the relay shows, and no signature check,
   * for load generators and fuzzers, whose handshakes measure or probe the relay and must stay cheap.
   */
  pinnedRelayKey: Uint8Array | null;
  /** CLIENT_HELLO flags (HelloFlags); default 0. */
  flags?: number;
  /** The client nonce; default 32 fresh random bytes. */
  nonce?: Uint8Array;
}

/** One handshake, as an honest client runs it: answer() the SERVER_HELLO, then check() the SERVER_WELCOME. */
export class ClientHandshake {
  readonly #options: ClientHandshakeOptions;
  readonly #nonce: Uint8Array;
  #transcript: Buffer | null = null;
  #overTls = false;

  constructor(options: ClientHandshakeOptions) {
    this.#options = options;
    this.#nonce = options.nonce ?? randomBytes(NONCE_LENGTH);
  }

  /** True once answer() made the CLIENT_HELLO: the next handshake frame is the welcome. */
  get answered(): boolean {
    return this.#transcript !== null;
  }

  /**
   * The CLIENT_HELLO frame answering the SERVER_HELLO payload at buf[start, end), or why the
   * client gives up. channelBinding: this connection's (channelBindingOf), null on plain TCP.
   */
  answer(buf: Buffer, start: number, end: number, channelBinding: Uint8Array | null): Buffer | HandshakeFailure {
    const hello = parseServerHello(buf, start, end);
    if (hello === null) return new HandshakeFailure(Code.MALFORMED_FRAME, 'not a Pulltab relay (bad SERVER_HELLO)', true);
    const pinned = this.#options.pinnedRelayKey;
    if (pinned !== null && !(pinned.length === hello.relayKey.length && timingSafeEqual(hello.relayKey, pinned))) {
      return new HandshakeFailure(Code.AUTH_FAILED, 'relay key does not match the key in the relay address', true);
    }
    const version = chooseVersion(hello.minVersion, hello.maxVersion, PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX);
    if (version === 0) {
      return new HandshakeFailure(Code.UNSUPPORTED_VERSION,
        `relay speaks protocol ${hello.minVersion}..${hello.maxVersion}, this client ${PROTOCOL_VERSION_MIN}..${PROTOCOL_VERSION_MAX}`, true);
    }
    const answer = answerServerHello(hello, {
      signer: this.#options.signer, clientNonce: this.#nonce, version, flags: this.#options.flags ?? 0, channelBinding,
    });
    this.#transcript = answer.transcript;
    this.#overTls = channelBinding !== null;
    return encodeClientHello(answer.clientHello);
  }

  /**
   * The SERVER_WELCOME payload at buf[start, end), its signature checked against the pinned
   * key: the welcome whatever its status (a refusal is signed too), or why it cannot be trusted.
   * Call after answer().
   */
  check(buf: Buffer, start: number, end: number): ServerWelcome | HandshakeFailure {
    if (this.#transcript === null) throw new Error('ClientHandshake.check before answer');
    const welcome = parseServerWelcome(buf, start, end);
    if (welcome === null) return new HandshakeFailure(Code.MALFORMED_FRAME, 'relay sent a malformed SERVER_WELCOME', false);
    const pinned = this.#options.pinnedRelayKey;
    // The relay proves it holds the pinned key by signing this very handshake (and, over TLS, this channel).
    if (pinned !== null && !welcomeSignedByRelay(welcome, this.#transcript, pinned)) {
      return new HandshakeFailure(Code.AUTH_FAILED, this.#overTls
        ? 'the relay\'s signature does not verify over this TLS connection: a TLS-terminating proxy or man in the middle sits between this client and the relay (channel binding mismatch), or the peer does not hold the pinned relay key'
        : 'relay did not prove it holds the pinned key', true);
    }
    return welcome;
  }
}

/** A welcome's refusal as a failure (its code, whether retrying can help, the relay's retry hint); null when it let the client in. */
export function welcomeRefusal(welcome: ServerWelcome): HandshakeFailure | null {
  if (welcome.status === Code.OK) return null;
  return new HandshakeFailure(welcome.status, `relay refused the connection: ${codeName(welcome.status)} (${codeMessage(welcome.status)})`,
    retryCannotHelp(welcome.status), welcome.retryAfterMs);
}
