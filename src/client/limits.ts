// The relay's limits as its welcome states them (docs/PROTOCOL.md §2.4), applied by the client
// before it sends: a message the relay would refuse is refused here, with the same code, and
// nothing goes on the wire. The relay checks again (a policy may change after the welcome).
import { Code } from '../protocol/constants.js';
import type { WelcomeLimits } from '../protocol/handshake.js';

/**
 * The code the relay would refuse this SEND with, checked in the relay's order (§3.1), or null.
 * bodyBytes: the SEND's body after sealing; ttlSeconds 0: the relay's default. Arguments, not an
 * object: this runs for every message sent.
 */
export function localRefusal(
  limits: WelcomeLimits | null, recipients: number, bodyBytes: number, store: boolean, ttlSeconds: number,
): { code: number; detail: string } | null {
  if (limits === null || limits.maxRecipients === 0) return null; // no welcome limits to go by
  if (recipients > limits.maxRecipients) {
    return { code: Code.TOO_MANY_RECIPIENTS, detail: `${recipients} recipients; the relay allows ${limits.maxRecipients}` };
  }
  if (bodyBytes > limits.maxPayloadBytes) {
    return { code: Code.PAYLOAD_TOO_LARGE, detail: `a ${bodyBytes}-byte body; the relay allows ${limits.maxPayloadBytes}` };
  }
  const ttl = ttlSeconds === 0 ? limits.defaultTtlSeconds : ttlSeconds;
  if (store && ttl > limits.maxTtlSeconds) {
    return { code: Code.TTL_TOO_LONG, detail: `a TTL of ${ttl} s; the relay allows ${limits.maxTtlSeconds}` };
  }
  return null;
}
