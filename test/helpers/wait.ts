/** Waiting for something to become true, with a deadline and a message that says what never happened. */
import { sleep } from './proc.js';
import type { LogLine, RunningPortcullis } from './portcullis.js';

/** Poll `fn` until it returns something truthy; fail with `what` and the last value after `timeoutMs`. */
export async function eventually<V>(what: string, fn: () => Promise<V | null | undefined | false>, timeoutMs = 15_000): Promise<V> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (last: ${String(last)})`);
    await sleep(100);
  }
}

/** A log line matching `test` among those logged after the first `from` lines. */
export function waitForNewLog(p: RunningPortcullis, from: number, what: string, test: (l: LogLine) => boolean): Promise<LogLine> {
  return eventually(`log line: ${what}\n--- proxy output ---\n${p.output()}`, async () => p.logs().slice(from).find(test));
}
