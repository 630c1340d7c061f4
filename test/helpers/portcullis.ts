/**
 * Run the built proxy (`node dist/cli/main.js serve --config FILE`) as a child process, the way an operator does.
 * `npm run build` must have run first (`npm test` does it).
 *
 * Contract with the proxy: it logs JSON lines (pino) on stdout; when it accepts connections it logs
 * `{"msg":"listening","url":"https://127.0.0.1:43123",...}`, and `{"msg":"metrics listening","url":...}` for
 * the metrics listener when one is configured. `listen: "127.0.0.1:0"` picks a free port, read back from that url.
 *
 * Paths inside the config are resolved relative to the config file's folder, which is a temp dir here unless
 * you pass `dir`: use absolute paths, or `files` to put e.g. the htpasswd next to proxy.yaml.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { makeTempDir, removeTempDir, run, TailBuffer, track, type RunResult } from './proc.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The entry point run by startPortcullis/runCli; PORTCULLIS_TEST_CLI points the suite at another build. */
export const CLI = process.env['PORTCULLIS_TEST_CLI'] ?? join(REPO_ROOT, 'dist', 'cli', 'main.js');

export type LogLine = Record<string, unknown>;

export interface StartPortcullisOptions {
  /** Added to the environment. Inherited PORTCULLIS_* variables are dropped first, so the outer shell cannot change the config. */
  env?: Record<string, string>;
  /** Working directory of the process. Default: the config dir. */
  cwd?: string;
  /** Folder to write proxy.yaml into (kept on stop). Default: a temp dir, removed on stop. */
  dir?: string;
  /** Extra files written into the config dir before the start (name -> content), e.g. { htpasswd: '...' }. */
  files?: Record<string, string | Buffer>;
  /** Wait for "metrics listening" too. Default: when the config (or env) sets metrics.listen. */
  waitForMetrics?: boolean;
  /** Default 15 s. */
  readyTimeoutMs?: number;
  /** Extra CLI arguments after `serve --config FILE`. */
  args?: string[];
  /** The Node binary to run it on (another major: test/helpers/nodes.ts). Default: the one running the suite. */
  node?: string;
}

export interface RunningPortcullis {
  /** Origin to send requests to, e.g. "https://127.0.0.1:43123" (a 0.0.0.0 / [::] listen is reported as loopback). */
  url: string;
  port: number;
  /** "127.0.0.1:PORT", for image references and docker login. */
  hostPort: string;
  /** The url exactly as logged. */
  loggedUrl: string;
  metricsUrl?: string;
  configFile: string;
  dir: string;
  /** Every JSON log line so far, parsed (a copy). */
  logs(): LogLine[];
  /** Raw stdout + stderr so far (last 1 MiB), including lines that were not JSON. */
  output(): string;
  /**
   * First log line (past or future) matching: a string matches `msg` exactly. Rejects after timeoutMs
   * (default 10 s) or if the process exits first, with the proxy output in the message.
   */
  waitForLog(match: string | ((l: LogLine) => boolean), timeoutMs?: number, description?: string): Promise<LogLine>;
  proc: ChildProcess;
  /** Resolves when the process exits on its own or by stop(). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /**
   * Send `signal` (default SIGTERM), wait up to `timeoutMs` (default 15 s, then SIGKILL), resolve with the exit
   * code (128 + signal number if a signal ended it). Removes the temp dir unless `dir` was given. Idempotent.
   */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number>;
}

