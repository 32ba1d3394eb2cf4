// pulltab admin: run one admin command on a relay, as the identity in --key, and print the
// answer as a table (or JSON with --json). A refusal prints one line and exits 1.
import { readFileSync } from 'node:fs';
import { ConnectError, RelayClient, type AdminAnswer } from '../client/client.js';
import { decodeKey } from '../crypto/keys.js';
import { AddressError } from '../protocol/address.js';
import { allRights, CAPABILITIES, isCapability, noRights, rightsFrom } from '../policy/capabilities.js';
import { FIELD_UNITS, type FieldUnit, type PolicyField } from '../policy/policy.js';
import { CliError, flag, parseCommand, requireOption, stringOption } from './args.js';
import { loadIdentity } from './keys.js';
import { formatSize, parseDuration, parseSize } from './units.js';

const USAGE = 'admin --relay ADDRESS --key FILE [--json] COMMAND [ARGS]';

const DESCRIPTION = `Runs one admin command on the relay as the identity in --key (the relay checks its rights).

Commands:
  policy set NAME [POLICY FLAGS] [--file F]   create a policy or change some of its fields
  policy get NAME | policy ls | policy rm NAME
  user set KEY POLICY | user get KEY | user ls | user rm KEY
  connections                                  how many keys are connected (and which, with manageConnections)
  usage [--top N]                              stored messages and bytes: totals and the top recipients
  messages rm --user KEY                       empty one recipient's mailbox
  messages rm --older-than DURATION            delete stored messages older than DURATION (90s, 2h, 7d)
  kick KEY | block KEY | unblock KEY | blocked
  stats                                        the relay's counters

Policy flags (a new policy starts from the relay's defaults; sizes take KiB/MiB/GiB, durations s/m/h/d):
  --can-connect true|false  --rights LIST|all|none (${CAPABILITIES.join(', ')})
  --max-payload SIZE  --max-recipients N  --max-ttl DURATION  --mailbox-max-count N  --mailbox-max-bytes SIZE
  --rate-bytes SIZE  --rate-burst-bytes SIZE  --rate-msgs N  --rate-burst-msgs N   (per second; 0 = unlimited)
  --file F                  a JSON object with any of the fields (docs/PROTOCOL.md §9); flags override it

Exit status: 0 done, 1 refused by the relay or cannot connect, 2 bad arguments.`;

type Values = Record<string, string | boolean | undefined>;

/** Policy flags: name → the policy field it sets (read by the field's unit: src/policy/policy.ts). */
const POLICY_FLAGS: Record<string, PolicyField> = {
  'can-connect': 'canConnect',
  rights: 'admin',
  'max-payload': 'maxPayloadBytes',
  'max-recipients': 'maxRecipients',
  'max-ttl': 'maxTtlSeconds',
  'mailbox-max-count': 'mailboxMaxCount',
  'mailbox-max-bytes': 'mailboxMaxBytes',
  'rate-bytes': 'rateBytesPerSecond',
  'rate-burst-bytes': 'rateBurstBytes',
  'rate-msgs': 'rateMessagesPerSecond',
  'rate-burst-msgs': 'rateBurstMessages',
};

const OTHER_FLAGS = ['file', 'top', 'user', 'older-than'] as const;

export async function admin(argv: string[]): Promise<number> {
  const parsed = parseCommand({
    name: 'admin',
    usage: USAGE,
    description: DESCRIPTION,
    options: {
      relay: { type: 'string' }, key: { type: 'string' }, json: { type: 'boolean' },
      ...Object.fromEntries([...Object.keys(POLICY_FLAGS), ...OTHER_FLAGS].map((f) => [f, { type: 'string' as const }])),
    },
    help: {
      '--relay ADDRESS': 'the relay address printed by pulltab serve',
      '--key FILE': 'your identity file (the root key, or a key whose policy grants the right)',
      '--json': 'print the relay\'s answer as JSON',
    },
    allowPositionals: true,
  }, argv);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const request = buildRequest(positionals, values);
  const relay = requireOption('admin', values, 'relay');
  const identity = loadIdentity('admin', requireOption('admin', values, 'key'));
  let client: RelayClient;
  try {
    // Send-only: an admin command never cuts off a `pulltab listen` of the same key.
    client = new RelayClient({ relay, identity, reconnect: false, role: 'send' });
  } catch (err) {
    if (err instanceof AddressError) throw new CliError(`admin: ${err.message}`, 2);
    throw err;
  }
  try {
    await client.connect();
  } catch (err) {
    throw new CliError(`admin: ${(err as ConnectError).message}`);
  }
  let answer: AdminAnswer;
  try {
    answer = await client.admin(request.command, request.args);
  } catch (err) {
    throw new CliError(`admin: ${(err as Error).message}`);
  } finally {
    await client.close();
  }
  if (!answer.ok) {
    const error = (answer.body as { error?: unknown } | null)?.error;
    throw new CliError(`admin ${request.label}: ${answer.codeName}: ${typeof error === 'string' ? error : 'refused'}`);
  }
  process.stdout.write(flag(values, 'json') ? JSON.stringify(answer.body, null, 2) + '\n' : render(request.command, answer.body as Record<string, any>));
  return 0;
}

