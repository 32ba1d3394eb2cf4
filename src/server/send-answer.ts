// The RESULT a sender gets for a SEND: one outcome per recipient, written straight into the
// sender's output. A SEND whose recipients are all decided at once is answered at once; one with
// outcomes still to come (a store's commit, a peer's answer) waits in a SendAnswer until the last.
import { Code } from '../protocol/constants.js';
import { resultFrameLength, writeResult } from '../protocol/frames.js';
import type { Session } from './session.js';

/** A SEND waiting for outcomes that settle later. */
export class SendAnswer {
  /** Parts (one store for all its stored recipients, one per forward) still to settle. */
  waiting = 0;

  constructor(
    readonly sender: Session,
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
