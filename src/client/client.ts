// RelayClient: the library native clients use. It connects (and reconnects with backoff and
// jitter), seals what it sends and opens what it receives, hands messages over as events or an
// async iterator, and acknowledges each message after handing it over. Until the application
// attaches a consumer it holds what arrives (bounded: past the bound it stops reading, so TCP
// pushes back on the relay): a message nobody has taken is never acknowledged.
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { KeyCache } from '../crypto/key-cache.js';
import { keyIdOf } from '../crypto/key-id.js';
import { decodeKey, encodeKey, KeyFormatError, requireUsableKey, Signer, type Identity } from '../crypto/keys.js';
import { openMessage, sealMessage, SealError } from '../crypto/seal.js';
import { parseRelayAddress, type RelayAddress } from '../protocol/address.js';
import {
  Code, codeMessage, codeName, DeliverFlags, FRAME_HEADER_LENGTH, FrameType, HelloFlags, KEY_LENGTH, PING_LENGTH, SendFlags, STORAGE_KEY_LENGTH,
} from '../protocol/constants.js';
import {
  encodeAck, encodeAdminRequest, encodeFrame, sendPayloadLength, writeSend, type DeliverFields, type ResultFields,
} from '../protocol/frames.js';
import { backoffDelay } from './backoff.js';
import { Link, type LinkEnd } from './link.js';
import { localRefusal } from './limits.js';
import type { WelcomeLimits } from '../protocol/handshake.js';

export interface RelayClientOptions {
  /** The relay's address, pulltab://KEY@HOST:PORT (pulltabs:// for TLS), as the relay prints it. */
  relay: string | RelayAddress;
  identity: Identity;
  /** Send and receive bodies as given, without sealing or opening (default false). */
  raw?: boolean;
  /** Reconnect after a lost connection (default true). When false, connect() fails on the first error. */
  reconnect?: boolean;
  /** First reconnection delay ceiling in ms (default 100); doubles per attempt up to backoffCapMs. */
  backoffBaseMs?: number;
  /** Largest reconnection delay ceiling in ms (default 30000). */
  backoffCapMs?: number;
  /** TCP connect plus handshake deadline in ms (default 10000). */
  connectTimeoutMs?: number;
  /** How long send() waits for a receipt, in ms (default 30000). */
  receiptTimeoutMs?: number;
  /** Acknowledge each message once handed over (default true). */
  autoAck?: boolean;
  /**
   * Most messages held while no consumer takes them (default 1024): at the bound the client
   * stops reading from the relay until a consumer has taken half of them.
   */
  holdLimit?: number;
  /**
   * 'receive' (the default): the key's receiving connection; a newer receiving connection of the
   * same key replaces it (REPLACED). 'send': a send-only connection, which never replaces the
   * key's receiving connection and is never replaced, and receives no messages (nor
   * 'queueEmpty'); only answers to its own sends and admin requests. The relay caps these per
   * key (maxSendOnlyPerKey): past the cap connect() is refused with TOO_MANY_CONNECTIONS.
   */
  role?: ClientRole;
  /**
   * Bytes the client queues for the relay before it pushes back (default 1 MiB): past it
   * `writable` is false, send() without a receipt resolves only once the queue has drained
   * below it ('drain'), and at four times it send() rejects with SendBufferFullError.
   */
  sendBufferBytes?: number;
}

export type ClientRole = 'receive' | 'send';

export interface SendOptions {
  /** Keep the message in the recipient's mailbox if it cannot be delivered now. */
  store?: boolean;
  /** A newer stored message with the same (recipient, sender, storage key) replaces the older one. 16 bytes, or a string hashed to 16 bytes. */
  storageKey?: string | Uint8Array;
  /** Seconds a stored message lives (0 or absent: the relay's default). */
  ttlSeconds?: number;
  /** Wait for the relay's RESULT and resolve with each recipient's outcome (default true). */
  receipt?: boolean;
}

export interface RecipientOutcome {
  recipient: string;
  code: number;
  codeName: string;
}

