/**
 * Process and filesystem plumbing shared by the end-to-end helpers: run a command with a timeout and
 * captured output, make temp dirs that disappear when the test process exits, find a free port, and make
 * sure no child process outlives the test file even when a test forgets to stop it.
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
  /** True when the command ran past its timeout and was killed. */
  timedOut: boolean;
}

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
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    track(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), 2000);
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      });
    });
    child.stdin.on('error', () => {
      /* the command may exit without reading stdin */
    });
    child.stdin.end(opts.input);
  });
}

/** One line for assertion messages: the command, its exit status and its output. */
export function describeRun(what: string, r: RunResult): string {
  const status = r.timedOut ? 'timed out' : r.code !== null ? `exit ${r.code}` : `signal ${r.signal ?? '?'}`;
  return `${what}: ${status}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

const keep = process.env['PORTCULLIS_TEST_KEEP'] === '1';
const tempDirs = new Set<string>();
const children = new Set<ChildProcess>();

/**
 * A fresh temp dir, removed when the test process exits (or earlier through `removeTempDir`).
 * Set PORTCULLIS_TEST_KEEP=1 to keep them for a post-mortem.
 */
export function makeTempDir(prefix = 'portcullis-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  tempDirs.delete(dir);
  if (!keep) rmSync(dir, { recursive: true, force: true });
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
  if (!keep) for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

/**
 * A TCP port that was free a moment ago (listen on port 0, read it, close). Another process can take it
 * before you bind it: helpers that use it retry on "address already in use".
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

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
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
