// The event log: JSON lines, rotation by size, drops instead of blocking or throwing, and the
// summary `pulltab events` prints.
import t from 'tap';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EventLog, eventFiles, summarizeEvents } from '../src/server/events.js';
import { parseDuration, parseSince, parseSize } from '../src/cli/units.js';
import { removeDir, tempDir } from './helpers.js';

t.test('lines are JSON with a time and an event name', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const log = new EventLog({ dir: join(dir, 'events') });
  log.write('relay_started', { port: 2652 });
  log.write('admin', { command: 'kick', caller: 'K1', keys: ['K2'] });
  await log.close();
  const lines = readFileSync(join(dir, 'events', 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.equal(lines.length, 2);
  t.match(lines[0], { event: 'relay_started', port: 2652 });
  t.ok(Number.isFinite(Date.parse(lines[0].time)));
  t.same(lines[1].keys, ['K2']);
  t.equal(log.written, 2);
  log.write('after_close');
  t.equal(log.dropped, 1, 'a write after close is dropped, not thrown');
});

t.test('rotation by size keeps the newest files', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  let now = Date.parse('2025-03-01T00:00:00.000Z');
  const log = new EventLog({ dir, maxFileBytes: 2048, keepFiles: 2, now: () => now });
  for (let i = 0; i < 100; i++) {
    now += 1000;
    log.write('tick', { i, pad: 'x'.repeat(100) });
    if (i % 10 === 9) await log.flush();
  }
  await log.close();
  const files = readdirSync(dir).sort();
  t.ok(files.includes('events.jsonl'));
  const rotated = files.filter((f) => f !== 'events.jsonl');
  t.equal(rotated.length, 2, `keeps 2 rotated files: ${files.join(' ')}`);
  for (const f of files) t.ok(readFileSync(join(dir, f)).length <= 2048, `${f} stays within the size`);
  t.ok(log.rotations >= 3);
  // Oldest first, the current file last; the newest event is in the current file.
  const ordered = eventFiles(dir);
  t.match(ordered[ordered.length - 1], /events\.jsonl$/);
  const last = readFileSync(ordered[ordered.length - 1], 'utf8').trim().split('\n').pop()!;
  t.equal(JSON.parse(last).i, 99);
  const summary = summarizeEvents(dir);
  t.ok(summary.counts.tick > 0 && summary.counts.tick < 100, 'older files were deleted');
});

t.test('a slow or broken disk: lines are dropped and counted, never thrown', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const notADir = join(dir, 'file');
  writeFileSync(notADir, 'x');
  const broken = new EventLog({ dir: notADir });
  t.doesNotThrow(() => {
    for (let i = 0; i < 10; i++) broken.write('x', { i });
  });
  await broken.flush();
  t.equal(broken.written, 0);
  t.equal(broken.dropped, 10, 'each line that could not be written is counted');
  t.ok(broken.errors > 0);

  const small = new EventLog({ dir: join(dir, 'ok'), maxQueuedBytes: 500 });
  for (let i = 0; i < 100; i++) small.write('burst', { i }); // one turn: nothing reaches the disk yet
  t.ok(small.dropped > 0, 'beyond the queue bound, lines are dropped at once');
  await small.close();
  t.equal(small.written + small.dropped, 100);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  t.doesNotThrow(() => small.write('bad', cyclic as never), 'a value that cannot be written is dropped');
});

t.test('summary: counts by name, --since, unreadable lines', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  writeFileSync(join(dir, 'events-20250101-000000-000.jsonl'), [
    JSON.stringify({ time: '2025-01-01T00:00:00.000Z', event: 'relay_started' }),
    JSON.stringify({ time: '2025-01-01T00:00:01.000Z', event: 'auth_failed' }),
  ].join('\n') + '\n');
  writeFileSync(join(dir, 'events.jsonl'), [
    JSON.stringify({ time: '2025-01-02T00:00:00.000Z', event: 'auth_failed' }),
    'not json',
    JSON.stringify({ event: 'no time' }),
    JSON.stringify({ time: '2025-01-02T00:00:05.000Z', event: 'relay_stopped' }),
  ].join('\n') + '\n');
  const all = summarizeEvents(dir);
  t.same(all.counts, { relay_started: 1, auth_failed: 2, relay_stopped: 1 });
  t.equal(all.unreadable, 2);
  t.equal(all.files, 2);
  t.equal(all.first, '2025-01-01T00:00:00.000Z');
  t.equal(all.last, '2025-01-02T00:00:05.000Z');
  t.same(summarizeEvents(dir, Date.parse('2025-01-01T12:00:00Z')).counts, { auth_failed: 1, relay_stopped: 1 });
});

t.test('durations, sizes and times as typed', async (t) => {
  t.equal(parseDuration('90'), 90);
  t.equal(parseDuration('90s'), 90);
  t.equal(parseDuration('2h'), 7200);
  t.equal(parseDuration('7d'), 604800);
  t.equal(parseDuration('1.5m'), 90);
  t.equal(parseDuration('soon'), null);
  t.equal(parseSize('65536'), 65536);
  t.equal(parseSize('64KiB'), 65536);
  t.equal(parseSize('10MiB'), 10485760);
  t.equal(parseSize('1G'), 1073741824);
  t.equal(parseSize('1kb'), 1000);
  t.equal(parseSize('1 parsec'), null);
  t.equal(parseSince('2h', 10_000_000), 10_000_000 - 7_200_000);
  t.equal(parseSince('2025-01-31T12:00:00Z'), Date.parse('2025-01-31T12:00:00Z'));
  t.equal(parseSince('yesterday-ish'), null);
});
