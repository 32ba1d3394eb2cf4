// A token bucket: `rate` tokens a second, holding at most `burst`. take() may drive it below
// zero (a frame is never split); the caller then waits waitMs() before taking more.

export class TokenBucket {
  #tokens: number;
  #last: number;

  constructor(public rate: number, public burst: number, now = Date.now()) {
    this.#tokens = burst;
    this.#last = now;
  }

  /** Refills for the time passed, takes n tokens, and says whether the bucket is still non-negative. */
  take(n: number, now = Date.now()): boolean {
    this.#refill(now);
    this.#tokens -= n;
    return this.#tokens >= 0;
  }

  /** Milliseconds until the bucket is back at zero (0 if it is not in debt). */
  waitMs(now = Date.now()): number {
    this.#refill(now);
    return this.#tokens >= 0 ? 0 : Math.ceil((-this.#tokens / this.rate) * 1000);
  }

  /** Changes rate and burst (a reload), keeping what is in the bucket up to the new burst. */
  configure(rate: number, burst: number): void {
    this.rate = rate;
    this.burst = burst;
    if (this.#tokens > burst) this.#tokens = burst;
  }

  #refill(now: number): void {
    const elapsed = now - this.#last;
    if (elapsed > 0) {
      this.#tokens = Math.min(this.burst, this.#tokens + (elapsed * this.rate) / 1000);
      this.#last = now;
    }
  }
}
