/**
 * The clients the benchmark drives: wrk for request rates, curl for blob transfers, skopeo for images.
 * All of them talk to 127.0.0.1 only (https://localhost:PORT is pinned there with curl --resolve; the
 * run checks that localhost means 127.0.0.1 for wrk and skopeo).
 */
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runOk, tail, trackGroup } from './proc.js';
import type { Certs, Credentials } from './setup.js';
import { REPO_ROOT, type Target } from './targets.js';

export interface Access {
  certs: Certs;
  creds: Credentials;
}

// ---------------------------------------------------------------------------------------------- wrk

export interface WrkResult {
  requests: number;
  rps: number;
  p50ms: number | null;
  p99ms: number | null;
  /** Non-2xx/3xx answers plus socket errors (connect, read, write, timeout). */
  errors: number;
}

/**
 * Before a measured wrk pass: 2 s with 4 connections, not counted (Node's JIT warm, as for a proxy that has
 * been up), then one plain request: it is answered only once the target has worked off what the warm-up
 * left queued (nginx checks the password of requests whose client has already gone), so the pass starts clean.
 */
export async function wrkWarmUp(t: Target, a: Access): Promise<void> {
  await runOk('wrk', wrkArgs(t, a, 2, 4), { timeoutMs: 45_000 });
  if (t.auth) await firstRequestMs(t, a);
}

/** wrk -tT -cN -dS against GET /v2/, with the credentials when the target asks for them. */
export async function wrkGetV2(t: Target, a: Access, seconds: number, connections: number, threads = 2): Promise<WrkResult> {
  const r = await runOk('wrk', wrkArgs(t, a, seconds, connections, threads), { timeoutMs: (seconds + 40) * 1000 });
  return parseWrk(r.stdout);
}

function wrkArgs(t: Target, a: Access, seconds: number, connections: number, threads = 2): string[] {
  const args = [`-t${Math.min(threads, connections)}`, `-c${connections}`, `-d${seconds}s`, '--timeout', '30s', '--latency'];
  if (t.auth) args.push('-H', `Authorization: ${a.creds.authorization}`);
  args.push(`${t.origin}/v2/`);
  return args;
}

