// Frame types, codes and limits of the Pulltab wire protocol. docs/PROTOCOL.md is the
// authority: every number here appears there, and a change here is a change there.

export const FRAME_HEADER_LENGTH = 5; // type u8 | length u32 big-endian

// Version 2 signs everything the handshake negotiates (the relay's version range, the client's
// version and flags, the relay's limits) and the TLS channel binding. Version 1 is not spoken:
// it left the flags and the range unsigned, and no deployed client needs it.
export const PROTOCOL_VERSION_MIN = 2;
export const PROTOCOL_VERSION_MAX = 2;

export const KEY_LENGTH = 32;
export const NONCE_LENGTH = 32;
export const SIGNATURE_LENGTH = 64;
export const STORAGE_KEY_LENGTH = 16;
export const MAX_WRAPPED_KEY_LENGTH = 255;
/** "PTAB": the first bytes a relay sends, so a client can tell it reached a Pulltab relay. */
export const SERVER_HELLO_MAGIC = Buffer.from('PTAB', 'ascii');

export const FrameType = {
  SERVER_HELLO: 0x01,
  CLIENT_HELLO: 0x02,
  SERVER_WELCOME: 0x03,
  SEND: 0x10,
  RESULT: 0x11,
  DELIVER: 0x12,
  ACK: 0x13,
  QUEUE_EMPTY: 0x14,
  PING: 0x20,
  PONG: 0x21,
  CLOSE: 0x22,
  NOTICE: 0x23,
  ADMIN_REQUEST: 0x30,
  ADMIN_RESPONSE: 0x31,
} as const;
export type FrameTypeName = keyof typeof FrameType;

/** CLIENT_HELLO flags. Bits not defined here are reserved: clients send 0, the relay ignores them. */
export const HelloFlags = {
  /** A send-only connection: it never displaces the key's receiving connection and receives no messages. */
  SEND_ONLY: 0x01,
} as const;

export const SendFlags = {
  STORE: 0x01,
  RECEIPT: 0x02,
  HAS_STORAGE_KEY: 0x04,
} as const;

export const DeliverFlags = {
  FROM_MAILBOX: 0x01,
  HAS_STORAGE_KEY: 0x04,
} as const;

/** One code space for handshake status, per-message results, per-recipient outcomes, CLOSE and NOTICE. */
export const Code = {
  OK: 0x0000,
  DELIVERED: 0x0001,
  STORED: 0x0002,
  // Connection level: the relay sends CLOSE (or a failed SERVER_WELCOME) and closes.
  MALFORMED_FRAME: 0x0101,
  FRAME_TOO_LARGE: 0x0102,
  UNEXPECTED_FRAME: 0x0103,
  HANDSHAKE_TIMEOUT: 0x0104,
  AUTH_FAILED: 0x0105,
  UNSUPPORTED_VERSION: 0x0106,
  NOT_AUTHORIZED: 0x0107,
  RELAY_FULL: 0x0108,
  REPLACED: 0x0109,
  GOING_AWAY: 0x010a,
  SLOW_CONSUMER: 0x010b,
  IDLE_TIMEOUT: 0x010c,
  KICKED: 0x010d,
  TOO_MANY_CONNECTIONS: 0x010e,
  TRANSPORT_MISMATCH: 0x010f,
  // Message level: the relay answers with RESULT and the connection stays open.
  PAYLOAD_TOO_LARGE: 0x0201,
  TOO_MANY_RECIPIENTS: 0x0202,
  NO_RECIPIENTS: 0x0203,
  DUPLICATE_RECIPIENT: 0x0204,
  RECIPIENT_OFFLINE: 0x0205,
  TTL_TOO_LONG: 0x0206,
  QUOTA_COUNT: 0x0207,
  QUOTA_BYTES: 0x0208,
  STORE_FULL: 0x0209,
  STORE_ERROR: 0x020a,
  RECIPIENT_BUSY: 0x020b,
  MALFORMED_SEND: 0x020c,
  BAD_RECIPIENT: 0x020d,
  // Admin answers (ADMIN_RESPONSE status) and notices.
  FORBIDDEN: 0x0301,
  BAD_REQUEST: 0x0302,
  NOT_FOUND: 0x0303,
  RATE_LIMITED: 0x0304,
  INTERNAL_ERROR: 0x0305,
  CONFLICT: 0x0306,
} as const;
export type CodeName = keyof typeof Code;

const codeNames = new Map<number, CodeName>(Object.entries(Code).map(([name, value]) => [value, name as CodeName]));

export function codeName(code: number): string {
  return codeNames.get(code) ?? `CODE_0x${code.toString(16).padStart(4, '0')}`;
}

