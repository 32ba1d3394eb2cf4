// The RESULT a sender gets for a SEND: one outcome per recipient, written straight into the
// sender's output. A SEND whose recipients are all decided at once is answered at once; one with
// outcomes still to come (a store's commit, a peer's answer) waits in a SendAnswer until the last.
import { Code } from '../protocol/constants.js';
import { resultFrameLength, writeResult } from '../protocol/frames.js';
import type { Session } from './session.js';

/**
 * Who a SEND came from, as the router needs it: a session, or another instance of the relay that
 * forwarded one recipient's envelope (src/workers/). Reading from it stops while too much of what
 * it sent waits on the store (./pending-stores.ts).
 */
export interface Sender {
  readonly key: Buffer;
  readonly keyText: string;
  readonly closed: boolean;
  storeBytesPending: number;
  pauseReading(reason: number): void;
  resumeReading(reason: number): void;
}

/** A SEND waiting for outcomes that settle later. */
export class SendAnswer {
  /** Parts (one store for all its stored recipients, one per forward) still to settle. */
  waiting = 0;
  /** Takes the outcomes instead of a RESULT to a session (a forwarded envelope's answer to its instance). */
  reply: ((outcomes: number[]) => void) | null = null;

  constructor(
    readonly sender: Sender,
    readonly seq: number,
    readonly wantReceipt: boolean,
    /** Body bytes counted as pending for the sender until the answer is complete. */
    readonly bytes: number,
    /** One per recipient, in the SEND's order; the pending ones are filled in as they settle. */
    readonly outcomes: number[],
  ) {}
}

/** A RESULT's code: OK when every recipient was delivered or stored, else the first other outcome. */
export function overallCode(outcomes: readonly number[] | number): number {
  if (typeof outcomes === 'number') return outcomes === Code.DELIVERED || outcomes === Code.STORED ? Code.OK : outcomes;
  for (const c of outcomes) if (c !== Code.DELIVERED && c !== Code.STORED) return c;
  return Code.OK;
}

/** Writes a RESULT into the sender's output (outcomes: one code, or one per recipient). */
export function writeResultTo(sender: Session, seq: number, code: number, outcomes: readonly number[] | number): void {
  const out = sender.out;
  const offset = out.reserve(resultFrameLength(typeof outcomes === 'number' ? 1 : outcomes.length));
  writeResult(out.buffer, offset, seq, code, outcomes);
}

/** Answers the sender when it asked for a receipt or a recipient was neither delivered nor stored. */
export function answer(sender: Session, seq: number, wantReceipt: boolean, outcomes: readonly number[] | number): void {
  const code = overallCode(outcomes);
  if (wantReceipt || code !== Code.OK) writeResultTo(sender, seq, code, outcomes);
}