export function parseWrk(out: string): WrkResult {
  const num = (re: RegExp): number | null => {
    const m = re.exec(out);
    return m ? Number(m[1]) : null;
  };
  const latency = (pct: string): number | null => {
    const m = new RegExp(`^\\s*${pct}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(out);
    if (!m) return null;
    const v = Number(m[1]);
    return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
  };
  const requests = num(/(\d+) requests in/);
  const rps = num(/Requests\/sec:\s+([\d.]+)/);
  if (requests === null || rps === null) throw new Error(`cannot read wrk output:\n${tail(out, 2000)}`);
  const non2xx = num(/Non-2xx or 3xx responses:\s+(\d+)/) ?? 0;
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = sock ? sock.slice(1).reduce((s, v) => s + Number(v), 0) : 0;
  return { requests, rps, p50ms: latency('50'), p99ms: latency('99'), errors: non2xx + socketErrors };
}

// --------------------------------------------------------------------------------------------- curl

function curlBase(t: Target, a: Access): string[] {
  const args = ['--http1.1', '-sS', '-H', 'Expect:'];
  if (t.tls) args.push('--cacert', a.certs.caFile, '--resolve', `localhost:${t.port}:127.0.0.1`);
  if (t.auth) args.push('-u', `${a.creds.user}:${a.creds.password}`);
  return args;
}

interface CurlTimes {
  status: number;
  bytes: number;
  seconds: number;
}

function parseCurlW(out: string): CurlTimes {
  const [status, bytes, seconds] = out.trim().split(/\s+/).map(Number);
  if (status === undefined || bytes === undefined || seconds === undefined || Number.isNaN(seconds)) {
    throw new Error(`cannot read curl -w output: ${out}`);
  }
  return { status, bytes, seconds };
}

/** Time of one fresh authenticated GET /v2/ (new connection: TLS handshake, then one password check). */
export async function firstRequestMs(t: Target, a: Access): Promise<number> {
  const r = await runOk('curl', [...curlBase(t, a), '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_total}', `${t.origin}/v2/`], { timeoutMs: 60_000 });
  const c = parseCurlW(r.stdout);
  if (c.status !== 200) throw new Error(`${t.id}: GET /v2/ answered ${c.status}`);
  return c.seconds * 1000;
}

export interface Transfer {
  bytes: number;
  seconds: number;
  /** 10^6 bytes per second, over the whole request as the client saw it. */
  mbps: number;
}

/** GET a blob to /dev/null; with `range` ([first, last] byte) a 206 of that part (warm-ups). */
export async function download(t: Target, a: Access, path: string, expectBytes: number, range?: [number, number], timeoutMs = 300_000): Promise<Transfer> {
  const args = [...curlBase(t, a), '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_total}'];
  if (range) args.push('-r', `${range[0]}-${range[1]}`);
  const r = await runOk('curl', [...args, `${t.origin}${path}`], { timeoutMs });
  const c = parseCurlW(r.stdout);
  const want = range ? range[1] - range[0] + 1 : expectBytes;
  if (c.status !== (range ? 206 : 200) || c.bytes !== want) throw new Error(`${t.id}: GET ${path}: ${c.status}, ${c.bytes} bytes (expected ${want})`);
  return { bytes: c.bytes, seconds: c.seconds, mbps: c.bytes / c.seconds / 1e6 };
}

// ------------------------------------------------------------------------------------------ loadgen

export interface LoadResult {
  requests: number;
  seconds: number;
  rps: number;
  p50ms: number | null;
  p99ms: number | null;
  /** Answers by status code. */
  statuses: Record<string, number>;
  errors: number;
}

const LOADGEN = fileURLToPath(new URL('./loadgen.ts', import.meta.url));

/**
 * lib/loadgen.ts in a process of its own: `connections` keep-alive loops, or `rate` requests per second.
 * `authorization` null: none; undefined: the target's credentials when it asks for them.
 */
export interface LoadOptions {
  method: string;
  path: string;
  seconds: number;
  connections?: number;
  rate?: number;
  headers?: Record<string, string>;
  authorization?: string | null;
  /** Every request with a new wrong password for this user (a brute force), instead of `authorization`. */
  wrongPasswordsFor?: string;
}

function loadSpec(t: Target, a: Access, o: LoadOptions): string {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  const authorization = o.wrongPasswordsFor !== undefined ? null : o.authorization === undefined ? (t.auth ? a.creds.authorization : null) : o.authorization;
  if (authorization !== null) headers['Authorization'] = authorization;
  return JSON.stringify({
    port: t.port,
    method: o.method,
    path: o.path,
    headers,
    seconds: o.seconds,
    ...(t.tls ? { ca: a.certs.caFile } : {}),
    ...(o.rate !== undefined ? { rate: o.rate } : { connections: o.connections ?? 32 }),
    ...(o.wrongPasswordsFor !== undefined ? { wrongPasswordsFor: o.wrongPasswordsFor } : {}),
  });
}

export async function loadgen(t: Target, a: Access, o: LoadOptions): Promise<LoadResult> {
  const r = await runOk(process.execPath, ['--import', 'tsx', LOADGEN, loadSpec(t, a, o)], { timeoutMs: (o.seconds + 60) * 1000, cwd: REPO_ROOT });
  return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as LoadResult;
}

/** loadgen in the background (up to `seconds`); stop() ends it and resolves with what it measured. */
export function startLoadgen(t: Target, a: Access, o: LoadOptions): { stop(): Promise<LoadResult> } {
  const child = spawn(process.execPath, ['--import', 'tsx', LOADGEN, loadSpec(t, a, o)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  trackGroup(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return {
    async stop() {
      child.kill('SIGTERM');
      const code = await exited;
      if (code !== 0) throw new Error(`loadgen exit ${code}: ${tail(err, 1000)}`);
      return JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as LoadResult;
    },
  };
}

/** PUT a file (Content-Length) to an upload URL with &digest=, expecting 201. */
export async function putFile(t: Target, a: Access, uploadUrl: string, file: string, digest: string, size: number): Promise<Transfer> {
  const url = `${uploadUrl}${uploadUrl.includes('?') ? '&' : '?'}digest=${digest}`;
  const r = await runOk(
    'curl',
    [...curlBase(t, a), '-T', file, '-H', 'Content-Type: application/octet-stream', '-o', '/dev/null', '-w', '%{http_code} %{size_upload} %{time_total}', url],
    { timeoutMs: 300_000 },
  );
  const c = parseCurlW(r.stdout);
  if (c.status !== 201 || c.bytes !== size) throw new Error(`${t.id}: PUT upload: ${c.status}, ${c.bytes} bytes sent (expected 201, ${size})`);
  return { bytes: c.bytes, seconds: c.seconds, mbps: c.bytes / c.seconds / 1e6 };
}

/**
 * PATCH `bytes` to an upload URL as one chunked request body (curl -T -), generated on the fly from one
 * 1 MiB buffer: neither this process nor curl ever holds more than a few MiB of it.
 */
export function chunkedPatch(t: Target, a: Access, uploadUrl: string, bytes: number): Promise<Transfer & { status: number }> {
  return new Promise((resolve, reject) => {
    const args = [
      ...curlBase(t, a),
      '-X', 'PATCH', '-T', '-',
      '-H', 'Content-Type: application/octet-stream',
      '-o', '/dev/null', '-w', '%{http_code} %{size_upload} %{time_total} %header{range}',
      uploadUrl,
    ];
    const child = spawn('curl', args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    trackGroup(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
    const chunk = randomFillSync(Buffer.alloc(1024 * 1024));
    let sent = 0;
    let failed = false;
    child.stdin.on('error', () => {
      failed = true;
    });
    const pump = (): void => {
      while (!failed && sent < bytes) {
        const n = Math.min(chunk.length, bytes - sent);
        sent += n;
        if (!child.stdin.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          child.stdin.once('drain', pump);
          return;
        }
      }
      if (sent >= bytes) child.stdin.end();
    };
    pump();
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      try {
        if (code !== 0) throw new Error(`curl PATCH exit ${code}: ${tail(err, 1000)}`);
        // size_upload counts the chunk framing too; the registry's Range says what it stored: 0-(bytes-1).
        const c = parseCurlW(out);
        const range = out.trim().split(/\s+/)[3] ?? '';
        if (c.status !== 202 || range !== `0-${bytes - 1}`) {
          throw new Error(`${t.id}: chunked PATCH: ${c.status}, Range "${range}" (expected 202, 0-${bytes - 1})`);
        }
        resolve({ status: c.status, bytes, seconds: c.seconds, mbps: bytes / c.seconds / 1e6 });
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  });
}

// ------------------------------------------------------------------------------- small API requests

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One small request to a target (no body), via 127.0.0.1 with Host/SNI as a client would send them. */
export function api(t: Target, a: Access, method: string, path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { host: t.hostPort };
    if (t.auth) headers['authorization'] = a.creds.authorization;
    const options = {
      host: '127.0.0.1',
      port: t.port,
      method,
      path,
      headers,
      agent: false as const,
      timeout: 60_000,
      ...(t.tls ? { servername: 'localhost', ca: readFileSync(a.certs.caFile) } : {}),
    };
    const req = (t.tls ? httpsRequest : httpRequest)(options, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => {
        if (body.length < 65536) body += s;
      });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.once('error', reject);
    });
    req.once('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
    req.once('error', reject);
    req.end();
  });
}

/** POST /v2/REPO/blobs/uploads/ through the target; the Location it answers (absolute, on the target's origin). */
export async function startUpload(t: Target, a: Access, repo: string): Promise<string> {
  const r = await api(t, a, 'POST', `/v2/${repo}/blobs/uploads/`);
  const location = r.headers.location;
  if (r.status !== 202 || typeof location !== 'string') throw new Error(`${t.id}: POST uploads: ${r.status} ${tail(r.body, 300)}`);
  const url = new URL(location, t.origin);
  if (url.origin !== t.origin) throw new Error(`${t.id}: upload Location ${url.origin} is not the target's origin ${t.origin}`);
  return url.href;
}

// -------------------------------------------------------------------------------------------- skopeo

function skopeoCreds(t: Target, a: Access, side: 'src' | 'dest'): string[] {
  const args: string[] = [];
  if (t.tls) args.push(`--${side}-cert-dir`, a.certs.caDir);
  else args.push(`--${side}-tls-verify=false`);
  if (t.auth) args.push(`--${side}-creds`, `${a.creds.user}:${a.creds.password}`);
  return args;
}

/** skopeo copy from an OCI layout to the target; seconds. */
export async function skopeoPush(t: Target, a: Access, ociRef: string, image: string): Promise<number> {
  const r = await runOk('skopeo', ['copy', '--retry-times', '0', ...skopeoCreds(t, a, 'dest'), ociRef, `docker://${t.hostPort}/${image}`], {
    timeoutMs: 300_000,
  });
  return r.ms / 1000;
}

/** skopeo copy from the target into a fresh OCI layout; seconds. */
export async function skopeoPull(t: Target, a: Access, image: string, layoutDir: string, tag: string): Promise<number> {
  const r = await runOk('skopeo', ['copy', '--retry-times', '0', ...skopeoCreds(t, a, 'src'), `docker://${t.hostPort}/${image}`, `oci:${layoutDir}:${tag}`], {
    timeoutMs: 300_000,
  });
  return r.ms / 1000;
}
