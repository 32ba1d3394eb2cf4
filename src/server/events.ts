// The event log: JSON lines under <data>/events/, for operators and audits. One line per event:
// {"time":"2025-01-02T03:04:05.678Z","event":"NAME",...fields}. What goes in: relay start and stop,
// refused handshakes, admin actions (command, caller and target keys; never other arguments),
// policy disconnects, and deliveries when logDeliveries is on (keys and sizes). What never goes
// in: an IP address, a message body, a secret.
//
// It never throws into its caller and never blocks it: write() formats one line and queues it;
// one writer drains the queue to disk. When the queue holds more than maxQueuedBytes (a slow or
// failing disk), new lines are dropped and counted. The current file is `events.jsonl`; when the
// next write would take it past maxFileBytes it is renamed `events-<UTC time>.jsonl` and a new one
// begun, keeping the newest `keepFiles` renamed files.
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

export const CURRENT_FILE = 'events.jsonl';
const ROTATED = /^events-\d{8}-\d{6}-\d{3}(?:-\d+)?\.jsonl$/;

export type EventValue = string | number | boolean | null | string[];
export type EventFields = Record<string, EventValue>;

export interface EventLogOptions {
  /** Directory of the event files (created if missing). */
  dir: string;
  /** Size at which the current file is rotated (default 10 MiB). */
  maxFileBytes?: number;
  /** Rotated files kept (default 5); older ones are deleted. */
  keepFiles?: number;
  /** Lines waiting for the disk beyond this many bytes are dropped (default 4 MiB). */
  maxQueuedBytes?: number;
  now?: () => number;
}

export class EventLog {
  readonly dir: string;
  readonly #maxFileBytes: number;
  readonly #keepFiles: number;
  readonly #maxQueuedBytes: number;
  readonly #now: () => number;
  #queue: string[] = [];
  #queuedBytes = 0;
  #file: FileHandle | null = null;
  #size = 0;
  #pumping: Promise<void> | null = null;
  #closed = false;
  /** Lines written to disk. */
  written = 0;
  /** Lines dropped: queue full, disk error, or written after close. */
  dropped = 0;
  /** Disk errors met (each drops the lines it was writing). */
  errors = 0;
  rotations = 0;

  constructor(options: EventLogOptions) {
    this.dir = options.dir;
    this.#maxFileBytes = Math.max(1024, options.maxFileBytes ?? 10 * 1024 * 1024);
    this.#keepFiles = Math.max(0, options.keepFiles ?? 5);
    this.#maxQueuedBytes = options.maxQueuedBytes ?? 4 * 1024 * 1024;
    this.#now = options.now ?? Date.now;
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch {
      this.errors++; // writes will fail and be counted; the relay goes on
    }
  }

