// Every frame type in one table: who sends it, when, and the longest payload its reader takes.
// The relay's reader (server/connection.ts) and the client's (client/link.ts) both take their
// length limits from here, checked on the 5-byte header before a byte of the payload is
// buffered (DESIGN.md, principle 4). docs/PROTOCOL.md prints the same table (section 1) and the
// same limits (section 7); test/protocol-exactness.test.ts holds the two to each other.
import {
  FrameType, MAX_ADMIN_REQUEST_LENGTH, MAX_ADMIN_RESPONSE_LENGTH, MAX_CONTROL_FRAME_LENGTH, MAX_DELIVER_LENGTH,
  MAX_HANDSHAKE_FRAME_LENGTH, MAX_RESULT_LENGTH, type FrameTypeName,
} from './constants.js';

/** When a side sends a frame type: during the handshake, after it (in the session), or both. */
export type FramePhase = 'handshake' | 'session' | 'any';

export interface FrameTypeSpec {
  readonly type: number;
  readonly name: FrameTypeName;
  /** When the relay sends it; null: never. */
  readonly relaySends: FramePhase | null;
  /** When a client sends it; null: never. */
  readonly clientSends: FramePhase | null;
  /** The longest payload its reader takes, in bytes; SEND_SIZED: the SEND maximum of the relay's limits. */
  readonly maxLength: number;
}

/** The maxLength of SEND: maxSendFrameLength of the relay's limits (maxRecipients, maxPayloadBytes). */
export const SEND_SIZED = -1;

const row = (name: FrameTypeName, relaySends: FramePhase | null, clientSends: FramePhase | null, maxLength: number): FrameTypeSpec =>
  ({ type: FrameType[name], name, relaySends, clientSends, maxLength });

/** In type order, as docs/PROTOCOL.md section 1 lists them. */
export const FRAME_TYPES: readonly FrameTypeSpec[] = [
  row('SERVER_HELLO', 'handshake', null, MAX_HANDSHAKE_FRAME_LENGTH),
  row('CLIENT_HELLO', null, 'handshake', MAX_HANDSHAKE_FRAME_LENGTH),
  row('SERVER_WELCOME', 'handshake', null, MAX_HANDSHAKE_FRAME_LENGTH),
  row('SEND', null, 'session', SEND_SIZED),
  row('RESULT', 'session', null, MAX_RESULT_LENGTH),
  row('DELIVER', 'session', null, MAX_DELIVER_LENGTH),
  row('ACK', null, 'session', MAX_CONTROL_FRAME_LENGTH),
  row('QUEUE_EMPTY', 'session', null, MAX_CONTROL_FRAME_LENGTH),
  row('PING', 'session', 'session', MAX_CONTROL_FRAME_LENGTH),
  row('PONG', 'session', 'session', MAX_CONTROL_FRAME_LENGTH),
  // A relay may refuse a connection with CLOSE before its SERVER_HELLO (RELAY_FULL, GOING_AWAY).
  row('CLOSE', 'any', 'session', MAX_CONTROL_FRAME_LENGTH),
  row('NOTICE', 'session', null, MAX_CONTROL_FRAME_LENGTH),
  row('ADMIN_REQUEST', null, 'session', MAX_ADMIN_REQUEST_LENGTH),
  row('ADMIN_RESPONSE', 'session', null, MAX_ADMIN_RESPONSE_LENGTH),
];

const byType: (FrameTypeSpec | undefined)[] = new Array(256);
for (const spec of FRAME_TYPES) byType[spec.type] = spec;
for (const [name, type] of Object.entries(FrameType)) {
  if (byType[type]?.name !== name) throw new Error(`frame-types: ${name} is not in the table (or twice)`);
}

/** The table's row for a type; undefined for a type this version does not know. */
export function frameTypeSpec(type: number): FrameTypeSpec | undefined {
  return byType[type];
}

// The readers ask for a limit and whether to skip on every frame header: one typed-array load
// each. A limit of 0 is "may not come now": refused at the header whatever its length (a
// 0-length one reaches the frame handler, which refuses it there).
const KNOWN = Uint8Array.from({ length: 256 }, (_, type) => (byType[type] ? 1 : 0));

function sendsIn(phase: FramePhase | null, inHandshake: boolean): boolean {
  return phase === 'any' || phase === (inHandshake ? 'handshake' : 'session');
}

function relayLimits(inHandshake: boolean): Int32Array {
  return Int32Array.from({ length: 256 }, (_, type) => {
    const spec = byType[type];
    // After the handshake an unknown type is read (and skipped) up to the SEND maximum, so newer
    // clients can talk to this relay; during the handshake there are no unknown types.
    if (spec === undefined) return inHandshake ? 0 : SEND_SIZED;
    return sendsIn(spec.clientSends, inHandshake) ? spec.maxLength : 0;
  });
}

const RELAY_HANDSHAKE_LIMITS = relayLimits(true);
const RELAY_SESSION_LIMITS = relayLimits(false);

const CLIENT_SESSION_LIMITS = Int32Array.from({ length: 256 }, (_, type) => {
  const spec = byType[type];
  if (spec === undefined) return MAX_DELIVER_LENGTH; // skipped: newer relays can talk to this client
  // A client's own types, should a relay send one: read up to the control limit and ignored.
  return sendsIn(spec.relaySends, false) ? spec.maxLength : MAX_CONTROL_FRAME_LENGTH;
});

/**
 * The longest payload the relay reads of a frame of this type from a client; 0: the type may
 * not come now (UNEXPECTED_FRAME). sendMax: maxSendFrameLength of the relay's limits.
 */
export function relayReadLimit(type: number, inHandshake: boolean, sendMax: number): number {
  const limit = (inHandshake ? RELAY_HANDSHAKE_LIMITS : RELAY_SESSION_LIMITS)[type]!;
  return limit === SEND_SIZED ? sendMax : limit;
}

/**
 * The longest payload a client reads of a frame of this type from the relay. During the
 * handshake any type up to the handshake maximum: the client then acts on SERVER_HELLO,
 * SERVER_WELCOME and CLOSE, and gives up on anything else.
 */
export function clientReadLimit(type: number, inHandshake: boolean): number {
  return inHandshake ? MAX_HANDSHAKE_FRAME_LENGTH : CLIENT_SESSION_LIMITS[type]!;
}

/** False for a type this version does not know: skipped after the handshake, by relay and client alike. */
export function isFrameType(type: number): boolean {
  return KNOWN[type] === 1;
}
