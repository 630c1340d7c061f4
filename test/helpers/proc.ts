/**
 * Process and filesystem plumbing shared by the end-to-end helpers: run a command with a timeout and
 * captured output, make temp dirs that disappear when the test process exits, find a free port, and make
 * sure no child process outlives the test file even when a test forgets to stop it. The parts the bench
 * uses too live in proc-base.ts; the exit hook that kills children and removes temp dirs is this file's.
 */
import type { ChildProcess } from 'node:child_process';
import { runCaptured, TempDirs, type RunResult } from './proc-base.js';

export { freePort, sleep, type RunResult } from './proc-base.js';

export interface RunOptions {
  /** Default 60 s. The process gets SIGTERM at the deadline and SIGKILL 2 s later. */
  timeoutMs?: number;
  /** Written to stdin, then stdin is closed. Without it stdin is closed at once. */
  input?: string | Buffer;
  /** Replaces the environment entirely when given (start from `process.env` yourself if you want it). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Run a command (no shell), capture stdout/stderr, never throw for a non-zero exit. Throws only if it cannot start. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return runCaptured(cmd, args, {
    ...opts,
    timeoutMs: opts.timeoutMs ?? 60_000,
    onSpawn: track,
    onTimeout: (child) => {
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), 2000);
      child.once('close', () => clearTimeout(kill));
    },
  });
}

/** One line for assertion messages: the command, its exit status and its output. */
export function describeRun(what: string, r: RunResult): string {
  const status = r.timedOut ? 'timed out' : r.code !== null ? `exit ${r.code}` : `signal ${r.signal ?? '?'}`;
  return `${what}: ${status}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

const keep = process.env['PORTCULLIS_TEST_KEEP'] === '1';
const tempDirs = new TempDirs();
const children = new Set<ChildProcess>();

/**
 * A fresh temp dir, removed when the test process exits (or earlier through `removeTempDir`).
 * Set PORTCULLIS_TEST_KEEP=1 to keep them for a post-mortem.
 */
export function makeTempDir(prefix = 'portcullis-test-'): string {
  return tempDirs.make(prefix);
}

export function removeTempDir(dir: string): void {
  tempDirs.remove(dir, keep);
}

/** Remember a child so it is SIGKILLed if the test process exits while it still runs. */
export function track(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
}

process.once('exit', () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  tempDirs.removeAll(keep);
});

/** Wait for a child to exit; SIGKILL after `graceMs` if the signal did not end it. Resolves with its exit status. */
export function terminate(
  child: ChildProcess,
  signal: NodeJS.Signals = 'SIGTERM',
  graceMs = 5000,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode });
      return;
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      resolve({ code, signal: sig });
    });
    child.kill(signal);
  });
}

/** Keep only the last `max` characters of a growing log (children can be chatty in long tests). */
export class TailBuffer {
  private text = '';
  constructor(private readonly max = 256 * 1024) {}
  push(chunk: Buffer | string): void {
    this.text += chunk.toString();
    if (this.text.length > this.max) this.text = this.text.slice(this.text.length - this.max);
  }
  toString(): string {
    return this.text;
  }
}
