// The relay address a client is given: pulltab://RELAYKEY@HOST:PORT, with the relay's public
// key in base58, so one string says where to connect and which key to pin.
import { decodeKey, encodeKey, KeyFormatError, requireUsableKey } from '../crypto/keys.js';

export interface RelayAddress {
  relayKey: Uint8Array;
  host: string;
  port: number;
}

export class AddressError extends Error {
  override name = 'AddressError';
}

export function formatRelayAddress(address: RelayAddress): string {
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `pulltab://${encodeKey(address.relayKey)}@${host}:${address.port}`;
}

export function parseRelayAddress(text: string): RelayAddress {
  const match = /^pulltab:\/\/([1-9A-HJ-NP-Za-km-z]+)@(\[[0-9a-fA-F:.]+\]|[^:@\/\[\]\s]+):(\d{1,5})\/?$/.exec(text.trim());
  if (!match) throw new AddressError(`not a relay address (expected pulltab://KEY@HOST:PORT): ${JSON.stringify(text.slice(0, 120))}`);
  let relayKey: Uint8Array;
  try {
    relayKey = requireUsableKey(decodeKey(match[1]), 'relay key');
  } catch (err) {
    throw new AddressError(`bad relay key in address: ${(err as KeyFormatError).message}`);
  }
  const port = Number(match[3]);
  if (port < 1 || port > 65535) throw new AddressError(`bad port in relay address: ${match[3]}`);
  const host = match[2].startsWith('[') ? match[2].slice(1, -1) : match[2];
  return { relayKey, host, port };
}
