// The relay address a client is given: pulltab://RELAYKEY@HOST:PORT over plain TCP, or
// pulltabs://RELAYKEY@HOST:PORT over TLS, with the relay's public key in base58, so one string
// says where to connect, how, and which key to pin.
import { decodeKey, encodeKey, KeyFormatError, requireUsableKey } from '../crypto/keys.js';

export interface RelayAddress {
  relayKey: Uint8Array;
  host: string;
  port: number;
  /** Connect with TLS (the pulltabs:// scheme). */
  tls?: boolean;
}

export class AddressError extends Error {
  override name = 'AddressError';
}

export function formatRelayAddress(address: RelayAddress): string {
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `${address.tls ? 'pulltabs' : 'pulltab'}://${encodeKey(address.relayKey)}@${host}:${address.port}`;
}

export function parseRelayAddress(text: string): RelayAddress {
  const match = /^(pulltabs?):\/\/([1-9A-HJ-NP-Za-km-z]+)@(\[[0-9a-fA-F:.]+\]|[^:@\/\[\]\s]+):(\d{1,5})\/?$/.exec(text.trim());
  if (!match) throw new AddressError(`not a relay address (expected pulltab://KEY@HOST:PORT, or pulltabs:// for TLS): ${JSON.stringify(text.slice(0, 120))}`);
  let relayKey: Uint8Array;
  try {
    relayKey = requireUsableKey(decodeKey(match[2]), 'relay key');
  } catch (err) {
    throw new AddressError(`bad relay key in address: ${(err as KeyFormatError).message}`);
  }
  const port = Number(match[4]);
  if (port < 1 || port > 65535) throw new AddressError(`bad port in relay address: ${match[4]}`);
  const host = match[3].startsWith('[') ? match[3].slice(1, -1) : match[3];
  return { relayKey, host, port, tls: match[1] === 'pulltabs' };
}
