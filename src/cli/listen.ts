// pulltab listen: print messages as they arrive, one per line, with the sender's verified key.
import { ConnectError, RelayClient, type ReceivedMessage } from '../client/client.js';
import { AddressError } from '../protocol/address.js';
import { Code } from '../protocol/constants.js';
import { CliError, flag, numberOption, parseCommand, requireOption } from './args.js';
import { loadIdentity } from './keys.js';

export async function listen(argv: string[]): Promise<number> {
  const parsed = parseCommand({
    name: 'listen',
    usage: 'listen --relay ADDRESS --key FILE [--count N] [--timeout SECONDS] [--until-empty] [--json]',
    description: 'Prints each message received as "SENDERKEY: BODY" (or a JSON object per line with --json),\n'
      + 'stored messages first. Exits after N messages, after the timeout, or (--until-empty) once the\n'
      + 'mailbox has been emptied; exit status 1 when --count was not reached. Waits for a relay that is\n'
      + 'not up yet and reconnects after it restarts (within --timeout, when given); exits at once on a\n'
      + 'refusal retrying cannot fix (wrong relay key, NOT_AUTHORIZED, REPLACED by a newer listen) or a kick.',
    options: {
      relay: { type: 'string' }, key: { type: 'string' }, count: { type: 'string' }, timeout: { type: 'string' },
      json: { type: 'boolean' }, raw: { type: 'boolean' }, 'until-empty': { type: 'boolean' },
    },
    help: {
      '--relay ADDRESS': 'the relay address printed by pulltab serve',
      '--key FILE': 'your identity file',
      '--count N': 'exit after N messages',
      '--timeout SECONDS': 'exit after this long, waiting for the relay included (status 1 if it was never reached)',
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
    // Reconnects (backoff capped at 2 s) so a listener started before its relay, or across a
    // relay restart, keeps listening; only a fatal refusal (wrong relay key, NOT_AUTHORIZED,
    // REPLACED by a newer listener of the key) or a kick ends it early.
    client = new RelayClient({ relay, identity, reconnect: true, backoffCapMs: LISTEN_BACKOFF_CAP_MS, raw: flag(values, 'raw') });
  } catch (err) {
    if (err instanceof AddressError) throw new CliError(`listen: ${err.message}`, 2);
    throw err;
  }
  let received = 0;
  let connected = false;
  /** Why the last attempt to reach the relay failed, reported if the timeout ends the wait. */
  let lastProblem = '';
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
    client.on('connected', () => { connected = true; });
    client.on('disconnected', (info) => {
      // A kick is an operator's "go away": the library would reconnect, the command ends.
      if (!info.willRetry || info.code === Code.KICKED) finish(1, new CliError(`listen: ${info.reason}`));
      else {
        lastProblem = info.reason;
        // Said on stderr (stdout carries only messages), so a person sees why nothing arrives.
        if (connected) process.stderr.write(`listen: ${info.reason}; reconnecting\n`);
      }
    });
    if (timeout !== undefined) {
      // The timeout bounds the whole run, waiting for the relay included.
      setTimeout(() => {
        const unreached = connected ? '' : `; the relay was never reached (${lastProblem || 'no answer'})`;
        if (count !== undefined) finish(1, new CliError(`listen: timed out after ${received} of ${count} messages${unreached}`));
        else if (!connected) finish(1, new CliError(`listen: timed out${unreached}`));
        else finish(0);
      }, timeout * 1000).unref();
    }
    // Rejects only on a fatal refusal, which 'disconnected' has already reported.
    client.connect().catch((err: ConnectError) => finish(1, new CliError(`listen: ${err.message}`)));
  });
}

/** Longest wait between attempts to reach the relay: a restarted relay is heard from within 2 s. */
const LISTEN_BACKOFF_CAP_MS = 2000;

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
