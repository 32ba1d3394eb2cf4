// pulltab listen: print messages as they arrive, one per line, with the sender's verified key.
import { ConnectError, RelayClient, type ReceivedMessage } from '../client/client.js';
import { AddressError } from '../protocol/address.js';
import { CliError, flag, numberOption, parseCommand, requireOption } from './args.js';
import { loadIdentity } from './keys.js';

export async function listen(argv: string[]): Promise<number> {
  const parsed = parseCommand({
    name: 'listen',
    usage: 'listen --relay ADDRESS --key FILE [--count N] [--timeout SECONDS] [--until-empty] [--json]',
    description: 'Prints each message received as "SENDERKEY: BODY" (or a JSON object per line with --json),\n'
      + 'stored messages first. Exits after N messages, after the timeout, or (--until-empty) once the\n'
      + 'mailbox has been emptied; exit status 1 when --count was not reached.',
    options: {
      relay: { type: 'string' }, key: { type: 'string' }, count: { type: 'string' }, timeout: { type: 'string' },
      json: { type: 'boolean' }, raw: { type: 'boolean' }, 'until-empty': { type: 'boolean' },
    },
    help: {
      '--relay ADDRESS': 'the relay address printed by pulltab serve',
      '--key FILE': 'your identity file',
      '--count N': 'exit after N messages',
      '--timeout SECONDS': 'exit after this long',
      '--until-empty': 'exit once the stored messages have been received',
      '--json': 'one JSON object per message: from, body (or bodyBase64), messageId, fromMailbox, ...',
      '--raw': 'print bodies as received, without opening them',
    },
  }, argv);
  if (!parsed) return 0;
  const { values } = parsed;
  const relay = requireOption('listen', values, 'relay');
  const identity = loadIdentity('listen', requireOption('listen', values, 'key'));
  const count = numberOption('listen', values, 'count', 1);
  const timeout = numberOption('listen', values, 'timeout', 0);
  let client: RelayClient;
  try {
    client = new RelayClient({ relay, identity, reconnect: false, raw: flag(values, 'raw') });
  } catch (err) {
    if (err instanceof AddressError) throw new CliError(`listen: ${err.message}`, 2);
    throw err;
  }
  let received = 0;
  return new Promise<number>((resolve, reject) => {
    let done = false;
    const finish = (code: number, error?: CliError) => {
      if (done) return;
      done = true;
      client.close().then(() => (error ? reject(error) : resolve(code)));
    };
    client.on('message', (message) => {
      if (done) return;
      process.stdout.write(format(message, flag(values, 'json')) + '\n');
      received++;
      if (count !== undefined && received >= count) finish(0);
    });
    client.on('invalid', (error) => process.stderr.write(`listen: dropped a message that failed to open: ${error.message}\n`));
    client.on('queueEmpty', () => { if (flag(values, 'until-empty')) finish(0); });
    client.on('disconnected', (info) => finish(1, new CliError(`listen: ${info.reason}`)));
    if (timeout !== undefined) {
      setTimeout(() => {
        if (count !== undefined) finish(1, new CliError(`listen: timed out after ${received} of ${count} messages`));
        else finish(0);
      }, timeout * 1000).unref();
    }
    client.connect().catch((err: ConnectError) => finish(1, new CliError(`listen: ${err.message}`)));
  });
}

function format(message: ReceivedMessage, json: boolean): string {
  const body = Buffer.from(message.body);
  const text = body.toString('utf8');
  const isText = Buffer.from(text, 'utf8').equals(body);
  if (json) {
    return JSON.stringify({
      from: message.fromText,
      ...(isText ? { body: text } : { bodyBase64: body.toString('base64') }),
      messageId: message.messageId ? Buffer.from(message.messageId).toString('hex') : undefined,
      storageKey: message.storageKey ? Buffer.from(message.storageKey).toString('hex') : undefined,
      fromMailbox: message.fromMailbox,
    });
  }
  const shown = isText ? (/[\x00-\x1f\x7f]/.test(text) ? JSON.stringify(text) : text) : `base64:${body.toString('base64')}`;
  return `${message.fromText}: ${shown}`;
}
