/**
 * Process plumbing for the benchmark: every long-running child is started in its own process group and
 * remembered, so it can be ended with everything it forked (nginx's workers) when the run ends, fails,
 * or is interrupted. Short commands run with a deadline and captured output.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
// The pure parts are shared with the test harness; its exit hook lives in test/helpers/proc.ts and is not
// imported here: the bench ends its children by process group, from its own handlers below.
import { runCaptured, TempDirs, type RunResult } from '../../test/helpers/proc-base.js';

export { freePort, sleep, type RunResult } from '../../test/helpers/proc-base.js';

export interface RunOptions {
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string;
}

const groups = new Set<number>();
const tempDirs = new TempDirs();
let keepTemp = false;

export function keepTempDirs(keep: boolean): void {
  keepTemp = keep;
}

/** Run a command (no shell) in its own process group; the group is killed at the deadline. Never throws for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  return runCaptured(cmd, args, {
    ...opts,
    detached: true,
    onSpawn: (child) => {
      if (child.pid !== undefined) groups.add(child.pid);
    },
    onTimeout: (child) => {
      if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
    },
    onSettled: (child) => {
      if (child.pid !== undefined) groups.delete(child.pid);
    },
  });
}

/** Like run(), but a failure (non-zero exit, timeout) throws with the command's output. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    const status = r.timedOut ? `timed out after ${opts.timeoutMs} ms` : `exit ${r.code ?? r.signal ?? '?'}`;
    throw new Error(`${cmd} ${args.slice(0, 3).join(' ')}: ${status}\n${tail(r.stderr || r.stdout, 2000)}`);
  }
  return r;
}

export interface Service {
  child: ChildProcess;
  /** Process group id (= the pid of the process we started). */
  pgid: number;
  /** stdout + stderr so far (last 64 KiB). */
  output(): string;
  /** Resolves when the process has exited. */
  exited: Promise<void>;
  /** SIGTERM the group, SIGKILL after graceMs. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

/** Start a long-running process in its own group, tracked for cleanup. */
export function startService(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; stdio?: StdioOptions } = {}): Service {
  const child = spawn(cmd, args, {
    env: opts.env ?? process.env,
    cwd: opts.cwd,
    stdio: opts.stdio ?? ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  if (child.pid === undefined) throw new Error(`cannot start ${cmd}`);
  const pgid = child.pid;
  groups.add(pgid);
  let text = '';
  const push = (b: Buffer): void => {
    text += b.toString('utf8');
    if (text.length > 65536) text = text.slice(text.length - 65536);
  };
  child.stdout?.on('data', push);
  child.stderr?.on('data', push);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (e) => {
      push(Buffer.from(`\n[spawn error] ${e.message}\n`));
      resolve();
    });
  });
  let stopping: Promise<void> | null = null;
  const stop = (graceMs = 5000): Promise<void> => {
    stopping ??= (async () => {
      killGroup(pgid, 'SIGTERM');
      const timer = setTimeout(() => killGroup(pgid, 'SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
      // Anything left in the group (a worker that outlived its master) goes too.
      killGroup(pgid, 'SIGKILL');
      groups.delete(pgid);
    })();
    return stopping;
  };
  return { child, pgid, output: () => text, exited, stop };
}

/** Remember a child spawned with `detached: true` elsewhere, so the cleanup ends its group too. */
export function trackGroup(child: ChildProcess): void {
  const pgid = child.pid;
  if (pgid === undefined) return;
  groups.add(pgid);
  child.once('exit', () => groups.delete(pgid));
}

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    /* already gone */
  }
}

/** Pids of the live members of a process group (from /proc). */
export function groupPids(pgid: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // Fields after the command name (which may hold spaces) start after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const state = fields[0];
      const pgrp = Number(fields[2]);
      if (pgrp === pgid && state !== 'Z') pids.push(Number(name));
    } catch {
      /* exited while we looked */
    }
  }
  return pids;
}

export function makeTempDir(prefix: string): string {
  return tempDirs.make(prefix);
}

/** Kill every tracked process group and remove temp dirs. Synchronous: safe in an 'exit' handler. */
export function cleanupNow(): void {
  for (const g of groups) killGroup(g, 'SIGKILL');
  groups.clear();
  tempDirs.removeAll(keepTemp);
}

/** Stop everything on exit, on Ctrl-C and on SIGTERM. */
export function installCleanupHandlers(): void {
  process.once('exit', cleanupNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping everything it started\n`);
      cleanupNow();
      process.exit(130);
    });
  }
}

export function tail(text: string, max: number): string {
  return text.length > max ? `...${text.slice(text.length - max)}` : text;
}

/** Reject after ms with a named error; the caller decides what to stop. */
export async function withDeadline<T>(what: string, ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result after ${Math.round(ms / 1000)} s`)), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
