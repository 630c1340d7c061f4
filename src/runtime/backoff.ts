/**
 * When to restart a crashed worker: at once is a busy loop if it crashes at start-up (a bad file, a port
 * taken), so each crash soon after a start doubles the wait, up to a ceiling; a worker that ran a while
 * before it died starts the count over.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** A worker that lived this long before exiting is not counted as crashing at start-up. */
  stableMs: number;
}

export const WORKER_RESTART: BackoffOptions = { initialMs: 1000, maxMs: 30_000, stableMs: 60_000 };

export class RestartBackoff {
  readonly #opts: BackoffOptions;
  #quickCrashes = 0;

  constructor(opts: BackoffOptions = WORKER_RESTART) {
    this.#opts = opts;
  }

  /** The delay before the next start, given how long the worker that just exited had run. */
  next(livedMs: number): number {
    this.#quickCrashes = livedMs >= this.#opts.stableMs ? 1 : this.#quickCrashes + 1;
    return Math.min(this.#opts.maxMs, this.#opts.initialMs * 2 ** (this.#quickCrashes - 1));
  }
}