export async function startPortcullis(config: string | object, opts: StartPortcullisOptions = {}): Promise<RunningPortcullis> {
  if (!existsSync(CLI)) throw new Error(`${CLI} does not exist: run "npm run build" first`);
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? makeTempDir('portcullis-proxy-');
  mkdirSync(dir, { recursive: true });
  for (const [name, content] of Object.entries(opts.files ?? {})) writeFileSync(join(dir, name), content);
  const configFile = join(dir, 'proxy.yaml');
  const text = typeof config === 'string' ? config : stringifyYaml(config);
  writeFileSync(configFile, text);

  const env = cleanEnv(opts.env);
  const waitForMetrics = opts.waitForMetrics ?? (hasMetrics(text) || env['PORTCULLIS_METRICS_LISTEN'] !== undefined);
  const readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;

  const proc = spawn(opts.node ?? process.execPath, [CLI, 'serve', '--config', configFile, ...(opts.args ?? [])], {
    cwd: opts.cwd ?? dir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(proc);

  const lines: LogLine[] = [];
  const out = new TailBuffer(1024 * 1024);
  const waiters = new Set<{ test: (l: LogLine) => boolean; resolve: (l: LogLine) => void }>();
  let partial = '';
  proc.stdout?.on('data', (b: Buffer) => {
    out.push(b);
    partial += b.toString('utf8');
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      const parsed = parseLine(line);
      if (parsed === null) continue;
      lines.push(parsed);
      for (const w of [...waiters]) {
        if (w.test(parsed)) {
          waiters.delete(w);
          w.resolve(parsed);
        }
      }
    }
  });
  proc.stderr?.on('data', (b: Buffer) => out.push(b));

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => resolve({ code, signal }));
    proc.once('error', (e) => {
      out.push(`\n[spawn error] ${e.message}\n`);
      resolve({ code: null, signal: null });
    });
  });

  const waitForLog = (match: string | ((l: LogLine) => boolean), timeoutMs = 10_000, description?: string): Promise<LogLine> => {
    const test = typeof match === 'string' ? (l: LogLine) => l['msg'] === match : match;
    const seen = lines.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = {
        test,
        resolve: (l: LogLine) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      const what = description ?? (typeof match === 'string' ? `"${match}"` : 'a matching log line');
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(new Error(`no ${what} after ${timeoutMs} ms\n--- proxy output ---\n${out.toString()}`));
      }, timeoutMs);
      waiters.add(waiter);
      void exited.then(({ code, signal }) => {
        if (!waiters.has(waiter)) return;
        waiters.delete(waiter);
        clearTimeout(timer);
        reject(new Error(`proxy exited (${code ?? signal}) before ${what}\n--- proxy output ---\n${out.toString()}`));
      });
    });
  };

  let stopped: Promise<number> | null = null;
  const stop = (signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<number> => {
    stopped ??= (async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        const killer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
        proc.kill(signal);
        await exited;
        clearTimeout(killer);
      }
      const { code, signal: sig } = await exited;
      if (ownDir) removeTempDir(dir);
      if (code !== null) return code;
      return 128 + (sig !== null ? (osConstants.signals[sig] ?? 0) : 0);
    })();
    return stopped;
  };

  try {
    const listening = await waitForLog((l) => l['msg'] === 'listening' && typeof l['url'] === 'string', readyTimeoutMs, '"listening"');
    const loggedUrl = listening['url'] as string;
    const u = new URL(loggedUrl);
    if (u.hostname === '0.0.0.0') u.hostname = '127.0.0.1';
    if (u.hostname === '[::]') u.hostname = '[::1]';
    const url = u.origin;
    const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
    let metricsUrl: string | undefined;
    if (waitForMetrics) {
      const m = await waitForLog((l) => l['msg'] === 'metrics listening' && typeof l['url'] === 'string', readyTimeoutMs, '"metrics listening"');
      const mu = new URL(m['url'] as string);
      if (mu.hostname === '0.0.0.0') mu.hostname = '127.0.0.1';
      if (mu.hostname === '[::]') mu.hostname = '[::1]';
      metricsUrl = mu.origin;
    }
    return {
      url,
      port,
      hostPort: `${u.hostname}:${port}`,
      loggedUrl,
      ...(metricsUrl !== undefined ? { metricsUrl } : {}),
      configFile,
      dir,
      logs: () => [...lines],
      output: () => out.toString(),
      waitForLog,
      proc,
      exited,
      stop,
    };
  } catch (e) {
    await stop('SIGKILL');
    throw e;
  }
}

/** Run the CLI once (e.g. `["check", "--config", file]`, `["--version"]`) and capture its output. */
export function runCli(args: string[], opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  if (!existsSync(CLI)) throw new Error(`${CLI} does not exist: run "npm run build" first`);
  return run(process.execPath, [CLI, ...args], {
    env: cleanEnv(opts.env),
    cwd: opts.cwd ?? dirname(CLI),
    timeoutMs: opts.timeoutMs ?? 30_000,
    ...(opts.input !== undefined ? { input: opts.input } : {}),
  });
}

/** Parse every JSON line of a captured stdout (non-JSON lines are skipped). */
export function parseLogLines(stdout: string): LogLine[] {
  return stdout.split('\n').map(parseLine).filter((l): l is LogLine => l !== null);
}

function parseLine(line: string): LogLine | null {
  const t = line.trim();
  if (!t.startsWith('{')) return null;
  try {
    const v: unknown = JSON.parse(t);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as LogLine) : null;
  } catch {
    return null;
  }
}

function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PORTCULLIS_')) env[k] = v;
  return { ...env, ...extra };
}

function hasMetrics(text: string): boolean {
  try {
    const v: unknown = parseYaml(text);
    return typeof v === 'object' && v !== null && 'metrics' in v && (v as { metrics: unknown }).metrics != null;
  } catch {
    return false;
  }
}

/** The access-log lines (`"msg":"request"`) the proxy has written so far that match `pred`. */
export function accessLines(proxy: RunningPortcullis, pred: (l: LogLine) => boolean = () => true): LogLine[] {
  return proxy.logs().filter((l) => l['msg'] === 'request' && pred(l));
}
