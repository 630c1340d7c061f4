/**
 * Process plumbing shared by the test harness (test/helpers/proc.ts) and the benchmark (bench/lib/proc.ts):
 * run a command with a deadline and captured output, keep a set of temp dirs, find a free port, sleep.
 *
 * Nothing here installs an exit hook or ends a process by itself: each side decides that. The tests signal
 * the child they started and clean up on exit; the bench starts children in their own process groups and
 * kills whole groups from its own handlers. Importing this module changes nothing in the importing process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RunResult {
  /** Exit code; null when the process was ended by a signal (see `signal`, `timedOut`). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the command ran past its deadline and was ended. */
  timedOut: boolean;
  /** Wall time from spawn to close. */
  ms: number;
}

export interface CapturedRunOptions {
  timeoutMs: number;
  /** Written to stdin, then stdin is closed. Without it stdin is closed at once. */
  input?: string | Buffer;
  /** Replaces the environment entirely when given (start from `process.env` yourself if you want it). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Start the child as a process group leader, so the caller can signal everything it forks. */
  detached?: boolean;
  /** The child was spawned: remember it for clean-up. */
  onSpawn?: (child: ChildProcess) => void;
  /** The deadline passed: end the child (timedOut is already set). */
  onTimeout: (child: ChildProcess) => void;
  /** The child closed, or could not start. */
  onSettled?: (child: ChildProcess) => void;
}

/** Run a command (no shell), capture stdout/stderr, never reject for a non-zero exit. Rejects only if it cannot start. */
export function runCaptured(cmd: string, args: readonly string[], opts: CapturedRunOptions): Promise<RunResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: opts.detached ?? false,
    });
    opts.onSpawn?.(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      opts.onTimeout(child);
    }, opts.timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      opts.onSettled?.(child);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      opts.onSettled?.(child);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
        ms: performance.now() - started,
      });
    });
    child.stdin.on('error', () => {
      /* the command may exit without reading stdin */
    });
    child.stdin.end(opts.input);
  });
}

/** Temp dirs made during a run, removed together at its end (or one by one earlier). */
export class TempDirs {
  readonly #dirs = new Set<string>();

  make(prefix: string): string {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    this.#dirs.add(dir);
    return dir;
  }

  /** Forget `dir`, and delete it unless `keep`. */
  remove(dir: string, keep: boolean): void {
    this.#dirs.delete(dir);
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }

  /** Delete every dir still known (unless `keep`) and forget them. Synchronous: safe in an 'exit' handler. */
  removeAll(keep: boolean): void {
    if (!keep) {
      for (const d of this.#dirs) {
        try {
          rmSync(d, { recursive: true, force: true });
        } catch {
          /* best effort: the process is ending */
        }
      }
    }
    this.#dirs.clear();
  }
}

/**
 * A TCP port that was free a moment ago (listen on port 0, read it, close). Another process can take it
 * before you bind it: callers that use it retry on "address already in use".
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('no port from listen(0)'));
        return;
      }
      srv.close(() => resolve(addr.port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
