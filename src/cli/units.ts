// Durations and sizes as people type them: 90s, 2h, 7d; 64KiB, 10MiB, 1G. Plain numbers are
// seconds and bytes.

const DURATION_UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };
const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3,
};

/** Seconds in a duration such as 90, 90s, 2h, 7d, 1.5h; null when it is not one. */
export function parseDuration(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/i.exec(text);
  if (!m) return null;
  const seconds = Number(m[1]) * DURATION_UNITS[(m[2] ?? 's').toLowerCase()]!;
  return Number.isFinite(seconds) ? seconds : null;
}

/** Bytes in a size such as 1048576, 64KiB, 10MiB, 1G (K, M, G are powers of 1024; KB, MB, GB of 1000). */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  if (!m) return null;
  const unit = SIZE_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) return null;
  const bytes = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(bytes) ? bytes : null;
}

/** 1536 → "1.5 KiB" */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return i === 0 ? `${bytes} B` : `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[i]}`;
}

/** A time given as an ISO date/time, or as a duration meaning "that long ago"; ms since the epoch, or null. */
export function parseSince(text: string, now = Date.now()): number | null {
  const seconds = parseDuration(text);
  if (seconds !== null) return now - seconds * 1000;
  const t = Date.parse(text);
  return Number.isFinite(t) ? t : null;
}
