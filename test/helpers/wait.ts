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

/**
 * The proxy's access-log lines logged after the first `from` lines, once `done` holds for them. A client can
 * exit before the proxy's last lines reach this process, so wait for them (up to 10 s; then return what there
 * is, for the caller's assertions to report).
 */
export async function accessLogSince(p: RunningPortcullis, from: number, done: (lines: LogLine[]) => boolean): Promise<LogLine[]> {
  const lines = (): LogLine[] => p.logs().slice(from).filter((l) => l['msg'] === 'request');
  await eventually('access log', async () => done(lines()), 10_000).catch(() => undefined);
  return lines();
}
