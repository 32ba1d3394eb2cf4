// The relay's limits as its welcome states them (docs/PROTOCOL.md §2.4), applied by the client
// before it sends: a message the relay would refuse is refused here, with the same code, and
// nothing goes on the wire. The relay checks again (a policy may change after the welcome).
import { Code } from '../protocol/constants.js';
import type { WelcomeLimits } from '../protocol/handshake.js';

export interface SendShape {
  recipients: number;
  /** Bytes of the SEND's body (after sealing). */
  bodyBytes: number;
  store: boolean;
  /** 0: the relay's default TTL. */
  ttlSeconds: number;
}

/** The code the relay would refuse this SEND with, checked in the relay's order (§3.1), or null. */
export function localRefusal(limits: WelcomeLimits | null, send: SendShape): { code: number; detail: string } | null {
  if (limits === null || limits.maxRecipients === 0) return null; // no welcome limits to go by
  if (send.recipients > limits.maxRecipients) {
    return { code: Code.TOO_MANY_RECIPIENTS, detail: `${send.recipients} recipients; the relay allows ${limits.maxRecipients}` };
  }
  if (send.bodyBytes > limits.maxPayloadBytes) {
    return { code: Code.PAYLOAD_TOO_LARGE, detail: `a ${send.bodyBytes}-byte body; the relay allows ${limits.maxPayloadBytes}` };
  }
  const ttl = send.ttlSeconds === 0 ? limits.defaultTtlSeconds : send.ttlSeconds;
  if (send.store && ttl > limits.maxTtlSeconds) {
    return { code: Code.TTL_TOO_LONG, detail: `a TTL of ${ttl} s; the relay allows ${limits.maxTtlSeconds}` };
  }
  return null;
}