export interface SendResult {
  /** True when every recipient's message was delivered or stored. */
  ok: boolean;
  code: number;
  codeName: string;
  message: string;
  /** Per recipient, in the order given; empty when the relay refused the whole message or no receipt was asked for. */
  outcomes: RecipientOutcome[];
}

/**
 * A message handed over by 'message' or messages(). In raw mode `body`, like `from` and
 * `storageKey`, is a view of the bytes read from the socket, not a copy: the client never
 * reuses that memory, so the view stays valid for as long as it is held, but it keeps the
 * whole chunk it arrived in (up to 64 KiB) alive; copy (Buffer.from) bodies you keep for long.
 * `fromText` is computed when first read. Sealed bodies are the opened plaintext, a buffer of
 * their own.
 */
export interface ReceivedMessage {
  /** The sender's public key, as authenticated by the relay (and, when sealed, verified by signature). */
  readonly from: Uint8Array;
  /** The sender's key in base58. */
  readonly fromText: string;
  body: Uint8Array;
  /** The sealed message's id (absent in raw mode). */
  messageId?: Uint8Array;
  /** Every recipient the sender addressed (sealed mode only). */
  recipients?: Uint8Array[];
  storageKey: Uint8Array | null;
  fromMailbox: boolean;
  deliveryId: number;
}

/** An admin request's answer as the library hands it over: the relay's ADMIN_RESPONSE (AdminResponse, protocol/frames.ts), decoded. */
export interface AdminAnswer {
  ok: boolean;
  status: number;
  codeName: string;
  /** The parsed JSON answer: the command's result, or { error } on a refusal. */
  body: unknown;
}

export class NotConnectedError extends Error {
  override name = 'NotConnectedError';
}

/** send() found four times sendBufferBytes already queued: nothing was sent. Wait for 'drain'. */
export class SendBufferFullError extends Error {
  override name = 'SendBufferFullError';
}

export class ConnectError extends Error {
  override name = 'ConnectError';
  constructor(message: string, readonly code: number) {
    super(message);
  }
}

interface PendingFlush {
  token: number;
  resolve(): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

interface PendingReceipt {
  /** The recipients as the caller named them: text is kept, bytes are named when the RESULT comes. */
  recipients: Array<Uint8Array | string>;
  resolve(result: SendResult): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** A message received and not yet handed over; message null: one that failed to open, acknowledged when its turn comes. */
interface HeldMessage {
  message: ReceivedMessage | null;
  deliveryId: number;
  generation: number;
}

export declare interface RelayClient {
  on(event: 'connected', listener: () => void): this;
  on(event: 'disconnected', listener: (info: { code: number; reason: string; willRetry: boolean }) => void): this;
  on(event: 'message', listener: (message: ReceivedMessage) => void): this;
  on(event: 'queueEmpty', listener: () => void): this;
  on(event: 'refused', listener: (seq: number, result: SendResult) => void): this;
  on(event: 'invalid', listener: (error: Error, deliveryId: number) => void): this;
  on(event: 'notice', listener: (code: number, reason: string) => void): this;
  on(event: 'drain', listener: () => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
}

export class RelayClient extends EventEmitter {
  readonly identity: Identity;
  readonly publicKey: string;
  readonly #address: RelayAddress;
  readonly #signer: Signer;
  readonly #options: Required<Omit<RelayClientOptions, 'relay' | 'identity'>>;
  /** Recipient keys given as text, decoded and checked once. */
  readonly #recipientKeys = new KeyCache<Uint8Array>();
  /** Sends without a receipt waiting for the send buffer to drain below sendBufferBytes. */
  #drained: { promise: Promise<SendResult>; resolve(result: SendResult): void; reject(err: Error): void } | null = null;
  #link: Link | null = null;
  #opened = false;
  #closed = false;
  #attempt = 0;
  #retryTimer: NodeJS.Timeout | null = null;
  #seq = 0;
  readonly #pending = new Map<number, PendingReceipt>();
  readonly #adminPending = new Map<number, { resolve(answer: AdminAnswer): void; reject(err: Error): void; timer: NodeJS.Timeout }>();
  #adminId = 0;
  #ackUpTo = 0;
  #ackSent = 0;
  #ackScheduled = false;
  /** The delivery id being handed to 'message' listeners right now (0: none); close() from a listener acknowledges it. */
  #handingOver = 0;
  /**
   * Messages waiting for a consumer, in delivery order: none attached yet, or the iterator is
   * behind. ACKs are cumulative, so nothing after the first held message is acknowledged.
   */
  readonly #held: HeldMessage[] = [];
  #drainScheduled = false;
  #iterating = false;
  /** Counts connections: a delivery id means something only on the connection that sent it. */
  #generation = 0;
  /** The iterator's consumer waiting for a message (only while nothing is held). */
  #waiter: ((result: IteratorResult<ReceivedMessage>) => void) | null = null;
  /** No more messages will come: the connection ended for good. */
  #ended = false;
  #connectWaiter: { resolve(): void; reject(err: Error): void } | null = null;
  /** flush() calls waiting for their PONG, oldest first (the relay answers PINGs in order). */
  readonly #flushes: PendingFlush[] = [];
  #flushToken = 0;

