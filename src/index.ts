// The library: import { RelayClient } from 'pulltab'.
export {
  RelayClient, NotConnectedError, ConnectError, SendBufferFullError, storageKeyBytes,
  type RelayClientOptions, type ClientRole, type SendOptions, type AdminAnswer, type SendResult, type RecipientOutcome, type ReceivedMessage,
} from './client/client.js';
export {
  generateIdentity, identityFromSecret, readIdentityFile, writeIdentityFile, loadOrCreateIdentityFile,
  encodeKey, decodeKey, KeyFormatError, type Identity,
} from './crypto/keys.js';
export { sealMessage, openMessage, SealError, type SealedMessage, type OpenedMessage } from './crypto/seal.js';
export { parseRelayAddress, formatRelayAddress, AddressError, type RelayAddress } from './protocol/address.js';
export { Code, codeName, codeMessage } from './protocol/constants.js';
export { Relay, type RelayOptions } from './server/relay.js';
export { defaultConfig, type RelayConfig, type RelayConfigInput } from './server/config.js';
