// A public key as a string, for the Maps that are looked up by key: the router's sessions, the
// unusable-key set, the caches of key conversions, policy assignments. One latin1 character per
// byte: one-to-one, never shown to anyone (encodeKey makes the base58 text people read), and the
// cheapest string Node makes from bytes. These run for every recipient of every message routed.

/** A public key's length: an Ed25519 key, as it stands on the wire. */
const KEY_BYTES = 32;

// Buffer#latin1Slice works on any Uint8Array: no Buffer view per call (Buffer.from(key.buffer, ...)
// allocates one), and none of Buffer#toString's argument checks (which cost about a fifth more).
// It throws where toString would clip: callers pass bytes that are there. It is not documented,
// so a Node without it gets the documented way (a view and toString) instead of a crash.
type Latin1Slice = (this: Uint8Array, start: number, end: number) => string;
const latin1Slice: Latin1Slice = (Buffer.prototype as unknown as { latin1Slice?: Latin1Slice }).latin1Slice
  ?? function (this: Uint8Array, start: number, end: number): string {
    return Buffer.from(this.buffer, this.byteOffset, this.length).toString('latin1', start, end);
  };

/** The id of the 32-byte key at buf[offset, offset + 32), read in place (a recipient in a received SEND). */
export function keyIdAt(buf: Uint8Array, offset: number): string {
  return latin1Slice.call(buf, offset, offset + KEY_BYTES);
}

/** The id of a key held on its own (a Uint8Array of its bytes, or a view of them). */
export function keyIdOf(key: Uint8Array): string {
  return latin1Slice.call(key, 0, key.length);
}

/** The key bytes an id stands for: keyIdOf's inverse. */
export function keyOfId(id: string): Buffer {
  return Buffer.from(id, 'latin1');
}
