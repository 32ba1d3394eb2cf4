/**
 * Records of the entries a read handed out, by recipient and seq, until they are acknowledged: what
 * ack needs to delete an entry (its size, body, index key) without reading it again. Reading each
 * acknowledged entry again was a third of the drain's CPU, and a Map keyed by seq (one insert and
 * one delete per message) still cost about 6%: a recipient's reads hand its entries out in seq order
 * and acknowledgements come back in that order, so each recipient gets a queue instead.
 *
 * Only a cache: a record that is missing makes ack read the entry. Bounded by `max` records in all.
 */
export class HandedOut<T> {
  readonly #byRecipient = new Map<string, SeqQueue<T>>();
  readonly #max: number;
  #size = 0;

  constructor(max: number) {
    this.#max = max;
  }

  get size(): number {
    return this.#size;
  }

  /** Remembers `record` for (recipientId, seq); a seq not above the recipient's last one is already known or gone: ignored. */
  add(recipientId: string, seq: number, record: T): void {
    if (this.#size >= this.#max) this.clear();
    let queue = this.#byRecipient.get(recipientId);
    if (queue === undefined) this.#byRecipient.set(recipientId, (queue = new SeqQueue<T>()));
    if (queue.push(seq, record)) this.#size++;
  }

  /** The record for (recipientId, seq), or undefined. */
  get(recipientId: string, seq: number): T | undefined {
    return this.#byRecipient.get(recipientId)?.get(seq);
  }

  /** The record for (recipientId, seq), forgotten; undefined if there is none. */
  take(recipientId: string, seq: number): T | undefined {
    const queue = this.#byRecipient.get(recipientId);
    if (queue === undefined) return undefined;
    const record = queue.take(seq);
    if (record !== undefined) {
      this.#size--;
      if (queue.empty) this.#byRecipient.delete(recipientId);
    }
    return record;
  }

  clear(): void {
    this.#byRecipient.clear();
    this.#size = 0;
  }
}

/** Records in increasing seq order; taken mostly from the front. */
class SeqQueue<T> {
  #seqs: number[] = [];
  #records: Array<T | undefined> = [];
  /** entries before #head are taken */
  #head = 0;
  #live = 0;

  get empty(): boolean {
    return this.#live === 0;
  }

  push(seq: number, record: T): boolean {
    const seqs = this.#seqs;
    if (seqs.length > this.#head && seq <= seqs[seqs.length - 1]!) return false;
    if (this.#head > 1024 && this.#head * 2 > seqs.length) this.#compact();
    this.#seqs.push(seq);
    this.#records.push(record);
    this.#live++;
    return true;
  }

  get(seq: number): T | undefined {
    const i = this.#indexOf(seq);
    return i < 0 ? undefined : this.#records[i];
  }

  take(seq: number): T | undefined {
    const i = this.#indexOf(seq);
    if (i < 0) return undefined;
    const record = this.#records[i];
    if (record === undefined) return undefined;
    this.#records[i] = undefined;
    this.#live--;
    while (this.#head < this.#seqs.length && this.#records[this.#head] === undefined) this.#head++;
    if (this.#live === 0) {
      this.#seqs = [];
      this.#records = [];
      this.#head = 0;
    }
    return record;
  }

  /** The index of seq at or after #head (binary search), or -1. */
  #indexOf(seq: number): number {
    const seqs = this.#seqs;
    let lo = this.#head;
    let hi = seqs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const s = seqs[mid]!;
      if (s < seq) lo = mid + 1;
      else if (s > seq) hi = mid - 1;
      else return mid;
    }
    return -1;
  }

  #compact(): void {
    this.#seqs = this.#seqs.slice(this.#head);
    this.#records = this.#records.slice(this.#head);
    this.#head = 0;
  }
}