/** Human text for each code, shown by the CLI and in CLOSE reasons. */
export const CODE_MESSAGES: Record<CodeName, string> = {
  OK: 'ok',
  DELIVERED: 'delivered to the recipient',
  STORED: 'stored in the recipient\'s mailbox',
  MALFORMED_FRAME: 'malformed frame',
  FRAME_TOO_LARGE: 'frame longer than its type allows',
  UNEXPECTED_FRAME: 'frame type not allowed at this point',
  HANDSHAKE_TIMEOUT: 'handshake not completed in time',
  AUTH_FAILED: 'authentication failed',
  UNSUPPORTED_VERSION: 'no protocol version in common',
  NOT_AUTHORIZED: 'not authorized to connect',
  RELAY_FULL: 'relay is full, retry later',
  REPLACED: 'the same key connected again; this connection is replaced',
  GOING_AWAY: 'relay is shutting down, retry later',
  SLOW_CONSUMER: 'connection did not read its messages in time',
  IDLE_TIMEOUT: 'connection stopped answering pings',
  KICKED: 'disconnected by an administrator',
  TOO_MANY_CONNECTIONS: 'this key has as many send-only connections open as the relay allows, retry later',
  TRANSPORT_MISMATCH: 'TLS on one side and plain TCP on the other: a pulltabs:// address is for a TLS port, pulltab:// for a plain one',
  PAYLOAD_TOO_LARGE: 'message body larger than allowed',
  TOO_MANY_RECIPIENTS: 'more recipients than allowed',
  NO_RECIPIENTS: 'message has no recipients',
  DUPLICATE_RECIPIENT: 'a recipient is listed twice',
  RECIPIENT_OFFLINE: 'recipient offline and the message was not storable',
  TTL_TOO_LONG: 'TTL longer than the relay allows',
  QUOTA_COUNT: 'recipient mailbox holds too many messages',
  QUOTA_BYTES: 'recipient mailbox holds too many bytes',
  STORE_FULL: 'relay message store is full',
  STORE_ERROR: 'relay could not store the message',
  RECIPIENT_BUSY: 'recipient is not reading fast enough and the message was not storable',
  MALFORMED_SEND: 'malformed SEND frame',
  BAD_RECIPIENT: 'a recipient key is a small-order or non-canonical Ed25519 point, which no one can hold',
  FORBIDDEN: 'the caller lacks the capability this admin command needs',
  BAD_REQUEST: 'malformed admin request',
  NOT_FOUND: 'no such policy, user or command',
  RATE_LIMITED: 'sending faster than allowed; reads are paused',
  INTERNAL_ERROR: 'the relay failed to carry out the request',
  CONFLICT: 'the request conflicts with the relay\'s state',
};

export function codeMessage(code: number): string {
  const name = codeNames.get(code);
  return name ? CODE_MESSAGES[name] : `unknown code 0x${code.toString(16)}`;
}

/** Fixed sizes of frames whose payload has a fixed layout. */
export const SERVER_HELLO_LENGTH = 4 + 1 + 1 + KEY_LENGTH + NONCE_LENGTH; // 70
export const CLIENT_HELLO_LENGTH = 1 + 1 + KEY_LENGTH + NONCE_LENGTH + SIGNATURE_LENGTH; // 130
/** SERVER_WELCOME: status, version, retryAfterMs, the limits block, then the relay's signature. */
export const WELCOME_LIMITS_LENGTH = 4 + 1 + 4 + 4 + 4 + 4 + 4; // 25
export const SERVER_WELCOME_LENGTH = 2 + 1 + 4 + WELCOME_LIMITS_LENGTH + SIGNATURE_LENGTH; // 96
export const SEND_FIXED_LENGTH = 4 + 1 + 4 + STORAGE_KEY_LENGTH + 1; // 26
/** RESULT: seq u32 | code u16 | outcomeCount u8, then a u16 outcome per recipient. */
export const RESULT_FIXED_LENGTH = 4 + 2 + 1; // 7
export const DELIVER_FIXED_LENGTH = 8 + 1 + KEY_LENGTH + STORAGE_KEY_LENGTH + 1; // 58
export const ACK_LENGTH = 8;
export const PING_LENGTH = 8;
/** CLOSE and NOTICE: code u16 | retryAfterMs u32 | reason (at most MAX_REASON_BYTES). */
export const CLOSE_FIXED_LENGTH = 6;
// The longest payload of each frame type its reader takes: frame-types.ts puts them in one table.
export const MAX_HANDSHAKE_FRAME_LENGTH = 1024;
export const MAX_CONTROL_FRAME_LENGTH = 512;
export const MAX_REASON_BYTES = 256;
/** ADMIN_REQUEST payloads the relay reads; ADMIN_RESPONSE payloads a client accepts. */
export const MAX_ADMIN_REQUEST_LENGTH = 64 * 1024;
export const MAX_ADMIN_RESPONSE_LENGTH = 16 * 1024 * 1024;
/** A RESULT with an outcome for each of 255 recipients (recipientCount is a u8): 517 bytes. */
export const MAX_RESULT_LENGTH = RESULT_FIXED_LENGTH + 2 * 255;
/** The largest body a relay can be configured to carry (its maxPayloadBytes setting). */
export const MAX_PAYLOAD_BYTES_SETTING = 64 * 1024 * 1024;
/**
 * DELIVER payloads a client accepts (and unknown types it skips): the largest body any relay
 * can be configured for, with room to spare for the header (58 bytes and a wrapped key of up
 * to 255). A client does not know the relay's setting when it reads.
 */
export const MAX_DELIVER_LENGTH = MAX_PAYLOAD_BYTES_SETTING + 64 * 1024;

export interface ProtocolLimits {
  /** Largest body a SEND may carry (bytes). */
  maxPayloadBytes: number;
  /** Most recipients one SEND may list (1..255). */
  maxRecipients: number;
}

export const DEFAULT_PROTOCOL_LIMITS: ProtocolLimits = {
  maxPayloadBytes: 1024 * 1024,
  maxRecipients: 64,
};

/**
 * The longest SEND frame the relay reads: its fixed part, a full recipient list with the
 * longest wrapped keys, and the largest body. A longer frame closes the connection with
 * FRAME_TOO_LARGE before a byte of it is buffered; a body over maxPayloadBytes inside a
 * frame that fits gets a PAYLOAD_TOO_LARGE result instead, and the connection goes on.
 */
export function maxSendFrameLength(limits: ProtocolLimits): number {
  return SEND_FIXED_LENGTH + limits.maxRecipients * (KEY_LENGTH + 1 + MAX_WRAPPED_KEY_LENGTH) + limits.maxPayloadBytes;
}