interface Request {
  command: string;
  args: Record<string, unknown>;
  /** The command as the user typed it, for errors. */
  label: string;
}

function usage(message: string): never {
  throw new CliError(`admin: ${message} (see pulltab admin --help)`, 2);
}

function key(text: string | undefined, what = 'KEY'): string {
  if (text === undefined) usage(`missing ${what}`);
  try {
    decodeKey(text);
  } catch (err) {
    usage(`${what}: ${(err as Error).message}`);
  }
  return text.trim();
}

/** Turns the words and flags into { command, args }, refusing flags the command does not take. */
export function buildRequest(positionals: string[], values: Values): Request {
  const [group, ...rest] = positionals;
  if (group === undefined) usage('give a COMMAND');
  const allowed = new Set<string>();
  let request: Request;
  const exact = (n: number, form: string): void => {
    if (rest.length !== n) usage(`usage: ${form}`);
  };
  switch (group) {
    case 'policy': {
      const [verb, name] = rest;
      const label = `policy ${verb ?? ''}`.trim();
      if (verb === 'set') {
        if (rest.length !== 2) usage('usage: policy set NAME [POLICY FLAGS] [--file F]');
        for (const f of [...Object.keys(POLICY_FLAGS), 'file']) allowed.add(f);
        request = { command: 'policy.set', args: { name, fields: policyFields(values, name!) }, label };
      } else if (verb === 'get' || verb === 'rm') {
        if (rest.length !== 2) usage(`usage: policy ${verb} NAME`);
        request = { command: `policy.${verb}`, args: { name }, label };
      } else if (verb === 'ls') {
        exact(1, 'policy ls');
        request = { command: 'policy.ls', args: {}, label };
      } else usage('policy takes set, get, ls or rm');
      break;
    }
    case 'user': {
      const [verb, k, policy] = rest;
      const label = `user ${verb ?? ''}`.trim();
      if (verb === 'set') {
        exact(3, 'user set KEY POLICY');
        request = { command: 'user.set', args: { key: key(k), policy }, label };
      } else if (verb === 'get' || verb === 'rm') {
        exact(2, `user ${verb} KEY`);
        request = { command: `user.${verb}`, args: { key: key(k) }, label };
      } else if (verb === 'ls') {
        exact(1, 'user ls');
        request = { command: 'user.ls', args: {}, label };
      } else usage('user takes set, get, ls or rm');
      break;
    }
    case 'connections':
    case 'stats':
    case 'blocked':
      exact(0, group);
      request = { command: group, args: {}, label: group };
      break;
    case 'kick':
    case 'block':
    case 'unblock':
      exact(1, `${group} KEY`);
      request = { command: group, args: { key: key(rest[0]) }, label: group };
      break;
    case 'usage': {
      exact(0, 'usage [--top N]');
      allowed.add('top');
      const top = stringOption(values, 'top');
      const n = top === undefined ? undefined : Number(top);
      if (n !== undefined && !(Number.isInteger(n) && n >= 0 && n <= 10_000)) usage(`--top must be a whole number from 0 to 10000, got ${JSON.stringify(top)}`);
      request = { command: 'usage', args: n === undefined ? {} : { top: n }, label: 'usage' };
      break;
    }
    case 'messages': {
      if (rest[0] !== 'rm' || rest.length !== 1) usage('usage: messages rm --user KEY | messages rm --older-than DURATION');
      allowed.add('user');
      allowed.add('older-than');
      const user = stringOption(values, 'user');
      const older = stringOption(values, 'older-than');
      if ((user === undefined) === (older === undefined)) usage('messages rm takes exactly one of --user KEY and --older-than DURATION');
      if (user !== undefined) request = { command: 'messages.rm', args: { user: key(user, '--user') }, label: 'messages rm' };
      else {
        const seconds = parseDuration(older!);
        if (seconds === null) usage(`--older-than: not a duration: ${JSON.stringify(older)} (try 90s, 2h, 7d)`);
        request = { command: 'messages.rm', args: { olderThanSeconds: seconds }, label: 'messages rm' };
      }
      break;
    }
    default:
      usage(`unknown command ${JSON.stringify(group)}`);
  }
  for (const name of [...Object.keys(POLICY_FLAGS), ...OTHER_FLAGS]) {
    if (values[name] !== undefined && !allowed.has(name)) usage(`--${name} does not apply to ${request!.label}`);
  }
  return request!;
}