  constructor(options: RelayClientOptions) {
    super();
    this.#address = typeof options.relay === 'string' ? parseRelayAddress(options.relay) : options.relay;
    this.identity = options.identity;
    this.publicKey = encodeKey(options.identity.publicKey);
    this.#signer = new Signer(options.identity);
    this.#options = {
      raw: options.raw ?? false,
      reconnect: options.reconnect ?? true,
      backoffBaseMs: options.backoffBaseMs ?? 100,
      backoffCapMs: options.backoffCapMs ?? 30_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      receiptTimeoutMs: options.receiptTimeoutMs ?? 30_000,
      autoAck: options.autoAck ?? true,
      holdLimit: options.holdLimit ?? 1024,
      role: options.role ?? 'receive',
      sendBufferBytes: options.sendBufferBytes ?? 1024 * 1024,
    };
    // At least 64 KiB: above the socket's own 16 KiB mark, so a full buffer always ends in a 'drain'.
    if (!Number.isInteger(this.#options.sendBufferBytes) || this.#options.sendBufferBytes < 64 * 1024) {
      throw new RangeError('sendBufferBytes is a whole number of bytes, at least 65536');
    }
    if (this.#options.role !== 'receive' && this.#options.role !== 'send') throw new RangeError("role is 'receive' or 'send'");
    if (!Number.isInteger(this.#options.holdLimit) || this.#options.holdLimit < 1) {
      throw new RangeError('holdLimit is a whole number of messages, at least 1');
    }
    // A 'message' listener attached after messages arrived takes the held ones, once it is in place.
    (this as EventEmitter).on('newListener', (event: string | symbol) => { if (event === 'message') this.#scheduleDrain(); });
  }

  /** Messages received and not yet handed over (no consumer attached, or the iterator is behind). */
  get heldCount(): number {
    return this.#held.length;
  }

  get connected(): boolean {
    return this.#link?.ready ?? false;
  }

  /** The relay's limits for this key, from the current connection's welcome (null while not connected). */
  get relayLimits(): WelcomeLimits | null {
    return this.#link?.ready ? this.#link.limits : null;
  }

  /**
   * True while the send buffer is below sendBufferBytes (and connected): a send now goes out
   * without waiting. When false, wait for 'drain' (or await send()).
   */
  get writable(): boolean {
    const link = this.#link;
    return link !== null && link.ready && link.pendingBytes < this.#options.sendBufferBytes;
  }

  /**
   * Connects and authenticates. With reconnect on (the default) it keeps trying until the
   * relay answers; otherwise the first failure rejects. A client can be opened once.
   */
  connect(): Promise<void> {
    if (this.#opened) return Promise.reject(new Error('this client is already open; create another RelayClient'));
    this.#opened = true;
    return new Promise<void>((resolve, reject) => {
      this.#connectWaiter = { resolve, reject };
      this.#dial();
    });
  }

  #dial(): void {
    this.#retryTimer = null;
    if (this.#closed) return;
    const generation = ++this.#generation;
    const link: Link = new Link(this.#address, this.#signer, {
      onReady: () => {
        this.#attempt = 0;
        this.#ackUpTo = 0;
        this.#ackSent = 0;
        this.emit('connected');
        this.#connectWaiter?.resolve();
        this.#connectWaiter = null;
        return this.#held.length < this.#options.holdLimit;
      },
      onDeliver: (fields) => this.#onDeliver(fields, generation),
      onResult: (fields) => this.#onResult(fields),
      onQueueEmpty: () => this.emit('queueEmpty'),
      onNotice: (code, reason) => this.emit('notice', code, reason),
      onAdminResponse: (fields) => {
        const pending = this.#adminPending.get(fields.requestId);
        if (!pending) return;
        this.#adminPending.delete(fields.requestId);
        clearTimeout(pending.timer);
        let body: unknown;
        try {
          body = fields.json === '' ? null : JSON.parse(fields.json);
        } catch {
          body = { error: 'relay sent an answer that is not JSON' };
        }
        pending.resolve({ ok: fields.status === Code.OK, status: fields.status, codeName: codeName(fields.status), body });
      },
      onPong: (buf, start, end) => this.#onPong(buf, start, end),
      onDrain: () => this.#onDrain(link),
      onEnd: (end) => this.#onLinkEnd(link, end),
    }, this.#options.connectTimeoutMs, this.#options.role === 'send' ? HelloFlags.SEND_ONLY : 0);
    this.#link = link;
  }

  #onLinkEnd(link: Link, end: LinkEnd): void {
    if (this.#link !== link) return;
    this.#link = null;
    for (const [seq, pending] of this.#pending) {
      clearTimeout(pending.timer);
      pending.reject(new NotConnectedError(`connection lost before the relay answered message ${seq}: ${end.reason}`));
    }
    this.#pending.clear();
    for (const pending of this.#adminPending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new NotConnectedError(`connection lost before the relay answered an admin request: ${end.reason}`));
    }
    this.#adminPending.clear();
    if (this.#drained) {
      this.#drained.reject(new NotConnectedError(`connection lost with messages still in the send buffer: ${end.reason}`));
      this.#drained = null;
    }
    for (const pending of this.#flushes.splice(0)) {
      clearTimeout(pending.timer);
      pending.reject(new NotConnectedError(`connection lost before the relay answered a flush: ${end.reason}`));
    }
    this.#dropRedelivered();
    const willRetry = !this.#closed && !end.fatal && this.#options.reconnect;
    if (this.#connectWaiter && !willRetry) {
      this.#connectWaiter.reject(new ConnectError(end.reason, end.code));
      this.#connectWaiter = null;
    }
    this.emit('disconnected', { code: end.code, reason: end.reason, willRetry });
    if (end.fatal && !this.#closed && end.code !== Code.OK) this.#emitError(new ConnectError(end.reason, end.code));
    if (!willRetry) {
      this.#ended = true;
      this.#finishIterator();
      return;
    }
    // GOING_AWAY and RELAY_FULL carry a hint; jitter on top spreads the herd.
    const delay = Math.max(end.retryAfterMs, 0) + backoffDelay(this.#attempt++, {
      baseMs: this.#options.backoffBaseMs, capMs: this.#options.backoffCapMs,
    });
    this.#retryTimer = setTimeout(() => this.#dial(), delay);
  }

  #emitError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  /**
   * Sends body to each recipient (public keys as bytes or base58). Sealed for them unless the
   * client is raw. With a receipt (the default) resolves with each recipient's outcome once the
   * relay has delivered or stored (after commit) or refused it. Without one it resolves as soon
   * as the message is queued while the send buffer is below sendBufferBytes, otherwise once it
   * has drained below it: awaiting each send is the backpressure. Refusals of sends without a
   * receipt come as 'refused' events. Rejects with SendBufferFullError (nothing sent) at four
   * times sendBufferBytes queued, NotConnectedError when not connected. Throws KeyFormatError
   * for a recipient that is not a 32-byte key, or is small-order or non-canonical (nothing is
   * sent). The body is copied before send() returns: the caller may reuse its buffer.
   */
  send(recipients: Array<Uint8Array | string>, body: Uint8Array | string, options: SendOptions = NO_OPTIONS): Promise<SendResult> {
    const link = this.#link;
    if (!link || !link.ready) return Promise.reject(new NotConnectedError('not connected to the relay'));
    const n = recipients.length;
    if (n > 255) throw new RangeError('at most 255 recipients');
    // Refused here, raw or sealed: the relay would refuse the whole message (BAD_RECIPIENT).
    const keys = new Array<Uint8Array>(n);
    for (let i = 0; i < n; i++) keys[i] = this.#recipientKey(recipients[i]!);
    const storageKey = storageKeyBytes(options.storageKey);
    const pending = link.pendingBytes;
    const limit = this.#options.sendBufferBytes;
    if (pending >= 4 * limit) {
      return Promise.reject(new SendBufferFullError(`send buffer full (${pending} bytes queued, limit ${4 * limit}): wait for 'drain' or await each send`));
    }
    const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    let wrapped: Uint8Array[] | null = null;
    let payload = bytes;
    if (!this.#options.raw) {
      const sealed = sealMessage(this.identity, keys, bytes);
      wrapped = sealed.recipients.map((r) => r.wrappedKey);
      payload = sealed.body;
    }
    // What the relay would refuse (its welcome said its limits) is refused here, nothing sent.
    const refusal = localRefusal(link.limits, n, payload.length, options.store ?? false, options.ttlSeconds ?? 0);
    if (refusal) return Promise.resolve({ ...toSendResult({ seq: 0, code: refusal.code, outcomes: [] }, []), message: `${codeMessage(refusal.code)} (${refusal.detail}; refused before sending)` });
    const seq = this.#seq = (this.#seq + 1) >>> 0;
    const receipt = options.receipt ?? true;
    const flags = (options.store ? SendFlags.STORE : 0) | (receipt ? SendFlags.RECEIPT : 0);
    // Encoded straight into the link's output buffer: no frame of its own, no copy of a copy.
    const out = link.out;
    const offset = out.reserve(FRAME_HEADER_LENGTH + sendPayloadLength(n, wrapped, payload.length));
    writeSend(out.buffer, offset, seq, flags, options.ttlSeconds ?? 0, storageKey, keys, wrapped, payload);
    if (!receipt) return pending < limit ? SENT : this.#whenDrained();
    return new Promise<SendResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(seq);
        reject(new Error(`no answer from the relay for message ${seq} within ${this.#options.receiptTimeoutMs} ms`));
      }, this.#options.receiptTimeoutMs);
      this.#pending.set(seq, { recipients: recipients.slice(), resolve, reject, timer });
    });
  }

  /** A recipient's key bytes, checked (text decoded once and remembered). */
  #recipientKey(recipient: Uint8Array | string): Uint8Array {
    if (typeof recipient === 'string') {
      return this.#recipientKeys.getOrMake(recipient, (text) => requireUsableKey(decodeKey(text), 'recipient'));
    }
    if (recipient.length !== KEY_LENGTH) throw new KeyFormatError(`a recipient key is ${KEY_LENGTH} bytes, not ${recipient.length}`);
    return requireUsableKey(recipient, 'recipient');
  }

  /** One promise for every send waiting on the same drain. */
  #whenDrained(): Promise<SendResult> {
    if (this.#drained === null) {
      let resolve!: (result: SendResult) => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<SendResult>((res, rej) => { resolve = res; reject = rej; });
      this.#drained = { promise, resolve, reject };
    }
    return this.#drained.promise;
  }

