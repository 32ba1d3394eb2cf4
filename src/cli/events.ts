// pulltab events: count the relay's events by name, reading <data>/events/ directly (the relay
// need not run).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { summarizeEvents } from '../server/events.js';
import { CliError, flag, parseCommand, stringOption } from './args.js';
import { parseSince } from './units.js';

export function events(argv: string[]): number {
  const parsed = parseCommand({
    name: 'events',
    usage: 'events [--data DIR] [--since T] [--json]',
    description: 'Counts the events in the relay\'s event log (<data>/events/*.jsonl) by name, newest files included.',
    options: { data: { type: 'string' }, since: { type: 'string' }, json: { type: 'boolean' } },
    help: {
      '--data DIR': 'the relay\'s data directory (default ./data)',
      '--since T': 'only events at or after T: an ISO time (2025-01-31T12:00Z) or a duration ago (90s, 2h, 7d)',
      '--json': 'print the summary as JSON',
    },
  }, argv);
  if (!parsed) return 0;
  const { values } = parsed;
  const dir = join(stringOption(values, 'data') ?? './data', 'events');
  const sinceText = stringOption(values, 'since');
  const since = sinceText === undefined ? undefined : parseSince(sinceText);
  if (since === null) throw new CliError(`events: --since: not a time or a duration: ${JSON.stringify(sinceText)} (try 2h or 2025-01-31T12:00Z)`, 2);
  if (!existsSync(dir)) throw new CliError(`events: no event log in ${dir} (is --data the relay's data directory?)`);
  let summary;
  try {
    summary = summarizeEvents(dir, since);
  } catch (err) {
    throw new CliError(`events: cannot read ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (flag(values, 'json')) {
    process.stdout.write(JSON.stringify({ ...summary, since: since === undefined ? null : new Date(since).toISOString() }, null, 2) + '\n');
    return 0;
  }
  const rows = Object.entries(summary.counts).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const width = Math.max(5, ...rows.map(([name]) => name.length));
  const lines = [`${'EVENT'.padEnd(width)}  COUNT`, ...rows.map(([name, n]) => `${name.padEnd(width)}  ${n}`), `${'total'.padEnd(width)}  ${summary.total}`];
  if (summary.first) lines.push('', `from ${summary.first} to ${summary.last} in ${summary.files} file${summary.files === 1 ? '' : 's'}`);
  if (summary.unreadable > 0) lines.push(`${summary.unreadable} unreadable line${summary.unreadable === 1 ? '' : 's'} skipped`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