function policyFields(values: Values, name: string): Record<string, unknown> {
  let fields: Record<string, unknown> = {};
  const file = stringOption(values, 'file');
  if (file !== undefined) {
    let data: unknown;
    try {
      data = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new CliError(`admin: --file ${file}: ${code ? `cannot read it (${code})` : `not JSON: ${(err as Error).message}`}`, 2);
    }
    if (typeof data !== 'object' || data === null || Array.isArray(data)) usage(`--file ${file} must hold a JSON object`);
    const { name: fileName, ...rest } = data as Record<string, unknown>;
    if (fileName !== undefined && fileName !== name) usage(`--file ${file} names policy ${JSON.stringify(fileName)}, not ${JSON.stringify(name)}`);
    fields = rest;
  }
  for (const [flagName, field] of Object.entries(POLICY_FLAGS)) {
    const text = stringOption(values, flagName);
    if (text === undefined) continue;
    fields[field] = policyValue(flagName, FIELD_UNITS[field], text);
  }
  return fields;
}

function policyValue(flagName: string, unit: FieldUnit, text: string): unknown {
  const bad = (want: string): never => usage(`--${flagName} must be ${want}, got ${JSON.stringify(text)}`);
  switch (unit) {
    case 'boolean':
      if (['true', 'yes', '1'].includes(text)) return true;
      if (['false', 'no', '0'].includes(text)) return false;
      return bad('true or false');
    case 'bytes': {
      const n = parseSize(text);
      return n === null ? bad('a size such as 65536, 64KiB or 10MiB') : n;
    }
    case 'count': {
      const n = Number(text);
      return Number.isSafeInteger(n) && n >= 0 && text.trim() !== '' ? n : bad('a whole number');
    }
    case 'seconds': {
      const n = parseDuration(text);
      return n === null || !Number.isInteger(n) ? bad('a whole number of seconds, or a duration such as 90s, 2h, 7d') : n;
    }
    case 'rights': {
      const words = text.split(',').map((w) => w.trim()).filter(Boolean);
      if (words.length === 1 && words[0] === 'all') return allRights();
      if (words.length === 1 && words[0] === 'none') return noRights();
      if (words.length === 0 || !words.every(isCapability)) bad(`a comma-separated list of ${CAPABILITIES.join(', ')} (or all, none)`);
      return rightsFrom(words);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Tables

function table(headers: string[], rows: Array<Array<string | number>>): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

function pairs(entries: Array<[string, unknown]>): string {
  const width = Math.max(...entries.map(([k]) => k.length));
  return entries.map(([k, v]) => `${k.padEnd(width)}  ${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`).join('\n') + '\n';
}

function rate(n: number, unit: string): string {
  return n === 0 ? 'unlimited' : `${unit === 'B' ? formatSize(n) : n}/s`;
}

function policyPairs(p: Record<string, any>): string {
  const rights = Object.entries(p.admin ?? {}).filter(([, v]) => v).map(([k]) => k);
  return pairs([
    ['name', p.name + (p.builtIn ? ' (built in: the relay configuration\'s defaults)' : '')],
    ['canConnect', p.canConnect],
    ['rights', rights.length ? rights.join(', ') : 'none'],
    ['maxPayloadBytes', `${p.maxPayloadBytes} (${formatSize(p.maxPayloadBytes)})`],
    ['maxRecipients', p.maxRecipients],
    ['maxTtlSeconds', p.maxTtlSeconds],
    ['mailboxMaxCount', p.mailboxMaxCount],
    ['mailboxMaxBytes', `${p.mailboxMaxBytes} (${formatSize(p.mailboxMaxBytes)})`],
    ['rateBytesPerSecond', `${rate(p.rateBytesPerSecond, 'B')} (burst ${p.rateBurstBytes})`],
    ['rateMessagesPerSecond', `${rate(p.rateMessagesPerSecond, 'msgs')} (burst ${p.rateBurstMessages})`],
    ['assigned', p.assigned ?? 0],
  ]);
}

function flatten(prefix: string, value: unknown, out: Array<[string, unknown]>): void {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(prefix ? `${prefix}.${k}` : k, v, out);
  } else out.push([prefix, value]);
}

export function render(command: string, body: Record<string, any>): string {
  switch (command) {
    case 'policy.set':
      return `policy ${body.policy.name} ${body.created ? 'created' : 'updated'}`
        + `${body.applied?.updated ? `; limits changed on ${body.applied.updated} connection(s)` : ''}`
        + `${body.applied?.disconnected ? `; ${body.applied.disconnected} disconnected` : ''}\n` + policyPairs(body.policy);
    case 'policy.get':
      return policyPairs(body.policy);
    case 'policy.ls':
      return table(['NAME', 'CONNECT', 'RIGHTS', 'PAYLOAD', 'RECIPIENTS', 'TTL', 'MAILBOX', 'RATE', 'ASSIGNED'],
        (body.policies as Record<string, any>[]).map((p) => [
          p.name + (p.builtIn ? '*' : ''), p.canConnect ? 'yes' : 'no',
          Object.entries(p.admin).filter(([, v]) => v).map(([k]) => k).join(',') || '-',
          formatSize(p.maxPayloadBytes), p.maxRecipients, `${p.maxTtlSeconds}s`,
          `${p.mailboxMaxCount} / ${formatSize(p.mailboxMaxBytes)}`,
          `${rate(p.rateBytesPerSecond, 'B')}, ${rate(p.rateMessagesPerSecond, 'msgs')}`, p.assigned,
        ]))
        + ((body.policies as Record<string, any>[]).some((p) => p.builtIn) ? '* built in: no `default` policy is stored\n' : '');
    case 'policy.rm':
      return `policy ${body.removed} removed\n`;
    case 'user.set':
    case 'user.get':
    case 'user.rm': {
      const u = body.user;
      const head = command === 'user.set' ? `${u.key} now has policy ${u.policy}\n`
        : command === 'user.rm' ? `${u.key}: ${body.removed ? 'assignment removed' : 'had no assignment'}; policy now ${u.policy}\n` : '';
      return head + pairs([
        ['key', u.key], ['policy', `${u.policy} (${u.source})`], ['canConnect', u.canConnect], ['blocked', u.blocked],
        ['connected', u.connected], ['rights', u.rights.length ? u.rights.join(', ') : 'none'],
        ['limits', u.limits], ['quota', u.quota],
      ]);
    }
    case 'user.ls':
      return body.users.length === 0 ? 'no key is assigned a policy; every key gets `default`\n'
        : table(['KEY', 'POLICY'], body.users.map((u: { key: string; policy: string }) => [u.key, u.policy]));
    case 'connections': {
      const list: Array<Record<string, any>> = body.connections ?? [];
      // Where each is, in a relay of workers or a cluster: the instance by its id's first 8 hex digits.
      const where = (['instance', 'worker'] as const).filter((f) => list.some((c) => c[f] !== undefined));
      return `${body.count} connected\n` + (list.length > 0
        ? table(['KEY', 'CONNECTED', 'IN', 'OUT', ...where.map((f) => f.toUpperCase())],
          list.map((c) => [c.key, c.connectedAt, c.messagesIn, c.messagesOut, ...where.map((f) => (f === 'instance' ? String(c[f] ?? '').slice(0, 8) : c[f] ?? ''))]))
        : '');
    }
    case 'kick':
      return `kicked ${body.kicked}\n`;
    case 'block':
      return `blocked ${body.key}${body.changed ? '' : ' (already blocked)'}${body.disconnected ? '; disconnected it' : ''}\n`;
    case 'unblock':
      return `${body.changed ? 'unblocked' : 'was not blocked:'} ${body.key}\n`;
    case 'blocked':
      return body.keys.length === 0 ? 'no key is blocked\n' : body.keys.join('\n') + '\n';
    case 'usage':
      return table(['KEY', 'MESSAGES', 'BYTES'], [
        ...body.top.map((u: Record<string, any>) => [u.key, u.count, `${u.bytes} (${formatSize(u.bytes)})`]),
        [`TOTAL (${body.totals.recipients} recipient${body.totals.recipients === 1 ? '' : 's'})`, body.totals.count, `${body.totals.bytes} (${formatSize(body.totals.bytes)})`],
      ]);
    case 'messages.rm':
      return `removed ${body.removed} stored message${body.removed === 1 ? '' : 's'}\n`;
    default: {
      const out: Array<[string, unknown]> = [];
      flatten('', body, out);
      return out.length === 0 ? 'ok\n' : pairs(out);
    }
  }
}