  /** The socket drained: below sendBufferBytes, the waiting sends resolve and 'drain' is emitted. */
  #onDrain(link: Link): void {
    if (this.#link !== link || link.pendingBytes >= this.#options.sendBufferBytes) return;
    const drained = this.#drained;
    this.#drained = null;
    drained?.resolve(SENT_RESULT);
    this.emit('drain');
  }

  /**
   * Sends an admin request ({ command, args }) and resolves with the relay's answer. The relay
   * checks the caller's capabilities; a refusal resolves with ok false and a code (FORBIDDEN...).
   */
  admin(command: string, args: Record<string, unknown> = {}): Promise<AdminAnswer> {
    const link = this.#link;
    if (!link || !link.ready) return Promise.reject(new NotConnectedError('not connected to the relay'));
    const requestId = this.#adminId = (this.#adminId + 1) >>> 0;
    return new Promise<AdminAnswer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#adminPending.delete(requestId);
        reject(new Error(`no answer from the relay to admin request ${command} within ${this.#options.receiptTimeoutMs} ms`));
      }, this.#options.receiptTimeoutMs);
      this.#adminPending.set(requestId, { resolve, reject, timer });
      link.write(encodeAdminRequest({ requestId, json: JSON.stringify({ command, args }) }));
    });
  }