  /** Queues one event; never throws, never waits. */
  write(event: string, fields: EventFields = {}): void {
    try {
      if (this.#closed) {
        this.dropped++;
        return;
      }
      const line = JSON.stringify({ time: new Date(this.#now()).toISOString(), event, ...fields }) + '\n';
      if (this.#queuedBytes + line.length > this.#maxQueuedBytes) {
        this.dropped++;
        return;
      }
      this.#queue.push(line);
      this.#queuedBytes += line.length;
      if (this.#pumping === null) this.#pumping = this.#pump().finally(() => { this.#pumping = null; });
    } catch {
      this.dropped++;
    }
  }

  /** Resolves once every line queued so far is written (or dropped). */
  async flush(): Promise<void> {
    while (this.#pumping) await this.#pumping;
  }

  async #pump(): Promise<void> {
    // Let the caller's turn finish first: lines of one turn go out in one write.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.#queue.length > 0) {
      const lines = this.#queue;
      this.#queue = [];
      this.#queuedBytes = 0;
      const data = Buffer.from(lines.join(''), 'utf8');
      try {
        if (this.#file !== null && this.#size > 0 && this.#size + data.length > this.#maxFileBytes) await this.#rotate();
        if (this.#file === null) {
          this.#file = await open(join(this.dir, CURRENT_FILE), 'a', 0o600);
          this.#size = (await this.#file.stat()).size;
          if (this.#size > 0 && this.#size + data.length > this.#maxFileBytes) await this.#rotate();
          if (this.#file === null) {
            this.#file = await open(join(this.dir, CURRENT_FILE), 'a', 0o600);
            this.#size = 0;
          }
        }
        await this.#file.write(data);
        this.#size += data.length;
        this.written += lines.length;
      } catch {
        this.errors++;
        this.dropped += lines.length;
        const file = this.#file;
        this.#file = null;
        if (file) await file.close().catch(() => {});
      }
    }
  }

  async #rotate(): Promise<void> {
    const file = this.#file;
    this.#file = null;
    if (file) await file.close();
    const stamp = new Date(this.#now()).toISOString().replace(/[-:]/g, '').replace('T', '-').replace('.', '-').replace('Z', '');
    let name = `events-${stamp}.jsonl`;
    for (let i = 1; await exists(join(this.dir, name)); i++) name = `events-${stamp}-${i}.jsonl`;
    await rename(join(this.dir, CURRENT_FILE), join(this.dir, name));
    this.rotations++;
    const rotated = (await readdir(this.dir)).filter((f) => ROTATED.test(f)).sort(byTime);
    for (const old of rotated.slice(0, Math.max(0, rotated.length - this.#keepFiles))) {
      await unlink(join(this.dir, old)).catch(() => {});
    }
    this.#size = 0;
  }

  /** Writes what is queued, then closes the file; later writes are dropped. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.flush();
    this.#closed = true;
    const file = this.#file;
    this.#file = null;
    if (file) await file.close().catch(() => {});
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Rotated names sort by time; a collision suffix (-1, -2...) sorts after the plain name. */
function byTime(a: string, b: string): number {
  const ka = a.replace(/\.jsonl$/, '').replace(/^(events-\d{8}-\d{6}-\d{3})$/, '$1-0');
  const kb = b.replace(/\.jsonl$/, '').replace(/^(events-\d{8}-\d{6}-\d{3})$/, '$1-0');
  return ka.localeCompare(kb, 'en', { numeric: true });
}

/** The event files of a directory, oldest first (rotated ones by time, then the current one). */
export function eventFiles(dir: string): string[] {
  const names = readdirSync(dir);
  const rotated = names.filter((f) => ROTATED.test(f)).sort(byTime);
  return [...rotated, ...(names.includes(CURRENT_FILE) ? [CURRENT_FILE] : [])].map((f) => join(dir, f));
}

export interface EventSummary {
  /** Events per name, at or after `since`. */
  counts: Record<string, number>;
  total: number;
  files: number;
  /** Lines that are not events (not JSON, no time or event name). */
  unreadable: number;
  first: string | null;
  last: string | null;
}

/** The event files of a relay: its own, and each worker's (`worker-N/`) of a relay of workers. */
export function relayEventFiles(dir: string): string[] {
  const workers = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory() && /^worker-\d+$/.test(e.name)).map((e) => e.name).sort();
  return [...eventFiles(dir), ...workers.flatMap((w) => eventFiles(join(dir, w)))];
}

/** Counts events by name, reading the files directly (no relay needed), every worker's included. */
export function summarizeEvents(dir: string, since?: number): EventSummary {
  const summary: EventSummary = { counts: {}, total: 0, files: 0, unreadable: 0, first: null, last: null };
  for (const file of relayEventFiles(dir)) {
    summary.files++;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue; // rotated away while we read
    }
    for (const line of text.split('\n')) {
      if (line === '') continue;
      let entry: { time?: unknown; event?: unknown };
      try {
        entry = JSON.parse(line);
      } catch {
        summary.unreadable++;
        continue;
      }
      const time = typeof entry.time === 'string' ? Date.parse(entry.time) : NaN;
      if (typeof entry.event !== 'string' || !Number.isFinite(time)) {
        summary.unreadable++;
        continue;
      }
      if (since !== undefined && time < since) continue;
      summary.counts[entry.event] = (summary.counts[entry.event] ?? 0) + 1;
      summary.total++;
      if (summary.first === null || time < Date.parse(summary.first)) summary.first = entry.time as string;
      if (summary.last === null || time > Date.parse(summary.last)) summary.last = entry.time as string;
    }
  }
  return summary;
}
