// Reconnection delays: exponential with "full jitter" (a uniform draw between 0 and the
// capped exponential), so clients dropped together do not come back together.

export interface BackoffOptions {
  baseMs: number;
  capMs: number;
}

/** The ceiling for attempt n (0-based): min(cap, base * 2^n). */
export function backoffCeiling(attempt: number, { baseMs, capMs }: BackoffOptions): number {
  return Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
}

export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCeiling(attempt, options));
}
