// What the mailbox tests share: keys, bodies, a request builder with defaults, a temporary
// directory removed at teardown, and reading outcomes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EnqueueOutcome, EnqueueRequest } from '../src/store/mailbox.js';

export function key(n: number, fill = 0): Uint8Array {
  const k = new Uint8Array(32).fill(fill);
  k[0] = n >> 8;
  k[1] = n & 0xff;
  return k;
}
export function skey(n: number): Uint8Array {
  return new Uint8Array(16).fill(n);
}
export function bytes(n: number, seed = 1): Uint8Array {
  return new Uint8Array(n).map((_, i) => (i * 31 + seed) & 0xff);
}
export const A = key(1);
export const B = key(2);
export const C = key(3);
export const S1 = key(101);
export const S2 = key(102);

export const reqDefault = (partial: Partial<EnqueueRequest> & { to?: Uint8Array[] }): EnqueueRequest => req(partial);
export function req(partial: Partial<EnqueueRequest> & { to?: Uint8Array[] }): EnqueueRequest {
  const { to, ...rest } = partial;
  return {
    sender: S1,
    storageKey: null,
    ttlSeconds: 3600,
    body: bytes(100),
    recipients: (to ?? [A]).map((k) => ({ key: k, wrappedKey: bytes(48, 7) })),
    ...rest,
  };
}

export interface Teardown {
  teardown(fn: () => unknown): void;
}

export function tempDir(t: Teardown): string {
  const dir = mkdtempSync(join(tmpdir(), 'pulltab-mailbox-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface Clock {
  now: number;
}

export function seqOf(o: EnqueueOutcome | undefined): number {
  if (!o || !o.ok) throw new Error(`expected ok, got ${JSON.stringify(o)}`);
  return o.seq;
}
export function codes(outcomes: EnqueueOutcome[]): string[] {
  return outcomes.map((o) => (o.ok ? 'ok' : o.code));
}
