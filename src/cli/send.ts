// pulltab send: seal a message for one or more recipients and wait for the relay's answer.
import { readFileSync } from 'node:fs';
import { ConnectError, RelayClient } from '../client/client.js';
import { decodeKey, KeyFormatError, requireUsableKey } from '../crypto/keys.js';
import { AddressError } from '../protocol/address.js';
import { CliError, flag, numberOption, parseCommand, requireOption, stringOption } from './args.js';
import { loadIdentity } from './keys.js';

export async function send(argv: string[]): Promise<number> {
  const parsed = parseCommand({
    name: 'send',
    usage: 'send --relay ADDRESS --key FILE --to KEY[,KEY...] [--store] [--storage-key K] [--ttl SECONDS] MESSAGE',
    description: 'Seals MESSAGE (or standard input, when MESSAGE is -) for each recipient and sends it.\n'
      + 'Exits 0 once the relay has delivered or stored it for every recipient, 1 with the reason otherwise.',
    options: {
      relay: { type: 'string' }, key: { type: 'string' }, to: { type: 'string' },
      store: { type: 'boolean' }, 'storage-key': { type: 'string' }, ttl: { type: 'string' }, raw: { type: 'boolean' },
    },
    help: {
      '--relay ADDRESS': 'the relay address printed by pulltab serve',
      '--key FILE': 'your identity file',
      '--to KEY[,KEY...]': 'recipient public keys (base58), comma-separated',
      '--store': 'keep the message in the mailbox of a recipient who is offline',
      '--storage-key K': 'a newer stored message with the same key replaces the older one',
      '--ttl SECONDS': 'how long a stored message lives (default: the relay\'s)',
      '--raw': 'send the bytes unsealed (for clients that seal themselves)',
    },
    allowPositionals: true,
  }, argv);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const relay = requireOption('send', values, 'relay');
  const identity = loadIdentity('send', requireOption('send', values, 'key'));
  const to = requireOption('send', values, 'to').split(',').map((s) => s.trim()).filter(Boolean);
  let recipients: Uint8Array[];
  try {
    recipients = to.map((k) => requireUsableKey(decodeKey(k), 'recipient'));
  } catch (err) {
    throw new CliError(`send: --to: ${(err as KeyFormatError).message}`, 2);
  }
  const ttl = numberOption('send', values, 'ttl', 1);
  if (positionals.length !== 1) throw new CliError('send: give exactly one MESSAGE (or - to read standard input)', 2);
  const body = positionals[0] === '-' ? readFileSync(0) : Buffer.from(positionals[0], 'utf8');
  let client: RelayClient;
  try {
    // Send-only: it never cuts off a `pulltab listen` of the same key. A relay that is down
    // fails at once (no reconnect): a send is one request, and the caller decides about retrying.
    client = new RelayClient({ relay, identity, reconnect: false, raw: flag(values, 'raw'), role: 'send' });
  } catch (err) {
    if (err instanceof AddressError) throw new CliError(`send: ${err.message}`, 2);
    throw err;
  }
  try {
    await client.connect();
  } catch (err) {
    throw new CliError(`send: ${(err as ConnectError).message}`);
  }
  try {
    const result = await client.send(recipients, body, {
      store: flag(values, 'store'), storageKey: stringOption(values, 'storage-key'), ttlSeconds: ttl, receipt: true,
    });
    for (const outcome of result.outcomes) {
      process.stderr.write(`${outcome.recipient}: ${outcome.codeName.toLowerCase()}\n`);
    }
    if (!result.ok) throw new CliError(`send: refused: ${result.codeName} (${result.message})`);
    return 0;
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`send: ${(err as Error).message}`);
  } finally {
    await client.close();
  }
}