  /**
   * Resolves once the relay has read and handled everything this client wrote before the call:
   * a PING, answered in order. Live messages have then been handed to their recipients'
   * connections (which may not have read them yet); refusals have come back as 'refused'
   * events. A stored message is durable only when its receipt says so. Rejects with
   * NotConnectedError when the connection is lost first, or when not connected.
   */
  flush(): Promise<void> {
    const link = this.#link;
    if (!link || !link.ready) return Promise.reject(new NotConnectedError('not connected to the relay'));
    const token = this.#flushToken = (this.#flushToken + 1) >>> 0;
    const ping = Buffer.alloc(PING_LENGTH);
    ping.writeUInt32BE(token, 4);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.#flushes.findIndex((f) => f.token === token);
        if (i >= 0) this.#flushes.splice(i, 1);
        reject(new Error(`no answer from the relay to a flush within ${this.#options.receiptTimeoutMs} ms`));
      }, this.#options.receiptTimeoutMs);
      this.#flushes.push({ token, resolve, reject, timer });
      link.write(encodeFrame(FrameType.PING, ping));
    });
  }

  /** A PONG answers the oldest flushes up to the one it names (PINGs are answered in order). */
  #onPong(buf: Buffer, start: number, end: number): void {
    if (end - start !== PING_LENGTH || buf.readUInt32BE(start) !== 0) return;
    const token = buf.readUInt32BE(start + 4);
    const flushes = this.#flushes;
    const i = flushes.findIndex((f) => f.token === token);
    if (i < 0) return;
    for (const pending of flushes.splice(0, i + 1)) {
      clearTimeout(pending.timer);
      pending.resolve();
    }
  }

  #onResult(fields: ResultFields): void {
    const pending = this.#pending.get(fields.seq);
    const result = toSendResult(fields, pending?.recipients ?? NO_RECIPIENTS);
    if (pending) {
      this.#pending.delete(fields.seq);
      clearTimeout(pending.timer);
      pending.resolve(result);
    } else {
      this.emit('refused', fields.seq, result);
    }
  }

  /** Returns false to stop reading: as many messages are held as the client will hold. */
  #onDeliver(fields: DeliverFields, generation: number): boolean {
    // Closing: nothing more is handed over, so nothing more is acknowledged; the relay sends it again.
    if (this.#closed) return false;
    let message: ReceivedMessage;
    const fromMailbox = (fields.flags & DeliverFlags.FROM_MAILBOX) !== 0;
    if (this.#options.raw) {
      message = new Delivery(fields.sender, fields.body, fields.storageKey, fromMailbox, fields.deliveryId);
    } else {
      try {
        const opened = openMessage(this.identity, fields.sender, fields.wrappedKey, fields.body);
        message = new Delivery(fields.sender, opened.body, fields.storageKey, fromMailbox, fields.deliveryId, opened.messageId, opened.recipients);
      } catch (err) {
        // A message that cannot be opened is reported and acknowledged: redelivering it cannot
        // help. Its ACK would cover the held messages before it, so it waits for its turn.
        if (!(err instanceof SealError)) throw err;
        this.emit('invalid', err, fields.deliveryId);
        if (this.#held.length > 0) return this.#hold(null, fields.deliveryId, generation);
        this.#handedOver(fields.deliveryId, generation);
        return true;
      }
    }
    if (this.#held.length === 0) {
      if (this.#iterating) {
        const waiter = this.#waiter;
        if (waiter) {
          this.#waiter = null;
          waiter({ value: message, done: false });
          this.#handedOver(message.deliveryId, generation);
          return true;
        }
      } else if (this.listenerCount('message') > 0) {
        this.#emitMessage(message, generation);
        return true;
      }
    }
    return this.#hold(message, message.deliveryId, generation);
  }

  #hold(message: ReceivedMessage | null, deliveryId: number, generation: number): boolean {
    this.#held.push({ message, deliveryId, generation });
    return this.#held.length < this.#options.holdLimit;
  }

  #emitMessage(message: ReceivedMessage, generation: number): void {
    this.#handingOver = this.#options.autoAck && generation === this.#generation ? message.deliveryId : 0;
    try {
      this.emit('message', message);
    } finally {
      this.#handingOver = 0;
    }
    this.#handedOver(message.deliveryId, generation);
  }

  #scheduleDrain(): void {
    if (this.#drainScheduled || this.#held.length === 0) return;
    this.#drainScheduled = true;
    queueMicrotask(() => {
      this.#drainScheduled = false;
      this.#drain();
    });
  }

  /** Hands the held messages to the 'message' listeners, in order, while there are any. */
  #drain(): void {
    while (this.#held.length > 0 && !this.#closed && !this.#iterating && this.listenerCount('message') > 0) {
      const entry = this.#held.shift()!;
      this.#emitMessage(entry.message!, entry.generation);
      this.#settleInvalid();
      this.#resumeReading();
    }
  }

  /** Acknowledges the held messages that failed to open once everything before them is handed over. */
  #settleInvalid(): void {
    while (this.#held.length > 0 && this.#held[0].message === null) {
      const entry = this.#held.shift()!;
      this.#handedOver(entry.deliveryId, entry.generation);
    }
  }

  /**
   * The connection ended: held messages from its mailbox backlog come again on the next one
   * (they were never acknowledged), so holding them too would only make duplicates. Live ones
   * stay: a non-storable message is never sent again. Invalid ones are reported again.
   */
  #dropRedelivered(): void {
    const held = this.#held;
    let kept = 0;
    for (let i = 0; i < held.length; i++) {
      const entry = held[i];
      if (entry.generation === this.#generation && (entry.message === null || entry.message.fromMailbox)) continue;
      held[kept++] = entry;
    }
    held.length = kept;
  }

  /** Reads from the relay again once consumers have taken half of what the client holds at most. */
  #resumeReading(): void {
    if (this.#held.length <= this.#options.holdLimit >> 1) this.#link?.resume();
  }

  /**
   * Acknowledges a message once the application has it, if it came on the current connection.
   * One from a connection since lost is not acknowledged (its id would name another message
   * on the new connection); the relay delivers it again.
   */
  #handedOver(deliveryId: number, generation: number): void {
    if (!this.#options.autoAck || generation !== this.#generation) return;
    this.ack(deliveryId);
  }

  /**
   * Acknowledges every message up to and including deliveryId on the current connection
   * (cumulative; sent once per tick). With autoAck off, call it after handling a message, and
   * not for messages received before a reconnection.
   */
  ack(deliveryId: number): void {
    if (deliveryId > this.#ackUpTo) this.#ackUpTo = deliveryId;
    if (this.#ackScheduled) return;
    this.#ackScheduled = true;
    setImmediate(() => {
      this.#ackScheduled = false;
      if (this.#ackUpTo > this.#ackSent && this.#link?.ready) {
        this.#ackSent = this.#ackUpTo;
        this.#link.write(encodeAck(this.#ackUpTo));
      }
    });
  }

  /**
   * Messages as an async iterator, held ones first; each is acknowledged when the iterator hands
   * it over. Leaving a for-await loop leaves the rest held (unacknowledged) for the next consumer.
   */
  messages(): AsyncIterableIterator<ReceivedMessage> {
    this.#iterating = true;
    const client = this;
    return {
      [Symbol.asyncIterator]() { return this; },
      next(): Promise<IteratorResult<ReceivedMessage>> {
        if (client.#closed) return Promise.resolve({ value: undefined, done: true });
        const entry = client.#held.shift();
        if (entry) {
          client.#handedOver(entry.deliveryId, entry.generation);
          client.#settleInvalid();
          client.#resumeReading();
          return Promise.resolve({ value: entry.message!, done: false });
        }
        if (client.#ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => { client.#waiter = resolve; });
      },
      return(): Promise<IteratorResult<ReceivedMessage>> {
        client.#iterating = false;
        client.#finishIterator();
        client.#scheduleDrain();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  #finishIterator(): void {
    if (this.#waiter) {
      const waiter = this.#waiter;
      this.#waiter = null;
      waiter({ value: undefined, done: true });
    }
  }

  /**
   * Closes the connection and stops reconnecting. Pending receipts are rejected. Acknowledges
   * what was handed over (from a 'message' listener: up to the message in hand) and nothing else.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    if (this.#connectWaiter) {
      this.#connectWaiter.reject(new ConnectError('client closed', Code.OK));
      this.#connectWaiter = null;
    }
    // What was not handed over stays unacknowledged: the relay delivers it again.
    this.#held.length = 0;
    const link = this.#link;
    if (link) {
      // Flush a pending ack first so the relay does not redeliver what was handed over,
      // including the message a 'message' listener calling close() is being handed.
      if (this.#handingOver > this.#ackUpTo) this.#ackUpTo = this.#handingOver;
      if (this.#ackUpTo > this.#ackSent && link.ready) {
        this.#ackSent = this.#ackUpTo;
        link.write(encodeAck(this.#ackUpTo));
      }
      await new Promise<void>((resolve) => process.nextTick(resolve));
      link.close();
    }
    this.#finishIterator();
  }
}

const NO_OPTIONS: SendOptions = {};
const NO_RECIPIENTS: Array<Uint8Array | string> = [];
const SENT_RESULT: SendResult = Object.freeze({ ok: true, code: Code.OK, codeName: 'OK', message: 'sent (no receipt asked for)', outcomes: Object.freeze([]) as unknown as RecipientOutcome[] });
/** What every send without a receipt resolves with while the buffer has room: one promise, shared. */
const SENT: Promise<SendResult> = Promise.resolve(SENT_RESULT);

/** Base58 names of keys the client has shown (senders' fromText, receipts' recipients), by key bytes. */
const keyTexts = new KeyCache<string>();
function keyText(key: Uint8Array): string {
  return keyTexts.getOrMake(keyIdOf(key), () => encodeKey(key));
}

/** A received message: views of the received bytes, the sender's text made when first asked for. */
class Delivery implements ReceivedMessage {
  #fromText: string | undefined;
  constructor(
    readonly from: Uint8Array,
    public body: Uint8Array,
    readonly storageKey: Uint8Array | null,
    readonly fromMailbox: boolean,
    readonly deliveryId: number,
    readonly messageId?: Uint8Array,
    readonly recipients?: Uint8Array[],
  ) {}

  get fromText(): string {
    return this.#fromText ??= keyText(this.from);
  }

  /** JSON and util.inspect show fromText too, as they did when it was a plain property. */
  toJSON(): object {
    return { from: this.from, fromText: this.fromText, body: this.body, messageId: this.messageId, recipients: this.recipients, storageKey: this.storageKey, fromMailbox: this.fromMailbox, deliveryId: this.deliveryId };
  }
}

/** A storage key: 16 bytes as given, or the first 16 bytes of SHA-256 of a string. */
export function storageKeyBytes(key: string | Uint8Array | undefined): Uint8Array | null {
  if (key === undefined) return null;
  if (typeof key === 'string') return createHash('sha256').update(key, 'utf8').digest().subarray(0, STORAGE_KEY_LENGTH);
  if (key.length !== STORAGE_KEY_LENGTH) throw new RangeError(`a storage key is ${STORAGE_KEY_LENGTH} bytes or a string`);
  return key;
}

function toSendResult(fields: ResultFields, recipients: Array<Uint8Array | string>): SendResult {
  const outcomes = fields.outcomes.map((code, i) => {
    const r = recipients[i];
    return { recipient: r === undefined ? '' : typeof r === 'string' ? r.trim() : keyText(r), code, codeName: codeName(code) };
  });
  return {
    ok: fields.code === Code.OK,
    code: fields.code,
    codeName: codeName(fields.code),
    message: codeMessage(fields.code),
    outcomes,
  };
}
